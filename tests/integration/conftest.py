"""Fixtures for the integration tests: one real local stack per pytest session.

``stack`` starts every service of :mod:`devstack.stack` on free loopback ports in a temporary folder, so a
running demo stack (default ports, ``.stack/``) is never touched, and stops it at the end of the session
whatever happens (finalizer plus an atexit hook for interrupted runs).

Every test collected under ``tests/integration`` gets the ``integration`` marker: ``pytest -m "not
integration"`` skips them.

Other fixtures built on ``stack`` live in their own module next to this file and are imported below
(``seeded_stack``: ``tests/integration/seeded.py``).
"""

from __future__ import annotations

import atexit
from collections.abc import Iterator
from pathlib import Path

import pytest
from seeded import seeded_stack  # noqa: F401 - fixture registered by import

from devstack.stack import Stack, StackConfig

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test of this folder ``integration`` (this hook sees the whole session's items)."""
    for item in items:
        if Path(item.path).resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The running local stack (all services, free ports, temporary state folder).

    :returns: the started :class:`~devstack.stack.Stack`; its ``config`` has the ports and URLs.
    """
    running = Stack(StackConfig.free_ports(tmp_path_factory.mktemp("stack")))
    # A KeyboardInterrupt or a crash of the session may skip the finalizer; atexit still stops the stack.
    atexit.register(running.stop)
    try:
        running.start()
        yield running
    finally:
        running.stop()
        atexit.unregister(running.stop)
