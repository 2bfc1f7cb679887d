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


def attribute(
    window: pd.DataFrame, reference: pd.DataFrame, rules: QualityRules, metrics: list[QualityEvidence]
) -> tuple[str, str]:
    """Where a regression sits, what no peer says: ``infrastructure`` when the regressed metric is worse at
    the window's saturated moments than at its other moments, ``version`` when it is worse on a model version
    that first appears in the window (against the other versions serving in the window, or else against the
    reference), ``data`` when neither (data or concept drift). The same test, minimum change and minimum
    counts as the regression itself; ``""`` when nothing regressed.

    :param window: the model's joined predictions (``saturated_resources``, ``model_version``, the metrics).
    :param reference: the model's reference predictions (``model_version``, the metrics).
    :param metrics: the model's quality evidence (:func:`judge_quality`).
    :returns: the attribution and the sentence that says why.
    """
    import numpy as np

    regressed = [m for m in metrics if m.outcome == "regressed"]
    if not regressed:
        return "", ""
    saturated = window["saturated_resources"].fillna("").astype(str) != ""
    versions = window["model_version"].astype(str)
    new = sorted(set(versions) - set(reference["model_version"].astype(str)))
    for m in regressed:
        worse, rule = METRICS[m.metric], getattr(rules, m.metric)
        found = _worse_part(window.loc[saturated, m.metric], window.loc[~saturated, m.metric], worse, rule, rules)
        if found:
            names = sorted({n for s in window.loc[saturated, "saturated_resources"] for n in str(s).split(",") if n})
            return "infrastructure", (f"{m.metric} {found} at saturated moments ({', '.join(names)}) against the "
                                      "rest of the window")  # fmt: skip
        for version in new:
            mine = versions == version
            others = window.loc[~mine, m.metric]
            against = "the other versions in the window"
            if np.isfinite(others.to_numpy(dtype=float, na_value=np.nan)).sum() < rules.min_labels:
                others, against = reference[m.metric], "the reference"
            found = _worse_part(window.loc[mine, m.metric], others, worse, rule, rules)
            if found:
                return "version", f"{m.metric} {found} on version {version} (first seen in this window) against {against}"
    return "data", ("neither at saturated moments nor on a version new in the window: the inputs or the world "
                    "changed (data or concept drift)")  # fmt: skip


def _worse_part(part: pd.Series, rest: pd.Series, worse: str, rule: MetricRule, rules: QualityRules) -> str:
    """``"<mean> (n=..) vs <mean> (n=..), p=.."`` when ``part`` is worse than ``rest`` by the test, else ``""``."""
    a, b = labelled(part), labelled(rest)
    if len(a) < rules.min_labels or len(b) < rules.min_labels:
        return ""
    p = mann_whitney_worse(a, b, worse=worse)
    change = (b.mean() - a.mean()) if worse == "lower" else (a.mean() - b.mean())
    if p > rules.significance or change < rule.min_change:
        return ""
    return f"{fmt_value(a.mean())} (n={len(a)}) vs {fmt_value(b.mean())} (n={len(b)}), p={fmt_value(p)} ({MANN_WHITNEY})"


def per_version(window: pd.DataFrame) -> list[dict[str, object]]:
    """Latency and quality per model version, when several versions serve in the window (else ``[]``):
    ``version``, ``n``, ``n_slow``, ``slow_share``, ``accuracy``, ``loss`` (means of the labelled)."""
    versions = window["model_version"].astype(str)
    if versions.nunique() < 2:
        return []
    out: list[dict[str, object]] = []
    for version in sorted(set(versions)):
        rows = window[versions == version]
        slow = int(rows["slow"].fillna(False).astype(bool).sum()) if "slow" in rows else 0
        means = {m: (float(v.mean()) if len(v := labelled(rows[m])) else None) for m in METRICS}
        out.append({"version": version, "n": len(rows), "n_slow": slow, "slow_share": slow / len(rows), **means})
    return out
