"""Threshold replay: judge stored days again under another ``thresholds.yaml``, without posting, and show how
many pages each kind would have sent and on which days, beside the current thresholds.

A team tunes before it changes anything: ``make replay CANDIDATE=my-thresholds.yaml`` (or
``python -m modelwatch.replay --candidate my-thresholds.yaml [--from D --to D] [--lake URL]``), or the
``modelwatch_threshold_replay`` DAG's trigger form (the keys to change, pasted as YAML; the table in the
task's log and XCom). It reads the
canonical ``predictions`` and ``resources`` partitions the DAG wrote (nothing from Prometheus or MLflow, so
the replay sees exactly what the runs saw), runs the same correlation and evaluation as the DAG under each
configuration, and asks the same :func:`modelwatch.alerting.pages` what would page. It never talks to
Alertmanager and writes nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from modelwatch.alerting import pages
from modelwatch.config import STORAGE_URL_ENV, ConfigError, load_config
from modelwatch.correlate import correlate
from modelwatch.evaluate import evaluate, history_columns
from modelwatch.schema import PREDICTION_COLUMNS
from modelwatch.storage import IncompletePartition, Lake
from modelwatch.window import Window, reference_windows

if TYPE_CHECKING:
    import pandas as pd

    from modelwatch.config import ModelwatchConfig
    from modelwatch.verdict import ModelVerdict


@dataclass(frozen=True)
class DayReplay:
    """What one stored day gives under one configuration: verdict kind -> the models it would page for."""

    day: date
    pages: dict[str, list[str]]


def judge_day(lake: Lake, day: date, cfg: ModelwatchConfig,
              stored: tuple[pd.DataFrame, pd.DataFrame] | None = None) -> list[ModelVerdict]:  # fmt: skip
    """The verdicts of one stored UTC day under ``cfg``, as the DAG's tasks give them.

    :param stored: the day's ``predictions`` and ``resources`` when already read (:func:`read_day`).
    :raises IncompletePartition: when the day's ``predictions`` or ``resources`` partition is not complete.
    """
    window = Window.of_day(day)
    predictions, resources = stored if stored is not None else read_day(lake, day, [cfg])
    joined, summary = correlate(predictions, resources, cfg)
    reference, found = lake.read_history(
        "predictions", reference_windows(window, cfg.quality.reference_days), history_columns(cfg)
    )
    return evaluate(joined, summary, resources, cfg, window, reference=reference,
                    reference_days=[dict(w.partition)["dt"] for w in found])  # fmt: skip


def read_day(lake: Lake, day: date, configs: list[ModelwatchConfig]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The stored day's ``predictions`` (with the values the configurations log: a day stored before one was
    logged reads it as not logged, as the reference days do) and ``resources``.

    :raises IncompletePartition: when either is not complete.
    """
    window = Window.of_day(day)
    logged = dict.fromkeys(column for cfg in configs for column in cfg.mlflow.logged.columns())
    predictions = lake.read_partition(lake.partition_url("predictions", window), columns=[*PREDICTION_COLUMNS, *logged])
    return predictions, lake.read_frame("resources", window)


def _paged(verdicts: list[ModelVerdict], cfg: ModelwatchConfig) -> dict[str, list[str]]:
    paged: dict[str, list[str]] = {}
    for v, kind, *_ in pages(verdicts, cfg.alerting):
        paged.setdefault(kind, []).append(v.model)
    return paged


def replay_days(lake: Lake, days: Iterable[date], configs: list[ModelwatchConfig],
                progress: Callable[[str], None] = lambda _: None) -> list[list[DayReplay]]:  # fmt: skip
    """:func:`judge_day` under each configuration for each day that is stored, each day read once (the days
    not stored are skipped, and said so). :returns: one list of :class:`DayReplay` per configuration."""
    out: list[list[DayReplay]] = [[] for _ in configs]
    for day in days:
        try:
            stored = read_day(lake, day, configs)
        except IncompletePartition as exc:
            progress(f"{day}: skipped ({exc})")
            continue
        counts = []
        for cfg, replays in zip(configs, out, strict=True):
            paged = _paged(judge_day(lake, day, cfg, stored), cfg)
            replays.append(DayReplay(day, paged))
            counts.append(str(sum(len(m) for m in paged.values())))
        progress(f"{day}: {' / '.join(counts)} page(s)")
    return out


def comparison(current: list[DayReplay], candidate: list[DayReplay]) -> list[list[str]]:
    """Rows of the side-by-side table: one per day and kind that pages under either configuration, then
    one total per kind."""
    now = {d.day: d.pages for d in current}
    new = {d.day: d.pages for d in candidate}
    kinds = sorted({k for d in (*current, *candidate) for k in d.pages})
    rows = [["DAY", "PAGES FOR", "CURRENT", "CANDIDATE"]]
    for day in sorted(set(now) | set(new)):
        for kind in kinds:
            a, b = now.get(day, {}).get(kind, []), new.get(day, {}).get(kind, [])
            if a or b:
                rows.append([day.isoformat(), kind, ", ".join(a) or "-", ", ".join(b) or "-"])
    for kind in kinds:
        total_a = sum(len(p.get(kind, [])) for p in now.values())
        total_b = sum(len(p.get(kind, [])) for p in new.values())
        rows.append(["total", kind, f"{total_a} page(s) on {sum(1 for p in now.values() if p.get(kind))} day(s)",
                     f"{total_b} page(s) on {sum(1 for p in new.values() if p.get(kind))} day(s)"])  # fmt: skip
    return rows


def compare(lake: Lake, days: list[date], current: ModelwatchConfig, candidate: ModelwatchConfig,
            progress: Callable[[str], None] = lambda _: None) -> list[list[str]]:  # fmt: skip
    """The side-by-side table (:func:`comparison`) of ``days`` judged under both configurations."""
    now, new = replay_days(lake, days, [current, candidate], lambda line: progress(f"current / candidate: {line}"))
    return comparison(now, new)


#: the most days one run of the replay DAG judges (twice each); longer ranges: ``make replay``
MAX_FORM_DAYS = 31


def form_days(first: str, last: str, logical_day: date) -> list[date]:
    """The days a replay DAG run judges: the trigger form's ``from``/``to`` (ISO dates, inclusive), by default
    the 7 days before the run's logical date.

    :raises ValueError: a date that is not ISO, a range backwards or longer than :data:`MAX_FORM_DAYS`.
    """
    try:
        end = date.fromisoformat(last) if last else logical_day - timedelta(days=1)
        start = date.fromisoformat(first) if first else end - timedelta(days=6)
    except ValueError as exc:
        raise ValueError(f"params from/to: {exc} (expected YYYY-MM-DD)") from None
    n = (end - start).days + 1
    if n < 1:
        raise ValueError(f"params from/to: {start} is after {end}")
    if n > MAX_FORM_DAYS:
        raise ValueError(f"params from/to: {n} days; one run replays at most {MAX_FORM_DAYS} (use make replay "
                         "for longer ranges)")  # fmt: skip
    return [start + timedelta(days=k) for k in range(n)]


def table(rows: list[list[str]]) -> str:
    """The rows as aligned text columns."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelwatch.replay", description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidate", required=True, type=Path, help="the thresholds.yaml to try")
    parser.add_argument("--current", type=Path, help="the thresholds.yaml in use (default: MODELWATCH_CONFIG "
                        "or include/thresholds.yaml)")  # fmt: skip
    parser.add_argument("--lake", help=f"the lake's base URL (default: {STORAGE_URL_ENV} or storage.base_url)")
    parser.add_argument("--from", dest="first", type=date.fromisoformat, help="first day (default: the oldest stored)")
    parser.add_argument("--to", dest="last", type=date.fromisoformat, help="last day (default: the newest stored)")
    args = parser.parse_args(argv)
    try:
        current = load_config(args.current)
        candidate = load_config(args.candidate)
    except ConfigError as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 2
    base = args.lake or os.environ.get(STORAGE_URL_ENV) or current.storage.base_url
    lake = Lake(base, current.storage.aws_conn_id)
    if args.first and args.last:
        days = [args.first + timedelta(days=k) for k in range((args.last - args.first).days + 1)]
    else:  # the stored days, on a local disk or S3 alike
        days = [d for d in map(date.fromisoformat, lake.list_days("predictions"))
                if (args.first is None or d >= args.first) and (args.last is None or d <= args.last)]  # fmt: skip
    if not days:
        print(f"replay: no stored day in {base}/predictions to replay", file=sys.stderr)
        return 1
    print(f"replaying {len(days)} day(s) {days[0]}..{days[-1]} of {base}, nothing is posted or written", flush=True)

    print(f"  current: {args.current or 'default'}, candidate: {args.candidate}", flush=True)
    rows = compare(lake, days, current, candidate, lambda line: print(f"  {line}", flush=True))
    print()
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
