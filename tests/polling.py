"""Waiting in tests: poll until a condition holds or a deadline passes; never sleep, then assert.

``wait_until`` is the one way the suite waits for something to happen (a server to answer, a mail to
arrive, a process to start). It returns as soon as the condition holds, so a generous deadline costs
nothing when things work; when they do not, it fails saying what was awaited and the last value seen.

For "it did not happen", wait first for a positive signal that the operation finished (a task state, a
delivery record, a request counter), then assert the absence. ``holds_for`` is for the rare case where
nothing but waiting can tell (Alertmanager deduplicating a re-posted alert sends nothing, and nothing
says when it has decided): it checks for the whole window and fails as soon as the condition breaks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def _poll(
    probe: Callable[[], T], until: Callable[[T], Any], seconds: float, interval: float, stop_on: bool
) -> tuple[bool, T, float]:
    """Call ``probe`` every ``interval`` s until ``bool(until(value)) is stop_on`` or ``seconds`` have passed
    (the probe runs once more at the deadline). Returns (stopped, last value, seconds elapsed)."""
    started = time.monotonic()
    deadline = started + seconds
    while True:
        value = probe()
        now = time.monotonic()
        if bool(until(value)) is stop_on:
            return True, value, now - started
        if now >= deadline:
            return False, value, now - started
        time.sleep(min(interval, deadline - now))


def wait_until(
    probe: Callable[[], T],
    *,
    timeout: float,
    what: str,
    until: Callable[[T], Any] = bool,
    interval: float = 0.1,
) -> T:
    """Call ``probe()`` until ``until(value)`` is true (by default: the value itself is truthy).

    :param probe: called repeatedly; an exception it raises propagates at once.
    :param timeout: seconds before giving up: a bound for a broken run, not an expected duration.
    :param what: what is awaited, in words, for the failure message.
    :param until: the condition on the probed value.
    :param interval: seconds between calls.
    :returns: the first value that met the condition.
    :raises AssertionError: ``waited <s> s (timeout <t> s) for <what>; last value: <repr>``.
    """
    done, value, elapsed = _poll(probe, until, timeout, interval, stop_on=True)
    if not done:
        raise AssertionError(f"waited {elapsed:.1f} s (timeout {timeout:g} s) for {what}; last value: {value!r}")
    return value


def holds_for(
    probe: Callable[[], T],
    *,
    seconds: float,
    what: str,
    until: Callable[[T], Any] = bool,
    interval: float = 0.2,
) -> T:
    """Check that ``until(probe())`` stays true for ``seconds``; fail as soon as it is not.

    Only for an absence that nothing but waiting can settle; say why in a comment where it is used.

    :returns: the last value.
    :raises AssertionError: ``<what> stopped holding after <s> s of <seconds> s; value: <repr>``.
    """
    broke, value, elapsed = _poll(probe, until, seconds, interval, stop_on=False)
    if broke:
        raise AssertionError(f"{what} stopped holding after {elapsed:.1f} s of {seconds:g} s; value: {value!r}")
    return value
