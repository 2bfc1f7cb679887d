"""Airflow beside the local stack: API server, scheduler, DAG processor and triggerer as separate processes.

``python -m devstack up`` starts the stack (:mod:`devstack.stack`) and then this; ``down`` stops both. The
e2e tests start the same components on a free port in a temporary folder.

Layout under the stack's state folder (``MODELWATCH_STACK_DIR``, default ``<repo>/.stack``)::

    airflow/                         AIRFLOW_HOME: airflow.cfg, airflow.db (SQLite), logs/
    airflow/simple_auth_manager_passwords.json   the ``admin`` password, generated once per state folder
    airflow/jwt_secret               the JWT secret all components share, generated once per state folder
    airflow/airflow.env              ``export`` lines for ``airflow`` CLI commands against this Airflow
    airflow-<component>.pid          one per component, like the stack's services
    airflow-<component>.log          stdout and stderr of the component
    airflow-migrate.log              output of the last ``airflow db migrate``
    lake/                            the default lake (``MODELWATCH_STORAGE_URL=file://<state>/lake``)

Every component binds 127.0.0.1 only (the log servers of the scheduler, the triggerer and the Celery workers,
which would listen on all interfaces, are not started: the API server reads the local log files). Each component runs
in its own session and process group. Stopping sends SIGTERM to the groups (the API server's once the
scheduler has exited), then SIGTERM and SIGKILL to every process left in the sessions, which also reaches
task processes the supervisor moved into process groups of their own. Processes are found again through
their PID files only, never by name.

Why not ``airflow standalone`` (read in 3.3.2): it keeps the four commands as children of one foreground
process that merges their output, stops them only on Ctrl-C, starts the log servers (all interfaces) and
writes no PID file, so neither ``down`` from another shell nor a test fixture could find or stop them.

Two engines (``AirflowConfig.engine``; ``MODELWATCH_AIRFLOW_ENGINE`` for :meth:`AirflowConfig.from_stack`):

- ``sqlite-local`` (the default): ``airflow.db`` (SQLite) and the LocalExecutor, nothing else to run.
- ``postgres-celery``, what production runs: the metadata database is the PostgreSQL cluster of
  :mod:`devstack.engine` (started here, before ``airflow db migrate``, and stopped after the components),
  ``CeleryExecutor`` with Redis as the broker and the result backend in the same PostgreSQL
  (``db+postgresql+psycopg2://...``, Airflow's own default made explicit, as the official
  docker-compose.yaml does), and ``celery_workers`` Celery workers, components ``celery-worker-<k>``
  (``airflow celery worker --celery-hostname celery-worker-<k>@127.0.0.1 --concurrency N --queues default
  --skip-serve-logs``), each with its PID and log file like the other components. The workers need the
  broker and the result backend only (Airflow 3 workers never touch the metadata database: task processes
  talk to the API server's execution API), so they are launched before ``airflow db migrate`` and import
  Airflow while it runs. Extra files: ``airflow-engine.json`` (which engine folder and ports this Airflow
  uses, so ``down`` from another shell finds and stops it) and the engine's own files (see
  :mod:`devstack.engine`; in this state folder unless ``AirflowConfig.engine_config`` names another).

  A Celery worker serves its task logs on ``[logging] worker_log_server_port`` (8793) through
  ``airflow.utils.serve_logs``, which binds ``[::]`` or ``0.0.0.0`` with no setting for the address in
  Airflow 3.3.2: it is not started (``--skip-serve-logs``); every worker writes the same local log folder
  and the API server reads it there, as with the LocalExecutor. All workers run on this one machine, so
  the hostname Airflow records per task instance (``socket.getfqdn()`` by default) would be the same for
  all of them: each worker's task processes report its Celery node name instead (``[core]
  hostname_callable`` = :func:`worker_hostname`), which is what tells in ``TaskInstance.hostname`` (UI,
  REST API) which worker ran a try. A worker does not listen on any port (Redis carries its control
  messages).

Why not ``apache-airflow-client`` (3.3.2 on PyPI, not in requirements.lock): it would replace only the
request building in :meth:`AirflowApi._send`; it neither gets nor renews the ``/auth/token`` JWT and has no
paging, no retry of SQLite's "database is locked" answers and no waits, which are the rest of the class.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import secrets
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from devstack import runner
from devstack.engine import EngineConfig, EngineServices
from devstack.processes import (
    ManagedProcesses,
    ServiceNotReadyError,
    StackError,
    pid_alive,
    session_members,
    signal_group,
    signal_session,
    tail,
    use_bytecode_cache,
)
from devstack.sqlite_args import CONNECT_ARGS
from devstack.stack import HOST, MissingBinaryError, PortInUseError, StackConfig, port_is_free

#: The components. Task processes report to the API server's execution API, so the scheduler (which starts
#: them) is launched once the API server answers, and the API server is stopped after the scheduler.
COMPONENTS: tuple[str, ...] = ("api-server", "scheduler", "dag-processor", "triggerer")
#: Text that must appear in /proc/<pid>/cmdline of the component's leader (the API server renames itself
#: ``airflow api_server -- host:... port:...``), so a recycled PID is never taken for ours.
_MARKERS: dict[str, tuple[str, ...]] = {
    "api-server": ("api-server", "api_server"),
    "scheduler": ("scheduler",),
    "dag-processor": ("dag-processor",),
    "triggerer": ("triggerer",),
}
#: The engines an Airflow can run on (see the module docstring); the first is the default.
Engine = Literal["sqlite-local", "postgres-celery"]
ENGINES: tuple[Engine, ...] = ("sqlite-local", "postgres-celery")
ENGINE_ENV = "MODELWATCH_AIRFLOW_ENGINE"
#: Component names of the Celery workers: ``celery-worker-1``, ``celery-worker-2``, ...
WORKER_PREFIX = "celery-worker-"
_WORKER_NAME = re.compile(rf"{WORKER_PREFIX}[1-9][0-9]*")
#: The queue the workers consume: Airflow's ``[operators] default_queue``.
CELERY_QUEUE = "default"
#: Names the Celery node of the worker whose task processes read it (:func:`worker_hostname`).
WORKER_HOSTNAME_ENV = "MODELWATCH_WORKER_HOSTNAME"
#: Modules each Celery worker imports once, before it forks its pool (Celery's ``imports`` setting, through
#: ``[celery] extra_celery_config``), so that every task process inherits them instead of importing them
#: again: what Airflow's own ``on_celery_import_modules`` does for numpy and the standard operators. Without
#: them a task spends about 2 s more than under the LocalExecutor, whose task processes are forked from the
#: scheduler and inherit what it imported (the plugins, among them the modelwatch view's FastAPI app): 35 s
#: more for tests/e2e/test_scheduler.py's runs on two cores. Then what parsing the DAG file and the tasks import.
CELERY_PRELOAD: tuple[str, ...] = (
    "airflow.sdk.execution_time.task_runner",
    "modelwatch.plugin",
    "modelwatch.tasks",
    "modelwatch.monitoring_dag",
    "airflow.providers.standard.operators.trigger_dagrun",
    "airflow.timetables.interval",
    "pandas",
    "pyarrow.parquet",
    "s3fs",
    "airflow.providers.amazon.aws.fs.s3",
    "scipy.stats",
    "matplotlib.pyplot",
    "modelwatch.extract",
    "modelwatch.correlate",
    "modelwatch.evaluate",
    "modelwatch.report",
)
#: Components reported by /api/v2/monitor/health.
_HEALTH_KEYS: dict[str, str] = {
    "scheduler": "scheduler",
    "dag-processor": "dag_processor",
    "triggerer": "triggerer",
}

_PASSWORD_ALPHABET = "abcdefghkmnpqrstuvwxyzABCDEFGHKMNPQRSTUVWXYZ23456789"

DEFAULT_PORT = 18080
PORT_ENV = "MODELWATCH_AIRFLOW_PORT"
ADMIN_USER = "admin"
DAG_ID = runner.DAG_ID
AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"

#: Seconds for all four components to report healthy. The API server alone answers after 12-17 s on two
#: idle cores; four Airflow processes importing at once on a busy machine take much longer.
READY_TIMEOUT = 240.0
#: Seconds between SIGTERM and SIGKILL. The scheduler stops its executor's workers before it exits.
STOP_TIMEOUT = 20.0
MIGRATE_TIMEOUT = 300.0


class AirflowApiError(StackError):
    """The Airflow REST API answered with an error status."""

    def __init__(self, method: str, url: str, status: int, detail: str) -> None:
        """:param method: HTTP method. :param url: URL. :param status: HTTP status. :param detail: body."""
        self.status = status
        self.detail = detail
        super().__init__(f"{method} {url} -> HTTP {status}: {detail[:2000]}")


@dataclass
class AirflowConfig:
    """Where a local Airflow keeps its state, which port its API server uses, what it connects to.

    :ivar state_dir: the stack's state folder; AIRFLOW_HOME is ``<state_dir>/airflow``.
    :ivar port: API server (UI and REST API) port on 127.0.0.1.
    :ivar connections: ``AIRFLOW_CONN_*`` variables (see :meth:`devstack.stack.StackConfig.airflow_env`).
    :ivar lake_url: ``MODELWATCH_STORAGE_URL`` for the tasks (default ``file://<state_dir>/lake``).
    :ivar parallelism: ``[core] parallelism``: task processes at once (the default 32 is far too many for
        two cores).
    :ivar refresh_interval: ``[dag_processor] refresh_interval``: seconds between looks for new DAG files
        (Airflow's default is 300).
    :ivar min_file_process_interval: seconds between re-parses of a known DAG file.
    :ivar extra_env: more variables for every component (they win over everything above).
    :ivar engine: ``sqlite-local`` (SQLite, LocalExecutor) or ``postgres-celery`` (PostgreSQL, Redis,
        CeleryExecutor and :attr:`celery_workers` workers); see the module docstring.
    :ivar celery_workers: Celery workers (``postgres-celery`` only).
    :ivar worker_concurrency: task processes per Celery worker (``--concurrency``); with
        :attr:`parallelism` equal to ``celery_workers * worker_concurrency`` every slot can be used.
    :ivar engine_config: where the PostgreSQL and the Redis of ``postgres-celery`` keep their state and which
        ports they use (default: this state folder, the default ports of :mod:`devstack.engine`).
    """

    state_dir: Path = field(default_factory=lambda: StackConfig().state_dir)
    port: int = DEFAULT_PORT
    connections: dict[str, str] = field(default_factory=dict)
    lake_url: str | None = None
    parallelism: int = 4
    refresh_interval: int = 10
    min_file_process_interval: int = 30
    extra_env: dict[str, str] = field(default_factory=dict)
    engine: Engine = "sqlite-local"
    celery_workers: int = 2
    worker_concurrency: int = 2
    engine_config: EngineConfig | None = None

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir).absolute()
        if self.lake_url is None:
            self.lake_url = f"file://{self.state_dir / 'lake'}"
        if self.engine not in ENGINES:
            raise StackError(
                f"unknown Airflow engine {self.engine!r}; known: {', '.join(ENGINES)} ({ENGINE_ENV})"
            )
        if self.celery and self.celery_workers < 1:
            raise StackError(f"postgres-celery needs at least one Celery worker, not {self.celery_workers}")
        if self.celery and self.engine_config is None:
            self.engine_config = EngineConfig(state_dir=self.state_dir)

    @classmethod
    def from_stack(
        cls, stack_config: StackConfig, environ: dict[str, str] | None = None, **kwargs: Any
    ) -> AirflowConfig:
        """The Airflow of a stack: same state folder, the stack's connections, port from ``MODELWATCH_AIRFLOW_PORT``.

        :param stack_config: the stack's configuration.
        :param environ: the environment to read (default :data:`os.environ`).
        :param kwargs: other fields of :class:`AirflowConfig` (they win).
        :returns: the configuration.
        :raises StackError: when ``MODELWATCH_AIRFLOW_PORT`` is not an integer.
        """
        env = os.environ if environ is None else environ
        if "port" not in kwargs and env.get(PORT_ENV):
            try:
                kwargs["port"] = int(env[PORT_ENV])
            except ValueError:
                raise StackError(f"{PORT_ENV}={env[PORT_ENV]!r} is not a port number") from None
        kwargs.setdefault("connections", stack_config.airflow_env())
        if "engine" not in kwargs and env.get(ENGINE_ENV):
            kwargs["engine"] = env[ENGINE_ENV]
        if kwargs.get("engine") == "postgres-celery" and "engine_config" not in kwargs:
            kwargs["engine_config"] = EngineConfig.from_env(dict(env))
        return cls(state_dir=stack_config.state_dir, **kwargs)

    # -- engine ----------------------------------------------------------------------------------------
    @property
    def celery(self) -> bool:
        """Whether this Airflow runs on ``postgres-celery``."""
        return self.engine == "postgres-celery"

    @property
    def workers(self) -> tuple[str, ...]:
        """The Celery workers' component names (none on ``sqlite-local``)."""
        return tuple(f"{WORKER_PREFIX}{k}" for k in range(1, self.celery_workers + 1)) if self.celery else ()

    @property
    def components(self) -> tuple[str, ...]:
        """Every component of this Airflow: :data:`COMPONENTS`, then :attr:`workers`."""
        return COMPONENTS + self.workers

    @staticmethod
    def worker_node(component: str) -> str:
        """:param component: a worker's component name. :returns: its Celery node name, e.g.
        ``celery-worker-1@127.0.0.1`` (``--celery-hostname``; also the hostname of its task instances)."""
        return f"{_check(component)}@{HOST}"

    # -- paths and URLs --------------------------------------------------------------------------------
    @property
    def home(self) -> Path:
        """AIRFLOW_HOME (``<state_dir>/airflow``)."""
        return self.state_dir / "airflow"

    @property
    def db_path(self) -> Path:
        """The SQLite metadata database."""
        return self.home / "airflow.db"

    @property
    def passwords_file(self) -> Path:
        """The simple auth manager's password file (``{"admin": "<password>"}``)."""
        return self.home / "simple_auth_manager_passwords.json"

    @property
    def lake_path(self) -> Path | None:
        """The lake's local folder when it is a ``file://`` URL, else None."""
        assert self.lake_url is not None
        return Path(self.lake_url.removeprefix("file://")) if self.lake_url.startswith("file://") else None

    @property
    def base_url(self) -> str:
        """The UI and REST API, e.g. ``http://127.0.0.1:18080``."""
        return f"http://{HOST}:{self.port}"

    def pid_file(self, component: str) -> Path:
        """:param component: one of :data:`COMPONENTS`. :returns: ``<state_dir>/airflow-<component>.pid``."""
        return self.state_dir / f"airflow-{_check(component)}.pid"

    def log_file(self, component: str) -> Path:
        """:param component: one of :data:`COMPONENTS`. :returns: ``<state_dir>/airflow-<component>.log``."""
        return self.state_dir / f"airflow-{_check(component)}.log"

    @property
    def env_file(self) -> Path:
        """Shell file with :meth:`env` (``export KEY='value'`` lines), written at start, for ``airflow``
        CLI commands against this Airflow: ``set -a; . <state>/airflow/airflow.env; set +a``."""
        return self.home / "airflow.env"

    @property
    def migrate_log(self) -> Path:
        """Output of the last ``airflow db migrate``."""
        return self.state_dir / "airflow-migrate.log"

    @property
    def engine_marker(self) -> Path:
        """``airflow-engine.json``: the engine folder and ports of a running ``postgres-celery`` Airflow, so that a
        configuration without them (``down`` from another shell) still finds and stops it."""
        return self.state_dir / "airflow-engine.json"

    # -- environment -----------------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        """The variables every component (and ``airflow`` CLI commands such as ``backfill create``) needs.

        :returns: variable name -> value; put them over the calling environment.
        """
        assert self.lake_url is not None
        env = runner.airflow_env(self.home, self.connections, self.lake_url)
        if self.celery:
            assert self.engine_config is not None
            # the metadata database, the broker and the result backend (db+ the same database)
            env.update(self.engine_config.airflow_env())
            env.update({
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.worker_concurrency),
                # Airflow's default made explicit (it warns in every process otherwise): a message a worker
                # took and never acknowledged (it died) goes back to the queue after a day; a task whose
                # worker died is retried by the scheduler long before ([scheduler] task_instance_heartbeat_timeout)
                "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "86400",
                "AIRFLOW__CELERY__EXTRA_CELERY_CONFIG": json.dumps({"imports": list(CELERY_PRELOAD)}),
            })  # fmt: skip
        else:
            env.update({
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.db_path}",
                # wait for SQLite's lock instead of failing (a scheduler that fails on it exits)
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": "devstack.sqlite_args.CONNECT_ARGS",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            })  # fmt: skip
        env.update({
            "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__AUTH_MANAGER": AUTH_MANAGER,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.passwords_file),
            "AIRFLOW__API__BASE_URL": self.base_url,
            "AIRFLOW__API__HOST": HOST,
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": str(self.refresh_interval),
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": str(self.min_file_process_interval),
            # The scheduler's health server would listen on all interfaces; the API's health is enough.
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            # the connection form's Test button (off by default in Airflow 3): each modelwatch hook's test_connection
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "PYTHONUNBUFFERED": "1",
        })  # fmt: skip
        env.update(self.extra_env)
        return env


def _check(component: str) -> str:
    if component not in COMPONENTS and not _is_worker(component):
        raise StackError(
            f"unknown Airflow component {component!r}; known: {', '.join(COMPONENTS)}, {WORKER_PREFIX}<k>"
        )
    return component


def _is_worker(component: str) -> bool:
    return _WORKER_NAME.fullmatch(component) is not None


def worker_hostname() -> str:
    """``[core] hostname_callable`` of the Celery workers' task processes: the worker's Celery node name
    (``MODELWATCH_WORKER_HOSTNAME``, set per worker), else the machine's FQDN as Airflow's default.

    All workers share this machine, so ``socket.getfqdn()`` would give every task instance the same
    hostname; the node name tells which worker ran a try (``TaskInstance.hostname``). Stable within a process,
    as Airflow needs: the API server refuses heartbeats from another hostname than the one a try started with.
    """
    return os.environ.get(WORKER_HOSTNAME_ENV) or socket.getfqdn()


def free_port(avoid: Iterable[int] = (), rng: random.Random | None = None) -> int:
    """A TCP port free on 127.0.0.1 now, from 20000-31999 (below the ephemeral range, like
    :meth:`devstack.stack.StackConfig.free_ports`).

    :param avoid: ports not to return (e.g. the stack's).
    :param rng: random source.
    :returns: the port.
    """
    rng = rng or random.Random()
    taken = {*avoid, DEFAULT_PORT}
    for _ in range(1000):
        port = rng.randrange(20000, 32000)
        if port not in taken and port_is_free(port):
            return port
    raise StackError("could not find a free port in 20000-31999 on 127.0.0.1")


def airflow_binary() -> str:
    """:returns: the ``airflow`` executable next to this interpreter (or on PATH).
    :raises MissingBinaryError: when Airflow is not installed.
    """
    candidate = Path(sys.executable).parent / "airflow"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("airflow")
    if found:
        return found
    raise MissingBinaryError(
        f"'airflow' is not installed next to {sys.executable} nor on PATH; it comes from the Python package "
        "'apache-airflow': run `make install`."
    )


class AirflowServices(ManagedProcesses):
    """Start, watch and stop the Airflow components of an :class:`AirflowConfig`: the four of
    :data:`COMPONENTS`, and on ``postgres-celery`` the engine (:class:`devstack.engine.EngineServices`) and the
    Celery workers.

    Use as ``with AirflowServices(cfg) as af: ...`` or call :meth:`start`/:meth:`stop`. A fresh object on
    the same state folder finds running components through their PID files (that is how ``down`` works).
    :meth:`status`, :meth:`is_running`, :meth:`pid` and :meth:`log_tail` come from
    :class:`~devstack.processes.ManagedProcesses`.
    """

    names = COMPONENTS
    label = "airflow "

    def __init__(self, config: AirflowConfig, *, ready_timeout: float = READY_TIMEOUT) -> None:
        """:param config: the configuration. :param ready_timeout: seconds until all components are healthy."""
        super().__init__()
        self.config = config
        # this configuration's components (the Celery workers depend on it); status() and the rest use them
        self.names = config.components  # type: ignore[misc]
        self.ready_timeout = ready_timeout
        #: the PostgreSQL and Redis of ``postgres-celery`` (None on ``sqlite-local``)
        self.engine: EngineServices | None = EngineServices(config.engine_config) if config.celery else None
        self._since: datetime | None = None
        self._started = time.monotonic()
        self._launched: list[str] = []
        self._deferred: list[str] = []
        self._celery_app: Any = None
        #: seconds from launch to healthy per component, plus ``migrate`` (and ``engine``); for reports
        self.ready_seconds: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"AirflowServices(state_dir={str(self.config.state_dir)!r}, port={self.config.port})"

    def __enter__(self) -> AirflowServices:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- public API ------------------------------------------------------------------------------------
    def start(self) -> AirflowServices:
        """Migrate the metadata DB, start what is not running, wait until every component is healthy.

        :returns: ``self``.
        :raises MissingBinaryError: Airflow is not installed.
        :raises PortInUseError: the API port is taken by another process (nothing is started).
        :raises ServiceNotReadyError: a component exited or was not healthy in time (what this call
            launched is stopped again).
        """
        self.launch()
        try:
            self.wait_ready()
        except BaseException:
            self._abort()
            raise
        return self

    def launch(self) -> list[str]:
        """The first half of :meth:`start`: migrate, launch the API server, the DAG processor and the triggerer
        if they are not running, and return without waiting. The scheduler follows in :meth:`wait_ready` once
        the API server answers: task processes report to its execution API, and a task started before it
        answers fails and waits for a retry.

        On ``postgres-celery`` the engine is started first (what is not running of it), then the Celery
        workers that are not running, then the migration; a call that finds only workers missing (one was
        stopped or killed) launches those and does not migrate.

        For callers with other work to do meanwhile (the e2e fixture seeds the stack); call
        :meth:`wait_ready` afterwards and :meth:`stop` whatever happens.

        :returns: the components launched.
        :raises MissingBinaryError: Airflow (or PostgreSQL, Redis) is not installed.
        :raises PortInUseError: the API port (or an engine port) is taken by another process (nothing is
            started).
        :raises ServiceNotReadyError: ``airflow db migrate`` failed, or the engine did not start.
        """
        c = self.config
        todo = [name for name in self.names if not self.is_running(name)]
        exe = airflow_binary()
        self.check_port()
        c.home.mkdir(parents=True, exist_ok=True)
        self.password()  # written before the API server starts, so it never generates one of its own
        self.write_env_file()
        env = self._env()
        self._launched = []
        self._deferred = [n for n in todo if n == "scheduler"]
        # A health record older than the launch may be a previous instance's last heartbeat.
        self._since = None
        workers = [n for n in todo if _is_worker(n)]
        try:
            if self.engine is not None and todo:
                t0 = time.monotonic()
                self.engine.start()
                self._write_engine_marker()
                self.ready_seconds["engine"] = time.monotonic() - t0
            # Workers need the broker and the result backend only, not Airflow's tables: they import Airflow
            # while the migration runs.
            for name in workers:
                self._spawn(name, self._argv(exe, name), _component_env(name, env, c), cwd=c.home)
                self._launched.append(name)
            if len(workers) < len(todo):
                self._migrate(exe, env)
                self._since = datetime.now(UTC)
            self._started = time.monotonic()
            for name in todo:
                if name not in self._deferred and name not in workers:
                    self._spawn(name, self._argv(exe, name), _component_env(name, env, c), cwd=c.home)
                    self._launched.append(name)
        except BaseException:
            self._abort()
            raise
        return list(self._launched)

    def check_port(self) -> None:
        """Fail early when the API server is not running and its port is taken.

        :raises PortInUseError: naming the port and ``MODELWATCH_AIRFLOW_PORT``.
        """
        if not self.is_running("api-server") and not port_is_free(self.config.port):
            raise PortInUseError("airflow", self.config.port)

    def wait_ready(self) -> AirflowServices:
        """Wait until the API server answers (then launch the scheduler if :meth:`launch` left it) and reports
        scheduler, DAG processor and triggerer healthy with heartbeats from after the launch, and every Celery
        worker answers a ping through the broker, within ``ready_timeout`` of the launch.

        :returns: ``self``.
        :raises ServiceNotReadyError: a component exited or was not healthy in time.
        """
        deadline = self._started + self.ready_timeout
        pending = set(self.names)
        health: dict[str, Any] | None = None
        while True:
            for name in self.names:
                if name not in self._deferred:
                    self._check_alive(name)
            health = self.health()
            now = time.monotonic() - self._started
            if health is not None:
                if "api-server" in pending:
                    self.ready_seconds["api-server"] = now
                    pending.discard("api-server")
                for name in self._deferred:
                    self._spawn(name, self._argv(airflow_binary(), name),
                                _component_env(name, self._env(), self.config), cwd=self.config.home)  # fmt: skip
                    self._launched.append(name)
                self._deferred = []
                for name, key in _HEALTH_KEYS.items():
                    if name in pending and _fresh_and_healthy(health.get(key), self._since):
                        self.ready_seconds[name] = now
                        pending.discard(name)
            waiting = [n for n in self.config.workers if n in pending]
            if waiting:
                for name in self.ping_workers(waiting):
                    self.ready_seconds[name] = time.monotonic() - self._started
                    pending.discard(name)
            if not pending:
                return self
            if time.monotonic() > deadline:
                logs = "\n".join(
                    f"--- last lines of {self.config.log_file(n)}:\n{self.log_tail(n, 15)}"
                    for n in sorted(pending)
                )
                raise ServiceNotReadyError(
                    f"Airflow was not healthy after {self.ready_timeout:.0f} s: {', '.join(sorted(pending))} not "
                    f"ready (health: {health}).\n{logs}"
                )
            time.sleep(0.5)

    def ping_workers(self, workers: Iterable[str] | None = None, timeout: float = 1.0) -> list[str]:
        """Ping Celery workers through the broker (Celery's remote control, as ``celery inspect ping``).

        :param workers: component names (default: every worker of the configuration).
        :param timeout: seconds to wait for the answers.
        :returns: the workers that answered: they consume their queue.
        """
        names = list(self.config.workers if workers is None else workers)
        if not names or self.config.engine_config is None:
            return []
        nodes = {self.config.worker_node(n): n for n in names}
        try:
            if self._celery_app is None:
                from celery import Celery

                self._celery_app = Celery("modelwatch-devstack", broker=self.config.engine_config.broker_url)
            replies = self._celery_app.control.ping(destination=list(nodes), timeout=timeout)
        except Exception:  # the broker is not there yet, or a worker answered garbage: not ready
            return []
        return sorted(nodes[node] for reply in replies or [] for node in reply if node in nodes)

    def stop(self) -> list[str]:
        """Stop every component with a live PID file (Celery workers also when this configuration has none:
        their PID files are found in the state folder), every process left in their sessions, and then the
        engine of ``postgres-celery`` (the one of :attr:`AirflowConfig.engine_config`, or the one
        ``airflow-engine.json`` names).

        :returns: the components that were running (and ``postgres``, ``redis`` when the engine was).
        """
        found = sorted(p.name.removeprefix("airflow-").removesuffix(".pid")
                       for p in self.config.state_dir.glob(f"airflow-{WORKER_PREFIX}*.pid"))  # fmt: skip
        stopped = self._stop([*self.names, *(n for n in found if _is_worker(n) and n not in self.names)])
        engine = self.engine if self.engine is not None else self._marked_engine()
        if engine is not None:
            t0 = time.monotonic()
            stopped += engine.stop()
            self.ready_seconds["stop-engine"] = time.monotonic() - t0
            self.config.engine_marker.unlink(missing_ok=True)
        if self._celery_app is not None:
            with contextlib.suppress(Exception):
                self._celery_app.close()
            self._celery_app = None
        return stopped

    def kill(self, component: str, sig: signal.Signals = signal.SIGKILL) -> list[int]:
        """Send ``sig`` to every process of a component's session at once, as when its machine dies (for a
        Celery worker: the worker, its pool processes, their task supervisors and task processes). Found
        through the PID file only; the PID file stays (the component is not running any more, which
        :meth:`is_running` and the next :meth:`launch` see).

        :param component: a component name. :param sig: the signal (default SIGKILL).
        :returns: the PIDs signalled.
        """
        sid = self._read_pid(component)
        if sid is None or not self._may_signal(component, sid):
            return []
        members = signal_session(sid, sig)
        proc = self._procs.get(component)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)  # reap our own child: a zombie would still hold the PID
        return members

    def processes(self) -> dict[str, list[int]]:
        """:returns: component -> PIDs of every live process in its session (empty when stopped)."""
        out: dict[str, list[int]] = {}
        for name in self.names:
            sid = self._read_pid(name)
            out[name] = session_members(sid) if sid is not None and self._may_signal(name, sid) else []
        return out

    def password(self) -> str:
        """The ``admin`` password, generated on first use and kept in :attr:`AirflowConfig.passwords_file`.

        :returns: the password.
        """
        path = self.config.passwords_file
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError):
            stored = {}
        if not isinstance(stored, dict) or not stored.get(ADMIN_USER):
            # Letters and digits only (no leading "-" or look-alikes): it is typed into the login form.
            password = "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(20))
            stored = {**(stored if isinstance(stored, dict) else {}), ADMIN_USER: password}
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(stored) + "\n")
            tmp.chmod(0o600)
            tmp.replace(path)
        return str(stored[ADMIN_USER])

    def api(self) -> AirflowApi:
        """:returns: a REST client logged in as ``admin``."""
        return AirflowApi(self.config.base_url, ADMIN_USER, self.password())

    def health(self) -> dict[str, Any] | None:
        """:returns: ``/api/v2/monitor/health``, or None while the API server does not answer."""
        try:
            return AirflowApi.get_health(self.config.base_url)
        except (OSError, ValueError, AirflowApiError):
            return None

    def describe(self) -> list[dict[str, Any]]:
        """:returns: one row per component: ``component``, ``pid`` (or None), ``log``."""
        return [{"component": n, "pid": self.pid(n), "log": str(self.config.log_file(n))} for n in self.names]

    def write_env_file(self) -> Path:
        """Write :attr:`AirflowConfig.env_file` (mode 0600: it holds the connections).

        :returns: its path.
        """
        path = self.config.env_file
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = ["# Environment of this modelwatch Airflow, for `airflow` CLI commands (written by devstack).",
                 "# Use: set -a; . " + shlex.quote(str(path)) + "; set +a"]  # fmt: skip
        lines += [f"export {k}={shlex.quote(v)}" for k, v in sorted(self._own_env().items())]
        tmp = path.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.chmod(0o600)
        tmp.replace(path)
        return path

    # -- internals -------------------------------------------------------------------------------------
    def _own_env(self) -> dict[str, str]:
        """:meth:`AirflowConfig.env` plus the JWT secret of this state folder."""
        return {"AIRFLOW__API_AUTH__JWT_SECRET": self._jwt_secret(), **self.config.env()}

    def _jwt_secret(self) -> str:
        # One per state folder, shared by every component (the API server checks the tokens the scheduler
        # gives its tasks), and 64 bytes: the 16 Airflow generates make PyJWT warn in every task log.
        path = self.config.home / "jwt_secret"
        try:
            secret = path.read_text().strip()
        except OSError:
            secret = ""
        if not secret:
            path.parent.mkdir(parents=True, exist_ok=True)
            secret = secrets.token_urlsafe(64)
            path.touch(mode=0o600)
            path.write_text(secret + "\n")
        return secret

    def _env(self) -> dict[str, str]:
        env = {**os.environ, **self._own_env()}
        # Without bytecode every component would compile Airflow from source (PYTHONDONTWRITEBYTECODE).
        use_bytecode_cache(env)
        return env

    def _abort(self) -> None:
        """Stop what the last :meth:`launch` started, and the engine when no component is left to use it."""
        self._stop(self._launched)
        if self.engine is not None and not any(self.is_running(n) for n in self.names):
            self.engine.stop()
            self.config.engine_marker.unlink(missing_ok=True)

    def _write_engine_marker(self) -> None:
        assert self.config.engine_config is not None
        marker = self.config.engine_marker
        tmp = marker.with_suffix(".tmp")
        marked = {"engine": self.config.engine, **self.config.engine_config.to_env()}
        tmp.write_text(json.dumps(marked) + "\n")
        tmp.replace(marker)

    def _marked_engine(self) -> EngineServices | None:
        """The engine ``airflow-engine.json`` names (a configuration that does not know it: ``down``)."""
        try:
            marked = json.loads(self.config.engine_marker.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(marked, dict):
            return None
        env = {k: str(v) for k, v in marked.items() if k.startswith("MODELWATCH_")}
        return EngineServices(EngineConfig.from_env(env))

    def _argv(self, exe: str, name: str) -> list[str]:
        if name == "api-server":
            return [exe, "api-server", "--host", HOST, "--port", str(self.config.port), "--workers", "1"]
        if name in ("scheduler", "triggerer"):
            # The log servers bind every interface; the API server reads the local log files instead.
            return [exe, name, "--skip-serve-logs"]
        if _is_worker(name):
            # --skip-serve-logs: the worker's log server binds every interface (see the module docstring);
            # no mingle or gossip: the workers need not learn of each other (they share one queue).
            return [
                exe, "celery", "worker", "--celery-hostname", self.config.worker_node(name),
                "--concurrency", str(self.config.worker_concurrency), "--queues", CELERY_QUEUE,
                "--skip-serve-logs", "--without-mingle", "--without-gossip",
            ]  # fmt: skip
        return [exe, name]

    def _migrate(self, exe: str, env: dict[str, str]) -> None:
        t0 = time.monotonic()
        log = self.config.migrate_log
        with log.open("wb") as out:
            try:
                proc = subprocess.run(
                    [exe, "db", "migrate"], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    cwd=self.config.home, env=env, timeout=MIGRATE_TIMEOUT, check=False,
                )  # fmt: skip
            except subprocess.TimeoutExpired:
                raise ServiceNotReadyError(
                    f"`airflow db migrate` took longer than {MIGRATE_TIMEOUT:.0f} s. Last lines of {log}:\n{tail(log)}"
                ) from None
        if proc.returncode:
            raise ServiceNotReadyError(
                f"`airflow db migrate` failed with code {proc.returncode}. Last lines of {log}:\n{tail(log)}"
            )
        if not self.config.celery:
            # Write-ahead logging lets the API server read while the scheduler writes (in SQLite's default
            # rollback journal every reader blocks the writer and the reverse); the mode stays in the file.
            with contextlib.closing(sqlite3.connect(self.config.db_path, timeout=60)) as db:
                db.execute("PRAGMA journal_mode=WAL")
        self.ready_seconds["migrate"] = time.monotonic() - t0

    def _matches(self, name: str, cmdline: str) -> bool:
        if _is_worker(name):
            # Celery retitles its main process "[celeryd: <node>:MainProcess] ..."; the node name is in both.
            return f"{name}@{HOST}" in cmdline
        return "airflow" in cmdline and any(m in cmdline for m in _MARKERS[name])

    def _may_signal(self, name: str, sid: int) -> bool:
        """Whether the processes of session ``sid`` are this component's: its leader is ours, or the leader
        is gone and only its orphans are left (the PID cannot have been reused while they hold it as sid)."""
        if self._owned(name, sid):
            return True
        return not pid_alive(sid)

    def _stop(self, names: list[str]) -> list[str]:
        victims: dict[str, int] = {}
        for name in dict.fromkeys(names):
            sid = self._read_pid(name)
            if sid is not None and self._may_signal(name, sid) and session_members(sid):
                victims[name] = sid
            else:
                self.config.pid_file(name).unlink(missing_ok=True)
                proc = self._procs.pop(name, None)
                if proc is not None:
                    proc.poll()
        t0 = time.monotonic()
        # Everything but the API server at once; the API server once the scheduler and the workers have
        # exited, because the task processes they stop still report their state to its execution API.
        for name, sid in victims.items():
            if name != "api-server":
                self._terminate(name, sid)
        runners = {n: s for n, s in victims.items() if n == "scheduler" or _is_worker(n)}
        self._wait_gone(runners, STOP_TIMEOUT, pid_alive)
        if "api-server" in victims:
            self._terminate("api-server", victims["api-server"])
        self._wait_gone(victims, max(3.0, STOP_TIMEOUT - (time.monotonic() - t0)), pid_alive)
        # Task processes live in process groups of their own; the supervisor that would stop them may have
        # died first. What is left of each session gets a SIGTERM, then a SIGKILL.
        self._sweep_sessions(victims)
        return list(victims)

    def _terminate(self, name: str, sid: int) -> None:
        """SIGTERM a component's process group, or what is left of its session when its leader is gone."""
        if self._owned(name, sid):
            signal_group(sid, signal.SIGTERM)
        else:
            signal_session(sid, signal.SIGTERM)


def _fresh_and_healthy(info: dict[str, Any] | None, since: datetime | None) -> bool:
    if not info or info.get("status") != "healthy":
        return False
    if since is None:
        return True
    beat = next((v for k, v in info.items() if k.startswith("latest_") and v), None)
    if not beat:
        return False
    when = datetime.fromisoformat(str(beat).replace("Z", "+00:00"))
    return (when if when.tzinfo else when.replace(tzinfo=UTC)) >= since - timedelta(seconds=1)


def _component_env(name: str, env: dict[str, str], config: AirflowConfig) -> dict[str, str]:
    """The environment of one component. On SQLite the API server waits briefly for the lock (see
    :data:`devstack.sqlite_args.API_SERVER_CONNECT_ARGS`), the others long. A Celery worker's task processes
    report its node name as their hostname (:func:`worker_hostname`)."""
    if _is_worker(name):
        return {**env, WORKER_HOSTNAME_ENV: config.worker_node(name),
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "devstack.airflow_services.worker_hostname"}  # fmt: skip
    if name != "api-server" or config.celery:
        return env
    return {**env, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": "devstack.sqlite_args.API_SERVER_CONNECT_ARGS"}


# -- REST client ---------------------------------------------------------------------------------------
TERMINAL_RUN_STATES = frozenset({"success", "failed"})
#: How long :meth:`AirflowApi.request` retries a request the metadata database refused (SQLite only).
LOCKED_RETRY_SECONDS = 60.0
#: Seconds per request: longer than any component waits for SQLite's lock (devstack.sqlite_args), so a request
#: the server is still about to answer never times out here (seen in CI: a trigger behind a backfill).
REQUEST_TIMEOUT = CONNECT_ARGS["timeout"] + 30.0


def _database_busy(exc: AirflowApiError) -> bool:
    # On SQLite, a request that meets the scheduler's write lock is rolled back and answered 503 "Database
    # is locked", or 500 "Database error" with the cause hidden; repeating it is safe and is the remedy.
    detail = exc.detail.lower()
    return (exc.status == 503 and "locked" in detail) or (exc.status == 500 and "database error" in detail)


class AirflowApi:
    """A small client of the Airflow 3 REST API (``/api/v2``) with the simple auth manager's tokens.

    Only the standard library: loopback requests never go through a proxy from the environment.
    """

    def __init__(
        self, base_url: str, username: str, password: str, *, timeout: float = REQUEST_TIMEOUT
    ) -> None:
        """:param base_url: e.g. ``http://127.0.0.1:18080``. :param username: user. :param password: password.
        :param timeout: seconds per request.
        """
        self.base_url = base_url.rstrip("/")
        self.username = username
        self.password = password
        self.timeout = timeout
        self._token: str | None = None
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def __repr__(self) -> str:
        return f"AirflowApi({self.base_url!r}, user={self.username!r})"

    # -- transport -------------------------------------------------------------------------------------
    def token(self) -> str:
        """Log in (``POST /auth/token``) and keep the access token.

        :returns: the JWT.
        """
        body = self._send("POST", "/auth/token", {"username": self.username, "password": self.password}, None)
        self._token = str(body["access_token"])
        return self._token

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict[str, Any] | None = None,
    ) -> Any:
        """Send an authenticated request; logs in first, and again once when the token has expired, and
        repeats a request the SQLite metadata database refused while busy (for up to :data:`LOCKED_RETRY_SECONDS`).

        :param method: HTTP method. :param path: path below the base URL, e.g. ``/api/v2/dags``.
        :param body: JSON body. :param query: query parameters (lists repeat the key).
        :returns: the decoded answer.
        :raises AirflowApiError: for any error status.
        """
        if self._token is None:
            self.token()
        deadline = time.monotonic() + LOCKED_RETRY_SECONDS
        delay = 0.5
        while True:
            try:
                return self._send(method, path, body, query)
            except AirflowApiError as exc:
                if exc.status == 401:
                    self.token()
                    return self._send(method, path, body, query)
                if not _database_busy(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _send(self, method: str, path: str, body: Any, query: dict[str, Any] | None) -> Any:
        url = self.base_url + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None}, doseq=True)
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self._token and path != "/auth/token":
            req.add_header("Authorization", f"Bearer {self._token}")
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                payload = resp.read()
        except urllib.error.HTTPError as exc:
            raise AirflowApiError(method, url, exc.code, exc.read().decode(errors="replace")) from None
        return json.loads(payload) if payload else None

    @staticmethod
    def get_health(base_url: str, timeout: float = 5.0) -> dict[str, Any]:
        """``GET /api/v2/monitor/health`` (no login needed).

        :param base_url: the API server. :param timeout: seconds.
        :returns: ``{"metadatabase": {...}, "scheduler": {...}, "triggerer": {...}, "dag_processor": {...}}``.
        """
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"{base_url.rstrip('/')}/api/v2/monitor/health", timeout=timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise AirflowApiError("GET", base_url, exc.code, exc.read().decode(errors="replace")) from None

    # -- DAGs ------------------------------------------------------------------------------------------
    def dag(self, dag_id: str) -> dict[str, Any]:
        """:param dag_id: DAG id. :returns: ``GET /api/v2/dags/{dag_id}``.
        :raises AirflowApiError: 404 until the DAG processor has parsed it."""
        return self.request("GET", f"/api/v2/dags/{_q(dag_id)}")

    def set_paused(self, dag_id: str, paused: bool) -> dict[str, Any]:
        """:param dag_id: DAG id. :param paused: the new state. :returns: the DAG."""
        return self.request("PATCH", f"/api/v2/dags/{_q(dag_id)}", {"is_paused": paused})

    def unpause(self, dag_id: str) -> dict[str, Any]:
        """Unpause a DAG (the toggle in the UI). With ``catchup=False`` the scheduler then creates one run for
        the latest complete interval. :param dag_id: DAG id. :returns: the DAG."""
        return self.set_paused(dag_id, False)

    def import_errors(self) -> list[dict[str, Any]]:
        """:returns: ``GET /api/v2/importErrors``: ``filename``, ``stack_trace``, ``timestamp``, ... per file."""
        return self._paged("/api/v2/importErrors", "import_errors")

    def wait_for_dag(
        self, dag_id: str, timeout: float = 120.0, file_hint: str | None = None
    ) -> dict[str, Any]:
        """Wait until the DAG processor has parsed and serialised ``dag_id``.

        :param dag_id: DAG id. :param timeout: seconds.
        :param file_hint: part of the DAG file's path: an import error of that file ends the wait at once.
        :returns: the DAG.
        :raises AirflowApiError: with the stack trace when the file has an import error.
        :raises TimeoutError: when the DAG did not appear in time.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                dag = self.dag(dag_id)
                if not dag.get("has_import_errors"):
                    return dag
            except AirflowApiError as exc:
                if exc.status != 404:
                    raise
            errors = [e for e in self.import_errors() if file_hint is None or file_hint in e["filename"]]
            if errors and file_hint is not None:
                raise AirflowApiError("GET", "/api/v2/importErrors", 200, "\n".join(
                    f"{e['filename']}:\n{e['stack_trace']}" for e in errors
                ))  # fmt: skip
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"DAG {dag_id} was not parsed within {timeout:.0f} s (import errors: {errors})"
                )
            time.sleep(1.0)

    # -- runs ------------------------------------------------------------------------------------------
    def trigger(
        self,
        dag_id: str,
        conf: dict[str, Any] | None = None,
        logical_date: datetime | str | None = None,
        *,
        run_id: str | None = None,
        note: str | None = None,
    ) -> dict[str, Any]:
        """Trigger a run as the UI's trigger form does (``POST /api/v2/dags/{dag_id}/dagRuns``).

        :param dag_id: DAG id. :param conf: the run's parameters (the form's "Run parameters").
        :param logical_date: None (the form's default) gives a run without logical date and data interval;
            a date gives the data interval the timetable infers for a manual run at that date.
        :param run_id: own run id (default: Airflow's ``manual__<time>``). :param note: run note.
        :returns: the new run (``dag_run_id``, ``state``, ``conf``, ...).
        """
        if isinstance(logical_date, datetime):
            logical_date = logical_date.isoformat()
        body: dict[str, Any] = {"logical_date": logical_date, "conf": conf or {}}
        if run_id:
            body["dag_run_id"] = run_id
        if note:
            body["note"] = note
        return self.request("POST", f"/api/v2/dags/{_q(dag_id)}/dagRuns", body)

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        """:param dag_id: DAG id. :param run_id: run id. :returns: that run."""
        return self.request("GET", f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}")

    def dag_runs(self, dag_id: str, **filters: Any) -> list[dict[str, Any]]:
        """:param dag_id: DAG id. :param filters: query filters of ``GET .../dagRuns`` (e.g. ``run_type="backfill"``,
        ``state="failed"``). :returns: every matching run, oldest first."""
        return self._paged(f"/api/v2/dags/{_q(dag_id)}/dagRuns", "dag_runs", filters)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """:param dag_id: DAG id. :param run_id: run id. :returns: the run's task instances (``task_id``,
        ``state``, ``try_number``, ...)."""
        return self._paged(f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances", "task_instances")

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
        """The value a task instance pushed under ``key`` (its return value by default), deserialised.

        :raises AirflowApiError: 404 when the task pushed nothing under ``key``.
        """
        path = f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances/{_q(task_id)}/xcomEntries/{_q(key)}"
        return self.request("GET", path, query={"map_index": map_index, "deserialize": "true"})["value"]

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1, map_index: int = -1) -> str:
        """One try's log as text: ``timestamp level event`` per line, and the exception of a failed try.

        :param dag_id: DAG id. :param run_id: run id. :param task_id: task id. :param try_number: the try.
        :param map_index: which instance of a mapped task (-1: a task that is not mapped).
        :returns: the log.
        """
        path = f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances/{_q(task_id)}/logs/{try_number}"
        lines = []
        query = {"full_content": "true", **({"map_index": str(map_index)} if map_index >= 0 else {})}
        for item in self.request("GET", path, query=query).get("content") or []:
            if not isinstance(item, dict):
                lines.append(str(item))
                continue
            lines.append(
                f"{item.get('timestamp', '')} {item.get('level', '')} {item.get('event', '')}".strip()
            )
            for err in item.get("error_detail") or []:
                lines.append(f"    {err.get('exc_type')}: {err.get('exc_value')}")
        return "\n".join(lines)

    def wait_for_run(
        self, dag_id: str, run_id: str, timeout: float = 300.0, interval: float = 2.0
    ) -> dict[str, Any]:
        """Poll a run until it is ``success`` or ``failed``.

        :param dag_id: DAG id. :param run_id: run id. :param timeout: seconds. :param interval: seconds
            between polls.
        :returns: the finished run.
        :raises TimeoutError: naming the run's state and its task states.
        """
        deadline = time.monotonic() + timeout
        while True:
            run = self.dag_run(dag_id, run_id)
            if run["state"] in TERMINAL_RUN_STATES:
                return run
            if time.monotonic() > deadline:
                tasks = {t["task_id"]: t["state"] for t in self.task_instances(dag_id, run_id)}
                raise TimeoutError(
                    f"run {run_id} of {dag_id} still {run['state']} after {timeout:.0f} s; tasks {tasks}"
                )
            time.sleep(interval)

    # -- backfills -------------------------------------------------------------------------------------
    def create_backfill(
        self,
        dag_id: str,
        from_date: date | datetime | str,
        to_date: date | datetime | str,
        max_active_runs: int = 10,
        *,
        conf: dict[str, Any] | None = None,
        reprocess_behavior: str = "none",
        run_backwards: bool = False,
    ) -> dict[str, Any]:
        """Create a backfill (``POST /api/v2/backfills``), what ``airflow backfill create`` and the UI's
        "Run backfill" do.

        Both ends are inclusive and are *logical dates*: for the DAG's daily interval timetable the run of
        logical date D covers the day D (data interval D 00:00 to D+1 00:00 UTC), so 2026-03-04..2026-03-06
        gives three runs for those three days. The runs stay queued while the DAG is paused.

        :param dag_id: DAG id. :param from_date: first logical date. :param to_date: last logical date.
        :param max_active_runs: backfill runs at once (separate from the DAG's own ``max_active_runs``).
        :param conf: parameters of every run. :param reprocess_behavior: ``none``, ``failed`` or ``completed``:
            what to do about days that already have a run. :param run_backwards: newest day first.
        :returns: the backfill (``id``, ``from_date``, ``to_date``, ``completed_at``, ...).
        """
        body: dict[str, Any] = {
            "dag_id": dag_id,
            "from_date": _iso(from_date),
            "to_date": _iso(to_date),
            "max_active_runs": max_active_runs,
            "reprocess_behavior": reprocess_behavior,
            "run_backwards": run_backwards,
            "dag_run_conf": conf or {},
        }
        return self.request("POST", "/api/v2/backfills", body)

    def backfill_runs(self, dag_id: str, backfill: dict[str, Any]) -> list[dict[str, Any]]:
        """:param dag_id: DAG id. :param backfill: a backfill from :meth:`create_backfill`.
        :returns: the DAG's backfill runs whose logical dates fall in the backfill's range."""
        return self.dag_runs(
            dag_id,
            run_type="backfill",
            logical_date_gte=backfill["from_date"],
            logical_date_lte=backfill["to_date"],
        )

    # -- helpers ---------------------------------------------------------------------------------------
    def _paged(self, path: str, key: str, query: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            page = self.request("GET", path, query={**(query or {}), "limit": 100, "offset": len(out)})
            items = page.get(key) or []
            out.extend(items)
            if not items or len(out) >= int(page.get("total_entries", len(out))):
                return out


def _q(part: str) -> str:
    return urllib.parse.quote(part, safe="")


def _iso(value: date | datetime | str) -> str:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC).isoformat()
    return value
