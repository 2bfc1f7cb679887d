"""Prometheus answers that are partial (``warnings``, ``infos``) or too large (series, bytes), against a tiny
real HTTP server on 127.0.0.1: what the hook keeps and refuses, and what the extractor records and logs."""

from __future__ import annotations

import gzip
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from modelwatch.config import PrometheusConfig
from modelwatch.errors import PrometheusQueryRefused
from modelwatch.extract import extract_resources, query_notes, query_range_chunked
from modelwatch.hooks.prometheus import (
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_MAX_SERIES,
    NOTE_MAX_CHARS,
    PrometheusAnswerTooLarge,
    PrometheusHook,
)

FAST = {"backoff_base_seconds": 0.01, "backoff_max_seconds": 0.05}
T0 = datetime(2026, 3, 2, tzinfo=UTC)
WARNING = "remote read of store 'eu-archive' failed: context deadline exceeded"


def matrix(n_series: int, *, t: float = 1772409600.0, **extra: Any) -> dict[str, Any]:
    """A successful matrix answer of ``n_series`` series (``warnings``/``infos`` through ``extra``)."""
    result = [{"metric": {"instance": f"host-{k}:9100"}, "values": [[t, "0.5"]]} for k in range(n_series)]
    return {"status": "success", "data": {"resultType": "matrix", "result": result}, **extra}


@dataclass
class Answer:
    body: bytes
    chunked: bool = False
    gzip: bool = False
    #: chunked only: the body is sent this many times over (a runaway answer, never built in memory)
    repeat: int = 1


class Server:
    """Answers each request with the next scripted answer (the last one repeats); counts requests and the
    bytes it managed to send."""

    def __init__(self) -> None:
        self.answers: list[Answer] = []
        self.requests = 0
        self.sent = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                owner.requests += 1
                answer = owner.answers.pop(0) if len(owner.answers) > 1 else owner.answers[0]
                body = gzip.compress(answer.body) if answer.gzip else answer.body
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                if answer.gzip:
                    self.send_header("Content-Encoding", "gzip")
                if answer.chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                else:
                    self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                try:
                    if not answer.chunked:
                        self.wfile.write(body)
                        owner.sent += len(body)
                        return
                    for _ in range(answer.repeat):
                        for k in range(0, len(body), 1 << 16):
                            piece = body[k : k + (1 << 16)]
                            self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                            owner.sent += len(piece)
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client stopped reading: what this server is here to show

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        self.thread.start()

    def answer(self, *answers: Answer | dict[str, Any]) -> None:
        self.answers = [a if isinstance(a, Answer) else Answer(json.dumps(a).encode()) for a in answers]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


def hook(server: Server, monkeypatch: pytest.MonkeyPatch, **kwargs: Any) -> PrometheusHook:
    conn = {"conn_type": "prometheus", "host": "127.0.0.1", "port": server.port}
    monkeypatch.setenv("AIRFLOW_CONN_PROM_ANSWERS", json.dumps(conn))
    return PrometheusHook("prom_answers", **FAST, **kwargs)


# -- warnings and infos ----------------------------------------------------------------------------------------


def test_warnings_and_infos_are_kept_per_answer_bounded_and_logged(
    server: Server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    long = "x" * 5000
    server.answer(matrix(2, warnings=[WARNING, WARNING, long], infos=["metric might not be a counter"]))
    prom = hook(server, monkeypatch)
    result = prom.query_range("up", T0, T0 + timedelta(hours=1), 15, query_name="cpu")
    assert len(result) == 2  # the data is still returned: partial, not refused
    [note] = prom.notes
    assert note["query"] == "cpu" and note["start"] == T0.isoformat()
    assert note["end"] == (T0 + timedelta(hours=1)).isoformat()
    assert note["warnings"][0] == WARNING and len(note["warnings"]) == 2  # the repeated one kept once
    assert len(note["warnings"][1]) == NOTE_MAX_CHARS and note["warnings"][1].endswith("...")
    assert note["infos"] == ["metric might not be a counter"]
    # the hook logs through Airflow's structlog (stdout here): each warning once, bounded, with query and window
    logged = [line for line in capsys.readouterr().out.splitlines() if "Prometheus warning for query 'cpu'" in line]
    assert len(logged) == 2 and WARNING in logged[0] and T0.isoformat() in logged[0]
    assert max(len(line) for line in logged) < NOTE_MAX_CHARS + 300


def test_an_answer_without_warnings_leaves_no_note(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    server.answer(matrix(1, warnings=[]))
    prom = hook(server, monkeypatch)
    prom.query_range("up", T0, T0 + timedelta(hours=1), 15, query_name="cpu")
    assert prom.notes == []


class NotingPrometheus:
    """A fake hook whose answers to one query carry warnings, the way :class:`PrometheusHook` notes them."""

    def __init__(self, warn: dict[str, list[str]]) -> None:
        self.warn = warn
        self.notes: list[dict[str, Any]] = []
        self.requests_made = 0

    def query_range(self, promql: str, start: datetime, end: datetime, step_seconds: float, *,
                    query_name: str) -> list[dict[str, Any]]:  # fmt: skip
        self.requests_made += 1
        if query_name in self.warn:
            self.notes.append({"query": query_name, "start": start.isoformat(), "end": end.isoformat(),
                               "warnings": self.warn[query_name], "infos": []})  # fmt: skip
        return [{"metric": {"instance": "a:9100"}, "values": [[start.timestamp(), "0.5"]]}]

    def raw_samples(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:  # pragma: no cover
        raise AssertionError("vector() reads no selector")


class Q:
    def __init__(self, name: str, promql: str) -> None:
        self.name, self.promql = name, promql


def test_extract_records_each_querys_warnings_with_its_window_and_logs_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = NotingPrometheus({"cpu": [WARNING]})
    notes: list[dict[str, Any]] = []
    with caplog.at_level(logging.INFO, logger="modelwatch.extract"):
        frame = extract_resources(fake, [Q("cpu", "vector(1)"), Q("memory", "vector(2)")], T0,  # type: ignore[arg-type]
                                  T0 + timedelta(hours=1), 15, notes=notes)  # fmt: skip
    assert set(frame["query"]) == {"cpu", "memory"}  # the partial data is kept
    assert notes == [{"query": "cpu", "window_start": T0.isoformat(), "window_end": (T0 + timedelta(hours=1)).isoformat(),
                      "answers": 1, "warnings": [WARNING], "infos": []}]  # fmt: skip
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert line.startswith("query cpu: window [2026-03-02T00:00:00+00:00, 2026-03-02T01:00:00+00:00)")
    assert "partial" in line and WARNING in line


def test_a_querys_log_line_about_warnings_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    fake = NotingPrometheus({"cpu": [f"store {k} failed: " + "y" * 400 for k in range(30)]})
    notes: list[dict[str, Any]] = []
    with caplog.at_level(logging.WARNING, logger="modelwatch.extract"):
        extract_resources(fake, [Q("cpu", "vector(1)")], T0, T0 + timedelta(hours=1), 15, notes=notes)  # type: ignore[arg-type]
    [line] = [r.getMessage() for r in caplog.records]
    assert len(line) < 1300
    assert len(notes[0]["warnings"]) == 10 and notes[0]["more_warnings"] == 20


def test_query_notes_gathers_the_distinct_texts_of_a_querys_answers() -> None:
    got = query_notes([{"warnings": ["a", "b"], "infos": []}, {"warnings": ["a"], "infos": ["i"]}], "cpu", T0,
                      T0 + timedelta(days=1))  # fmt: skip
    assert got is not None and got["warnings"] == ["a", "b"] and got["infos"] == ["i"] and got["answers"] == 2
    assert query_notes([], "cpu", T0, T0 + timedelta(days=1)) is None


# -- bounds ------------------------------------------------------------------------------------------------


def test_the_bounds_are_configuration_keys_with_defaults() -> None:
    p = PrometheusConfig(queries=[{"name": "cpu", "promql": "up"}])
    assert (p.max_series_per_query, p.max_response_bytes) == (DEFAULT_MAX_SERIES, DEFAULT_MAX_RESPONSE_BYTES)
    assert (DEFAULT_MAX_SERIES, DEFAULT_MAX_RESPONSE_BYTES) == (10_000, 256 * 1024 * 1024)
    with pytest.raises(ValueError, match="max_series_per_query"):
        PrometheusConfig(queries=[{"name": "cpu", "promql": "up"}], max_series_per_query=0)


def test_more_series_than_the_bound_fails_at_once_naming_query_window_count_and_key(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.answer(matrix(6))
    prom = hook(server, monkeypatch, max_series_per_query=5)
    with pytest.raises(PrometheusAnswerTooLarge) as caught:
        prom.query_range('{__name__=~".+"}', T0, T0 + timedelta(hours=1), 15, query_name="everything")
    err = caught.value
    assert isinstance(err, PrometheusQueryRefused) and isinstance(err, AirflowFailException)  # no Airflow retry
    text = str(err)
    assert "Prometheus query 'everything'" in text and f"window [{T0.isoformat()}" in text
    assert "6 series" in text and "prometheus.max_series_per_query = 5" in text and "raise" in text
    assert server.requests == 1  # not retried by the hook either


def test_exactly_the_bound_is_accepted(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    server.answer(matrix(5))
    assert len(hook(server, monkeypatch, max_series_per_query=5).query_range("up", T0, T0, 15, query_name="q")) == 5


def test_the_series_bound_holds_over_a_chunked_window(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    # each chunk answers 3 series (within the bound of 4), different ones: the merged answer holds 6
    first = matrix(3)
    second = matrix(3)
    for k, series in enumerate(second["data"]["result"]):
        series["metric"] = {"instance": f"other-{k}:9100"}
    server.answer(first, second)
    prom = hook(server, monkeypatch, max_series_per_query=4)
    with pytest.raises(PrometheusAnswerTooLarge, match=r"6 series.*max_series_per_query = 4"):
        query_range_chunked(prom, "up", T0, T0 + timedelta(minutes=10), 60, query_name="cpu", max_points=6)
    assert server.requests == 2


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_answer_past_the_byte_bound_stops_the_read_and_fails_naming_bytes_and_key(
    server: Server, monkeypatch: pytest.MonkeyPatch, chunked: bool
) -> None:
    big = json.dumps(matrix(40_000)).encode()  # about 3 MB; chunked: 64 times over, about 200 MB
    server.answer(Answer(big, chunked=chunked, repeat=64 if chunked else 1))
    limit = 256 * 1024
    prom = hook(server, monkeypatch, max_response_bytes=limit)
    with pytest.raises(PrometheusAnswerTooLarge) as caught:
        prom.query_range("up", T0, T0 + timedelta(hours=1), 15, query_name="memory")
    text = str(caught.value)
    assert "Prometheus query 'memory'" in text and f"window [{T0.isoformat()}" in text
    assert "prometheus.max_response_bytes = 262,144" in text and "raise prometheus.max_response_bytes" in text
    assert caught.value.seen > limit and isinstance(caught.value, AirflowFailException)
    if chunked:  # no Content-Length: read chunk by chunk, stopped shortly past the bound
        assert caught.value.seen < limit + 2 * (1 << 16) and "the read stopped there" in text
        assert server.sent < 8 * len(big)  # the server could not send it all: the client stopped reading
    else:  # refused on its Content-Length, before reading
        assert caught.value.seen == len(big) and "not read" in text
    assert server.requests == 1


def test_the_byte_bound_counts_decompressed_bytes(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    big = json.dumps(matrix(40_000)).encode()
    server.answer(Answer(big, gzip=True))
    assert len(gzip.compress(big)) < 256 * 1024 < len(big)
    prom = hook(server, monkeypatch, max_response_bytes=256 * 1024)
    with pytest.raises(PrometheusAnswerTooLarge, match="max_response_bytes"):
        prom.query_range("up", T0, T0 + timedelta(hours=1), 15, query_name="memory")


def test_an_answer_within_the_byte_bound_is_read_whole(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    body = json.dumps(matrix(2_000)).encode()
    server.answer(Answer(body, chunked=True))
    prom = hook(server, monkeypatch, max_response_bytes=len(body))
    assert len(prom.query_range("up", T0, T0 + timedelta(hours=1), 15, query_name="q")) == 2_000
    assert prom.bytes_received == len(body)


def test_raw_sample_reads_are_bounded_in_bytes_too(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    server.answer(Answer(json.dumps(matrix(40_000)).encode(), chunked=True))
    prom = hook(server, monkeypatch, max_response_bytes=64 * 1024)
    with pytest.raises(PrometheusAnswerTooLarge, match=r"'cpu \(sample times\)'.*max_response_bytes"):
        prom.raw_samples("node_load1", T0, T0 + timedelta(minutes=5), query_name="cpu (sample times)")
