"""CloudWatch as a source, its pure parts: the presets the seeds name, the period CloudWatch can still serve,
requests within GetMetricData's limits, and rows that join like Prometheus ranges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from config_helpers import small_raw

from modelwatch.cloudwatch import (
    MAX_DATAPOINTS_PER_CALL,
    MAX_QUERIES_PER_CALL,
    all_series,
    effective_period,
    plan_requests,
    results_to_frame,
)
from modelwatch.config import CloudWatchConfig, CloudWatchQuery, ModelwatchConfig
from modelwatch.schema import RESOURCE_COLUMNS

DAY = datetime(2026, 3, 4, tzinfo=UTC)
ENDPOINT = {"preset": "sagemaker_endpoint", "name": "endpoint", "endpoint": "fraud-prod",
            "variants": {"variant-a": "model-a", "variant-b": "model-b"}, "saturation": {"cpu": 0.9}}  # fmt: skip


def test_presets_name_the_seeds_metrics_with_their_join_keys() -> None:
    cw = CloudWatchConfig(presets=[ENDPOINT, {"preset": "apigateway", "name": "api", "api_name": "fraud-api",
                                              "stage": "prod", "instance": "model-a"}])  # fmt: skip
    queries = {q.name: q for q in cw.all_queries()}
    assert {"endpoint_cpu", "endpoint_memory", "endpoint_model_latency_p95", "endpoint_invocations",
            "api_latency_p95", "api_errors_5xx", "api_requests"} <= set(queries)  # fmt: skip
    cpu = queries["endpoint_cpu"]
    assert (cpu.namespace, cpu.metric, cpu.stat, cpu.saturation, cpu.scale) == (
        "/aws/sagemaker/Endpoints", "CPUUtilization", "Average", 0.9, 0.01)  # fmt: skip
    assert cpu.series() == [("model-a", {"EndpointName": "fraud-prod", "VariantName": "variant-a"}),
                            ("model-b", {"EndpointName": "fraud-prod", "VariantName": "variant-b"})]  # fmt: skip
    latency = queries["api_latency_p95"]
    assert (latency.metric, latency.stat, latency.scale, latency.unit) == ("Latency", "p95", 0.001, "s")
    assert latency.series() == [("model-a", {"ApiName": "fraud-api", "Stage": "prod"})]


def test_a_cloudwatch_threshold_is_evidence_like_a_prometheus_one_and_names_are_one_namespace() -> None:
    cfg = ModelwatchConfig.model_validate(small_raw() | {"cloudwatch": {"presets": [ENDPOINT]}})
    assert cfg.saturation_thresholds["endpoint_cpu"] == 0.9 and cfg.query("endpoint_cpu").unit == "cores"
    clash = small_raw() | {"cloudwatch": {"queries": [{"name": "cpu", "namespace": "N", "metric": "M"}]}}
    with pytest.raises(ValueError, match="cpu used by more than one query"):
        ModelwatchConfig.model_validate(clash)


@pytest.mark.parametrize(("query", "message"), [
    ({"stat": "p1000"}, "not a CloudWatch statistic"),
    ({"instance_dimension": "VariantName"}, "needs instances"),
    ({"instances": {"a": "model-a"}}, "need instance_dimension"),
])  # fmt: skip
def test_a_wrong_query_says_what_is_wrong(query: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CloudWatchQuery(name="q", namespace="N", metric="M", **query)


def test_unknown_preset_metrics_and_missing_names_are_refused() -> None:
    with pytest.raises(ValueError, match="gpu_temp not among the sagemaker_endpoint metrics"):
        CloudWatchConfig(presets=[{**ENDPOINT, "saturation": {"gpu_temp": 0.9}}])
    with pytest.raises(ValueError, match="needs api_name, stage"):
        CloudWatchConfig(presets=[{"preset": "apigateway", "name": "api"}])
    with pytest.raises(ValueError, match="multiple of 60"):
        CloudWatchConfig(period="90s")


def test_the_period_follows_what_cloudwatch_still_keeps() -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    assert effective_period(60, now - timedelta(days=2), now) == 60
    assert effective_period(60, now - timedelta(days=20), now) == 300
    assert effective_period(600, now - timedelta(days=20), now) == 600
    assert effective_period(60, now - timedelta(days=100), now) == 3600
    with pytest.raises(ValueError, match="455 days"):
        effective_period(60, now - timedelta(days=500), now)


@pytest.mark.parametrize("n_series", [1, 7, 500, 1201])
def test_requests_stay_within_getmetricdata_limits_and_cover_everything(n_series: int) -> None:
    start, end, period = DAY, DAY + timedelta(days=1), 60
    calls = plan_requests(n_series, start, end, period)
    for batch, t0, t1 in calls:
        assert len(batch) <= MAX_QUERIES_PER_CALL
        assert len(batch) * ((t1 - t0).total_seconds() / period) <= MAX_DATAPOINTS_PER_CALL
        assert (t0 - start).total_seconds() % period == 0
    # each series over the whole window exactly once: contiguous slices, no overlap
    for i in range(n_series):
        slices = sorted((t0, t1) for batch, t0, t1 in calls if i in batch)
        assert slices[0][0] == start and slices[-1][1] == end
        assert all(a[1] == b[0] for a, b in zip(slices, slices[1:], strict=False))


def test_values_are_stored_at_their_periods_end_scaled_with_the_period_as_window() -> None:
    cw = CloudWatchConfig(presets=[{**ENDPOINT, "metrics": ["cpu"]}])
    series = all_series(cw.all_queries())
    results = {"m0": ([DAY, DAY + timedelta(minutes=1), DAY - timedelta(minutes=1)], [95.0, 40.0, 10.0]),
               "m1": ([DAY], [None])}  # fmt: skip
    frame = results_to_frame(series, results, 60, DAY, DAY + timedelta(days=1))
    assert list(frame.columns) == list(RESOURCE_COLUMNS)
    assert frame["value"].tolist() == pytest.approx([0.95, 0.40])  # scaled to a share of a core; the one before the window left out
    assert frame["timestamp"].tolist() == [DAY + timedelta(minutes=1), DAY + timedelta(minutes=2)]
    assert set(frame["window_seconds"]) == {60.0} and set(frame["instance"]) == {"model-a"}
    assert frame["labels"].iloc[0] == ('{EndpointName="fraud-prod",VariantName="variant-a",metric="CPUUtilization",'
                                       'namespace="/aws/sagemaker/Endpoints"}')  # fmt: skip
    assert str(frame["timestamp"].dtype) == "datetime64[ms, UTC]"


def test_the_commented_example_in_the_shipped_thresholds_is_valid() -> None:
    from pathlib import Path

    import yaml

    shipped = Path(__file__).resolve().parents[2] / "include" / "thresholds.yaml"
    lines = shipped.read_text().splitlines()
    first = lines.index("#cloudwatch:")
    block = [lines[first][1:]]
    for line in lines[first + 1:]:
        if not line.startswith("#  "):
            break
        block.append(line[1:])
    raw = yaml.safe_load(shipped.read_text()) | yaml.safe_load("\n".join(block))
    cfg = ModelwatchConfig.model_validate(raw)
    assert {"endpoint_cpu", "api_latency_p95", "queue_depth"} <= {q.name for q in cfg.cloudwatch.all_queries()}
