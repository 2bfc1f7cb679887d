"""The PromQL helpers: what an expression reads, and the queries that say when its samples were taken."""

from __future__ import annotations

from datetime import timedelta

import pytest

from modelwatch.promql import PromqlLexError, analyse, presence_promql, raw_samples_promql, sample_time_promql


@pytest.mark.parametrize(
    ("promql", "selectors", "longest"),
    [
        ('1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"}[1m]))',
         ['node_cpu_seconds_total{mode="idle"}'], 60),
        ("1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes",
         ["node_memory_MemAvailable_bytes", "node_memory_MemTotal_bytes"], 0),
        ('(sum by (instance) (rate(http_requests_total{status="5xx"}[1m])) or sum by (instance) '
         "(rate(http_requests_total[1m])) * 0) / sum by (instance) (rate(http_requests_total[1m]))",
         ['http_requests_total{status="5xx"}', "http_requests_total"], 60),
        ("histogram_quantile(0.95, sum by (instance, le) (rate(http_request_duration_seconds_bucket[5m])))",
         ["http_request_duration_seconds_bucket"], 300),
        ("max_over_time(node_load1[1h:1m] offset 5m)", ["node_load1"], 3600),
        ("vector(1)", [], 0),
    ],
)  # fmt: skip
def test_analyse(promql: str, selectors: list[str], longest: int) -> None:
    assert analyse(promql) == (selectors, timedelta(seconds=longest))


def test_analyse_rejects_unclosed_groups() -> None:
    with pytest.raises(PromqlLexError):
        analyse('rate(x{mode="idle"[1m])')


def test_sample_time_promql_is_the_reference_definition() -> None:
    assert sample_time_promql("node_load1") == "max by (instance) (timestamp(node_load1))"
    two = sample_time_promql("a / b", "host")
    assert two is not None and two.startswith("min by (host) (label_replace(max by (host) (timestamp(a))")
    assert sample_time_promql("vector(1)") is None


def test_presence_and_raw_sample_queries() -> None:
    assert presence_promql('x{mode="idle"}') == 'count by (instance) (x{mode="idle"})'
    assert presence_promql("x", "pod") == "count by (pod) (x)"
    assert raw_samples_promql('x{mode="idle"}', 86_700_000) == 'x{mode="idle"}[86700s]'
    assert raw_samples_promql("x", 1500) == "x[1500ms]"
    with pytest.raises(ValueError, match="positive range"):
        raw_samples_promql("x", 0)
