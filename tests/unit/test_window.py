"""The window a run covers comes from the run (data interval, trigger parameters, run_after), never from the
clock; windows are half-open and the partition is named after the start in the DAG's timezone."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pendulum
import pytest

from modelwatch.window import (
    Window,
    last_full_interval,
    place_run,
    reference_windows,
    resolve_window,
    run_key,
    selected_models,
    window_from_context,
)

DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
BERLIN = ZoneInfo("Europe/Berlin")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)


# -- the data interval -------------------------------------------------------------------------------------


def test_data_interval_is_used_as_is() -> None:
    w = resolve_window(utc(2026, 3, 3), utc(2026, 3, 4), run_after=utc(2026, 3, 4, 0, 5), interval=DAY)
    assert (w.start, w.end) == (utc(2026, 3, 3), utc(2026, 3, 4))


def test_retry_days_later_covers_the_same_window() -> None:
    first = resolve_window(utc(2026, 3, 3), utc(2026, 3, 4), run_after=utc(2026, 3, 4, 0, 5), interval=DAY)
    retry = resolve_window(utc(2026, 3, 3), utc(2026, 3, 4), run_after=utc(2026, 3, 9, 17, 0), interval=DAY)
    assert retry == first


def test_data_interval_in_another_offset_is_the_same_instants() -> None:
    plus2 = timezone(timedelta(hours=2))
    w = resolve_window(
        datetime(2026, 3, 3, 2, tzinfo=plus2), datetime(2026, 3, 4, 2, tzinfo=plus2), None, DAY
    )
    assert (w.start, w.end) == (utc(2026, 3, 3), utc(2026, 3, 4))
    assert w.start.utcoffset() == timedelta(0)


def test_data_interval_that_is_not_a_whole_period_is_kept() -> None:
    # a backfill over an odd interval is covered exactly, not snapped to the DAG's period
    w = resolve_window(utc(2026, 3, 3, 6), utc(2026, 3, 3, 18), None, DAY)
    assert w.length == timedelta(hours=12)


# -- manual runs without a logical date --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("run_after", "expected"),
    [
        (utc(2026, 3, 3, 10, 17, 42), (utc(2026, 3, 2), utc(2026, 3, 3))),
        (utc(2026, 3, 3, 23, 59, 59), (utc(2026, 3, 2), utc(2026, 3, 3))),
        # exactly at the boundary the interval ending now is complete
        (utc(2026, 3, 3), (utc(2026, 3, 2), utc(2026, 3, 3))),
        # one microsecond before it, it is not
        (utc(2026, 3, 2, 23, 59, 59, 999999), (utc(2026, 3, 1), utc(2026, 3, 2))),
        # across a month end
        (utc(2026, 3, 1, 8), (utc(2026, 2, 28), utc(2026, 3, 1))),
    ],
)
def test_manual_daily_run_covers_last_full_day(
    run_after: datetime, expected: tuple[datetime, datetime]
) -> None:
    w = resolve_window(None, None, run_after=run_after, interval=DAY)
    assert (w.start, w.end) == expected


@pytest.mark.parametrize(
    ("run_after", "expected"),
    [
        (utc(2026, 3, 3, 10, 17), (utc(2026, 3, 3, 9), utc(2026, 3, 3, 10))),
        (utc(2026, 3, 3, 10), (utc(2026, 3, 3, 9), utc(2026, 3, 3, 10))),
        (utc(2026, 3, 3, 10, 59, 59, 999999), (utc(2026, 3, 3, 9), utc(2026, 3, 3, 10))),
        (utc(2026, 3, 3, 0, 30), (utc(2026, 3, 2, 23), utc(2026, 3, 3))),
        (utc(2026, 3, 3), (utc(2026, 3, 2, 23), utc(2026, 3, 3))),
    ],
)
def test_manual_hourly_run_covers_last_full_hour(
    run_after: datetime, expected: tuple[datetime, datetime]
) -> None:
    w = resolve_window(None, None, run_after=run_after, interval=HOUR)
    assert (w.start, w.end) == expected


def test_manual_run_in_the_dag_timezone_covers_the_local_day() -> None:
    w = resolve_window(None, None, run_after=berlin(2026, 3, 3, 0, 30), interval=DAY, tz="Europe/Berlin")
    assert (w.start, w.end) == (berlin(2026, 3, 2), berlin(2026, 3, 3))
    assert w.partition_path == "dt=2026-03-02"


def test_manual_run_matches_the_scheduled_run_of_the_same_day() -> None:
    scheduled = resolve_window(utc(2026, 3, 2), utc(2026, 3, 3), run_after=utc(2026, 3, 3), interval=DAY)
    manual = resolve_window(None, None, run_after=utc(2026, 3, 3, 14, 2), interval=DAY)
    assert manual == scheduled
    assert manual.partition_path == scheduled.partition_path


@pytest.mark.parametrize("interval", [DAY, HOUR])
def test_zero_length_interval_is_treated_like_a_manual_run(interval: timedelta) -> None:
    t = utc(2026, 3, 3, 10, 17)
    manual = resolve_window(None, None, run_after=t, interval=interval)
    assert resolve_window(t, t, run_after=t, interval=interval) == manual
    # no run_after: the (zero-length) interval's instant is the anchor
    assert resolve_window(t, t, run_after=None, interval=interval) == manual


def test_no_interval_and_no_run_after_is_an_error() -> None:
    with pytest.raises(ValueError, match="neither a data interval nor a run_after"):
        resolve_window(None, None, None, DAY)


def test_last_full_interval_of_several_days() -> None:
    assert last_full_interval(utc(2026, 3, 10, 5), timedelta(days=7)) == (utc(2026, 3, 3), utc(2026, 3, 10))


def test_last_full_interval_of_fifteen_minutes() -> None:
    assert last_full_interval(utc(2026, 3, 3, 10, 44, 59), timedelta(minutes=15)) == (
        utc(2026, 3, 3, 10, 15),
        utc(2026, 3, 3, 10, 30),
    )


# -- trigger parameters ------------------------------------------------------------------------------------


def test_override_wins_over_the_data_interval() -> None:
    w = resolve_window(
        utc(2026, 3, 3), utc(2026, 3, 4), utc(2026, 3, 4), DAY,
        override_start=utc(2026, 3, 3, 10), override_end=utc(2026, 3, 3, 12),
    )  # fmt: skip
    assert (w.start, w.end) == (utc(2026, 3, 3, 10), utc(2026, 3, 3, 12))


def test_override_needs_both_ends() -> None:
    with pytest.raises(ValueError, match="needs both"):
        resolve_window(utc(2026, 3, 3), utc(2026, 3, 4), None, DAY, override_start=utc(2026, 3, 3, 10))
    with pytest.raises(ValueError, match="needs both"):
        resolve_window(utc(2026, 3, 3), utc(2026, 3, 4), None, DAY, override_end=utc(2026, 3, 3, 10))


def test_inverted_override_is_an_error() -> None:
    with pytest.raises(ValueError, match="not after its start"):
        resolve_window(None, None, utc(2026, 3, 4), DAY, override_start=utc(2026, 3, 3, 12),
                       override_end=utc(2026, 3, 3, 10))  # fmt: skip


def _context(params: dict[str, object], tz: str = "UTC", **dag_run: object) -> dict[str, object]:
    run = {"data_interval_start": None, "data_interval_end": None, "run_after": None, **dag_run}
    return {
        "dag_run": SimpleNamespace(**run),
        "params": params,
        "dag": SimpleNamespace(timezone=pendulum.timezone(tz), dag_id="model_performance_monitoring"),
    }


def test_window_from_context_reads_the_trigger_form() -> None:
    ctx = _context(
        {"window_start": "2026-03-03T10:00:00Z", "window_end": "2026-03-03T12:30:00+01:00"},
        data_interval_start=utc(2026, 3, 3), data_interval_end=utc(2026, 3, 4), run_after=utc(2026, 3, 4),
    )  # fmt: skip
    w = window_from_context(ctx, DAY)
    assert (w.start, w.end) == (utc(2026, 3, 3, 10), utc(2026, 3, 3, 11, 30))


def test_window_from_context_naive_parameter_is_utc() -> None:
    w = window_from_context(
        _context({"window_start": "2026-03-03T10:00", "window_end": "2026-03-03T11:00"}), DAY
    )
    assert (w.start, w.end) == (utc(2026, 3, 3, 10), utc(2026, 3, 3, 11))


def test_window_from_context_empty_parameters_use_the_run() -> None:
    ctx = _context({"window_start": "", "window_end": ""}, data_interval_start=utc(2026, 3, 3),
                   data_interval_end=utc(2026, 3, 4))  # fmt: skip
    w = window_from_context(ctx, DAY)
    assert (w.start, w.end) == (utc(2026, 3, 3), utc(2026, 3, 4))

    manual = _context({}, run_after=utc(2026, 3, 5, 9, 12))
    w = window_from_context(manual, DAY)
    assert (w.start, w.end) == (utc(2026, 3, 4), utc(2026, 3, 5))


def test_window_from_context_takes_the_dag_timezone() -> None:
    ctx = _context({}, tz="Europe/Berlin", run_after=berlin(2026, 3, 3, 8))
    w = window_from_context(ctx, DAY)
    assert (w.start, w.end) == (utc(2026, 3, 1, 23), utc(2026, 3, 2, 23))
    assert w.partition_path == "dt=2026-03-02"


def test_window_from_context_rejects_a_malformed_parameter() -> None:
    with pytest.raises(ValueError):
        window_from_context(_context({"window_start": "yesterday", "window_end": "today"}), DAY)


# -- partitions --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "path"),
    [
        (utc(2026, 3, 3), utc(2026, 3, 4), "dt=2026-03-03"),
        (utc(2026, 3, 3), utc(2026, 3, 5), "dt=2026-03-03"),
        (utc(2026, 3, 3, 10), utc(2026, 3, 3, 11), "dt=2026-03-03/hour=10"),
        (utc(2026, 3, 3, 10), utc(2026, 3, 3, 12), "dt=2026-03-03/hour=10"),
        (utc(2026, 3, 3, 0), utc(2026, 3, 3, 1), "dt=2026-03-03/hour=00"),
        (utc(2026, 3, 3, 10, 30), utc(2026, 3, 3, 11, 30), "dt=2026-03-03/hour=10/minute=30"),
        (utc(2026, 3, 3, 10, 15), utc(2026, 3, 3, 10, 30), "dt=2026-03-03/hour=10/minute=15"),
        (utc(2026, 3, 3, 10, 0), utc(2026, 3, 3, 10, 15), "dt=2026-03-03/hour=10/minute=00"),
    ],
)
def test_partition_path(start: datetime, end: datetime, path: str) -> None:
    assert Window(start, end).partition_path == path


def test_consecutive_hours_get_distinct_partitions() -> None:
    paths = {Window(utc(2026, 3, 3, h), utc(2026, 3, 3, h) + HOUR).partition_path for h in range(24)}
    assert len(paths) == 24


def test_partition_is_named_in_the_dag_timezone() -> None:
    # 23:00 UTC on the 2nd is midnight on the 3rd in Berlin (winter time)
    w = Window(utc(2026, 3, 2, 23), utc(2026, 3, 3, 23), "Europe/Berlin")
    assert w.partition_path == "dt=2026-03-03"
    assert Window(utc(2026, 3, 2, 23), utc(2026, 3, 3, 23)).partition_path == "dt=2026-03-02"


# -- daylight saving time ----------------------------------------------------------------------------------


def test_spring_forward_day_is_23_hours() -> None:
    # 2026-03-29: Berlin goes from +01:00 to +02:00 at 02:00 local
    w = resolve_window(None, None, run_after=berlin(2026, 3, 30, 8), interval=DAY, tz="Europe/Berlin")
    assert (w.start, w.end) == (utc(2026, 3, 28, 23), utc(2026, 3, 29, 22))
    assert w.length == timedelta(hours=23)
    assert w.partition_path == "dt=2026-03-29"  # the local date, not the UTC date of the start (28th)


def test_fall_back_day_is_25_hours() -> None:
    # 2026-10-25: Berlin goes from +02:00 to +01:00 at 03:00 local
    w = resolve_window(None, None, run_after=berlin(2026, 10, 26, 8), interval=DAY, tz="Europe/Berlin")
    assert (w.start, w.end) == (utc(2026, 10, 24, 22), utc(2026, 10, 25, 23))
    assert w.length == timedelta(hours=25)
    assert w.partition_path == "dt=2026-10-25"


@pytest.mark.parametrize(
    ("start", "end", "path"),
    [
        (berlin(2026, 3, 29), berlin(2026, 3, 30), "dt=2026-03-29"),
        (berlin(2026, 10, 25), berlin(2026, 10, 26), "dt=2026-10-25"),
        (berlin(2026, 3, 28), berlin(2026, 3, 29), "dt=2026-03-28"),
        (berlin(2026, 10, 26), berlin(2026, 10, 27), "dt=2026-10-26"),
    ],
)
def test_scheduled_dst_day_partition_is_the_local_date(start: datetime, end: datetime, path: str) -> None:
    w = resolve_window(start, end, run_after=end, interval=DAY, tz="Europe/Berlin")
    assert w.partition_path == path  # a 23 h or 25 h window is still a day: no hour key


def test_dst_days_tile_with_their_neighbours() -> None:
    windows = [
        resolve_window(None, None, run_after=berlin(2026, 3, d, 12), interval=DAY, tz="Europe/Berlin")
        for d in range(28, 32)
    ]
    for a, b in zip(windows, windows[1:], strict=False):
        assert a.end == b.start
    assert [w.length for w in windows] == [DAY, DAY, timedelta(hours=23), DAY]  # 27th, 28th, 29th, 30th


def test_hourly_in_berlin_on_a_normal_day() -> None:
    w = resolve_window(None, None, run_after=berlin(2026, 3, 3, 10, 17), interval=HOUR, tz="Europe/Berlin")
    assert (w.start, w.end) == (berlin(2026, 3, 3, 9), berlin(2026, 3, 3, 10))
    assert w.partition_path == "dt=2026-03-03/hour=08"  # intraday partitions are named in UTC


@pytest.mark.parametrize(
    ("run_after", "expected"),
    [
        # 01:30 UTC = 03:30 CEST on the spring-forward day: the last full hour is 00:00-01:00 UTC
        # (01:00-03:00 local wall clock, one real hour)
        (utc(2026, 3, 29, 1, 30), (utc(2026, 3, 29, 0), utc(2026, 3, 29, 1))),
        (utc(2026, 3, 29, 2, 30), (utc(2026, 3, 29, 1), utc(2026, 3, 29, 2))),
        (utc(2026, 10, 25, 0, 30), (utc(2026, 10, 24, 23), utc(2026, 10, 25, 0))),
        # 01:30 UTC = 02:30 CET (the second 02:30 of the fall-back night)
        (utc(2026, 10, 25, 1, 30), (utc(2026, 10, 25, 0), utc(2026, 10, 25, 1))),
        (utc(2026, 10, 25, 2, 30), (utc(2026, 10, 25, 1), utc(2026, 10, 25, 2))),
    ],
)  # fmt: skip
def test_manual_hourly_run_on_dst_day_covers_last_full_hour(
    run_after: datetime, expected: tuple[datetime, datetime]
) -> None:
    w = resolve_window(None, None, run_after=run_after, interval=HOUR, tz="Europe/Berlin")
    assert (w.start, w.end) == expected


def test_hourly_partitions_distinct_on_fall_back_night() -> None:
    hours = [Window(utc(2026, 10, 24, 20) + k * HOUR, utc(2026, 10, 24, 21) + k * HOUR, "Europe/Berlin")
             for k in range(10)]  # fmt: skip
    paths = [w.partition_path for w in hours]
    assert len(set(paths)) == len(paths), paths


# -- half-open edges ---------------------------------------------------------------------------------------


def test_window_is_half_open_in_epoch_milliseconds() -> None:
    w = Window(utc(2026, 3, 3), utc(2026, 3, 4))
    assert w.start_ms == int(utc(2026, 3, 3).timestamp()) * 1000
    assert w.end_ms == int(utc(2026, 3, 4).timestamp()) * 1000
    assert w.end_ms - w.start_ms == 86_400_000
    assert str(w) == "[2026-03-03T00:00:00+00:00, 2026-03-04T00:00:00+00:00)"


def test_epoch_milliseconds_truncate_microseconds() -> None:
    w = Window(utc(2026, 3, 3, 0, 0, 0, 999), utc(2026, 3, 3, 0, 0, 1, 1999))
    assert w.start_ms == int(utc(2026, 3, 3).timestamp()) * 1000
    assert w.end_ms == int(utc(2026, 3, 3).timestamp()) * 1000 + 1001


def test_consecutive_manual_windows_neither_overlap_nor_leave_gaps() -> None:
    for interval in (DAY, HOUR, timedelta(minutes=15)):
        windows = [resolve_window(None, None, utc(2026, 3, 3) + k * interval, interval) for k in range(1, 50)]
        for a, b in zip(windows, windows[1:], strict=False):
            assert a.end == b.start  # an instant exactly at a.end belongs to b only
            assert a.end_ms == b.start_ms


def test_window_rejects_empty_inverted_and_naive_bounds() -> None:
    with pytest.raises(ValueError, match="not after"):
        Window(utc(2026, 3, 3), utc(2026, 3, 3))
    with pytest.raises(ValueError, match="not after"):
        Window(utc(2026, 3, 4), utc(2026, 3, 3))
    with pytest.raises(ValueError, match="timezone-aware"):
        Window(datetime(2026, 3, 3), datetime(2026, 3, 4))


def test_to_dict_round_trips_instants() -> None:
    w = Window(berlin(2026, 3, 29), berlin(2026, 3, 30), "Europe/Berlin")
    d = w.to_dict()
    assert d["tz"] == "Europe/Berlin"
    assert datetime.fromisoformat(d["start"]) == berlin(2026, 3, 29)
    assert datetime.fromisoformat(d["end"]) == berlin(2026, 3, 30)


# -- run identity: canonical partitions only for whole scheduled intervals of every model ------------------

RUN = "manual__2026-03-04T09:12:00.123456+00:00"


def test_a_scheduled_interval_of_every_model_is_canonical() -> None:
    day = place_run(Window(utc(2026, 3, 3), utc(2026, 3, 4)), DAY, run_id="scheduled__x", models=set())
    assert day.canonical and day.partition_path == "dt=2026-03-03" and day.table == ""
    hour = place_run(Window(utc(2026, 3, 3, 10), utc(2026, 3, 3, 11)), HOUR, run_id=RUN, models=set())
    assert hour.canonical and hour.table == "intraday" and hour.partition_path == "dt=2026-03-03/hour=10"


def test_a_trigger_form_window_is_ad_hoc_and_named_by_its_run() -> None:
    w = place_run(Window(utc(2026, 3, 3, 10), utc(2026, 3, 3, 12)), DAY, run_id=RUN, models=set())
    assert not w.canonical and w.table == "adhoc"
    assert w.partition_path == f"dt=2026-03-03/run={run_key(RUN)}"
    assert w.to_dict()["run_key"].startswith("manual__2026-03-04T09-12-00.123456-00-00-")
    # an hour of the daily DAG is not the hourly DAG's partition, nor a noon-to-noon day the scheduled day
    noon = place_run(Window(utc(2026, 3, 3, 12), utc(2026, 3, 4, 12)), DAY, run_id=RUN, models=set())
    assert noon.table == "adhoc"


def test_a_model_subset_is_ad_hoc_even_for_a_whole_day() -> None:
    w = place_run(Window(utc(2026, 3, 3), utc(2026, 3, 4)), DAY, run_id=RUN, models={"recommender"})
    assert not w.canonical and w.partition_path.startswith("dt=2026-03-03/run=")


def test_a_dry_run_of_a_whole_day_is_ad_hoc() -> None:
    """A dry run judges without paging: it must not replace the partitions and alert records of the run that
    paged for that day, so it gets a place of its own."""
    w = place_run(Window(utc(2026, 3, 3), utc(2026, 3, 4)), DAY, run_id=RUN, models=set(), dry_run=True)
    assert not w.canonical and w.table == "adhoc"
    ctx = _context({"dry_run": True}, data_interval_start=utc(2026, 3, 3), data_interval_end=utc(2026, 3, 4))
    ctx["run_id"] = RUN
    assert window_from_context(ctx, DAY).table == "adhoc"


def test_a_multi_day_ad_hoc_window_is_refused_with_what_to_do() -> None:
    with pytest.raises(ValueError, match=r"spans 48 h.*at most 25 h.*backfill"):
        place_run(Window(utc(2026, 3, 3), utc(2026, 3, 5)), DAY, run_id=RUN, models=set())


def test_a_local_day_with_a_dst_change_is_still_scheduled() -> None:
    start, end = berlin(2026, 3, 29), berlin(2026, 3, 30)  # 23 hours
    w = place_run(Window(start, end, "Europe/Berlin"), DAY, run_id=RUN, models=set())
    assert w.canonical and w.length == timedelta(hours=23)
    assert w.previous == Window(berlin(2026, 3, 28), start, "Europe/Berlin")


def test_run_keys_are_one_bounded_path_segment() -> None:
    key = run_key("manual__2026-03-04T09:12:00+00:00", "model_performance_monitoring")
    assert key.startswith("manual__2026-03-04T09-12-00-00-00-")  # a person finds the run by its id
    for hostile in ("a/b/../c", "///", "..", "run\nid", "$\\foo$", "模型" * 200, "x" * 1000):
        k = run_key(hostile, "d")
        assert re.fullmatch(r"[A-Za-z0-9._-]{1,61}", k) and k not in (".", "..") and not k.startswith("."), k


def test_run_keys_are_unique_per_dag_and_run_id() -> None:
    """``+00:00`` and ``-00:00`` read alike once made a path segment; the daily and the hourly DAG share run
    ids; long ids that differ only at the end: each run still has a place of its own."""
    assert run_key("manual__2026-03-04T09:12:00+00:00", "d") != run_key("manual__2026-03-04T09:12:00-00:00", "d")
    assert run_key(RUN, "model_performance_monitoring") != run_key(RUN, "model_performance_monitoring_hourly")
    assert run_key("x" * 100 + "1", "d") != run_key("x" * 100 + "2", "d")
    assert run_key(RUN, "d") == run_key(RUN, "d")  # a retry of the run writes where its first try did


def test_window_from_context_places_the_run() -> None:
    ctx = _context({"models": [" recommender ", ""]}, data_interval_start=utc(2026, 3, 3),
                   data_interval_end=utc(2026, 3, 4))  # fmt: skip
    ctx["run_id"] = RUN
    window = window_from_context(ctx, DAY)
    assert window.table == "adhoc" and window.run_key == run_key(RUN, ctx["dag"].dag_id)
    assert selected_models(ctx["params"]) == {"recommender"}


def test_the_reference_is_the_days_before_never_the_window_nor_its_day() -> None:
    day = Window(utc(2026, 3, 3), utc(2026, 3, 4))
    assert [w.partition_path for w in reference_windows(day, 3)] == ["dt=2026-03-02", "dt=2026-03-01", "dt=2026-02-28"]
    hour = Window(utc(2026, 3, 3, 10), utc(2026, 3, 3, 11))  # its day's partition holds the hour itself
    assert [w.partition_path for w in reference_windows(hour, 1)] == ["dt=2026-03-02"]
    adhoc = place_run(Window(utc(2026, 3, 3, 10), utc(2026, 3, 3, 12)), DAY, run_id=RUN, models=set())
    assert all(w.canonical for w in reference_windows(adhoc, 2))
    local = Window(berlin(2026, 3, 30), berlin(2026, 3, 31), "Europe/Berlin")
    assert [w.length for w in reference_windows(local, 2)] == [timedelta(hours=23), timedelta(hours=24)]
