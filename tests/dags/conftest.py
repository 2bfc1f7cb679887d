"""One DagBag for every DAG test of the session.

Parsing needs no metadata database (``DagBag`` only imports the files and bags the DAGs it finds), so no
``airflow db migrate`` here; the tests that run a DAG (``tests/integration``) ask for ``airflow_db``.
Tests must leave the bagged DAGs as they found them (``monkeypatch``, or re-parse with
``devstack.runner.load_dag`` to change one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def dagbag() -> Any:
    """The DAG files of ``dags/`` parsed once, as the DAG processor parses them."""
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))
