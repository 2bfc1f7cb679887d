"""The time window a run covers, and the partition it writes.

Every task derives its window from the run (its data interval), never from the wall clock, so a task
retried tomorrow reads and writes exactly what it did today.

Run identity: the canonical partitions of a window (``dt=D``; hourly ``dt=D/hour=HH``) are written only by
a run whose window is exactly one scheduled interval of its DAG, that judges every model and that is
not a dry run: scheduled runs, backfills, and manual runs of a whole interval. Any other run (a
trigger-form window, a model subset, a dry run, which must not replace what a paging run stored) is ad hoc: it writes under ``adhoc/<dataset>/dt=D/run=<run id>/``, its own place, and never
replaces canonical data. An ad-hoc window longer than :data:`MAX_ADHOC_WINDOW` is refused: a backfill
judges several days, one canonical run per day.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from modelwatch.timegrid import epoch_ms

#: The longest window an ad-hoc run may cover: a day, and the hour a daylight-saving change adds.
MAX_ADHOC_WINDOW = timedelta(hours=25)
#: The table folders under the lake's base URL: daily partitions at the top, then these.
INTRADAY, ADHOC = "intraday", "adhoc"


@dataclass(frozen=True)
class Window:
    """A half-open interval ``[start, end)``; ``tz`` is the DAG's timezone, used only to name the partition.

    ``run_key`` is empty for a canonical window, and names the run (:func:`run_key`) for an ad-hoc one.
    """

    start: datetime
    end: datetime
    tz: str = "UTC"
    run_key: str = ""

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("window bounds must be timezone-aware")
        if self.end <= self.start:
            raise ValueError(f"window end {self.end.isoformat()} is not after its start {self.start.isoformat()}")
        object.__setattr__(self, "start", self.start.astimezone(UTC))
        object.__setattr__(self, "end", self.end.astimezone(UTC))

    @classmethod
    def of_day(cls, day: date) -> Window:
        """The UTC day ``day`` as a daily window (the canonical daily partition's)."""
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        return cls(start, start + timedelta(days=1))

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
    def canonical(self) -> bool:
        """Whether this window's partitions are the canonical ones (see the module's docstring)."""
        return not self.run_key

    @property
    def intraday(self) -> bool:
        """Shorter than a day (an hourly schedule): stored apart from daily runs."""
        return self.length < timedelta(hours=23)  # a daily window on a DST day is 23 or 25 hours

    @property
    def table(self) -> str:
        """The folder of the tables this window's partitions belong to: ``""`` (daily), ``intraday`` or
        ``adhoc``; each table has one partitioning scheme."""
        if self.run_key:
            return ADHOC
        return INTRADAY if self.intraday else ""

    @property
    def partition(self) -> tuple[tuple[str, str], ...]:
        """Hive-style partition keys.

        A daily window is ``dt``, the start's date in the DAG timezone (what a person calls "that day").
        A shorter window is ``dt``/``hour`` (and ``minute`` when not on the hour) in UTC: local hours repeat
        on the night clocks go back, and two runs must never share a partition. An ad-hoc window is
        ``dt`` (its start's UTC date) and ``run``.
        """
        if self.run_key:
            return (("dt", self.start.strftime("%Y-%m-%d")), ("run", self.run_key))
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
        return {"start": self.start.isoformat(), "end": self.end.isoformat(), "tz": self.tz,
                **({"run_key": self.run_key} if self.run_key else {})}  # fmt: skip

    def __str__(self) -> str:
        return f"[{self.start.isoformat()}, {self.end.isoformat()})"

    @property
    def previous(self) -> Window:
        """The scheduled window just before this one (a day is 23, 24 or 25 hours in a DST timezone)."""
        interval = self.length if self.intraday else timedelta(days=1)
        start, end = last_full_interval(self.start, interval, ZoneInfo(self.tz))
        return replace(self, start=start, end=end)


def reference_windows(window: Window, days: int) -> list[Window]:
    """The canonical daily windows of the ``days`` days before ``window``'s day, newest first: where a
    model's history is read from. Never the window itself, nor the day an hourly or ad-hoc window lies in
    (its daily partition would hold the window's own predictions)."""
    out = []
    end = window.start
    for _ in range(days):
        start, end = last_full_interval(end, timedelta(days=1), ZoneInfo(window.tz))
        out.append(Window(start, end, window.tz))
        end = start
    return out


def run_key(run_id: str, dag_id: str = "") -> str:
    """A run as a partition value, unique per DAG and run id: the run id's letters, digits, ``.``, ``_`` and
    ``-`` (a person finds an ad-hoc run's results by its id; ``:`` and ``+`` of a manual run's time become
    ``-``), at most 48 of them, then 12 hex digits of the SHA-256 of the DAG id and the exact run id.

    The hash keeps apart what the readable part cannot: ``+00:00`` and ``-00:00`` run ids, the same run id
    in the daily and the hourly DAG, and run ids that only differ after the 48th character. One path
    segment everywhere, at most 61 characters.
    """
    import hashlib

    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", run_id).strip("-.")[:48].rstrip("-.") or "run"
    digest = hashlib.sha256(f"{dag_id}\0{run_id}".encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{readable}-{digest}"


def is_scheduled_interval(window: Window, interval: timedelta) -> bool:
    """Whether ``window`` is exactly one interval of the DAG's schedule (aligned as its timetable aligns)."""
    start, end = last_full_interval(window.end, interval, ZoneInfo(window.tz))
    return (start, end) == (window.start, window.end)


def place_run(
    window: Window, interval: timedelta, *, run_id: str, models: set[str], dag_id: str = "", dry_run: bool = False
) -> Window:
    """The window with the run's identity: canonical when it is one scheduled interval, the run judges
    every model and is not a dry run, ad hoc (keyed by ``dag_id`` and ``run_id``, :func:`run_key`) otherwise.

    :raises ValueError: for an ad-hoc window longer than :data:`MAX_ADHOC_WINDOW`, saying what to do instead.
    """
    if is_scheduled_interval(window, interval) and not models and not dry_run:
        return window
    if window.length > MAX_ADHOC_WINDOW:
        hours = window.length / timedelta(hours=1)
        raise ValueError(
            f"window {window} spans {hours:g} h; an ad-hoc window may span at most "
            f"{MAX_ADHOC_WINDOW / timedelta(hours=1):g} h. To judge several days, run a backfill over them "
            "(Airflow UI: Trigger > Backfill, or `airflow backfill create`): each day is then a run of its own "
            "and writes its canonical partitions"
        )
    return replace(window, run_key=run_key(run_id, dag_id))


def selected_models(params: Any) -> set[str]:
    """The trigger form's ``models`` parameter as a set (empty: every model)."""
    models = (params or {}).get("models") or []
    return {m.strip() for m in models if m and m.strip()}


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
    """The window of the running task's DAG run, honouring the ``window_start``/``window_end``, ``models``
    and ``dry_run`` params, with its identity (:func:`place_run`)."""
    dag_run = context["dag_run"]
    params = context.get("params") or {}
    tz = str(getattr(getattr(context.get("dag"), "timezone", None), "name", None) or "UTC")
    window = resolve_window(
        data_interval_start=getattr(dag_run, "data_interval_start", None),
        data_interval_end=getattr(dag_run, "data_interval_end", None),
        run_after=getattr(dag_run, "run_after", None),
        interval=interval,
        tz=tz,
        override_start=_parse_param_time(params.get("window_start")),
        override_end=_parse_param_time(params.get("window_end")),
    )
    run_id = str(context.get("run_id") or getattr(dag_run, "run_id", "") or "")
    dag_id = str(getattr(context.get("dag"), "dag_id", None) or getattr(dag_run, "dag_id", "") or "")
    return place_run(window, interval, run_id=run_id, models=selected_models(params), dag_id=dag_id,
                     dry_run=bool(params.get("dry_run", False)))


def _parse_param_time(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        dt = value
    else:
        dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
