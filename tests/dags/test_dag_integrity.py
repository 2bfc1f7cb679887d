"""DAG integrity: every DAG file imports cleanly, is owned, tagged and retried, and parses light."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAG_FILES = sorted((REPO / "dags").glob("*.py"))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert "model_performance_monitoring" in dagbag.dags


def test_every_dag_is_owned_tagged_documented_and_retried(dagbag):
    from modelwatch.config import load_config
    from modelwatch.monitoring_dag import OWNER, Tag

    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        # tags from the one fixed set, so the UI's tag filter finds every modelwatch DAG by the same words
        assert set(dag.tags) <= {t.value for t in Tag}, f"{dag_id}: tags {sorted(set(dag.tags) - set(Tag))} not in Tag"
        assert Tag.MODELWATCH in dag.tags, f"{dag_id} is not tagged {Tag.MODELWATCH}"
        assert dag.doc_md and dag.doc_md.strip(), f"{dag_id} has no doc_md"
        for t in dag.tasks:
            assert t.owner == OWNER, f"{dag_id}.{t.task_id} owner is {t.owner!r}"
            assert t.retries >= 2, f"{dag_id}.{t.task_id} has retries={t.retries}"
            # a hung source holds a worker for one try at most (thresholds.yaml tasks.execution_timeout)
            assert t.execution_timeout == load_config().tasks.execution_timeout, f"{dag_id}.{t.task_id}"
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
    assert dag.get_task("evaluate").upstream_task_ids == {"extract_resources", "correlate"}


def test_correlate_is_mapped_over_the_model_groups_extract_predictions_plans(dagbag):
    # the executor spreads the groups over workers: one mapped task instance per group
    dag = dagbag.dags["model_performance_monitoring"]
    correlate = dag.get_task("correlate")
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    assert isinstance(correlate, MappedOperator)
    assert set(correlate.op_kwargs_expand_input.value) == {"group"}


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_importing_a_dag_file_loads_no_heavy_library(path, fresh_imports):
    # in a fresh interpreter (tests/fresh_imports.py): pandas, mlflow, boto3, botocore, pyarrow, numpy
    loaded = fresh_imports["dag_files"][str(path)]
    assert loaded == [], f"importing {path.name} loaded {loaded}"


def test_hourly_variant_covers_full_hours_from_the_same_tasks(dagbag):
    from datetime import UTC, datetime, timedelta

    import pendulum

    daily, hourly = dagbag.dags["model_performance_monitoring"], dagbag.dags["model_performance_monitoring_hourly"]
    # the timetable wants pendulum datetimes for hourly crons
    interval = hourly.timetable.infer_manual_data_interval(run_after=pendulum.datetime(2026, 3, 4, 6, 20, tz="UTC"))
    assert (interval.start, interval.end) == (datetime(2026, 3, 4, 5, tzinfo=UTC), datetime(2026, 3, 4, 6, tzinfo=UTC))
    assert {t.task_id for t in hourly.tasks} == {t.task_id for t in daily.tasks}
    assert hourly.is_paused_upon_creation and not daily.is_paused_upon_creation
    assert timedelta(hours=1) in hourly.get_task("extract_resources").op_args


def test_trigger_form_params_are_typed_and_described(dagbag):
    dag = dagbag.dags["model_performance_monitoring"]
    params = dag.params
    for name, kind in {"models": "array", "window_start": "string", "window_end": "string",
                       "dry_run": "boolean", "page_on_backfill": "boolean"}.items():  # fmt: skip
        param = params.get_param(name)
        assert param.schema["type"] == kind, name
        assert param.description, name
    assert params["dry_run"] is False and params["page_on_backfill"] is False


def test_runs_have_a_deadline_alert_from_the_config(dagbag):
    from modelwatch.config import load_config

    for dag in dagbag.dags.values():
        deadlines = dag.deadline if isinstance(dag.deadline, list) else [dag.deadline]
        assert deadlines and deadlines[0].interval == load_config().alerting.run_deadline
        assert deadlines[0].callback.path == "modelwatch.notify.deadline_missed"


def test_modelwatch_is_an_installed_provider_with_four_connection_types(fresh_imports):
    # DAG files import modelwatch like any library, and Airflow learns its connection types from the
    # package's entry point: no sys.path entry, no plugins folder (a fresh interpreter in cwd "/",
    # tests/fresh_imports.py).
    info = fresh_imports["provider"]
    assert info["provider"] and info["entry"] == ["modelwatch.provider:get_provider_info"]
    assert info["hooks"] == {
        "prometheus": ["modelwatch.hooks.prometheus.PrometheusHook", True],
        "mlflow": ["modelwatch.hooks.mlflow.MlflowHook", True],
        "alertmanager": ["modelwatch.hooks.alertmanager.AlertmanagerHook", True],
        "pushgateway": ["modelwatch.hooks.pushgateway.PushgatewayHook", True],
    }
    assert {"extra__prometheus__auth", "extra__prometheus__region", "extra__prometheus__timeout"} <= set(info["fields"])
