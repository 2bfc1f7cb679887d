"""Credentials never leave the connections: not in task logs, partitions, alerts, mails or reports.

Every server is given a secret, and each is really used: Prometheus takes a bearer token and MLflow and
Alertmanager basic auth, each through a :class:`faultproxy.FaultProxy` that refuses requests without
exactly that credential; the lake is on S3 (moto) through an AWS connection with its own key pair. The
DAG runs twice: once for a degraded day (partitions, an alert through Alertmanager to the webhook and the
mail sink), and once with Prometheus and MLflow answering errors that echo the request headers back, so
the credentials come back inside error messages, the task logs and the failure email. Then every task log
(captured output and the AIRFLOW_HOME logs folder), every lake object, the webhook receiver's file, the
mail folder and the Airflow metadata database are searched for each secret, raw and base64-encoded.

The credentials are stored the awkward ways users store them (issue 20): the Prometheus token with the
trailing newline a file leaves (the hook sends it stripped; before, requests raised ``InvalidHeader`` with
the token in its text), the MLflow password with an ``@`` in the password field, and the Alertmanager
credentials in the host URL with an unencoded ``@`` in the password (``http://user:p@ss@host``: before,
messages kept everything after the first ``@``). ``test_hook_exceptions_hold_no_secret`` sends each hook's
requests through the proxies on their own (seconds, no DAG run) and searches the exceptions' text, repr and
formatted traceback.
"""

from __future__ import annotations

import base64
import json
import os
import traceback
import uuid
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from faultdag import fault_config, parse_dag, run_day, state, task_states, test_copy
from faultproxy import Fault, FaultProxy, airflow_conn
from polling import wait_until

CPU_DAY = date(2026, 3, 3)
TAG = uuid.uuid4().hex[:12]
PROM_TOKEN = f"prom-token-{TAG}"
#: as a secrets file or ``echo`` stores it
PROM_STORED = f"{PROM_TOKEN}\n"
MLFLOW_USER, MLFLOW_PASSWORD = "faults-mlflow", f"mlflow-p@ss-{TAG}"
#: given in the host URL, its ``@`` unencoded
AM_USER, AM_PASSWORD = "faults-am", f"am-p@ss-{TAG}"
AWS_KEY_ID, AWS_SECRET = f"AKIAFAULTS{TAG.upper()}", f"aws-secret-{TAG}/+x"


def _basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


SECRETS = {
    "prometheus token": PROM_TOKEN,
    "mlflow password": MLFLOW_PASSWORD,
    "mlflow basic auth header": _basic(MLFLOW_USER, MLFLOW_PASSWORD),
    "alertmanager password": AM_PASSWORD,
    "alertmanager basic auth header": _basic(AM_USER, AM_PASSWORD),
    "aws secret key": AWS_SECRET,
    # what a redaction that stops at the first '@' leaves behind, and the URL-encoded forms
    "mlflow password after its @": MLFLOW_PASSWORD.split("@", 1)[1],
    "alertmanager password after its @": AM_PASSWORD.split("@", 1)[1],
    "mlflow password url-encoded": quote(MLFLOW_PASSWORD, safe=""),
    "alertmanager password url-encoded": quote(AM_PASSWORD, safe=""),
}


def _am_conn(url: str) -> str:
    """The Alertmanager connection with its credentials in the host URL (``http://user:p@ss@host:port``)."""
    scheme, rest = url.split("://", 1)
    return json.dumps({"conn_type": "alertmanager", "host": f"{scheme}://{AM_USER}:{AM_PASSWORD}@{rest}"})


def _leaks(data: bytes) -> list[str]:
    return [name for name, secret in SECRETS.items() if secret.encode() in data]


@pytest.fixture(scope="module")
def two_runs(
    seeded_stack: Any, airflow_db: Any, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> dict[str, Any]:
    """Run the DAG for a degraded day with every credential in use, then once more with error echoes.

    :returns: the runs, the mails they caused, and the task logs (what ``dag.test`` printed).
    """
    capture = request.config.pluginmanager.getplugin("capturemanager")
    tmp = tmp_path_factory.mktemp("secrets")
    aws_conn_id = f"aws_secrets_{TAG}"
    prefix = f"secrets-{TAG}"
    config, alertname = fault_config(tmp, storage={"aws_conn_id": aws_conn_id})
    dag = test_copy(parse_dag(), retries=0)
    mp = pytest.MonkeyPatch()
    prom = FaultProxy(seeded_stack.config.prometheus_url, require_headers={"Authorization": f"Bearer {PROM_TOKEN}"})
    mlflow = FaultProxy(seeded_stack.config.mlflow_url,
                        require_headers={"Authorization": f"Basic {_basic(MLFLOW_USER, MLFLOW_PASSWORD)}"})  # fmt: skip
    am = FaultProxy(seeded_stack.config.alertmanager_url,
                    require_headers={"Authorization": f"Basic {_basic(AM_USER, AM_PASSWORD)}"})  # fmt: skip
    out: dict[str, Any] = {"prefix": prefix, "alertname": alertname, "proxies": (prom, mlflow, am)}
    try:
        for proxy in (prom, mlflow, am):
            proxy.start()
        for key, value in seeded_stack.airflow_env().items():
            mp.setenv(key, value)
        mp.setenv("AIRFLOW_CONN_PROMETHEUS_DEFAULT", airflow_conn("prometheus", prom.url, password=PROM_STORED, auth="bearer"))
        mp.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", airflow_conn(
            "mlflow", mlflow.url, login=MLFLOW_USER, password=MLFLOW_PASSWORD, max_retries=1, backoff_factor=0))
        mp.setenv("AIRFLOW_CONN_ALERTMANAGER_DEFAULT", _am_conn(am.url))
        mp.setenv(f"AIRFLOW_CONN_{aws_conn_id.upper()}", json.dumps({
            "conn_type": "aws", "login": AWS_KEY_ID, "password": AWS_SECRET,
            "extra": {"endpoint_url": seeded_stack.config.s3_url, "region_name": "us-east-1"}}))
        mp.setenv("MODELWATCH_CONFIG", str(config))
        mp.setenv("MODELWATCH_STORAGE_URL", f"s3://modelwatch/{prefix}")  # fmt: skip
        mails_before = len(seeded_stack.mail())
        if capture is not None:
            capture.read_global_capture()  # start the log from here
        ok = run_day(dag, CPU_DAY)
        # (read now: a second dag.test of the same logical date clears the first one's task instances)
        out["ok"] = (state(ok), task_states(ok))
        # the same day again, with both sources answering errors that repeat the credentials back
        prom.add(Fault.echo(400, times=None))
        mlflow.add(Fault.echo(400, prometheus=False, times=None))
        failed = run_day(dag, CPU_DAY)
        out["failed"] = (state(failed), task_states(failed))
        # both runs are over: the alert's mail (through Alertmanager's group_wait) and one failure email per
        # failed task are on their way to the sink
        out["mails"] = wait_until(lambda: seeded_stack.mail()[mails_before:], until=lambda mails: len(mails) >= 3,
                                  timeout=30, what="the alert's mail and the two failure emails in the SMTP sink")  # fmt: skip
        printed = capture.read_global_capture() if capture is not None else ("", "")
        out["logs"] = printed[0] + printed[1]
    finally:
        mp.undo()
        for proxy in (prom, mlflow, am):
            proxy.stop()
    return out


def test_the_runs_used_every_credential(two_runs: dict[str, Any], seeded_stack: Any) -> None:
    assert two_runs["ok"][0] == "success" and two_runs["ok"][1]["post_alert"][0] == "success"
    run_state, states = two_runs["failed"]
    assert run_state == "failed"
    assert states["extract_resources"][0] == states["extract_predictions"][0] == "failed"
    for proxy in two_runs["proxies"]:
        assert proxy.count(action="unauthorized") == 0  # every request carried its credential ...
        assert proxy.count(action="forwarded") > 0  # ... and the real server answered
    s3_keys = {o["Key"] for o in seeded_stack.s3_client().list_objects_v2(
        Bucket="modelwatch", Prefix=two_runs["prefix"])["Contents"]}  # fmt: skip
    assert any(k.endswith("alerts/dt=2026-03-03/_payload.json") for k in s3_keys)
    failure_mails = [m for m in two_runs["mails"] if m["subject"].startswith("[modelwatch]")]
    # one per failed task (under dag.test both carry the first failure's text: the DAG's one SmtpNotifier
    # renders its templates in place; a real worker parses the DAG afresh for every task)
    assert len(failure_mails) == 2, [m["subject"] for m in two_runs["mails"]]
    assert any(two_runs["alertname"] in json.dumps(m) for m in two_runs["mails"])


def test_no_secret_in_task_logs(two_runs: dict[str, Any]) -> None:
    logs = two_runs["logs"]
    if "[DAG TEST]" not in logs:
        pytest.skip("output capture is off (-s): the task logs went to the terminal")
    # the logs did see the echoed errors, redacted
    assert "bad request" in logs and "Bearer ***" in logs
    assert not _leaks(logs.encode()), _leaks(logs.encode())
    log_folder = Path(os.environ["AIRFLOW_HOME"]) / "logs"
    for path in log_folder.rglob("*") if log_folder.exists() else ():
        if path.is_file():
            assert not _leaks(path.read_bytes()), (str(path), _leaks(path.read_bytes()))


def test_no_secret_in_the_lake(two_runs: dict[str, Any], seeded_stack: Any) -> None:
    s3 = seeded_stack.s3_client()
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="modelwatch", Prefix=two_runs["prefix"])["Contents"]]
    assert len(keys) >= 12
    for key in keys:
        body = s3.get_object(Bucket="modelwatch", Key=key)["Body"].read()
        assert not _leaks(body), (key, _leaks(body))


def test_no_secret_in_alerts_mails_or_the_metadata_db(two_runs: dict[str, Any], seeded_stack: Any) -> None:
    files = [seeded_stack.config.webhook_file, *Path(seeded_stack.config.mail_dir).rglob("*")]
    files.append(Path(os.environ["AIRFLOW_HOME"]) / "airflow.db")
    searched = 0
    for path in files:
        if Path(path).is_file():
            searched += 1
            assert not _leaks(Path(path).read_bytes()), (str(path), _leaks(Path(path).read_bytes()))
    assert searched >= 4
    error_mails = [m for m in two_runs["mails"] if m["subject"].startswith("[modelwatch]")]
    # the failure email did carry the echoed credentials' error, redacted
    assert error_mails and all("bad request" in m["body"] and "***" in m["body"] for m in error_mails), error_mails


def _texts(exc: BaseException) -> bytes:
    """Everything an exception can show: its text, repr, formatted traceback and every chained exception."""
    parts = [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    link: BaseException | None = exc
    while link is not None:
        parts += [str(link), repr(link), repr(link.args), repr(vars(link))]
        link = link.__cause__ or link.__context__
    return "\n".join(parts).encode()


def test_hook_exceptions_hold_no_secret(seeded_stack: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each stored credential against the real servers behind echoing proxies, then an unreachable server:
    the exceptions name the server and the error, never a secret in any form, and chain no original."""
    from modelwatch.errors import (
        AlertmanagerError,
        MlflowSourceError,
        PrometheusQueryError,
        UpstreamUnavailable,
    )
    from modelwatch.hooks import AlertmanagerHook, MlflowHook, PrometheusHook

    fast = {"max_attempts": 1}
    prom = FaultProxy(seeded_stack.config.prometheus_url, require_headers={"Authorization": f"Bearer {PROM_TOKEN}"})
    mlflow = FaultProxy(seeded_stack.config.mlflow_url,
                        require_headers={"Authorization": f"Basic {_basic(MLFLOW_USER, MLFLOW_PASSWORD)}"})  # fmt: skip
    am = FaultProxy(seeded_stack.config.alertmanager_url,
                    require_headers={"Authorization": f"Basic {_basic(AM_USER, AM_PASSWORD)}"})  # fmt: skip
    with prom, mlflow, am:
        monkeypatch.setenv("AIRFLOW_CONN_SECRETS_PROM", airflow_conn("prometheus", prom.url, password=PROM_STORED,
                                                                     auth="bearer"))  # fmt: skip
        monkeypatch.setenv("AIRFLOW_CONN_SECRETS_MLFLOW", airflow_conn(
            "mlflow", mlflow.url, login=MLFLOW_USER, password=MLFLOW_PASSWORD, max_retries=0))
        monkeypatch.setenv("AIRFLOW_CONN_SECRETS_AM", _am_conn(am.url))
        hooks = (PrometheusHook("secrets_prom", **fast), MlflowHook("secrets_mlflow"), AlertmanagerHook("secrets_am", **fast))
        calls = (
            lambda h: h.query_range("up", _t0(), _t0(), 15, query_name="up"),
            lambda h: h.experiment_ids(["fraud-detector-predictions"]),
            lambda h: h.get_alerts(),
        )
        # 1. the credentials work as stored: every request got through the proxy's check
        for hook, call in zip(hooks, calls, strict=True):
            call(hook)
        for proxy in (prom, mlflow, am):
            assert proxy.count(action="unauthorized") == 0 and proxy.count(action="forwarded") > 0
        # 2. servers repeating the request headers in their errors
        prom.add(Fault.echo(400, times=None))
        mlflow.add(Fault.echo(400, prometheus=False, times=None))
        am.add(Fault.echo(400, prometheus=False, times=None))
        raised = []
        for hook, call, kind in zip(hooks, calls, (PrometheusQueryError, MlflowSourceError, AlertmanagerError),
                                    strict=True):  # fmt: skip
            with pytest.raises(kind) as info:
                call(hook)
            assert "bad request" in str(info.value) and "***" in str(info.value)
            raised.append(info.value)
        # 3. the same connections with nothing listening
        ports = [p.port for p in (prom, mlflow, am)]
    for hook_cls, name, call in zip((PrometheusHook, MlflowHook, AlertmanagerHook),
                                    ("secrets_prom", "secrets_mlflow", "secrets_am"), calls, strict=True):  # fmt: skip
        hook = hook_cls(name) if hook_cls is MlflowHook else hook_cls(name, **fast)
        with pytest.raises((UpstreamUnavailable, MlflowSourceError)) as info:
            call(hook)
        assert any(f":{port}" in str(info.value) for port in ports), str(info.value)
        raised.append(info.value)
    for exc in raised:
        assert not _leaks(_texts(exc)), (type(exc).__name__, _leaks(_texts(exc)), str(exc))
        chained = exc.__cause__ or exc.__context__
        assert chained is None or type(chained).__module__.startswith("modelwatch"), repr(chained)


def _t0() -> Any:
    from datetime import UTC, datetime

    return datetime(2026, 3, 3, tzinfo=UTC)
