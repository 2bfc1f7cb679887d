"""The local real stack: Prometheus, Alertmanager, node-exporter, a Pushgateway, MLflow, moto S3, an SMTP
sink, an Alertmanager webhook receiver and a sample model service (live predictions and serving metrics),
each a plain process bound to 127.0.0.1.

``make stack-up``/``make demo`` (through ``python -m devstack``) and the pytest session fixtures use this one
module, so the stack the demo runs on is the stack the tests run on. Ports and folders follow
``devstack/CONTRACT.md``.

State lives in :attr:`StackConfig.state_dir`: one sub-folder per service plus ``<name>.pid`` and
``<name>.log``. Processes are found again through their PID files only, so ``down`` from another shell
stops exactly what ``up`` started and nothing else.

Why not docker-compose.yaml: no Docker engine runs on these machines or in CI (``docker-compose config``
only validates that file). The Debian and PyPI servers started here are the same programs; this module
gives them free ports, their config files, readiness probes and a clean stop.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import smtplib
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from devstack.processes import (
    ManagedProcesses,
    ServiceNotReadyError,
    StackError,
    tail,
    use_bytecode_cache,
)
from devstack.processes import pycache_dir as pycache_dir  # public here before devstack.processes existed

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"

BUCKET = "modelwatch"
S3_ACCESS_KEY = "testing"
S3_SECRET_KEY = "testing"
S3_REGION = "us-east-1"
MAIL_FROM = "alertmanager@modelwatch.local"
MAIL_TO = "oncall@modelwatch.local"

#: Service names in start order: a service comes after everything it depends on.
SERVICES: tuple[str, ...] = (
    "smtp", "webhook", "s3", "mlflow", "node-exporter", "pushgateway", "alertmanager", "prometheus",
    "model-service",
)  # fmt: skip

#: What must be ready before a service is launched. Alertmanager only needs its receivers to deliver, and
#: Prometheus only to scrape and notify, but starting them in this order means the first notification and
#: the first scrape already succeed.
DEPENDS_ON: dict[str, tuple[str, ...]] = {
    "alertmanager": ("smtp", "webhook"),
    "prometheus": ("alertmanager", "node-exporter", "pushgateway"),
    # Last in SERVICES, so waiting for MLflow here holds back no other launch. It answers without MLflow
    # (its writes are retried), but the first predictions are then logged at once.
    "model-service": ("mlflow",),
}

#: The sample model service (devstack/model_service.py): what it logs to MLflow, under which names.
MODEL_SERVICE_EXPERIMENT = "sample-service-predictions"
MODEL_SERVICE_MODEL = "sample-classifier"
MODEL_SERVICE_VERSION = "1"
#: Default Prometheus scrape interval of the local stack (MODELWATCH_SCRAPE_INTERVAL): 5 s, so the live
#: configuration's 20 s rate windows (include/thresholds.live.yaml, four scrapes) see a burn of a minute.
DEFAULT_SCRAPE_INTERVAL = "5s"
_DURATION = re.compile(r"^(?:\d+(?:ms|s|m|h|d|w|y))+$")

DEFAULT_PORTS: dict[str, int] = {
    "prometheus_port": 19090,
    "alertmanager_port": 19093,
    "node_exporter_port": 19100,
    "pushgateway_port": 19091,
    "mlflow_port": 15000,
    "s3_port": 15002,
    "smtp_port": 18025,
    "webhook_port": 19095,
    "model_service_port": 18000,
}
_PORT_ENV: dict[str, str] = {attr: f"MODELWATCH_{attr.upper()}" for attr in DEFAULT_PORTS}
SCRAPE_INTERVAL_ENV = "MODELWATCH_SCRAPE_INTERVAL"
EXTRA_SCRAPE_CONFIGS_ENV = "MODELWATCH_PROMETHEUS_EXTRA_SCRAPE_CONFIGS"
_SERVICE_PORT_ATTR: dict[str, str] = {
    "prometheus": "prometheus_port",
    "alertmanager": "alertmanager_port",
    "node-exporter": "node_exporter_port",
    "pushgateway": "pushgateway_port",
    "mlflow": "mlflow_port",
    "s3": "s3_port",
    "smtp": "smtp_port",
    "webhook": "webhook_port",
    "model-service": "model_service_port",
}

READY_TIMEOUT = 60.0
#: Services allowed longer than ``ready_timeout``: MLflow imports ~2,000 modules twice (CLI, then the
#: uvicorn worker), which takes half a minute when other jobs share the two cores.
MIN_READY_TIMEOUT: dict[str, float] = {"mlflow": 120.0}
STOP_TIMEOUT = 10.0
CONNECTIONS_ENV_FILE = REPO_ROOT / "dev" / "connections.env"


class PortInUseError(StackError):
    """A service's port is already taken on 127.0.0.1 by some other process."""

    def __init__(self, service: str, port: int) -> None:
        """:param service: the service that wanted the port.
        :param port: the TCP port that is taken.
        """
        self.service = service
        self.port = port
        super().__init__(
            f"cannot start {service}: port 127.0.0.1:{port} is already in use by another process. "
            f"Stop that process (`make stack-down` if it is a modelwatch stack; `ss -ltnp 'sport = :{port}'` "
            f"shows who holds it) or choose another port with MODELWATCH_{service.upper().replace('-', '_')}_PORT."
        )


class MissingBinaryError(StackError):
    """An executable a service needs is not installed."""


@dataclass
class StackConfig:
    """Where the stack keeps its state and which loopback ports its services use.

    Defaults are those of ``devstack/CONTRACT.md``.
    """

    state_dir: Path = field(default_factory=lambda: REPO_ROOT / ".stack")
    prometheus_port: int = DEFAULT_PORTS["prometheus_port"]
    alertmanager_port: int = DEFAULT_PORTS["alertmanager_port"]
    node_exporter_port: int = DEFAULT_PORTS["node_exporter_port"]
    pushgateway_port: int = DEFAULT_PORTS["pushgateway_port"]
    mlflow_port: int = DEFAULT_PORTS["mlflow_port"]
    s3_port: int = DEFAULT_PORTS["s3_port"]
    smtp_port: int = DEFAULT_PORTS["smtp_port"]
    webhook_port: int = DEFAULT_PORTS["webhook_port"]
    model_service_port: int = DEFAULT_PORTS["model_service_port"]
    #: Prometheus' global scrape (and rule evaluation) interval, a Prometheus duration (``15s``, ``1m``).
    scrape_interval: str = DEFAULT_SCRAPE_INTERVAL
    #: A YAML file holding a list of scrape_configs appended to the generated ones (None: none).
    extra_scrape_configs: Path | None = None

    # Child processes run in other working directories: keep every path absolute.
    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir).absolute()
        if self.extra_scrape_configs is not None:
            self.extra_scrape_configs = Path(self.extra_scrape_configs).absolute()
        if not _DURATION.match(self.scrape_interval):
            raise StackError(
                f"scrape interval {self.scrape_interval!r} is not a Prometheus duration (e.g. 15s, 1m, 1m30s)"
            )

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> StackConfig:
        """Build the configuration from ``MODELWATCH_STACK_DIR``, ``MODELWATCH_<SERVICE>_PORT``,
        ``MODELWATCH_SCRAPE_INTERVAL`` and ``MODELWATCH_PROMETHEUS_EXTRA_SCRAPE_CONFIGS``.

        :param environ: the environment to read (default :data:`os.environ`).
        :returns: the configuration; unset variables take the contract defaults.
        :raises StackError: when a port variable is not an integer or the interval not a duration.
        """
        env = os.environ if environ is None else environ
        kwargs: dict[str, Any] = {}
        if env.get("MODELWATCH_STACK_DIR"):
            kwargs["state_dir"] = Path(env["MODELWATCH_STACK_DIR"])
        if env.get(SCRAPE_INTERVAL_ENV):
            kwargs["scrape_interval"] = env[SCRAPE_INTERVAL_ENV]
        if env.get(EXTRA_SCRAPE_CONFIGS_ENV):
            kwargs["extra_scrape_configs"] = Path(env[EXTRA_SCRAPE_CONFIGS_ENV])
        for attr, var in _PORT_ENV.items():
            if env.get(var):
                try:
                    kwargs[attr] = int(env[var])
                except ValueError:
                    raise StackError(f"{var}={env[var]!r} is not a port number") from None
        return cls(**kwargs)

    @classmethod
    def free_ports(
        cls,
        state_dir: str | os.PathLike[str],
        rng: random.Random | None = None,
        *,
        scrape_interval: str = DEFAULT_SCRAPE_INTERVAL,
        extra_scrape_configs: str | os.PathLike[str] | None = None,
    ) -> StackConfig:
        """Build a configuration whose ports are all free on 127.0.0.1 right now.

        Ports are drawn from 20000-31999, below Linux's ephemeral range (32768+) so outgoing connections
        do not grab them between this call and the start, and away from the contract defaults so a test
        stack never collides with a running demo stack.

        :param state_dir: folder for the stack's state (e.g. a pytest temporary folder).
        :param rng: random source (default: a fresh unseeded one).
        :param scrape_interval: Prometheus' scrape interval (e.g. ``1s`` for a test that waits on scrapes).
        :param extra_scrape_configs: YAML file of extra scrape_configs (see :attr:`extra_scrape_configs`).
        :returns: the configuration.
        """
        rng = rng or random.Random()
        taken = set(DEFAULT_PORTS.values())
        chosen: dict[str, int] = {}
        for attr in _PORT_ENV:
            for _ in range(1000):
                port = rng.randrange(20000, 32000)
                if port not in taken and port_is_free(port):
                    break
            else:
                raise StackError("could not find a free port in 20000-31999 on 127.0.0.1")
            taken.add(port)
            chosen[attr] = port
        extra = Path(extra_scrape_configs) if extra_scrape_configs is not None else None
        return cls(
            state_dir=Path(state_dir), scrape_interval=scrape_interval, extra_scrape_configs=extra, **chosen
        )

    def port(self, service: str) -> int:
        """:param service: one of :data:`SERVICES`.
        :returns: the TCP port of that service.
        """
        return getattr(self, _SERVICE_PORT_ATTR[_check_name(service)])

    # -- URLs ------------------------------------------------------------------------------------------
    @property
    def prometheus_url(self) -> str:
        """Base URL of Prometheus, e.g. ``http://127.0.0.1:19090``."""
        return f"http://{HOST}:{self.prometheus_port}"

    @property
    def alertmanager_url(self) -> str:
        """Base URL of Alertmanager."""
        return f"http://{HOST}:{self.alertmanager_port}"

    @property
    def node_exporter_url(self) -> str:
        """Metrics URL of the local node-exporter."""
        return f"http://{HOST}:{self.node_exporter_port}/metrics"

    @property
    def pushgateway_url(self) -> str:
        """Base URL of the Pushgateway (groups under ``/metrics/job/...``, ``/api/v1/metrics``)."""
        return f"http://{HOST}:{self.pushgateway_port}"

    @property
    def mlflow_url(self) -> str:
        """Tracking URI of the MLflow server."""
        return f"http://{HOST}:{self.mlflow_port}"

    @property
    def s3_url(self) -> str:
        """S3 endpoint URL of the moto server."""
        return f"http://{HOST}:{self.s3_port}"

    @property
    def model_service_url(self) -> str:
        """Base URL of the sample model service (``/predict``, ``/health``, ``/metrics``)."""
        return f"http://{HOST}:{self.model_service_port}"

    @property
    def webhook_url(self) -> str:
        """Base URL of the webhook receiver (Alertmanager posts to ``<webhook_url>/alerts``)."""
        return f"http://{HOST}:{self.webhook_port}"

    @property
    def smtp_url(self) -> str:
        """``smtp://host:port`` of the SMTP sink (for display)."""
        return f"smtp://{HOST}:{self.smtp_port}"

    # -- paths -----------------------------------------------------------------------------------------
    @property
    def prometheus_dir(self) -> Path:
        """Prometheus' folder (config, rules, data)."""
        return self.state_dir / "prometheus"

    @property
    def prometheus_data_dir(self) -> Path:
        """Prometheus TSDB folder; backfilled blocks go here before Prometheus starts."""
        return self.prometheus_dir / "data"

    @property
    def prometheus_config_path(self) -> Path:
        """The generated ``prometheus.yml``."""
        return self.prometheus_dir / "prometheus.yml"

    @property
    def serving_targets_dir(self) -> Path:
        """Folder of the ``serving-stand-in`` job's file_sd target files (``*.json``, written by
        :func:`devstack.serving_exporter.write_targets`; empty: the job has no target)."""
        return self.prometheus_dir / "serving-targets"

    @property
    def prometheus_rules_dir(self) -> Path:
        """Folder whose ``*.yml`` rule files Prometheus loads (the stack writes :data:`RULES_FILE_NAME` there)."""
        return self.prometheus_dir / "rules"

    @property
    def alertmanager_dir(self) -> Path:
        """Alertmanager's folder (config and data)."""
        return self.state_dir / "alertmanager"

    @property
    def alertmanager_config_path(self) -> Path:
        """The generated ``alertmanager.yml``."""
        return self.alertmanager_dir / "alertmanager.yml"

    @property
    def pushgateway_dir(self) -> Path:
        """The Pushgateway's folder (its persistence file, so a restart keeps the pushed groups)."""
        return self.state_dir / "pushgateway"

    @property
    def mlflow_dir(self) -> Path:
        """MLflow's folder (sqlite database and artifacts)."""
        return self.state_dir / "mlflow"

    @property
    def mlflow_db_path(self) -> Path:
        """MLflow's sqlite backend store."""
        return self.mlflow_dir / "mlflow.db"

    @property
    def mlflow_artifacts_dir(self) -> Path:
        """MLflow's default artifact root."""
        return self.mlflow_dir / "artifacts"

    @property
    def mail_dir(self) -> Path:
        """Folder where the SMTP sink stores mail (read it with :func:`read_messages`)."""
        return self.state_dir / "mail"

    @property
    def webhook_file(self) -> Path:
        """JSON-lines file of the webhook receiver (read it with :func:`read_webhook`)."""
        return self.state_dir / "webhook" / "received.jsonl"

    def pid_file(self, service: str) -> Path:
        """:param service: one of :data:`SERVICES`.
        :returns: ``<state_dir>/<service>.pid``.
        """
        return self.state_dir / f"{_check_name(service)}.pid"

    def log_file(self, service: str) -> Path:
        """:param service: one of :data:`SERVICES`.
        :returns: ``<state_dir>/<service>.log`` (stdout and stderr of the process).
        """
        return self.state_dir / f"{_check_name(service)}.log"

    # -- environments ----------------------------------------------------------------------------------
    def airflow_env(self) -> dict[str, str]:
        """Airflow connections to this stack, as ``AIRFLOW_CONN_*`` environment variables (JSON form).

        :returns: variable name -> JSON value for prometheus_default, mlflow_default, alertmanager_default,
            pushgateway_default, aws_default (moto) and smtp_default (the sink).
        """
        conns: dict[str, dict[str, Any]] = {
            "PROMETHEUS_DEFAULT": _http_conn("prometheus", self.prometheus_port),
            "MLFLOW_DEFAULT": _http_conn("mlflow", self.mlflow_port),
            "ALERTMANAGER_DEFAULT": _http_conn("alertmanager", self.alertmanager_port),
            "PUSHGATEWAY_DEFAULT": _http_conn("pushgateway", self.pushgateway_port),
            "AWS_DEFAULT": {
                "conn_type": "aws",
                "login": S3_ACCESS_KEY,
                "password": S3_SECRET_KEY,
                "extra": {"endpoint_url": self.s3_url, "region_name": S3_REGION},
            },
            "SMTP_DEFAULT": {
                "conn_type": "smtp",
                "host": HOST,
                "port": self.smtp_port,
                "extra": {"disable_tls": True, "disable_ssl": True},
            },
        }
        return {f"AIRFLOW_CONN_{k}": json.dumps(v, separators=(",", ":")) for k, v in conns.items()}

    def connections_env_text(self) -> str:
        """Render :meth:`airflow_env` as a shell-sourceable ``KEY='json'`` file (``dev/connections.env``).

        :returns: the file's text.
        """
        lines = [
            "# Airflow connections to the local devstack (default ports of devstack/CONTRACT.md).",
            "# Generated: .venv/bin/python -m devstack env --defaults > dev/connections.env",
            "# A test checks this file against devstack.stack.StackConfig().airflow_env(); do not edit by hand.",
        ]
        lines += [f"{k}='{v}'" for k, v in self.airflow_env().items()]
        return "\n".join(lines) + "\n"

    def to_env(self) -> dict[str, str]:
        """The ``MODELWATCH_*`` variables that make :meth:`from_env` rebuild this configuration.

        :returns: variable name -> value, for child processes (seeding, Airflow, the demo).
        """
        env = {"MODELWATCH_STACK_DIR": str(self.state_dir)}
        env.update({var: str(getattr(self, attr)) for attr, var in _PORT_ENV.items()})
        env[SCRAPE_INTERVAL_ENV] = self.scrape_interval
        if self.extra_scrape_configs is not None:
            env[EXTRA_SCRAPE_CONFIGS_ENV] = str(self.extra_scrape_configs)
        return env


def _http_conn(conn_type: str, port: int) -> dict[str, Any]:
    return {"conn_type": conn_type, "host": HOST, "port": port, "schema": "http"}


def _check_name(service: str) -> str:
    if service not in SERVICES:
        raise StackError(f"unknown service {service!r}; known: {', '.join(SERVICES)}")
    return service


def port_is_free(port: int, host: str = HOST) -> bool:
    """Tell whether a server could listen on ``host:port`` now.

    SO_REUSEADDR mirrors what the servers themselves do, so connections of a just-stopped server lingering
    in TIME_WAIT do not count as "in use".

    :param port: TCP port.
    :param host: address to try (default 127.0.0.1).
    :returns: True when binding succeeded.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


# -- generated configuration files ---------------------------------------------------------------------
def load_extra_scrape_configs(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a YAML list of Prometheus scrape_configs (what ``MODELWATCH_PROMETHEUS_EXTRA_SCRAPE_CONFIGS`` names).

    :param path: the YAML file: a list of mappings, each with a ``job_name`` (or ``scrape_configs:`` holding
        that list, as in a prometheus.yml fragment).
    :returns: the scrape configs.
    :raises StackError: naming the file and the problem (missing, not YAML, not a list of jobs).
    """
    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise StackError(f"{EXTRA_SCRAPE_CONFIGS_ENV}: cannot read {p}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise StackError(f"{EXTRA_SCRAPE_CONFIGS_ENV}: {p} is not valid YAML: {exc}") from None
    if isinstance(doc, dict) and set(doc) == {"scrape_configs"}:
        doc = doc["scrape_configs"]
    if doc is None:
        return []
    if not isinstance(doc, list) or not all(isinstance(j, dict) and j.get("job_name") for j in doc):
        raise StackError(
            f"{EXTRA_SCRAPE_CONFIGS_ENV}: {p} must hold a YAML list of scrape configs, each with a job_name"
        )
    return doc


def prometheus_config(cfg: StackConfig) -> dict[str, Any]:
    """The Prometheus configuration of the stack: scrape itself, the local node-exporter, the sample model
    service and the Pushgateway (``honor_labels: true``: the pushed ``job``/``instance`` labels stay) every
    :attr:`StackConfig.scrape_interval`, plus the jobs of
    :attr:`StackConfig.extra_scrape_configs`; notify the local Alertmanager, load rules from
    :attr:`StackConfig.prometheus_rules_dir`.

    :param cfg: the stack configuration.
    :returns: the configuration as a dict (YAML-ready).
    :raises StackError: when the extra scrape configs cannot be read or repeat a job name.
    """
    jobs: list[dict[str, Any]] = [
        {"job_name": "prometheus", "static_configs": [{"targets": [f"{HOST}:{cfg.prometheus_port}"]}]},
        {"job_name": "node-local", "static_configs": [{"targets": [f"{HOST}:{cfg.node_exporter_port}"]}]},
        {"job_name": "model-service", "static_configs": [{"targets": [f"{HOST}:{cfg.model_service_port}"]}]},
        # The series modelwatch pushes keep their job="modelwatch" (without honor_labels: job="pushgateway"
        # and exported_job="modelwatch").
        {"job_name": "pushgateway", "honor_labels": True,
         "static_configs": [{"targets": [f"{HOST}:{cfg.pushgateway_port}"]}]},
        # The serving-stack stand-in (devstack/serving_exporter.py: Seldon Core, MLServer, KServe, Knative
        # families), pods as targets with their pod label, the way Kubernetes discovery gives them: file_sd, so
        # a test points Prometheus at it (and away again) without a restart. No file: no target.
        {"job_name": "serving-stand-in",
         "file_sd_configs": [{"files": [str(cfg.serving_targets_dir / "*.json")], "refresh_interval": "5s"}]},
    ]  # fmt: skip
    own = len(jobs)
    if cfg.extra_scrape_configs is not None:
        jobs += load_extra_scrape_configs(cfg.extra_scrape_configs)
    names = [j["job_name"] for j in jobs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise StackError(
            f"{EXTRA_SCRAPE_CONFIGS_ENV}: job name(s) {', '.join(dupes)} already used by the stack's own jobs "
            f"({', '.join(names[:own])}) or repeated"
        )
    return {
        "global": {"scrape_interval": cfg.scrape_interval, "evaluation_interval": cfg.scrape_interval},
        "alerting": {
            "alertmanagers": [{"static_configs": [{"targets": [f"{HOST}:{cfg.alertmanager_port}"]}]}]
        },
        "rule_files": [str(cfg.prometheus_rules_dir / "*.yml")],
        "scrape_configs": jobs,
    }


#: the rule file the stack writes into :attr:`StackConfig.prometheus_rules_dir` (compose's copy:
#: compose/prometheus-rules/modelwatch.rules.yml)
RULES_FILE_NAME = "modelwatch.rules.yml"


def write_prometheus_rules(cfg: StackConfig) -> Path:
    """Write the rules of ``include/thresholds.yaml`` (``python -m modelwatch.rules render``) where the stack's
    Prometheus loads them: each saturation query recorded, and its saturation alert (``source="modelwatch-rules"``).

    :param cfg: the stack configuration.
    :returns: the file written.
    """
    from modelwatch.config import DEFAULT_CONFIG_PATH, load_config
    from modelwatch.rules import render

    path = cfg.prometheus_rules_dir / RULES_FILE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(load_config(DEFAULT_CONFIG_PATH)), encoding="utf-8")
    return path


def alertmanager_config(cfg: StackConfig) -> dict[str, Any]:
    """The Alertmanager configuration: every alert goes to the webhook receiver and by mail to the sink;
    modelwatch's three alert kinds get an explicit route and an inhibition rule.

    modelwatch labels its alerts ``{alertname, model, severity, source="modelwatch"}`` under three names
    (the defaults of ``alerting`` in thresholds.yaml; a deployment that renames them must rename them here
    and in compose/alertmanager.yml too):

    - ``ModelPredictionsDegraded``: slow predictions that saturated resources explain.
    - ``ModelPredictionsMissing``: an expected model without predictions or resource samples. Its route
      groups by ``alertname`` only: one Prometheus losing its targets silences every model it watches, and
      that is one incident, so one notification listing the models rather than one per model. It still
      goes to both receivers, like every other alert.
    - ``ModelPredictionsSlowUnexplained``: slow predictions no resource explains.

    Inhibition: a firing ``ModelPredictionsDegraded`` of a model holds back that model's
    ``ModelPredictionsSlowUnexplained`` (``equal: [model]``): the degraded alert already says the model is
    slow, and says why; once it resolves, a still-active unexplained alert is notified then. No rule has
    ``ModelPredictionsMissing`` as its source: a no-data alert is a gap in the monitoring, not a diagnosis,
    and must never hide an alert judged on data (a degraded alert of the same model from an earlier window
    stays active for hours; a Prometheus losing its targets must not silence the incidents already found).
    Both sides match ``source="modelwatch"`` so that another system's alert of the same name is left alone.

    Any other alert (tests post their own alert names) takes the catch-all routes, delivered as before.

    The saturation alerts of the stack's Prometheus rules (:func:`write_prometheus_rules`,
    ``source="modelwatch-rules"``) go to the webhook receiver only, one group per resource and instance.

    :param cfg: the stack configuration.
    :returns: the configuration as a dict (YAML-ready).
    """
    from modelwatch.rules import SOURCE as RULES_SOURCE

    source = 'source="modelwatch"'
    both_receivers: list[dict[str, Any]] = [
        # Sibling routes with continue: true deliver each alert to both receivers.
        {"receiver": "modelwatch-webhook", "continue": True},
        {"receiver": "modelwatch-email", "continue": True},
    ]
    return {
        "route": {
            "receiver": "modelwatch-webhook",
            "group_by": ["alertname", "model"],
            "group_wait": "1s",
            "group_interval": "5s",
            "repeat_interval": "4h",
            "routes": [
                {
                    # The rules' saturation alerts (modelwatch.rules) describe a host right now, not a verdict:
                    # webhook only, grouped per resource and instance. This machine's own load trips them in a
                    # busy test session, and mail is where tests count the DAG's notifications. On AMP they go
                    # to SNS (docs/aws.md).
                    "matchers": [f'source="{RULES_SOURCE}"'],
                    "group_by": ["alertname", "resource", "instance"],
                    "receiver": "modelwatch-webhook",
                },
                {
                    # No data: one notification per alert name (i.e. per incident), not per model. Its child
                    # routes inherit that grouping and deliver to both receivers; continue: false (the
                    # default) keeps the catch-all routes below from sending it a second time per model.
                    "matchers": ['alertname="ModelPredictionsMissing"', source],
                    "group_by": ["alertname"],
                    "routes": [dict(r) for r in both_receivers],
                },
                *both_receivers,
            ],
        },
        "inhibit_rules": [
            {
                # A degraded model's unexplained-slowness alert would say less about the same slowness.
                "source_matchers": ['alertname="ModelPredictionsDegraded"', source],
                "target_matchers": ['alertname="ModelPredictionsSlowUnexplained"', source],
                "equal": ["model"],
            },
        ],
        "receivers": [
            {
                "name": "modelwatch-webhook",
                "webhook_configs": [{"url": f"{cfg.webhook_url}/alerts", "send_resolved": True}],
            },
            {
                "name": "modelwatch-email",
                "email_configs": [
                    {
                        "to": MAIL_TO,
                        "from": MAIL_FROM,
                        "smarthost": f"{HOST}:{cfg.smtp_port}",
                        "require_tls": False,
                        "send_resolved": True,
                    }
                ],
            },
        ],
    }


def _write_yaml(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


# -- readiness probes ----------------------------------------------------------------------------------
def _http_ready(url: str, any_status: bool = False) -> bool:
    # An explicit empty ProxyHandler: a proxy from the environment must never see loopback probes.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as resp:
            # Read the body: node-exporter logs an error for every client that hangs up mid-response.
            resp.read()
            return resp.status == 200 or any_status
    except urllib.error.HTTPError as exc:
        return any_status and exc.code < 500
    except (OSError, ValueError):
        return False


def _smtp_ready(port: int) -> bool:
    try:
        with smtplib.SMTP(HOST, port, timeout=2) as smtp:
            code, _ = smtp.ehlo()
            return code == 250
    except (OSError, smtplib.SMTPException):
        return False


@dataclass(frozen=True)
class _Spec:
    binary: str
    # Where the binary comes from: "system" (Debian package) or "venv" (next to sys.executable).
    origin: str
    package: str
    # Text that must appear in /proc/<pid>/cmdline, so a recycled PID is never taken for our process.
    marker: str


_SPECS: dict[str, _Spec] = {
    "prometheus": _Spec("prometheus", "system", "prometheus", "prometheus"),
    "alertmanager": _Spec("prometheus-alertmanager", "system", "prometheus-alertmanager", "alertmanager"),
    "node-exporter": _Spec(
        "prometheus-node-exporter", "system", "prometheus-node-exporter", "prometheus-node-exporter"
    ),
    "pushgateway": _Spec(
        "prometheus-pushgateway", "system", "prometheus-pushgateway", "prometheus-pushgateway"
    ),
    "mlflow": _Spec("mlflow", "venv", "mlflow", "mlflow"),
    "s3": _Spec("moto_server", "venv", "moto[server]", "moto_server"),
    "smtp": _Spec(sys.executable, "python", "aiosmtpd", "devstack.smtp_sink"),
    "webhook": _Spec(sys.executable, "python", "", "devstack.webhook_receiver"),
    "model-service": _Spec(
        sys.executable, "python", "prometheus-fastapi-instrumentator", "devstack.model_service"
    ),
}


def find_binary(service: str) -> str:
    """Locate the executable of a service.

    :param service: one of :data:`SERVICES`.
    :returns: the absolute path of the executable.
    :raises MissingBinaryError: naming the binary and how to install it.
    """
    spec = _SPECS[_check_name(service)]
    if spec.origin == "python":
        return sys.executable
    if spec.origin == "venv":
        # Not resolved: a venv's python is a symlink to the base interpreter, its scripts are not there.
        candidate = Path(sys.executable).parent / spec.binary
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
        found = shutil.which(spec.binary)
        if found:
            return found
        raise MissingBinaryError(
            f"{spec.binary!r} (service {service}) is not installed next to {sys.executable} nor on PATH; "
            f"it comes from the Python package {spec.package!r}: run `make install`."
        )
    found = shutil.which(spec.binary)
    if found:
        return found
    raise MissingBinaryError(
        f"{spec.binary!r} (service {service}) is not on PATH. Run scripts/ensure-system-deps.sh "
        f"(or `apt-get install -y --no-install-recommends {spec.package}` on Debian/Ubuntu)."
    )


class Stack(ManagedProcesses):
    """Start, watch and stop the local stack described by a :class:`StackConfig`.

    Use as ``with Stack(cfg) as stack: ...`` (starts everything, always stops it), or call :meth:`start`
    and :meth:`stop` yourself. Every method works from a fresh object on the same state folder, which is
    how ``python -m devstack down`` stops what ``up`` started in another process. :meth:`status`,
    :meth:`is_running`, :meth:`pid` and :meth:`log_tail` come from
    :class:`~devstack.processes.ManagedProcesses`.
    """

    names = SERVICES

    def __init__(self, config: StackConfig | None = None, *, ready_timeout: float = READY_TIMEOUT) -> None:
        """:param config: the configuration (default :meth:`StackConfig.from_env`).
        :param ready_timeout: seconds each service gets to become ready (MLflow gets at least
            :data:`MIN_READY_TIMEOUT`).
        """
        super().__init__()
        self.config = config if config is not None else StackConfig.from_env()
        self.ready_timeout = ready_timeout
        #: Seconds from (latest) launch to ready, per service; for reports.
        self.ready_seconds: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"Stack(state_dir={str(self.config.state_dir)!r})"

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- public API ------------------------------------------------------------------------------------
    def start(self, services: Iterable[str] | None = None) -> Stack:
        """Start services in dependency order and wait until each is ready.

        Services already running from this state folder are kept (and checked for readiness). If anything
        fails, the services launched by this call are stopped again before the error propagates.

        :param services: names from :data:`SERVICES` (default: all). Dependencies are not added
            implicitly: ``start(["prometheus"])`` starts Prometheus only.
        :returns: ``self``.
        :raises MissingBinaryError: an executable is missing (nothing is started).
        :raises PortInUseError: a port is taken by another process (nothing is started).
        :raises ServiceNotReadyError: a service exited or was not ready within ``ready_timeout``.
        """
        wanted = set(SERVICES if services is None else [_check_name(s) for s in services])
        names = [s for s in SERVICES if s in wanted]
        todo = [s for s in names if not self.is_running(s)]
        # Every check before the first launch: a bad setup must not leave half a stack running.
        commands = {s: self._command(s) for s in todo}
        for s in todo:
            if not port_is_free(self.config.port(s)):
                raise PortInUseError(s, self.config.port(s))

        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        started: dict[str, float] = {}
        ready: set[str] = set()
        launched: list[str] = []
        try:
            for s in todo:
                self._wait_all(
                    {d: started[d] for d in DEPENDS_ON.get(s, ()) if d in started and d not in ready}, ready
                )
                self._prepare(s)
                self._spawn(s, *commands[s], cwd=self.config.state_dir)
                launched.append(s)
                started[s] = time.monotonic()
            now = time.monotonic()
            self._wait_all({s: started.get(s, now) for s in names if s not in ready}, ready)
            if "s3" in wanted:
                self.ensure_bucket()
        except BaseException:
            self._stop_groups(launched, STOP_TIMEOUT)
            raise
        return self

    def stop(self) -> list[str]:
        """Stop every service that has a live PID file (SIGTERM to its process group, SIGKILL after 10 s).

        The model service goes first and alone: on SIGTERM it writes its last predictions to MLflow and
        terminates its run, which needs MLflow still up.

        Safe to call when nothing runs and to call twice.

        :returns: the names of the services that were stopped.
        """
        first = self._stop_groups(["model-service"], STOP_TIMEOUT)
        return first + self._stop_groups(
            [s for s in reversed(SERVICES) if s != "model-service"], STOP_TIMEOUT
        )

    def stop_service(self, name: str) -> bool:
        """Stop one service (e.g. Prometheus, to backfill its data folder).

        :param name: one of :data:`SERVICES`.
        :returns: True when a running process was stopped.
        """
        return bool(self._stop_groups([_check_name(name)], STOP_TIMEOUT))

    def restart(self, name: str) -> None:
        """Stop one service if it runs, then start it and wait until it is ready.

        :param name: one of :data:`SERVICES`.
        """
        self.stop_service(name)
        self.start([name])

    def url(self, name: str) -> str:
        """:param name: one of :data:`SERVICES`.
        :returns: the URL users talk to for that service.
        """
        c = self.config
        return {
            "prometheus": c.prometheus_url,
            "alertmanager": c.alertmanager_url,
            "node-exporter": c.node_exporter_url,
            "pushgateway": c.pushgateway_url,
            "mlflow": c.mlflow_url,
            "s3": c.s3_url,
            "smtp": c.smtp_url,
            "webhook": f"{c.webhook_url}/alerts",
            "model-service": c.model_service_url,
        }[_check_name(name)]

    def describe(self) -> list[dict[str, Any]]:
        """:returns: one row per service with ``service``, ``url``, ``pid`` (or None) and ``log``."""
        return [
            {"service": s, "url": self.url(s), "pid": self.pid(s), "log": str(self.config.log_file(s))}
            for s in SERVICES
        ]

    def airflow_env(self) -> dict[str, str]:
        """:returns: the ``AIRFLOW_CONN_*`` variables for this stack (see :meth:`StackConfig.airflow_env`)."""
        return self.config.airflow_env()

    def s3_client(self) -> Any:
        """:returns: a boto3 S3 client for the moto server (credentials testing/testing, us-east-1)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.config.s3_url,
            aws_access_key_id=S3_ACCESS_KEY,
            aws_secret_access_key=S3_SECRET_KEY,
            region_name=S3_REGION,
        )

    def ensure_bucket(self, bucket: str = BUCKET) -> None:
        """Create a bucket on the moto server unless it exists.

        :param bucket: bucket name (default ``modelwatch``).
        """
        from botocore.exceptions import ClientError

        client = self.s3_client()
        try:
            client.head_bucket(Bucket=bucket)
        except ClientError:
            client.create_bucket(Bucket=bucket)

    def mail(self) -> list[dict[str, Any]]:
        """:returns: the mails received by the SMTP sink (see :func:`devstack.smtp_sink.read_messages`)."""
        from devstack.smtp_sink import read_messages

        return read_messages(self.config.mail_dir)

    def webhook_notifications(self) -> list[dict[str, Any]]:
        """:returns: the Alertmanager notifications received (see
        :func:`devstack.webhook_receiver.read_webhook`)."""
        from devstack.webhook_receiver import read_webhook

        return read_webhook(self.config.webhook_file)

    def write_configs(self) -> None:
        """(Re)write ``prometheus.yml``, its rule file and ``alertmanager.yml`` for the current ports."""
        _write_yaml(self.config.prometheus_config_path, prometheus_config(self.config))
        write_prometheus_rules(self.config)
        _write_yaml(self.config.alertmanager_config_path, alertmanager_config(self.config))

    # -- internals -------------------------------------------------------------------------------------
    def _command(self, name: str) -> tuple[list[str], dict[str, str]]:
        c = self.config
        exe = find_binary(name)
        port = str(c.port(name))
        env = dict(os.environ)
        listen = f"--web.listen-address={HOST}:{port}"
        if name == "prometheus":
            argv = [
                exe,
                f"--config.file={c.prometheus_config_path}",
                f"--storage.tsdb.path={c.prometheus_data_dir}",
                # Backfilled history is years old by the clock; a short retention deletes it at start.
                "--storage.tsdb.retention.time=3650d",
                listen,
                "--web.enable-admin-api",
                "--web.enable-lifecycle",
            ]
        elif name == "alertmanager":
            argv = [
                exe,
                f"--config.file={c.alertmanager_config_path}",
                f"--storage.path={c.alertmanager_dir / 'data'}",
                listen,
                # Empty: no gossip cluster, which otherwise delays readiness by ~2 s.
                "--cluster.listen-address=",
            ]
        elif name == "node-exporter":
            # No systemd here; the collector would only log errors on every scrape.
            argv = [exe, listen, "--no-collector.systemd"]
        elif name == "pushgateway":
            # Its own persistence file: the Debian default is /var/lib/prometheus/pushgateway.data, shared
            # by every Pushgateway on the machine. Written at least every 5 minutes and at a clean stop.
            argv = [exe, listen, f"--persistence.file={c.pushgateway_dir / 'pushgateway.data'}"]
        elif name == "mlflow":
            argv = [
                exe,
                "server",
                "--backend-store-uri",
                f"sqlite:///{c.mlflow_db_path}",
                "--default-artifact-root",
                str(c.mlflow_artifacts_dir),
                "--host",
                HOST,
                "--port",
                port,
                "--workers",
                "1",
            ]
            # Job execution starts a pool of extra workers (15 processes, 2.3 GiB); the stack needs none.
            env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        elif name == "s3":
            argv = [exe, "-H", HOST, "-p", port]
        elif name == "smtp":
            argv = [exe, "-m", "devstack.smtp_sink", "--host", HOST, "--port", port, "--dir", str(c.mail_dir)]
        elif name == "model-service":
            argv = [
                exe, "-m", "devstack.model_service", "--host", HOST, "--port", port, "--mlflow-url", c.mlflow_url,
                "--experiment", MODEL_SERVICE_EXPERIMENT, "--model", MODEL_SERVICE_MODEL,
                "--version", MODEL_SERVICE_VERSION, "--instance", HOST,
            ]  # fmt: skip
        else:
            argv = [
                exe, "-m", "devstack.webhook_receiver", "--host", HOST, "--port", port, "--out", str(c.webhook_file)
            ]  # fmt: skip
        if _SPECS[name].origin == "python":
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
            env["PYTHONUNBUFFERED"] = "1"
        if _SPECS[name].origin in ("python", "venv"):
            use_bytecode_cache(env)
        return argv, env

    def _prepare(self, name: str) -> None:
        c = self.config
        if name == "prometheus":
            c.prometheus_data_dir.mkdir(parents=True, exist_ok=True)
            c.serving_targets_dir.mkdir(parents=True, exist_ok=True)
            write_prometheus_rules(c)
            _write_yaml(c.prometheus_config_path, prometheus_config(c))
        elif name == "alertmanager":
            (c.alertmanager_dir / "data").mkdir(parents=True, exist_ok=True)
            _write_yaml(c.alertmanager_config_path, alertmanager_config(c))
        elif name == "pushgateway":
            c.pushgateway_dir.mkdir(parents=True, exist_ok=True)
        elif name == "mlflow":
            c.mlflow_artifacts_dir.mkdir(parents=True, exist_ok=True)
        elif name == "smtp":
            c.mail_dir.mkdir(parents=True, exist_ok=True)
        elif name == "webhook":
            c.webhook_file.parent.mkdir(parents=True, exist_ok=True)

    def _probe(self, name: str) -> bool:
        c = self.config
        if name == "prometheus":
            return _http_ready(f"{c.prometheus_url}/-/ready")
        if name == "alertmanager":
            return _http_ready(f"{c.alertmanager_url}/-/ready")
        if name == "node-exporter":
            return _http_ready(c.node_exporter_url)
        if name == "pushgateway":
            return _http_ready(f"{c.pushgateway_url}/-/ready")
        if name == "mlflow":
            return _http_ready(f"{c.mlflow_url}/health")
        if name == "s3":
            return _http_ready(f"{c.s3_url}/", any_status=True)
        if name == "webhook":
            return _http_ready(f"{c.webhook_url}/health")
        if name == "model-service":
            return _http_ready(f"{c.model_service_url}/health")
        return _smtp_ready(c.smtp_port)

    def _wait_all(self, started: dict[str, float], ready: set[str]) -> None:
        """Wait until every service in ``started`` (name -> launch time) answers its readiness probe, and
        add it to ``ready``.

        All are polled in turn, so ``ready_seconds`` measures each one and not the queue before it.
        """
        pending = dict(started)
        while pending:
            for name, t0 in list(pending.items()):
                self._check_alive(name)
                if self._probe(name):
                    self.ready_seconds[name] = time.monotonic() - t0
                    ready.add(name)
                    del pending[name]
                elif time.monotonic() - t0 > self._timeout(name):
                    log = self.config.log_file(name)
                    raise ServiceNotReadyError(
                        f"{name} was not ready after {self._timeout(name):.0f} s ({self.url(name)}). "
                        f"Last lines of {log}:\n{tail(log)}"
                    )
            if pending:
                time.sleep(0.1)

    def _timeout(self, name: str) -> float:
        return max(self.ready_timeout, MIN_READY_TIMEOUT.get(name, 0.0))

    def _matches(self, name: str, cmdline: str) -> bool:
        return _SPECS[name].marker in cmdline


def read_messages(directory: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Re-export of :func:`devstack.smtp_sink.read_messages`.

    :param directory: the sink's folder.
    :returns: the received mails.
    """
    from devstack.smtp_sink import read_messages as _read

    return _read(directory)


def read_webhook(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Re-export of :func:`devstack.webhook_receiver.read_webhook`.

    :param path: the receiver's output file.
    :returns: the received notifications.
    """
    from devstack.webhook_receiver import read_webhook as _read

    return _read(path)


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.2) -> Any:
    """Poll until ``predicate()`` returns something truthy.

    :param predicate: called repeatedly.
    :param timeout: seconds before giving up.
    :param interval: seconds between calls.
    :returns: the first truthy value.
    :raises TimeoutError: when nothing truthy came within ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout} s")
        time.sleep(interval)
