"""Test-wide setup: a throwaway AIRFLOW_HOME, set before anything imports Airflow, and the split of the
session over two pytest-xdist workers (``make test``).

Airflow reads its configuration when first imported, so these variables are set at collection time.

``make test`` runs ``pytest -n 2 --dist loadgroup``. Session fixtures are per worker, so each worker that
runs server tests starts a stack of its own (free ports, its own folder, its own Alertmanager and MLflow):
the server tests are split into two groups (:data:`STACK_GROUPS`), each run whole on one worker, so no
module shares a server with a module of the other worker; the pure tests (``tests/unit``, ``tests/dags``)
fill the gaps on whichever worker is free. Much of a server test is waiting (scrapes, the scheduler's loop,
Alertmanager's group wait), so the two streams overlap well on two cores.

One module needs the machine to itself: the live drill (``cpu_quiet`` marker) judges a quiet phase healthy
and a CPU burn degraded, which a second worker's CPU load would blur. Every test holds a shared lock on a
file of the session while it runs; a ``cpu_quiet`` test holds it exclusively (the other worker pauses
between two of its tests), with a turnstile so that the waiting drill is not starved. It is ordered last in
its group, after the other group has usually ended, so the pause seldom costs anything.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
from fixtures_stack import seeded_stack, stack  # noqa: F401 - session fixtures registered by import

REPO = Path(__file__).resolve().parents[1]
_HOME = Path(tempfile.mkdtemp(prefix="modelwatch-airflow-"))
os.environ.update({
    "AIRFLOW_HOME": str(_HOME),
    "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
    "AIRFLOW__API__BASE_URL": "http://127.0.0.1:18080",
    # devstack (the test stack's own code) for Airflow subprocesses; modelwatch is an installed package
    "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
})  # fmt: skip


#: The xdist group of each server-test module (``tests/e2e`` as a whole), by path from the repo; any other
#: module under tests/integration is in :data:`DEFAULT_GROUP`. Balanced on the durations of a full run
#: (README, "How make test runs"): the e2e tier (its own Airflow on PostgreSQL + Celery beside the stack)
#: and the quality scenarios (they seed six days more) on one worker, the rest of tests/integration on the
#: other. Modules that share data through the stack (seeded days, the quality days) must stay in one group.
STACK_GROUPS: dict[str, str] = {
    "tests/e2e": "stack-1",
    "tests/integration/test_quality_scenarios.py": "stack-1",
    "tests/integration/test_hostile_names.py": "stack-1",
    "tests/integration/test_engine_services.py": "stack-1",
    "tests/integration/test_serving_presets.py": "stack-1",
}
DEFAULT_GROUP = "stack-2"
SERVER_TIERS = ("tests/integration", "tests/e2e")


def stack_group(relpath: str) -> str | None:
    """:param relpath: a test module's path from the repo. :returns: its xdist group, or None for the pure
    tests (any worker)."""
    if not relpath.startswith(tuple(f"{t}/" for t in SERVER_TIERS)):
        return None
    for prefix, group in STACK_GROUPS.items():
        if relpath == prefix or relpath.startswith(f"{prefix}/"):
            return group
    return DEFAULT_GROUP


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the ``cpu_quiet`` tests last (stable otherwise)."""
    items.sort(key=lambda i: i.get_closest_marker("cpu_quiet") is not None)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadgroup``: xdist's scope scheduler with :func:`stack_group` as the scope, so each group runs
    whole on one worker and each pure test is a scope of its own.

    Not the ``xdist_group`` marker: pytest-xdist 3.8 renames ``item._nodeid``, which pytest 9.2 no longer
    reads (``Node.nodeid`` comes from ``_id``), so marked tests were spread over both workers."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class StackGroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return stack_group(nodeid.split("::", 1)[0]) or nodeid

    return StackGroupScheduling(config, log)


@contextlib.contextmanager
def _cpu_lock(exclusive: bool) -> Generator[None]:
    """The session's CPU lock (see the module docstring); a no-op outside pytest-xdist."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if not run:
        yield
        return
    base = Path(tempfile.gettempdir()) / f"modelwatch-pytest-{run}"
    with open(f"{base}.turnstile", "a") as turnstile, open(f"{base}.cpu", "a") as cpu:
        # the turnstile: a writer holds it while it waits, so readers queue behind it instead of passing it
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        if exclusive:
            fcntl.flock(cpu, fcntl.LOCK_EX)
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        else:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
            fcntl.flock(cpu, fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(cpu, fcntl.LOCK_UN)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, object, object]:
    with _cpu_lock(exclusive=item.get_closest_marker("cpu_quiet") is not None):
        return (yield)


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """An initialised Airflow metadata database (SQLite in the throwaway AIRFLOW_HOME)."""
    subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "db", "migrate"], check=True, capture_output=True, timeout=300
    )
    return _HOME


@pytest.fixture(scope="session")
def fresh_imports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What a fresh interpreter (cwd ``/``: modelwatch from its installed distribution) loads when it imports
    each DAG file, then modelwatch's hook modules, and what Airflow's ProvidersManager then knows of the
    modelwatch provider: ``tests/fresh_imports.py``, run once per session (each interpreter that imports
    Airflow costs about 2 s). Under pytest-xdist the first worker that needs it runs it and the others read
    its answer (the folder above a worker's basetemp is the session's, shared by its workers).

    :returns: ``{"dag_files": {path: [heavy modules]}, "hook_modules": [...], "provider": {...}}``.
    """
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return _fresh_imports()
    shared = tmp_path_factory.getbasetemp().parent
    with (shared / "fresh_imports.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        answer = shared / "fresh_imports.json"
        if not answer.exists():
            answer.write_text(json.dumps(_fresh_imports()))
        return json.loads(answer.read_text())


def _fresh_imports() -> dict[str, Any]:
    dag_files = sorted(str(p) for p in (REPO / "dags").glob("*.py"))
    out = subprocess.run(
        [sys.executable, str(REPO / "tests" / "fresh_imports.py"), *dag_files],
        capture_output=True, text=True, timeout=120, cwd="/",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])
