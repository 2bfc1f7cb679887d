"""The seeded history as the real Prometheus and MLflow serve it back (``seeded_stack``: 2026-03-02..07)."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
import requests

from devstack.scenarios import (
    MODELS,
    STEP_S,
    TEST_DAYS,
    day_start,
    get_scenario,
    predictions,
    resource_series,
)
from devstack.seed import DAY_TAG, search_all_runs, seed_stack
from devstack.stack import Stack
from modelwatch.config import load_config

QUERIES = {q.name: q for q in load_config().prometheus.queries}
DATA_DAYS = [d for d, s in TEST_DAYS.items() if get_scenario(s).has_data]
NO_DATA_DAY = date(2026, 3, 7)
#: Which thresholds.yaml queries each kind of saturation drives over its threshold.
SATURATES = {"cpu": {"cpu", "load"}, "memory": {"memory"}}


def _instant(prom: str, promql: str, at: float) -> list[dict]:
    resp = requests.get(f"{prom}/api/v1/query", params={"query": promql, "time": at}, timeout=60)
    body = resp.json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def query_range(prom: str, promql: str, start: float, end: float, step: float = STEP_S) -> list[dict]:
    # Plain HTTP on purpose: this checks what Prometheus serves, independently of modelwatch's hook.
    resp = requests.get(
        f"{prom}/api/v1/query_range", params={"query": promql, "start": start, "end": end, "step": step}, timeout=60
    )
    body = resp.json()
    assert resp.status_code == 200 and body["status"] == "success", body
    return body["data"]["result"]


def _day_range(prom: str, promql: str, day: date) -> dict[str, list[tuple[int, float]]]:
    """``{instance without port: [(t, value), ...]}`` of a query over the whole day at 15 s."""
    start = day_start(day)
    out = {}
    for series in query_range(prom, promql, start, start + 86400 - STEP_S):
        out[series["metric"]["instance"].split(":")[0]] = [(int(t), float(v)) for t, v in series["values"]]
    return out


def _key(name: str, labels: dict[str, str]) -> tuple[str, frozenset]:
    return name, frozenset(labels.items())


@pytest.mark.parametrize("day", [date(2026, 3, 3), date(2026, 3, 6)], ids=str)
def test_raw_samples_equal_the_generated_ones(seeded_stack: Stack, day: date) -> None:
    # Every series of both instances, raw (a range selector returns stored samples untouched), over the
    # two hours of the incident: float64 values survive OpenMetrics text and promtool exactly.
    scenario = get_scenario(TEST_DAYS[day])
    start, end = scenario.window_bounds(day)
    expected = {_key(s.name, s.labels): dict(zip(s.timestamps.tolist(), s.values.tolist(), strict=True))
                for s in resource_series(day, scenario)}  # fmt: skip
    got = _instant(seeded_stack.config.prometheus_url, '{instance=~"model-.+"}[2h]', end)
    assert len(got) == len(expected) == 60  # 30 series per instance, body-size summaries included
    for series in got:
        labels = dict(series["metric"])
        name = labels.pop("__name__")
        want = expected[_key(name, labels)]
        samples = [(int(t), float(v)) for t, v in series["values"]]
        assert start <= samples[0][0] <= start + STEP_S and samples[-1][0] == end
        assert samples == [(t, want[t]) for t, _ in samples], (name, labels)


def test_memory_available_samples_at_given_timestamps(seeded_stack: Stack) -> None:
    day = date(2026, 3, 6)
    generated = next(
        s for s in resource_series(day, TEST_DAYS[day])
        if s.name == "node_memory_MemAvailable_bytes" and s.labels["instance"] == "model-b:9100"
    )  # fmt: skip
    by_time = dict(zip(generated.timestamps.tolist(), generated.values.tolist(), strict=True))
    promql = 'node_memory_MemAvailable_bytes{instance="model-b:9100"}'
    for hh, mm in ((0, 0), (12, 0), (16, 0), (17, 30), (23, 59)):
        t = day_start(day) + hh * 3600 + mm * 60
        (series,) = _instant(seeded_stack.config.prometheus_url, promql, t)
        assert float(series["value"][1]) == by_time[t]


@pytest.mark.parametrize("day", DATA_DAYS, ids=str)
@pytest.mark.parametrize("query", [name for name, q in QUERIES.items() if q.saturation is not None])
def test_saturated_exactly_where_the_scenario_says(seeded_stack: Stack, day: date, query: str) -> None:
    """Every thresholds.yaml query with a threshold, every day: over it only on the incident instance,
    inside the incident window (give or take the query's own range), and under it everywhere else."""
    scenario = get_scenario(TEST_DAYS[day])
    threshold = QUERIES[query].saturation
    hot = scenario.instance if query in SATURATES.get(scenario.saturated or "", set()) else None
    series = _day_range(seeded_stack.config.prometheus_url, QUERIES[query].promql, day)
    assert set(series) == {"model-a", "model-b"}
    # rate(...[1m]) lags the window by up to a minute; load1 is a 1-minute moving average that needs
    # about two minutes to climb past 1.5 per CPU.
    lag = {"cpu": 60, "load": 300}.get(query, 0)
    for instance, points in series.items():
        if instance != hot:
            assert max(v for _, v in points) < threshold, (instance, max(points, key=lambda p: p[1]))
            continue
        ws, we = scenario.window_bounds(day)
        inside = [v for t, v in points if ws + lag <= t < we + (STEP_S if lag else 0)]
        outside = [v for t, v in points if t < ws or t >= we + lag]
        assert len(inside) >= 7200 // STEP_S - lag // STEP_S
        assert min(inside) > threshold
        assert max(outside) < threshold


@pytest.mark.parametrize("day", DATA_DAYS, ids=str)
def test_p95_latency_rises_during_slow_windows_only(seeded_stack: Stack, day: date) -> None:
    scenario = get_scenario(TEST_DAYS[day])
    slow_instance = scenario.instance if scenario.slow_models else None
    series = _day_range(seeded_stack.config.prometheus_url, QUERIES["p95_latency"].promql, day)
    for instance, points in series.items():
        if instance != slow_instance:
            assert max(v for _, v in points) < 0.5
            continue
        ws, we = scenario.window_bounds(day)
        # rate(...[5m]): fully slow from 5 minutes into the window to its end, fully fast 5 minutes after.
        assert min(v for t, v in points if ws + 300 <= t <= we) > 2.0
        assert max(v for t, v in points if t <= ws or t >= we + 300) < 0.5


def test_the_body_sizes_are_each_requests_mean_size_on_both_instances(seeded_stack: Stack) -> None:
    """The default configuration's request_bytes and response_bytes over a seeded day: the instrumentator's
    summaries in bytes per request, one series per instance, from the day's first rate window to its end."""
    from devstack.scenarios import REQUEST_BYTES, RESPONSE_BYTES

    day = DATA_DAYS[0]
    for name, mean in (("request_bytes", REQUEST_BYTES), ("response_bytes", RESPONSE_BYTES)):
        series = _day_range(seeded_stack.config.prometheus_url, QUERIES[name].promql, day)
        assert len(series) == 2, (name, sorted(series))
        for instance, points in series.items():
            assert len(points) > 5000, (name, instance)
            assert all(v == pytest.approx(mean) for _, v in points), (name, instance)


def _series_api(prom: str, start: int, end: int) -> list[dict]:
    params = {"match[]": '{instance=~"model-.+"}', "start": start, "end": end}
    body = requests.get(f"{prom}/api/v1/series", params=params, timeout=60).json()
    assert body["status"] == "success", body
    return body["data"]


def test_no_series_at_all_on_the_no_data_day(seeded_stack: Stack) -> None:
    prom = seeded_stack.config.prometheus_url
    start = day_start(NO_DATA_DAY)
    # A range selector sees stored samples only (no 5-minute lookback into the day before).
    assert _instant(prom, 'count_over_time({instance=~"model-.+"}[86399s])', start + 86399) == []
    assert _series_api(prom, start, start + 86399) == []
    # The day before is complete and ends where the no_data day begins.
    assert len(_series_api(prom, start - 86400, start - 1)) == 60
    before = _instant(prom, "count_over_time(node_load1[86399s])", start - 1)
    assert sorted((s["metric"]["instance"], s["value"][1]) for s in before) == [
        ("model-a:9100", "5760"), ("model-b:9100", "5760")
    ]  # fmt: skip
    for model, spec in MODELS.items():
        assert _runs(seeded_stack, spec.experiment, NO_DATA_DAY) == [], model


def _client(stack: Stack) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=stack.config.mlflow_url)


def _runs(stack: Stack, experiment: str, day: date) -> list[Any]:
    client = _client(stack)
    exp = client.get_experiment_by_name(experiment)
    start = day_start(day) * 1000
    window = f"attributes.start_time >= {start} AND attributes.start_time < {start + 86_400_000}"
    return search_all_runs(client, [exp.experiment_id], window, page_size=100)


@pytest.mark.parametrize("day", DATA_DAYS, ids=str)
def test_fraud_detector_runs_of_a_day_are_that_days_predictions(seeded_stack: Stack, day: date) -> None:
    expected = [p for p in predictions(day, TEST_DAYS[day]) if p.model == "fraud-detector"]
    runs = _runs(seeded_stack, "fraud-detector-predictions", day)
    assert len(runs) == len(expected) == 288
    assert {r.data.tags[DAY_TAG] for r in runs} == {day.isoformat()}  # nothing of another day
    got = sorted(
        (r.info.start_time, r.data.tags["instance"], r.data.tags["model"], r.data.tags["model_version"],
         r.data.metrics["prediction_time"], r.data.metrics["accuracy"], r.data.metrics["loss"])
        for r in runs
    )  # fmt: skip
    want = sorted(
        (p.timestamp_ms, p.instance, p.model, p.model_version, p.prediction_time, p.accuracy, p.loss)
        for p in expected
    )
    assert got == want
    for r in runs:
        assert r.info.status == "FINISHED"
        assert r.info.end_time == r.info.start_time + round(r.data.metrics["prediction_time"] * 1000)
    assert sum(r.data.metrics["prediction_time"] > 1.0 for r in runs) == sum(p.slow for p in expected)


def test_recommender_metric_history(seeded_stack: Stack) -> None:
    day = date(2026, 3, 6)
    expected = [p for p in predictions(day, TEST_DAYS[day]) if p.model == "recommender"]
    (run,) = _runs(seeded_stack, "recommender-predictions", day)
    assert run.info.start_time == day_start(day) * 1000
    assert run.info.end_time == (day_start(day) + 86400) * 1000 - 1
    assert {k: run.data.tags[k] for k in ("model", "model_version", "instance")} == {
        "model": "recommender", "model_version": "12", "instance": "model-b"
    }  # fmt: skip
    client = _client(seeded_stack)
    for key in ("prediction_time", "accuracy", "loss"):
        history = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
        assert [(m.step, m.timestamp, m.value) for m in history] == [
            (i, p.timestamp_ms, getattr(p, key)) for i, p in enumerate(expected)
        ]
    slow = [m for m in client.get_metric_history(run.info.run_id, "prediction_time") if m.value > 1.5]
    assert len(slow) == 60  # every 2 minutes, 16:00-18:00


def test_seeding_again_changes_nothing(seeded_stack: Stack) -> None:
    pid = seeded_stack.pid("prometheus")
    count = len(_runs(seeded_stack, "fraud-detector-predictions", date(2026, 3, 2)))
    prom, ml = seed_stack(seeded_stack, TEST_DAYS)
    assert all(r.skipped for r in prom) and all(r.skipped for r in ml)
    assert seeded_stack.pid("prometheus") == pid  # nothing to backfill: Prometheus was not restarted
    assert len(_runs(seeded_stack, "fraud-detector-predictions", date(2026, 3, 2))) == count
