"""The page per model and window: charts downsampled for display only, every text escaped, the evidence
and what was sent on it, small enough for a day of 20 instances."""

from __future__ import annotations

import base64
import re
import time
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from config_helpers import small_config

from modelwatch.report import build_report, downsample, file_stem, saturated_spans, worth_a_page
from modelwatch.verdict import ModelVerdict, QualityEvidence, ResourceEvidence
from modelwatch.window import Window

WINDOW = Window(datetime(2026, 3, 3, tzinfo=UTC), datetime(2026, 3, 4, tzinfo=UTC))
EVIL = "fraud<script>alert(1)</script>"


def evidence(resource: str, outcome: str = "explains") -> ResourceEvidence:
    return ResourceEvidence(resource=resource, threshold=0.9, unit="ratio", outcome=outcome, n_slow_saturated=40,
                            n_normal_saturated=5, n_slow_unsaturated=2, n_normal_unsaturated=900, n_slow_unsampled=1,
                            n_normal_unsampled=3, coverage=0.99, slow_share_saturated=0.89,
                            slow_share_unsaturated=0.002, relative_risk=400.0, p_value=1e-40, p_adjusted=2e-40,
                            slow_saturated_share=0.95, normal_saturated_share=0.005, lift=190.0, spearman=0.6,
                            slow_value_median=0.97, slow_value_max=0.99)  # fmt: skip


def day(instances: int, every_s: int = 15, model: str = EVIL) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A day of predictions (every 10 s per instance) and cpu samples (every ``every_s``), cpu saturated
    and predictions slow 10:00-12:00 on the first instance."""
    rng = np.random.default_rng(0)
    names = [f"model-{i:02d}" for i in range(instances)]
    t = pd.date_range(WINDOW.start, WINDOW.end, freq=f"{every_s}s", inclusive="left")
    hot = (t.hour >= 10) & (t.hour < 12)
    resources = pd.concat([pd.DataFrame({"timestamp": t, "query": "cpu", "instance": name,
                                         "value": np.where(hot & (name == names[0]), 0.97, 0.3) + rng.normal(0, 0.01, len(t))})
                           for name in names])  # fmt: skip
    p = pd.date_range(WINDOW.start, WINDOW.end, freq="10s", inclusive="left")
    slow = (p.hour >= 10) & (p.hour < 12)
    joined = pd.concat([pd.DataFrame({"timestamp": p, "model": model, "instance": name,
                                      "prediction_time": np.where(slow & (name == names[0]), 2.5, 0.2),
                                      "slow": slow & (name == names[0]), "accuracy": 0.94, "loss": 0.15})
                        for name in names])  # fmt: skip
    return joined, resources


def verdict(model: str = EVIL) -> ModelVerdict:
    return ModelVerdict(model=model, verdict="degraded", reason=f"{model} slow while <b>cpu</b> saturated",
                        window_start=WINDOW.start.isoformat(), window_end=WINDOW.end.isoformat(), n_predictions=8640,
                        n_slow=720, slow_threshold_seconds=1.0, saturated_resources=[evidence("cpu")],
                        rejected_resources=[evidence("memory", "never_saturated")], quality="ok",
                        quality_metrics=[QualityEvidence("accuracy", "ok", 8640, 60000, 0.94, 0.94, 0.0, None, False,
                                                         0.5, 0.5, 0.02, "Mann-Whitney U")])  # fmt: skip


def test_downsampling_keeps_every_peak_within_the_point_budget() -> None:
    t = np.arange(100_000)
    y = np.zeros(100_000)
    y[[17, 50_001, 99_998]] = [5.0, -3.0, 7.0]
    td, yd = downsample(t, y, 1000)
    assert len(td) <= 1000 and list(td) == sorted(td)
    assert {5.0, -3.0, 7.0} <= set(yd)
    assert downsample(t[:10], y[:10], 1000)[0].tolist() == list(range(10))


def test_saturated_spans_are_the_runs_of_consecutive_saturated_samples() -> None:
    t = np.arange(8)
    assert saturated_spans(t, np.array([0, 1, 1, 0, 0, 1, 1, 1], dtype=bool)) == [(1, 3), (5, 7)]


def test_the_page_escapes_what_the_data_says_and_shows_the_evidence_and_the_alert() -> None:
    joined, resources = day(2)
    report = build_report(verdict(), joined, resources, small_config(), WINDOW, alert="posted ModelPredictionsDegraded",
                          links={"Airflow run": "http://airflow/dags/d/runs/r?a=1&b=<2>"})  # fmt: skip
    page = report.html
    assert "<script>" not in page and "fraud&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;cpu&lt;/b&gt;" in page  # a reason is text, never markup
    text = re.sub(r"<[^>]+>", " ", page)
    assert "Evidence per resource" in text and " cpu " in text and "never_saturated" in text
    assert "posted ModelPredictionsDegraded" in text and "Quality: ok" in text
    # the charts are files beside the page and embedded in it: the page needs nothing else
    stem = file_stem(EVIL)
    assert set(report.files()) == {f"{stem}.html", f"{stem}-timeline.png", f"{stem}-quality.png"}
    assert "/" not in stem and "<" not in stem
    for name, png in report.images.items():
        assert png.startswith(b"\x89PNG"), name
        assert base64.b64encode(png).decode() in page


def test_a_day_of_twenty_instances_is_a_small_page_built_quickly() -> None:
    joined, resources = day(20, every_s=5, model="m")  # 20 x 17,280 samples, 20 x 8,640 predictions
    started = time.perf_counter()
    report = build_report(verdict("m"), joined, resources, small_config(), WINDOW, alert="-")
    elapsed = time.perf_counter() - started
    assert len(report.html) < 1_500_000, len(report.html)
    assert elapsed < 10, elapsed


def test_only_verdicts_someone_will_look_at_get_a_page() -> None:
    base = {"model": "m", "reason": "", "window_start": "", "window_end": ""}
    assert worth_a_page(ModelVerdict(verdict="degraded", **base))
    assert worth_a_page(ModelVerdict(verdict="healthy", quality="regressed", **base))
    assert worth_a_page(ModelVerdict(verdict="healthy", drift="drifted", **base))
    assert not worth_a_page(ModelVerdict(verdict="healthy", **base))
    assert not worth_a_page(ModelVerdict(verdict="no_data", **base))
