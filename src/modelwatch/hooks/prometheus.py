"""Prometheus HTTP API hook (``/api/v1/query_range``, ``/api/v1/query``), also for Amazon Managed Service for
Prometheus."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, ClassVar

import requests

from modelwatch import connections
from modelwatch.errors import (
    ModelwatchError,
    PrometheusQueryError,
    PrometheusQueryRefused,
    UpstreamUnavailable,
    is_refusal,
)
from modelwatch.hooks.base import ApiHook
from modelwatch.promql import raw_samples_promql
from modelwatch.timegrid import epoch_ms, step_to_ms

QUERY_RANGE_PATH = "/api/v1/query_range"
QUERY_PATH = "/api/v1/query"
#: Series one query's answer may hold unless ``prometheus.max_series_per_query`` says otherwise.
DEFAULT_MAX_SERIES = 10_000
#: Bytes one answer may hold (decompressed) unless ``prometheus.max_response_bytes`` says otherwise.
DEFAULT_MAX_RESPONSE_BYTES = 256 * 1024 * 1024
#: One warning or info text is kept (in notes, logs, manifests, reasons) up to this many characters.
NOTE_MAX_CHARS = 500
#: Distinct warnings (and infos) kept per answer.
NOTES_PER_ANSWER = 10
_READ_CHUNK = 1 << 16


def _seconds(ms: int) -> str:
    # Millisecond-exact decimal text: Prometheus parses it as float seconds, with no binary rounding
    # of our own on the way.
    sign = "-" if ms < 0 else ""
    ms = abs(ms)
    return f"{sign}{ms // 1000}.{ms % 1000:03d}"


def bounded_text(text: Any, limit: int = NOTE_MAX_CHARS) -> str:
    """``text`` as one line of at most ``limit`` characters (``...`` marks a cut)."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


class PrometheusAnswerTooLarge(PrometheusQueryRefused):
    """One query's answer passed a configured bound (series or bytes): the same query over the same window
    answers the same way on every try, so the task fails at once, without Airflow's retries.

    :param bound: the configuration key that sets the bound (``prometheus.max_series_per_query``...).
    :param limit: its value. :param seen: what the answer held (series), or the bytes read before the read
        stopped (or, with ``declared``, the size its Content-Length announced; nothing was read).
    :param unit: ``series`` or ``bytes``. :param window: the request's window, as text.
    """

    def __init__(self, *, query_name: str, promql: str, server: str, status: int, bound: str, limit: int,
                 seen: int, unit: str, window: str, declared: bool = False) -> None:  # fmt: skip
        self.bound, self.limit, self.seen, self.unit, self.window = bound, limit, seen, unit, window
        if unit == "series":
            what = f"the answer holds {seen:,} series"
        elif declared:
            what = f"the answer announces {seen:,} bytes (Content-Length; not read)"
        else:
            what = f"the answer passed {seen:,} bytes (the read stopped there)"
        super().__init__(
            query_name=query_name, promql=promql, status=status, error_type="answer_too_large",
            error=(f"window {window}: {what}, more than {bound} = {limit:,}; aggregate or narrow the PromQL "
                   f"(e.g. max by (instance) (...)), or raise {bound} in thresholds.yaml"),
            server=server,
        )  # fmt: skip


class _BodyTooLarge(ModelwatchError):
    """Raised inside the session's response hook when a body passes the byte bound (a ModelwatchError, so
    that ``ApiHook._request`` lets it through unchanged for :meth:`PrometheusHook._send` to word)."""

    def __init__(self, seen: int, status: int, *, declared: bool = False) -> None:
        super().__init__(seen)
        self.seen, self.status, self.declared = seen, status, declared


class PrometheusHook(ApiHook):
    """Range queries and raw-sample reads against Prometheus (or AMP with ``auth: sigv4`` in the connection
    extra).

    Each answer's ``warnings`` (and ``infos``, Prometheus 3) -- a partial answer: a remote-read or federated
    store failed, or Thanos/Cortex/AMP returned what they had -- are logged and appended to :attr:`notes`.

    :param prometheus_conn_id: Airflow connection id.
    :param max_series_per_query: series a query_range answer may hold (``prometheus.max_series_per_query``).
    :param max_response_bytes: bytes an answer may hold, decompressed (``prometheus.max_response_bytes``): the
        body is read in chunks and the read stops past the bound.
    :param kwargs: retry settings, see :class:`~modelwatch.hooks.base.ApiHook`.
    """

    conn_name_attr: ClassVar[str] = "prometheus_conn_id"
    default_conn_name: ClassVar[str] = "prometheus_default"
    conn_type: ClassVar[str] = connections.PROMETHEUS
    hook_name: ClassVar[str] = "Prometheus"
    service_name: ClassVar[str] = "Prometheus"
    # An instant query proves the address, the credentials (SigV4 included) and the query API at once.
    test_request: ClassVar[tuple[str, str, dict[str, Any]]] = (
        "POST",
        QUERY_PATH,
        {"data": {"query": "vector(1)"}},
    )

    def __init__(
        self,
        prometheus_conn_id: str = default_conn_name,
        *,
        max_series_per_query: int = DEFAULT_MAX_SERIES,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        **kwargs: Any,
    ) -> None:
        super().__init__(prometheus_conn_id, **kwargs)
        self.prometheus_conn_id = self.conn_id
        self.max_series_per_query = max_series_per_query
        self.max_response_bytes = max_response_bytes
        #: one entry per answer that carried ``warnings`` or ``infos``: ``{"query", "start", "end",
        #: "warnings", "infos"}`` (texts bounded by :func:`bounded_text`, at most :data:`NOTES_PER_ANSWER` each)
        self.notes: list[dict[str, Any]] = []

    def get_conn(self) -> requests.Session:
        """The base session, with a response hook that reads each body in chunks up to the byte bound."""
        fresh = self._session is None
        session = super().get_conn()
        if fresh:
            session.hooks["response"].append(self._bounded_read)
        return session

    def _bounded_read(self, response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
        # requests calls response hooks before it reads the body (stream=False reads it after them): read it
        # here, chunk by chunk, and stop at the bound instead of holding a runaway answer in memory
        limit = self.max_response_bytes
        declared = response.headers.get("Content-Length")
        encoded = response.headers.get("Content-Encoding", "identity").lower() not in ("", "identity")
        if declared and declared.isdigit() and not encoded and int(declared) > limit:
            response.close()
            raise _BodyTooLarge(int(declared), response.status_code, declared=True)
        chunks, size = [], 0
        # iter_content decodes gzip and turns a reset or a cut body into requests' own (retried) errors
        for chunk in response.iter_content(_READ_CHUNK):
            size += len(chunk)
            if size > limit:
                response.close()
                raise _BodyTooLarge(size, response.status_code)
            chunks.append(chunk)
        response._content = b"".join(chunks)
        return response

    def _send(
        self, data: dict[str, str], path: str, *, promql: str, query_name: str, window: str
    ) -> requests.Response:
        try:
            return self._request("POST", path, data=data)
        except UpstreamUnavailable as exc:
            raise exc.doing(f"Prometheus query {query_name!r}") from None
        except _BodyTooLarge as exc:
            raise PrometheusAnswerTooLarge(
                query_name=query_name, promql=promql, server=self.base_url, status=exc.status,
                bound="prometheus.max_response_bytes", limit=self.max_response_bytes, seen=exc.seen, unit="bytes",
                window=window, declared=exc.declared,
            ) from None  # fmt: skip

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
        window = f"[{start.isoformat()}, {end.isoformat()}]"
        data = {
            "query": promql,
            "start": _seconds(start_ms),
            "end": _seconds(end_ms),
            "step": _seconds(step_ms),
        }
        response = self._send(data, QUERY_RANGE_PATH, promql=promql, query_name=query_name, window=window)
        result = self._matrix(response, promql=promql, query_name=query_name, start=start, end=end)
        self.check_series(len(result), promql=promql, query_name=query_name, window=window)
        return result

    def check_series(self, series: int, *, promql: str, query_name: str, window: str) -> None:
        """Fail when one query's answer holds more than :attr:`max_series_per_query` series.

        :raises PrometheusAnswerTooLarge: naming the query, the window, the count and the key to raise.
        """
        if series > self.max_series_per_query:
            raise PrometheusAnswerTooLarge(
                query_name=query_name, promql=promql, server=self.base_url, status=200,
                bound="prometheus.max_series_per_query", limit=self.max_series_per_query, seen=series,
                unit="series", window=window,
            )  # fmt: skip

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
        :raises PrometheusAnswerTooLarge: when the answer passes :attr:`max_response_bytes`.
        """
        start_ms, end_ms = epoch_ms(start), epoch_ms(end)
        promql = raw_samples_promql(selector, end_ms - start_ms)
        window = f"[{start.isoformat()}, {end.isoformat()}]"
        response = self._send({"query": promql, "time": _seconds(end_ms)}, QUERY_PATH, promql=promql,
                              query_name=query_name, window=window)  # fmt: skip
        return self._matrix(response, promql=promql, query_name=query_name, start=start, end=end)

    def test_problem(self, response: requests.Response) -> str | None:
        """A test query proves the connection only when Prometheus answers it with ``status: success``."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and body.get("status") == "success" and response.status_code < 300:
            return None
        return f"HTTP {response.status_code}, not a successful Prometheus answer: {self.body_excerpt(response)!r}"

    def _matrix(
        self, response: requests.Response, *, promql: str, query_name: str, start: datetime, end: datetime
    ) -> list[dict[str, Any]]:
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
        self._note(body, query_name=query_name, start=start, end=end)
        data = body.get("data") or {}
        if data.get("resultType") != "matrix" or not isinstance(data.get("result"), list):
            raise fail("bad_response", f"expected a matrix result, got resultType={data.get('resultType')!r}")
        return data["result"]

    def _note(self, body: dict[str, Any], *, query_name: str, start: datetime, end: datetime) -> None:
        """Log and keep (in :attr:`notes`) the ``warnings`` and ``infos`` of an answer."""
        kept: dict[str, list[str]] = {}
        for key in ("warnings", "infos"):
            raw = body.get(key) or []
            texts = list(
                dict.fromkeys(self.redact(bounded_text(t)) for t in (raw if isinstance(raw, list) else [raw]))
            )
            kept[key] = texts[:NOTES_PER_ANSWER]
            for text in kept[key]:
                level = self.log.warning if key == "warnings" else self.log.info
                level("Prometheus %s for query %r, window [%s, %s]: %s", key[:-1], query_name, start.isoformat(),
                      end.isoformat(), text)  # fmt: skip
            if len(texts) > NOTES_PER_ANSWER:
                self.log.warning("Prometheus sent %d more %s for query %r", len(texts) - NOTES_PER_ANSWER, key,
                                 query_name)  # fmt: skip
        if kept["warnings"] or kept["infos"]:
            self.notes.append(
                {"query": query_name, "start": start.isoformat(), "end": end.isoformat(), **kept}
            )
