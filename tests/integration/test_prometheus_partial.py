"""Partial and oversized Prometheus answers against the session's real Prometheus.

Prometheus 2.42 rarely warns by itself (a failed remote read or federated store does), so a
:class:`faultproxy.FaultProxy` in front of the real server adds ``warnings`` to its real answers for one
query; the real tasks ``extract_resources``, ``extract_predictions`` and ``correlate`` run over a few hours
of the seeded cpu_saturation day (their functions, with a run context; no scheduler), and the resources
manifest and the verdicts must say the evidence is partial. The series bound is checked with a real
``{__name__=~".+"}`` answer.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qsl

import pandas as pd
import pytest
import yaml
from airflow.sdk.exceptions import AirflowFailException
from faultproxy import FaultProxy, airflow_conn

from modelwatch.extract import extract_resources
from modelwatch.hooks import PrometheusHook
from modelwatch.hooks.prometheus import PrometheusAnswerTooLarge

REPO = Path(__file__).resolve().parents[2]
DAY = datetime(2026, 3, 3, tzinfo=UTC)  # cpu_saturation: model-a CPU ~97 % 10:00-12:00, fraud-detector slow
START, END = DAY + timedelta(hours=9), DAY + timedelta(hours=13)
WARNING = "remote read of store 'eu-archive' failed: context deadline exceeded"


class WarningProxy(FaultProxy):
    """A fault proxy that adds ``warnings`` to the real answers of the query_range requests whose PromQL
    contains ``marker`` (the real data passes unchanged)."""

    def __init__(self, upstream: str, marker: str, **kwargs: Any) -> None:
        super().__init__(upstream, **kwargs)
        self.marker = marker
        self.warned = 0

    def start(self) -> WarningProxy:
        super().start()
        assert self._server is not None
        proxy, base = self, self._server.RequestHandlerClass

        class Handler(base):  # type: ignore[misc, valid-type]
            def _forward(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
                status, headers, data = super()._forward(method, path, body)
                promql = dict(parse_qsl(body.decode())).get("query", "")
                if status == 200 and path.startswith("/api/v1/query_range") and proxy.marker in promql:
                    if any(k.lower() == "content-encoding" and v == "gzip" for k, v in headers.items()):
                        data = gzip.decompress(data)  # Prometheus compresses for a client that accepts it
                    answer = json.loads(data)
                    answer["warnings"] = [WARNING]
                    data = json.dumps(answer).encode()
                    headers = {k: v for k, v in headers.items() if k.lower() != "content-encoding"}
                    with proxy._lock:
                        proxy.warned += 1
                return status, headers, data

        self._server.RequestHandlerClass = Handler
        return self


@pytest.fixture
def env(seeded_stack: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    for name, value in seeded_stack.airflow_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MODELWATCH_STORAGE_URL", f"file://{tmp_path}/lake")
    return seeded_stack


@pytest.fixture
def warn_cpu(env: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[WarningProxy]:
    """``prometheus_default`` through a proxy that warns on the cpu query's answers (``rate`` of
    ``node_cpu_seconds_total``: no other query, nor the sample-time reads, has it)."""
    with WarningProxy(env.config.prometheus_url, "rate(node_cpu_seconds_total", lifetime=120) as proxy:
        monkeypatch.setenv("AIRFLOW_CONN_PROMETHEUS_DEFAULT", airflow_conn("prometheus", proxy.url, timeout=20))
        yield proxy


def _context(monkeypatch: pytest.MonkeyPatch) -> None:
    """The run context the tasks read (``get_current_context``): a manual run of DAY with a window
    ``START``-``END`` in its params."""
    import modelwatch.tasks as tasks

    run_id = "manual__2026-03-04T00:00:00+00:00_partial"
    dag_run = SimpleNamespace(data_interval_start=DAY, data_interval_end=DAY + timedelta(days=1),
                              run_after=DAY + timedelta(days=1), run_id=run_id, dag_id="model_performance_monitoring",
                              run_type="manual")  # fmt: skip
    context = {"dag_run": dag_run, "run_id": run_id, "dag": SimpleNamespace(dag_id="model_performance_monitoring"),
               "params": {"window_start": START.isoformat(), "window_end": END.isoformat()}}  # fmt: skip
    monkeypatch.setattr(tasks, "get_current_context", lambda: context)


def test_warnings_reach_the_resources_manifest_and_mark_the_verdicts_partial(
    warn_cpu: WarningProxy, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from modelwatch.storage import Lake
    from modelwatch.tasks import correlate, extract_predictions, extract_resources
    from modelwatch.verdict import verdicts_from_frame

    _context(monkeypatch)
    interval = timedelta(days=1)
    ref = extract_resources.function(interval)
    assert warn_cpu.warned == 1  # the cpu query's one request, answered by the real server
    lake = Lake(f"file://{tmp_path}/lake")
    manifest = lake.read_manifest(ref["url"])
    [cpu] = manifest["prometheus_warnings"]
    assert cpu["query"] == "cpu" and cpu["warnings"] == [WARNING]
    assert (cpu["window_start"], cpu["window_end"]) == (START.isoformat(), END.isoformat())
    assert lake.read_ref(ref)["query"].eq("cpu").any()  # the partial data is kept

    verdicts = []
    for group in extract_predictions.function(interval):
        staged = correlate.function(ref, group, interval)
        verdicts += verdicts_from_frame(pd.read_parquet(staged["verdicts"].removeprefix("file://")))
    by_model = {v.model: v for v in verdicts}
    fraud, rec = by_model["fraud-detector"], by_model["recommender"]
    assert fraud.verdict == "degraded"  # still degraded (and pages): partial evidence of saturation is evidence
    assert rec.verdict == "healthy"  # healthy on what Prometheus returned, and says what it did not
    for v in (fraud, rec):
        assert v.evidence_partial == [f"cpu: {WARNING}"]
        assert f"(evidence partial: query cpu: {WARNING})" in v.reason


def _config_with(tmp_path: Path, **prometheus: Any) -> Path:
    raw = yaml.safe_load((REPO / "include" / "thresholds.yaml").read_text())
    raw["prometheus"] = {**raw["prometheus"], **prometheus}
    path = tmp_path / "thresholds-bounds.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_a_query_over_the_series_bound_fails_the_task_at_once_naming_query_window_and_key(
    env: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from modelwatch.tasks import extract_resources as task

    raw = yaml.safe_load((REPO / "include" / "thresholds.yaml").read_text())
    everything = {"name": "everything", "promql": '{__name__=~".+"}'}
    path = _config_with(tmp_path, max_series_per_query=5, queries=[raw["prometheus"]["queries"][0], everything])
    monkeypatch.setenv("MODELWATCH_CONFIG", str(path))
    _context(monkeypatch)
    with pytest.raises(PrometheusAnswerTooLarge) as caught:
        task.function(timedelta(days=1))
    err = caught.value
    assert isinstance(err, AirflowFailException)  # no Airflow retry: the same query answers the same way
    text = str(err)
    assert "Prometheus query 'everything'" in text and f"window [{START.isoformat()}" in text
    assert err.seen > 5 and f"{err.seen:,} series" in text
    assert "prometheus.max_series_per_query = 5" in text and "raise prometheus.max_series_per_query" in text


def test_the_byte_bound_stops_a_real_answer(env: Any) -> None:
    class Q:
        name, promql = "everything", '{__name__=~".+"}'

    hook = PrometheusHook(max_response_bytes=64 * 1024, backoff_base_seconds=0.05)
    with pytest.raises(PrometheusAnswerTooLarge, match=r"'everything'.*max_response_bytes = 65,536"):
        extract_resources(hook, [Q()], START, START + timedelta(minutes=30), 15)
    assert hook.requests_made == 1
