"""A task stuck on a paused source fails at its ``execution_timeout``, not after the hooks' retries.

Prometheus is paused with SIGSTOP (it accepts connections and never answers): the hook alone would wait
its 60 s request timeout four times. The ``tasks`` section of thresholds.yaml bounds each try, so the run
fails within the configured timeout and says so.
"""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack.runner import load_dag, run_window, task_states

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_SECONDS = 6


@pytest.fixture
def short_budget(seeded: Any, airflow_db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    raw = yaml.safe_load((REPO / "include" / "thresholds.yaml").read_text())
    raw["tasks"] = {"execution_timeout": f"{TIMEOUT_SECONDS}s", "retries": 0}
    config = tmp_path / "thresholds.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    monkeypatch.setenv("MODELWATCH_CONFIG", str(config))
    monkeypatch.setenv("MODELWATCH_STORAGE_URL", f"file://{tmp_path / 'lake'}")
    return seeded


def test_a_task_stuck_on_a_paused_source_fails_at_its_timeout(short_budget: Any, capfd: pytest.CaptureFixture[str]) -> None:
    dag = load_dag()
    assert all(t.execution_timeout == timedelta(seconds=TIMEOUT_SECONDS) for t in dag.tasks)
    pid = short_budget.pid("prometheus")
    assert pid
    start = datetime(2026, 11, 25, 10, tzinfo=UTC)
    started = time.monotonic()
    os.kill(pid, signal.SIGSTOP)
    try:
        run = run_window(start, start + timedelta(hours=1), dag=dag)
    finally:
        os.kill(pid, signal.SIGCONT)
    took = time.monotonic() - started
    states = task_states(run)
    assert states["extract_resources"] == "failed", states
    assert states["extract_predictions"] == "success", states  # MLflow was never paused
    # one try of 6 s plus the run's own bookkeeping; the hook's retries alone would take over 4 minutes
    assert took < TIMEOUT_SECONDS + 60, f"the run took {took:.0f} s"
    # the task log (dag.test() writes it to the console) names the timeout, not a connection error
    out = "".join(capfd.readouterr())
    assert "AirflowTaskTimeout" in out, out[-3000:]
