"""A seeded day against the real local stack: what the Prometheus extraction costs, and a whole run.

Starts its own stack on free ports in a temporary folder, seeds one scenario day, then measures:

- per query: requests, bytes and seconds of its extraction over the day (``extract_resources``: the
  query_range plus the reads that give each value its real sample time) beside the raw ``query_range`` of
  the query alone, at the configured step and at a finer step that needs several requests under
  Prometheus's 11,000-point limit;
- per day-partition: one ``extract_resources`` call over all queries (as the extract task makes it) beside
  the raw ``query_range`` calls of the queries alone, interleaved in the same run, medians of 3;
- a whole day run (``dag.test()`` in a child process, the way ``make demo`` runs it) against the raw time
  of its query_range calls.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

DESCRIPTION = "Prometheus extraction per day-partition against the raw query_range of the queries alone, and a whole day run"
DAY = "2026-03-03"
REPEATS = 3


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--day-date", default=DAY, help="which fixed test day to seed and run (default %(default)s)"
    )
    group.add_argument(
        "--day-fine-step", type=float, default=5.0, help="the finer step in seconds (default 5)"
    )


def _raw_queries(step: float, cfg: Any, start: datetime, end: datetime, queries: list[Any]) -> float:
    """Seconds of the bare ``query_range`` calls of ``queries`` over the window (no frame, no sample times)."""
    from modelwatch.extract import query_range_chunked
    from modelwatch.hooks.prometheus import PrometheusHook
    from modelwatch.timegrid import last_step_before

    hook = PrometheusHook(prometheus_conn_id=cfg.prometheus.conn_id)
    hook.get_conn()
    last = last_step_before(start, end, step)
    t0 = time.perf_counter()
    for q in queries:
        query_range_chunked(hook, q.promql, start, last, step, query_name=q.name,
                                 max_points=cfg.prometheus.max_points_per_request)  # fmt: skip
    return time.perf_counter() - t0


def _extraction(step: float, cfg: Any, start: datetime, end: datetime, queries: list[Any]) -> dict[str, Any]:
    """One ``extract_resources`` call over ``queries``: seconds, requests, bytes, series and samples."""
    from modelwatch.extract import extract_resources
    from modelwatch.hooks.prometheus import PrometheusHook

    hook = PrometheusHook(prometheus_conn_id=cfg.prometheus.conn_id)
    hook.get_conn()
    t0 = time.perf_counter()
    frame = extract_resources(hook, queries, start, end, step, cfg.prometheus.max_points_per_request,
                              cfg.prometheus.instance_label)  # fmt: skip
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "requests": hook.requests_made, "bytes": hook.bytes_received,
            "series": frame.groupby(["query", "labels"]).ngroups if len(frame) else 0, "samples": len(frame)}  # fmt: skip


def _extract(step: float, cfg: Any, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Per query: its extraction beside the raw query_range of the query alone (measured just before)."""
    rows = []
    for q in cfg.prometheus.queries:
        raw = _raw_queries(step, cfg, start, end, [q])
        rows.append({"query": q.name, "step": step, "raw": raw, **_extraction(step, cfg, start, end, [q])})
    return rows


def _day_partition(step: float, cfg: Any, start: datetime, end: datetime) -> dict[str, Any]:
    """All queries in one extraction against the raw query_range of the queries alone, interleaved,
    medians of :data:`REPEATS`."""
    queries = list(cfg.prometheus.queries)
    raws, runs = [], []
    for _ in range(REPEATS):
        raws.append(_raw_queries(step, cfg, start, end, queries))
        runs.append(_extraction(step, cfg, start, end, queries))
    extraction = statistics.median(r["seconds"] for r in runs)
    return {"step": step, "raw": statistics.median(raws), **runs[-1], "seconds": extraction}


def run(args: argparse.Namespace) -> str:
    from devstack.runner import airflow_env, migrate
    from devstack.scenarios import TEST_DAYS
    from devstack.seed import seed_stack
    from devstack.stack import Stack, StackConfig
    from modelwatch.config import load_config

    day = datetime.fromisoformat(args.day_date).date()
    scenario = TEST_DAYS[day]
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    end = start + timedelta(days=1)
    cfg = load_config()
    with tempfile.TemporaryDirectory(prefix="modelwatch-bench-") as tmp:
        stack = Stack(StackConfig.free_ports(Path(tmp) / "stack"))
        try:
            print(
                f"bench day: starting the stack and seeding {day} ({scenario}) ...",
                file=sys.stderr,
                flush=True,
            )
            stack.start()
            seed_stack(stack, {day: scenario})
            saved = dict(os.environ)
            os.environ.update(stack.config.airflow_env())
            try:
                step = cfg.prometheus.step.total_seconds()
                _raw_queries(step, cfg, start, end, list(cfg.prometheus.queries))  # warm Prometheus' caches
                rows = _extract(step, cfg, start, end)
                fine = _extract(args.day_fine_step, cfg, start, end)
                days = [
                    _day_partition(step, cfg, start, end),
                    _day_partition(args.day_fine_step, cfg, start, end),
                ]
            finally:
                os.environ.clear()
                os.environ.update(saved)
            env = airflow_env(Path(tmp) / "airflow", stack.config.airflow_env(), f"file://{tmp}/lake")
            migrate(env)
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "devstack.runner", day.isoformat()],
                                  env={**os.environ, **env}, capture_output=True, text=True, timeout=900)  # fmt: skip
            whole: float | None = time.perf_counter() - t0
            failure = ""
            if proc.returncode:  # the extraction figures above stand on their own: report, do not lose them
                print(
                    f"bench day: the day run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}",
                    file=sys.stderr,
                )
                lines = [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
                failure = lines[-1][:200] if lines else f"exit {proc.returncode}"
                whole = None
        finally:
            stack.stop()
    raw = days[0]["raw"]
    out = [f"## One day of Prometheus extraction ({day}, scenario {scenario}, {len(rows)} queries)\n",
           "Extraction: `extract_resources` (query_range, then per selector a presence query on the same grid and "
           "its raw sample times, for `sample_time`). Raw: the bare query_range calls of the same queries, same run.\n",
           "| query | step | series | samples | requests | bytes | extraction s | raw query_range s | ratio |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows + fine:
        out.append(f"| {r['query']} | {r['step']:g} s | {r['series']} | {r['samples']:,} | {r['requests']} | "
                   f"{r['bytes']:,} | {r['seconds']:.2f} | {r['raw']:.2f} | {r['seconds'] / r['raw']:.1f}x |")  # fmt: skip
    for d in days:
        out.append(f"| **day-partition, all queries in one extraction (median of {REPEATS})** | {d['step']:g} s | "
                   f"{d['series']} | {d['samples']:,} | {d['requests']} | {d['bytes']:,} | **{d['seconds']:.2f}** | "
                   f"**{d['raw']:.2f}** | **{d['seconds'] / d['raw']:.1f}x** |")  # fmt: skip
    out += ["", "## A whole day run against its raw query time\n", "| what | seconds |", "|---|---:|",
            f"| raw query_range calls of the day ({cfg.prometheus.step.total_seconds():g} s step, queries alone) | {raw:.2f} |",
            f"| extraction of the day-partition (same step, with sample times) | {days[0]['seconds']:.2f} |",
            f"| whole day run (`python -m devstack.runner {day}`: Airflow start, all tasks, dag.test) | "
            + (f"{whole:.1f} |" if whole else f"failed: {failure} |")]  # fmt: skip
    if whole:
        out.append(f"| share of the run spent in the extraction | {days[0]['seconds'] / whole:.0%} |")
    return "\n".join(out)
