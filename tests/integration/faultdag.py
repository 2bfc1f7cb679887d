"""Helpers of the fault tests that run the whole DAG with ``dag.test()`` against the real seeded stack.

- :func:`parse_dag`: the monitoring DAG as the DAG processor sees it (``DagBag``, no import error);
- :func:`test_copy`: a copy with a short retry schedule, so "retries, then a failed task" takes seconds;
- :func:`fault_config`: a copy of ``include/thresholds.yaml`` with a unique alert name (Alertmanager
  identifies alerts by labels: a fresh name gives a fresh alert, so a test's notifications are its own);
- :func:`run_day`, :func:`task_states`: run one day and read back what each task did.
"""

from __future__ import annotations

import copy
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from config_helpers import own_alertnames

REPO = Path(__file__).resolve().parents[2]
DAG_ID = "model_performance_monitoring"


def parse_dag() -> Any:
    """The daily monitoring DAG, parsed from ``dags/`` (the session's Airflow DB must exist)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}, bag.import_errors
    return bag.dags[DAG_ID]


def test_copy(dag: Any, *, retries: int, retry_delay: float = 1.0) -> Any:
    """A copy of ``dag`` whose tasks retry ``retries`` times after ``retry_delay`` seconds.

    The copy has no Deadline Alert: ``dag.test()`` (Airflow 3.3.2) fails when a run with one succeeds
    (``DagRun.update_state`` looks the alerts up by id, and ``dag.test`` hands it the serialized dicts).
    The deadline is not under test here; ``tests/dags`` checks it is configured.
    """
    # a fresh parse, not copy.deepcopy: a deep-copied mapped task fails at run time in Airflow 3.3
    # ("unexpected expand_input", the operator checks its empty expand input by identity)
    test_dag = parse_dag() if dag.dag_id == DAG_ID else copy.deepcopy(dag)
    test_dag.deadline = None
    for task in test_dag.tasks:
        task.retries = retries
        task.retry_delay = timedelta(seconds=retry_delay)
        task.retry_exponential_backoff = False
    return test_dag


test_copy.__test__ = False  # type: ignore[attr-defined]  # not a pytest test despite its name


def fault_config(tmp_path: Path, *, storage: dict[str, Any] | None = None, **alerting: Any) -> tuple[Path, str]:
    """A thresholds.yaml with a unique ``alerting.alertname`` (and any other alerting or storage keys given).

    :returns: the file and the alert name.
    """
    raw = yaml.safe_load((REPO / "include" / "thresholds.yaml").read_text())
    name = f"ModelwatchFaults{uuid.uuid4().hex[:10]}"
    own_alertnames(raw, name)
    raw["alerting"] = {**raw["alerting"], **alerting}
    raw["storage"] = {**raw["storage"], **(storage or {})}
    path = tmp_path / f"thresholds-{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path, name


def run_day(dag: Any, day: date) -> Any:
    """Run ``dag`` for the UTC day ``day`` (a manual run covers the last full day before its date)."""
    return dag.test(logical_date=datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1))


def task_states(run: Any) -> dict[str, tuple[str, int]]:
    """task_id -> (state, try number) of a finished run."""
    return {ti.task_id: (str(getattr(ti.state, "value", ti.state)), ti.try_number) for ti in run.get_task_instances()}


def state(run: Any) -> str:
    return str(getattr(run.state, "value", run.state))
