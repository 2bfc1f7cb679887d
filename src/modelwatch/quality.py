"""Is the model still right? Accuracy and loss of a window, against bounds and against the model's history.

The seeds ask two questions of a deployed model: is it working (latency, resources: :mod:`modelwatch.evaluate`)
and are its predictions still useful. This module answers the second, per model and window, from the
``accuracy`` and ``loss`` the predictions already carry:

- a **bound** (``quality.accuracy.limit``, ``quality.loss.limit``): a window mean beyond it is a regression;
- a **reference**: the same model's labelled predictions in the canonical daily partitions of the
  ``quality.reference_days`` days before the window (never the window itself), compared with a one-sided
  Mann-Whitney U test (:func:`modelwatch.stats.mann_whitney_worse`), Holm-adjusted over the model's metrics.
  A significant difference counts only if the mean is worse by at least ``min_change``: with thousands of
  predictions a trivial difference is significant, and significance alone would page for it.

A window with fewer than ``min_labels`` labelled predictions says ``no_labels`` (ground truth often arrives
later), never ``ok``; one with labels but neither a reference of as many nor a bound says ``no_reference``.
One calculator per metric (:func:`compare_metric`), one result per model (:func:`judge_quality`).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING

from modelwatch.stats import MANN_WHITNEY, holm, mann_whitney_worse
from modelwatch.text import fmt_value
from modelwatch.verdict import Quality, QualityEvidence

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from modelwatch.config import MetricRule, QualityRules

#: The metrics judged, and which direction is worse.
METRICS: dict[str, str] = {"accuracy": "lower", "loss": "higher"}


def labelled(values: pd.Series) -> np.ndarray:
    """The finite values of a metric column: a prediction whose label has not arrived has none."""
    import numpy as np

    array = values.to_numpy(dtype=float, na_value=np.nan)
    return array[np.isfinite(array)]


def compare_metric(
    metric: str, window: np.ndarray, reference: np.ndarray, rule: MetricRule, min_labels: int
) -> QualityEvidence:
    """One metric of one model: the window's labelled values against the bound and the reference.

    ``p_adjusted`` and the final ``outcome`` of a tested metric are set by :func:`judge_quality` (Holm's
    correction needs every metric of the model).
    """
    worse = METRICS[metric]
    n_w, n_r = len(window), len(reference)
    w_mean = float(window.mean()) if n_w else None
    r_mean = float(reference.mean()) if n_r else None
    common = {"metric": metric, "n_window": n_w, "n_reference": n_r, "window_mean": w_mean,
              "reference_mean": r_mean, "limit": rule.limit, "min_change": rule.min_change}  # fmt: skip
    if n_w < min_labels:
        return QualityEvidence(outcome="no_labels", worsening=None, beyond_limit=False, p_value=None,
                               p_adjusted=None, explanation=f"{n_w} labelled predictions, fewer than min_labels "
                               f"{min_labels}", **common)  # fmt: skip
    assert w_mean is not None
    beyond = rule.limit is not None and (w_mean < rule.limit if worse == "lower" else w_mean > rule.limit)
    bound = f"{metric} {fmt_value(w_mean)} {'below' if worse == 'lower' else 'above'} its limit {fmt_value(rule.limit)}"
    if n_r < min_labels or r_mean is None:
        outcome = "regressed" if beyond else "no_reference"
        why = bound if beyond else f"{n_r} labelled predictions in the reference, fewer than min_labels {min_labels}"
        return QualityEvidence(outcome=outcome, worsening=None, beyond_limit=beyond, p_value=None, p_adjusted=None,
                               explanation=why, **common)  # fmt: skip
    worsening = (r_mean - w_mean) if worse == "lower" else (w_mean - r_mean)
    p = mann_whitney_worse(window, reference, worse=worse)
    return QualityEvidence(outcome="ok", worsening=worsening, beyond_limit=beyond, p_value=p, p_adjusted=None,
                           test=MANN_WHITNEY, explanation=bound if beyond else "", **common)  # fmt: skip


def judge_quality(
    window: pd.DataFrame, reference: pd.DataFrame, rules: QualityRules, reference_days: list[str]
) -> tuple[Quality, str, list[QualityEvidence]]:
    """The quality of one model in one window.

    :param window: the model's predictions in the window (``accuracy``, ``loss``).
    :param reference: the model's predictions of the reference days.
    :param reference_days: the days the reference holds (for the reason).
    :returns: the quality (``ok`` / ``regressed`` / ``no_labels`` / ``no_reference``), its reason, and the
        evidence per metric.
    """
    metrics = []
    for metric in METRICS:
        rule = getattr(rules, metric)
        metrics.append(compare_metric(metric, labelled(window[metric]), labelled(reference[metric]), rule,
                                      rules.min_labels))  # fmt: skip
    tested = {m.metric: m.p_value for m in metrics if m.p_value is not None and not math.isnan(m.p_value)}
    adjusted = holm(tested)
    days = f"{len(reference_days)} reference day(s)"
    judged = []
    for m in metrics:
        if m.metric in adjusted:
            p_adj = adjusted[m.metric]
            assert m.worsening is not None
            real = p_adj <= rules.significance and m.worsening >= m.min_change
            text = (f"{m.metric} {fmt_value(m.window_mean)} against {fmt_value(m.reference_mean)} over {days} "
                    f"({m.n_window} vs {m.n_reference} labelled): worse by {fmt_value(m.worsening)} (min_change "
                    f"{fmt_value(m.min_change)}), p={fmt_value(p_adj)} ({MANN_WHITNEY}, Holm over {len(adjusted)})")  # fmt: skip
            if m.beyond_limit:
                text = f"{m.explanation}; {text}"
            m = replace(m, p_adjusted=p_adj, outcome="regressed" if real or m.beyond_limit else "ok", explanation=text)
        judged.append(m)
    outcomes = {m.outcome for m in judged}
    if outcomes == {"no_labels"}:
        quality: Quality = "no_labels"
    elif "regressed" in outcomes:
        quality = "regressed"
    elif "ok" in outcomes:
        quality = "ok"
    elif "no_reference" in outcomes:
        quality = "no_reference"
    else:
        quality = "no_labels"
    shown = [m for m in judged if m.outcome == "regressed"] if quality == "regressed" else judged
    return quality, "; ".join(m.explanation for m in shown), judged
