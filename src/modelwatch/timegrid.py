"""Time on Prometheus's millisecond grid: epoch milliseconds, steps, and the chunks of a long query_range.

Shared by every layer (the window, the hooks, the extractors, the correlation), so it imports nothing of
modelwatch. Window convention everywhere: a run covers the half-open interval ``[start, end)``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Prometheus refuses a query_range whose (end - start) / step exceeds this many points per series.
PROMETHEUS_MAX_POINTS = 11000


# -- time ----------------------------------------------------------------------------------------------


def epoch_ms(dt: datetime) -> int:
    """``dt`` as integer epoch milliseconds (sub-millisecond part truncated).

    :raises ValueError: for a naive datetime.
    """
    if dt.tzinfo is None:
        raise ValueError(f"naive datetime {dt.isoformat()}: pass timezone-aware datetimes")
    delta = dt - EPOCH
    return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000


def from_epoch_ms(ms: int) -> datetime:
    """Epoch milliseconds as an aware UTC datetime."""
    return EPOCH + timedelta(milliseconds=ms)


def step_to_ms(step_seconds: float | timedelta) -> int:
    """A query step in whole milliseconds (Prometheus's resolution).

    :raises ValueError: when the step is under one millisecond.
    """
    seconds = step_seconds.total_seconds() if isinstance(step_seconds, timedelta) else float(step_seconds)
    step = round(seconds * 1000)
    if step < 1:
        raise ValueError(f"step {step_seconds!r} is below Prometheus's 1 ms resolution")
    return step


def last_step_before(start: datetime, end: datetime, step_seconds: float | timedelta) -> datetime:
    """The last instant of ``start``'s step grid strictly before ``end``: the inclusive end to query
    for the half-open window ``[start, end)`` (``end - step`` when the window is a whole number of steps).

    :raises ValueError: when ``end`` is not after ``start``.
    """
    s, e, step = epoch_ms(start), epoch_ms(end), step_to_ms(step_seconds)
    if e <= s:
        raise ValueError(f"window end {end.isoformat()} is not after its start {start.isoformat()}")
    return from_epoch_ms(s + ((e - s - 1) // step) * step)


def plan_chunks(
    start: datetime, end: datetime, step_seconds: float | timedelta, max_points: int = PROMETHEUS_MAX_POINTS
) -> list[tuple[datetime, datetime]]:
    """Split an inclusive query_range window into requests of at most ``max_points`` points per series.

    Prometheus evaluates a query_range at ``start + k * step`` for every such instant ``<= end``, both
    ends included. Each chunk starts on that grid and ends on the grid point before the next chunk's
    start, so no instant is evaluated twice and together the chunks evaluate exactly the instants one
    request over ``[start, end]`` would. The last chunk ends on the last grid point ``<= end``.

    :param start: first evaluation time (timezone-aware).
    :param end: last possible evaluation time, inclusive (timezone-aware).
    :param step_seconds: evaluation step (millisecond resolution).
    :param max_points: evaluation points per chunk (Prometheus allows ``(end - start) / step <= 11000``).
    :return: ``[(chunk_start, chunk_end), ...]`` in time order, UTC, both ends inclusive.
    :raises ValueError: when ``end`` is before ``start`` or an argument is out of range.
    """
    if max_points < 1:
        raise ValueError(f"max_points must be at least 1, got {max_points}")
    s, e, step = epoch_ms(start), epoch_ms(end), step_to_ms(step_seconds)
    if e < s:
        raise ValueError(f"end {end.isoformat()} is before start {start.isoformat()}")
    n_points = (e - s) // step + 1
    chunks = []
    for first in range(0, n_points, max_points):
        last = min(first + max_points, n_points) - 1
        chunks.append((from_epoch_ms(s + first * step), from_epoch_ms(s + last * step)))
    return chunks
