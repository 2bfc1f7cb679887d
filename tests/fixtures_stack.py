"""The real local stack for the whole pytest session, shared by ``tests/integration`` and ``tests/e2e``.

``stack`` starts every service of :mod:`devstack.stack` on free loopback ports in a temporary folder, so a
running demo stack (default ports, ``.stack/``) is never touched, and stops it at the end of the session
whatever happens (finalizer plus an atexit hook for interrupted runs). ``seeded_stack`` is the same stack
holding CONTRACT.md's fixed test days. They live here, imported by ``tests/conftest.py``, because pytest
keeps a session fixture per defining conftest: defined in two folders, a session would start two stacks.
"""

from __future__ import annotations

import atexit
import time
from collections.abc import Iterator

import pytest

from devstack.scenarios import TEST_DAYS
from devstack.seed import seed_stack
from devstack.stack import Stack, StackConfig


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


@pytest.fixture(scope="session")
def seeded_stack(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The ``stack`` fixture with :data:`devstack.scenarios.TEST_DAYS` (2026-03-02..07) seeded.

    Prometheus is stopped, backfilled through promtool and started again (same ports, same data folder);
    MLflow gets the runs of the same days. Seeding is idempotent, so a second request is a no-op.

    :returns: the running :class:`~devstack.stack.Stack`.
    """
    t0 = time.perf_counter()
    seed_stack(stack, TEST_DAYS, work_dir=tmp_path_factory.mktemp("openmetrics"))
    # Shown with -s: seeding is the session's biggest fixture cost.
    print(f"\nseeded_stack: {len(TEST_DAYS)} days in {time.perf_counter() - t0:.1f} s")
    yield stack
