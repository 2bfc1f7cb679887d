"""The page per model and window: charts downsampled for display only, every text escaped, the evidence
and what was sent on it, small enough for a day of 20 instances."""

from __future__ import annotations

import base64
import html
import io
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


# -- a name is data: no model or instance name stops a report, and every file name is bounded ----------------


def _tiny_day(model: str, instance: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    t = pd.date_range(WINDOW.start, WINDOW.end, freq="30min", inclusive="left")
    resources = pd.DataFrame({"timestamp": t, "query": "cpu", "instance": instance, "value": 0.95})
    joined = pd.DataFrame({"timestamp": t, "model": model, "model_version": "1", "instance": instance,
                           "run_id": "r", "experiment": "e", "prediction_time": 2.0, "slow": True, "accuracy": 0.9,
                           "loss": 0.2, "missing_resources": "", "slow_threshold": 1.0,
                           "saturated_resources": "cpu"})  # fmt: skip
    return joined, resources


def test_every_hostile_model_and_instance_name_gets_its_report() -> None:
    """``$\\foo$`` made matplotlib raise (mathtext), which stopped ``evaluate`` and every page of the run.
    Every name is drawn at once as a title, legend entry and axis label; the names matplotlib reads as
    markup (``$``, a leading ``_``, control characters) each get a whole report."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from hostile_names import HOSTILE_NAMES

    from modelwatch.text import chart_text

    fig, ax = plt.subplots(figsize=(4, 12))
    for i, name in enumerate(HOSTILE_NAMES):
        ax.plot([0, 1], [i, i], label=chart_text(name))
        ax.text(0, i, chart_text(name))
    ax.set_title(chart_text(HOSTILE_NAMES[0]))
    ax.set_ylabel(chart_text(HOSTILE_NAMES[1]))
    legend = ax.legend(fontsize=5)
    assert len(legend.get_texts()) == len(HOSTILE_NAMES)  # a label starting with "_" is not hidden
    fig.savefig(io.BytesIO(), format="png", dpi=30)
    plt.close(fig)

    cfg = small_config()
    markup = [n for n in HOSTILE_NAMES if "$" in n or n.startswith("_") or any(ord(c) < 32 for c in n)]
    assert len(markup) >= 8
    for name in markup:
        joined, resources = _tiny_day(name, name)
        report = build_report(verdict(name), joined, resources, cfg, WINDOW, alert="posted")
        files = report.files()
        assert f"{file_stem(name)}.html" in files and f"{file_stem(name)}-timeline.png" in files, name
        assert html.escape(name, quote=True) in report.html, name
    assert len({file_stem(n) for n in HOSTILE_NAMES}) == len(HOSTILE_NAMES)  # no page replaces another's


def test_file_names_are_bounded_safe_and_readable() -> None:
    from hostile_names import HOSTILE_NAMES

    assert file_stem("fraud-detector") == "fraud-detector"  # plain names stay as they are
    for name in HOSTILE_NAMES:
        stem = file_stem(name)
        assert re.fullmatch(r"[A-Za-z0-9._-]{1,81}", stem) and stem not in (".", "..") and stem[0] not in "._", name
        assert len(f"{stem}-quality.png".encode()) < 100
    assert file_stem("team/fraud-detector").startswith("team_fraud-detector-")  # a person still finds it


def test_a_report_that_cannot_be_made_is_said_and_never_raised(tmp_path, monkeypatch) -> None:
    """One model's chart failing costs that model its page, not the others theirs; a store that refuses
    the files costs the pages, never the verdicts (``evaluate`` goes on to store them and page)."""
    import modelwatch.report as report
    from modelwatch.storage import Lake

    lake = Lake(tmp_path.as_uri())
    joined, resources = _tiny_day("good", "i-1")
    bad_joined, _ = _tiny_day("bad", "i-1")
    j = lake.write_frame("joined", WINDOW, pd.concat([joined, bad_joined]), run_id="r")
    r = lake.write_frame("resources", WINDOW, resources.assign(sample_time=resources["timestamp"], labels="{}", window_seconds=0.0), run_id="r")
    real = report.timeline_chart

    def chart(v, *args, **kwargs):
        if v.model == "bad":
            raise RuntimeError("no glyph for this")
        return real(v, *args, **kwargs)

    monkeypatch.setattr(report, "timeline_chart", chart)
    written = report.write_reports(lake, WINDOW, [verdict("good"), verdict("bad")], j.to_dict(), r.to_dict(),
                                   small_config(), sent={}, reason="paging", links={})  # fmt: skip
    assert list(written.urls) == ["good"]
    assert written.failed == [{"output": "report", "model": "bad", "error": "RuntimeError: no glyph for this"}]

    def refuse(*args, **kwargs):
        raise PermissionError("bucket policy denies PutObject")

    monkeypatch.setattr(lake, "replace_files", refuse)
    written = report.write_reports(lake, WINDOW, [verdict("good")], j.to_dict(), r.to_dict(), small_config(),
                                   sent={}, reason="paging", links={})  # fmt: skip
    assert written.urls == {} and "PermissionError: bucket policy denies PutObject" in written.failed[0]["error"]


def test_the_serving_context_shows_what_the_slow_predictions_were_served_with() -> None:
    """The queries without a threshold (request rate, body sizes) as medians at the slow and the normal
    predictions: a request body ten times larger at the slow ones is there for a person to see."""
    from config_helpers import small_raw

    from modelwatch.config import ModelwatchConfig

    raw = small_raw()
    raw["prometheus"]["queries"].append({"name": "request_bytes", "promql": "b", "unit": "bytes"})
    cfg = ModelwatchConfig.model_validate(raw)
    joined, resources = day(1, model="m")
    joined["res_request_rate"] = 12.0
    joined["res_request_bytes"] = np.where(joined["slow"], 1600.0, 160.0)
    page = build_report(verdict("m"), joined, resources, cfg, WINDOW, alert="-").html
    context = page[page.index("<h2>Serving context</h2>") : page.index("<h2>Quality")]
    rows = re.findall(r"<tr>(.*?)</tr>", context)
    cells = [re.findall(r"<td>(.*?)</td>", r) for r in rows if "<td>" in r]
    assert cells == [["request_rate", "12 req/s", "12 req/s", "100%"],
                     ["request_bytes", "1.6e+03 bytes", "160 bytes", "100%"]]  # fmt: skip
    # saturation queries are the evidence table's, not the context's
    assert "<td>cpu</td>" not in context
