"""Process management shared by the local stack (:mod:`devstack.stack`) and Airflow beside it
(:mod:`devstack.airflow_services`).

Every service is started as the leader of a session of its own (and so of a process group of its own),
with stdout and stderr going to its log file and its PID written to its PID file. A PID file counts only
while it names a live session leader whose command line is that service's, so a recycled PID is never
taken for ours. Processes are stopped through their PID, process group or session, never by name.

Why not systemd, supervisord or psutil: no init system runs services on these machines, a supervisor
daemon would be one more process to find and stop, and psutil (in the lock through Airflow and locust) has
no session id, which is what still finds Airflow's task processes once they leave their parent's group.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar, Protocol


class StackError(RuntimeError):
    """Base class of the errors raised by :class:`devstack.stack.Stack` and
    :class:`devstack.airflow_services.AirflowServices`."""


class ServiceNotReadyError(StackError):
    """A service exited or did not become ready in time."""


# -- /proc ---------------------------------------------------------------------------------------------
def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, process group, session) of a process from /proc, or None when it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name in parentheses may contain spaces: split after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[2]), int(fields[3])


def _live_stats() -> Iterator[tuple[int, tuple[str, int, int]]]:
    """(PID, :func:`_stat`) of every process that is not a zombie."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat and stat[0] not in ("Z", "X"):
                yield int(entry.name), stat


def pid_alive(pid: int) -> bool:
    """:param pid: a process id. :returns: whether that process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = _stat(pid)
    # A zombie still answers kill(pid, 0) but runs nothing.
    return stat is None or stat[0] not in ("Z", "X")


def group_alive(pgid: int) -> bool:
    """:param pgid: a process group id. :returns: whether any non-zombie process is left in that group."""
    if not Path("/proc").is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    return any(stat[1] == pgid for _, stat in _live_stats())


def session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes of session ``sid``.

    Every service is started as a session leader, so this is the service and everything it started,
    including processes that moved into process groups of their own (Airflow's task processes). Linux does
    not hand out a PID again while it is still some process' session id, so members of a dead leader's
    session are still ours.

    :param sid: the session id (the leader's PID).
    :returns: the PIDs.
    """
    return [pid for pid, stat in _live_stats() if stat[2] == sid]


def cmdline(pid: int) -> str | None:
    """:param pid: a process id. :returns: its command line with spaces between the arguments, or None
    when /proc does not tell."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to a process group; a group that is gone is no error."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def signal_session(sid: int, sig: signal.Signals) -> list[int]:
    """Send ``sig`` to every live process of a session (see :func:`session_members`). :returns: their PIDs."""
    members = session_members(sid)
    for pid in members:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
    return members


def stop_session_leader(proc: subprocess.Popen[Any], grace: float = 20.0) -> None:
    """Stop a child started as the leader of a session of its own (``start_new_session=True``): SIGTERM to
    every process of the session, up to ``grace`` seconds for the leader to exit, then SIGKILL to whatever
    of the session is left, and the leader reaped."""
    if proc.poll() is None:
        signal_session(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    signal_session(proc.pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.wait(timeout=10)


def tail(path: Path, lines: int = 30) -> str:
    """:param path: a log file. :param lines: how many lines.
    :returns: the last lines of the file, or ``(no log)``/``(log is empty)``."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def pycache_dir() -> Path:
    """:returns: where the stack's Python services keep bytecode when the environment forbids writing it
    next to the sources (``$XDG_CACHE_HOME/modelwatch/pycache``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "modelwatch" / "pycache"


def use_bytecode_cache(env: dict[str, str]) -> None:
    """Let Python services cache bytecode even under ``PYTHONDONTWRITEBYTECODE``.

    Without any .pyc, every start compiles MLflow (or Airflow) from source: MLflow is ready in ~14 s
    instead of ~6 s on two cores, the largest part of the stack's start. The cache goes to
    :func:`pycache_dir`, never into the sources or the virtualenv. Nothing changes when the virtualenv is
    precompiled (``uv pip sync --compile-bytecode``) or when the caller chose a PYTHONPYCACHEPREFIX.

    :param env: the environment of the service, changed in place.
    """
    if not env.get("PYTHONDONTWRITEBYTECODE") or env.get("PYTHONPYCACHEPREFIX"):
        return
    spec = importlib.util.find_spec("mlflow")
    if spec is not None and spec.origin and (Path(spec.origin).parent / "__pycache__").is_dir():
        return
    env.pop("PYTHONDONTWRITEBYTECODE")
    env["PYTHONPYCACHEPREFIX"] = str(pycache_dir())


# -- services ------------------------------------------------------------------------------------------
class _Files(Protocol):
    def pid_file(self, name: str, /) -> Path: ...

    def log_file(self, name: str, /) -> Path: ...


class ManagedProcesses:
    """Named services, each a session leader found again through its PID file.

    Subclasses set :attr:`config` (its ``pid_file(name)`` and ``log_file(name)`` say where the files are),
    :attr:`names` and :attr:`label`, and say in :meth:`_matches` which command lines are theirs. A fresh
    object on the same files finds the running services again; the ones this object started are also kept
    as children, to be reaped when they stop.
    """

    #: The services, in start order.
    names: ClassVar[tuple[str, ...]] = ()
    #: Put before a service's name in error messages.
    label: ClassVar[str] = ""
    config: _Files

    def __init__(self) -> None:
        # Children of this very process: kept to reap them, so a stopped service leaves no zombie behind.
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    def status(self) -> dict[str, bool]:
        """:returns: service name -> whether its process is running, for all :attr:`names`."""
        return {name: self.is_running(name) for name in self.names}

    def is_running(self, name: str) -> bool:
        """:param name: one of :attr:`names`.
        :returns: True when the PID file names a live process of that service.
        """
        return self.pid(name) is not None

    def pid(self, name: str) -> int | None:
        """:param name: one of :attr:`names`.
        :returns: the PID of the running service (the leader of its session), or None (a stale PID file
            counts as not running).
        """
        proc = self._procs.get(name)
        if proc is not None:
            proc.poll()
        pid = self._read_pid(name)
        if pid is None or not self._owned(name, pid):
            return None
        return pid

    def log_tail(self, name: str, lines: int = 30) -> str:
        """:param name: one of :attr:`names`.
        :param lines: how many lines.
        :returns: the last lines of that service's log.
        """
        return tail(self.config.log_file(name), lines)

    # -- for subclasses --------------------------------------------------------------------------------
    def _matches(self, name: str, cmdline: str) -> bool:
        """Whether ``cmdline`` (from /proc) is that of service ``name``."""
        raise NotImplementedError

    def _spawn(self, name: str, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        """Start a service in a session of its own, output to its log file, PID to its PID file."""
        with self.config.log_file(name).open("wb") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                # Own session and process group: stopping signals the whole group (MLflow's workers too),
                # and Ctrl-C in the terminal that ran `up` does not reach the services.
                start_new_session=True,
            )
        self._procs[name] = proc
        self.config.pid_file(name).write_text(f"{proc.pid}\n")

    def _read_pid(self, name: str) -> int | None:
        try:
            return int(self.config.pid_file(name).read_text().strip())
        except (OSError, ValueError):
            return None

    def _owned(self, name: str, pid: int) -> bool:
        """Whether ``pid`` is a live session leader running service ``name``."""
        if not pid_alive(pid):
            return False
        try:
            if os.getsid(pid) != pid:
                return False
        except OSError:
            return False
        line = cmdline(pid)
        return line is None or self._matches(name, line)

    def _check_alive(self, name: str) -> None:
        """:raises ServiceNotReadyError: with the end of its log, when the service has exited."""
        log = self.config.log_file(name)
        proc = self._procs.get(name)
        if proc is not None and proc.poll() is not None:
            raise ServiceNotReadyError(
                f"{self.label}{name} exited with code {proc.returncode} while starting. "
                f"Last lines of {log}:\n{tail(log)}"
            )
        if proc is None and not self.is_running(name):
            raise ServiceNotReadyError(
                f"{self.label}{name} is not running. Last lines of {log}:\n{tail(log)}"
            )

    def _wait_gone(self, victims: dict[str, int], timeout: float, alive: Callable[[int], bool]) -> None:
        """Wait up to ``timeout`` seconds until ``alive(pid)`` is false for every PID of ``victims``
        (service name -> PID, process group or session)."""
        deadline = time.monotonic() + timeout
        pending = dict(victims)
        while pending and time.monotonic() < deadline:
            for name, pid in list(pending.items()):
                proc = self._procs.get(name)
                if proc is not None:
                    # Reap our own child, or it stays a zombie that still owns its PID.
                    proc.poll()
                if not alive(pid):
                    del pending[name]
            if pending:
                time.sleep(0.05)

    def _escalate(
        self,
        victims: dict[str, int],
        steps: Iterable[tuple[signal.Signals, float]],
        send: Callable[[int, signal.Signals], None],
        alive: Callable[[int], bool],
    ) -> None:
        """Stop ``victims`` (service name -> process group or session): for each ``(signal, seconds)`` of
        ``steps``, ``send`` the signal to those still ``alive`` and wait for them; then reap them and
        delete their PID files."""
        for sig, timeout in steps:
            for pid in victims.values():
                if alive(pid):
                    send(pid, sig)
            self._wait_gone(victims, timeout, alive)
        for name in victims:
            proc = self._procs.pop(name, None)
            if proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=1)
            self.config.pid_file(name).unlink(missing_ok=True)

    def _stop_groups(self, names: Iterable[str], timeout: float) -> list[str]:
        """SIGTERM the process groups of the running services among ``names`` together, wait up to
        ``timeout`` seconds until they are empty, SIGKILL what is left.

        :returns: the services that were running.
        """
        victims: dict[str, int] = {}
        for name in names:
            pid = self.pid(name)
            if pid is not None:
                victims[name] = pid
            else:
                # Stale or absent: nothing to signal, but do not leave a PID file that lies.
                self.config.pid_file(name).unlink(missing_ok=True)
        self._escalate(victims, [(signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)], signal_group, group_alive)
        return list(victims)

    def _sweep_sessions(self, victims: dict[str, int]) -> None:
        """SIGTERM, then SIGKILL, every process left in the sessions of ``victims`` (service name -> session
        id), also those that moved into process groups of their own; then forget the services."""
        self._escalate(
            victims,
            [(signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)],
            signal_session,
            lambda sid: bool(session_members(sid)),
        )
