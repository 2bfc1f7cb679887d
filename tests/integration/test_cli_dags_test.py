"""``airflow dags test``, the command every Airflow user runs first, against the real seeded stack.

It runs the real CLI in a child process with a throwaway AIRFLOW_HOME. In Airflow 3.3.2 this command used to
exit 1 after every task had succeeded, because of the DAG's Deadline Alert; ``MonitoringDAG`` (src/modelwatch/monitoring_dag.py,
used by dags/model_performance_monitoring.py) fixes that for in-process test runs. The test also checks that the
DAG which the command stores for the scheduler still has its Deadline Alert.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devstack.runner import DAG_ID, airflow_env

AIRFLOW = str(Path(sys.executable).parent / "airflow")
# A manual run of the daily interval timetable covers the last full day before its logical date:
# 2026-03-03 covers 2026-03-02, the "normal" scenario day (devstack/CONTRACT.md), so nothing pages.
LOGICAL_DATE = "2026-03-03"
COVERED_DAY = "2026-03-02"


@pytest.fixture(scope="module")
def cli_run(seeded_stack, tmp_path_factory):
    """``airflow db migrate`` then ``airflow dags test model_performance_monitoring 2026-03-03``."""
    home = tmp_path_factory.mktemp("airflow-cli-home")
    lake = tmp_path_factory.mktemp("cli-lake")
    env = {**os.environ, **airflow_env(home, seeded_stack.airflow_env(), f"file://{lake}")}
    env.pop("MODELWATCH_CONFIG", None)  # the repo's include/thresholds.yaml, as a user runs it
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [AIRFLOW, "dags", "test", DAG_ID, LOGICAL_DATE], env=env, capture_output=True, text=True, timeout=300
    )
    print(f"\nairflow dags test: exit {proc.returncode} in {time.perf_counter() - t0:.1f} s")
    return proc, home, lake


def _db(home: Path) -> sqlite3.Connection:
    return sqlite3.connect(home / "airflow.db")


def test_airflow_dags_test_exits_0_after_the_tasks_ran(cli_run):
    proc, home, _ = cli_run
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert "has no attribute 'hex'" not in output
    with _db(home) as db:
        [(run_id, state, start, end)] = db.execute(
            "select run_id, state, data_interval_start, data_interval_end from dag_run where dag_id = ?",
            (DAG_ID,),
        ).fetchall()
        tasks = dict(
            db.execute("select task_id, state from task_instance where run_id = ?", (run_id,)).fetchall()
        )
    assert state == "success"
    assert start.startswith(COVERED_DAY) and end.startswith(LOGICAL_DATE)
    assert tasks == {
        "extract_resources": "success", "extract_predictions": "success", "correlate": "success",
        # a run that may page talks to Alertmanager even on a healthy day, to resolve what it paged for before
        "evaluate": "success", "choose_alert_path": "success", "no_alert": "skipped", "post_alert": "success",
        "publish_verdicts": "success",
    }  # fmt: skip


def test_the_run_wrote_the_days_verdicts(cli_run):
    _, _, lake = cli_run
    doc = json.loads((lake / "verdicts" / f"dt={COVERED_DAY}" / "_verdict.json").read_text())
    assert doc["window"]["start"].startswith(COVERED_DAY)
    assert {v["model"]: v["verdict"] for v in doc["verdicts"]} == {
        "fraud-detector": "healthy",
        "recommender": "healthy",
    }
    assert doc["alert"]["payload"] is None and doc["alert"]["reason"].startswith("nothing pages")
    assert not (lake / "alerts" / f"dt={COVERED_DAY}" / "_payload.json").exists()


def test_the_dag_stored_for_the_scheduler_keeps_its_deadline_alert(cli_run):
    """``dags test`` writes the DAG's serialized form to the metadata DB: there the Deadline Alert is intact."""
    _, home, _ = cli_run
    with _db(home) as db:
        [(sdag_id, data)] = db.execute(
            "select id, data from serialized_dag where dag_id = ? order by created_at desc limit 1", (DAG_ID,)
        ).fetchall()
        alerts = db.execute(
            "select id, reference, callback_def from deadline_alert where serialized_dag_id = ?", (sdag_id,)
        ).fetchall()
    stored = json.loads(data)["dag"]["deadline"]
    assert len(stored) == 1 and len(alerts) == 1
    alert_id, reference, callback = alerts[0]
    assert stored[0].replace("-", "") == alert_id.replace("-", "")
    assert json.loads(reference)["reference_type"] == "DagRunQueuedAtDeadline"
    assert "modelwatch.notify.deadline_missed" in callback
