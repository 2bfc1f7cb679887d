"""docker-compose.yaml: valid, wired to the services it defines, pinned, loopback-only, no stray secrets.

Nothing is started and no Docker engine is needed. Every test reads the configuration that compose itself
resolves: ``docker-compose config`` (Debian's docker-compose 1.29, which ``make install`` installs through
scripts/ensure-system-deps.sh) run with a throwaway environment, i.e. as the file runs when no variable
and no ``.env`` is set: variables interpolated, anchors and merges applied, paths absolute. The raw file
is also validated against the current compose-spec schema (check-jsonschema), which Compose v2 follows.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from modelwatch.config import load_config

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yaml"
COMPOSE_DIR = REPO / "compose"
#: Mounted as a single file into the `webhook` service's python:3.11-slim container.
WEBHOOK_RECEIVER = REPO / "devstack" / "webhook_receiver.py"
#: Mounted as a single file into the `model-service` container (built from compose/model-service.Dockerfile).
MODEL_SERVICE = REPO / "devstack" / "model_service.py"
DOC = REPO / "docs" / "docker-compose.md"
THRESHOLDS = REPO / "include" / "thresholds.yaml"
BIN = Path(sys.executable).parent

#: The long-running Airflow services of the official file (LocalExecutor: no worker).
AIRFLOW_SERVICES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")
#: Connection variable -> its conn_type.
CONNECTIONS = {
    "AIRFLOW_CONN_PROMETHEUS_DEFAULT": "prometheus",
    "AIRFLOW_CONN_MLFLOW_DEFAULT": "mlflow",
    "AIRFLOW_CONN_ALERTMANAGER_DEFAULT": "alertmanager",
    "AIRFLOW_CONN_PUSHGATEWAY_DEFAULT": "pushgateway",
    "AIRFLOW_CONN_AWS_DEFAULT": "aws",
    "AIRFLOW_CONN_SMTP_DEFAULT": "smtp",
}
#: The local development credentials docs/docker-compose.md documents; nothing else may appear.
DEV_DEFAULTS = frozenset({
    "airflow",
    "minioadmin",
    "modelwatch-local-dev-jwt-secret-not-for-production",
    "modelwatch-local-dev-secret-key-not-for-production",
})  # fmt: skip

_SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|_KEY$|ACCESS_KEY|CREDENTIAL)", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@'\"]+:([^/\s@'\"]+)@", re.IGNORECASE)
_KEY_PATTERNS = (
    re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),  # AWS access key ids
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"),  # GitHub tokens
    re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b"),  # Slack tokens
)


# -- compose itself --------------------------------------------------------------------------------------


def _run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kwargs)


def _compose_cli() -> list[str]:
    """The compose command: ``docker-compose`` (what ``make install`` installs), else the v2 plugin."""
    exe = shutil.which("docker-compose")
    if exe:
        return [exe]
    if shutil.which("docker") and _run(["docker", "compose", "version"]).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("apt-get"):
        pytest.fail(
            "`docker-compose` is missing: `make install` installs it (scripts/ensure-system-deps.sh, Debian "
            "package docker-compose; as root or with sudo)"
        )
    pytest.skip(
        "neither `docker-compose` nor `docker compose` is installed and there is no apt to install it: "
        "install docker-compose >= 1.29 (or Docker Compose v2) to run the compose checks"
    )


def compose_config(workdir: Path, *files: Path, variables: dict[str, str] | None = None) -> dict[str, Any]:
    """``docker-compose -f FILE... config``, parsed: the configuration compose would run.

    The environment is thrown away (only PATH, and HOME in ``workdir``) and ``variables`` are the only
    ones set, through an env file that replaces the repository's ``.env``: the developer's shell and
    ``.env`` cannot change what the tests see.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    env_file = workdir / "compose.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in (variables or {}).items()), encoding="utf-8")
    cmd = [*_compose_cli(), "--env-file", str(env_file)]
    for path in files:
        cmd += ["-f", str(path)]
    proc = _run(
        [*cmd, "config"],
        cwd=REPO,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(workdir)},
    )
    assert proc.returncode == 0, f"`{' '.join(cmd)} config` rejects the file:\n{proc.stdout}{proc.stderr}"
    return yaml.safe_load(proc.stdout)


# -- reading the resolved configuration ------------------------------------------------------------------


def _env(service: dict[str, Any]) -> dict[str, str]:
    return {str(k): "" if v is None else str(v) for k, v in (service.get("environment") or {}).items()}


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def _published(entry: Any) -> tuple[str, str, str]:
    """(host ip, host port, container port) of a resolved ``ports`` entry: ``ip:host:container/proto``
    from docker-compose 1.29, the long syntax from Compose v2."""
    if isinstance(entry, dict):
        return str(entry.get("host_ip", "")), str(entry.get("published", "")), str(entry["target"])
    parts = str(entry).split("/")[0].rsplit(":", 2)
    ip, host, container = [""] * (3 - len(parts)) + parts
    return ip, host, container


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> source (absolute host path or volume name) of a service's resolved volumes:
    ``source:target[:mode]`` from docker-compose 1.29, the long syntax from Compose v2."""
    mounts = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            mounts[str(volume["target"])] = str(volume.get("source", ""))
        else:
            source, target = str(volume).split(":")[:2]
            mounts[target] = source
    return mounts


def _read_only(service: dict[str, Any]) -> set[str]:
    """Container paths a service mounts read-only: ``source:target:ro[,...]`` from docker-compose 1.29,
    ``read_only: true`` in Compose v2's long syntax."""
    found = set()
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            if volume.get("read_only"):
                found.add(str(volume["target"]))
        else:
            parts = str(volume).split(":")
            if len(parts) > 2 and "ro" in parts[2].split(","):
                found.add(parts[1])
    return found


def _build(service: dict[str, Any]) -> tuple[Path, str]:
    """(context directory, Dockerfile path relative to it) of a service that is built."""
    build = service["build"]
    return Path(build["context"]), str(build.get("dockerfile", "Dockerfile"))


def declared_ports(service: dict[str, Any]) -> set[int]:
    """Container ports a service declares: the container side of ``ports`` plus ``expose``."""
    ports = {int(_published(p)[2]) for p in service.get("ports") or []}
    ports |= {int(str(p).split("/")[0]) for p in service.get("expose") or []}
    return ports


def configured_ports(service: dict[str, Any]) -> set[int]:
    """Ports the service's own command, environment or health check says it listens on or probes."""
    text = (
        " ".join(_as_text(service.get(key)) for key in ("command", "entrypoint", "environment"))
        + " "
        + _as_text((service.get("healthcheck") or {}).get("test"))
    )
    found = {int(p) for p in re.findall(r"(?<![\w.])(?:[\w.-]*):(\d{2,5})\b", text)}
    found |= {int(p) for p in re.findall(r"--(?:port|listen-port)[ =](\d{2,5})\b", text)}
    found |= {int(p) for p in re.findall(r"\s-p\s(\d{2,5})\b", text)}
    return found


def listens_on(services: dict[str, Any], host: str, port: int) -> None:
    assert host in services, (
        f"{host!r} is not a service of docker-compose.yaml (services: {sorted(services)})"
    )
    svc = services[host]
    assert port in declared_ports(svc), (
        f"service {host!r} does not declare port {port} (ports/expose: {sorted(declared_ports(svc))})"
    )
    assert port in configured_ports(svc), (
        f"service {host!r} is not configured to listen on {port} (its command/environment/healthcheck name "
        f"{sorted(configured_ports(svc))})"
    )


def _flags(command: list[str]) -> dict[str, str]:
    return dict(arg[2:].split("=", 1) for arg in command if arg.startswith("--") and "=" in arg)


def _load_module(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    # Registered first: dataclasses look their module up in sys.modules while the file executes.
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return compose_config(tmp_path_factory.mktemp("compose"), COMPOSE_FILE)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


@pytest.fixture(scope="module")
def doc() -> str:
    assert DOC.is_file(), "docs/docker-compose.md is missing"
    return DOC.read_text(encoding="utf-8")


# -- validity --------------------------------------------------------------------------------------------


def test_validates_against_the_compose_spec() -> None:
    # docker-compose 1.29 (2021) validates against an older copy of the compose-spec schema; this is the
    # current one, which `docker compose` (v2) users run the file with.
    exe = BIN / "check-jsonschema"
    assert exe.exists(), f"{exe} is missing: it comes with requirements.lock (`make install`)"
    proc = _run([str(exe), "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compose_resolves_the_file_without_any_variable(compose: dict[str, Any]) -> None:
    # `compose` is `docker-compose config` with no variable set: it fails on a `${X:?}` or a bad file.
    # The named volumes are declared, so every non-path volume source is one of them.
    declared = set(compose.get("volumes") or {})
    for name, svc in compose["services"].items():
        for source in _mounts(svc).values():
            assert source.startswith("/") or source in declared, f"{name}: undeclared volume {source!r}"


# -- wiring ----------------------------------------------------------------------------------------------


def test_airflow_services_follow_the_official_layout(services: dict[str, Any]) -> None:
    for name in (*AIRFLOW_SERVICES, "airflow-init", "postgres"):
        assert name in services, f"service {name!r} is missing"
    # the official file's Celery services are the `celery` profile, off unless asked for
    for name in ("redis", "airflow-worker"):
        assert services[name].get("profiles") == ["celery"], f"{name}: {services[name].get('profiles')}"
    for name in (*AIRFLOW_SERVICES, "airflow-init"):
        svc = services[name]
        env = _env(svc)
        assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor", name
        assert "postgres" in urlsplit(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]).hostname, name
        # Built from the repository root: the Dockerfile pip-installs the modelwatch package (pyproject, src/).
        assert _build(svc) == (REPO, "compose/airflow.Dockerfile"), f"{name}: {svc.get('build')}"
        mounts = _mounts(svc)
        # the official file's folders (plugins/ is Airflow's plugins folder: the image's default
        # [core] plugins_folder, /opt/airflow/plugins), read-only: the containers never write into the repo
        for folder in ("dags", "include", "plugins"):
            assert mounts.get(f"/opt/airflow/{folder}") == str(REPO / folder), (
                f"{name} does not mount ./{folder}"
            )
            assert f"/opt/airflow/{folder}" in _read_only(svc), f"{name} mounts ./{folder} writable"
        assert "AIRFLOW__CORE__PLUGINS_FOLDER" not in _env(svc), f"{name}: the image's default plugins folder"
        deps = svc.get("depends_on") or {}
        assert deps.get("postgres", {}).get("condition") == "service_healthy", name
        if name != "airflow-init":
            assert deps.get("airflow-init", {}).get("condition") == "service_completed_successfully", name
            assert (svc.get("healthcheck") or {}).get("test"), f"{name} has no health check"
    url = urlsplit(_env(services["airflow-scheduler"])["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    listens_on(services, url.hostname or "", url.port or 80)


def test_the_celery_profile_runs_the_tasks_on_workers_with_redis_and_postgres(tmp_path: Path) -> None:
    # the documented switch: AIRFLOW__CORE__EXECUTOR=CeleryExecutor with `--profile celery`
    services = compose_config(tmp_path, COMPOSE_FILE, variables={"AIRFLOW__CORE__EXECUTOR": "CeleryExecutor"})[
        "services"
    ]
    worker = services["airflow-worker"]
    assert _as_text(worker["command"]) == "celery worker"
    assert _build(worker) == (REPO, "compose/airflow.Dockerfile")
    for name in (*AIRFLOW_SERVICES, "airflow-init", "airflow-worker"):
        env = _env(services[name])
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        broker = urlsplit(env["AIRFLOW__CELERY__BROKER_URL"])
        assert broker.scheme == "redis", name
        listens_on(services, broker.hostname or "", broker.port or 6379)
        backend = urlsplit(env["AIRFLOW__CELERY__RESULT_BACKEND"].removeprefix("db+"))
        assert backend.hostname == urlsplit(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]).hostname == "postgres"
    assert "healthcheck" in services["redis"] and "ping" in _as_text(services["redis"]["healthcheck"]["test"])
    # the tasks run on the worker: it waits for everything they reach, as the scheduler does for LocalExecutor
    deps = worker.get("depends_on") or {}
    for name, condition in (services["airflow-scheduler"].get("depends_on") or {}).items():
        assert deps.get(name) == condition, f"airflow-worker does not wait for {name}"
    assert deps.get("redis", {}).get("condition") == "service_healthy"
    assert "celery" in _as_text(worker["healthcheck"]["test"]) and "inspect ping" in _as_text(worker["healthcheck"]["test"])
    assert not worker.get("ports"), "a worker publishes no port"


@pytest.mark.parametrize("variable", sorted(CONNECTIONS))
def test_connections_name_services_on_their_ports(services: dict[str, Any], variable: str) -> None:
    values = {name: _env(services[name]).get(variable) for name in AIRFLOW_SERVICES}
    assert all(values.values()), f"{variable} missing in {[n for n, v in values.items() if not v]}"
    assert len(set(values.values())) == 1, f"{variable} differs between the Airflow services"
    conn = json.loads(next(iter(values.values())))
    assert conn["conn_type"] == CONNECTIONS[variable]
    if conn["conn_type"] == "aws":
        endpoint = urlsplit(conn["extra"]["endpoint_url"])
        host, port = endpoint.hostname or "", endpoint.port or 80
    else:
        host, port = conn["host"], int(conn["port"])
    listens_on(services, host, port)


def test_every_connection_id_of_the_config_has_a_variable(services: dict[str, Any]) -> None:
    cfg = load_config(THRESHOLDS)
    # The failure and missed-deadline emails' connection: alerting.smtp_conn_id (smtp_default by default).
    smtp_conn_id = getattr(cfg.alerting, "smtp_conn_id", "smtp_default")
    ids = {
        cfg.prometheus.conn_id,
        cfg.mlflow.conn_id,
        cfg.alerting.conn_id,
        cfg.publish.conn_id,
        cfg.storage.aws_conn_id,
        smtp_conn_id,
    }
    for name in AIRFLOW_SERVICES:
        env = _env(services[name])
        missing = sorted(i for i in ids if f"AIRFLOW_CONN_{i.upper()}" not in env)
        assert not missing, f"{name}: no AIRFLOW_CONN_* variable for connection(s) {missing}"
        assert env.get("MODELWATCH_CONFIG", "/opt/airflow/include/thresholds.yaml").startswith(
            "/opt/airflow/include/"
        )
        # The modelwatch package is installed in the image (no PYTHONPATH, no plugins folder).
        assert "PYTHONPATH" not in env, f"{name}: modelwatch is installed in the image, not put on PYTHONPATH"


def test_hooks_resolve_the_compose_connections(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from airflow.sdk import BaseHook

    from modelwatch.hooks import AlertmanagerHook, MlflowHook, PrometheusHook, PushgatewayHook

    env = _env(services["airflow-scheduler"])
    for variable in CONNECTIONS:
        # Own ids, so nothing another test registered under the default ids can interfere.
        monkeypatch.setenv(variable.replace("_DEFAULT", "_COMPOSE"), env[variable])
    assert PrometheusHook("prometheus_compose").base_url == "http://prometheus:9090"
    assert AlertmanagerHook("alertmanager_compose").base_url == "http://alertmanager:9093"
    assert MlflowHook("mlflow_compose").tracking_uri == "http://mlflow:5000"
    assert PushgatewayHook("pushgateway_compose").base_url == "http://pushgateway:9091"
    assert S3Hook(aws_conn_id="aws_compose").conn_config.endpoint_url == "http://minio:9000"
    smtp = BaseHook.get_connection("smtp_compose")
    assert (smtp.host, smtp.port, smtp.extra_dejson.get("disable_tls")) == ("mailpit", 1025, True)


def test_lake_bucket_is_the_one_the_init_service_creates(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    urls = {_env(services[name]).get("MODELWATCH_STORAGE_URL") for name in AIRFLOW_SERVICES}
    assert len(urls) == 1 and None not in urls, f"MODELWATCH_STORAGE_URL differs or is missing: {urls}"
    url = urls.pop()
    assert url.startswith("s3://")
    bucket = urlsplit(url).netloc
    monkeypatch.setenv("MODELWATCH_STORAGE_URL", url)
    assert load_config(THRESHOLDS).storage.base_url == url  # the DAG's schema accepts it

    inits = [
        n
        for n, s in services.items()
        if str(s.get("image", "")).startswith(("minio/mc:", "quay.io/minio/mc:"))
    ]
    assert len(inits) == 1, f"expected one mc init service, found {inits}"
    init = services[inits[0]]
    script = _as_text(init.get("entrypoint")) + "\n" + _as_text(init.get("command"))
    alias = re.search(r"mc alias set (\S+) (http://[^\s]+)", script)
    assert alias, "the init service sets no mc alias"
    target = urlsplit(alias.group(2))
    listens_on(services, target.hostname or "", target.port or 80)
    created = re.findall(rf"mc mb\b[^\n]*?\b{re.escape(alias.group(1))}/([a-z0-9][a-z0-9.-]+)", script)
    assert bucket in created, (
        f"the lake bucket {bucket!r} is not created by {inits[0]} (it creates {created})"
    )
    assert init["depends_on"][target.hostname]["condition"] == "service_healthy"
    sched_deps = services["airflow-scheduler"]["depends_on"]
    assert sched_deps[inits[0]]["condition"] == "service_completed_successfully"
    aws = json.loads(_env(services["airflow-scheduler"])["AIRFLOW_CONN_AWS_DEFAULT"])
    minio_env = _env(services[target.hostname or ""])
    assert (aws["login"], aws["password"]) == (minio_env["MINIO_ROOT_USER"], minio_env["MINIO_ROOT_PASSWORD"])


def test_mlflow_init_creates_the_configured_experiments(services: dict[str, Any]) -> None:
    mod = _load_module("compose_mlflow_init", COMPOSE_DIR / "mlflow_init.py")
    cfg = load_config(THRESHOLDS)
    assert mod.experiment_names(THRESHOLDS) == [e.name for e in cfg.mlflow.experiments]

    class Exp:
        def __init__(self, eid: str, stage: str) -> None:
            self.experiment_id, self.lifecycle_stage = eid, stage

    class FakeClient:
        def __init__(self) -> None:
            self.known = {"a": Exp("1", "active"), "b": Exp("2", "deleted")}
            self.calls: list[tuple[str, str]] = []

        def get_experiment_by_name(self, name: str) -> Exp | None:
            return self.known.get(name)

        def create_experiment(self, name: str) -> str:
            self.calls.append(("create", name))
            return "3"

        def restore_experiment(self, eid: str) -> None:
            self.calls.append(("restore", eid))

    client = FakeClient()
    assert mod.ensure_experiments(client, ["a", "b", "c"]) == {"a": "exists", "b": "restored", "c": "created"}
    assert client.calls == [("restore", "2"), ("create", "c")]

    init = services["mlflow-init"]
    args = _as_text(init["command"])
    uri = urlsplit(re.search(r"--tracking-uri[ =](\S+)", args).group(1))
    listens_on(services, uri.hostname or "", uri.port or 80)
    config_arg = re.search(r"--config[ =](\S+)", args).group(1)
    mounts = _mounts(init)
    assert any(
        config_arg.startswith(target + "/") and src == str(REPO / "include") for target, src in mounts.items()
    )
    assert (
        services["airflow-scheduler"]["depends_on"]["mlflow-init"]["condition"]
        == "service_completed_successfully"
    )
    assert "--workers=1" in args or "--workers=1" in _as_text(services["mlflow"]["command"])


# -- mounted configuration -------------------------------------------------------------------------------


def test_bind_mounts_and_build_context_exist(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        for source in _mounts(svc).values():
            if Path(source).is_relative_to(REPO):
                assert Path(source).exists(), f"{name} mounts {source}, which does not exist"
        if svc.get("build"):
            context, dockerfile = _build(svc)
            assert (context / dockerfile).is_file(), f"{name}: {context / dockerfile} is missing"
    # Each server reads the checked file: its --config.file is where the repository's file is mounted.
    for name in ("prometheus", "alertmanager"):
        config_file = _flags(services[name]["command"])["config.file"]
        assert _mounts(services[name]).get(config_file) == str(COMPOSE_DIR / f"{name}.yml"), name


def test_grafana_provisions_the_prometheus_service_and_the_generated_dashboard(services: dict[str, Any]) -> None:
    # tests/unit/test_dashboard.py checks the dashboard itself; this checks that Grafana is given it.
    svc = services["grafana"]
    mounts = _mounts(svc)
    provisioning = COMPOSE_DIR / "grafana" / "provisioning"
    assert mounts.get("/etc/grafana/provisioning") == str(provisioning)
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    url = urlsplit(source["url"])
    listens_on(services, url.hostname or "", url.port or 80)
    assert svc["depends_on"][url.hostname]["condition"] == "service_healthy"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "modelwatch.yml").read_text())["providers"]
    folder = provider["options"]["path"]
    assert provider["type"] == "file"
    assert mounts.get(folder) == str(COMPOSE_DIR / "grafana" / "dashboards"), (
        f"the dashboard provider reads {folder}, where compose mounts nothing of compose/grafana/dashboards"
    )
    home = _env(svc)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert Path(home).parent == Path(folder)
    assert (COMPOSE_DIR / "grafana" / "dashboards" / Path(home).name).is_file()
    listens_on(services, "grafana", int(_env(svc)["GF_SERVER_HTTP_PORT"]))
    # No admin password in the file: it comes from GRAFANA_ADMIN_PASSWORD, unset here.
    assert _env(svc)["GF_SECURITY_ADMIN_PASSWORD"] == ""


@pytest.mark.parametrize(
    ("tool", "args", "path"),
    [("promtool", ["check", "config"], "prometheus.yml"), ("amtool", ["check-config"], "alertmanager.yml")],
)
def test_mounted_configs_pass_their_checker(tool: str, args: list[str], path: str) -> None:
    exe = shutil.which(tool)
    if exe is None:
        pytest.skip(
            f"`{tool}` is not installed (Debian: apt-get install prometheus / prometheus-alertmanager)"
        )
    proc = _run([exe, *args, str(COMPOSE_DIR / path)])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _amtool() -> str:
    exe = shutil.which("amtool")
    if exe is None:
        pytest.skip("`amtool` is not installed (Debian: apt-get install prometheus-alertmanager)")
    return exe


def _devstack_alertmanager_config() -> dict[str, Any]:
    from devstack.stack import StackConfig, alertmanager_config

    return alertmanager_config(StackConfig())


def test_devstack_alertmanager_config_passes_amtool(tmp_path: Path) -> None:
    # The local stack writes this dict as YAML (devstack.stack.Stack.write_configs); amtool judges that file.
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(_devstack_alertmanager_config(), sort_keys=False), encoding="utf-8")
    proc = _run([_amtool(), "check-config", str(path)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 inhibit rules" in proc.stdout, proc.stdout


@pytest.mark.parametrize("which", ["compose", "devstack"])
@pytest.mark.parametrize(
    "alertname",
    [
        "ModelPredictionsDegraded",
        "ModelPredictionsMissing",
        "ModelPredictionsSlowUnexplained",
        "SomeTestAlert",
    ],
)
def test_every_alert_kind_reaches_both_receivers(which: str, alertname: str, tmp_path: Path) -> None:
    if which == "compose":
        path = COMPOSE_DIR / "alertmanager.yml"
    else:
        path = tmp_path / "alertmanager.yml"
        path.write_text(yaml.safe_dump(_devstack_alertmanager_config(), sort_keys=False), encoding="utf-8")
    labels = [f"alertname={alertname}", "model=fraud-detector", "severity=warning", "source=modelwatch"]
    proc = _run([_amtool(), "config", "routes", "test", f"--config.file={path}", *labels])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.split() == ["modelwatch-webhook,modelwatch-email"], proc.stdout


def test_compose_alertmanager_has_the_devstack_routes_and_inhibition() -> None:
    # Timings and receivers' addresses differ (compose: 5s/1m, Mailpit; devstack: 1s/5s for the tests);
    # what is routed where, grouped how, and what inhibits what must not.
    compose_am = yaml.safe_load((COMPOSE_DIR / "alertmanager.yml").read_text(encoding="utf-8"))
    devstack_am = _devstack_alertmanager_config()
    assert compose_am["route"]["group_by"] == devstack_am["route"]["group_by"]
    assert compose_am["route"]["routes"] == devstack_am["route"]["routes"]
    assert compose_am["inhibit_rules"] == devstack_am["inhibit_rules"]
    assert [r["name"] for r in compose_am["receivers"]] == [r["name"] for r in devstack_am["receivers"]]
    # A no-data alert inhibits nothing.
    for rule in devstack_am["inhibit_rules"]:
        assert not any("ModelPredictionsMissing" in m for m in rule["source_matchers"]), rule


def test_prometheus_and_alertmanager_targets_are_services(services: dict[str, Any]) -> None:
    prom = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text(encoding="utf-8"))
    targets = [
        t
        for section in [*prom["scrape_configs"], *prom["alerting"]["alertmanagers"]]
        for sc in section.get("static_configs", [])
        for t in sc["targets"]
    ]
    assert "node-exporter:9100" in targets, "Prometheus must scrape node-exporter (the DAG's resource series)"
    for target in targets:
        host, port = target.rsplit(":", 1)
        listens_on(services, host, int(port))

    am = yaml.safe_load((COMPOSE_DIR / "alertmanager.yml").read_text(encoding="utf-8"))
    endpoints = [am["global"]["smtp_smarthost"]]
    for receiver in am["receivers"]:
        endpoints += [urlsplit(w["url"]).netloc for w in receiver.get("webhook_configs", [])]
        endpoints += [e["smarthost"] for e in receiver.get("email_configs", []) if "smarthost" in e]
    for endpoint in endpoints:
        host, port = endpoint.rsplit(":", 1)
        listens_on(services, host, int(port))


def test_prometheus_keeps_the_labels_pushed_with_the_verdict_series(services: dict[str, Any]) -> None:
    # without honor_labels the verdict series would carry job="pushgateway" and exported_job="modelwatch"
    from devstack.stack import StackConfig, prometheus_config

    prom = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text(encoding="utf-8"))
    for where, doc in (("compose/prometheus.yml", prom), ("devstack", prometheus_config(StackConfig()))):
        jobs = {j["job_name"]: j for j in doc["scrape_configs"]}
        assert jobs["pushgateway"].get("honor_labels") is True, where
    assert "pushgateway" in services


def test_webhook_service_runs_devstack_receiver(services: dict[str, Any], tmp_path: Path) -> None:
    svc = services["webhook"]
    script = svc["command"][1]
    assert _mounts(svc)[script] == str(WEBHOOK_RECEIVER)
    # The compose command's flags are the receiver's own.
    flags = svc["command"][2:]
    args = _load_module("compose_webhook_receiver", WEBHOOK_RECEIVER).build_parser().parse_args(flags)
    assert (args.host, args.port, str(args.out)) == ("0.0.0.0", 9095, "/data/received.jsonl")

    # Run as the container does: the file alone, standard library only (-I -S: neither the repo nor
    # site-packages on sys.path), until SIGTERM. Bound to loopback and a free port here, not 0.0.0.0:9095.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "data" / "received.jsonl"
    cmd = [sys.executable, "-I", "-S", str(WEBHOOK_RECEIVER), "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(
        [*cmd, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    base = f"http://127.0.0.1:{port}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with opener.open(f"{base}/health", timeout=5) as resp:
                    assert resp.status == 200
                break
            except OSError:
                assert proc.poll() is None, proc.communicate()[0]
                assert time.monotonic() < deadline, "the receiver did not answer /health within 10 s"
                time.sleep(0.05)
        note = {
            "status": "firing",
            "alerts": [{"status": "firing", "labels": {"alertname": "X", "model": "m"}}],
        }
        req = urllib.request.Request(
            f"{base}/alerts", data=json.dumps(note).encode(), headers={"Content-Type": "application/json"}
        )
        with opener.open(req, timeout=5) as resp:
            assert resp.status == 200
        with opener.open(f"{base}/alerts", timeout=5) as resp:
            assert json.loads(resp.read()) == [note]
        assert [json.loads(line) for line in out.read_text().splitlines()] == [note]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            output = proc.communicate(timeout=10)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            output = proc.communicate()[0]
    assert proc.returncode == 0, output
    # `docker compose logs webhook` shows one line per alert.
    assert "firing X model=m severity=-" in output.splitlines()


def test_model_service_runs_devstack_service_logged_to_mlflow(services: dict[str, Any]) -> None:
    svc = services["model-service"]
    assert _build(svc) == (COMPOSE_DIR, "model-service.Dockerfile")
    script = svc["command"][1]
    assert _mounts(svc)[script] == str(MODEL_SERVICE)
    # The compose command's flags are the service's own.
    args = _load_module("compose_model_service", MODEL_SERVICE).build_parser().parse_args(svc["command"][2:])
    assert (args.host, args.port) == ("0.0.0.0", 8000)
    listens_on(services, "model-service", args.port)
    mlflow = urlsplit(args.mlflow_url)
    listens_on(services, mlflow.hostname or "", mlflow.port or 80)
    assert svc["depends_on"][mlflow.hostname]["condition"] == "service_healthy"
    assert (args.experiment, args.model, args.version) == (
        "sample-service-predictions",
        "sample-classifier",
        "1",
    )
    assert "/health" in _as_text(svc["healthcheck"]["test"])
    assert services["prometheus"]["depends_on"]["model-service"]["condition"] == "service_healthy"


def test_prometheus_labels_the_model_service_as_the_host_of_its_predictions(services: dict[str, Any]) -> None:
    # The DAG joins a prediction to series whose `instance` (port stripped) equals the prediction's
    # `instance` tag: the service's serving series and node-exporter's resource series must both carry it.
    prom = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text(encoding="utf-8"))
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    job = jobs["model-service"]
    assert [t for sc in job["static_configs"] for t in sc["targets"]] == ["model-service:8000"]
    tag = _flags(services["model-service"]["command"])["instance"]
    relabel = [r for r in job.get("relabel_configs", []) if r.get("target_label") == "instance"]
    assert relabel and relabel[-1]["replacement"].split(":")[0] == tag
    node_hosts = {t.rsplit(":", 1)[0] for sc in jobs["node"]["static_configs"] for t in sc["targets"]}
    assert tag in node_hosts, (
        f"predictions tagged instance={tag} would join no node-exporter series ({node_hosts})"
    )


# -- hygiene ---------------------------------------------------------------------------------------------


def test_published_ports_bind_loopback_only(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        assert svc.get("network_mode") != "host", f"{name} uses the host network, bypassing 127.0.0.1 binding"
        for entry in svc.get("ports") or []:
            ip, host_port, _ = _published(entry)
            assert ip == "127.0.0.1", (
                f"{name} publishes {entry!r} on all interfaces; use 127.0.0.1:HOST:CONTAINER"
            )
            assert host_port, f"{name}: {entry!r} publishes on a random port; name the host port"


def test_images_are_pinned(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        image = svc.get("image")
        assert image or svc.get("build"), f"{name} has neither image nor build"
        if image:
            last = image.rsplit("/", 1)[-1]
            assert ":" in last or "@sha256:" in image, f"{name}: image {image!r} has no tag"
            assert not image.endswith(":latest"), f"{name}: image {image!r} uses :latest"
    dockerfile = (COMPOSE_DIR / "airflow.Dockerfile").read_text(encoding="utf-8")
    bases = re.findall(r"^FROM\s+(\S+)", dockerfile, re.MULTILINE)
    assert bases == ["apache/airflow:3.3.2"], bases
    service_bases = re.findall(
        r"^FROM\s+(\S+)", (COMPOSE_DIR / "model-service.Dockerfile").read_text(encoding="utf-8"), re.MULTILINE
    )
    assert service_bases == ["python:3.11.13-slim"], service_bases
    pinned = re.search(r"^apache-airflow(?:\[[a-z,]+\])?==(\S+)$", (REPO / "requirements.txt").read_text(), re.MULTILINE)
    assert pinned and bases[0].endswith(":" + pinned.group(1)), (
        "the image's Airflow differs from requirements.txt"
    )


def test_image_requirements_match_the_lock() -> None:
    def pins(path: Path) -> dict[str, str]:
        out = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            m = re.match(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==(\S+)", line.strip())
            if m:
                out[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(2)
        return out

    wanted = pins(COMPOSE_DIR / "requirements-airflow.txt")
    lock = pins(REPO / "requirements.lock")
    assert {"mlflow", "apache-airflow-providers-amazon"} <= wanted.keys()
    assert "[s3fs]" in (COMPOSE_DIR / "requirements-airflow.txt").read_text()
    drift = {name: (v, lock.get(name)) for name, v in wanted.items() if lock.get(name) != v}
    assert not drift, f"compose/requirements-airflow.txt differs from requirements.lock: {drift}"
    service = pins(COMPOSE_DIR / "requirements-model-service.txt")
    assert {
        "fastapi",
        "uvicorn",
        "scikit-learn",
        "prometheus-fastapi-instrumentator",
        "mlflow-skinny",
    } <= service.keys()
    drift = {name: (v, lock.get(name)) for name, v in service.items() if lock.get(name) != v}
    assert not drift, f"compose/requirements-model-service.txt differs from requirements.lock: {drift}"


def _secret_values(doc: Any, where: str) -> Iterator[tuple[str, str]]:
    """(where, value) of every credential-looking value in a parsed YAML document."""

    def walk(node: Any, path: str) -> Iterator[tuple[str, str]]:
        if isinstance(node, dict):
            for key, value in node.items():
                sub = f"{path}.{key}"
                if isinstance(value, str | int) and _SECRET_NAME.search(str(key)):
                    yield sub, str(value)
                if isinstance(value, str) and str(key).startswith("AIRFLOW_CONN_"):
                    conn = json.loads(value)
                    if conn.get("password"):
                        yield f"{sub}.password", str(conn["password"])
                    yield from walk(conn.get("extra") or {}, f"{sub}.extra")
                yield from walk(value, sub)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield from walk(value, f"{path}[{i}]")
        elif isinstance(node, str):
            for m in _URL_PASSWORD.finditer(node):
                yield f"{path} (URL)", m.group(1)

    yield from walk(doc, where)


def test_secret_scanner_finds_what_it_should() -> None:
    doc = {
        "environment": {
            "X_PASSWORD": "hunter2",
            "DB": "postgresql://u:pw@db/x",
            "AIRFLOW_CONN_A": '{"password":"p"}',
        }
    }
    assert {v for _, v in _secret_values(doc, "t")} == {"hunter2", "pw", "p"}


def test_no_secret_but_the_documented_dev_defaults(compose: dict[str, Any], doc: str) -> None:
    found = list(_secret_values(compose, "docker-compose.yaml"))
    for path in sorted(COMPOSE_DIR.glob("*.yml")):
        found += _secret_values(yaml.safe_load(path.read_text(encoding="utf-8")), f"compose/{path.name}")
    found = [(where, value) for where, value in found if value and not value.startswith("$")]
    assert found, "the scanner found nothing at all: it is broken"
    unexpected = [(where, value) for where, value in found if value not in DEV_DEFAULTS]
    assert not unexpected, f"credentials other than the documented local defaults: {unexpected}"
    for value in {v for _, v in found}:
        assert f"`{value}`" in doc, f"{value!r} is used but not documented in docs/docker-compose.md"
    texts = [COMPOSE_FILE, DOC, WEBHOOK_RECEIVER, *sorted(p for p in COMPOSE_DIR.iterdir() if p.is_file())]
    for path in texts:
        text = path.read_text(encoding="utf-8")
        for pattern in _KEY_PATTERNS:
            assert not pattern.search(text), f"{path.relative_to(REPO)} contains what looks like a real key"


# -- the documentation -----------------------------------------------------------------------------------


def test_doc_covers_running_services_and_real_systems(doc: str, services: dict[str, Any]) -> None:
    for needle in (
        "docker compose up -d",
        "http://127.0.0.1:8080",
        "airflow / airflow",
        "endpoint_url",
        "s3://your-bucket/prefix",
        "sigv4",
        "aws_conn_id",
        "region",
        "path_prefix: /alertmanager",
        "_PIP_ADDITIONAL_REQUIREMENTS",
    ):
        assert needle in doc, f"docs/docker-compose.md does not mention {needle!r}"
    for name in services:
        assert f"`{name}`" in doc, f"service {name!r} is not described in docs/docker-compose.md"
    for name, svc in services.items():
        for entry in svc.get("ports") or []:
            _, host_port, _ = _published(entry)
            assert f"127.0.0.1:{host_port}" in doc, (
                f"{name}'s address 127.0.0.1:{host_port} is not in the doc"
            )


def _doc_overrides(doc: str) -> list[str]:
    blocks = re.findall(r"```yaml\n(.*?)```", doc, re.DOTALL)
    return [b for b in blocks if "docker-compose.override.yaml" in b]


#: The variable the doc's examples read from .env; set in the throwaway env file to see it filled in.
_DOC_VARIABLES = {"ALERTMANAGER_PASSWORD": "from-dot-env"}


def test_doc_override_examples_resolve_through_the_hooks(
    doc: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from modelwatch.hooks import AlertmanagerHook, PrometheusHook

    overrides = _doc_overrides(doc)
    assert len(overrides) >= 3, "expected override examples for S3, AMP and an existing Alertmanager"
    seen: set[str] = set()
    for n, text in enumerate(overrides):
        override = yaml.safe_load(text)
        assert set(override["services"]) == set(AIRFLOW_SERVICES), (
            "an override must reach every Airflow service"
        )
        # What compose runs: docker-compose.yaml merged with the example, as it merges a real override.
        path = tmp_path / f"example-{n}" / "docker-compose.override.yaml"
        path.parent.mkdir()
        path.write_text(text, encoding="utf-8")
        merged = compose_config(path.parent, COMPOSE_FILE, path, variables=_DOC_VARIABLES)["services"]
        overridden = set(override["services"]["airflow-scheduler"]["environment"])
        envs = [{k: v for k, v in _env(merged[name]).items() if k in overridden} for name in AIRFLOW_SERVICES]
        assert all(e == envs[0] for e in envs), "the example resolves differently per Airflow service"
        env = envs[0]
        assert set(env) == overridden
        for variable, value in env.items():
            if not variable.startswith("AIRFLOW_CONN_"):
                continue
            conn = json.loads(value)
            conn_type = conn["conn_type"]
            seen.add(conn_type)
            written = str(override["services"]["airflow-scheduler"]["environment"][variable])
            for name, filled in _DOC_VARIABLES.items():
                if f"${{{name}}}" in written:  # compose fills it in from .env, as the doc says
                    assert filled in value and "${" not in value, (variable, value)
            conn_id = f"doc_{n}_{variable.removeprefix('AIRFLOW_CONN_').lower()}"
            monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", value)
            if conn_type == "prometheus":
                hook = PrometheusHook(conn_id)
            elif conn_type == "alertmanager":
                hook = AlertmanagerHook(conn_id)
            else:
                if conn_type == "aws":
                    assert "endpoint_url" not in conn.get("extra", {}), "real AWS needs no endpoint_url"
                continue
            hook.get_conn()  # raises on a bad auth mode or an incomplete SigV4 setup
            extra = conn.get("extra", {})
            if extra.get("auth") == "sigv4":
                assert hook.base_url.startswith("https://aps-workspaces.")
                assert extra.get("aws_conn_id"), "SigV4 examples must name their AWS connection"
                aws_var = f"AIRFLOW_CONN_{extra['aws_conn_id'].upper()}"
                assert aws_var in env, f"{aws_var} is used but not defined in the same example"
                if conn_type == "alertmanager":
                    assert hook.base_url.endswith("/alertmanager")
        if "MODELWATCH_STORAGE_URL" in env:
            assert env["MODELWATCH_STORAGE_URL"] == "s3://your-bucket/prefix"
    assert {"aws", "prometheus", "alertmanager"} <= seen
