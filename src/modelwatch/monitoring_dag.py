"""The monitoring DAG's class: the DAG files only wire tasks, so the one behaviour they need lives here."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any

from airflow.sdk import DAG, AsyncCallback, DeadlineAlert, DeadlineReference

from modelwatch.notify import deadline_missed, failure_email

if TYPE_CHECKING:
    from modelwatch.config import ModelwatchConfig

#: The team that owns every task (the owner filter of the UI, and the failure emails' subject).
OWNER = "ml-platform"
#: The monitoring DAGs' ids: the daily one writes the lake's canonical daily partitions, the hourly one its
#: ``intraday/`` ones (the model-health view asks for read access to the one that wrote a partition).
DAILY_DAG_ID, HOURLY_DAG_ID = "model_performance_monitoring", "model_performance_monitoring_hourly"
MONITORING_DAG_IDS = (DAILY_DAG_ID, HOURLY_DAG_ID)


class Tag(StrEnum):
    """The DAG tags modelwatch uses: a fixed set, so the UI's tag filter finds every modelwatch DAG under
    the same words (the DAG tests refuse a tag outside it)."""

    MODELWATCH = "modelwatch"
    MONITORING = "monitoring"
    ML = "ml"
    DAILY = "daily"
    HOURLY = "hourly"


class MonitoringDAG(DAG):
    """Both variants' DAG class: a plain ``DAG`` whose in-process ``test()`` leaves the Deadline Alert out.

    Why: in Airflow 3.3.2 ``DAG.test()`` (what ``airflow dags test`` calls) runs on an in-memory
    serialize/deserialize copy of the DAG, whose ``deadline`` holds the alerts' *encoded definitions*,
    while ``DagRun.update_state`` treats ``dag.deadline`` as the ids of their ``deadline_alert`` rows (what
    the stored serialized DAG holds) and fails with ``'dict' object has no attribute 'hex'`` once every
    task has succeeded. The alert cannot apply to such a run anyway: ``dag.test()`` creates its run
    RUNNING, never queued, so Airflow skips a ``DAGRUN_QUEUED_AT`` deadline for it ("skipping deadline
    alert because the deadline reference evaluated to None").

    Narrow on purpose: only a call of ``test()`` on this object is affected, and only for its duration.
    Parsing is not: the DAG processor, the scheduler, and the copy that ``test()`` itself writes to the
    metadata database (a fresh parse of this file) all keep the Deadline Alert
    (tests/integration/test_cli_dags_test.py checks the stored copy).
    """

    def test(self, *args: Any, **kwargs: Any) -> Any:
        deadline = self.deadline
        self.deadline = None
        try:
            return super().test(*args, **kwargs)
        finally:
            self.deadline = deadline


def run_policy(cfg: ModelwatchConfig) -> dict[str, Any]:
    """What every modelwatch DAG's runs share, as ``DAG`` keyword arguments: the owner, the retry budget of
    thresholds.yaml's ``tasks`` section (docs/operating.md), the failure email, and the Deadline Alert that
    emails when a run is still unfinished ``alerting.run_deadline`` after it was queued."""
    alerting = cfg.alerting
    return {
        "default_args": {
            "owner": OWNER,
            "execution_timeout": cfg.tasks.execution_timeout,
            "retries": cfg.tasks.retries,
            "retry_delay": cfg.tasks.retry_delay,
            "retry_exponential_backoff": True,
            "max_retry_delay": cfg.tasks.max_retry_delay,
            "on_failure_callback": failure_email(alerting.failure_email, alerting.smtp_conn_id),
        },
        "deadline": DeadlineAlert(
            reference=DeadlineReference.DAGRUN_QUEUED_AT,
            interval=alerting.run_deadline,
            callback=AsyncCallback(
                deadline_missed, kwargs={"to": alerting.failure_email, "smtp_conn_id": alerting.smtp_conn_id}
            ),
        ),
    }
