"""The integration tests talk to real servers: the session's stack (``stack``, ``seeded_stack`` from
``tests/fixtures_stack.py``).

Every test collected under ``tests/integration`` gets the ``integration`` marker: ``pytest -m "not
integration"`` skips them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test of this folder ``integration`` (this hook sees the whole session's items)."""
    for item in items:
        if Path(item.path).resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)
