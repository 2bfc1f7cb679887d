"""The Deadline Alert stays on the DAG that is parsed and serialized for the scheduler; only an in-process
``DAG.test()`` (``airflow dags test``, ``devstack.runner``) runs without it. See ``MonitoringDAG`` in
src/modelwatch/monitoring_dag.py; tests/integration/test_cli_dags_test.py runs the real CLI."""

from __future__ import annotations

import pytest

DAG_IDS = ["model_performance_monitoring", "model_performance_monitoring_hourly"]


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_the_serialized_dag_the_scheduler_gets_carries_the_deadline(dagbag, dag_id):
    from airflow.serialization.serialized_objects import DagSerialization

    from modelwatch.config import load_config

    data = DagSerialization.to_dict(dagbag.dags[dag_id])
    [alert] = data["dag"]["deadline"]
    alert = alert.get("__var", alert)
    assert alert["reference"]["reference_type"] == "DagRunQueuedAtDeadline"
    assert alert["callback"]["__data__"]["path"] == "modelwatch.notify.deadline_missed"
    assert alert["interval"]["__data__"] == load_config().alerting.run_deadline.total_seconds()


def test_dag_test_runs_without_the_deadline_and_gives_it_back(dagbag, monkeypatch):
    from airflow.sdk import DAG

    dag = dagbag.dags["model_performance_monitoring"]
    deadline = dag.deadline
    assert deadline
    seen = {}

    def base_test(self, *args, **kwargs):
        seen.update(deadline=self.deadline, args=args, kwargs=kwargs)
        raise RuntimeError("stop here")

    monkeypatch.setattr(DAG, "test", base_test)
    with pytest.raises(RuntimeError, match="stop here"):
        dag.test(logical_date=None, run_conf={"dry_run": True})
    assert seen == {
        "deadline": None,
        "args": (),
        "kwargs": {"logical_date": None, "run_conf": {"dry_run": True}},
    }
    assert dag.deadline == deadline
