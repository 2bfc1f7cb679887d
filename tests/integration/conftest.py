"""The integration tests talk to real servers: the session's stack (``stack``, ``seeded_stack`` from
``tests/fixtures_stack.py``).

Every test collected under ``tests/integration`` gets the ``integration`` marker: ``pytest -m "not
integration"`` skips them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test of this folder ``integration`` (this hook sees the whole session's items)."""
    for item in items:
        if Path(item.path).resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def conns(stack: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The session stack with its Airflow connections as env vars (prometheus_default, mlflow_default, ...),
    as in a deployment."""
    for name, value in stack.airflow_env().items():
        monkeypatch.setenv(name, value)
    return stack


@pytest.fixture
def seeded(seeded_stack: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Like ``conns`` for the seeded stack."""
    for name, value in seeded_stack.airflow_env().items():
        monkeypatch.setenv(name, value)
    return seeded_stack
