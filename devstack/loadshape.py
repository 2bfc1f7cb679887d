"""The three phases of a load drill (quiet, burn with a traffic surge, quiet again), free of Locust.

:mod:`devstack.locustfile` turns :class:`LoadPhases` into a Locust ``LoadTestShape``; :mod:`devstack.drill`
sets the same phases through the environment. Kept apart from the locustfile because importing Locust
monkey-patches the whole process with gevent: tests and the drill import this module, never Locust.

Environment (all optional; defaults in brackets):
``MODELWATCH_LOAD_QUIET_S`` [40], ``MODELWATCH_LOAD_BURN_S`` [75], ``MODELWATCH_LOAD_AFTER_S`` [40] (phase
lengths, seconds), ``MODELWATCH_LOAD_USERS_QUIET`` [5], ``MODELWATCH_LOAD_USERS_SURGE`` [15] (concurrent
users), ``MODELWATCH_LOAD_WAIT_MIN_S`` [0.1], ``MODELWATCH_LOAD_WAIT_MAX_S`` [0.3] (each user's think time
between two requests), ``MODELWATCH_LOAD_START_EPOCH`` (epoch seconds when the quiet phase starts; unset:
when the load generator starts), ``MODELWATCH_LOAD_SEED`` [11] (feature rows).

Under saturation a model service's traffic usually rises (clients retry, queue, time out and come back),
so the burn phase runs ``users_surge`` users, about three times the quiet count.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass

ENV_PREFIX = "MODELWATCH_LOAD_"
PHASES = ("quiet", "burn", "after")


@dataclass(frozen=True)
class LoadPhases:
    """Phase lengths, users and think time of a drill."""

    quiet_s: float = 40.0
    burn_s: float = 75.0
    after_s: float = 40.0
    users_quiet: int = 5
    users_surge: int = 15
    wait_min_s: float = 0.1
    wait_max_s: float = 0.3
    seed: int = 11

    def __post_init__(self) -> None:
        for name in ("quiet_s", "burn_s", "after_s", "wait_min_s", "wait_max_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.users_quiet < 1 or self.users_surge < 1:
            raise ValueError(f"users must be at least 1 (quiet {self.users_quiet}, surge {self.users_surge})")
        if self.wait_max_s < self.wait_min_s:
            raise ValueError(f"wait_max_s {self.wait_max_s} is below wait_min_s {self.wait_min_s}")

    @property
    def total_s(self) -> float:
        """Length of the whole drill, seconds."""
        return self.quiet_s + self.burn_s + self.after_s

    def phase_at(self, elapsed_s: float) -> str | None:
        """:param elapsed_s: seconds since the quiet phase started.
        :returns: ``"quiet"``, ``"burn"``, ``"after"``, or None once the drill is over (or before it)."""
        if elapsed_s < 0 or elapsed_s >= self.total_s:
            return None
        if elapsed_s < self.quiet_s:
            return "quiet"
        if elapsed_s < self.quiet_s + self.burn_s:
            return "burn"
        return "after"

    def users_at(self, elapsed_s: float) -> int | None:
        """:param elapsed_s: seconds since the quiet phase started.
        :returns: how many users should run then, or None when the load must stop."""
        phase = self.phase_at(elapsed_s)
        if phase is None:
            return None
        return self.users_surge if phase == "burn" else self.users_quiet

    def tick(self, elapsed_s: float) -> tuple[int, float] | None:
        """What a Locust ``LoadTestShape.tick()`` returns: ``(users, spawn rate per second)`` or None (stop).

        The spawn rate starts or stops a whole phase's users within one second, so phases switch sharply.
        """
        users = self.users_at(elapsed_s)
        if users is None:
            return None
        return users, float(max(self.users_quiet, self.users_surge))

    def to_env(self, start_epoch: float | None = None) -> dict[str, str]:
        """:param start_epoch: epoch seconds when the quiet phase starts (None: when the generator starts).
        :returns: the ``MODELWATCH_LOAD_*`` variables :meth:`from_env` reads back."""
        env = {f"{ENV_PREFIX}{k.upper()}": str(v) for k, v in asdict(self).items()}
        if start_epoch is not None:
            env[f"{ENV_PREFIX}START_EPOCH"] = repr(float(start_epoch))
        return env

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LoadPhases:
        """:param environ: environment (default :data:`os.environ`).
        :returns: the phases; unset variables take the defaults.
        :raises ValueError: naming the variable when a value is not a number."""
        env = os.environ if environ is None else environ
        kwargs: dict[str, float | int] = {}
        for name, default in asdict(cls()).items():
            var = f"{ENV_PREFIX}{name.upper()}"
            if env.get(var):
                try:
                    kwargs[name] = (
                        type(default)(float(env[var])) if isinstance(default, int) else float(env[var])
                    )
                except ValueError:
                    raise ValueError(f"{var}={env[var]!r} is not a number") from None
        return cls(**kwargs)  # type: ignore[arg-type]


def start_epoch_from_env(environ: Mapping[str, str] | None = None) -> float | None:
    """:param environ: environment (default :data:`os.environ`).
    :returns: ``MODELWATCH_LOAD_START_EPOCH`` as a float, or None when unset."""
    env = os.environ if environ is None else environ
    value = env.get(f"{ENV_PREFIX}START_EPOCH")
    return float(value) if value else None
