"""
### Model performance monitoring

Every day (one full UTC day per run, from the run's data interval), modelwatch:

1. runs the PromQL queries of `include/thresholds.yaml` over the window (`extract_resources`) and reads the
   prediction records of the configured MLflow experiments (`extract_predictions`), each into a Parquet
   partition `<lake>/<dataset>/dt=YYYY-MM-DD/`;
2. joins every prediction to the resource samples at its time (`correlate`);
3. gives every model a verdict: `healthy`, `degraded`, `slow_unexplained` or `no_data` (`evaluate`);
4. posts to Alertmanager when a model is degraded (`post_alert`), unless the run is a dry run or a
   backfill that was not asked to page (`no_alert`).

Trigger with parameters to pick models, a window, or a dry run. A failed task emails `MODELWATCH_ALERT_EMAIL`.
Where the partitions are: the `evaluate` task's log and XCom, and the alert's `partition` annotation.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import DAG, Param
from airflow.timetables.interval import CronDataIntervalTimetable

from modelwatch import tasks
from modelwatch.config import load_config
from modelwatch.notify import failure_email

# Validated at parse time: a bad thresholds.yaml is an import error naming file, key and problem.
CONFIG = load_config()
ASSETS = tasks.assets(CONFIG)
INTERVAL = timedelta(days=1)

with DAG(
    dag_id="model_performance_monitoring",
    doc_md=__doc__,
    description="Correlate ML prediction latency with resource saturation and alert on degradation",
    # An interval timetable: a cron string alone gives zero-length intervals in Airflow 3.
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=4,
    tags=["modelwatch", "monitoring", "ml"],
    default_args={
        "owner": "ml-platform",
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
        "on_failure_callback": failure_email(os.environ.get("MODELWATCH_ALERT_EMAIL", "ml-oncall@localhost")),
    },
    params={
        "models": Param([], type="array", items={"type": "string"},
                        description="Only these models (empty: every model with predictions)."),
        "window_start": Param("", type="string",
                              description="ISO start of the window (empty: the run's data interval)."),
        "window_end": Param("", type="string", description="ISO end of the window, exclusive."),
        "dry_run": Param(False, type="boolean", description="Evaluate and store verdicts, but do not page."),
        "page_on_backfill": Param(CONFIG.alerting.page_on_backfill, type="boolean",
                                  description="Let a backfill run post to Alertmanager."),
    },  # fmt: skip
):
    resources = tasks.extract_resources.override(outlets=[ASSETS["resources"]])(INTERVAL)
    predictions = tasks.extract_predictions.override(outlets=[ASSETS["predictions"]])(INTERVAL)
    correlated = tasks.correlate.override(outlets=[ASSETS["joined"], ASSETS["correlation"]])(
        resources, predictions, INTERVAL
    )
    evaluation = tasks.evaluate.override(outlets=[ASSETS["verdicts"]])(correlated, INTERVAL)
    tasks.choose_alert_path(evaluation) >> [
        tasks.post_alert.override(outlets=[ASSETS["alerts"]])(evaluation, INTERVAL),
        tasks.no_alert(evaluation),
    ]
