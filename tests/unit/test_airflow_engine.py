"""The two engines of devstack's Airflow (``devstack.airflow_services``), as configuration: what each
component is told, without starting one. The running engines are tested in tests/e2e (postgres-celery) and
tests/integration (sqlite-local, through ``dag.test()``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devstack.airflow_services import (
    CELERY_PRELOAD,
    COMPONENTS,
    ENGINE_ENV,
    WORKER_HOSTNAME_ENV,
    AirflowConfig,
    AirflowServices,
    _component_env,
    worker_hostname,
)
from devstack.engine import EngineConfig
from devstack.processes import StackError
from devstack.stack import StackConfig


def test_the_embedded_default_is_sqlite_with_the_local_executor(tmp_path: Path) -> None:
    cfg = AirflowConfig(state_dir=tmp_path)
    env = cfg.env()
    assert cfg.engine == "sqlite-local" and cfg.workers == () and cfg.components == COMPONENTS
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{cfg.db_path}"
    # SQLite's busy wait is the embedded default's alone
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS"] == "devstack.sqlite_args.CONNECT_ARGS"
    assert not any(k.startswith("AIRFLOW__CELERY") for k in env)
    assert cfg.engine_config is None and AirflowServices(cfg).engine is None


def test_postgres_celery_points_every_component_at_postgres_and_redis(tmp_path: Path) -> None:
    engine = EngineConfig(state_dir=tmp_path / "engine", postgres_port=25432, redis_port=26379)
    cfg = AirflowConfig(state_dir=tmp_path, engine="postgres-celery", celery_workers=3, worker_concurrency=4,
                        engine_config=engine)  # fmt: skip
    env = cfg.env()
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    url = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert url.startswith("postgresql+psycopg2://") and "127.0.0.1:25432" in url
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == f"db+{url}"
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://127.0.0.1:26379")
    assert env["AIRFLOW__CELERY__WORKER_CONCURRENCY"] == "4"
    assert "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS" not in env  # no SQLite workaround on PostgreSQL
    assert json.loads(env["AIRFLOW__CELERY__EXTRA_CELERY_CONFIG"]) == {"imports": list(CELERY_PRELOAD)}
    assert cfg.workers == ("celery-worker-1", "celery-worker-2", "celery-worker-3")
    assert cfg.components == (*COMPONENTS, *cfg.workers)
    assert cfg.worker_node("celery-worker-2") == "celery-worker-2@127.0.0.1"


def test_each_workers_task_processes_report_its_node_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = AirflowConfig(state_dir=tmp_path, engine="postgres-celery")
    env = _component_env("celery-worker-2", cfg.env(), cfg)
    assert env["AIRFLOW__CORE__HOSTNAME_CALLABLE"] == "devstack.airflow_services.worker_hostname"
    monkeypatch.setenv(WORKER_HOSTNAME_ENV, env[WORKER_HOSTNAME_ENV])
    assert worker_hostname() == "celery-worker-2@127.0.0.1"
    monkeypatch.delenv(WORKER_HOSTNAME_ENV)
    assert worker_hostname()  # the machine's name, Airflow's default
    # the API server waits briefly for SQLite's lock on the embedded default only
    assert "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS" not in _component_env("api-server", cfg.env(), cfg)
    local = AirflowConfig(state_dir=tmp_path / "local")
    assert _component_env("api-server", local.env(), local)["AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS"] == (
        "devstack.sqlite_args.API_SERVER_CONNECT_ARGS"
    )


def test_one_variable_switches_make_up_to_postgres_celery(tmp_path: Path) -> None:
    stack = StackConfig(state_dir=tmp_path)
    assert AirflowConfig.from_stack(stack, environ={}).engine == "sqlite-local"
    env = {ENGINE_ENV: "postgres-celery", "MODELWATCH_POSTGRES_PORT": "25433"}
    cfg = AirflowConfig.from_stack(stack, environ=env)
    assert cfg.engine == "postgres-celery" and cfg.engine_config is not None
    assert cfg.engine_config.postgres_port == 25433


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"engine": "postgres-local"}, "unknown Airflow engine 'postgres-local'; known: sqlite-local, postgres-celery"),
        ({"engine": "postgres-celery", "celery_workers": 0}, "at least one Celery worker"),
    ],
)
def test_a_wrong_engine_is_refused_with_what_is_known(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(StackError, match=message):
        AirflowConfig(state_dir=tmp_path, **kwargs)


def test_only_worker_names_of_the_right_shape_are_components(tmp_path: Path) -> None:
    cfg = AirflowConfig(state_dir=tmp_path, engine="postgres-celery")
    with pytest.raises(StackError, match="unknown Airflow component 'celery-worker-0'"):
        cfg.worker_node("celery-worker-0")
    with pytest.raises(StackError, match="unknown Airflow component 'worker'"):
        cfg.log_file("worker")
