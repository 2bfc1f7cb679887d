"""Test-wide setup: a throwaway AIRFLOW_HOME, set before anything imports Airflow.

Airflow reads its configuration when first imported, so these variables are set at collection time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

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
