"""The hooks and extractors against the real local stack (Prometheus 2.42, Alertmanager 0.25, MLflow).

Connections come from ``stack.airflow_env()`` (``AIRFLOW_CONN_*`` env vars), as in a deployment.
``seeded_stack`` holds CONTRACT.md's fixed days (2026-03-02..07).
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd
import pytest

from devstack.scenarios import TEST_DAYS, predictions
from modelwatch.errors import AlertmanagerError, MlflowSourceError, PrometheusQueryError
from modelwatch.extract import extract_predictions, extract_resources, query_range_chunked
from modelwatch.hooks import AlertmanagerHook, MlflowHook, PrometheusHook
from modelwatch.schema import PREDICTION_COLUMNS
from modelwatch.timegrid import epoch_ms

DAY = date(2026, 3, 3)
DAY_START = datetime(2026, 3, 3, tzinfo=UTC)
DAY_END = DAY_START + timedelta(days=1)
FAST = {"backoff_base_seconds": 0.05, "backoff_max_seconds": 0.2}
CPU = '1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"}[1m]))'


def _config() -> Any:
    from modelwatch.config import load_config

    return load_config()


# -- Prometheus -----------------------------------------------------------------------------------------


def test_connection_env_gives_the_stack_url(conns: Any) -> None:
    assert PrometheusHook().base_url == conns.config.prometheus_url
    assert AlertmanagerHook().base_url == conns.config.alertmanager_url
    assert MlflowHook().tracking_uri == conns.config.mlflow_url


def test_invalid_promql_names_query_and_prometheus_text(conns: Any) -> None:
    hook = PrometheusHook(**FAST)
    promql = "rate(node_cpu_seconds_total[1m]"
    with pytest.raises(PrometheusQueryError) as info:
        hook.query_range(promql, DAY_START, DAY_START + timedelta(hours=1), 15, query_name="broken_cpu")
    err = info.value
    assert (err.status, err.error_type) == (400, "bad_data")
    assert "parse error" in err.error
    assert hook.requests_made == 1  # a bad query is not retried
    for part in ("'broken_cpu'", promql, "bad_data", err.error, conns.config.prometheus_url):
        assert part in str(err)


def test_too_many_points_is_refused_in_one_request_and_works_chunked(seeded: Any) -> None:
    start, end = datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 5, tzinfo=UTC) - timedelta(seconds=15)
    hook = PrometheusHook(**FAST)
    with pytest.raises(PrometheusQueryError) as info:
        hook.query_range("node_load1", start, end, 15, query_name="load")
    assert info.value.error_type == "bad_data" and "11,000 points" in info.value.error
    chunked = query_range_chunked(hook, "node_load1", start, end, 15, query_name="load")
    assert hook.requests_made == 1 + 2
    assert {s["metric"]["instance"] for s in chunked} == {"model-a:9100", "model-b:9100"}
    for series in chunked:
        assert len(series["values"]) == 3 * 5760


@pytest.mark.parametrize("query_name", ["cpu", "memory", "load", "p95_latency"])
def test_chunked_multi_day_query_equals_single_request(seeded: Any, query_name: str) -> None:
    promql = _config().query(query_name).promql
    start, end = datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 5, tzinfo=UTC) - timedelta(seconds=60)
    single_hook, chunked_hook = PrometheusHook(**FAST), PrometheusHook(**FAST)
    single = query_range_chunked(single_hook, promql, start, end, 60, query_name=query_name, max_points=11000)
    chunked = query_range_chunked(chunked_hook, promql, start, end, 60, query_name=query_name, max_points=1000)
    assert single_hook.requests_made == 1
    assert chunked_hook.requests_made == 5  # 4320 points per series
    assert len(single) >= 1 and sum(len(s["values"]) for s in single) > 1000
    assert chunked == single


def test_extract_resources_one_day_window(seeded: Any) -> None:
    cfg = _config()
    queries = [cfg.query("cpu"), cfg.query("memory")]
    hook = PrometheusHook(**FAST)
    df = extract_resources(hook, queries, DAY_START, DAY_END, 15, 11000, "instance")
    assert set(df["query"]) == {"cpu", "memory"}
    assert set(df["instance"]) == {"model-a", "model-b"}
    per_series = df.groupby(["query", "labels"])["timestamp"].agg(["min", "max", "count"])
    assert (per_series["min"] >= pd.Timestamp(DAY_START)).all()
    assert (per_series["max"] == pd.Timestamp(DAY_END - timedelta(seconds=15))).all()  # end excluded
    assert (per_series["count"] <= 5760).all()
    # cpu_saturation: model-a near 97 % between 10:00 and 12:00
    cpu_a = df[(df["query"] == "cpu") & (df["instance"] == "model-a")].set_index("timestamp")["value"]
    assert cpu_a[pd.Timestamp("2026-03-03T11:00:00Z")] > 0.9
    assert cpu_a[pd.Timestamp("2026-03-03T08:00:00Z")] < 0.5


# -- MLflow ---------------------------------------------------------------------------------------------


def _expected_predictions(day: date) -> pd.DataFrame:
    rows = [
        (p.timestamp_ms, p.model, p.model_version, p.instance, p.prediction_time, p.accuracy, p.loss)
        for p in predictions(day, TEST_DAYS[day])
    ]
    return pd.DataFrame(rows, columns=["ts", "model", "model_version", "instance", "prediction_time", "accuracy", "loss"])


def test_extract_predictions_returns_the_days_seeded_predictions_only(seeded: Any) -> None:
    cfg = _config()
    df = extract_predictions(MlflowHook(), cfg.mlflow.experiments, cfg.mlflow.tags, DAY_START, DAY_END, 1000)
    assert list(df.columns) == list(PREDICTION_COLUMNS)
    assert df["timestamp"].min() >= pd.Timestamp(DAY_START) and df["timestamp"].max() < pd.Timestamp(DAY_END)
    got = pd.DataFrame({
        "ts": [epoch_ms(t) for t in df["timestamp"].dt.to_pydatetime()],
        **{c: df[c] for c in ("model", "model_version", "instance", "prediction_time", "accuracy", "loss")},
    })
    expected = _expected_predictions(DAY)
    # both layouts: fraud-detector one run per prediction on both instances, recommender a metric history
    counts = got.groupby(["model", "instance"]).size().to_dict()
    assert counts == expected.groupby(["model", "instance"]).size().to_dict()
    assert counts == {("fraud-detector", "model-a"): 144, ("fraud-detector", "model-b"): 144,
                      ("recommender", "model-b"): 720}
    key = ["ts", "model", "instance"]
    pd.testing.assert_frame_equal(
        got.sort_values(key).reset_index(drop=True),
        expected.sort_values(key).reset_index(drop=True),
        check_dtype=False,
    )
    assert set(df["experiment"]) == {"fraud-detector-predictions", "recommender-predictions"}
    # run ids: one per fraud-detector prediction, one recommender run for the day
    assert df.loc[df["model"] == "fraud-detector", "run_id"].is_unique
    assert df.loc[df["model"] == "recommender", "run_id"].nunique() == 1


def test_extract_predictions_hour_window_edges(seeded: Any) -> None:
    cfg = _config()
    start = DAY_START + timedelta(hours=10)
    df = extract_predictions(MlflowHook(), cfg.mlflow.experiments, cfg.mlflow.tags, start, start + timedelta(hours=1), 1000)
    assert df["timestamp"].min() == pd.Timestamp(start)  # fraud-detector on model-a and recommender at 10:00
    assert df["timestamp"].max() < pd.Timestamp(start + timedelta(hours=1))
    assert len(df) == 6 + 6 + 30


def test_paging_50_equals_1000(seeded: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _config()
    small_hook = MlflowHook()
    small = extract_predictions(small_hook, cfg.mlflow.experiments, cfg.mlflow.tags, DAY_START, DAY_END, page_size=50)
    large = extract_predictions(MlflowHook(), cfg.mlflow.experiments, cfg.mlflow.tags, DAY_START, DAY_END, page_size=1000)
    pages = small_hook.pages_read  # runs per page of every runs/search
    assert len(pages) >= 288 // 50 + 1  # fraud-detector alone needs 6 pages of 50
    assert max(pages) == 50
    pd.testing.assert_frame_equal(small, large)


def test_mlflow_connection_test_button(conns: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    ok, message = MlflowHook().test_connection()  # what Airflow's connection form calls
    assert ok, message
    assert f"MLflow at {conns.config.mlflow_url} (GET /api/2.0/mlflow/experiments/search) answered HTTP 200" in message
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_BROKEN", '{"conn_type": "mlflow", "host": "127.0.0.1", "port": 1}')
    ok, message = MlflowHook("mlflow_broken").test_connection()
    assert not ok and "127.0.0.1:1" in message


def test_unknown_experiment_names_it_and_the_server(conns: Any) -> None:
    with pytest.raises(MlflowSourceError) as info:
        MlflowHook().experiment_ids(["no-such-experiment-" + uuid.uuid4().hex[:8]])
    assert "no-such-experiment-" in str(info.value) and conns.config.mlflow_url in str(info.value)


# -- Alertmanager ---------------------------------------------------------------------------------------


def test_alertmanager_round_trip(conns: Any) -> None:
    hook = AlertmanagerHook(**FAST)
    test_id = uuid.uuid4().hex
    now = datetime.now(UTC)  # Alertmanager judges alerts by its own wall clock, so they must be current
    alert = {
        "labels": {"alertname": "ModelPredictionsDegraded", "model": 'fraud "detector"', "test_id": test_id},
        "annotations": {"summary": "integration test"},
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(minutes=10)).isoformat(),
    }
    hook.post_alerts([alert])
    got = hook.get_alerts({"test_id": test_id, "model": 'fraud "detector"'})
    assert len(got) == 1
    assert got[0]["labels"]["model"] == 'fraud "detector"'
    assert got[0]["annotations"]["summary"] == "integration test"
    assert hook.get_alerts({"test_id": test_id, "model": "someone else"}) == []


def test_alertmanager_refusal_is_reported_not_retried(conns: Any) -> None:
    hook = AlertmanagerHook(**FAST)
    with pytest.raises(AlertmanagerError) as info:
        hook.post_alerts([{"annotations": {"summary": "no labels"}}])
    assert info.value.status in (400, 422) and "labels" in info.value.body
    assert hook.requests_made == 1
