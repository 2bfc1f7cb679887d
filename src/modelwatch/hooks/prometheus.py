"""Prometheus HTTP API hook (``/api/v1/query_range``, ``/api/v1/query``), also for Amazon Managed Service for
Prometheus."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, ClassVar

import requests

from modelwatch import connections
from modelwatch.errors import PrometheusQueryError, PrometheusQueryRefused, UpstreamUnavailable, is_refusal
from modelwatch.hooks.base import ApiHook
from modelwatch.promql import raw_samples_promql
from modelwatch.timegrid import epoch_ms, step_to_ms

QUERY_RANGE_PATH = "/api/v1/query_range"
QUERY_PATH = "/api/v1/query"


def _seconds(ms: int) -> str:
    # Millisecond-exact decimal text: Prometheus parses it as float seconds, with no binary rounding
    # of our own on the way.
    sign = "-" if ms < 0 else ""
    ms = abs(ms)
    return f"{sign}{ms // 1000}.{ms % 1000:03d}"


class PrometheusHook(ApiHook):
    """Range queries and raw-sample reads against Prometheus (or AMP with ``auth: sigv4`` in the connection
    extra).

    :param prometheus_conn_id: Airflow connection id.
    :param kwargs: retry settings, see :class:`~modelwatch.hooks.base.ApiHook`.
    """

    conn_name_attr: ClassVar[str] = "prometheus_conn_id"
    default_conn_name: ClassVar[str] = "prometheus_default"
    conn_type: ClassVar[str] = connections.PROMETHEUS
    hook_name: ClassVar[str] = "Prometheus"
    service_name: ClassVar[str] = "Prometheus"
    # An instant query proves the address, the credentials (SigV4 included) and the query API at once.
    test_request: ClassVar[tuple[str, str, dict[str, Any]]] = ("POST", QUERY_PATH, {"data": {"query": "vector(1)"}})

    def __init__(self, prometheus_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(prometheus_conn_id, **kwargs)
        self.prometheus_conn_id = self.conn_id

    def query_range(
        self,
        promql: str,
        start: datetime,
        end: datetime,
        step_seconds: float | timedelta,
        *,
        query_name: str,
    ) -> list[dict[str, Any]]:
        """Evaluate ``promql`` at ``start + k * step`` for every such instant up to ``end`` (inclusive).

        One request: Prometheus refuses more than 11,000 points per series (for long windows,
        :func:`modelwatch.extract.query_range_chunked` splits the window and merges the answers).

        :param promql: the PromQL expression (sent form-encoded in a POST body, so any length works).
        :param start: first evaluation time (timezone-aware).
        :param end: last possible evaluation time, inclusive (timezone-aware).
        :param step_seconds: evaluation step.
        :param query_name: the query's configured name, for messages.
        :return: the matrix: ``[{"metric": {label: value}, "values": [[unix_seconds, "value"], ...]}]``.
        :raises PrometheusQueryError: on any Prometheus error answer, naming the query, the PromQL and
            Prometheus's ``errorType``/``error``.
        :raises UpstreamUnavailable: when Prometheus cannot be reached (naming the query).
        """
        start_ms, end_ms, step_ms = epoch_ms(start), epoch_ms(end), step_to_ms(step_seconds)
        try:
            response = self._request(
                "POST",
                QUERY_RANGE_PATH,
                data={
                    "query": promql,
                    "start": _seconds(start_ms),
                    "end": _seconds(end_ms),
                    "step": _seconds(step_ms),
                },
            )
        except UpstreamUnavailable as exc:
            raise exc.doing(f"Prometheus query {query_name!r}") from None
        return self._matrix(response, promql=promql, query_name=query_name)

    def raw_samples(
        self, selector: str, start: datetime, end: datetime, *, query_name: str
    ) -> list[dict[str, Any]]:
        """Every real sample of ``selector``'s series between ``start`` and ``end``, at its scrape time.

        One instant query (``/api/v1/query``) of the range vector ``selector[end - start]`` at ``end``:
        ``start`` is included on Prometheus 2.x and left out on 3.x (the same rule as each version's
        lookback); staleness markers are never returned. The caller bounds the answer's size by the span
        it asks for (see :func:`modelwatch.extract.read_raw_sample_times`).

        :param selector: a vector selector without range or modifiers (``node_load1{job="node"}``).
        :param start: oldest sample time wanted (timezone-aware).
        :param end: newest sample time wanted, and the evaluation time (timezone-aware, after ``start``).
        :param query_name: names the query in messages.
        :return: the matrix: ``[{"metric": {label: value}, "values": [[unix_seconds, "value"], ...]}]``.
        :raises PrometheusQueryError: on any Prometheus error answer (``PrometheusQueryRefused`` for a
            refusal, e.g. 422 when the span holds more samples than the server's ``--query.max-samples``),
            naming the query, the PromQL and the server.
        :raises UpstreamUnavailable: when Prometheus cannot be reached (naming the query).
        """
        start_ms, end_ms = epoch_ms(start), epoch_ms(end)
        promql = raw_samples_promql(selector, end_ms - start_ms)
        try:
            response = self._request("POST", QUERY_PATH, data={"query": promql, "time": _seconds(end_ms)})
        except UpstreamUnavailable as exc:
            raise exc.doing(f"Prometheus query {query_name!r}") from None
        return self._matrix(response, promql=promql, query_name=query_name)

    def test_problem(self, response: requests.Response) -> str | None:
        """A test query proves the connection only when Prometheus answers it with ``status: success``."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and body.get("status") == "success" and response.status_code < 300:
            return None
        return f"HTTP {response.status_code}, not a successful Prometheus answer: {self.body_excerpt(response)!r}"

    def _matrix(self, response: requests.Response, *, promql: str, query_name: str) -> list[dict[str, Any]]:
        def fail(error_type: str, error: str) -> PrometheusQueryError:
            # a refusal (bad PromQL, 422 execution, auth) fails the task without Airflow's retries
            kind = PrometheusQueryRefused if is_refusal(response.status_code) else PrometheusQueryError
            return kind(
                query_name=query_name,
                promql=promql,
                status=response.status_code,
                error_type=error_type,
                error=self.redact(error),
                server=self.base_url,
            )

        try:
            body = response.json()
        except ValueError:
            content_type = response.headers.get("Content-Type", "no Content-Type")
            raise fail(
                "bad_response",
                f"not a Prometheus JSON answer ({content_type}): {self.body_excerpt(response)!r}",
            ) from None
        if not isinstance(body, dict):
            raise fail("bad_response", f"not a Prometheus JSON answer: {self.body_excerpt(response)!r}")
        if body.get("status") != "success" or response.status_code >= 400:
            raise fail(
                str(body.get("errorType") or f"http_{response.status_code}"),
                str(body.get("error") or self.body_excerpt(response)),
            )
        for warning in body.get("warnings") or ():
            self.log.warning("Prometheus warning for query %r: %s", query_name, warning)
        data = body.get("data") or {}
        if data.get("resultType") != "matrix" or not isinstance(data.get("result"), list):
            raise fail("bad_response", f"expected a matrix result, got resultType={data.get('resultType')!r}")
        return data["result"]
