"""A saturation drill against the sample model service: quiet load, a CPU burn with a traffic surge, quiet.

``python -m devstack.drill --url http://127.0.0.1:18000 --quiet 40 --burn 75 --after 40``

:func:`run_drill` runs Locust headless (``devstack/locustfile.py``, phases from :mod:`devstack.loadshape`)
across the three phases and :mod:`devstack.burn` during the burn phase only. Both are subprocesses in
sessions of their own, bounded in time by themselves and stopped by PID in a ``finally`` block, so an
interrupted drill leaves nothing running. The returned :class:`DrillResult` has the phase boundaries
(aware UTC) and Locust's counts.

Why: Locust's own command line makes the load and :mod:`devstack.burn` the CPU burn; this module only
starts the two in step, bounds them in time and reports when each phase began, which neither tool does.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from devstack.loadshape import PHASES, LoadPhases

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
#: Burner processes during the burn phase, each in a session of its own (see devstack/burn.py). Measured on
#: the 2-core machines (5 quiet / 15 surge users, 160 trees): the service answering 15 users keeps up with
#: 6 burners (p95 0.17 s, nothing over 0.5 s; the scheduler favours the sleeping service), falls behind
#: with 12 (18 % over 0.5 s) and 24 (80 %). 16, in three 40/75/40 s drills: 48-66 % over 0.5 s during the
#: burn, none in the quiet phases, both CPUs 100 % busy: a clear share with margin both ways.
DEFAULT_BURN_WORKERS = 16
#: Seconds Locust gets to start (import gevent, sklearn, build rows) before the drill's clock starts.
LOCUST_WARMUP_S = 3.0
#: Seconds allowed past the planned end before everything is killed.
OVERRUN_S = 30.0


@dataclass(frozen=True)
class DrillResult:
    """What a drill did: phase boundaries (aware UTC) and the load generator's counts."""

    start: datetime
    burn_start: datetime
    burn_end: datetime
    end: datetime
    requests: int
    failures: int
    #: Requests per phase (``quiet``, ``burn``, ``after``), from Locust's per-second history.
    requests_per_phase: dict[str, int] = field(default_factory=dict)
    burn_workers: int = DEFAULT_BURN_WORKERS
    users_quiet: int = 0
    users_surge: int = 0

    def phase_of(self, when: datetime) -> str | None:
        """:param when: an aware datetime. :returns: the phase it falls in, or None outside the drill."""
        if self.start <= when < self.burn_start:
            return "quiet"
        if self.burn_start <= when < self.burn_end:
            return "burn"
        if self.burn_end <= when < self.end:
            return "after"
        return None


def _now() -> datetime:
    return datetime.now(UTC)


def _stop(proc: subprocess.Popen[bytes] | None, timeout: float = 5.0) -> None:
    """SIGTERM the session/group the process leads, SIGKILL after ``timeout``; reap it."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def read_locust_totals(csv_prefix: Path) -> tuple[int, int]:
    """:param csv_prefix: what was passed to ``locust --csv``.
    :returns: ``(requests, failures)`` of the Aggregated row of ``<prefix>_stats.csv`` ((0, 0) if none)."""
    path = Path(f"{csv_prefix}_stats.csv")
    if not path.is_file():
        return 0, 0
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row.get("Name") == "Aggregated":
                return int(row["Request Count"]), int(row["Failure Count"])
    return 0, 0


def read_locust_history(csv_prefix: Path) -> list[tuple[float, int]]:
    """:param csv_prefix: what was passed to ``locust --csv``.
    :returns: ``(epoch seconds, cumulative requests)`` of the Aggregated rows of ``<prefix>_stats_history.csv``."""
    path = Path(f"{csv_prefix}_stats_history.csv")
    if not path.is_file():
        return []
    out = []
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row.get("Name") == "Aggregated":
                with contextlib.suppress(KeyError, ValueError):
                    out.append((float(row["Timestamp"]), int(row["Total Request Count"])))
    return out


def requests_per_phase(
    history: Sequence[tuple[float, int]], bounds: Sequence[tuple[str, float, float]]
) -> dict[str, int]:
    """Requests in each phase from a cumulative history.

    :param history: ``(epoch seconds, cumulative requests)``, in time order.
    :param bounds: ``(phase, start epoch, end epoch)``.
    :returns: phase -> cumulative count at its end minus at its start (the last sample at or before each).
    """

    def at(t: float) -> int:
        value = 0
        for ts, total in history:
            if ts > t:
                break
            value = total
        return value

    return {name: max(0, at(end) - at(start)) for name, start, end in bounds}


def _locust_cmd(url: str, csv_prefix: Path, run_time_s: float) -> list[str]:
    exe = Path(sys.executable).parent / "locust"
    head = [str(exe)] if exe.is_file() else [sys.executable, "-m", "locust"]
    return [
        *head,
        "-f", str(LOCUSTFILE),
        "--headless",
        "--host", url,
        "--csv", str(csv_prefix),
        "--csv-full-history",
        "--only-summary",
        "--loglevel", "WARNING",
        # A backstop: the shape stops the test by itself at the end of the last phase.
        "--run-time", f"{int(run_time_s) + 1}s",
        "--stop-timeout", "5",
    ]  # fmt: skip


def run_drill(
    service_url: str,
    *,
    quiet_s: float,
    burn_s: float,
    after_s: float,
    users_quiet: int,
    users_surge: int,
    burn_workers: int | None = None,
    progress: Callable[[str], None] = print,
) -> DrillResult:
    """Run quiet load, then the surge with the CPU burner, then quiet load again; stop everything.

    :param service_url: base URL of the model service (``http://127.0.0.1:18000``).
    :param quiet_s: seconds of quiet load before the burn.
    :param burn_s: seconds of burn (and surge).
    :param after_s: seconds of quiet load after the burn.
    :param users_quiet: Locust users in the quiet phases.
    :param users_surge: Locust users during the burn.
    :param burn_workers: burner processes (default :data:`DEFAULT_BURN_WORKERS`).
    :param progress: called with one line per step.
    :returns: the phase boundaries and Locust's counts.
    :raises RuntimeError: when Locust exits early with an error.
    """
    workers = DEFAULT_BURN_WORKERS if burn_workers is None else burn_workers
    phases = LoadPhases(
        quiet_s=quiet_s, burn_s=burn_s, after_s=after_s, users_quiet=users_quiet, users_surge=users_surge
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    with tempfile.TemporaryDirectory(prefix="modelwatch-drill-") as tmp:
        csv_prefix = Path(tmp) / "locust"
        log_path = Path(tmp) / "locust.log"
        locust: subprocess.Popen[bytes] | None = None
        burner: subprocess.Popen[bytes] | None = None
        try:
            start_epoch = time.time() + LOCUST_WARMUP_S
            env.update(phases.to_env(start_epoch=start_epoch))
            start = datetime.fromtimestamp(start_epoch, UTC)
            with log_path.open("wb") as log:
                locust = subprocess.Popen(
                    _locust_cmd(service_url, csv_prefix, phases.total_s),
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp,
                    start_new_session=True,
                )  # fmt: skip
            progress(
                f"quiet: {users_quiet} users for {quiet_s:.0f} s (locust pid {locust.pid}) against {service_url}"
            )
            _sleep_until(start_epoch + quiet_s, locust, log_path)
            burn_start = _now()
            burner = subprocess.Popen(
                [sys.executable, "-m", "devstack.burn", "--seconds", str(burn_s), "--workers", str(workers)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                start_new_session=True,
            )  # fmt: skip
            progress(
                f"burn: {workers} burner(s) (pid {burner.pid}) and {users_surge} users for {burn_s:.0f} s"
            )
            try:
                burner.wait(timeout=burn_s + 10)
            except subprocess.TimeoutExpired:
                _stop(burner)
            burn_end = _now()
            progress(f"after: {users_quiet} users for {after_s:.0f} s")
            end_epoch = burn_end.timestamp() + after_s
            # The shape stops Locust at start + total; wait for it to write its CSVs and exit.
            try:
                locust.wait(timeout=max(0.0, end_epoch - time.time()) + OVERRUN_S)
            except subprocess.TimeoutExpired:
                progress("locust did not stop by itself; stopping it")
                _stop(locust, timeout=10)
            end = datetime.fromtimestamp(min(time.time(), start_epoch + phases.total_s), UTC)
        finally:
            _stop(burner)
            _stop(locust, timeout=10)
        requests, failures = read_locust_totals(csv_prefix)
        history = read_locust_history(csv_prefix)
        if requests == 0:
            raise RuntimeError(
                f"locust sent no request. Its log:\n{log_path.read_text(errors='replace')[-3000:]}"
            )
    bounds = [
        ("quiet", start.timestamp(), burn_start.timestamp()),
        ("burn", burn_start.timestamp(), burn_end.timestamp()),
        ("after", burn_end.timestamp(), end.timestamp()),
    ]
    per_phase = requests_per_phase(history, bounds)
    result = DrillResult(
        start=start, burn_start=burn_start, burn_end=burn_end, end=end, requests=requests, failures=failures,
        requests_per_phase=per_phase, burn_workers=workers, users_quiet=users_quiet, users_surge=users_surge,
    )  # fmt: skip
    progress(
        f"done: {requests} requests ({failures} failed); per phase "
        + ", ".join(f"{p} {per_phase.get(p, 0)}" for p in PHASES)
    )
    return result


def _sleep_until(epoch: float, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    """Sleep until ``epoch``; fail early when ``proc`` exits with an error meanwhile."""
    while (left := epoch - time.time()) > 0:
        if proc.poll() is not None and proc.returncode not in (0, 1):
            raise RuntimeError(
                f"locust exited with code {proc.returncode}. Its log:\n{log_path.read_text(errors='replace')[-3000:]}"
            )
        time.sleep(min(left, 0.5))


def build_parser() -> argparse.ArgumentParser:
    """:returns: the command line parser."""
    p = argparse.ArgumentParser(prog="python -m devstack.drill", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:18000", help="model service base URL")
    p.add_argument("--quiet", type=float, default=40.0, help="seconds of quiet load before the burn")
    p.add_argument("--burn", type=float, default=75.0, help="seconds of CPU burn and traffic surge")
    p.add_argument("--after", type=float, default=40.0, help="seconds of quiet load after the burn")
    p.add_argument("--users-quiet", type=int, default=LoadPhases().users_quiet)
    p.add_argument("--users-surge", type=int, default=LoadPhases().users_surge)
    p.add_argument("--burn-workers", type=int, default=None, help=f"default {DEFAULT_BURN_WORKERS}")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run one drill and print its phases."""
    args = build_parser().parse_args(argv)
    result = run_drill(
        args.url, quiet_s=args.quiet, burn_s=args.burn, after_s=args.after, users_quiet=args.users_quiet,
        users_surge=args.users_surge, burn_workers=args.burn_workers,
    )  # fmt: skip
    for name in ("start", "burn_start", "burn_end", "end"):
        print(f"{name:<11} {getattr(result, name).isoformat()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
