"""The time window a run covers, and the partition it writes.

Every task derives its window from the run (its data interval), never from the wall clock, so a task
retried tomorrow reads and writes exactly what it did today.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from modelwatch.timegrid import epoch_ms


@dataclass(frozen=True)
class Window:
    """A half-open interval ``[start, end)``; ``tz`` is the DAG's timezone, used only to name the partition."""

    start: datetime
    end: datetime
    tz: str = "UTC"

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("window bounds must be timezone-aware")
        if self.end <= self.start:
            raise ValueError(f"window end {self.end.isoformat()} is not after its start {self.start.isoformat()}")
        object.__setattr__(self, "start", self.start.astimezone(UTC))
        object.__setattr__(self, "end", self.end.astimezone(UTC))

    @property
    def start_ms(self) -> int:
        """Start as epoch milliseconds (MLflow's unit)."""
        return epoch_ms(self.start)

    @property
    def end_ms(self) -> int:
        """End as epoch milliseconds (exclusive)."""
        return epoch_ms(self.end)

    @property
    def length(self) -> timedelta:
        return self.end - self.start

    @property
    def intraday(self) -> bool:
        """Shorter than a day (an hourly schedule, or a trigger-form window): stored apart from daily runs."""
        return self.length < timedelta(hours=23)  # a daily window on a DST day is 23 or 25 hours

    @property
    def partition(self) -> tuple[tuple[str, str], ...]:
        """Hive-style partition keys.

        A daily window is ``dt``, the start's date in the DAG timezone (what a person calls "that day").
        A shorter window is ``dt``/``hour`` (and ``minute`` when not on the hour) in UTC: local hours repeat
        on the night clocks go back, and two runs must never share a partition.
        """
        if not self.intraday:
            return (("dt", self.start.astimezone(ZoneInfo(self.tz)).strftime("%Y-%m-%d")),)
        keys = [("dt", self.start.strftime("%Y-%m-%d")), ("hour", self.start.strftime("%H"))]
        if self.start.minute or self.length < timedelta(hours=1):
            keys.append(("minute", self.start.strftime("%M")))
        return tuple(keys)

    @property
    def partition_path(self) -> str:
        """``dt=2026-03-03`` or ``dt=2026-03-03/hour=10``."""
        return "/".join(f"{k}={v}" for k, v in self.partition)

    def to_dict(self) -> dict[str, str]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat(), "tz": self.tz}

    def __str__(self) -> str:
        return f"[{self.start.isoformat()}, {self.end.isoformat()})"


def last_full_interval(run_after: datetime, interval: timedelta, tz: tzinfo = UTC) -> tuple[datetime, datetime]:
    """The last complete interval that ended at or before ``run_after``.

    Intervals are aligned on whole multiples of ``interval`` from local midnight (a daily interval runs
    midnight to midnight in ``tz``), which is where the interval timetable puts scheduled runs too, so a
    manual run covers exactly what a scheduled run of the same period covers.
    """
    local = run_after.astimezone(tz)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if interval >= timedelta(days=1):
        days = max(1, round(interval / timedelta(days=1)))
        end = midnight
        start = (end - timedelta(days=days)).replace(tzinfo=None).replace(tzinfo=tz)
        return start.astimezone(UTC), end.astimezone(UTC)
    # Count whole intervals in UTC: wall-clock arithmetic on aware datetimes goes wrong across DST changes.
    midnight_utc = midnight.astimezone(UTC)
    steps = (run_after.astimezone(UTC) - midnight_utc) // interval
    end = midnight_utc + steps * interval
    return end - interval, end


def resolve_window(
    data_interval_start: datetime | None,
    data_interval_end: datetime | None,
    run_after: datetime | None,
    interval: timedelta,
    tz: str = "UTC",
    override_start: datetime | None = None,
    override_end: datetime | None = None,
) -> Window:
    """The window a run covers.

    Precedence: an explicit override (the trigger form's window), then the run's data interval, then,
    for a manual run with no logical date (zero-length or missing interval), the last full interval
    before ``run_after``.

    :raises ValueError: when nothing gives a window, or the override is inverted.
    """
    if override_start is not None or override_end is not None:
        if override_start is None or override_end is None:
            raise ValueError("a window override needs both window_start and window_end")
        return Window(override_start, override_end, tz)
    if data_interval_start is not None and data_interval_end is not None and data_interval_end > data_interval_start:
        return Window(data_interval_start, data_interval_end, tz)
    anchor = run_after or data_interval_end or data_interval_start
    if anchor is None:
        raise ValueError("the run has neither a data interval nor a run_after time to take its window from")
    start, end = last_full_interval(anchor, interval, ZoneInfo(tz))
    return Window(start, end, tz)


def window_from_context(context: Any, interval: timedelta) -> Window:
    """The window of the running task's DAG run, honouring the ``window_start``/``window_end`` params."""
    dag_run = context["dag_run"]
    params = context.get("params") or {}
    tz = str(getattr(getattr(context.get("dag"), "timezone", None), "name", None) or "UTC")
    return resolve_window(
        data_interval_start=getattr(dag_run, "data_interval_start", None),
        data_interval_end=getattr(dag_run, "data_interval_end", None),
        run_after=getattr(dag_run, "run_after", None),
        interval=interval,
        tz=tz,
        override_start=_parse_param_time(params.get("window_start")),
        override_end=_parse_param_time(params.get("window_end")),
    )


def _parse_param_time(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        dt = value
    else:
        dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
