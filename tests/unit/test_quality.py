"""Quality: a window's accuracy and loss against bounds and the model's own history (one-sided Mann-Whitney
U, Holm over the metrics, a minimum worsening), and what it says when labels or history are missing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from modelwatch.config import MetricRule, QualityConfig, QualityRules
from modelwatch.quality import attribute, judge_quality, per_version
from modelwatch.verdict import ModelVerdict, verdicts_frame, verdicts_from_frame

RULES = QualityRules()
DAYS = ["2026-03-02", "2026-03-01"]


def predictions(n: int, accuracy: float, loss: float = 0.15, *, sd: float = 0.01, seed: int = 0) -> pd.DataFrame:
    """``n`` labelled predictions with continuous per-prediction scores (as the seeded history has them)."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"model": "m", "accuracy": rng.normal(accuracy, sd, n), "loss": rng.normal(loss, 0.02, n)})


def correctness(n: int, share_right: float) -> pd.DataFrame:
    """``n`` predictions whose label arrived: accuracy 1.0 or 0.0 (as the sample service logs them)."""
    right = round(n * share_right)
    return pd.DataFrame({"model": "m", "accuracy": [1.0] * right + [0.0] * (n - right), "loss": [0.2] * n})


def test_the_same_distribution_is_ok() -> None:
    quality, reason, metrics = judge_quality(predictions(300, 0.94, seed=1), predictions(2000, 0.94, seed=2), RULES, DAYS)
    assert quality == "ok"
    assert all(m.outcome == "ok" and m.test == "Mann-Whitney U, one-sided" for m in metrics)
    assert "2 reference day(s)" in reason and "(300 vs 2000 labelled)" in reason


def test_an_accuracy_drop_is_a_regression_and_says_why() -> None:
    quality, reason, metrics = judge_quality(predictions(300, 0.90, seed=1), predictions(2000, 0.94, seed=2), RULES, DAYS)
    assert quality == "regressed"
    acc = next(m for m in metrics if m.metric == "accuracy")
    assert acc.outcome == "regressed" and acc.worsening == pytest.approx(0.04, abs=0.005)
    assert acc.p_adjusted is not None and acc.p_adjusted < 1e-10 and acc.p_adjusted >= acc.p_value
    assert reason.startswith("accuracy 0.8") or reason.startswith("accuracy 0.9")
    assert "worse by 0.04" in reason and "Holm over 2" in reason
    assert "loss" not in reason  # only what regressed is named


def test_a_significant_but_tiny_difference_is_not_a_regression() -> None:
    # 0.5 points lower: with these counts certainly real, and too small to matter (min_change 0.02)
    quality, _, metrics = judge_quality(predictions(5000, 0.935, sd=0.005, seed=3),
                                        predictions(20000, 0.94, sd=0.005, seed=4), RULES, DAYS)  # fmt: skip
    acc = next(m for m in metrics if m.metric == "accuracy")
    assert acc.p_adjusted is not None and acc.p_adjusted < 1e-6
    assert acc.outcome == "ok" and quality == "ok"


def test_a_loss_rise_is_a_regression() -> None:
    quality, reason, _ = judge_quality(predictions(300, 0.94, loss=0.25, seed=5), predictions(2000, 0.94, seed=6),
                                       RULES, DAYS)  # fmt: skip
    assert quality == "regressed" and reason.startswith("loss")


def test_per_prediction_correctness_is_judged_with_its_ties() -> None:
    quality, _, metrics = judge_quality(correctness(200, 0.80), correctness(1000, 0.95), RULES, DAYS)
    assert quality == "regressed"
    assert next(m for m in metrics if m.metric == "accuracy").worsening == pytest.approx(0.15)
    same, _, _ = judge_quality(correctness(200, 0.95), correctness(1000, 0.95), RULES, DAYS)
    assert same == "ok"


def test_too_few_labels_says_so_instead_of_passing() -> None:
    window = predictions(300, 0.60, seed=7)
    window.loc[20:, ["accuracy", "loss"]] = np.nan  # labels of most predictions have not arrived yet
    quality, reason, metrics = judge_quality(window, predictions(2000, 0.94), RULES, DAYS)
    assert quality == "no_labels"
    assert {m.outcome for m in metrics} == {"no_labels"}
    assert "20 labelled predictions, fewer than min_labels 30" in reason


def test_without_a_reference_only_a_bound_can_judge() -> None:
    empty = predictions(0, 0.94)
    quality, reason, _ = judge_quality(predictions(300, 0.70), empty, RULES, [])
    assert quality == "no_reference" and "0 labelled predictions in the reference" in reason
    floor = QualityRules(accuracy=MetricRule(limit=0.8))
    quality, reason, metrics = judge_quality(predictions(300, 0.70), empty, floor, [])
    assert quality == "regressed" and "accuracy 0.7 below its limit 0.8" in reason
    assert next(m for m in metrics if m.metric == "accuracy").beyond_limit


def test_a_bound_holds_even_when_the_reference_was_as_bad() -> None:
    floor = QualityRules(accuracy=MetricRule(limit=0.8))
    quality, reason, _ = judge_quality(predictions(300, 0.70, seed=1), predictions(2000, 0.70, seed=2), floor, DAYS)
    assert quality == "regressed" and "below its limit 0.8" in reason


def test_per_model_overrides() -> None:
    cfg = QualityConfig(models={"ranker": {"accuracy": {"limit": 0.5, "min_change": 0.1}, "min_labels": 5}})
    ranker = cfg.for_model("ranker")
    assert (ranker.accuracy.limit, ranker.accuracy.min_change, ranker.min_labels) == (0.5, 0.1, 5)
    assert ranker.loss == cfg.loss and cfg.for_model("other") == QualityRules()


def test_quality_survives_the_lake_round_trip() -> None:
    _, reason, metrics = judge_quality(predictions(300, 0.90, seed=1), predictions(2000, 0.94, seed=2), RULES, DAYS)
    v = ModelVerdict(model="m", verdict="healthy", reason="fine", window_start="a", window_end="b",
                     quality="regressed", quality_reason=reason, quality_metrics=metrics, reference_days=DAYS)  # fmt: skip
    (back,) = verdicts_from_frame(verdicts_frame([v]))
    assert back == v


# -- attribution: where a regression sits --------------------------------------------------------------------


def joined(n: int, accuracy: float, *, version: str = "3", saturated: str = "", seed: int = 0) -> pd.DataFrame:
    """``n`` of the model's joined predictions: per-prediction correctness, the version, the saturation."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"model": "m", "model_version": version, "accuracy": (rng.random(n) < accuracy) * 1.0,
                         "loss": 0.2, "saturated_resources": saturated, "slow": False})  # fmt: skip


def judged(window: pd.DataFrame, reference: pd.DataFrame) -> tuple[str, str]:
    _, _, metrics = judge_quality(window, reference, RULES, DAYS)
    return attribute(window, reference, RULES, metrics)


def test_a_regression_at_saturated_moments_is_infrastructure() -> None:
    window = pd.concat([joined(300, 0.95, seed=1), joined(200, 0.55, saturated="cpu,memory", seed=2)])
    where, why = judged(window, joined(2000, 0.95, seed=3))
    assert where == "infrastructure"
    assert why.startswith("accuracy 0.5") and "at saturated moments (cpu, memory)" in why and "(n=200)" in why


def test_a_regression_on_a_new_version_is_the_version() -> None:
    window = pd.concat([joined(300, 0.95, version="3", seed=1), joined(300, 0.70, version="4", seed=2)])
    where, why = judged(window, joined(2000, 0.95, version="3", seed=3))
    assert where == "version"
    assert "on version 4 (first seen in this window) against the other versions in the window" in why
    rollout = joined(400, 0.70, version="4", seed=4)  # the new version serves alone: against the reference
    assert judged(rollout, joined(2000, 0.95, version="3", seed=3))[1].endswith("against the reference")


def test_neither_saturation_nor_a_new_version_is_data_drift() -> None:
    where, why = judged(joined(400, 0.70, seed=1), joined(2000, 0.95, seed=3))
    assert where == "data" and "data or concept drift" in why
    assert judged(joined(400, 0.95, seed=1), joined(2000, 0.95, seed=3)) == ("", "")  # nothing regressed


def test_latency_and_quality_per_version_when_several_serve() -> None:
    window = pd.concat([joined(300, 0.95, version="3", seed=1), joined(100, 0.70, version="4", seed=2)])
    window["slow"] = [False] * 390 + [True] * 10
    rows = per_version(window)
    assert [(r["version"], r["n"], r["n_slow"]) for r in rows] == [("3", 300, 0), ("4", 100, 10)]
    assert rows[1]["accuracy"] == pytest.approx(window[window.model_version == "4"].accuracy.mean())
    assert per_version(joined(50, 0.9)) == []


# -- threshold replay's table ----------------------------------------------------------------------------------


def test_the_replay_table_puts_both_configurations_side_by_side() -> None:
    from datetime import date

    from modelwatch.replay import DayReplay, comparison

    d3, d4 = date(2026, 3, 3), date(2026, 3, 4)
    current = [DayReplay(d3, {"degraded": ["fraud-detector"]}), DayReplay(d4, {})]
    candidate = [DayReplay(d3, {}), DayReplay(d4, {"quality regressed": ["ranker", "fraud-detector"]})]
    rows = comparison(current, candidate)
    assert rows[0] == ["DAY", "PAGES FOR", "CURRENT", "CANDIDATE"]
    assert ["2026-03-03", "degraded", "fraud-detector", "-"] in rows
    assert ["2026-03-04", "quality regressed", "-", "ranker, fraud-detector"] in rows
    assert ["total", "degraded", "1 page(s) on 1 day(s)", "0 page(s) on 0 day(s)"] in rows
    assert ["total", "quality regressed", "0 page(s) on 0 day(s)", "2 page(s) on 1 day(s)"] in rows
