"""DAG integrity: every DAG file imports cleanly, is owned, tagged and retried, and parses light."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAG_FILES = sorted((REPO / "dags").glob("*.py"))


@pytest.fixture(scope="module")
def dagbag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert "model_performance_monitoring" in dagbag.dags


def test_every_dag_is_owned_tagged_documented_and_retried(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        assert dag.doc_md and dag.doc_md.strip(), f"{dag_id} has no doc_md"
        for t in dag.tasks:
            assert t.owner == "ml-platform", f"{dag_id}.{t.task_id} owner is {t.owner!r}"
            assert t.retries >= 2, f"{dag_id}.{t.task_id} has retries={t.retries}"
            assert t.on_failure_callback, f"{dag_id}.{t.task_id} sends no failure email"


def test_daily_dag_has_a_real_data_interval(dagbag):
    from datetime import UTC, datetime

    dag = dagbag.dags["model_performance_monitoring"]
    interval = dag.timetable.infer_manual_data_interval(run_after=datetime(2026, 3, 4, 6, tzinfo=UTC))
    assert interval.end - interval.start == (datetime(2026, 3, 4) - datetime(2026, 3, 3))


def test_dag_wiring_branches_to_alert_or_not(dagbag):
    dag = dagbag.dags["model_performance_monitoring"]
    branch = dag.get_task("choose_alert_path")
    assert set(branch.downstream_task_ids) == {"post_alert", "no_alert"}
    assert dag.get_task("correlate").upstream_task_ids == {"extract_resources", "extract_predictions"}


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_importing_a_dag_file_loads_no_heavy_library(path):
    code = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('dagfile', {str(path)!r})\n"
        "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
        "print(json.dumps(sorted(m for m in ('pandas', 'mlflow', 'boto3', 'botocore', 'pyarrow', 'numpy')"
        " if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == [], f"importing {path.name} loaded {loaded}"
