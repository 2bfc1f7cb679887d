"""The local stack against real servers: every service does its job, errors are clear, stop leaves nothing."""

from __future__ import annotations

import json
import os
import shlex
import smtplib
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
import requests
from polling import wait_until

import devstack.stack
from devstack.smtp_sink import read_messages
from devstack.stack import (
    BUCKET,
    CONNECTIONS_ENV_FILE,
    DEFAULT_PORTS,
    SERVICES,
    MissingBinaryError,
    PortInUseError,
    ServiceNotReadyError,
    Stack,
    StackConfig,
    StackError,
    find_binary,
)
from devstack.webhook_receiver import read_webhook


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, from /proc."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                raw = (entry / "stat").read_text()
            except OSError:
                continue
            fields = raw[raw.rindex(")") + 2 :].split()
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                pids.append(int(entry.name))
    return pids


# -- no servers needed ---------------------------------------------------------------------------------
def test_connections_env_file_matches_defaults() -> None:
    # dev/connections.env is checked in for humans and tools; it must say what the code would say.
    assert CONNECTIONS_ENV_FILE.read_text() == StackConfig().connections_env_text()


def test_connections_env_is_sourceable_json() -> None:
    env = StackConfig().airflow_env()
    out = subprocess.run(
        ["bash", "-c", f"set -a; source {shlex.quote(str(CONNECTIONS_ENV_FILE))}; env -0"],
        capture_output=True,
        check=True,
    ).stdout.decode()
    sourced = dict(item.split("=", 1) for item in out.split("\0") if item.startswith("AIRFLOW_CONN_"))
    assert sourced == env
    aws = json.loads(env["AIRFLOW_CONN_AWS_DEFAULT"])
    assert aws["extra"] == {"endpoint_url": "http://127.0.0.1:15002", "region_name": "us-east-1"}


def test_from_env_reads_ports_and_state_dir(tmp_path: Path) -> None:
    cfg = StackConfig.from_env({"MODELWATCH_STACK_DIR": str(tmp_path), "MODELWATCH_MLFLOW_PORT": "25123"})
    assert cfg.state_dir == tmp_path
    assert cfg.mlflow_url == "http://127.0.0.1:25123"
    assert cfg.prometheus_port == 19090
    assert cfg.prometheus_data_dir == tmp_path / "prometheus" / "data"
    assert StackConfig.from_env(cfg.to_env()) == cfg


def test_free_ports_are_distinct_and_not_defaults(tmp_path: Path) -> None:
    cfg = StackConfig.free_ports(tmp_path)
    ports = [cfg.port(s) for s in SERVICES]
    assert len(set(ports)) == len(ports)
    assert not set(ports) & set(DEFAULT_PORTS.values())


def test_scrape_interval_and_extra_scrape_configs(tmp_path: Path) -> None:
    extra = tmp_path / "extra.yml"
    extra.write_text("- job_name: my-app\n  static_configs:\n    - targets: ['127.0.0.1:9999']\n")
    cfg = StackConfig.from_env({
        "MODELWATCH_STACK_DIR": str(tmp_path),
        "MODELWATCH_SCRAPE_INTERVAL": "5s",
        "MODELWATCH_PROMETHEUS_EXTRA_SCRAPE_CONFIGS": str(extra),
    })  # fmt: skip
    assert StackConfig.from_env(cfg.to_env()) == cfg
    doc = devstack.stack.prometheus_config(cfg)
    assert doc["global"] == {"scrape_interval": "5s", "evaluation_interval": "5s"}
    assert [j["job_name"] for j in doc["scrape_configs"]] == [
        "prometheus",
        "node-local",
        "model-service",
        "pushgateway",
        "serving-stand-in",
        "my-app",
    ]
    assert doc["scrape_configs"][3]["honor_labels"] is True
    assert doc["scrape_configs"][2]["static_configs"] == [
        {"targets": [f"127.0.0.1:{cfg.model_service_port}"]}
    ]
    assert StackConfig.free_ports(tmp_path, scrape_interval="2s").scrape_interval == "2s"
    assert devstack.stack.prometheus_config(StackConfig())["global"]["scrape_interval"] == "5s"
    # The generated file with the extra job passes promtool.
    Stack(cfg).write_configs()
    prom = subprocess.run(
        ["promtool", "check", "config", str(cfg.prometheus_config_path)], capture_output=True, text=True
    )
    assert prom.returncode == 0, prom.stdout + prom.stderr


def test_bad_scrape_settings_are_named(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="not a Prometheus duration"):
        StackConfig(state_dir=tmp_path, scrape_interval="15 seconds")
    dup = tmp_path / "dup.yml"
    dup.write_text("scrape_configs:\n  - job_name: node-local\n    static_configs: [{targets: ['x:1']}]\n")
    with pytest.raises(StackError, match="node-local"):
        devstack.stack.prometheus_config(StackConfig(state_dir=tmp_path, extra_scrape_configs=dup))
    bad = tmp_path / "bad.yml"
    bad.write_text("job_name: lonely\n")
    with pytest.raises(StackError, match="MODELWATCH_PROMETHEUS_EXTRA_SCRAPE_CONFIGS.*list"):
        devstack.stack.prometheus_config(StackConfig(state_dir=tmp_path, extra_scrape_configs=bad))
    with pytest.raises(StackError, match="cannot read"):
        devstack.stack.prometheus_config(
            StackConfig(state_dir=tmp_path, extra_scrape_configs=tmp_path / "no.yml")
        )


def test_missing_binary_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(MissingBinaryError, match=r"prometheus-alertmanager.*ensure-system-deps\.sh"):
        find_binary("alertmanager")


# -- against the session stack -------------------------------------------------------------------------
def test_all_services_running(stack: Stack) -> None:
    assert stack.status() == dict.fromkeys(SERVICES, True)


def test_s3_round_trip(stack: Stack) -> None:
    s3 = stack.s3_client()
    key = f"tests/{uuid.uuid4().hex}.json"
    s3.put_object(Bucket=BUCKET, Key=key, Body=b'{"ok": true}')
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b'{"ok": true}'
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="tests/")
    assert key in [obj["Key"] for obj in listed.get("Contents", [])]
    s3.delete_object(Bucket=BUCKET, Key=key)
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="tests/")
    assert key not in [obj["Key"] for obj in listed.get("Contents", [])]


def test_alertmanager_notifies_webhook_and_mail(stack: Stack) -> None:
    alertname = f"StackTest{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    alert = {
        "labels": {"alertname": alertname, "model": "fraud-detector", "severity": "warning"},
        "annotations": {"summary": "stack test", "description": "posted by test_stack.py"},
        "startsAt": (now - timedelta(minutes=1)).isoformat(),
        "endsAt": (now + timedelta(minutes=10)).isoformat(),
    }
    resp = requests.post(f"{stack.config.alertmanager_url}/api/v2/alerts", json=[alert], timeout=5)
    assert resp.status_code == 200, resp.text

    def delivered() -> list[dict]:
        return [
            a
            for doc in read_webhook(stack.config.webhook_file)
            for a in doc.get("alerts", [])
            if a["labels"].get("alertname") == alertname
        ]

    got = wait_until(delivered, timeout=15, what=f"the webhook receiver to get the {alertname} alert")
    assert got[0]["labels"] == alert["labels"]
    assert got[0]["annotations"]["summary"] == "stack test"
    assert got[0]["status"] == "firing"
    # The receiver's HTTP view serves the same documents as its file.
    served = requests.get(f"{stack.config.webhook_url}/alerts", timeout=5).json()
    assert any(a["labels"].get("alertname") == alertname for d in served for a in d.get("alerts", []))

    mails = wait_until(lambda: [m for m in stack.mail() if alertname in m["subject"]], timeout=15,
                       what=f"Alertmanager's mail about {alertname} in the SMTP sink")  # fmt: skip
    assert mails[0]["to"] == ["oncall@modelwatch.local"]
    assert mails[0]["from"] == "alertmanager@modelwatch.local"


def test_smtp_sink_stores_mail(stack: Stack) -> None:
    subject = f"sink test {uuid.uuid4().hex[:8]}"
    msg = EmailMessage()
    msg["From"] = "airflow@modelwatch.local"
    msg["To"] = "oncall@modelwatch.local"
    msg["Subject"] = subject
    msg.set_content("hello from the test\n")
    with smtplib.SMTP("127.0.0.1", stack.config.smtp_port, timeout=5) as smtp:
        smtp.send_message(msg)
    got = wait_until(lambda: [m for m in read_messages(stack.config.mail_dir) if m["subject"] == subject],
                     timeout=5, what=f"the mail {subject!r} in the sink's folder")  # fmt: skip
    assert got[0]["from"] == "airflow@modelwatch.local"
    assert got[0]["to"] == ["oncall@modelwatch.local"]
    assert got[0]["body"].strip() == "hello from the test"
    assert (stack.config.mail_dir / got[0]["file"]).read_bytes().find(subject.encode()) > 0


def test_node_exporter_serves_cpu(stack: Stack) -> None:
    body = requests.get(stack.config.node_exporter_url, timeout=5).text
    assert "node_cpu_seconds_total{" in body


def test_prometheus_scrapes_node_local(stack: Stack) -> None:
    def up() -> list[dict]:
        r = requests.get(f"{stack.config.prometheus_url}/api/v1/targets", timeout=5).json()
        return [t for t in r["data"]["activeTargets"] if t["health"] == "up"]

    targets = wait_until(up, until=lambda targets: len(targets) == 4, timeout=30, what="four scrape targets up")
    jobs = {t["labels"]["job"] for t in targets}
    assert jobs == {"node-local", "prometheus", "model-service", "pushgateway"}


def test_mlflow_tracking_api(stack: Stack) -> None:
    name = f"stack-test-{uuid.uuid4().hex[:8]}"
    api = f"{stack.config.mlflow_url}/api/2.0/mlflow"
    created = requests.post(f"{api}/experiments/create", json={"name": name}, timeout=10)
    assert created.status_code == 200, created.text
    got = requests.get(f"{api}/experiments/get-by-name", params={"experiment_name": name}, timeout=10)
    assert got.json()["experiment"]["experiment_id"] == created.json()["experiment_id"]


def test_generated_configs_pass_the_official_checkers(stack: Stack) -> None:
    am = subprocess.run(
        ["amtool", "check-config", str(stack.config.alertmanager_config_path)], capture_output=True, text=True
    )
    assert am.returncode == 0, am.stdout + am.stderr
    prom = subprocess.run(
        ["promtool", "check", "config", str(stack.config.prometheus_config_path)],
        capture_output=True,
        text=True,
    )
    assert prom.returncode == 0, prom.stdout + prom.stderr


def test_prometheus_restart_for_backfill(stack: Stack) -> None:
    # The seeding code stops Prometheus, writes blocks into prometheus_data_dir, then starts it again.
    before = stack.pid("prometheus")
    assert stack.stop_service("prometheus") is True
    assert stack.status()["prometheus"] is False
    assert stack.stop_service("prometheus") is False
    stack.start(["prometheus"])
    assert stack.pid("prometheus") not in (None, before)
    assert requests.get(f"{stack.config.prometheus_url}/-/ready", timeout=5).status_code == 200


# -- separate small stacks -----------------------------------------------------------------------------
def test_port_in_use_fails_fast(tmp_path: Path) -> None:
    cfg = StackConfig.free_ports(tmp_path)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", cfg.webhook_port))
        squatter.listen()
        t0 = time.monotonic()
        with pytest.raises(PortInUseError, match=rf"webhook.*127\.0\.0\.1:{cfg.webhook_port}") as err:
            Stack(cfg).start()
        took = time.monotonic() - t0
        assert took < 3, f"the port check took {took:.1f} s: it must come before anything is started"
    assert (err.value.service, err.value.port) == ("webhook", cfg.webhook_port)
    # Checked before anything is launched: no half-started stack to clean up.
    assert not any(Stack(cfg).status().values())


def test_stop_leaves_no_process(tmp_path: Path) -> None:
    # Everything but MLflow (slow to start; the session stack's teardown stops that one).
    services = [s for s in SERVICES if s != "mlflow"]
    stack = Stack(StackConfig.free_ports(tmp_path))
    try:
        stack.start(services)
        pids = {s: stack.pid(s) for s in services}
        assert all(pids.values())
        members = {pid for pgid in pids.values() for pid in _group_members(pgid)}
        assert members >= set(pids.values())
    finally:
        stopped = stack.stop()
    assert sorted(stopped) == sorted(services)
    for pid in members:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not list(tmp_path.glob("*.pid"))
    assert stack.stop() == []
    assert not any(stack.status().values())


def test_crashing_service_reports_its_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(cfg: StackConfig) -> dict:
        return {"scrape_configs": [{"job_name": "x", "no_such_field": 1}]}

    monkeypatch.setattr(devstack.stack, "prometheus_config", broken)
    stack = Stack(StackConfig.free_ports(tmp_path))
    t0 = time.monotonic()
    with pytest.raises(ServiceNotReadyError, match=r"(?s)prometheus exited with code \d+.*no_such_field"):
        stack.start(["prometheus"])
    took = time.monotonic() - t0
    # a bound with margin: the crash is reported when the process exits, not at the readiness timeout
    assert took < 10, f"the crash was reported after {took:.1f} s"
    assert not stack.status()["prometheus"]
    assert not stack.config.pid_file("prometheus").exists()


def test_cli_on_an_empty_state_dir(tmp_path: Path) -> None:
    env = {**os.environ, **StackConfig.free_ports(tmp_path).to_env()}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "devstack", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=Path(devstack.stack.REPO_ROOT),
            timeout=60,
        )

    status = cli("status")
    assert status.returncode == 3
    assert status.stdout.count("stopped") == len(SERVICES)
    down = cli("down")
    assert down.returncode == 0
    assert "nothing was running" in down.stdout
