"""A seeded day against the real local stack: what the Prometheus extraction costs, and a whole run.

Starts its own stack on free ports in a temporary folder, seeds one scenario day, then measures:

- per query: requests, bytes and seconds of ``query_range`` over the day at the configured step (and at a
  finer step that needs several requests under Prometheus's 11,000-point limit);
- a whole day run (``dag.test()`` in a child process, the way ``make demo`` runs it) against the raw time
  of its query_range calls.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

DESCRIPTION = "Prometheus requests and bytes per day-partition, and a whole day run against its raw query time"
DAY = "2026-03-03"


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--day-date", default=DAY, help="which fixed test day to seed and run (default %(default)s)")
    group.add_argument("--day-fine-step", type=float, default=5.0, help="the finer step in seconds (default 5)")


def _extract(step: float, cfg: Any, start: datetime, end: datetime) -> list[dict[str, Any]]:
    from modelwatch.extract import extract_resources
    from modelwatch.hooks.prometheus import PrometheusHook

    rows = []
    for q in cfg.prometheus.queries:
        hook = PrometheusHook(prometheus_conn_id=cfg.prometheus.conn_id)
        t0 = time.perf_counter()
        frame = extract_resources(hook, [q], start, end, step, cfg.prometheus.max_points_per_request,
                                  cfg.prometheus.instance_label)  # fmt: skip
        rows.append({"query": q.name, "step": step, "series": frame.groupby("labels").ngroups if len(frame) else 0,
                     "samples": len(frame), "requests": hook.requests_made, "bytes": hook.bytes_received,
                     "seconds": time.perf_counter() - t0})  # fmt: skip
    return rows


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
            print(f"bench day: starting the stack and seeding {day} ({scenario}) ...", file=sys.stderr, flush=True)
            stack.start()
            seed_stack(stack, {day: scenario})
            saved = dict(os.environ)
            os.environ.update(stack.config.airflow_env())
            try:
                rows = _extract(cfg.prometheus.step.total_seconds(), cfg, start, end)
                fine = _extract(args.day_fine_step, cfg, start, end)
            finally:
                os.environ.clear()
                os.environ.update(saved)
            env = airflow_env(Path(tmp) / "airflow", stack.config.airflow_env(), f"file://{tmp}/lake")
            migrate(env)
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "devstack.runner", day.isoformat()],
                                  env={**os.environ, **env}, capture_output=True, text=True, timeout=900)  # fmt: skip
            whole = time.perf_counter() - t0
            if proc.returncode:
                raise RuntimeError(f"the day run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        finally:
            stack.stop()
    raw = sum(r["seconds"] for r in rows)
    out = [f"## One day of Prometheus extraction ({day}, scenario {scenario}, {len(rows)} queries)\n",
           "| query | step | series | samples | requests | bytes | seconds |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows + fine:
        out.append(f"| {r['query']} | {r['step']:g} s | {r['series']} | {r['samples']:,} | {r['requests']} | "
                   f"{r['bytes']:,} | {r['seconds']:.2f} |")  # fmt: skip
    for label, group in (("configured step", rows), ("fine step", fine)):
        out.append(f"| **all, {label}** | | {sum(r['series'] for r in group)} | {sum(r['samples'] for r in group):,} | "
                   f"{sum(r['requests'] for r in group)} | {sum(r['bytes'] for r in group):,} | "
                   f"{sum(r['seconds'] for r in group):.2f} |")  # fmt: skip
    out += ["", "## A whole day run against its raw query time\n", "| what | seconds |", "|---|---:|",
            f"| raw query_range calls of the day ({cfg.prometheus.step.total_seconds():g} s step) | {raw:.2f} |",
            f"| whole day run (`python -m devstack.runner {day}`: Airflow start, 7 tasks, dag.test) | {whole:.1f} |",
            f"| share of the run spent in query_range | {raw / whole:.0%} |"]  # fmt: skip
    return "\n".join(out)
