"""Hooks against tiny real HTTP servers: scripted answers, and a fake MLflow tracking server in memory.

Connections come from ``AIRFLOW_CONN_<ID>`` JSON env vars: outside a task (no SDK supervisor) Airflow
3.3 resolves connections through the env-var backend (plus any configured external backend), which is
what these tests rely on.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import pytest

from modelwatch.errors import AlertmanagerError, MlflowSourceError, PrometheusQueryError, UpstreamUnavailable
from modelwatch.extract import query_range_chunked
from modelwatch.hooks import AlertmanagerHook, ApiHook, MlflowHook, PrometheusHook
from modelwatch.hooks import base as base_module
from modelwatch.hooks.alertmanager import matcher
from modelwatch.hooks.base import parse_retry_after

REPO = Path(__file__).resolve().parents[2]
FAST = {"backoff_base_seconds": 0.01, "backoff_max_seconds": 0.05}
T0 = datetime(2026, 3, 2, tzinfo=UTC)
MATRIX = {
    "status": "success",
    "data": {
        "resultType": "matrix",
        "result": [{"metric": {"instance": "model-a:9100"}, "values": [[1772409600, "0.25"], [1772409615, "0.5"]]}],
    },
}


# -- scripted HTTP server ---------------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    @property
    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode()))

    @property
    def params(self) -> list[tuple[str, str]]:
        return parse_qsl(self.query, keep_blank_values=True)


@dataclass
class Reply:
    status: int = 200
    body: Any = field(default_factory=lambda: MATRIX)
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class ScriptedServer:
    """Answers each request with the next scripted :class:`Reply` (then 200 + MATRIX), recording it."""

    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.seen: list[Seen] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                server.seen.append(Seen(self.command, parts.path, parts.query, dict(self.headers.items()), body))
                reply = server.replies.popleft() if server.replies else Reply()
                if reply.delay:
                    time.sleep(reply.delay)
                if isinstance(reply.body, bytes | str):
                    payload = reply.body.encode() if isinstance(reply.body, str) else reply.body
                    content_type = "text/plain; charset=utf-8"
                else:
                    payload = json.dumps(reply.body).encode()
                    content_type = "application/json"
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", reply.headers.get("Content-Type", content_type))
                    for k, v in reply.headers.items():
                        if k != "Content-Type":
                            self.send_header(k, v)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

            do_GET = do_POST = _handle

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        # shutdown() waits for the serve loop's next poll: a short interval keeps each test's teardown short
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        self.thread.start()

    def script(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    s = ScriptedServer()
    yield s
    s.close()


def set_conn(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields: Any) -> None:
    """Define an Airflow connection the way deployments and the devstack do: a JSON env var."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))


@pytest.fixture
def prom(server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> PrometheusHook:
    set_conn(monkeypatch, "prom_test", conn_type="prometheus", host="127.0.0.1", port=server.port)
    return PrometheusHook("prom_test", **FAST)


def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- connections ------------------------------------------------------------------------------------


def test_env_var_connection_resolves_outside_a_task(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk import BaseHook

    set_conn(monkeypatch, "prom_env", conn_type="prometheus", host="prom.example", port=9090,
             extra={"auth": "bearer"})
    conn = BaseHook.get_connection("prom_env")
    assert (conn.conn_type, conn.host, conn.port, conn.extra_dejson) == (
        "prometheus", "prom.example", 9090, {"auth": "bearer"}
    )


def test_hook_class_attributes() -> None:
    assert (PrometheusHook.conn_name_attr, PrometheusHook.default_conn_name, PrometheusHook.conn_type) == (
        "prometheus_conn_id", "prometheus_default", "prometheus"
    )
    assert (AlertmanagerHook.default_conn_name, AlertmanagerHook.conn_type) == ("alertmanager_default", "alertmanager")
    assert (MlflowHook.default_conn_name, MlflowHook.conn_type, MlflowHook.hook_name) == (
        "mlflow_default", "mlflow", "MLflow"
    )
    assert PrometheusHook().prometheus_conn_id == "prometheus_default"


def test_connection_is_resolved_lazily() -> None:
    from airflow.sdk.exceptions import AirflowNotFoundException

    hook = PrometheusHook("no_such_connection_anywhere")  # no lookup yet
    with pytest.raises(AirflowNotFoundException):
        hook.get_conn()


def test_base_url_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch, "u1", conn_type="prometheus", host="prom.internal", port=9090, schema="https")
    assert PrometheusHook("u1").base_url == "https://prom.internal:9090"
    set_conn(monkeypatch, "u2", conn_type="prometheus", host="prom.internal")
    assert PrometheusHook("u2").base_url == "http://prom.internal"
    amp = "https://aps-workspaces.us-east-1.amazonaws.com/workspaces/ws-123"
    set_conn(monkeypatch, "u3", conn_type="alertmanager", host=amp + "/",
             extra={"path_prefix": "/alertmanager/", "auth": "sigv4", "aws_access_key_id": "AKID",
                    "aws_secret_access_key": "SECRETKEY"})
    hook = AlertmanagerHook("u3")
    assert hook.base_url == amp + "/alertmanager"
    assert hook.get_conn().auth.region == "us-east-1"  # taken from the AMP host name


def test_unknown_auth_mode_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch, "bad_auth", conn_type="prometheus", host="x", extra={"auth": "kerberos"})
    with pytest.raises(Exception, match="kerberos"):
        PrometheusHook("bad_auth").get_conn()


# -- Prometheus ---------------------------------------------------------------------------------------


def test_query_range_posts_form_and_returns_matrix(server: ScriptedServer, prom: PrometheusHook) -> None:
    promql = 'sum by (instance) (rate(http_requests_total{status="5xx"}[1m]))'
    result = prom.query_range(promql, T0, T0 + timedelta(minutes=1), 15, query_name="errors")
    assert result == MATRIX["data"]["result"]
    (req,) = server.seen
    assert (req.method, req.path) == ("POST", "/api/v1/query_range")
    assert req.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert req.form == {"query": promql, "start": "1772409600.000", "end": "1772409660.000", "step": "15.000"}
    assert prom.requests_made == 1
    assert prom.bytes_received == len(json.dumps(MATRIX))


def test_retries_503_then_succeeds(server: ScriptedServer, prom: PrometheusHook) -> None:
    server.script(Reply(503, {"status": "error", "errorType": "timeout", "error": "query timed out"}))
    assert prom.query_range("up", T0, T0, 15, query_name="up") == MATRIX["data"]["result"]
    assert len(server.seen) == 2
    assert prom.requests_made == 2


def test_503_timeout_exhausts_retries(server: ScriptedServer, prom: PrometheusHook) -> None:
    err = {"status": "error", "errorType": "timeout", "error": "query timed out in expression evaluation"}
    server.script(*[Reply(503, err)] * base_module.MAX_ATTEMPTS)
    with pytest.raises(PrometheusQueryError) as info:
        prom.query_range("up", T0, T0, 15, query_name="up")
    assert len(server.seen) == base_module.MAX_ATTEMPTS == 4
    assert (info.value.status, info.value.error_type) == (503, "timeout")
    assert "query timed out in expression evaluation" in str(info.value)


def test_429_honours_retry_after(server: ScriptedServer, prom: PrometheusHook) -> None:
    server.script(Reply(429, "slow down", {"Retry-After": "1"}))
    slept: list[float] = []
    prom._sleep = slept.append  # the hook's one way to wait; the real wait is timed in test_faults_sources.py
    prom.query_range("up", T0, T0, 15, query_name="up")
    assert slept == [1.0], f"the hook waited {slept} s between its attempts, not the 1 s Retry-After asks"
    assert len(server.seen) == 2  # the backoff alone would have been 0.01 s


@pytest.mark.parametrize(
    ("status", "error_type", "text"),
    [
        (400, "bad_data", 'invalid parameter "query": 1:5: parse error: unexpected end of input'),
        (422, "execution", "expanding series: query processing would load too many samples"),
    ],
)
def test_query_errors_are_not_retried_and_name_everything(
    server: ScriptedServer, prom: PrometheusHook, status: int, error_type: str, text: str
) -> None:
    server.script(Reply(status, {"status": "error", "errorType": error_type, "error": text}))
    promql = "rate(node_cpu_seconds_total["
    with pytest.raises(PrometheusQueryError) as info:
        prom.query_range(promql, T0, T0, 15, query_name="cpu")
    assert len(server.seen) == 1
    err = info.value
    assert (err.query_name, err.promql, err.status, err.error_type, err.error) == ("cpu", promql, status, error_type, text)
    message = str(err)
    for part in ("'cpu'", promql, error_type, text, f"http://127.0.0.1:{server.port}"):
        assert part in message


def test_non_json_body_is_a_query_error(server: ScriptedServer, prom: PrometheusHook) -> None:
    server.script(Reply(200, "<html>502 proxy says hello</html>", {"Content-Type": "text/html"}))
    with pytest.raises(PrometheusQueryError) as info:
        prom.query_range("up", T0, T0, 15, query_name="up")
    assert info.value.error_type == "bad_response"
    assert "text/html" in str(info.value) and "proxy says hello" in str(info.value)


def test_non_matrix_result_is_a_query_error(server: ScriptedServer, prom: PrometheusHook) -> None:
    server.script(Reply(200, {"status": "success", "data": {"resultType": "vector", "result": []}}))
    with pytest.raises(PrometheusQueryError, match="matrix"):
        prom.query_range("up", T0, T0, 15, query_name="up")


def test_query_range_chunked_splits_and_merges(server: ScriptedServer, prom: PrometheusHook) -> None:
    def answer(start: int, end: int) -> Reply:
        values = [[t, str(t)] for t in range(start, end + 1, 15)]
        return Reply(200, {"status": "success", "data": {"resultType": "matrix",
                                                          "result": [{"metric": {"a": "1"}, "values": values}]}})

    base = 1772409600
    # 10 points at 15 s, at most 4 per request: 4 + 4 + 2
    server.script(answer(base, base + 45), answer(base + 60, base + 105), answer(base + 120, base + 135))
    result = query_range_chunked(prom, "up", T0, T0 + timedelta(seconds=135), 15, query_name="up", max_points=4)
    assert [r.form["start"] for r in server.seen] == ["1772409600.000", "1772409660.000", "1772409720.000"]
    assert [r.form["end"] for r in server.seen] == ["1772409645.000", "1772409705.000", "1772409735.000"]
    assert [v[0] for v in result[0]["values"]] == list(range(base, base + 136, 15))


def test_connection_refused_raises_upstream_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    port = closed_port()
    set_conn(monkeypatch, "prom_down", conn_type="prometheus", host="127.0.0.1", port=port,
             login="admin", password="hunter2-secret", extra={"auth": "basic"})
    hook = PrometheusHook("prom_down", **FAST)
    with pytest.raises(UpstreamUnavailable) as info:
        hook.query_range("up", T0, T0, 15, query_name="up")
    err = info.value
    assert err.attempts == 4 and hook.requests_made == 4
    assert err.server == f"http://127.0.0.1:{port}" and err.path == "/api/v1/query_range"
    assert "hunter2-secret" not in str(err) and "ConnectionError" in str(err)


def test_read_timeout_is_retried(server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch, "prom_slow", conn_type="prometheus", host="127.0.0.1", port=server.port,
             extra={"timeout": 0.2})
    server.script(Reply(delay=0.6))
    hook = PrometheusHook("prom_slow", **FAST)
    assert hook.query_range("up", T0, T0, 15, query_name="up") == MATRIX["data"]["result"]
    assert hook.requests_made == 2


# -- auth ---------------------------------------------------------------------------------------------


def test_bearer_token_header_and_redaction(server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    token = "tok-3f9a8b7c6d5e"
    set_conn(monkeypatch, "prom_bearer", conn_type="prometheus", host="127.0.0.1", port=server.port,
             password=token, extra={"auth": "bearer"})
    hook = PrometheusHook("prom_bearer", **FAST)
    hook.query_range("up", T0, T0, 15, query_name="up")
    assert server.seen[0].headers["Authorization"] == f"Bearer {token}"
    # A proxy that echoes the request into its error page must not get the token into our messages.
    server.script(Reply(400, f"bad request; Authorization: Bearer {token}"))
    with pytest.raises(PrometheusQueryError) as info:
        hook.query_range("up", T0, T0, 15, query_name="up")
    assert token not in str(info.value) and "***" in str(info.value)


def test_basic_auth_header(server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch, "am_basic", conn_type="alertmanager", host="127.0.0.1", port=server.port,
             login="watcher", password="pa55-word-xyz", extra={"auth": "basic"})
    server.script(Reply(200, []))
    AlertmanagerHook("am_basic", **FAST).get_alerts()
    expected = base64.b64encode(b"watcher:pa55-word-xyz").decode()
    assert server.seen[0].headers["Authorization"] == f"Basic {expected}"


def test_no_auth_by_default(server: ScriptedServer, prom: PrometheusHook) -> None:
    prom.query_range("up", T0, T0, 15, query_name="up")
    assert "Authorization" not in server.seen[0].headers


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def verify_sigv4(seen: Seen, host: str, secret: str) -> dict[str, str]:
    """Check a request's SigV4 signature the way AWS does (independently of botocore)."""
    auth = seen.headers["Authorization"]
    algorithm, _, rest = auth.partition(" ")
    assert algorithm == "AWS4-HMAC-SHA256"
    fields = dict(part.strip().split("=", 1) for part in rest.split(","))
    _key_id, date, region, service, terminator = fields["Credential"].split("/")
    signed = fields["SignedHeaders"].split(";")
    headers = {k.lower(): v for k, v in seen.headers.items()}
    headers["host"] = host
    query = sorted(
        (quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in parse_qsl(seen.query, keep_blank_values=True)
    )
    canonical = "\n".join([
        seen.method,
        quote(seen.path, safe="/-_.~"),
        "&".join(f"{k}={v}" for k, v in query),
        "".join(f"{h}:{' '.join(headers[h].split())}\n" for h in signed),
        ";".join(signed),
        hashlib.sha256(seen.body).hexdigest(),
    ])
    amz_date = headers["x-amz-date"]
    scope = f"{date}/{region}/{service}/{terminator}"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(f"AWS4{secret}".encode(), date), region), service), "aws4_request")
    assert hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest() == fields["Signature"]
    return {"region": region, "service": service, "signed": fields["SignedHeaders"]}


def test_sigv4_signs_with_service_aps(server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    set_conn(monkeypatch, "amp_test", conn_type="prometheus", host="127.0.0.1", port=server.port,
             extra={"auth": "sigv4", "region": "eu-west-1", "aws_access_key_id": "AKIDEXAMPLE",
                    "aws_secret_access_key": secret, "aws_session_token": "SESSION-TOKEN-123"})
    hook = PrometheusHook("amp_test", **FAST)
    hook.query_range('up{job="node"}', T0, T0, 15, query_name="up")
    seen = server.seen[0]
    assert seen.headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "X-Amz-Date" in seen.headers and seen.headers["X-Amz-Security-Token"] == "SESSION-TOKEN-123"
    got = verify_sigv4(seen, f"127.0.0.1:{server.port}", secret)
    assert (got["region"], got["service"]) == ("eu-west-1", "aps")
    assert secret not in json.dumps(seen.headers)
    # a GET whose query has spaces and quotes (Alertmanager matchers) must verify too
    set_conn(monkeypatch, "amp_am", conn_type="alertmanager", host="127.0.0.1", port=server.port,
             extra={"auth": "sigv4", "region": "eu-west-1", "sigv4_service": "custom",
                    "aws_access_key_id": "AKIDEXAMPLE", "aws_secret_access_key": secret})
    server.script(Reply(200, []))
    AlertmanagerHook("amp_am", **FAST).get_alerts({"model": 'fraud detector "v3"'})
    got = verify_sigv4(server.seen[1], f"127.0.0.1:{server.port}", secret)
    assert got["service"] == "custom"
    assert "+" not in server.seen[1].query


def test_sigv4_error_messages_hold_no_secret(server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "SuperSecretAwsKey0123456789"
    set_conn(monkeypatch, "amp_err", conn_type="prometheus", host="127.0.0.1", port=server.port,
             extra={"auth": "sigv4", "region": "us-east-1", "aws_access_key_id": "AKID",
                    "aws_secret_access_key": secret})
    server.script(Reply(403, f"signature mismatch for secret {secret}"))
    with pytest.raises(PrometheusQueryError) as info:
        PrometheusHook("amp_err", **FAST).query_range("up", T0, T0, 15, query_name="up")
    assert secret not in str(info.value) and info.value.status == 403


# -- redaction of every exception text (issue 20 item 4) ---------------------------------------------------


def _no_chain(exc: BaseException) -> bool:
    """No exception of the HTTP stack (whose text or request held the secret) is chained behind ``exc``: any
    cause or context is one of ours, itself clean."""
    import requests

    link: BaseException | None = exc
    while link is not None:
        if isinstance(link, requests.RequestException) or not isinstance(link, Exception):
            return False
        if link is not exc and not link.__class__.__module__.startswith("modelwatch"):
            return False
        link = link.__cause__ or link.__context__
    return True


def _warnings(capfd: pytest.CaptureFixture[str]) -> str:
    """What the hooks logged (Airflow's structlog writes to the process's stderr/stdout, not to caplog)."""
    out, err = capfd.readouterr()
    return out + err


def test_bearer_token_with_trailing_newline_is_sent_stripped(
    server: ScriptedServer, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    # before: requests raised InvalidHeader("... header value: 'Bearer tok-...\n'"), token and all, to the task
    token = "tok-nl-5e1f2a9c"
    set_conn(monkeypatch, "prom_nl", conn_type="prometheus", host="127.0.0.1", port=server.port,
             password=f"  {token}\n", extra={"auth": "bearer"})
    hook = PrometheusHook("prom_nl", **FAST)
    capfd.readouterr()
    hook.query_range("up", T0, T0, 15, query_name="up")
    assert server.seen[0].headers["Authorization"] == f"Bearer {token}"
    logged = _warnings(capfd)
    assert "'prom_nl'" in logged and "password" in logged and "newline" in logged and token not in logged
    # both forms are secrets: an echo of either is redacted
    server.script(Reply(400, f"bad: Authorization: Bearer {token} / raw {token}\n"))
    with pytest.raises(PrometheusQueryError) as info:
        hook.query_range("up", T0, T0, 15, query_name="up")
    assert token not in str(info.value) and "***" in str(info.value)


def test_mlflow_token_with_trailing_newline_is_sent_stripped(
    server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_conn(monkeypatch, "mlf_nl", conn_type="mlflow", host="127.0.0.1", port=server.port,
             password="mlf-tok-77aa\n", extra={"max_retries": 0})
    server.script(Reply(body={"runs": []}))
    assert MlflowHook("mlf_nl").search_runs_json(["7"], 0, 2000) == []
    assert server.seen[0].headers["Authorization"] == "Bearer mlf-tok-77aa"


@pytest.mark.parametrize("hook_cls, extra", [(PrometheusHook, {"auth": "bearer"}), (MlflowHook, {"max_retries": 0})])
def test_bearer_token_with_an_inner_newline_names_connection_and_field(
    hook_cls: type[ApiHook], extra: dict[str, Any], server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from modelwatch.hooks.base import ConnectionMisconfigured

    set_conn(monkeypatch, "inner_nl", conn_type="prometheus", host="127.0.0.1", port=server.port,
             password="tokpartone\ntokparttwo", extra=extra)
    with pytest.raises(ConnectionMisconfigured) as info:
        hook_cls("inner_nl").get_conn()
    message = str(info.value)
    assert "connection 'inner_nl'" in message and "bearer token (field password" in message and "newline" in message
    assert "tokpartone" not in message and "tokparttwo" not in message
    assert isinstance(info.value, AirflowFailException) and _no_chain(info.value)
    assert server.seen == []  # nothing was sent


def test_basic_password_with_whitespace_is_sent_as_given_and_every_form_redacted(
    server: ScriptedServer, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    raw, stripped = " pw-space-8c3d\n", "pw-space-8c3d"
    set_conn(monkeypatch, "am_ws", conn_type="alertmanager", host="127.0.0.1", port=server.port,
             login="watcher", password=raw, extra={"auth": "basic"})
    b64_raw = base64.b64encode(f"watcher:{raw}".encode()).decode()
    b64_stripped = base64.b64encode(f"watcher:{stripped}".encode()).decode()
    server.script(Reply(400, f"no: {b64_raw} {b64_stripped} {stripped} {quote(raw)}"))
    hook = AlertmanagerHook("am_ws", **FAST)
    capfd.readouterr()
    with pytest.raises(AlertmanagerError) as info:
        hook.post_alerts([{"labels": {"alertname": "x"}}])
    assert server.seen[0].headers["Authorization"] == f"Basic {b64_raw}"
    message = str(info.value)
    for form in (b64_raw, b64_stripped, stripped, quote(raw), "cy1zcGFjZS"):
        assert form not in message, form
    logged = _warnings(capfd)
    assert "'am_ws'" in logged and "whitespace" in logged and stripped not in logged


def test_strip_userinfo_goes_to_the_last_at_of_the_authority() -> None:
    strip = base_module._strip_userinfo
    assert strip("http://user:p@ss@host:9090/api") == "http://host:9090/api"
    assert strip("https://u:a@b@c@prom.example/x?y=1@2") == "https://prom.example/x?y=1@2"
    assert strip("http://host:9090/path/with@at") == "http://host:9090/path/with@at"
    assert strip("see http://a:b@h1/ and http://c:d@e@h2/") == "see http://h1/ and http://h2/"


def test_redact_text_hides_any_authorization_credential_and_userinfo() -> None:
    text = ("headers {'Authorization': 'Bearer abc.def-ghi', 'authorization': 'basic dXNlcjpwYXNz'} "
            "from http://user:p@ss@host:9090/x and Authorization%3A+Bearer%20zzz999")
    out = base_module.redact_text(text, [])
    for leaked in ("abc.def-ghi", "dXNlcjpwYXNz", "p@ss", "ss@host", "zzz999", "user:"):
        assert leaked not in out, (leaked, out)
    assert "Bearer ***" in out and "//***@host:9090/x" in out


@pytest.mark.parametrize("password", ["p@ss-9z1x", "p%40ss-9z1x"])
def test_password_with_at_in_the_host_url(password: str, server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # before: the base URL in messages kept "ss-9z1x@127.0.0.1", and the echoed basic credential leaked
    set_conn(monkeypatch, "prom_at", conn_type="prometheus", host=f"http://user:{password}@127.0.0.1:{server.port}")
    hook = PrometheusHook("prom_at", **FAST)
    assert hook.base_url == f"http://127.0.0.1:{server.port}"
    sent = base64.b64encode(b"user:p@ss-9z1x").decode()
    server.script(Reply(400, f"bad request from user:{password} with Authorization {sent} via {quote(password)}"))
    with pytest.raises(PrometheusQueryError) as info:
        hook.query_range("up", T0, T0, 15, query_name="up")
    assert server.seen[0].headers["Authorization"] == f"Basic {sent}"  # requests sends the URL's userinfo
    message = str(info.value)
    assert "9z1x" not in message and sent not in message and f"http://127.0.0.1:{server.port}" in message


def test_password_with_at_in_the_host_url_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    port = closed_port()
    set_conn(monkeypatch, "prom_at_down", conn_type="prometheus", host=f"http://user:p@ss-4q7w@127.0.0.1:{port}")
    with pytest.raises(UpstreamUnavailable) as info:
        PrometheusHook("prom_at_down", **FAST).query_range("up", T0, T0, 15, query_name="up")
    assert "4q7w" not in str(info.value) and f"http://127.0.0.1:{port}" in str(info.value)
    assert _no_chain(info.value)


def test_password_with_at_and_slash_in_the_password_field_is_redacted_url_encoded(
    server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = "p@ss/wd-61kk"
    set_conn(monkeypatch, "mlf_at", conn_type="mlflow", host="127.0.0.1", port=server.port, login="bob",
             password=password, extra={"max_retries": 0})
    server.script(Reply(403, {"error_code": "PERMISSION_DENIED",
                              "message": f"denied {quote(password, safe='')} {quote(password)} {password}"}))
    with pytest.raises(MlflowSourceError) as info:
        MlflowHook("mlf_at").search_runs_json(["7"], 0, 2000, experiment="fraud")
    assert "61kk" not in str(info.value) and "***" in str(info.value)


def test_any_exception_of_the_http_stack_is_redacted_and_not_chained(
    server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import requests

    from modelwatch.hooks.base import ConnectionMisconfigured, HookRequestError

    token = "tok-stack-0b9d"
    set_conn(monkeypatch, "prom_stack", conn_type="prometheus", host="127.0.0.1", port=server.port,
             password=token, extra={"auth": "bearer"})
    hook = PrometheusHook("prom_stack", **FAST)
    session = hook.get_conn()
    for raised, expected in (
        (requests.exceptions.InvalidHeader(f"bad header value: 'Bearer {token}\\n'"), ConnectionMisconfigured),
        (requests.exceptions.InvalidURL(f"Failed to parse: http://u:{token}@h"), ConnectionMisconfigured),
        (requests.ConnectionError(f"reset while sending Bearer {token}"), UpstreamUnavailable),
        (RuntimeError(f"something else entirely: {token}"), HookRequestError),
    ):
        monkeypatch.setattr(session, "request", lambda *a, _e=raised, **k: (_ for _ in ()).throw(_e))
        with pytest.raises(expected) as info:
            hook.query_range("up", T0, T0, 15, query_name="up")
        assert token not in str(info.value) and "***" in str(info.value), str(info.value)
        assert _no_chain(info.value), type(raised)
        if expected is ConnectionMisconfigured:
            assert "connection 'prom_stack'" in str(info.value)


def test_every_public_hook_method_raises_only_redacted_exceptions(monkeypatch: pytest.MonkeyPatch) -> None:
    from modelwatch.errors import PushgatewayError
    from modelwatch.hooks import PushgatewayHook

    secret = "pgw-secret-3a3a"

    class Leaky(PushgatewayHook):
        def groups(self) -> list[dict[str, Any]]:  # a message built without redact()
            raise PushgatewayError(500, f"echo Basic {secret}", server="http://h", path="/p")

        def other(self) -> None:
            try:
                raise ValueError(f"inner {secret}")
            except ValueError:
                raise KeyError("outer, chaining the inner") from None

    set_conn(monkeypatch, "pgw_leak", conn_type="pushgateway", host="127.0.0.1", port=1,
             login="u", password=secret, extra={"auth": "basic"})
    hook = Leaky("pgw_leak")
    hook.get_conn()  # every real method resolves the connection first: that is when its secrets are known
    with pytest.raises(PushgatewayError) as info:
        hook.groups()
    assert secret not in str(info.value) and secret not in info.value.body and info.value.status == 500
    assert _no_chain(info.value)
    with pytest.raises(KeyError) as chained:
        hook.other()
    assert chained.value.__context__ is None  # the inner exception with the secret is dropped


def test_derived_secrets_are_registered_with_airflows_masker(
    server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.sdk._shared.secrets_masker import redact

    raw = "mask-pass-5d6e\n"
    set_conn(monkeypatch, "am_mask", conn_type="alertmanager", host="127.0.0.1", port=server.port,
             login="watcher", password=raw, extra={"auth": "basic"})
    AlertmanagerHook("am_mask").get_conn()
    b64 = base64.b64encode(f"watcher:{raw}".encode()).decode()
    b64_stripped = base64.b64encode(b"watcher:mask-pass-5d6e").decode()
    line = f"a {b64} b {b64_stripped} c mask-pass-5d6e d"
    assert "5d6e" not in redact(line) and b64 not in redact(line) and b64_stripped not in redact(line)


def test_cloudwatch_errors_hold_no_aws_secret() -> None:
    from botocore.exceptions import ClientError

    from modelwatch.errors import CloudWatchError
    from modelwatch.hooks import CloudWatchHook

    secret = "cw-secret-key/+9q8w"

    class Client:
        meta = SimpleNamespace(region_name="us-east-1", endpoint_url="http://127.0.0.1:1")
        _request_signer = SimpleNamespace(_credentials=SimpleNamespace(
            get_frozen_credentials=lambda: SimpleNamespace(secret_key=secret, token=None)))

        def get_metric_data(self, **kwargs: Any) -> Any:
            raise ClientError({"Error": {"Code": "Throttling", "Message": f"slow down, {secret}"}}, "GetMetricData")

    hook = CloudWatchHook()
    hook._client = Client()
    with pytest.raises(CloudWatchError) as info:
        hook.get_metric_data([{"Id": "a"}], T0, T0 + timedelta(hours=1))
    assert secret not in str(info.value) and "***" in str(info.value) and _no_chain(info.value)


# -- Alertmanager -------------------------------------------------------------------------------------


ALERT = {"labels": {"alertname": "ModelPredictionsDegraded", "model": "fraud-detector"},
         "annotations": {"summary": "slow"}}


@pytest.fixture
def am(server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> AlertmanagerHook:
    set_conn(monkeypatch, "am_test", conn_type="alertmanager", host="127.0.0.1", port=server.port)
    return AlertmanagerHook("am_test", **FAST)


def test_post_alerts(server: ScriptedServer, am: AlertmanagerHook) -> None:
    server.script(Reply(200, ""))
    am.post_alerts([ALERT])
    (req,) = server.seen
    assert (req.method, req.path) == ("POST", "/api/v2/alerts")
    assert json.loads(req.body) == [ALERT]


def test_post_nothing_sends_nothing(server: ScriptedServer, am: AlertmanagerHook) -> None:
    am.post_alerts([])
    assert server.seen == []


def test_post_alerts_4xx_not_retried(server: ScriptedServer, am: AlertmanagerHook) -> None:
    server.script(Reply(400, {"code": 602, "message": "0.labels in body is required"}))
    with pytest.raises(AlertmanagerError) as info:
        am.post_alerts([{"annotations": {}}])
    assert len(server.seen) == 1
    assert info.value.status == 400 and "0.labels in body is required" in info.value.body
    assert "0.labels in body is required" in str(info.value)


def test_post_alerts_5xx_retried_then_error(server: ScriptedServer, am: AlertmanagerHook) -> None:
    server.script(*[Reply(500, "boom")] * 4)
    with pytest.raises(AlertmanagerError) as info:
        am.post_alerts([ALERT])
    assert len(server.seen) == 4 and info.value.status == 500 and info.value.body == "boom"


def test_get_alerts_filters(server: ScriptedServer, am: AlertmanagerHook) -> None:
    server.script(Reply(200, [ALERT]))
    assert am.get_alerts({"model": "fraud-detector", "alertname": "ModelPredictionsDegraded"}) == [ALERT]
    (req,) = server.seen
    assert (req.method, req.path) == ("GET", "/api/v2/alerts")
    assert req.params == [("active", "true"), ("filter", 'alertname="ModelPredictionsDegraded"'),
                          ("filter", 'model="fraud-detector"')]


def test_matcher_escapes() -> None:
    assert matcher("a", 'x"y\\z') == 'a="x\\"y\\\\z"'
    assert matcher("a", "plain") == 'a="plain"'


# -- retry policy pieces ------------------------------------------------------------------------------


def test_retry_constants() -> None:
    assert base_module.MAX_ATTEMPTS == 4
    assert {408, 429, 500, 502, 503, 504} <= base_module.RETRY_STATUSES
    assert not {400, 401, 403, 404, 422} & base_module.RETRY_STATUSES


def test_parse_retry_after() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= parse_retry_after(later) <= 31  # type: ignore[operator]


def test_backoff_is_exponential_and_capped() -> None:
    hook = ApiHook("x", backoff_base_seconds=1, backoff_max_seconds=5)
    assert [hook._backoff(a, None) for a in (1, 2, 3, 4, 5)] == [1, 2, 4, 5, 5]
    assert hook._backoff(1, "3") == 3
    assert hook._backoff(1, "100000") == base_module.RETRY_AFTER_MAX_SECONDS


def test_hook_modules_import_no_heavy_libraries(fresh_imports: dict[str, Any]) -> None:
    # in a fresh interpreter (tests/fresh_imports.py): importing modelwatch.hooks and modelwatch.extract
    heavy = [m for m in ("pandas", "mlflow", "boto3", "botocore") if m in fresh_imports["hook_modules"]]
    assert not heavy, heavy


# -- MLflow -------------------------------------------------------------------------------------------


class FakeMlflowServer:
    """An MLflow tracking server in memory, answering the REST endpoints :class:`MlflowHook` uses the way
    MLflow 3.17 answers them (JSON shapes and field names, offset page tokens, ``RESOURCE_DOES_NOT_EXIST``
    with HTTP 404 for an unknown experiment, run or file). Records every request, and the process's
    ``MLFLOW_*`` environment variables at the moment the request arrived (the server runs in the test's
    process, so a hook that changed ``os.environ`` for a call would show here)."""

    def __init__(self) -> None:
        self.experiments: dict[str, dict[str, Any]] = {}
        self.runs: list[dict[str, Any]] = []
        self.histories: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.artifacts: dict[tuple[str, str], bytes] = {}
        #: files of the artifact proxy (``mlflow-artifacts:/<path>``), by path
        self.proxied: dict[str, bytes] = {}
        self.failures: deque[Reply] = deque()
        self.seen: list[Seen] = []
        self.env_at_request: list[dict[str, str]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                import os

                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                with server.lock:
                    server.seen.append(Seen(self.command, parts.path, parts.query, dict(self.headers.items()), body))
                    server.env_at_request.append({k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")})
                    failure = server.failures.popleft() if server.failures else None
                if failure is not None:
                    status, payload, ctype = failure.status, json.dumps(failure.body).encode(), "application/json"
                else:
                    status, payload, ctype = server.answer(self.command, parts.path, dict(parse_qsl(parts.query)), body)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _handle

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- content ----------------------------------------------------------------------------------------
    def experiment(self, name: str, stage: str = "active") -> str:
        exp_id = str(len(self.experiments) + 1)
        self.experiments[name] = {"experiment_id": exp_id, "name": name, "lifecycle_stage": stage}
        return exp_id

    def run(self, exp_id: str, run_id: str, start: int, end: int | None = None, *, status: str = "FINISHED",
            tags: dict[str, str] | None = None, metrics: dict[str, float] | None = None,
            artifact_uri: str | None = None) -> dict[str, Any]:  # fmt: skip
        info: dict[str, Any] = {"run_uuid": run_id, "run_id": run_id, "experiment_id": exp_id, "status": status,
                                "start_time": start, "lifecycle_stage": "active",
                                "artifact_uri": artifact_uri or f"/srv/mlflow/artifacts/{exp_id}/{run_id}/artifacts"}  # fmt: skip
        if end is not None:
            info["end_time"] = end
        data: dict[str, Any] = {}
        if metrics:
            data["metrics"] = [{"key": k, "value": v, "timestamp": start, "step": 0} for k, v in metrics.items()]
        if tags:
            data["tags"] = [{"key": k, "value": v} for k, v in tags.items()]
        run = {"info": info, "data": data}
        self.runs.append(run)
        return run

    # -- answers ----------------------------------------------------------------------------------------
    @staticmethod
    def _missing(message: str) -> tuple[int, bytes, str]:
        return 404, json.dumps({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": message}).encode(), "application/json"

    @staticmethod
    def _matches(info: dict[str, Any], flt: str) -> bool:
        for cond in flt.split(" AND "):
            field_, op, value = cond.removeprefix("attributes.").split(" ", 2)
            have = info.get(field_)
            if have is None:
                return False
            want: Any = value.strip("'") if field_ == "status" else int(value)
            if not {">=": have >= want, "<": have < want, "=": have == want}[op]:
                return False
        return True

    @staticmethod
    def _page(items: list[Any], size: int, token: str | None) -> tuple[list[Any], str | None]:
        offset = int(token or 0)
        more = offset + size < len(items)
        return items[offset: offset + size], str(offset + size) if more else None

    def answer(self, method: str, path: str, params: dict[str, str], body: bytes) -> tuple[int, bytes, str]:
        out: dict[str, Any] = {}
        if path == "/api/2.0/mlflow/experiments/get-by-name":
            exp = self.experiments.get(params["experiment_name"])
            if exp is None:
                return self._missing(f"Could not find experiment with name '{params['experiment_name']}'")
            out = {"experiment": exp}
        elif path == "/api/2.0/mlflow/experiments/search":
            out = {"experiments": list(self.experiments.values())[: int(params.get("max_results", 1000))]}
        elif path == "/api/2.0/mlflow/runs/search" and method == "POST":
            req = json.loads(body)
            found = [r for r in self.runs
                     if r["info"]["experiment_id"] in req["experiment_ids"] and self._matches(r["info"], req["filter"])]
            found.sort(key=lambda r: (r["info"]["start_time"], r["info"]["run_id"]))
            page, token = self._page(found, req["max_results"], req.get("page_token"))
            out = {**({"runs": page} if page else {}), **({"next_page_token": token} if token else {})}
        elif path == "/api/2.0/mlflow/metrics/get-history":
            points = self.histories.get((params["run_id"], params["metric_key"]), [])
            page, token = self._page(points, int(params["max_results"]), params.get("page_token"))
            out = {**({"metrics": page} if page else {}), **({"next_page_token": token} if token else {})}
        elif path == "/api/2.0/mlflow/artifacts/list":
            folder = params.get("path", "")
            files = [{"path": p, "is_dir": False, "file_size": len(b)} for (rid, p), b in self.artifacts.items()
                     if rid == params["run_id"] and (p.rsplit("/", 1)[0] if "/" in p else "") == folder]
            out = {"root_uri": f"/artifacts/{params['run_id']}", **({"files": files} if files else {})}
        elif path.startswith("/api/2.0/mlflow-artifacts/artifacts/"):
            where = unquote(path.removeprefix("/api/2.0/mlflow-artifacts/artifacts/"))
            if where not in self.proxied:
                return self._missing(f"No such artifact: '{where}'")
            return 200, self.proxied[where], "application/octet-stream"
        elif path == "/get-artifact":
            data = self.artifacts.get((params["run_uuid"], params["path"]))
            if data is None:
                return self._missing(f"No such artifact: '{params['path']}'")
            return 200, data, "application/octet-stream"
        else:
            return 404, b"<html>not found</html>", "text/html"
        return 200, json.dumps(out).encode(), "application/json"


@pytest.fixture
def mlflow_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeMlflowServer]:
    """A fake MLflow server; connection ``mlf`` points at it (no credentials, fast retries)."""
    s = FakeMlflowServer()
    set_conn(monkeypatch, "mlf", conn_type="mlflow", host="127.0.0.1", port=s.port,
             extra={"max_retries": 2, "backoff_factor": 0, "timeout": 5})
    yield s
    s.close()


def parquet_bytes(table: Any) -> bytes:
    import io

    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def test_mlflow_tracking_uri_and_lazy_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    hook = MlflowHook("no_such_mlflow_connection_anywhere")  # no lookup, no request yet
    assert hook.mlflow_conn_id == "no_such_mlflow_connection_anywhere" and hook.requests_made == 0
    set_conn(monkeypatch, "mlf", conn_type="mlflow", host="127.0.0.1", port=15000)
    assert MlflowHook("mlf").tracking_uri == "http://127.0.0.1:15000"
    set_conn(monkeypatch, "mlf2", conn_type="mlflow", host="https://mlflow.example/tracking/")
    assert MlflowHook("mlf2").tracking_uri == "https://mlflow.example/tracking"
    set_conn(monkeypatch, "mlf3", conn_type="mlflow", host="https://bob:pw@mlflow.example")
    assert MlflowHook("mlf3").tracking_uri == "https://mlflow.example"  # credentials never in messages
    set_conn(monkeypatch, "mlf4", conn_type="mlflow", host=" ")
    with pytest.raises(MlflowSourceError, match="connection 'mlf4'.*no host"):
        MlflowHook("mlf4").get_conn()


def _extract_every_layout(server: FakeMlflowServer) -> Any:
    """extract_predictions over one experiment of each layout, every hook call used once at least."""
    import pyarrow as pa

    from modelwatch.extract import extract_predictions

    tags = {"model": "m", "model_version": "1", "instance": "model-a:8000"}
    per_run = server.experiment("per-run")
    for i in range(3):
        server.run(per_run, f"p{i}", 1000 + i, 1001 + i, tags=tags, metrics={"prediction_time": 0.1 * i})
    history = server.experiment("history")
    server.run(history, "h0", 900, 2500, tags=tags)
    server.histories[("h0", "prediction_time")] = [{"key": "prediction_time", "value": 0.5, "timestamp": 1100 + i,
                                                    "step": i} for i in range(3)]  # fmt: skip
    batches = server.experiment("batches")
    server.run(batches, "b0", 1000, 1200, tags=tags)
    server.artifacts[("b0", "predictions.parquet")] = parquet_bytes(
        pa.table({"timestamp": pa.array([1100, 1150], pa.int64()), "prediction_time": [0.2, 0.3]})
    )
    server.run(batches, "b1", 1300, status="RUNNING", tags=tags)  # being written: listed, skipped
    experiments = [SimpleNamespace(name="per-run", layout="run_per_prediction"),
                   SimpleNamespace(name="history", layout="metric_history"),
                   SimpleNamespace(name="batches", layout="batch_table")]  # fmt: skip
    start, end = datetime(1970, 1, 1, tzinfo=UTC), datetime(1970, 1, 1, 0, 0, 2, tzinfo=UTC)
    return extract_predictions(MlflowHook("mlf"), experiments, None, start, end, 2)


@pytest.mark.parametrize("auth", ["basic", "token"])
def test_mlflow_never_touches_os_environ_nor_imports_mlflow(
    mlflow_server: FakeMlflowServer, monkeypatch: pytest.MonkeyPatch, auth: str
) -> None:
    import os

    # an ambient token of someone else's must neither be used nor disturbed
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "ambient-token")
    login = {"login": "bob"} if auth == "basic" else {}
    set_conn(monkeypatch, "mlf", conn_type="mlflow", host="127.0.0.1", port=mlflow_server.port, password="s3cret-42",
             extra={"max_retries": 0}, **login)  # fmt: skip
    for name in [m for m in sys.modules if m == "mlflow" or m.startswith("mlflow.")]:
        monkeypatch.setitem(sys.modules, name, None)  # any `import mlflow...` now raises ImportError
    monkeypatch.setitem(sys.modules, "mlflow", None)
    before = dict(os.environ)
    frame = _extract_every_layout(mlflow_server)
    assert dict(os.environ) == before  # the whole extraction: nothing set, changed or removed, ...
    assert all(env == {"MLFLOW_TRACKING_TOKEN": "ambient-token"} for env in mlflow_server.env_at_request)  # ... ever
    assert frame.groupby("experiment").size().to_dict() == {"per-run": 3, "history": 3, "batches": 2}
    paths = {s.path for s in mlflow_server.seen}
    assert paths == {"/api/2.0/mlflow/experiments/get-by-name", "/api/2.0/mlflow/runs/search",
                     "/api/2.0/mlflow/metrics/get-history", "/api/2.0/mlflow/artifacts/list", "/get-artifact"}
    expected = f"Basic {base64.b64encode(b'bob:s3cret-42').decode()}" if auth == "basic" else "Bearer s3cret-42"
    assert {s.headers.get("Authorization") for s in mlflow_server.seen} == {expected}


def test_mlflow_rest_retry_policy_follows_the_connection_extras(monkeypatch: pytest.MonkeyPatch) -> None:
    from modelwatch.hooks import mlflow as mlflow_module

    set_conn(monkeypatch, "mlf_x", conn_type="mlflow", host="127.0.0.1", port=1,
             extra={"max_retries": 2, "backoff_factor": 0.5, "timeout": 2.5, "insecure_tls": "true"})
    hook = MlflowHook("mlf_x")
    assert hook.get_conn().verify is False and hook.base_url == "http://127.0.0.1:1"
    assert (hook.max_attempts, hook.backoff_base_seconds, hook._timeout) == (3, 0.5, 3.0)
    set_conn(monkeypatch, "mlf_d", conn_type="mlflow", host="127.0.0.1", port=1)
    hook = MlflowHook("mlf_d")
    assert hook.get_conn().verify is True and hook.max_attempts == 1 + mlflow_module.DEFAULT_MAX_RETRIES
    assert hook._timeout == mlflow_module.DEFAULT_TIMEOUT_SECONDS
    assert hook.backoff_base_seconds == mlflow_module.DEFAULT_BACKOFF_FACTOR


def test_mlflow_unknown_or_deleted_experiment(mlflow_server: FakeMlflowServer) -> None:
    from modelwatch.errors import MlflowSourceRefused

    mlflow_server.experiment("a")
    mlflow_server.experiment("gone", stage="deleted")
    assert MlflowHook("mlf").experiment_ids(["a"]) == {"a": "1"}
    for name, words in (("missing", "no such experiment"), ("gone", "experiment is deleted")):
        with pytest.raises(MlflowSourceRefused) as info:  # a typo does not fix itself: no Airflow retries
            MlflowHook("mlf").experiment_ids(["a", name])
        assert f"'{name}'" in str(info.value) and mlflow_server.url in str(info.value) and words in str(info.value)
        assert info.value.experiment == name


def test_mlflow_a_404_without_mlflow_error_is_not_a_missing_experiment(mlflow_server: FakeMlflowServer) -> None:
    mlflow_server.failures.append(Reply(404, {"detail": "no route"}))  # e.g. a wrong path prefix
    with pytest.raises(MlflowSourceError) as info:
        MlflowHook("mlf").experiment_ids(["a"])
    assert "experiments/get-by-name failed" in str(info.value) and "HTTP 404" in str(info.value)
    assert "no such experiment" not in str(info.value)


def test_mlflow_search_runs_overlapping(mlflow_server: FakeMlflowServer) -> None:
    exp = mlflow_server.experiment("e")
    for run_id, start, end, status in (("day-before", 0, 1000, "FINISHED"), ("spans", 500, 1500, "FINISHED"),
                                       ("inside", 1100, 1200, "FINISHED"), ("open", 900, None, "RUNNING"),
                                       ("old", 0, 999, "FINISHED"), ("later", 2000, 2100, "FINISHED")):  # fmt: skip
        mlflow_server.run(exp, run_id, start, end, status=status)
    hook = MlflowHook("mlf")
    runs = hook.search_runs_overlapping([exp], 1000, 2000, page_size=1, experiment="e")
    # "day-before" ended exactly at the window start: it overlaps [1000, 2000) at its last instant
    assert [r["info"]["run_id"] for r in runs] == ["day-before", "spans", "open", "inside"]
    filters = [json.loads(s.body)["filter"] for s in mlflow_server.seen]
    assert set(filters) == {"attributes.start_time < 2000 AND attributes.end_time >= 1000",
                            "attributes.start_time < 2000 AND attributes.status = 'RUNNING'"}
    assert hook.pages_read == [1, 1, 1, 1]  # one run per page, every page followed


def test_mlflow_metric_history_follows_every_page(mlflow_server: FakeMlflowServer,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from modelwatch.hooks import mlflow as mlflow_module

    monkeypatch.setattr(mlflow_module, "HISTORY_PAGE_SIZE", 2)
    points = [{"key": "loss", "value": v, "timestamp": 1000 + i, "step": i} for i, v in enumerate([0.1, "NaN", 0.3])]
    mlflow_server.histories[("r1", "loss")] = points
    hook = MlflowHook("mlf")
    assert hook.metric_history("r1", "loss") == points
    assert [dict(s.params) for s in mlflow_server.seen] == [
        {"run_id": "r1", "metric_key": "loss", "max_results": "2"},
        {"run_id": "r1", "metric_key": "loss", "max_results": "2", "page_token": "2"},
    ]
    assert hook.metric_history("r1", "accuracy") == []  # never logged: the server answers {}


def test_mlflow_unreachable_server(monkeypatch: pytest.MonkeyPatch) -> None:
    port = closed_port()
    set_conn(monkeypatch, "mlf_down", conn_type="mlflow", host="127.0.0.1", port=port,
             login="bob", password="mlflow-pass-777", extra={"max_retries": 0, "timeout": 5})
    hook = MlflowHook("mlf_down")
    with pytest.raises(MlflowSourceError) as info:
        hook.experiment_ids(["fraud-detector-predictions"])
    message = str(info.value)
    assert f"http://127.0.0.1:{port}" in message and "fraud-detector-predictions" in message
    assert "mlflow-pass-777" not in message


def test_mlflow_test_connection(mlflow_server: FakeMlflowServer, monkeypatch: pytest.MonkeyPatch) -> None:
    ok, message = MlflowHook("mlf").test_connection()
    assert ok and f"MLflow at {mlflow_server.url} (GET /api/2.0/mlflow/experiments/search)" in message
    assert mlflow_server.seen[-1].params == [("max_results", "1")]
    # one attempt only, whatever max_retries says: a person is waiting at the form
    port = closed_port()
    set_conn(monkeypatch, "mlf_down", conn_type="mlflow", host="127.0.0.1", port=port, password="tok-9",
             extra={"max_retries": 5, "backoff_factor": 10})
    hook = MlflowHook("mlf_down")
    started = time.monotonic()
    ok, message = hook.test_connection()
    assert not ok and hook.requests_made == 1 and time.monotonic() - started < 5
    assert f"127.0.0.1:{port}" in message and "tok-9" not in message
    assert hook.max_attempts == 6  # the connection's policy is back for the next calls
    set_conn(monkeypatch, "mlf_nohost", conn_type="mlflow", host="")
    ok, message = MlflowHook("mlf_nohost").test_connection()
    assert not ok and "'mlf_nohost'" in message and "no host" in message


def test_mlflow_read_parquet_artifacts(mlflow_server: FakeMlflowServer, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    import pyarrow as pa

    exp = mlflow_server.experiment("exp")
    runs = []
    for i in range(12):
        runs.append(mlflow_server.run(exp, f"r{i}", i, i + 1))
        mlflow_server.artifacts[(f"r{i}", "predictions.parquet")] = parquet_bytes(
            pa.table({"timestamp": [i], "prediction_time": [0.1 * i]})
        )
    runs.insert(3, mlflow_server.run(exp, "open", 0, status="RUNNING"))  # being written: skipped
    mlflow_server.artifacts[("open", "other.txt")] = b"x"  # its folder lists something else
    monkeypatch.setattr(tempfile, "mkdtemp", lambda *a, **k: pytest.fail("a temporary folder was created"))
    for workers in (1, 4):
        hook = MlflowHook("mlf")
        got = hook.read_parquet_artifacts(runs, "predictions.parquet", experiment="exp", workers=workers)
        assert [r["info"]["run_id"] for r, _ in got] == [f"r{i}" for i in range(12)]
        assert [t.column("timestamp").to_pylist() for _, t in got] == [[i] for i in range(12)]
    listed = [s for s in mlflow_server.seen if s.path == "/api/2.0/mlflow/artifacts/list"]
    assert [dict(s.params) for s in listed] == [{"run_id": "open"}] * 2  # only the RUNNING run is listed
    downloads = [dict(s.params) for s in mlflow_server.seen if s.path == "/get-artifact"]
    assert len(downloads) == 24 and downloads[0] == {"path": "predictions.parquet", "run_uuid": "r0"}


@pytest.mark.parametrize(("content", "reason"), [(None, "not found"), (b"not parquet", "not a readable Parquet file")])
def test_mlflow_read_parquet_artifacts_errors_name_run_and_path(
    mlflow_server: FakeMlflowServer, content: bytes | None, reason: str
) -> None:
    from modelwatch.errors import MlflowSourceRefused

    run = mlflow_server.run(mlflow_server.experiment("batches"), "done-7", 0, 1)
    if content is not None:
        mlflow_server.artifacts[("done-7", "predictions.parquet")] = content
    with pytest.raises(MlflowSourceRefused) as info:
        MlflowHook("mlf").read_parquet_artifacts([run], "predictions.parquet", experiment="batches")
    message = str(info.value)
    assert "experiment 'batches'" in message and "run done-7 artifact 'predictions.parquet'" in message
    assert reason in message and mlflow_server.url in message


def test_mlflow_artifacts_under_the_proxy_are_read_through_it(mlflow_server: FakeMlflowServer) -> None:
    import pyarrow as pa

    from modelwatch.errors import MlflowSourceRefused

    exp = mlflow_server.experiment("proxied")
    runs = [mlflow_server.run(exp, f"p{i}", i, i + 1, artifact_uri=f"mlflow-artifacts:/proxied exp/p{i}/artifacts")
            for i in range(2)]  # fmt: skip
    mlflow_server.proxied["proxied exp/p0/artifacts/predictions.parquet"] = parquet_bytes(pa.table({"timestamp": [7]}))
    with pytest.raises(MlflowSourceRefused, match=r"run p1 artifact 'predictions.parquet': not found"):
        MlflowHook("mlf").read_parquet_artifacts(runs, "predictions.parquet", experiment="proxied", workers=1)
    [(run, table)] = MlflowHook("mlf").read_parquet_artifacts(runs[:1], "predictions.parquet", experiment="proxied")
    assert run["info"]["run_id"] == "p0" and table.column("timestamp").to_pylist() == [7]
    # straight from the proxy's store (the server need not look the run up): never /get-artifact
    assert {s.path for s in mlflow_server.seen} == {
        f"/api/2.0/mlflow-artifacts/artifacts/proxied%20exp/p{i}/artifacts/predictions.parquet" for i in range(2)
    }


def test_mlflow_artifact_server_failure_is_retried_then_retryable(mlflow_server: FakeMlflowServer) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    run = mlflow_server.run(mlflow_server.experiment("batches"), "done-8", 0, 1)
    boom = {"error_code": "INTERNAL_ERROR", "message": "S3 said SlowDown"}
    mlflow_server.failures.extend([Reply(500, boom)] * 3)
    with pytest.raises(MlflowSourceError) as info:
        MlflowHook("mlf").read_parquet_artifacts([run], "predictions.parquet", experiment="batches")
    assert len(mlflow_server.seen) == 3 and not isinstance(info.value, AirflowFailException)
    message = str(info.value)
    assert "run done-8 artifact 'predictions.parquet': download failed" in message
    assert "HTTP 500 INTERNAL_ERROR" in message and "S3 said SlowDown" in message


# -- MLflow REST read (runs/search) ------------------------------------------------------------------


def rest_run(run_id: str, start: int) -> dict[str, Any]:
    return {"info": {"run_id": run_id, "run_uuid": run_id, "start_time": start},
            "data": {"metrics": [{"key": "prediction_time", "value": 0.25}], "tags": [{"key": "model", "value": "m"}]}}


@pytest.fixture
def mlf_rest(server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> MlflowHook:
    set_conn(monkeypatch, "mlf_rest", conn_type="mlflow", host="127.0.0.1", port=server.port,
             extra={"max_retries": 2, "backoff_factor": 0, "timeout": 5})
    return MlflowHook("mlf_rest")


def test_mlflow_search_runs_json_posts_the_search_and_follows_every_page(
    server: ScriptedServer, mlf_rest: MlflowHook
) -> None:
    server.script(
        Reply(body={"runs": [rest_run("r0", 1000), rest_run("r1", 1001)], "next_page_token": "tok-1"}),
        Reply(body={"runs": [rest_run("r2", 1500)], "next_page_token": "tok-2"}),
        Reply(body={}),  # a last page with no run and no token: the server leaves both out
    )
    runs = mlf_rest.search_runs_json(["7"], 1000, 2000, page_size=2, experiment="fraud")
    assert [r["info"]["run_id"] for r in runs] == ["r0", "r1", "r2"]
    assert [(s.method, s.path) for s in server.seen] == [("POST", "/api/2.0/mlflow/runs/search")] * 3
    bodies = [json.loads(s.body) for s in server.seen]
    assert bodies[0] == {
        "experiment_ids": ["7"], "filter": "attributes.start_time >= 1000 AND attributes.start_time < 2000",
        "max_results": 2, "order_by": ["attributes.start_time ASC"], "run_view_type": "ACTIVE_ONLY",
    }
    assert [b.get("page_token") for b in bodies] == [None, "tok-1", "tok-2"]
    assert mlf_rest.pages_read == [2, 1, 0]
    assert "Authorization" not in server.seen[0].headers


def test_mlflow_search_runs_json_page_size_limits(mlf_rest: MlflowHook) -> None:
    for bad in (0, 50_001):
        with pytest.raises(ValueError, match="page_size"):
            mlf_rest.search_runs_json(["7"], 0, 1, page_size=bad)


def test_mlflow_search_runs_json_retries_5xx(server: ScriptedServer, mlf_rest: MlflowHook) -> None:
    busy = {"error_code": "TEMPORARILY_UNAVAILABLE", "message": "busy"}
    server.script(Reply(503, busy), Reply(503, busy), Reply(body={"runs": [rest_run("r0", 1000)]}))
    assert [r["info"]["run_id"] for r in mlf_rest.search_runs_json(["7"], 0, 2000)] == ["r0"]
    assert len(server.seen) == 3


def test_mlflow_search_runs_json_server_error_after_retries(server: ScriptedServer, mlf_rest: MlflowHook) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    locked = {"error_code": "INTERNAL_ERROR", "message": "database is locked"}
    server.script(Reply(500, locked), Reply(500, locked), Reply(500, locked))
    with pytest.raises(MlflowSourceError) as info:
        mlf_rest.search_runs_json(["7"], 0, 2000, experiment="fraud-detector-predictions")
    err = info.value
    assert len(server.seen) == 3 and not isinstance(err, AirflowFailException)  # Airflow retries the task
    assert err.server == f"http://127.0.0.1:{server.port}" and err.experiment == "fraud-detector-predictions"
    assert "runs/search" in str(err) and "HTTP 500 INTERNAL_ERROR" in str(err) and "database is locked" in str(err)


def test_mlflow_search_runs_json_refusal_is_final(server: ScriptedServer, mlf_rest: MlflowHook) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    server.script(Reply(400, {"error_code": "INVALID_PARAMETER_VALUE", "message": "Invalid value 60000 for max_results"}))
    with pytest.raises(MlflowSourceError) as info:
        mlf_rest.search_runs_json(["7"], 0, 2000, experiment="fraud")
    assert len(server.seen) == 1 and isinstance(info.value, AirflowFailException)
    assert "INVALID_PARAMETER_VALUE" in str(info.value) and "max_results" in str(info.value)
    assert "'fraud'" in str(info.value)


def test_mlflow_search_runs_json_not_json(server: ScriptedServer, mlf_rest: MlflowHook) -> None:
    server.script(Reply(200, "<html>login page</html>"))
    with pytest.raises(MlflowSourceError) as info:
        mlf_rest.search_runs_json(["7"], 0, 2000, experiment="fraud")
    assert "not an MLflow JSON object" in str(info.value) and "login page" in str(info.value)


def test_mlflow_search_runs_json_auth_and_redaction(server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    token = base64.b64encode(b"bob:bobs-pass-99").decode()
    set_conn(monkeypatch, "mlf_b", conn_type="mlflow", host="127.0.0.1", port=server.port, login="bob",
             password="bobs-pass-99", extra={"max_retries": 0})
    server.script(Reply(403, {"error_code": "PERMISSION_DENIED", "message": f"bad Basic {token} / bobs-pass-99"}))
    with pytest.raises(MlflowSourceError) as info:
        MlflowHook("mlf_b").search_runs_json(["7"], 0, 2000, experiment="fraud")
    assert server.seen[0].headers["Authorization"] == f"Basic {token}"
    assert "bobs-pass-99" not in str(info.value) and token not in str(info.value) and "***" in str(info.value)
    set_conn(monkeypatch, "mlf_t", conn_type="mlflow", host="127.0.0.1", port=server.port, password="tok-123")
    server.script(Reply(body={"runs": []}))
    assert MlflowHook("mlf_t").search_runs_json(["7"], 0, 2000) == []
    assert server.seen[1].headers["Authorization"] == "Bearer tok-123"


def test_mlflow_search_runs_json_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    port = closed_port()
    set_conn(monkeypatch, "mlf_down", conn_type="mlflow", host="127.0.0.1", port=port,
             login="bob", password="mlflow-pass-777", extra={"max_retries": 1, "backoff_factor": 0, "timeout": 5})
    hook = MlflowHook("mlf_down")
    with pytest.raises(MlflowSourceError) as info:
        hook.search_runs_json(["7"], 0, 2000, experiment="fraud-detector-predictions")
    message = str(info.value)
    assert f"http://127.0.0.1:{port}" in message and "fraud-detector-predictions" in message
    assert "2 attempt(s)" in message and "mlflow-pass-777" not in message
    assert hook.requests_made == 2
