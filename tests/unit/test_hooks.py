"""Hooks against a tiny real HTTP server (scripted answers), and MlflowHook against a fake client.

Connections come from ``AIRFLOW_CONN_<ID>`` JSON env vars: outside a task (no SDK supervisor) Airflow
3.3 resolves connections through the env-var backend (plus any configured external backend), which is
what these tests rely on.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
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
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

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
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
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
    started = time.monotonic()
    prom.query_range("up", T0, T0, 15, query_name="up")
    assert time.monotonic() - started >= 1.0  # the backoff alone would be 0.01 s
    assert len(server.seen) == 2


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


def test_hook_modules_import_no_heavy_libraries() -> None:
    code = (
        "import sys, modelwatch.hooks, modelwatch.extract\n"
        "heavy = [m for m in ('pandas', 'mlflow', 'boto3', 'botocore') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO,
                   env={**__import__("os").environ, "PYTHONPATH": str(REPO)})


# -- MLflow -------------------------------------------------------------------------------------------


def make_run(run_id: str, start: int, end: int | None = None, status: str = "FINISHED") -> Any:
    from mlflow.entities import Run, RunData, RunInfo

    return Run(RunInfo(run_id, "1", "u", status, start, end, "active"), RunData())


class FakeMlflowClient:
    """Stands in for MlflowClient: pages runs, records calls, sees the env at call time."""

    instances: list[FakeMlflowClient] = []

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        self.calls: list[dict[str, Any]] = []
        self.runs: dict[str, list[Any]] = {}
        self.env_seen: list[str | None] = []
        self.env_at_call: list[dict[str, str]] = []
        FakeMlflowClient.instances.append(self)

    def get_experiment_by_name(self, name: str) -> Any:
        import os

        from mlflow.entities import Experiment

        self.env_seen.append(os.environ.get("MLFLOW_TRACKING_TOKEN"))
        self.env_at_call.append({k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")})
        if name == "missing":
            return None
        return Experiment(f"id-{name}", name, "", "active")

    def search_runs(self, experiment_ids: list[str], filter_string: str, max_results: int,
                    order_by: list[str], page_token: str | None) -> Any:
        from mlflow.store.entities.paged_list import PagedList

        self.calls.append({"filter": filter_string, "max_results": max_results, "order_by": order_by,
                           "page_token": page_token, "experiment_ids": experiment_ids})
        runs = self.runs.get(filter_string, [])
        offset = int(page_token or 0)
        page = runs[offset: offset + max_results]
        more = offset + max_results < len(runs)
        return PagedList(page, str(offset + max_results) if more else None)


@pytest.fixture
def fake_mlflow(monkeypatch: pytest.MonkeyPatch) -> type[FakeMlflowClient]:
    import mlflow.tracking

    FakeMlflowClient.instances = []
    monkeypatch.setattr(mlflow.tracking, "MlflowClient", FakeMlflowClient)
    return FakeMlflowClient


def test_mlflow_tracking_uri_and_lazy_connection(monkeypatch: pytest.MonkeyPatch,
                                                  fake_mlflow: type[FakeMlflowClient]) -> None:
    set_conn(monkeypatch, "mlf", conn_type="mlflow", host="127.0.0.1", port=15000)
    hook = MlflowHook("mlf")
    assert fake_mlflow.instances == []
    assert hook.get_conn().tracking_uri == "http://127.0.0.1:15000"
    set_conn(monkeypatch, "mlf2", conn_type="mlflow", host="https://mlflow.example/tracking/")
    assert MlflowHook("mlf2").tracking_uri == "https://mlflow.example/tracking"


def test_mlflow_token_only_in_env_during_calls(monkeypatch: pytest.MonkeyPatch,
                                               fake_mlflow: type[FakeMlflowClient]) -> None:
    import os

    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    set_conn(monkeypatch, "mlf_tok", conn_type="mlflow", host="127.0.0.1", port=15000, password="mlflow-tok-42")
    hook = MlflowHook("mlf_tok")
    assert hook.experiment_ids(["a"]) == {"a": "id-a"}
    assert hook.get_conn().env_seen == ["mlflow-tok-42"]
    assert "MLFLOW_TRACKING_TOKEN" not in os.environ


def test_mlflow_basic_auth_and_retry_extras(monkeypatch: pytest.MonkeyPatch,
                                            fake_mlflow: type[FakeMlflowClient]) -> None:
    import os

    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "ambient-token")  # must not be mixed with our basic auth
    set_conn(monkeypatch, "mlf_basic", conn_type="mlflow", host="127.0.0.1", port=15000, login="bob",
             password="bobs-pass", extra={"max_retries": 2, "timeout": 0.5, "backoff_factor": 1})
    hook = MlflowHook("mlf_basic")
    hook.experiment_ids(["a"])
    seen = hook.get_conn().env_at_call[0]
    assert seen["MLFLOW_TRACKING_USERNAME"] == "bob" and seen["MLFLOW_TRACKING_PASSWORD"] == "bobs-pass"
    assert "MLFLOW_TRACKING_TOKEN" not in seen
    assert (seen["MLFLOW_HTTP_REQUEST_MAX_RETRIES"], seen["MLFLOW_HTTP_REQUEST_TIMEOUT"]) == ("2", "1")
    assert os.environ["MLFLOW_TRACKING_TOKEN"] == "ambient-token"  # put back after the call
    assert "MLFLOW_TRACKING_PASSWORD" not in os.environ


def test_mlflow_unknown_experiment(monkeypatch: pytest.MonkeyPatch, fake_mlflow: type[FakeMlflowClient]) -> None:
    set_conn(monkeypatch, "mlf", conn_type="mlflow", host="127.0.0.1", port=15000)
    with pytest.raises(MlflowSourceError) as info:
        MlflowHook("mlf").experiment_ids(["a", "missing"])
    assert "'missing'" in str(info.value) and "http://127.0.0.1:15000" in str(info.value)


def test_mlflow_search_runs_follows_every_page(monkeypatch: pytest.MonkeyPatch,
                                               fake_mlflow: type[FakeMlflowClient]) -> None:
    set_conn(monkeypatch, "mlf", conn_type="mlflow", host="127.0.0.1", port=15000)
    hook = MlflowHook("mlf")
    flt = "attributes.start_time >= 1000 AND attributes.start_time < 2000"
    hook.get_conn().runs[flt] = [make_run(f"r{i}", 1000 + i) for i in range(7)]
    runs = list(hook.search_runs(["1"], 1000, 2000, page_size=3))
    assert [r.info.run_id for r in runs] == [f"r{i}" for i in range(7)]
    calls = hook.get_conn().calls
    assert [c["page_token"] for c in calls] == [None, "3", "6"]
    assert calls[0]["order_by"] == ["attributes.start_time ASC"] and calls[0]["max_results"] == 3
    with pytest.raises(ValueError):
        list(hook.search_runs(["1"], 0, 1, page_size=50_001))


def test_mlflow_search_runs_overlapping(monkeypatch: pytest.MonkeyPatch,
                                        fake_mlflow: type[FakeMlflowClient]) -> None:
    set_conn(monkeypatch, "mlf", conn_type="mlflow", host="127.0.0.1", port=15000)
    hook = MlflowHook("mlf")
    client = hook.get_conn()
    finished = [make_run("day-before", 0, 1000), make_run("spans", 500, 1500), make_run("inside", 1100, 1200)]
    running = [make_run("open", 900, None, "RUNNING"), make_run("inside", 1100, 1200)]
    client.runs["attributes.start_time < 2000 AND attributes.end_time >= 1000"] = finished
    client.runs["attributes.start_time < 2000 AND attributes.status = 'RUNNING'"] = running
    runs = hook.search_runs_overlapping(["1"], 1000, 2000, page_size=1)
    # "day-before" ended exactly at the window start: it overlaps [1000, 2000) at its last instant
    assert [r.info.run_id for r in runs] == ["day-before", "spans", "open", "inside"]


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


def artifact_run(tmp_path: Path, run_id: str, status: str = "FINISHED", content: bytes | None = None,
                 table: Any = None) -> Any:
    """A run whose artifact_uri is a local folder holding (or not) ``predictions.parquet``."""
    import pyarrow.parquet as pq
    from mlflow.entities import Run, RunData, RunInfo

    folder = tmp_path / run_id / "artifacts"
    folder.mkdir(parents=True)
    if table is not None:
        pq.write_table(table, folder / "predictions.parquet")
    elif content is not None:
        (folder / "predictions.parquet").write_bytes(content)
    return Run(RunInfo(run_id, "1", "u", status, 0, None if status == "RUNNING" else 1, "active",
                       artifact_uri=str(folder)), RunData())


def test_mlflow_read_parquet_artifacts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                       fake_mlflow: type[FakeMlflowClient]) -> None:
    import pyarrow as pa

    set_conn(monkeypatch, "mlf", conn_type="mlflow", host="127.0.0.1", port=15000)
    hook = MlflowHook("mlf")
    runs = [artifact_run(tmp_path, f"r{i}", table=pa.table({"timestamp": [i], "prediction_time": [0.1 * i]}))
            for i in range(12)]
    runs.insert(3, artifact_run(tmp_path, "open", status="RUNNING"))  # being written: skipped
    for workers in (1, 4):
        got = hook.read_parquet_artifacts(runs, "predictions.parquet", experiment="exp", workers=workers)
        assert [r.info.run_id for r, _ in got] == [f"r{i}" for i in range(12)]
        assert [t.column("timestamp").to_pylist() for _, t in got] == [[i] for i in range(12)]
    assert not list(tmp_path.glob("modelwatch-batches-*"))


@pytest.mark.parametrize(("content", "reason"), [(None, "not found"), (b"not parquet", "not a readable Parquet file")])
def test_mlflow_read_parquet_artifacts_errors_name_run_and_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake_mlflow: type[FakeMlflowClient], content: bytes | None,
    reason: str,
) -> None:
    from modelwatch.errors import MlflowSourceRefused

    set_conn(monkeypatch, "mlf", conn_type="mlflow", host="127.0.0.1", port=15000)
    hook = MlflowHook("mlf")
    run = artifact_run(tmp_path, "done-7", content=content)
    with pytest.raises(MlflowSourceRefused) as info:
        hook.read_parquet_artifacts([run], "predictions.parquet", experiment="batches")
    message = str(info.value)
    assert "experiment 'batches'" in message and "run done-7 artifact 'predictions.parquet'" in message
    assert reason in message and "http://127.0.0.1:15000" in message


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


def test_mlflow_rest_retry_policy_follows_the_connection_extras(monkeypatch: pytest.MonkeyPatch) -> None:
    from modelwatch.hooks import mlflow as mlflow_module

    set_conn(monkeypatch, "mlf_x", conn_type="mlflow", host="127.0.0.1", port=1,
             extra={"max_retries": 2, "backoff_factor": 0.5, "timeout": 2.5, "insecure_tls": "true"})
    rest = MlflowHook("mlf_x").rest
    assert rest.get_conn().verify is False and rest.base_url == "http://127.0.0.1:1"
    assert (rest.max_attempts, rest.backoff_base_seconds, rest._timeout) == (3, 0.5, 3.0)
    set_conn(monkeypatch, "mlf_d", conn_type="mlflow", host="127.0.0.1", port=1)
    rest = MlflowHook("mlf_d").rest
    assert rest.get_conn().verify is True and rest.max_attempts == 1 + mlflow_module.DEFAULT_MAX_RETRIES
    assert rest._timeout == mlflow_module.DEFAULT_TIMEOUT_SECONDS


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
    assert hook.rest.requests_made == 2
