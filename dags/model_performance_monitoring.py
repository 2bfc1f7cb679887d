"""
### Model performance monitoring

For each window (a full UTC day for `model_performance_monitoring`, a full hour for
`model_performance_monitoring_hourly`), taken from the run's data interval, modelwatch:

1. runs the PromQL queries of `include/thresholds.yaml` over the window (`extract_resources`) and reads the
   prediction records of the configured MLflow experiments (`extract_predictions`), each into a Parquet
   partition `<lake>/<dataset>/dt=YYYY-MM-DD/` (hourly: `<lake>/intraday/<dataset>/dt=.../hour=HH/`);
2. joins every prediction to the resource samples at its time and gives every model a verdict: `healthy`,
   `degraded`, `slow_unexplained` or `no_data` (`correlate`, one mapped task per group of
   `correlation.models_per_task` models, so the executor spreads a hundred models over its workers);
3. writes the groups' joined rows, correlation and verdicts as the window's partitions and decides whether
   to page (`evaluate`);
4. posts to Alertmanager the alerts of the verdicts that page (`degraded`; `no_data` of an expected
   model; `slow_unexplained` if configured) and resolves the ones that ended (`post_alert`), unless the
   run is a dry run or a backfill that was not asked to page (`no_alert`, which says why).

**Trigger form**: pick models, override the window, make a dry run, or let a backfill page. A window
other than one whole interval, or a model subset, is an ad-hoc run: its results go to
`<lake>/adhoc/<dataset>/dt=.../run=<run id>/` and the scheduled partitions stay as they are.
**Where the results are**: the `evaluate` task's XCom and log (partitions, `_verdict.json`), and the
alert's `partition` and `airflow_run` annotations.
**Email**: a task that fails for good, or a run still unfinished `alerting.run_deadline` after it was
queued, emails `alerting.failure_email`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param
from airflow.timetables.interval import CronDataIntervalTimetable

from modelwatch import tasks
from modelwatch.config import load_config
from modelwatch.monitoring_dag import DAILY_DAG_ID, HOURLY_DAG_ID, MonitoringDAG, Tag, run_policy

# Validated at parse time: a bad thresholds.yaml is an import error naming file, key and problem.
CONFIG = load_config()

# dag_id -> (interval, cron of the interval boundaries, paused when first seen, cadence tag)
VARIANTS = {
    DAILY_DAG_ID: (timedelta(days=1), "0 0 * * *", False, Tag.DAILY),
    # for teams that need faster detection; opt in by unpausing it
    HOURLY_DAG_ID: (timedelta(hours=1), "0 * * * *", True, Tag.HOURLY),
}

for dag_id, (interval, cron, paused, cadence) in VARIANTS.items():
    assets = tasks.assets(CONFIG, intraday=interval < timedelta(days=1))
    with MonitoringDAG(
        dag_id=dag_id,
        doc_md=__doc__,
        description="Correlate ML prediction latency with resource saturation and alert on degradation",
        # An interval timetable: a cron string alone gives zero-length intervals in Airflow 3.
        schedule=CronDataIntervalTimetable(cron, timezone="UTC"),
        start_date=datetime(2026, 1, 1),
        catchup=False,
        is_paused_upon_creation=paused,
        max_active_runs=4,
        tags=[Tag.MODELWATCH, Tag.MONITORING, Tag.ML, cadence],
        # owner, retry budget, failure email and Deadline Alert, as every modelwatch DAG
        **run_policy(CONFIG),
        params={
            "models": Param([], type="array", items={"type": "string"}, title="Models",
                            description="Only these models (empty: every model with predictions)."),
            "window_start": Param("", type="string", title="Window start",
                                  description="ISO 8601 start, e.g. 2026-03-03T00:00:00Z (empty: the data interval)."),
            "window_end": Param("", type="string", title="Window end",
                                description="ISO 8601 end, exclusive (empty: the data interval)."),
            "dry_run": Param(False, type="boolean", title="Dry run",
                             description="Evaluate and store verdicts, but do not post to Alertmanager."),
            "page_on_backfill": Param(CONFIG.alerting.page_on_backfill, type="boolean", title="Page on backfill",
                                      description="Let a backfill run post to Alertmanager."),
            "quality_only": Param(False, type="boolean", title="Quality only",
                                  description="Re-judge quality once late labels arrived: the window is judged "
                                              "and stored as by any run, but only quality alerts are posted "
                                              "or resolved."),
        },  # fmt: skip
    ):
        resources = tasks.extract_resources.override(outlets=[assets["resources"]])(interval)
        predictions = tasks.extract_predictions.override(outlets=[assets["predictions"]])(interval)
        # one mapped task per group of models (correlation.models_per_task), planned by extract_predictions
        groups = tasks.correlate.partial(resources=resources, interval=interval).expand(group=predictions)
        evaluation = tasks.evaluate.override(
            outlets=[assets["joined"], assets["correlation"], assets["verdicts"], assets["drift"], assets["reports"]]
        )(resources, groups, interval)
        if CONFIG.quality.rejudge_days and interval >= timedelta(days=1):
            # labels arrive late: each day also re-judges the quality of the days before it
            TriggerDagRunOperator.partial(
                task_id=tasks.REJUDGE_TASK, trigger_dag_id=dag_id, logical_date=None, wait_for_completion=False
            ).expand_kwargs(tasks.rejudge_windows(evaluation, interval))
        # the verdicts as Prometheus series (Pushgateway), beside the alert path: a failure there pages no one less
        tasks.publish_verdicts(evaluation, interval)
        tasks.choose_alert_path(evaluation) >> [
            tasks.post_alert.override(outlets=[assets["alerts"]])(evaluation, interval),
            tasks.no_alert(evaluation),
        ]
