"""Session fixture ``seeded_stack``: the session's real stack holding CONTRACT.md's fixed test days.

Registered in ``tests/integration/conftest.py`` with ``from seeded import seeded_stack  # noqa: F401``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from devstack.scenarios import TEST_DAYS
from devstack.seed import seed_stack
from devstack.stack import Stack


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
