"""Quality and drift of a window of ``--quality-predictions`` predictions against a 7-day reference.

The data is synthetic and seeded: ``--quality-predictions`` predictions of one model in the window (per-
prediction accuracy 0/1, a continuous loss, a log-normal ``prediction_time``, two versions, a tenth of them
at saturated moments) and seven days of as many predictions each as the reference. Cases, in this process:

- ``modelwatch``: what the ``correlate`` task runs per model once its frames are read:
  :func:`modelwatch.quality.judge_quality`, :func:`~modelwatch.quality.attribute`,
  :func:`~modelwatch.quality.per_version` and :func:`modelwatch.drift.judge_drift` (``prediction_time``);
  best of ``--quality-repeat`` runs.
- ``floor``: the bare scipy calls the verdicts rest on, on the same arrays (two Mann-Whitney U tests and one
  two-sample Kolmogorov-Smirnov test): the ratio is the cost of everything modelwatch adds (finite-value
  filtering, means, the index's bins, Holm, attribution, per-version figures, the reasons).

Peak memory: the process's resident-set high-water mark grown during the modelwatch case (frames excluded:
they are built first).
"""

from __future__ import annotations

import argparse
import resource
import time
from typing import Any

import numpy as np
import pandas as pd

DESCRIPTION = "quality and drift of 1,000,000 predictions against a 7-day reference, against bare scipy"


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--quality-predictions", type=int, default=1_000_000, metavar="N")
    group.add_argument("--quality-days", type=int, default=7, metavar="N")
    group.add_argument("--quality-repeat", type=int, default=3, metavar="N")


def frames(n: int, days: int, seed: int = 7) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)

    def day(size: int, accuracy: float) -> pd.DataFrame:
        return pd.DataFrame({
            "model": "m", "model_version": rng.choice(["3", "4"], size, p=[0.8, 0.2]),
            "accuracy": (rng.random(size) < accuracy).astype(float), "loss": rng.normal(0.15, 0.02, size),
            "prediction_time": 0.2 * np.exp(rng.normal(0, 0.3, size)),
            "saturated_resources": np.where(rng.random(size) < 0.1, "cpu", ""), "slow": rng.random(size) < 0.01,
        })  # fmt: skip

    window = day(n, 0.90)
    reference = pd.concat([day(n, 0.94) for _ in range(days)], ignore_index=True)
    return window, reference


def _max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(args: argparse.Namespace) -> str:
    from scipy.stats import ks_2samp, mannwhitneyu

    from modelwatch.config import DriftConfig, QualityRules
    from modelwatch.drift import judge_drift
    from modelwatch.quality import attribute, judge_quality, per_version

    n, days = args.quality_predictions, args.quality_days
    window, reference = frames(n, days)
    rules, drift_cfg = QualityRules(), DriftConfig()
    results: dict[str, Any] = {}

    def ours() -> None:
        quality, _, metrics = judge_quality(window, reference, rules, [str(d) for d in range(days)])
        attribute(window, reference, rules, metrics)
        per_version(window)
        drift, _, _ = judge_drift(window, reference, drift_cfg, [str(d) for d in range(days)])
        results["verdict"] = (quality, drift)

    def floor() -> None:
        mannwhitneyu(window["accuracy"].to_numpy(), reference["accuracy"].to_numpy(), alternative="less")
        mannwhitneyu(window["loss"].to_numpy(), reference["loss"].to_numpy(), alternative="greater")
        ks_2samp(window["prediction_time"].to_numpy(), reference["prediction_time"].to_numpy())

    rss_before = _max_rss_mib()
    timings: dict[str, list[float]] = {"modelwatch": [], "floor": []}
    for _ in range(args.quality_repeat):
        for name, fn in (("modelwatch", ours), ("floor", floor)):
            t0 = time.perf_counter()
            fn()
            timings[name].append(time.perf_counter() - t0)
    grown = _max_rss_mib() - rss_before
    best = {k: min(v) for k, v in timings.items()}
    return "\n".join([
        f"{n:,} predictions in the window, {days} reference days of {n:,} each; best of {args.quality_repeat}.",
        "",
        "| case | wall time | note |",
        "|---|---|---|",
        f"| modelwatch: quality, attribution, per version, drift | **{best['modelwatch']:.2f} s** | verdict "
        f"{results['verdict'][0]}, drift {results['verdict'][1]}; peak RSS grew {grown:,.0f} MiB |",
        f"| floor: 2 x Mann-Whitney U + 1 x KS (scipy) | {best['floor']:.2f} s | "
        f"modelwatch / floor = {best['modelwatch'] / best['floor']:.2f}x |",
    ])  # fmt: skip
