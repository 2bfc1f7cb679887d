"""Test-wide setup: a throwaway AIRFLOW_HOME, set before anything imports Airflow.

Airflow reads its configuration when first imported, so these variables are set at collection time.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import tempfile
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
