"""Fixtures of the end-to-end tests: the real local stack seeded with CONTRACT.md's days (the fixtures of
``tests/integration``) and real Airflow components beside it (:mod:`devstack.airflow_services`).

``stack`` and ``seeded_stack`` come from ``tests/fixtures_stack.py`` through ``tests/conftest.py``, so a
session that runs both folders starts one stack.
"""

from __future__ import annotations

import atexit
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from config_helpers import own_alertnames

from devstack.airflow_services import COMPONENTS, AirflowConfig, AirflowServices, free_port, session_members
from devstack.stack import DEFAULT_PORTS, SERVICES, Stack

REPO = Path(__file__).resolve().parents[2]
#: the alert name this session's Airflow posts under (see the ``airflow`` fixture)
E2E_ALERTNAME = f"ModelPredictionsDegradedE2E{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def e2e_alertname() -> str:
    """The alert name the e2e Airflow posts under."""
    return E2E_ALERTNAME


@pytest.fixture(scope="session")
def airflow(
    stack: Stack, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AirflowServices]:
    """Airflow's API server, scheduler, DAG processor and triggerer, running this repo's DAGs against the
    seeded stack: AIRFLOW_HOME and the lake in a temporary folder, the API on a free port.

    The components are launched first and the stack is seeded (``seeded_stack``) while they start up: the
    two largest costs of the module overlap. Stopped at the end of the session; the teardown fails if any of
    their processes is left.

    :returns: the started :class:`~devstack.airflow_services.AirflowServices`.
    """
    state = tmp_path_factory.mktemp("airflow-e2e")
    # Alertmanager identifies an alert by its labels: the integration tests of the same session post the
    # same model's alerts, and a second post of an alert pages no one. A name of this session's own keeps
    # what this Airflow posts apart.
    raw = yaml.safe_load((REPO / "include" / "thresholds.yaml").read_text())
    own_alertnames(raw, E2E_ALERTNAME)
    config = state / "thresholds.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    cfg = AirflowConfig(
        state_dir=state,
        port=free_port(avoid=[*(stack.config.port(s) for s in SERVICES), *DEFAULT_PORTS.values()]),
        connections=stack.config.airflow_env(),
        extra_env={"MODELWATCH_CONFIG": str(config)},
    )
    services = AirflowServices(cfg)
    atexit.register(services.stop)
    t0 = time.perf_counter()
    try:
        services.launch()
        request.getfixturevalue("seeded_stack")
        services.wait_ready()
        print(f"\nairflow: launched; stack seeded and Airflow healthy {time.perf_counter() - t0:.1f} s later")
        yield services
    finally:
        sessions = {name: services.pid(name) for name in COMPONENTS}
        t1 = time.perf_counter()
        services.stop()
        atexit.unregister(services.stop)
        print(f"\nairflow: stopped in {time.perf_counter() - t1:.1f} s")
        left = {name: session_members(sid) for name, sid in sessions.items() if sid and session_members(sid)}
        assert not left, f"Airflow processes left after stop: {left}"
