"""Fixtures of the end-to-end tests: the real local stack seeded with CONTRACT.md's days (the fixtures of
``tests/integration``) and real Airflow components beside it (:mod:`devstack.airflow_services`).

``stack`` and ``seeded_stack`` come from ``tests/fixtures_stack.py`` through ``tests/conftest.py``, so a
session that runs both folders starts one stack.
"""

from __future__ import annotations

import atexit
import time
from collections.abc import Iterator

import pytest

from devstack.airflow_services import COMPONENTS, AirflowConfig, AirflowServices, free_port, session_members
from devstack.stack import DEFAULT_PORTS, SERVICES, Stack


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
    cfg = AirflowConfig(
        state_dir=state,
        port=free_port(avoid=[*(stack.config.port(s) for s in SERVICES), *DEFAULT_PORTS.values()]),
        connections=stack.config.airflow_env(),
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
