"""The report of a degraded model over a day of ``--report-instances`` instances (a resource sample every 5 s,
a prediction every 10 s per instance): how long the page takes to build and how long headless Chromium takes
to load it, against the goal of under a second to open.

Cases, in this process (Chromium in its own):

- ``build``: :func:`modelwatch.report.build_report` (charts downsampled for display, PNGs embedded), best of
  ``--report-repeat``;
- ``open``: Debian's ``chromium`` loading the written page from disk, until its load event, best of
  ``--report-repeat`` (``tests/browser.py``; skipped without Chromium);
- reference ``read``: reading the same day's rows back from Parquet, the least any page of that day costs.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

DESCRIPTION = "a degraded model's report page for a day of 20 instances: build and open in Chromium"


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--report-instances", type=int, default=20, metavar="N")
    group.add_argument("--report-repeat", type=int, default=3, metavar="N")


def day(instances: int) -> tuple[pd.DataFrame, pd.DataFrame, datetime]:
    start = datetime(2026, 3, 3, tzinfo=UTC)
    rng = np.random.default_rng(3)
    names = [f"model-{i:02d}" for i in range(instances)]
    t = pd.date_range(start, start + timedelta(days=1), freq="5s", inclusive="left")
    hot = (t.hour >= 10) & (t.hour < 12)
    resources = pd.concat([pd.DataFrame({"timestamp": t, "query": q, "instance": n,
                                         "value": np.where(hot & (n == names[0]) & (q == "cpu"), 0.97, 0.3)
                                         + rng.normal(0, 0.01, len(t))})
                           for n in names for q in ("cpu", "memory")])  # fmt: skip
    p = pd.date_range(start, start + timedelta(days=1), freq="10s", inclusive="left")
    slow = (p.hour >= 10) & (p.hour < 12)
    joined = pd.concat([pd.DataFrame({"timestamp": p, "model": "fraud-detector", "instance": n,
                                      "prediction_time": np.where(slow & (n == names[0]), 2.5, 0.2),
                                      "slow": slow & (n == names[0]), "accuracy": 0.94, "loss": 0.15})
                        for n in names])  # fmt: skip
    return joined, resources, start


def run(args: argparse.Namespace) -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from browser import chromium, open_page
    from config_helpers import small_config

    from modelwatch.report import build_report
    from modelwatch.verdict import ModelVerdict, ResourceEvidence
    from modelwatch.window import Window

    joined, resources, start = day(args.report_instances)
    window = Window(start, start + timedelta(days=1))
    evidence = ResourceEvidence("cpu", 0.9, "ratio", "explains", 720, 40, 0, 10000, 0, 0, 1.0, 0.95, 0.0, None,
                                1e-50, 1e-50, 1.0, 0.002, None, 0.5, 0.97, 0.98)  # fmt: skip
    verdict = ModelVerdict(model="fraud-detector", verdict="degraded", reason="slow while cpu saturated",
                           window_start=start.isoformat(), window_end=window.end.isoformat(), n_predictions=len(joined),
                           n_slow=int(joined["slow"].sum()), slow_threshold_seconds=1.0, saturated_resources=[evidence])  # fmt: skip
    cfg = small_config()
    builds, page = [], None
    for _ in range(args.report_repeat):
        t0 = time.perf_counter()
        page = build_report(verdict, joined, resources, cfg, window, alert="posted")
        builds.append(time.perf_counter() - t0)
    assert page is not None
    buffer = io.BytesIO()
    pd.concat([resources.assign(kind="resource"), joined.assign(kind="prediction")]).to_parquet(buffer)
    reads = []
    for _ in range(args.report_repeat):
        t0 = time.perf_counter()
        pd.read_parquet(io.BytesIO(buffer.getvalue()))
        reads.append(time.perf_counter() - t0)
    opens: list[float] = []
    if chromium():
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "report.html"
            path.write_text(page.html)
            for _ in range(args.report_repeat):
                opened = open_page(path.as_uri())
                assert opened.images >= 1 and not opened.broken_images and not opened.console_errors
                opens.append(opened.load_seconds)
    rows = [
        "| case | time | notes |", "|---|---:|---|",
        f"| build the page (`build_report`) | {min(builds):.2f} s | {len(resources):,} resource samples, "
        f"{len(joined):,} predictions, {args.report_instances} instances; page {len(page.html) / 1024:.0f} KiB |",
        f"| open it in headless Chromium (load event) | {min(opens):.2f} s | goal: under 1 s |" if opens
        else "| open it in headless Chromium | skipped | no chromium on PATH |",
        f"| reference: read the day's rows from Parquet | {min(reads):.2f} s | the least any page of the day costs |",
    ]  # fmt: skip
    return "## Report page\n\n" + DESCRIPTION + "\n\n" + "\n".join(rows)
