"""Load shape phases, the burner's bounds and the drill's bookkeeping, without servers.

Locust itself is never imported here: it monkey-patches the whole process with gevent. The locustfile is
checked in a subprocess instead.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from polling import wait_until

from devstack.burn import GRACE_S, MAX_SECONDS, busy_until, check_bounds
from devstack.drill import DrillResult, read_locust_history, read_locust_totals, requests_per_phase
from devstack.loadshape import LoadPhases, start_epoch_from_env

REPO = Path(__file__).resolve().parents[2]


# -- load shape ----------------------------------------------------------------------------------------------


def test_phases_quiet_surge_quiet_then_stop() -> None:
    p = LoadPhases(quiet_s=10, burn_s=20, after_s=5, users_quiet=4, users_surge=12)
    assert p.total_s == 35
    assert [p.phase_at(t) for t in (0, 9.99, 10, 29.99, 30, 34.99, 35, -1)] == [
        "quiet", "quiet", "burn", "burn", "after", "after", None, None,
    ]  # fmt: skip
    assert [p.users_at(t) for t in (0, 15, 31, 40)] == [4, 12, 4, None]
    assert p.tick(15) == (12, 12.0)
    assert p.tick(35) is None


def test_phases_round_trip_through_the_environment() -> None:
    p = LoadPhases(
        quiet_s=1.5, burn_s=2, after_s=3, users_quiet=2, users_surge=7, wait_min_s=0.0, wait_max_s=0.1
    )
    env = p.to_env(start_epoch=1234.5)
    assert env["MODELWATCH_LOAD_USERS_SURGE"] == "7"
    assert LoadPhases.from_env(env) == p
    assert start_epoch_from_env(env) == 1234.5
    assert LoadPhases.from_env({}) == LoadPhases()
    assert start_epoch_from_env({}) is None
    with pytest.raises(ValueError, match="MODELWATCH_LOAD_BURN_S"):
        LoadPhases.from_env({"MODELWATCH_LOAD_BURN_S": "soon"})


@pytest.mark.parametrize(
    "kwargs", [{"quiet_s": -1}, {"users_quiet": 0}, {"users_surge": 0}, {"wait_min_s": 1, "wait_max_s": 0.5}]
)
def test_phases_reject_nonsense(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        LoadPhases(**kwargs)


def test_locustfile_shape_follows_the_environment() -> None:
    # In a subprocess: importing locust patches the interpreter with gevent.
    code = (
        "from devstack.locustfile import DrillShape, ModelUser, PHASES\n"
        "s = DrillShape()\n"
        "print(PHASES.users_quiet, PHASES.users_surge, s.tick(), ModelUser.wait_time.__name__ if hasattr(ModelUser.wait_time, '__name__') else '')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "MODELWATCH_LOAD_USERS_QUIET": "3", "MODELWATCH_LOAD_USERS_SURGE": "9",
           "MODELWATCH_LOAD_QUIET_S": "100", "MODELWATCH_LOAD_START_EPOCH": str(time.time() - 150)}  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    users_quiet, users_surge, *rest = out.stdout.split()
    assert (users_quiet, users_surge) == ("3", "9")
    # 150 s after the start: in the burn phase (100 s quiet, 75 s burn by default).
    assert "".join(rest).startswith("(9,")


# -- burner --------------------------------------------------------------------------------------------------


def test_burn_bounds() -> None:
    check_bounds(0.1, 1)
    for seconds, workers in [(0, 1), (-1, 1), (MAX_SECONDS + 1, 1), (1, 0), (1, 1000)]:
        with pytest.raises(ValueError):
            check_bounds(seconds, workers)


def test_busy_until_stops_at_the_deadline() -> None:
    t0 = time.monotonic()
    assert busy_until(t0 + 0.2) >= 1
    took = time.monotonic() - t0
    # the deadline is the point: not before it, and soon after it (0.8 s of margin for a busy machine)
    assert 0.2 <= took < 1.0, f"busy_until(now + 0.2 s) returned after {took:.3f} s"


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
                out.append(int(entry.name))
    return out


def _gone_or_zombie(pid: int) -> bool:
    try:
        return "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]
    except FileNotFoundError:
        return True


def _workers_of(proc: subprocess.Popen) -> list[int]:
    kids = wait_until(lambda: _children(proc.pid), until=lambda kids: len(kids) >= 2, timeout=10, interval=0.02,
                      what=f"the burner (pid {proc.pid}) to start its two workers")  # fmt: skip
    assert len(kids) == 2, kids
    return kids


def test_burner_workers_have_their_own_sessions_and_end_by_themselves() -> None:
    # long enough to see both workers (they start within milliseconds), short enough for the inner loop
    seconds = 1.0
    proc = subprocess.Popen(
        [sys.executable, "-m", "devstack.burn", "--seconds", str(seconds), "--workers", "2"],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        kids = _workers_of(proc)
        # a worker calls setsid() as it starts: wait until both have
        sessions = wait_until(lambda: {os.getsid(k) for k in kids}, until=lambda sids: sids == set(kids),
                              timeout=5, interval=0.02,
                              what="each worker to lead a session of its own (its own scheduler autogroup)")  # fmt: skip
        assert os.getsid(proc.pid) not in sessions
        out, _ = proc.communicate(timeout=seconds + GRACE_S + 5)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert "killed at deadline: 0" in out
    for k in kids:
        with pytest.raises(ProcessLookupError):
            os.kill(k, 0)


def test_burner_stops_its_workers_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "devstack.burn", "--seconds", "60", "--workers", "2"], cwd=REPO
    )
    try:
        kids = _workers_of(proc)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=5)
        took = time.monotonic() - t0
        # the burner itself stops promptly (it would otherwise burn for 60 s)
        assert took < 3, f"the burner took {took:.1f} s to exit after SIGTERM"
        # and so do its workers (gone, or zombies not reaped yet)
        wait_until(lambda: [k for k in kids if not _gone_or_zombie(k)], until=lambda alive: not alive, timeout=5,
                   interval=0.02, what="the burner's workers to end after its SIGTERM")  # fmt: skip
    finally:
        if proc.poll() is None:
            proc.kill()


def test_burner_rejects_bad_arguments() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "devstack.burn", "--seconds", "0", "--workers", "1"], cwd=REPO, capture_output=True,
        text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 2 and "--seconds" in out.stderr


# -- drill bookkeeping ---------------------------------------------------------------------------------------


def test_requests_per_phase_from_cumulative_history() -> None:
    history = [(100.0, 0), (101.0, 10), (102.0, 25), (103.0, 40), (104.0, 41)]
    got = requests_per_phase(history, [("quiet", 100, 101.5), ("burn", 101.5, 103), ("after", 103, 110)])
    assert got == {"quiet": 10, "burn": 30, "after": 1}
    assert requests_per_phase([], [("quiet", 0, 1)]) == {"quiet": 0}


def test_locust_csv_readers(tmp_path: Path) -> None:
    prefix = tmp_path / "locust"
    Path(f"{prefix}_stats.csv").write_text(
        "Type,Name,Request Count,Failure Count\nPOST,/predict,120,3\n,Aggregated,120,3\n"
    )
    Path(f"{prefix}_stats_history.csv").write_text(
        "Timestamp,User Count,Type,Name,Total Request Count\n"
        "100,4,POST,/predict,5\n100,4,,Aggregated,5\n101,4,,Aggregated,12\n"
    )
    assert read_locust_totals(prefix) == (120, 3)
    assert read_locust_history(prefix) == [(100.0, 5), (101.0, 12)]
    assert read_locust_totals(tmp_path / "none") == (0, 0)
    assert read_locust_history(tmp_path / "none") == []


def test_drill_result_phase_of() -> None:
    t0 = datetime(2026, 11, 20, 10, tzinfo=UTC)
    r = DrillResult(
        start=t0, burn_start=t0 + timedelta(seconds=40), burn_end=t0 + timedelta(seconds=115),
        end=t0 + timedelta(seconds=155), requests=10, failures=0,
    )  # fmt: skip
    assert [r.phase_of(t0 + timedelta(seconds=s)) for s in (-1, 0, 40, 114, 115, 154, 155)] == [
        None, "quiet", "burn", "burn", "after", "after", None,
    ]  # fmt: skip
