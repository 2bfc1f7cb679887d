"""A bounded CPU burner: ``python -m devstack.burn --seconds S --workers N``.

Each worker is a busy loop that ends by itself after ``S`` seconds; the parent waits for them and kills any
left at a hard deadline (``S`` + :data:`GRACE_S`). SIGTERM/SIGINT to the parent (its PID) stops every worker
at once. Nothing here outlives ``S`` + a few seconds, even if the parent is killed with SIGKILL.

Why every worker gets a session of its own: with ``kernel.sched_autogroup_enabled=1`` (the default on
these machines) the scheduler shares CPU time first between sessions, then between the processes of a
session. Burners in one session would take at most one session's share, leaving the model service (its own
session) about half the CPU however many workers run. One session per worker gives each worker a share
equal to the service's, so ``N`` workers leave the service about ``2 / (N + k)`` of the two CPUs, ``k``
being the other busy sessions (the service, the load generator, MLflow).

Why not ``stress-ng`` (a Debian package): it would be one more system dependency for a busy loop, and what
the drill needs is the session layout and the self-imposed deadline above, which this module controls.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Sequence

#: Seconds after ``--seconds`` at which the parent SIGKILLs workers still running.
GRACE_S = 2.0
#: Longest burn accepted, so a typo cannot leave a machine busy for a day.
MAX_SECONDS = 3600.0
MAX_WORKERS = 64


def check_bounds(seconds: float, workers: int) -> None:
    """:raises ValueError: unless ``0 < seconds <= MAX_SECONDS`` and ``1 <= workers <= MAX_WORKERS``."""
    if not 0 < seconds <= MAX_SECONDS:
        raise ValueError(f"--seconds must be in (0, {MAX_SECONDS:.0f}], got {seconds}")
    if not 1 <= workers <= MAX_WORKERS:
        raise ValueError(f"--workers must be in [1, {MAX_WORKERS}], got {workers}")


def busy_until(deadline: float, clock: object = time.monotonic) -> int:
    """Spin until ``clock() >= deadline``.

    :param deadline: a value of ``clock``.
    :param clock: the clock (monotonic seconds).
    :returns: how many spin rounds ran.
    """
    rounds = 0
    while clock() < deadline:  # type: ignore[operator]
        x = 0
        for i in range(20_000):
            x += i * i
        rounds += 1
    return rounds


def _worker(seconds: float) -> None:
    # A session (and so a scheduler autogroup) of its own; see the module docstring.
    with contextlib.suppress(OSError):
        os.setsid()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    busy_until(time.monotonic() + seconds)


def burn(seconds: float, workers: int) -> int:
    """Run ``workers`` busy processes for ``seconds``; return when they are done (or at the hard deadline).

    :returns: how many workers had to be killed at the deadline (0 normally).
    """
    check_bounds(seconds, workers)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_worker, args=(seconds,), daemon=True) for _ in range(workers)]

    def stop(signum: int, _frame: object) -> None:
        for p in procs:
            if p.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGKILL)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for p in procs:
        p.start()
    deadline = time.monotonic() + seconds + GRACE_S
    for p in procs:
        p.join(timeout=max(0.0, deadline - time.monotonic()))
    killed = 0
    for p in procs:
        if p.is_alive() and p.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
            killed += 1
        p.join(timeout=1)
    return killed


def build_parser() -> argparse.ArgumentParser:
    """:returns: the command line parser."""
    p = argparse.ArgumentParser(prog="python -m devstack.burn", description="Bounded CPU burner.")
    p.add_argument("--seconds", type=float, required=True, help="how long every worker spins")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="busy processes (default: CPUs)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Burn, then exit 0 (or 2 on bad arguments)."""
    args = build_parser().parse_args(argv)
    try:
        check_bounds(args.seconds, args.workers)
    except ValueError as exc:
        print(f"burn: {exc}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    killed = burn(args.seconds, args.workers)
    print(f"burned {args.workers} worker(s) for {time.monotonic() - t0:.1f} s; killed at deadline: {killed}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
