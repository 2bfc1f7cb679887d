"""Fixtures of the end-to-end tests: the real local stack seeded with CONTRACT.md's days (the fixtures of
``tests/integration``) and real Airflow components beside it (:mod:`devstack.airflow_services`) on the engine
users run: PostgreSQL as the metadata database, Redis as the Celery broker, the CeleryExecutor with two
Celery workers, and the lake on moto's S3, so no task can read what another wrote to a local folder.

``stack`` and ``seeded_stack`` come from ``tests/fixtures_stack.py`` through ``tests/conftest.py``, so the
integration modules that run beside these (the same pytest-xdist group, tests/conftest.py) share their stack.
"""

from __future__ import annotations

import atexit
import shutil
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import pytest
import yaml
from config_helpers import own_alertnames

from devstack.airflow_services import AirflowConfig, AirflowServices, free_port, session_members
from devstack.engine import EngineConfig, reachable_temp_dir
from devstack.stack import DEFAULT_PORTS, SERVICES, Stack

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
#: the alert name this session's Airflow posts under (see the ``airflow`` fixture)
E2E_ALERTNAME = f"ModelPredictionsDegradedE2E{uuid.uuid4().hex[:8]}"
#: the session Airflow's lake: moto's S3, under a prefix of its own (the integration tests use ``lake/``)
E2E_LAKE = "s3://modelwatch/e2e-lake"
#: the MLflow experiment of the fleet that tests/e2e/test_celery_engine.py seeds (``batch_table`` layout); it
#: is created with the session's Airflow, empty, because the DAG's configuration lists it
FLEET_EXPERIMENT = "e2e-fleet-predictions"
#: models per mapped ``correlate`` task: the 2 models of CONTRACT.md's days make one group, the 22 of the
#: fleet day eight (two waves over the 2 x 2 worker slots)
MODELS_PER_TASK = 3
CELERY_WORKERS = 2
WORKER_CONCURRENCY = 2
#: a task whose worker died stops heartbeating; the scheduler fails it (and Airflow retries it) after this many
#: seconds (Airflow's default is 300). Each task process heartbeats every 2 s ([workers] min_heartbeat_interval).
HEARTBEAT_TIMEOUT_S = 12


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run tests/e2e/test_celery_engine.py after the other e2e modules.

    It seeds a 20-model fleet into 2026-03-03 and pages for it under the session's alert name, and
    test_scheduler.py checks that day's verdicts (two models) and that the session's Airflow paged exactly
    its own run's alert: its checks must come first.
    """
    celery = [i for i in items if i.path.parent == HERE and i.path.name == "test_celery_engine.py"]
    if not celery:
        return
    chosen = set(map(id, celery))
    rest = [i for i in items if id(i) not in chosen]
    ours = [k for k, i in enumerate(rest) if i.path.parent == HERE]
    at = ours[-1] + 1 if ours else len(rest)
    items[:] = [*rest[:at], *celery, *rest[at:]]


def thresholds_for_e2e(raw: dict[str, Any]) -> dict[str, Any]:
    """The session Airflow's thresholds.yaml: alert names of its own (Alertmanager identifies an alert by its
    labels: the integration tests of the same session post the same model's alerts, and a second post of an
    alert pages no one), the fleet's experiment beside the two of CONTRACT.md, :data:`MODELS_PER_TASK`, and a
    retry 2 s after a failure instead of 30 s (a worker killed in tests/e2e/test_celery_engine.py)."""
    own_alertnames(raw, E2E_ALERTNAME)
    raw["mlflow"]["experiments"] = [*raw["mlflow"]["experiments"], {"name": FLEET_EXPERIMENT, "layout": "batch_table"}]
    raw["correlation"]["models_per_task"] = MODELS_PER_TASK
    raw["tasks"]["retry_delay"] = "2s"
    return raw


def _create_fleet_experiment(stack: Stack) -> None:
    import mlflow

    client = mlflow.MlflowClient(stack.config.mlflow_url)
    if client.get_experiment_by_name(FLEET_EXPERIMENT) is None:
        client.create_experiment(FLEET_EXPERIMENT)


@pytest.fixture(scope="session")
def e2e_alertname() -> str:
    """The alert name the e2e Airflow posts under."""
    return E2E_ALERTNAME


@pytest.fixture(scope="session")
def e2e_thresholds(airflow: AirflowServices) -> dict[str, Any]:
    """The thresholds.yaml the session's Airflow runs with (:func:`thresholds_for_e2e`), as a mapping."""
    return yaml.safe_load(Path(airflow.config.extra_env["MODELWATCH_CONFIG"]).read_text())


@pytest.fixture(scope="session")
def airflow(
    stack: Stack, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AirflowServices]:
    """Airflow's API server, scheduler, DAG processor, triggerer and two Celery workers on PostgreSQL and
    Redis (``postgres-celery``), running this repo's DAGs against the seeded stack: AIRFLOW_HOME in a
    temporary folder, the engine's in a folder PostgreSQL's OS user can reach, the lake on moto's S3
    (:data:`E2E_LAKE`), every port free and on 127.0.0.1.

    Everything is launched in a thread while the stack is seeded (``seeded_stack``) in this one: the engine,
    the workers (they need no metadata schema) and ``airflow db migrate``, then the other components. The
    two largest costs of the session overlap. Stopped at the end of the session; the teardown fails if any
    of their processes, or of the engine's, is left.

    :returns: the started :class:`~devstack.airflow_services.AirflowServices`.
    """
    state = tmp_path_factory.mktemp("airflow-e2e")
    raw = thresholds_for_e2e(yaml.safe_load((REPO / "include" / "thresholds.yaml").read_text()))
    config = state / "thresholds.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    avoid = [*(stack.config.port(s) for s in SERVICES), *DEFAULT_PORTS.values()]
    engine_dir = reachable_temp_dir("modelwatch-e2e-engine-")
    try:
        engine = EngineConfig.free_ports(engine_dir, avoid=avoid)
        cfg = AirflowConfig(
            state_dir=state,
            port=free_port(avoid=[*avoid, engine.postgres_port, engine.redis_port]),
            connections=stack.config.airflow_env(),
            lake_url=E2E_LAKE,
            engine="postgres-celery",
            celery_workers=CELERY_WORKERS,
            worker_concurrency=WORKER_CONCURRENCY,
            parallelism=CELERY_WORKERS * WORKER_CONCURRENCY,
            engine_config=engine,
            extra_env={
                "MODELWATCH_CONFIG": str(config),
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT_S),
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
                "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "2",
            },
        )
        services = AirflowServices(cfg)
    except BaseException:
        shutil.rmtree(engine_dir, ignore_errors=True)
        raise
    atexit.register(services.stop)
    _RUNNING.append((services, engine_dir))
    t0 = time.perf_counter()
    try:
        _create_fleet_experiment(stack)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="airflow-launch") as pool:
            launching = pool.submit(services.launch)
            try:
                request.getfixturevalue("seeded_stack")
            finally:
                wait([launching])
            launching.result()
        seeded = time.perf_counter() - t0
        services.wait_ready()
        ready = {k: round(v, 1) for k, v in services.ready_seconds.items()}
        print(f"\nairflow (postgres-celery): launched; stack seeded {seeded:.1f} s and Airflow healthy "
              f"{time.perf_counter() - t0:.1f} s later; {ready}")  # fmt: skip
        yield services
    finally:
        _stop_airflow(services, engine_dir)


#: Airflows of this session still running: stopped after the last e2e test (pytest_runtest_teardown)
_RUNNING: list[tuple[AirflowServices, Path]] = []


def _stop_airflow(services: AirflowServices, engine_dir: Path) -> None:
    """Stop the session's Airflow (once) and fail if any process of it, or of its engine, is left."""
    if (services, engine_dir) not in _RUNNING:
        return
    _RUNNING.remove((services, engine_dir))
    sessions = {name: services.pid(name) for name in services.names}
    t1 = time.perf_counter()
    services.stop()
    atexit.unregister(services.stop)
    print(f"\nairflow: stopped in {time.perf_counter() - t1:.1f} s")
    left = {name: session_members(sid) for name, sid in sessions.items() if sid and session_members(sid)}
    if services.engine is not None:
        left.update({f"engine {name}": pids for name, pids in services.engine.processes().items() if pids})
    shutil.rmtree(engine_dir, ignore_errors=True)
    assert not left, f"Airflow processes left after stop: {left}"


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Stop the session's Airflow after the last e2e test rather than at the end of the session: a session
    that goes on with tests/integration and tests/unit (``make test``) would otherwise keep its eight
    sessions (scheduler loop, DAG processor, workers, PostgreSQL) busy beside them for the rest of the run."""
    if _RUNNING and item.path.is_relative_to(HERE) and (nextitem is None or not nextitem.path.is_relative_to(HERE)):
        for services, engine_dir in list(_RUNNING):
            _stop_airflow(services, engine_dir)


@pytest.fixture(scope="module")
def lake(airflow: AirflowServices, stack: Stack) -> Iterator[Any]:
    """The session Airflow's lake, read as its tasks read it: :class:`modelwatch.storage.Lake` through the
    stack's ``aws_default`` connection (set in this process's environment for the module only)."""
    from modelwatch.storage import Lake

    patch = pytest.MonkeyPatch()
    for key, value in stack.config.airflow_env().items():
        patch.setenv(key, value)
    try:
        assert airflow.config.lake_url is not None
        yield Lake(airflow.config.lake_url)
    finally:
        patch.undo()
