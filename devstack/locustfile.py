"""Locust load for the sample model service (:mod:`devstack.model_service`): quiet, surge, quiet, stop.

``locust -f devstack/locustfile.py --headless --host http://127.0.0.1:18000`` (with the repository on
PYTHONPATH). The phases come from ``MODELWATCH_LOAD_*`` variables (see :mod:`devstack.loadshape`);
:func:`devstack.drill.run_drill` runs this file as a subprocess and adds the CPU burner during the surge.

Each user posts feature rows drawn from the model's training distribution, with their true label (the
delayed feedback that gives the service its accuracy and loss), waiting ``MODELWATCH_LOAD_WAIT_MIN_S`` to
``_MAX_S`` between requests. The shape stops the test by itself when the last phase ends.

Why: Locust does the load generation, the statistics and the shape's scheduling; this file is only what
Locust asks of a project, one user class and one ``LoadTestShape``.
"""

from __future__ import annotations

import itertools
import random
import time

from locust import HttpUser, LoadTestShape, between, task

from devstack.loadshape import LoadPhases, start_epoch_from_env
from devstack.model_service import sample_rows

PHASES = LoadPhases.from_env()
START_EPOCH = start_epoch_from_env()
ROWS, LABELS = sample_rows(1000, seed=PHASES.seed)
_user_ids = itertools.count()


class ModelUser(HttpUser):
    """One client of the model service: POST /predict with a labelled row, think, repeat."""

    wait_time = between(PHASES.wait_min_s, PHASES.wait_max_s)

    def on_start(self) -> None:
        """Each user walks the rows from its own random offset."""
        self._rng = random.Random(PHASES.seed * 1000 + next(_user_ids))

    @task
    def predict(self) -> None:
        """One prediction with its true label."""
        i = self._rng.randrange(len(ROWS))
        self.client.post(
            "/predict", json={"features": ROWS[i], "label": LABELS[i]}, name="/predict", timeout=60
        )


class DrillShape(LoadTestShape):
    """Users per phase of :data:`PHASES`; the clock starts at ``MODELWATCH_LOAD_START_EPOCH`` when set."""

    def tick(self) -> tuple[int, float] | None:
        """:returns: ``(users, spawn rate)`` for now, or None to stop."""
        elapsed = time.time() - START_EPOCH if START_EPOCH is not None else self.get_run_time()
        # Before the drill's start (a generator started early): already run the quiet users.
        return PHASES.tick(max(elapsed, 0.0))
