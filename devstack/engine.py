"""The engine users run Airflow on: a PostgreSQL cluster of its own (the metadata database) and a Redis (the
Celery broker), each a plain child process bound to 127.0.0.1, started and stopped through its PID file.

Groundwork of issue 22: the e2e tier and ``make up`` will run Airflow's scheduler on PostgreSQL with Celery
workers instead of SQLite with the LocalExecutor. This module only starts the two servers; Celery comes
later. It reuses the machinery of the local stack (:class:`devstack.processes.ManagedProcesses`: one
session per service, ``<state>/<name>.pid`` and ``<name>.log``, a PID counts only while its command line is
ours; :func:`devstack.stack.port_is_free`, :class:`~devstack.stack.PortInUseError`,
:class:`~devstack.stack.MissingBinaryError`), so ``down`` from another shell stops exactly what ``up``
started and nothing else, never by name.

Layout under the state folder (``MODELWATCH_STACK_DIR``, default ``<repo>/.stack``)::

    postgres/                     owned by the server's OS user, mode 0700; also its Unix socket folder
    postgres/data/                the cluster (initdb), reused on the next start
    postgres.pid, postgres.log    the postmaster (session leader) and its log
    postgres-initdb.log           output of the last initdb
    postgres-airflow-password     the ``airflow`` role's password, generated once per state folder (0600)
    redis/                        Redis' working folder (nothing is saved: no RDB, no AOF)
    redis.pid, redis.log

Ports (127.0.0.1 only): PostgreSQL 15432 (``MODELWATCH_POSTGRES_PORT``), Redis 16379
(``MODELWATCH_REDIS_PORT``); :meth:`EngineConfig.free_ports` draws free ones for tests.

Why PostgreSQL runs as another user: ``initdb`` and ``postgres`` refuse to run as root ("cannot be run as
root"; a server holding root would turn any SQL-level compromise into a machine compromise), and these
machines and CI run everything as root. So, when this process is root, both run as an unprivileged OS user:
``postgres``, which the Debian ``postgresql`` package creates (``MODELWATCH_POSTGRES_OS_USER`` names
another). They are started through ``setpriv --reuid --regid --clear-groups`` (util-linux), which
changes the ids and then *execs* the program: the PID in ``postgres.pid`` is the postmaster itself, the
leader of its session. ``runuser -u`` (or ``su``) would fork and stay behind as the parent for its PAM
session, so the PID file would name runuser, and our signals would reach the postmaster only as far as
runuser relays them. That user owns ``<state>/postgres`` (mode 0700), and must be able to *reach* it: every
folder above needs search (x) permission for it. pytest's ``tmp_path`` lives under ``/tmp/pytest-of-root``
(mode 0700), which it cannot enter: :func:`reachable_temp_dir` makes a temporary state folder it can
reach, and :meth:`EngineServices.start` names the folder that blocks it before running anything. When
this process is not root, both run as the current user and no OS user is needed.

Why the binaries are looked for under ``/usr/lib/postgresql/<version>/bin``: Debian puts the server there,
versioned, and not on PATH (``/usr/bin/psql`` is postgresql-common's wrapper script; there is no
``/usr/bin/initdb``). The newest installed version is used for a new cluster, and the cluster's own
version (``data/PG_VERSION``) for an existing one, so an upgrade of the Debian package does not make the
state folder unusable. ``MODELWATCH_POSTGRES_BINDIR`` overrides; ``pg_config --bindir`` and PATH come last.

Why not ``pg_ctl``: it daemonizes the postmaster (the PID would not be our child, no session of its own,
output to its own log), and stop would go through ``pg_ctl stop`` instead of the signals we send to the PID
we recorded. Stopping follows PostgreSQL's documented signals: SIGTERM (smart shutdown: lets connected
sessions finish), after 2 s SIGINT (fast shutdown: disconnects clients, aborts their transactions,
writes a shutdown checkpoint), after 10 s more SIGQUIT (immediate), then SIGKILL to the postmaster and
every child it had. Only the postmaster gets the first three (a signal to a process group would reach
backends and auxiliary processes, which read SIGINT/SIGTERM as "cancel"/"terminate" on their own; each of
them calls ``setsid()`` anyway, so they are in neither the postmaster's group nor its session: they are
found by parent id), and stop returns once none of them is left.

Why the cluster is not durable by default (``fsync=off``, ``synchronous_commit=off``,
``full_page_writes=off``, ``initdb --no-sync``): it holds test and demo metadata that a fresh
``airflow db migrate`` rebuilds; a crash of the machine may corrupt it, a crash of a process does not.
``EngineConfig(durable=True)`` keeps PostgreSQL's defaults.

Authentication: over the Unix socket (``<state>/postgres``, reachable only by the server's OS user and
root) ``trust``, used for bootstrapping as superuser ``postgres``; over TCP ``scram-sha-256``: Airflow
connects as role ``airflow`` (owner of database ``airflow``, so PostgreSQL 15's locked-down ``public``
schema needs no grant) with the generated password.

Redis runs as the current user, root included: Redis itself allows it, it binds 127.0.0.1 with protected
mode on, and Redis 7 refuses ``CONFIG SET dir``/``dbfilename`` (``enable-protected-configs no``, the
default), which was the way to turn a root Redis into file writes. ``--save '' --appendonly no``: a broker
for one test session or demo keeps nothing on disk. Readiness is a ``PING`` over a plain socket, so no
Redis client package is needed here (Celery's Redis transport will need the ``redis`` package).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import random
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from devstack.processes import (
    ManagedProcesses,
    ServiceNotReadyError,
    StackError,
    cmdline,
    pid_alive,
    session_members,
    tail,
)
from devstack.stack import HOST, REPO_ROOT, MissingBinaryError, PortInUseError, port_is_free

#: The services, in start order.
ENGINE_SERVICES: tuple[str, ...] = ("postgres", "redis")
DEFAULT_ENGINE_PORTS: dict[str, int] = {"postgres_port": 15432, "redis_port": 16379}
_PORT_ENV: dict[str, str] = {attr: f"MODELWATCH_{attr.upper()}" for attr in DEFAULT_ENGINE_PORTS}
_SERVICE_PORT_ATTR: dict[str, str] = {"postgres": "postgres_port", "redis": "redis_port"}
OS_USER_ENV = "MODELWATCH_POSTGRES_OS_USER"
BINDIR_ENV = "MODELWATCH_POSTGRES_BINDIR"
#: The OS user PostgreSQL runs as when this process is root (created by Debian's ``postgresql`` package).
DEFAULT_OS_USER = "postgres"
#: Superuser role of the cluster (``initdb -U``), whatever the OS user is called.
SUPERUSER = "postgres"
#: Role and database Airflow uses.
AIRFLOW_ROLE = "airflow"
AIRFLOW_DATABASE = "airflow"
#: Where Debian (and Ubuntu) install the server binaries, one folder per major version.
DEBIAN_PG_ROOT = Path("/usr/lib/postgresql")

READY_TIMEOUT = 60.0
#: (signal, seconds to wait) in order; see the module docstring.
_STOP_STEPS: dict[str, list[tuple[signal.Signals, float]]] = {
    "postgres": [(signal.SIGTERM, 2.0), (signal.SIGINT, 10.0), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)],
    "redis": [(signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)],
}
#: Longest path of a Unix socket (``sun_path`` is 108 bytes with its NUL).
_MAX_SOCKET_PATH = 107
_NOT_DURABLE = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


def _check_name(service: str) -> str:
    if service not in ENGINE_SERVICES:
        raise StackError(f"unknown engine service {service!r}; known: {', '.join(ENGINE_SERVICES)}")
    return service


@dataclass
class EngineConfig:
    """Where the engine keeps its state and which loopback ports it uses.

    Defaults: the local stack's state folder, PostgreSQL on 15432, Redis on 16379.
    """

    state_dir: Path = field(default_factory=lambda: REPO_ROOT / ".stack")
    postgres_port: int = DEFAULT_ENGINE_PORTS["postgres_port"]
    redis_port: int = DEFAULT_ENGINE_PORTS["redis_port"]
    #: OS user of the PostgreSQL server when this process is root (None: ``postgres``); ignored otherwise.
    os_user: str | None = None
    #: Folder holding ``initdb``, ``postgres``, ``psql``, ``pg_isready`` (None: found, see :func:`find_postgres_bindir`).
    postgres_bindir: Path | None = None
    #: Keep PostgreSQL's crash-safe defaults (fsync and the rest); False makes a throwaway cluster faster.
    durable: bool = False

    # Child processes run in other working directories: keep every path absolute.
    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir).absolute()
        if self.postgres_bindir is not None:
            self.postgres_bindir = Path(self.postgres_bindir).absolute()

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> EngineConfig:
        """Build the configuration from ``MODELWATCH_STACK_DIR``, ``MODELWATCH_POSTGRES_PORT``,
        ``MODELWATCH_REDIS_PORT``, ``MODELWATCH_POSTGRES_OS_USER`` and ``MODELWATCH_POSTGRES_BINDIR``.

        :param environ: the environment to read (default :data:`os.environ`).
        :returns: the configuration; unset variables take the defaults.
        :raises StackError: when a port variable is not an integer.
        """
        env = os.environ if environ is None else environ
        kwargs: dict[str, Any] = {}
        if env.get("MODELWATCH_STACK_DIR"):
            kwargs["state_dir"] = Path(env["MODELWATCH_STACK_DIR"])
        if env.get(OS_USER_ENV):
            kwargs["os_user"] = env[OS_USER_ENV]
        if env.get(BINDIR_ENV):
            kwargs["postgres_bindir"] = Path(env[BINDIR_ENV])
        for attr, var in _PORT_ENV.items():
            if env.get(var):
                try:
                    kwargs[attr] = int(env[var])
                except ValueError:
                    raise StackError(f"{var}={env[var]!r} is not a port number") from None
        return cls(**kwargs)

    @classmethod
    def free_ports(
        cls,
        state_dir: str | os.PathLike[str],
        rng: random.Random | None = None,
        *,
        avoid: Iterable[int] = (),
        durable: bool = False,
    ) -> EngineConfig:
        """Build a configuration whose ports are free on 127.0.0.1 right now (20000-31999, as
        :meth:`devstack.stack.StackConfig.free_ports`).

        :param state_dir: folder for the state; the server's OS user must be able to reach it when this
            process is root (see :func:`reachable_temp_dir`).
        :param rng: random source (default: a fresh unseeded one).
        :param avoid: ports not to use (e.g. a stack's).
        :param durable: see :attr:`durable`.
        :returns: the configuration.
        """
        # Imported here: devstack.airflow_services may come to import this module.
        from devstack.airflow_services import free_port

        rng = rng or random.Random()
        taken = {*avoid, *DEFAULT_ENGINE_PORTS.values()}
        ports: dict[str, int] = {}
        for attr in DEFAULT_ENGINE_PORTS:
            ports[attr] = free_port(taken, rng)
            taken.add(ports[attr])
        return cls(state_dir=Path(state_dir), durable=durable, **ports)

    def port(self, service: str) -> int:
        """:param service: one of :data:`ENGINE_SERVICES`. :returns: its TCP port."""
        return getattr(self, _SERVICE_PORT_ATTR[_check_name(service)])

    def to_env(self) -> dict[str, str]:
        """:returns: the ``MODELWATCH_*`` variables that make :meth:`from_env` rebuild this configuration."""
        env = {"MODELWATCH_STACK_DIR": str(self.state_dir)}
        env.update({var: str(getattr(self, attr)) for attr, var in _PORT_ENV.items()})
        if self.os_user:
            env[OS_USER_ENV] = self.os_user
        if self.postgres_bindir is not None:
            env[BINDIR_ENV] = str(self.postgres_bindir)
        return env

    # -- paths -----------------------------------------------------------------------------------------
    @property
    def postgres_dir(self) -> Path:
        """PostgreSQL's folder, owned by the server's OS user (mode 0700); its Unix socket lives here too."""
        return self.state_dir / "postgres"

    @property
    def postgres_data_dir(self) -> Path:
        """The cluster's data folder (``initdb -D``)."""
        return self.postgres_dir / "data"

    @property
    def postgres_socket_dir(self) -> Path:
        """Folder of the Unix socket ``.s.PGSQL.<port>`` (``postgres -k``)."""
        return self.postgres_dir

    @property
    def password_file(self) -> Path:
        """The ``airflow`` role's password (root-only file in the state folder)."""
        return self.state_dir / "postgres-airflow-password"

    @property
    def initdb_log(self) -> Path:
        """Output of the last ``initdb``."""
        return self.state_dir / "postgres-initdb.log"

    @property
    def redis_dir(self) -> Path:
        """Redis' working folder (``--dir``)."""
        return self.state_dir / "redis"

    def pid_file(self, service: str) -> Path:
        """:param service: one of :data:`ENGINE_SERVICES`. :returns: ``<state_dir>/<service>.pid``."""
        return self.state_dir / f"{_check_name(service)}.pid"

    def log_file(self, service: str) -> Path:
        """:param service: one of :data:`ENGINE_SERVICES`. :returns: ``<state_dir>/<service>.log``."""
        return self.state_dir / f"{_check_name(service)}.log"

    # -- what clients use ------------------------------------------------------------------------------
    def airflow_password(self) -> str:
        """The ``airflow`` role's password: generated once per state folder (URL-safe characters, so it needs
        no escaping in a URL or in SQL), kept in :attr:`password_file`.

        :returns: the password.
        """
        path = self.password_file
        try:
            password = path.read_text().strip()
        except OSError:
            password = ""
        if not password:
            path.parent.mkdir(parents=True, exist_ok=True)
            password = secrets.token_urlsafe(24)
            path.touch(mode=0o600)
            path.write_text(password + "\n")
        return password

    def sqlalchemy_url(self, driver: str | None = None) -> str:
        """SQLAlchemy URL of the Airflow database over TCP, e.g.
        ``postgresql+psycopg2://airflow:<password>@127.0.0.1:15432/airflow``.

        :param driver: SQLAlchemy driver name (``psycopg2``, ``psycopg``); None: the one installed
            (:func:`postgres_driver`), ``psycopg2`` when none is (what ``apache-airflow[postgres]`` brings).
        :returns: the URL (holds the password: do not log it).
        """
        driver = driver or postgres_driver() or "psycopg2"
        return (
            f"postgresql+{driver}://{AIRFLOW_ROLE}:{self.airflow_password()}@{HOST}:{self.postgres_port}"
            f"/{AIRFLOW_DATABASE}"
        )

    @property
    def broker_url(self) -> str:
        """Celery broker URL of the Redis, e.g. ``redis://127.0.0.1:16379/0``."""
        return f"redis://{HOST}:{self.redis_port}/0"

    def airflow_env(self) -> dict[str, str]:
        """Airflow settings for this engine (the executor is not set here).

        :returns: ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN``, ``AIRFLOW__CELERY__BROKER_URL`` and
            ``AIRFLOW__CELERY__RESULT_BACKEND`` (``db+`` the database URL, Airflow's own default made explicit).
        """
        url = self.sqlalchemy_url()
        return {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url,
            "AIRFLOW__CELERY__BROKER_URL": self.broker_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{url}",
        }


# -- binaries ------------------------------------------------------------------------------------------
_INSTALL_HINT = (
    "Run scripts/ensure-system-deps.sh (or `apt-get install -y --no-install-recommends postgresql` on "
    "Debian/Ubuntu)."
)


def _version_key(name: str) -> tuple[int, ...] | None:
    try:
        return tuple(int(part) for part in name.split("."))
    except ValueError:
        return None


def _has_server(bindir: Path) -> bool:
    return all(os.access(bindir / exe, os.X_OK) for exe in ("initdb", "postgres"))


def find_postgres_bindir(version: str | None = None, override: Path | None = None) -> Path:
    """Locate the folder of the PostgreSQL server binaries (``initdb``, ``postgres``, ``psql``, ``pg_isready``).

    Looked for in order: ``override`` (or ``MODELWATCH_POSTGRES_BINDIR``); Debian's
    ``/usr/lib/postgresql/<version>/bin``, the given version or else the newest one installed;
    ``pg_config --bindir``; the folder of ``initdb`` on PATH (symlinks resolved).

    :param version: the major version wanted (an existing cluster's ``PG_VERSION``), or None for the newest.
    :param override: a folder to use as is.
    :returns: the folder.
    :raises MissingBinaryError: naming where it looked and how to install PostgreSQL.
    """
    chosen = override or (Path(os.environ[BINDIR_ENV]) if os.environ.get(BINDIR_ENV) else None)
    if chosen is not None:
        if _has_server(chosen):
            return chosen
        raise MissingBinaryError(
            f"the PostgreSQL folder {chosen} (EngineConfig.postgres_bindir or {BINDIR_ENV}) holds no executable "
            f"initdb and postgres. {_INSTALL_HINT}"
        )
    candidates: list[Path] = []
    if DEBIAN_PG_ROOT.is_dir():
        found = [
            (key, d / "bin") for d in DEBIAN_PG_ROOT.iterdir() if (key := _version_key(d.name)) is not None
        ]
        found = [(key, b) for key, b in found if _has_server(b)]
        if version is not None:
            found = [(key, b) for key, b in found if key == _version_key(version)]
        candidates += [b for _, b in sorted(found, reverse=True)]
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10)
            if out.returncode == 0 and out.stdout.strip():
                candidates.append(Path(out.stdout.strip()))
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    for bindir in candidates:
        if _has_server(bindir) and (version is None or _server_major(bindir) == version):
            return bindir
    wanted = f"PostgreSQL {version} (the version of the existing cluster)" if version else "PostgreSQL"
    raise MissingBinaryError(
        f"the {wanted} server binaries (initdb, postgres) were not found in {BINDIR_ENV}, "
        f"{DEBIAN_PG_ROOT}/<version>/bin, `pg_config --bindir` or PATH. {_INSTALL_HINT}"
    )


def _server_major(bindir: Path) -> str | None:
    """Major version of ``bindir/postgres`` (``postgres (PostgreSQL) 15.18`` -> ``15``)."""
    try:
        out = subprocess.run([str(bindir / "postgres"), "-V"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"\b(\d+)(?:\.\d+)*", out.stdout)
    if not match:
        return None
    major = match.group(1)
    # Before 10 the major version had two parts (9.6).
    return major if int(major) >= 10 else ".".join(match.group(0).split(".")[:2])


def find_redis_server() -> str:
    """:returns: the path of ``redis-server``.
    :raises MissingBinaryError: naming the binary and how to install it.
    """
    found = shutil.which("redis-server")
    if found:
        return found
    raise MissingBinaryError(
        "'redis-server' (service redis) is not on PATH. Run scripts/ensure-system-deps.sh "
        "(or `apt-get install -y --no-install-recommends redis-server` on Debian/Ubuntu)."
    )


def postgres_driver() -> str | None:
    """:returns: the PostgreSQL driver SQLAlchemy (and Airflow) can use in this interpreter: ``psycopg2``,
    else ``psycopg`` (version 3), else None."""
    for name in ("psycopg2", "psycopg"):
        if importlib.util.find_spec(name) is not None:
            return name
    return None


# -- the server's OS user --------------------------------------------------------------------------------
@dataclass(frozen=True)
class _OsUser:
    name: str
    uid: int
    gid: int


def _server_user(config: EngineConfig) -> _OsUser | None:
    """The unprivileged user PostgreSQL runs as when this process is root; None when it is not root (then it
    runs as the current user).

    :raises StackError: when that user does not exist.
    """
    if os.geteuid() != 0:
        return None
    name = config.os_user or DEFAULT_OS_USER
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise StackError(
            f"PostgreSQL refuses to run as root, and the OS user {name!r} it would run as does not exist. "
            f"Install the Debian package postgresql (it creates user postgres), create one "
            f"(`useradd --system --user-group --no-create-home --shell /usr/sbin/nologin {name}`), or name "
            f"another in {OS_USER_ENV}."
        ) from None
    if entry.pw_uid == 0:
        raise StackError(f"{OS_USER_ENV}={name!r} is root; PostgreSQL needs an unprivileged user")
    return _OsUser(name, entry.pw_uid, entry.pw_gid)


def _as_user(user: _OsUser | None, argv: list[str]) -> list[str]:
    """``argv`` run as ``user`` through ``setpriv`` (which execs it: same PID), or unchanged."""
    if user is None:
        return argv
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise MissingBinaryError(
            "'setpriv' (util-linux) is not on PATH; it runs PostgreSQL as an unprivileged user when this "
            "process is root. Install util-linux."
        )
    return [setpriv, f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups", "--", *argv]


def _blocking_dir(path: Path, user: _OsUser) -> Path | None:
    """The first existing folder on the way to ``path`` that ``user`` may not enter (no search permission
    by owner, group or other bits; ACLs are not read), or None."""
    groups = set(os.getgrouplist(user.name, user.gid))
    for folder in [*reversed(path.parents), path]:
        try:
            st = folder.stat()
        except FileNotFoundError:
            return None
        if st.st_uid == user.uid:
            ok = st.st_mode & stat.S_IXUSR
        elif st.st_gid in groups:
            ok = st.st_mode & stat.S_IXGRP
        else:
            ok = st.st_mode & stat.S_IXOTH
        if not ok:
            return folder
    return None


def reachable_temp_dir(prefix: str = "modelwatch-engine-") -> Path:
    """A new temporary folder (in the system's temporary folder, mode 0711) that PostgreSQL's unprivileged OS
    user can pass through: for tests, whose ``tmp_path`` (under ``/tmp/pytest-of-root``, mode 0700) it
    cannot reach. Others may enter it but not list it. The caller removes it.

    :param prefix: start of the folder's name.
    :returns: the folder.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o711)
    return path


# -- probes ----------------------------------------------------------------------------------------------
def redis_ping(port: int, host: str = HOST, timeout: float = 2.0) -> bool:
    """Send Redis a ``PING`` over a plain socket (RESP).

    :param port: Redis' TCP port.
    :param host: its address.
    :param timeout: seconds for connect and answer.
    :returns: True when it answered ``+PONG`` (False while it loads, refuses or is not there).
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            answer = b""
            while not answer.endswith(b"\r\n"):
                chunk = sock.recv(64)
                if not chunk:
                    break
                answer += chunk
    except OSError:
        return False
    return answer == b"+PONG\r\n"


class EngineServices(ManagedProcesses):
    """Start, watch and stop the engine's PostgreSQL and Redis described by an :class:`EngineConfig`.

    Use as ``with EngineServices(cfg) as engine: ...`` or call :meth:`start`/:meth:`stop`. A fresh object on
    the same state folder finds the running servers again through their PID files (that is how ``down``
    works). :meth:`status`, :meth:`is_running`, :meth:`pid` and :meth:`log_tail` come from
    :class:`~devstack.processes.ManagedProcesses`.
    """

    names = ENGINE_SERVICES

    def __init__(self, config: EngineConfig | None = None, *, ready_timeout: float = READY_TIMEOUT) -> None:
        """:param config: the configuration (default :meth:`EngineConfig.from_env`).
        :param ready_timeout: seconds each server gets to accept connections.
        """
        super().__init__()
        self.config = config if config is not None else EngineConfig.from_env()
        self.ready_timeout = ready_timeout
        #: Seconds per step of the last start (``initdb`` when it ran, ``postgres``, ``bootstrap``, ``redis``)
        #: and of the stops since (``stop-postgres``, ``stop-redis``); for reports.
        self.timings: dict[str, float] = {}
        self._bindir: Path | None = None

    def __repr__(self) -> str:
        return f"EngineServices(state_dir={str(self.config.state_dir)!r})"

    def __enter__(self) -> EngineServices:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- public API ------------------------------------------------------------------------------------
    def start(self, services: Iterable[str] | None = None) -> EngineServices:
        """Start what is not running, wait until each server accepts connections, and make sure the
        ``airflow`` role and database exist with the password of this state folder.

        A new state folder gets a new cluster (``initdb``); an existing one is reused. If anything fails,
        what this call launched is stopped again before the error propagates.

        :param services: names from :data:`ENGINE_SERVICES` (default: both).
        :returns: ``self``.
        :raises MissingBinaryError: a binary is missing (nothing is started).
        :raises PortInUseError: a port is taken by another process (nothing is started).
        :raises StackError: the server's OS user is missing or cannot reach the state folder, or initdb or
            the bootstrap SQL failed.
        :raises ServiceNotReadyError: a server exited or did not accept connections in time.
        """
        c = self.config
        self.timings = {}
        wanted = set(ENGINE_SERVICES if services is None else [_check_name(s) for s in services])
        names = [s for s in ENGINE_SERVICES if s in wanted]
        todo = [s for s in names if not self.is_running(s)]
        # Every check before the first launch: a bad setup must not leave half an engine running.
        user = _server_user(c) if "postgres" in wanted else None
        commands = {s: self._command(s, user) for s in todo}
        for s in todo:
            if not port_is_free(c.port(s)):
                raise PortInUseError(s, c.port(s))
        c.state_dir.mkdir(parents=True, exist_ok=True)
        launched: list[str] = []
        started: dict[str, float] = {}
        try:
            for s in todo:
                self._prepare(s, user)
                self._spawn(
                    s, commands[s], self._env(s), cwd=c.postgres_dir if s == "postgres" else c.redis_dir
                )
                launched.append(s)
                started[s] = time.monotonic()
            now = time.monotonic()
            self._wait_all({s: started.get(s, now) for s in names})
            if "postgres" in wanted:
                t0 = time.monotonic()
                self._bootstrap()
                self.timings["bootstrap"] = time.monotonic() - t0
        except BaseException:
            self._stop(launched)
            raise
        return self

    def stop(self, services: Iterable[str] | None = None) -> list[str]:
        """Stop the servers that have a live PID file (see the module docstring for the signals), and
        return once no process of their sessions is left. Safe when nothing runs and when called twice.

        :param services: names from :data:`ENGINE_SERVICES` (default: both).
        :returns: the names of the services that were running.
        """
        names = list(ENGINE_SERVICES if services is None else [_check_name(s) for s in services])
        return self._stop(names)

    @property
    def sqlalchemy_url(self) -> str:
        """:returns: the Airflow database's SQLAlchemy URL (see :meth:`EngineConfig.sqlalchemy_url`)."""
        return self.config.sqlalchemy_url()

    @property
    def broker_url(self) -> str:
        """:returns: the Celery broker URL (see :attr:`EngineConfig.broker_url`)."""
        return self.config.broker_url

    def airflow_env(self) -> dict[str, str]:
        """:returns: the Airflow settings for this engine (see :meth:`EngineConfig.airflow_env`)."""
        return self.config.airflow_env()

    def processes(self) -> dict[str, list[int]]:
        """:returns: service -> PIDs of every live process of the server (the postmaster, its backends and
        auxiliary processes; Redis), empty when stopped."""
        out: dict[str, list[int]] = {}
        for name in ENGINE_SERVICES:
            sid = self._read_pid(name)
            live = (
                self._family(name, sid).refresh()
                if sid is not None and self._may_signal(name, sid)
                else set()
            )
            out[name] = sorted(live)
        return out

    def describe(self) -> list[dict[str, Any]]:
        """:returns: one row per service with ``service``, ``url`` (no password), ``pid`` (or None) and ``log``."""
        c = self.config
        urls = {
            "postgres": f"postgresql://{AIRFLOW_ROLE}@{HOST}:{c.postgres_port}/{AIRFLOW_DATABASE}",
            "redis": c.broker_url,
        }
        return [
            {"service": s, "url": urls[s], "pid": self.pid(s), "log": str(c.log_file(s))}
            for s in ENGINE_SERVICES
        ]

    def psql(self, sql: str, database: str = AIRFLOW_DATABASE, timeout: float = 30.0) -> str:
        """Run SQL as the superuser over the Unix socket (``psql -X -A -t``, stop at the first error).

        :param sql: one or more statements (psql meta-commands such as ``\\gexec`` work).
        :param database: the database to connect to.
        :param timeout: seconds.
        :returns: psql's output (unaligned, tuples only).
        :raises StackError: with psql's error output when it fails.
        """
        c = self.config
        argv = [
            str(self._postgres_bindir() / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
            "-h", str(c.postgres_socket_dir), "-p", str(c.postgres_port), "-U", SUPERUSER, "-d", database, "-f", "-",
        ]  # fmt: skip
        out = self._run_pg_tool(argv, _server_user(c), sql, timeout)
        return out.stdout

    # -- internals -------------------------------------------------------------------------------------
    def _postgres_bindir(self) -> Path:
        if self._bindir is None:
            version_file = self.config.postgres_data_dir / "PG_VERSION"
            try:
                version: str | None = version_file.read_text().strip()
            except OSError:
                version = None
            self._bindir = find_postgres_bindir(version, self.config.postgres_bindir)
        return self._bindir

    def _command(self, name: str, user: _OsUser | None) -> list[str]:
        c = self.config
        if name == "redis":
            return [
                find_redis_server(), "--bind", HOST, "--port", str(c.redis_port), "--protected-mode", "yes",
                "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", str(c.redis_dir),
            ]  # fmt: skip
        bindir = self._postgres_bindir()
        socket_path = c.postgres_socket_dir / f".s.PGSQL.{c.postgres_port}"
        if len(str(socket_path).encode()) > _MAX_SOCKET_PATH:
            raise StackError(
                f"PostgreSQL's Unix socket {socket_path} would be longer than {_MAX_SOCKET_PATH} bytes, "
                "the limit of a socket path: use a shorter state folder (MODELWATCH_STACK_DIR)"
            )
        argv = [
            str(bindir / "postgres"), "-D", str(c.postgres_data_dir), "-k", str(c.postgres_socket_dir),
            "-h", HOST, "-p", str(c.postgres_port),
        ]  # fmt: skip
        if not c.durable:
            for setting in _NOT_DURABLE:
                argv += ["-c", setting]
        return _as_user(user, argv)

    def _env(self, name: str) -> dict[str, str]:
        if name == "redis":
            return dict(os.environ)
        return self._pg_env()

    def _pg_env(self) -> dict[str, str]:
        # A small environment of its own: root's HOME is not readable by the server's user, and a LANG
        # naming a locale that is not generated (common in containers) makes initdb fail.
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.config.postgres_dir),
            "LC_ALL": "C",
            "TZ": "UTC",
        }

    def _prepare(self, name: str, user: _OsUser | None) -> None:
        c = self.config
        if name == "redis":
            c.redis_dir.mkdir(parents=True, exist_ok=True)
            return
        c.postgres_dir.mkdir(parents=True, exist_ok=True)
        if user is not None:
            os.chown(c.postgres_dir, user.uid, user.gid)
            blocker = _blocking_dir(c.postgres_dir, user)
            if blocker is not None:
                mode = stat.filemode(blocker.stat().st_mode)
                raise StackError(
                    f"PostgreSQL runs as OS user {user.name!r} (initdb and postgres refuse root), and that user "
                    f"cannot reach {c.postgres_dir}: {blocker} ({mode}) gives it no search (x) permission. Use a "
                    f"state folder it can reach (tests: devstack.engine.reachable_temp_dir(); pytest's tmp_path "
                    f"is under a 0700 folder), or allow passing through with `chmod o+x {blocker}`."
                )
        c.postgres_dir.chmod(0o700)
        c.airflow_password()
        if not (c.postgres_data_dir / "PG_VERSION").is_file():
            self._initdb(user)

    def _initdb(self, user: _OsUser | None) -> None:
        c = self.config
        if c.postgres_data_dir.exists() and any(c.postgres_data_dir.iterdir()):
            raise StackError(
                f"{c.postgres_data_dir} is not empty but holds no cluster (no PG_VERSION): an earlier initdb "
                f"failed (see {c.initdb_log}). Remove that folder and start again."
            )
        argv = [
            str(self._postgres_bindir() / "initdb"), "-D", str(c.postgres_data_dir), "-U", SUPERUSER,
            "-E", "UTF8", "--no-locale", "--auth-local=trust", "--auth-host=scram-sha-256", "--no-instructions",
        ]  # fmt: skip
        if not c.durable:
            argv.append("--no-sync")
        t0 = time.monotonic()
        with c.initdb_log.open("wb") as log:
            try:
                done = subprocess.run(
                    _as_user(user, argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    cwd=c.postgres_dir, env=self._pg_env(), timeout=120,
                )  # fmt: skip
            except subprocess.TimeoutExpired:
                raise StackError(
                    f"initdb did not finish in 120 s. Last lines of {c.initdb_log}:\n{tail(c.initdb_log)}"
                ) from None
        if done.returncode != 0:
            raise StackError(
                f"initdb ({argv[0]}) failed with code {done.returncode}. Last lines of {c.initdb_log}:\n"
                f"{tail(c.initdb_log)}"
            )
        self.timings["initdb"] = time.monotonic() - t0

    def _bootstrap(self) -> None:
        """Create role and database ``airflow`` unless they exist; set the role's password every time (the
        state folder's password file is the truth)."""
        password = self.config.airflow_password()
        self.psql(
            f"SELECT 'CREATE ROLE {AIRFLOW_ROLE} LOGIN' "
            f"WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{AIRFLOW_ROLE}')\\gexec\n"
            f"ALTER ROLE {AIRFLOW_ROLE} WITH LOGIN PASSWORD '{password}';\n"
            f"SELECT 'CREATE DATABASE {AIRFLOW_DATABASE} OWNER {AIRFLOW_ROLE} ENCODING ''UTF8'' TEMPLATE template0' "
            f"WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{AIRFLOW_DATABASE}')\\gexec\n",
            database="postgres",
        )

    def _run_pg_tool(
        self, argv: list[str], user: _OsUser | None, stdin: str | None, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        try:
            out = subprocess.run(
                _as_user(user, argv), input=stdin, capture_output=True, text=True, env=self._pg_env(),
                cwd=self.config.postgres_dir, timeout=timeout,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise StackError(f"{Path(argv[0]).name} did not answer within {timeout:.0f} s") from None
        if out.returncode != 0:
            raise StackError(
                f"{Path(argv[0]).name} failed with code {out.returncode} (port {self.config.postgres_port}): "
                f"{out.stderr.strip()}\nLast lines of {self.config.log_file('postgres')}:\n{self.log_tail('postgres')}"
            )
        return out

    def _probe(self, name: str) -> bool:
        c = self.config
        if name == "redis":
            return redis_ping(c.redis_port)
        # 0: accepting connections; 1: rejecting (starting up); 2: no answer.
        argv = [
            str(self._postgres_bindir() / "pg_isready"),
            "-q",
            "-h",
            HOST,
            "-p",
            str(c.postgres_port),
            "-t",
            "2",
        ]
        try:
            return subprocess.run(argv, env=self._pg_env(), timeout=10).returncode == 0
        except (OSError, subprocess.SubprocessError):
            return False

    def _wait_all(self, started: dict[str, float]) -> None:
        """Wait until every service of ``started`` (name -> launch time) accepts connections; all are polled
        in turn, so each one's time is its own."""
        pending = dict(started)
        while pending:
            for name, t0 in list(pending.items()):
                self._check_alive(name)
                if self._probe(name):
                    self.timings[name] = time.monotonic() - t0
                    del pending[name]
                elif time.monotonic() - t0 > self.ready_timeout:
                    log = self.config.log_file(name)
                    raise ServiceNotReadyError(
                        f"{name} did not accept connections on {HOST}:{self.config.port(name)} within "
                        f"{self.ready_timeout:.0f} s. Last lines of {log}:\n{tail(log)}"
                    )
            if pending:
                time.sleep(0.05)

    def _matches(self, name: str, cmdline: str) -> bool:
        c = self.config
        if name == "postgres":
            # The postmaster keeps its argv; the data folder is the cluster's identity.
            return "postgres" in cmdline and f"-D {c.postgres_data_dir} " in f"{cmdline} "
        # Redis rewrites its title to "redis-server 127.0.0.1:<port>".
        return "redis-server" in cmdline and f"{HOST}:{c.redis_port}" in cmdline

    def _may_signal(self, name: str, sid: int) -> bool:
        """Whether the PID file's ``sid`` is this service's: its leader is ours (an unreaped child of this
        object, or a live session leader with our command line), or it is gone and only orphans may be left
        (Linux hands out no PID that is still some process' session id)."""
        proc = self._procs.get(name)
        if proc is not None and proc.pid == sid:
            # Not reaped yet, so the PID cannot have been reused; a dying process has no command line.
            return True
        deadline = time.monotonic() + 1.0
        # A leader that is exiting (just killed) has an empty command line for a moment: wait for it.
        while pid_alive(sid) and cmdline(sid) == "" and time.monotonic() < deadline:
            time.sleep(0.02)
        return self._owned(name, sid) or not pid_alive(sid)

    def _family(self, name: str, sid: int) -> _ServerFamily:
        if name != "postgres":
            return _ServerFamily(sid)
        data_dir = self.config.postgres_data_dir
        try:
            exe = (self._postgres_bindir() / "postgres").resolve()
        except MissingBinaryError:
            exe = None
        return _ServerFamily(sid, cwd=data_dir.resolve(), exe=exe)

    def _remove_stale_shared_memory(self) -> None:
        """Remove the SysV shared memory segment of a postmaster that died without shutting down (SIGKILL).

        A clean shutdown removes it and deletes ``postmaster.pid``; after a SIGKILL the segment (a few
        bytes: the buffers themselves are mmap'ed and went with the processes) stays until the next
        postmaster on the same data folder removes it, and forever when the folder is deleted, as a test's
        is: each would hold one of the machine's segments (``kernel.shmmni``, 4096). Called once no process
        of the cluster is left; removes only the segment ``postmaster.pid`` names, with its key, and only
        while nothing is attached to it.
        """
        try:
            lines = (self.config.postgres_data_dir / "postmaster.pid").read_text().splitlines()
            key, shmid = (int(part) for part in lines[6].split())
            table = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
        except (OSError, IndexError, ValueError):
            return
        ipcrm = shutil.which("ipcrm")
        for row in table:
            fields = row.split()
            if ipcrm and (int(fields[0]), int(fields[1]), int(fields[6])) == (key, shmid, 0):
                with contextlib.suppress(OSError, subprocess.SubprocessError):
                    subprocess.run([ipcrm, "-m", str(shmid)], capture_output=True, timeout=10)

    def _stop(self, names: list[str]) -> list[str]:
        stopped: list[str] = []
        for name in names:
            sid = self._read_pid(name)
            family = self._family(name, sid) if sid is not None and self._may_signal(name, sid) else None
            if family is None or not family.alive():
                self.config.pid_file(name).unlink(missing_ok=True)
                self._procs.pop(name, None)
                continue
            t0 = time.monotonic()
            self._escalate({name: family.leader}, _STOP_STEPS[name], family.send, family.alive)
            if name == "postgres" and not family.alive():
                self._remove_stale_shared_memory()
            self.timings[f"stop-{name}"] = time.monotonic() - t0
            stopped.append(name)
        return stopped


def _kin(parent: int | None, cwd: Path | None, exe: Path | None) -> set[int]:
    """Live (non-zombie) processes, from /proc, whose parent is ``parent``, or that run ``exe`` in folder
    ``cwd`` (both must match; PostgreSQL's processes all work in their data folder)."""
    out: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name in parentheses may contain spaces: split after the last ')'.
        fields = raw[raw.rindex(")") + 2 :].split()
        if fields[0] in ("Z", "X"):
            continue
        if parent is not None and int(fields[1]) == parent:
            out.add(int(entry.name))
        elif cwd is not None and exe is not None:
            with contextlib.suppress(OSError):
                if Path(os.readlink(entry / "cwd")) == cwd and Path(os.readlink(entry / "exe")) == exe:
                    out.add(int(entry.name))
    return out


class _ServerFamily:
    """A server's leader and every process that belongs to it: its session, and its children.

    PostgreSQL's children (backends, checkpointer, WAL writer...) each call ``setsid()``, so they are not in
    the postmaster's session (:func:`devstack.processes.session_members` finds the postmaster alone). They
    are found by parent id while the postmaster lives, and by what they run where (the ``postgres`` binary
    in the cluster's data folder) once it is gone: a postmaster killed with SIGKILL leaves backends that
    still hold its shared memory, and a new postmaster on the same data folder refuses to start until they
    are gone. Only the leader gets the stop signals while it lives: the postmaster shuts its children down
    itself.
    """

    def __init__(self, leader: int, *, cwd: Path | None = None, exe: Path | None = None) -> None:
        """:param leader: the PID of the PID file (leader of its session).
        :param cwd: with ``exe``: processes running ``exe`` in this folder belong to the family too.
        :param exe: the resolved path of the server binary.
        """
        self.leader = leader
        self.cwd = cwd
        self.exe = exe
        self.members: set[int] = set()

    def refresh(self) -> set[int]:
        """:returns: the live PIDs of the family (leader included while it lives)."""
        self.members |= _kin(self.leader if pid_alive(self.leader) else None, self.cwd, self.exe)
        self.members |= set(session_members(self.leader))
        self.members = {pid for pid in self.members | {self.leader} if pid_alive(pid)}
        return set(self.members)

    def alive(self, _leader: int | None = None) -> bool:
        """:returns: whether any process of the family is left (the argument is for ``_escalate``)."""
        return bool(self.refresh())

    def send(self, _leader: int, sig: signal.Signals) -> None:
        """Send ``sig`` to the leader while it lives; SIGKILL, and any signal once the leader is gone, is a
        SIGKILL to every process of the family: orphans of a dead postmaster have nothing left to save (the
        WAL is the cluster's durability), and one that is stuck or stopped would ignore anything else."""
        members = self.refresh()
        if sig is not signal.SIGKILL and self.leader in members:
            targets, sig_now = {self.leader}, sig
        else:
            targets, sig_now = members, signal.SIGKILL
        for pid in targets:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig_now)
