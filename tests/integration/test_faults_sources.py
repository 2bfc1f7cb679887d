"""Faults and bad input at the sources: Prometheus and MLflow misbehaving, scrape gaps, awkward timestamps.

Every fault is real: a server stopped or paused (SIGSTOP/SIGCONT by PID) and restored in a ``finally``,
a real server's own error answer, or :class:`faultproxy.FaultProxy` in front of the real server. The
task-level building blocks (hooks, ``extract_*``, ``correlate``, ``evaluate``) are called directly;
the DAG-level rows (retries, then a failed task and its email) are in ``test_faults_alerting.py``.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from airflow.sdk.exceptions import AirflowFailException
from faultproxy import Fault, FaultProxy, airflow_conn

from modelwatch.errors import MlflowSourceError, PrometheusQueryError, UpstreamUnavailable
from modelwatch.extract import extract_predictions, extract_resources
from modelwatch.hooks import MlflowHook, PrometheusHook
from modelwatch.timegrid import epoch_ms
from modelwatch.window import Window, resolve_window

DAY = datetime(2026, 3, 3, tzinfo=UTC)  # cpu_saturation: model-a CPU ~97 % 10:00-12:00, fraud-detector slow
NO_DATA_DAY = datetime(2026, 3, 7, tzinfo=UTC)  # nothing in Prometheus, nothing in MLflow
FAST = {"backoff_base_seconds": 0.05, "backoff_max_seconds": 0.2}
PROM_ERROR = {"status": "error", "errorType": "unavailable", "error": "too many queries queued, try again"}


# -- fixtures and helpers -------------------------------------------------------------------------------


@pytest.fixture
def env(seeded_stack: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The seeded stack's Airflow connections as ``AIRFLOW_CONN_*`` variables."""
    for name, value in seeded_stack.airflow_env().items():
        monkeypatch.setenv(name, value)
    return seeded_stack


@pytest.fixture
def prom_proxy(env: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """A fault proxy in front of the real Prometheus; ``prometheus_default`` points at it."""
    with FaultProxy(env.config.prometheus_url, lifetime=120) as proxy:
        monkeypatch.setenv("AIRFLOW_CONN_PROMETHEUS_DEFAULT", airflow_conn("prometheus", proxy.url, timeout=10))
        yield proxy


@pytest.fixture
def mlflow_proxy(env: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """A fault proxy in front of the real MLflow; ``mlflow_default`` points at it with a short retry
    policy (the hook's default, MLflow's client defaults, retries for minutes)."""
    with FaultProxy(env.config.mlflow_url, lifetime=120) as proxy:
        monkeypatch.setenv(
            "AIRFLOW_CONN_MLFLOW_DEFAULT",
            airflow_conn("mlflow", proxy.url, max_retries=2, backoff_factor=0, timeout=3),
        )
        yield proxy


def _cfg(**prometheus: Any) -> Any:
    from modelwatch.config import load_config

    cfg = load_config()
    if prometheus:
        cfg = cfg.model_copy(update={"prometheus": cfg.prometheus.model_copy(update=prometheus)})
    return cfg


def _queries(cfg: Any, *names: str) -> list[Any]:
    return [cfg.query(n) for n in names]


class _Query:
    def __init__(self, name: str, promql: str) -> None:
        self.name, self.promql = name, promql


class Experiment:
    """A fresh experiment on the real MLflow server, to log exactly the runs a test needs."""

    def __init__(self, stack: Any, purpose: str, layout: str = "run_per_prediction") -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(stack.config.mlflow_url)
        self.name = f"faults-{purpose}-{uuid.uuid4().hex[:8]}"
        self.id = self.client.create_experiment(self.name)
        self.layout = layout

    def prediction(self, ts: datetime | int, *, tags: dict[str, str] | None = None, **metrics: float) -> str:
        """One run per prediction, started at ``ts`` (epoch ms), with the given tags and metrics."""
        from mlflow.entities import Metric

        ms = ts if isinstance(ts, int) else epoch_ms(ts)
        base = {"model": "faults-model", "model_version": "1", "instance": "model-a"}
        run = self.client.create_run(self.id, start_time=ms, tags={**base, **(tags or {})})
        values = {"prediction_time": 0.2, "accuracy": 0.9, "loss": 0.1, **metrics}
        batch = [Metric(k, float(v), ms, 0) for k, v in values.items() if v is not None]
        self.client.log_batch(run.info.run_id, metrics=batch)
        return run.info.run_id

    def history_run(self, start: datetime, end: datetime, points: list[tuple[datetime, float]],
                    tags: dict[str, str] | None = None) -> str:  # fmt: skip
        """A ``metric_history`` run from ``start`` to ``end`` with one prediction per point."""
        from mlflow.entities import Metric

        base = {"model": "faults-history", "model_version": "1", "instance": "model-b"}
        run = self.client.create_run(self.id, start_time=epoch_ms(start), tags={**base, **(tags or {})})
        batch = []
        for step, (ts, pt) in enumerate(points):
            ms = epoch_ms(ts)
            batch += [Metric("prediction_time", pt, ms, step), Metric("accuracy", 0.9, ms, step),
                      Metric("loss", 0.1, ms, step)]  # fmt: skip
        self.client.log_batch(run.info.run_id, metrics=batch)
        self.client.set_terminated(run.info.run_id, end_time=epoch_ms(end))
        return run.info.run_id


def _predictions(experiments: list[Any], start: datetime, end: datetime, page_size: int = 1000) -> pd.DataFrame:
    return extract_predictions(MlflowHook(), experiments, None, start, end, page_size)


# -- Prometheus: down, paused, slow, 5xx, 400, 422, not JSON, reset ------------------------------------------


def test_prometheus_down_retries_then_names_query_server_and_reason(env: Any) -> None:
    cfg = _cfg()
    stopped = env.stop_service("prometheus")
    assert stopped
    try:
        hook = PrometheusHook(max_attempts=3, **FAST)
        with pytest.raises(UpstreamUnavailable) as info:
            extract_resources(hook, cfg.prometheus.queries, DAY, DAY + timedelta(days=1), 15)
    finally:
        env.start(["prometheus"])
    err = info.value
    assert err.attempts == 3 and hook.requests_made == 3  # retried: a restart may be all it takes
    message = str(err)
    for part in ("Prometheus query 'cpu'", env.config.prometheus_url, "/api/v1/query_range", "ConnectionError"):
        assert part in message, message
    # and it answers again once it is back
    assert PrometheusHook(**FAST).query_range("node_load1", DAY, DAY + timedelta(minutes=1), 15, query_name="load")


def test_prometheus_paused_past_its_timeout_is_retried_then_unavailable(env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_PROMETHEUS_DEFAULT", airflow_conn("prometheus", env.config.prometheus_url, timeout=1))
    pid = env.pid("prometheus")
    assert pid
    hook = PrometheusHook(max_attempts=2, **FAST)
    started = time.monotonic()
    os.kill(pid, signal.SIGSTOP)  # accepts connections (kernel backlog) but never answers
    try:
        with pytest.raises(UpstreamUnavailable) as info:
            hook.query_range("node_load1", DAY, DAY + timedelta(hours=1), 15, query_name="load")
    finally:
        os.kill(pid, signal.SIGCONT)
    took = time.monotonic() - started
    # two attempts of the connection's 1 s timeout, no more (a bound with margin for a busy machine)
    assert 2.0 <= took < 10, f"two attempts with a 1 s timeout each took {took:.1f} s"
    assert "Prometheus query 'load'" in str(info.value) and "Timeout" in str(info.value)
    assert hook.query_range("node_load1", DAY, DAY + timedelta(minutes=1), 15, query_name="load")  # resumed


def test_prometheus_slow_once_is_retried_and_succeeds(prom_proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_PROMETHEUS_DEFAULT", airflow_conn("prometheus", prom_proxy.url, timeout=1))
    prom_proxy.add(Fault.delay(3, times=1))
    hook = PrometheusHook(**FAST)
    result = hook.query_range("node_load1", DAY, DAY + timedelta(hours=1), 15, query_name="load")
    assert {s["metric"]["instance"] for s in result} == {"model-a:9100", "model-b:9100"}
    assert hook.requests_made == 2


def test_prometheus_5xx_is_retried_until_it_answers(prom_proxy: FaultProxy) -> None:
    prom_proxy.add(Fault.status_code(503, json.dumps(PROM_ERROR), times=2))
    hook = PrometheusHook(**FAST)
    result = hook.query_range("node_load1", DAY, DAY + timedelta(hours=1), 15, query_name="load")
    assert hook.requests_made == 3 and prom_proxy.count(status=503) == 2
    assert prom_proxy.count(action="forwarded") == 1 and len(result) == 2


def test_prometheus_429_retry_after_is_honoured(prom_proxy: FaultProxy) -> None:
    prom_proxy.add(Fault.status_code(429, json.dumps(PROM_ERROR), headers={"Retry-After": "1"}, times=1))
    hook = PrometheusHook(**FAST)
    started = time.monotonic()
    assert len(hook.query_range("node_load1", DAY, DAY + timedelta(hours=1), 15, query_name="load")) == 2
    took = time.monotonic() - started
    assert hook.requests_made == 2
    assert took >= 1.0, f"retried after {took:.2f} s: Retry-After asked for 1 s (the backoff alone is 0.05 s)"


@pytest.mark.parametrize(
    ("fault", "status", "error_type", "words"),
    [
        (Fault.status_code(503, json.dumps(PROM_ERROR), times=None), 503, "unavailable", "too many queries queued"),
        (Fault.not_json(status=502, times=None), 502, "bad_response", "502 Bad Gateway"),
    ],
    ids=["503-prometheus-json", "502-load-balancer-html"],
)
def test_prometheus_5xx_every_time_names_query_and_server_words(
    prom_proxy: FaultProxy, fault: Fault, status: int, error_type: str, words: str
) -> None:
    prom_proxy.add(fault)
    hook = PrometheusHook(max_attempts=3, **FAST)
    with pytest.raises(PrometheusQueryError) as info:
        hook.query_range("node_load1", DAY, DAY + timedelta(hours=1), 15, query_name="load")
    err = info.value
    assert (err.status, err.error_type) == (status, error_type)
    assert hook.requests_made == 3  # retried: a 5xx may pass
    assert not isinstance(err, AirflowFailException)  # and Airflow retries the task later
    for part in ("'load'", "node_load1", words, prom_proxy.url, f"HTTP {status}"):
        assert part in str(err), str(err)


def test_bad_promql_in_the_yaml_fails_at_once_naming_query_promql_and_parse_error(env: Any, tmp_path: Any) -> None:
    import yaml

    from modelwatch.config import load_config

    raw = yaml.safe_load(_cfg_path().read_text())
    # parses (the schema checks syntax at load time), but this Prometheus has no such function: 2.x does
    # not know it, 3.x keeps it behind --enable-feature=promql-experimental-functions
    bad = "1 - avg by (instance) (mad_over_time(node_cpu_seconds_total{mode=\"idle\"}[1m]))"
    raw["prometheus"]["queries"][0]["promql"] = bad
    path = tmp_path / "thresholds.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = load_config(path)  # which functions exist is the server's to judge
    hook = PrometheusHook(**FAST)
    with pytest.raises(PrometheusQueryError) as info:
        extract_resources(hook, cfg.prometheus.queries, DAY, DAY + timedelta(days=1), 15)
    err = info.value
    assert (err.status, err.error_type, err.query_name) == (400, "bad_data", "cpu")
    assert hook.requests_made == 1  # a bad query is not retried ...
    assert isinstance(err, AirflowFailException)  # ... by the hook, nor by Airflow
    for part in ("'cpu'", bad, "parse error", env.config.prometheus_url):
        assert part in str(err), str(err)


def test_query_execution_error_422_is_not_retried_and_names_prometheus_words(env: Any) -> None:
    hook = PrometheusHook(**FAST)
    promql = "node_cpu_seconds_total + on(instance) node_load1"  # many-to-one without group_left
    with pytest.raises(PrometheusQueryError) as info:
        extract_resources(hook, [_Query("cpu_plus_load", promql)], DAY, DAY + timedelta(hours=1), 15)
    err = info.value
    assert (err.status, err.error_type) == (422, "execution") and hook.requests_made == 1
    assert isinstance(err, AirflowFailException)
    assert "'cpu_plus_load'" in str(err) and "many-to-one matching must be explicit" in str(err)


def test_prometheus_answer_that_is_not_json(prom_proxy: FaultProxy) -> None:
    prom_proxy.add(Fault.not_json("<html><body>Please log in</body></html>", times=None))
    hook = PrometheusHook(**FAST)
    with pytest.raises(PrometheusQueryError) as info:
        hook.query_range("node_load1", DAY, DAY + timedelta(hours=1), 15, query_name="load")
    err = info.value
    assert (err.status, err.error_type) == (200, "bad_response") and hook.requests_made == 1
    assert "text/html" in err.error and "Please log in" in err.error and "'load'" in str(err)


def test_connection_reset_is_retried(prom_proxy: FaultProxy) -> None:
    prom_proxy.add(Fault.reset(times=2))
    hook = PrometheusHook(**FAST)
    assert len(hook.query_range("node_load1", DAY, DAY + timedelta(hours=1), 15, query_name="load")) == 2
    assert hook.requests_made == 3
    prom_proxy.add(Fault.reset(times=None))
    hook = PrometheusHook(max_attempts=2, **FAST)
    with pytest.raises(UpstreamUnavailable, match="reset|Connection aborted"):
        hook.query_range("node_load1", DAY, DAY + timedelta(hours=1), 15, query_name="load")


def _cfg_path() -> Any:
    from modelwatch.config import config_path

    return config_path()


# -- Prometheus up, nothing there: no_data, never healthy -----------------------------------------------------


def test_no_series_for_the_window_is_no_data_never_healthy(env: Any) -> None:
    from modelwatch.correlate import correlate
    from modelwatch.evaluate import evaluate

    cfg = _cfg()
    exp = Experiment(env, "nodata")
    for minute in range(0, 60, 5):  # a model that reported, fast, from an instance Prometheus knows nothing of
        exp.prediction(NO_DATA_DAY + timedelta(hours=9, minutes=minute))
    # (from 09:00: the first minutes of the day still see the day before through rate()'s lookback)
    window = Window(NO_DATA_DAY + timedelta(hours=9), NO_DATA_DAY + timedelta(hours=10))
    resources = extract_resources(PrometheusHook(**FAST), cfg.prometheus.queries, window.start, window.end, 15)
    assert resources.empty  # Prometheus answered, with no series
    predictions = _predictions([exp], window.start, window.end)
    assert len(predictions) == 12
    joined, summary = correlate(predictions, resources, cfg)
    verdicts = {v.model: v for v in evaluate(joined, summary, resources, cfg, window)}
    assert verdicts["faults-model"].verdict == "no_data"
    assert "no resource samples" in verdicts["faults-model"].reason
    # the expected models did not report at all
    assert verdicts["fraud-detector"].verdict == verdicts["recommender"].verdict == "no_data"


def test_a_saturation_query_with_no_series_is_named_and_the_rest_still_judged(env: Any) -> None:
    from modelwatch.config import QueryConfig
    from modelwatch.correlate import correlate
    from modelwatch.evaluate import evaluate

    nowhere = QueryConfig(name="gpu", promql='node_load1{instance="gpu-host:9100"}', saturation=0.9, unit="ratio")
    cfg = _cfg(queries=[_cfg().query("cpu"), nowhere])
    window = Window(DAY, DAY + timedelta(days=1))
    resources = extract_resources(PrometheusHook(**FAST), cfg.prometheus.queries, window.start, window.end, 15)
    assert set(resources["query"]) == {"cpu"}
    predictions = _predictions(cfg.mlflow.experiments, window.start, window.end)
    joined, summary = correlate(predictions, resources, cfg)
    verdicts = {v.model: v for v in evaluate(joined, summary, resources, cfg, window)}
    fraud = verdicts["fraud-detector"]
    assert fraud.verdict == "degraded" and fraud.resources_without_data == ["gpu"]
    assert [e.resource for e in fraud.saturated_resources] == ["cpu"]


# -- a scrape gap: missing_resources, never a far sample --------------------------------------------------


def test_scrape_gap_lists_the_predictions_without_a_sample_instead_of_joining_far_ones(env: Any) -> None:
    from modelwatch.correlate import correlate
    from modelwatch.evaluate import evaluate

    cfg = _cfg(queries=[_cfg().query("cpu"), _cfg().query("memory")])
    window = Window(DAY, DAY + timedelta(days=1))
    resources = extract_resources(PrometheusHook(**FAST), cfg.prometheus.queries, window.start, window.end, 15)
    predictions = _predictions(cfg.mlflow.experiments, window.start, window.end)

    # Without a gap: the slow predictions coincide with the CPU saturation.
    joined, summary = correlate(predictions, resources, cfg)
    before = {v.model: v for v in evaluate(joined, summary, resources, cfg, window)}
    assert before["fraud-detector"].verdict == "degraded"

    # model-a's scrape stops at 09:58 and resumes at 12:02: more than the 60 s tolerance from every
    # prediction made between 10:00 and 12:00 there.
    gap_start, gap_end = pd.Timestamp("2026-03-03T09:58:00Z"), pd.Timestamp("2026-03-03T12:02:00Z")
    in_gap = (resources["instance"] == "model-a") & resources["timestamp"].between(gap_start, gap_end)
    with_gap = resources[~in_gap].reset_index(drop=True)
    joined, summary = correlate(predictions, with_gap, cfg)
    blind = joined[(joined["instance"] == "model-a") & joined["timestamp"].between(gap_start, gap_end)]
    assert len(blind) == 13  # fraud-detector every 10 minutes, 10:00 to 12:00
    assert (blind["missing_resources"] == "cpu,memory").all()
    assert blind[["res_cpu", "res_memory"]].isna().all().all()  # NaN, not the 09:57:45 or 12:02:15 sample
    seen = joined[~joined.index.isin(blind.index)]
    assert (seen["missing_resources"] == "").all() and seen["res_cpu"].notna().all()
    edge = joined[(joined["instance"] == "model-a") & (joined["timestamp"] == pd.Timestamp("2026-03-03T09:50:00Z"))]
    assert edge["res_cpu"].notna().all()  # 09:50 still has its own sample

    verdicts = {v.model: v for v in evaluate(joined, summary, with_gap, cfg, window)}
    fraud = verdicts["fraud-detector"]
    # the evidence is missing, so the verdict says so; it neither invents saturation nor calls it healthy
    assert fraud.verdict == "slow_unexplained"
    assert "12 slow prediction(s) had no real resource sample" in fraud.reason
    assert "cpu: only 0 of 12 slow predictions had a real sample" in fraud.reason
    assert verdicts["recommender"].verdict == "healthy"  # model-b is unaffected


# -- MLflow: down, errors, unknown experiment, incomplete runs, paging ------------------------------------------


def test_mlflow_down_names_server_experiment_and_reason(mlflow_proxy: FaultProxy) -> None:
    cfg = _cfg()
    mlflow_proxy.add(Fault.reset(times=None))
    started = time.monotonic()
    with pytest.raises(MlflowSourceError) as info:
        _predictions(cfg.mlflow.experiments, DAY, DAY + timedelta(days=1))
    assert time.monotonic() - started < 30
    err = info.value
    assert err.server == mlflow_proxy.url and err.experiment == "fraud-detector-predictions"
    assert "reset" in str(err).lower() or "aborted" in str(err).lower(), str(err)
    assert mlflow_proxy.count(action="reset") == 3  # the hook retried (max_retries=2)


def test_mlflow_slow_past_its_timeout_names_server_and_timeout(
    mlflow_proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT",
                       airflow_conn("mlflow", mlflow_proxy.url, max_retries=1, backoff_factor=0, timeout=1))  # fmt: skip
    mlflow_proxy.add(Fault.delay(4, then="drop", times=None))
    started = time.monotonic()
    with pytest.raises(MlflowSourceError) as info:
        _predictions(_cfg().mlflow.experiments, DAY, DAY + timedelta(days=1))
    assert time.monotonic() - started < 10
    assert "Read timed out" in str(info.value) and mlflow_proxy.url in str(info.value)
    assert mlflow_proxy.received == 2  # the hook retried once (max_retries=1)


def test_mlflow_5xx_is_retried_until_it_answers(mlflow_proxy: FaultProxy) -> None:
    cfg = _cfg()
    mlflow_proxy.add(Fault.status_code(503, '{"error_code":"TEMPORARILY_UNAVAILABLE","message":"busy"}', times=2))
    df = _predictions(cfg.mlflow.experiments, DAY + timedelta(hours=10), DAY + timedelta(hours=11))
    assert len(df) == 42 and mlflow_proxy.count(status=503) == 2


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        (Fault.status_code(500, '{"error_code":"INTERNAL_ERROR","message":"database is locked"}', times=None),
         "HTTP 500 INTERNAL_ERROR): database is locked"),
        (Fault.status_code(403, '{"error_code":"PERMISSION_DENIED","message":"user faults may not read"}',
                           times=None), "user faults may not read"),
        (Fault.not_json(times=None), "502 Bad Gateway"),
    ],
    ids=["500-every-time", "403", "not-json"],
)
def test_mlflow_error_answers_name_server_experiment_and_reason(
    mlflow_proxy: FaultProxy, fault: Fault, words: str
) -> None:
    cfg = _cfg()
    mlflow_proxy.add(fault)
    with pytest.raises(MlflowSourceError) as info:
        _predictions(cfg.mlflow.experiments, DAY, DAY + timedelta(days=1))
    err = info.value
    assert err.server == mlflow_proxy.url and err.experiment == "fraud-detector-predictions"
    assert words in str(err), str(err)
    # a refusal is final (no Airflow retries); a server failure is retried by Airflow
    assert isinstance(err, AirflowFailException) == words.startswith("user faults")


def test_mlflow_history_and_artifact_requests_share_the_retry_policy(mlflow_proxy: FaultProxy, env: Any) -> None:
    """metrics/get-history and get-artifact go through the hook's one retry policy, like runs/search: two 503s
    each are retried and the read completes; a 500 every time names the run, the artifact and the server's
    words, and Airflow may retry it."""
    from devstack.model_service import log_batch_run
    from modelwatch.extract import batch_table

    start = datetime(2026, 3, 12, tzinfo=UTC)
    history = Experiment(env, "retry-history", layout="metric_history")
    history.history_run(start, start + timedelta(hours=1), [(start + timedelta(minutes=m), 0.2) for m in range(5)])
    batches = Experiment(env, "retry-batches", layout="batch_table")
    table = batch_table([epoch_ms(start) + 1000 * i for i in range(3)], [0.1, 0.2, 0.3])
    run_id = log_batch_run(batches.client, batches.id, table, {"model": "faults-batch", "instance": "model-a"})
    busy = '{"error_code":"TEMPORARILY_UNAVAILABLE","message":"busy"}'
    mlflow_proxy.add(Fault.status_code(503, busy, match="get-history", times=2),
                     Fault.status_code(503, busy, match="get-artifact", times=2))  # fmt: skip
    df = _predictions([history, batches], start, start + timedelta(days=1))
    assert df.groupby("experiment").size().to_dict() == {history.name: 5, batches.name: 3}
    assert mlflow_proxy.count(status=503) == 4
    broken = '{"error_code":"INTERNAL_ERROR","message":"artifact store unreachable"}'
    mlflow_proxy.add(Fault.status_code(500, broken, match="get-artifact", times=None))
    with pytest.raises(MlflowSourceError) as info:
        _predictions([batches], start, start + timedelta(days=1))
    err = info.value
    assert not isinstance(err, AirflowFailException)
    assert err.server == mlflow_proxy.url and err.experiment == batches.name
    for part in (f"run {run_id} artifact 'predictions.parquet'", "HTTP 500 INTERNAL_ERROR", "artifact store unreachable"):
        assert part in str(err), str(err)
    assert mlflow_proxy.count(status=500) == 3  # max_retries=2


def test_unknown_experiment_in_the_config_names_it(env: Any) -> None:
    from modelwatch.config import ExperimentConfig

    missing = ExperimentConfig(name="fraud-detector-predictons")  # a typo
    with pytest.raises(MlflowSourceError) as info:
        _predictions([_cfg().mlflow.experiments[0], missing], DAY, DAY + timedelta(days=1))
    assert info.value.experiment == "fraud-detector-predictons" and "no such experiment" in str(info.value)
    assert isinstance(info.value, AirflowFailException)  # a typo does not fix itself: no Airflow retries
    assert env.config.mlflow_url in str(info.value)


def test_runs_missing_a_metric_or_tag_or_with_nan_are_kept_but_never_judged_healthy(
    env: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from modelwatch.correlate import correlate
    from modelwatch.evaluate import evaluate

    cfg = _cfg(queries=[_cfg().query("cpu")])
    start = DAY + timedelta(hours=8)  # CPU normal on model-a
    exp = Experiment(env, "incomplete")
    for i in range(6):  # "broken-model" never logs a usable prediction_time
        ts = start + timedelta(minutes=i)
        if i % 3 == 0:
            exp.prediction(ts, tags={"model": "broken-model"}, prediction_time=None)  # metric missing
        elif i % 3 == 1:
            exp.prediction(ts, tags={"model": "broken-model"}, prediction_time=float("nan"))
        else:
            exp.prediction(ts, tags={"model": "broken-model"}, prediction_time=float("inf"))
    for i in range(10):  # "mixed-model": 6 fast predictions and 4 that logged NaN
        nan = i >= 6
        exp.prediction(start + timedelta(minutes=i, seconds=30), tags={"model": "mixed-model"},
                       prediction_time=float("nan") if nan else 0.2)  # fmt: skip
    untagged = exp.client.create_run(exp.id, start_time=epoch_ms(start), tags={"instance": "model-a"})
    exp.client.log_metric(untagged.info.run_id, "prediction_time", 5.0, timestamp=epoch_ms(start))
    # a non-numeric prediction_time cannot be logged at all: MLflow's server refuses it
    import requests

    refused = requests.post(f"{env.config.mlflow_url}/api/2.0/mlflow/runs/log-metric", timeout=10, json={
        "run_id": untagged.info.run_id, "key": "prediction_time", "value": "slow", "timestamp": 0, "step": 1})
    assert refused.status_code == 400 and "INVALID_PARAMETER_VALUE" in refused.text

    window = Window(start, start + timedelta(hours=1))
    with caplog.at_level("WARNING"):
        predictions = _predictions([exp], window.start, window.end)
    assert len(predictions) == 17  # nothing dropped from the partition
    assert predictions.loc[predictions["run_id"] == untagged.info.run_id, "model"].tolist() == [""]
    assert "without tag 'model'" in caplog.text and untagged.info.run_id in caplog.text
    assert "10 prediction(s) without a usable prediction_time" in caplog.text

    resources = extract_resources(PrometheusHook(**FAST), cfg.prometheus.queries, window.start, window.end, 15)
    joined, summary = correlate(predictions, resources, cfg)
    assert not joined.loc[joined["prediction_time"].isna(), "slow"].any()
    verdicts = {v.model: v for v in evaluate(joined, summary, resources, cfg, window)}
    assert "" not in verdicts  # no verdict (and no alert label) for a nameless model
    assert verdicts["broken-model"].verdict == "no_data"
    assert "none with a usable prediction_time" in verdicts["broken-model"].reason
    mixed = verdicts["mixed-model"]
    assert mixed.verdict == "healthy" and mixed.n_predictions == 6
    assert "4 prediction(s) without a usable prediction_time not judged" in mixed.reason


def test_more_runs_than_one_page_are_all_read_once(env: Any) -> None:
    exp = Experiment(env, "paging")
    start = datetime(2026, 3, 10, tzinfo=UTC)
    ids = set()
    for i in range(23):
        # pairs of runs share a start time, so page boundaries fall between equal sort keys
        ids.add(exp.prediction(start + timedelta(minutes=i // 2)))
    window = (start, start + timedelta(days=1))
    hook = MlflowHook()
    small = extract_predictions(hook, [exp], None, *window, page_size=5)
    assert hook.pages_read == [5, 5, 5, 5, 3]  # the real server's pages
    assert set(small["run_id"]) == ids and small["run_id"].is_unique
    pd.testing.assert_frame_equal(small, _predictions([exp], *window, page_size=1000))


# -- timestamps ------------------------------------------------------------------------------------------


def test_mlflow_milliseconds_meet_prometheus_seconds(env: Any) -> None:
    from modelwatch.config import QueryConfig
    from modelwatch.correlate import correlate

    clock = QueryConfig(name="clock", promql="time()", unit="s")  # Prometheus's evaluation time, in seconds
    cfg = _cfg(queries=[_cfg().query("cpu"), clock])
    start = DAY + timedelta(hours=11)
    exp = Experiment(env, "units")
    offsets_ms = [0, 1, 7_499, 7_501, 14_999, 59_250]
    for off in offsets_ms:
        exp.prediction(epoch_ms(start) + off)
    window = Window(start, start + timedelta(minutes=5))
    predictions = _predictions([exp], window.start, window.end)
    assert [epoch_ms(t) - epoch_ms(start) for t in predictions["timestamp"].dt.to_pydatetime()] == offsets_ms
    resources = extract_resources(PrometheusHook(**FAST), cfg.prometheus.queries, window.start, window.end, 15)
    joined, _ = correlate(predictions, resources, cfg)
    for row in joined.itertuples():
        seconds = epoch_ms(row.timestamp.to_pydatetime()) / 1000
        # joined to the nearest 15 s evaluation: the same instant on both clocks, never 1000x off
        assert abs(row.res_clock - seconds) <= 7.5, (row.timestamp, row.res_clock)
    cpu = resources[(resources["query"] == "cpu") & (resources["instance"] == "model-a")].set_index("timestamp")
    # 11:00, saturated: the rate over [1m] evaluated at 11:00:30, whose range is centred on 11:00
    assert joined["res_cpu"].tolist()[0] == cpu.loc[pd.Timestamp(start) + pd.Timedelta(seconds=30), "value"] > 0.9


def test_window_across_a_dst_change_in_the_dag_timezone(env: Any) -> None:
    import pendulum
    from airflow.timetables.interval import CronDataIntervalTimetable

    from modelwatch.config import QueryConfig

    tz = ZoneInfo("America/New_York")  # clocks go forward 2026-03-08 02:00 local: a 23-hour day
    timetable = CronDataIntervalTimetable("0 0 * * *", timezone="America/New_York")
    interval = timetable.infer_manual_data_interval(
        run_after=pendulum.datetime(2026, 3, 9, 0, 30, tz="America/New_York")
    )
    window = resolve_window(interval.start, interval.end, None, timedelta(days=1), tz="America/New_York")
    assert window.start == datetime(2026, 3, 8, 5, tzinfo=UTC) and window.end == datetime(2026, 3, 9, 4, tzinfo=UTC)
    assert window.length == timedelta(hours=23) and not window.intraday
    assert window.partition_path == "dt=2026-03-08"

    clock = QueryConfig(name="clock", promql="time()", unit="s")
    resources = extract_resources(PrometheusHook(**FAST), [clock], window.start, window.end, 15)
    assert len(resources) == 23 * 240  # every 15 s of the 23 hours, once
    assert resources["timestamp"].min() == pd.Timestamp("2026-03-08T05:00:00Z")
    assert resources["timestamp"].max() == pd.Timestamp("2026-03-09T03:59:45Z")

    exp = Experiment(env, "dst")
    inside = [
        datetime(2026, 3, 8, 0, 0, tzinfo=tz),  # local midnight, first instant of the window
        datetime(2026, 3, 8, 1, 59, 59, 999000, tzinfo=tz),  # last EST instant
        datetime(2026, 3, 8, 3, 0, tzinfo=tz),  # first EDT instant (02:00-02:59 does not exist)
        datetime(2026, 3, 8, 23, 59, 59, 999000, tzinfo=tz),
    ]
    outside = [datetime(2026, 3, 7, 23, 59, 59, 999000, tzinfo=tz), datetime(2026, 3, 9, 0, 0, tzinfo=tz)]
    for ts in inside + outside:
        exp.prediction(ts)
    got = _predictions([exp], window.start, window.end)
    assert [t.to_pydatetime() for t in got["timestamp"]] == [t.astimezone(UTC) for t in inside]


def test_predictions_on_the_window_edges_belong_to_one_day_only(env: Any) -> None:
    day1 = datetime(2026, 3, 11, tzinfo=UTC)
    day2, day3 = day1 + timedelta(days=1), day1 + timedelta(days=2)
    runs = Experiment(env, "edges")
    edge_ids = {ts: runs.prediction(ts) for ts in (day1, day2 - timedelta(milliseconds=1), day2, day3)}
    history = Experiment(env, "edges-history", layout="metric_history")
    # one run across midnight, predictions exactly on it and one millisecond either side
    history.history_run(day2 - timedelta(hours=1), day2 + timedelta(hours=1), [
        (day2 - timedelta(milliseconds=1), 0.3), (day2, 0.4), (day2 + timedelta(milliseconds=1), 0.5),
    ])  # fmt: skip
    first = _predictions([runs, history], day1, day2)
    second = _predictions([runs, history], day2, day3)
    assert set(first["run_id"]) & set(second.loc[second["experiment"] == runs.name, "run_id"]) == set()
    assert set(first.loc[first["experiment"] == runs.name, "run_id"]) == {
        edge_ids[day1], edge_ids[day2 - timedelta(milliseconds=1)]
    }
    assert set(second.loc[second["experiment"] == runs.name, "run_id"]) == {edge_ids[day2]}  # day3 is next day's
    assert first.loc[first["experiment"] == history.name, "prediction_time"].tolist() == [0.3]
    assert second.loc[second["experiment"] == history.name, "prediction_time"].tolist() == [0.4, 0.5]
    both = pd.concat([first, second])
    assert len(both) == len(both.drop_duplicates(["experiment", "run_id", "timestamp"]))
