"""Has what the model sees or answers shifted? Each configured value's distribution in the window against
the same reference days as quality (the model's canonical daily partitions before the window).

Per value, two numbers that answer different questions, and a drift needs both:

- the **population stability index** (PSI, :func:`modelwatch.stats.psi`): how large the shift is, over the
  reference's quantile bins for a number (``drift.bins``) or over the categories; ``drift.values.<v>.psi``
  is the smallest index that counts;
- a **two-sample test**: is the shift more than chance for the counts at hand; Kolmogorov-Smirnov for a
  number, chi-square for a category; Holm-adjusted over the model's values, at ``significance``.

With thousands of predictions a test finds any shift significant, and with a hundred an index jumps by
chance: together they call a shift drift only when it is both large and real. Fewer than
``drift.min_count`` values in the window or the reference: not compared. One calculator per value
(:func:`compare_value`), one result per model (:func:`judge_drift`).

A value a team logs (``mlflow.logged``) is what the model sees, an ``input``, unless its rule says it is
what the model answers (``role: output``: a score, a predicted label); the reason, the ``drift`` dataset
and the report name it so (:func:`role_of`): ``output metric_score: PSI ...``. The same index and test
judge both: an output that shifts while the inputs hold says the model answers differently to the same
questions, inputs that shift while the output holds that it has not (yet) answered otherwise.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING

from modelwatch.schema import logged_types
from modelwatch.stats import CHI_SQUARE, KS_TEST, chi_square_homogeneity, holm, ks_two_sample, psi
from modelwatch.text import fmt_value
from modelwatch.verdict import Drift, DriftEvidence, DriftRole

if TYPE_CHECKING:
    import pandas as pd

    from modelwatch.config import DriftConfig, DriftValue


def role_of(name: str, rule: DriftValue) -> DriftRole:
    """What the value of column ``name`` is to the model: its rule's ``role``, else ``input`` for a value a
    team logs (``metric_``/``param_`` columns) and ``""`` for the service's own columns."""
    return rule.role or ("input" if logged_types([name]) else "")


def compare_value(
    name: str, rule: DriftValue, window: pd.Series, reference: pd.Series, *, bins: int, min_count: int
) -> DriftEvidence:
    """One value of one model: its index and test (``p_adjusted`` and the outcome of a compared value are
    set by :func:`judge_drift`)."""
    import numpy as np
    import pandas as pd

    role = role_of(name, rule)
    # the value as a reason names it: "output metric_score", "input param_channel", "prediction_time"
    named = f"{role} {name}" if role else name

    if rule.kind == "number":
        # a param is text: one that does not read as a number counts as not logged
        w = pd.to_numeric(window, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        r = pd.to_numeric(reference, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        w, r = w[np.isfinite(w)], r[np.isfinite(r)]
    else:
        w, r = window.dropna().astype(str).to_numpy(), reference.dropna().astype(str).to_numpy()
    common = {"value": name, "role": role, "kind": rule.kind, "n_window": len(w), "n_reference": len(r),
              "psi_threshold": rule.psi}  # fmt: skip
    if len(w) < min_count or len(r) < min_count:
        return DriftEvidence(outcome="too_few", psi=None, statistic=None, p_value=None, p_adjusted=None,
                             explanation=f"{named}: {len(w)} values in the window and {len(r)} in the reference, "
                             f"fewer than min_count {min_count}", **common)  # fmt: skip
    if rule.kind == "number":
        # the reference's quantiles as edges, open at both ends: every bin holds about 1/bins of the reference
        edges = np.unique(np.quantile(r, np.linspace(0, 1, bins + 1)[1:-1]))
        w_counts = np.bincount(np.searchsorted(edges, w, side="right"), minlength=len(edges) + 1)
        r_counts = np.bincount(np.searchsorted(edges, r, side="right"), minlength=len(edges) + 1)
        statistic, p = ks_two_sample(w, r)
        test = KS_TEST
    else:
        categories = sorted(set(w) | set(r))
        w_counts = np.array([int((w == c).sum()) for c in categories])
        r_counts = np.array([int((r == c).sum()) for c in categories])
        statistic, p = chi_square_homogeneity(list(w_counts), list(r_counts))
        test = CHI_SQUARE
    index = psi(list(w_counts / len(w)), list(r_counts / len(r)))
    return DriftEvidence(outcome="stable", psi=index, statistic=statistic, p_value=p, p_adjusted=None, test=test,
                         **common)  # fmt: skip


def judge_drift(
    window: pd.DataFrame, reference: pd.DataFrame, cfg: DriftConfig, reference_days: list[str]
) -> tuple[Drift, str, list[DriftEvidence]]:
    """The drift of one model in one window: ``drifted`` when a value's index reaches its threshold and its
    Holm-adjusted test its significance, ``stable`` when compared and not, ``no_reference`` when nothing
    could be compared.

    :param window: the model's predictions in the window. :param reference: the model's reference predictions.
    :param reference_days: the days the reference holds (for the reason).
    """
    values = [compare_value(name, rule, window[name], reference[name], bins=cfg.bins, min_count=cfg.min_count)
              for name, rule in cfg.values.items()]  # fmt: skip
    tested = {d.value: d.p_value for d in values if d.p_value is not None and not math.isnan(d.p_value)}
    adjusted = holm(tested)
    judged = []
    for d in values:
        if d.value in adjusted:
            rule = cfg.values[d.value]  # type: ignore[index]
            p_adj = adjusted[d.value]
            assert d.psi is not None
            drifted = d.psi >= rule.psi and p_adj <= rule.significance
            named = f"{d.role} {d.value}" if d.role else d.value
            text = (f"{named}: PSI {fmt_value(d.psi)} (threshold {fmt_value(rule.psi)}), {d.test} p={fmt_value(p_adj)} "
                    f"(Holm over {len(adjusted)}; {d.n_window} vs {d.n_reference} values over "
                    f"{len(reference_days)} reference day(s))")  # fmt: skip
            d = replace(d, p_adjusted=p_adj, outcome="drifted" if drifted else "stable", explanation=text)
        judged.append(d)
    outcomes = {d.outcome for d in judged}
    drift: Drift = "drifted" if "drifted" in outcomes else "stable" if "stable" in outcomes else "no_reference"
    shown = [d for d in judged if d.outcome == "drifted"] if drift == "drifted" else judged
    return drift, "; ".join(d.explanation for d in shown), judged
