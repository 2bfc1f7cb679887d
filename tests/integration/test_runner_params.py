"""``devstack.runner.run_window``: one trigger-form window with params, under ``dag.test()``, against the real
seeded stack (used like ``run_day`` in test_monitoring_dag.py: after ``airflow_db``, with the stack's
connections and ``MODELWATCH_CONFIG`` in the environment)."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from config_helpers import own_alertnames

from devstack.runner import run_window, task_states, xcom

# the cpu_saturation incident of devstack/CONTRACT.md: model-a CPU ~97 % 10:00-12:00 on 2026-03-03
START, END = datetime(2026, 3, 3, 10, tzinfo=UTC), datetime(2026, 3, 3, 12, tzinfo=UTC)


@pytest.fixture
def window_env(seeded_stack, airflow_db, tmp_path, monkeypatch):
    """The stack's connections, a lake of this test's own and a config with an alert name of its own."""
    raw = yaml.safe_load((Path(__file__).resolve().parents[2] / "include" / "thresholds.yaml").read_text())
    alertname = own_alertnames(raw, f"ModelPredictionsDegraded{uuid.uuid4().hex[:8]}")["alerting"]["alertname"]
    config = tmp_path / "thresholds.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    for key, value in seeded_stack.airflow_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MODELWATCH_CONFIG", str(config))
    monkeypatch.setenv("MODELWATCH_STORAGE_URL", lake := f"file://{tmp_path / 'lake'}")
    return lake, alertname


def _alertmanager_alerts(stack, alertname: str) -> list[dict]:
    query = urllib.parse.urlencode({"filter": f'alertname="{alertname}"'})
    with urllib.request.urlopen(f"{stack.config.alertmanager_url}/api/v2/alerts?{query}", timeout=5) as resp:
        return json.loads(resp.read())


def test_a_dry_run_window_evaluates_exactly_that_window_and_posts_nothing(seeded_stack, window_env):
    from modelwatch.storage import Lake
    from modelwatch.window import run_key

    lake, alertname = window_env
    run = run_window(START, END, params={"dry_run": True})

    assert str(getattr(run.state, "value", run.state)) == "success"
    assert run.conf == {"window_start": START.isoformat(), "window_end": END.isoformat(), "dry_run": True}
    states = task_states(run)
    assert states["extract_resources"] == "success" and states["evaluate"] == "success"
    assert states["post_alert"] == "skipped" and states["no_alert"] == "success"

    evaluation = xcom(run, "evaluate")
    # a trigger-form window is an ad-hoc run: stored in a place of its own, named by the run
    assert evaluation["verdict_document"].endswith(f"/adhoc/verdicts/dt=2026-03-03/run={run_key(run.run_id, run.dag_id)}/_verdict.json")
    doc = Lake(lake).read_document(evaluation["verdict_document"])
    assert datetime.fromisoformat(doc["window"]["start"]) == START
    assert datetime.fromisoformat(doc["window"]["end"]) == END
    assert doc["run_id"] == run.run_id
    # the incident is in the window: the run would have paged, and the dry run kept it from doing so
    assert {v["model"]: v["verdict"] for v in doc["verdicts"]}["fraud-detector"] == "degraded"
    assert evaluation["post"] is False and doc["alert"]["post"] is False
    assert doc["alert"]["reason"].startswith("dry run")
    assert _alertmanager_alerts(seeded_stack, alertname) == []
    assert Lake(lake).read_document(evaluation["verdict_document"].replace("/verdicts/", "/alerts/").replace(
        "_verdict.json", "_delivery.json")) is None  # fmt: skip


def test_models_param_limits_the_verdicts(seeded_stack, window_env):
    from modelwatch.storage import Lake

    lake, _ = window_env
    run = run_window(START, END, params={"dry_run": True, "models": ["recommender"]})
    assert str(getattr(run.state, "value", run.state)) == "success"
    doc = Lake(lake).read_document(xcom(run, "evaluate")["verdict_document"])
    assert [v["model"] for v in doc["verdicts"]] == ["recommender"]


def test_the_command_line_runs_a_window_with_params(seeded_stack, window_env, tmp_path):
    """``python -m devstack.runner --window-start ... --window-end ... --param ...`` in a child process."""
    import os
    import subprocess
    import sys

    from devstack.runner import PROGRESS

    lake, alertname = window_env
    proc = subprocess.run(
        [sys.executable, "-m", "devstack.runner", "--window-start", "2026-03-03T10:00:00Z",
         "--window-end", "2026-03-03T12:00:00Z", "--param", 'models=["fraud-detector"]', "--param", "dry_run=true"],
        env=dict(os.environ), cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    progress = [line.split(" ", 1)[1] for line in proc.stdout.splitlines() if line.startswith(PROGRESS)]
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "start window 2026-03-03T10:00:00+00:00 2026-03-03T12:00:00+00:00" in progress
    assert "task extract_resources success" in progress and "task post_alert skipped" in progress
    assert 'verdicts {"fraud-detector": "degraded"}' in progress
    assert any(p.startswith("alert post=False (dry run") for p in progress)
    assert any("/adhoc/verdicts/dt=2026-03-03/run=manual__" in p and p.endswith("/_verdict.json") for p in progress)
    assert _alertmanager_alerts(seeded_stack, alertname) == []
