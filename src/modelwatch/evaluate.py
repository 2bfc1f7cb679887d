"""Verdicts: is a model healthy, degraded by saturation, slow for no visible reason, or unseen?

Pure functions: the correlation frames in, one :class:`~modelwatch.verdict.ModelVerdict` per model out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from modelwatch.correlate import model_scopes
from modelwatch.drift import judge_drift
from modelwatch.fanout import models_to_judge
from modelwatch.quality import METRICS, attribute, judge_quality, per_version
from modelwatch.schema import saturated_column, usable_prediction_times, value_column
from modelwatch.stats import TEST_NAME, holm
from modelwatch.text import fmt_pct as pct
from modelwatch.text import fmt_value as fmt
from modelwatch.verdict import ModelVerdict, Outcome, ResourceEvidence

if TYPE_CHECKING:
    import pandas as pd

    from modelwatch.config import ModelThresholds, ModelwatchConfig
    from modelwatch.window import Window


def test_resources(rows: pd.DataFrame, rules: ModelThresholds) -> list[ResourceEvidence]:
    """Test every resource with a threshold in one model's correlation rows (:mod:`modelwatch.correlate`).

    A resource explains the model's slowness when, over the judged predictions of the window:

    1. it had a real sample at ``min_coverage`` of the slow predictions or more (``no_samples``,
       ``low_coverage``);
    2. it was saturated at some sampled predictions and below its threshold at others (``never_saturated``,
       ``no_contrast``);
    3. slowness is significantly more likely at saturation: Fisher's exact test, one-sided, Holm-adjusted
       p at most ``significance`` (``not_significant``);
    4. and by enough: relative risk P(slow | saturated) / P(slow | not) of at least ``min_relative_risk``
       (``small_effect``).
    """
    rows = rows[~rows["threshold"].isna()]
    adjusted = holm({r.resource: float(r.p_value) for r in rows.itertuples(index=False)})
    out = []
    for r in rows.itertuples(index=False):  # one row per resource, a handful
        a, b, c, d = r.n_slow_saturated, r.n_normal_saturated, r.n_slow_unsaturated, r.n_normal_unsaturated
        p_adj = adjusted.get(r.resource, float("nan"))
        rr = float(r.relative_risk)
        coverage = float(r.coverage)
        if a + b + c + d == 0:
            outcome: Outcome = "no_samples"
        elif not coverage >= rules.min_coverage:
            # first: without samples at the slow predictions, "never saturated" would claim too much
            outcome = "low_coverage"
        elif a + b == 0:
            outcome = "never_saturated"
        elif c + d == 0:
            outcome = "no_contrast"
        elif not p_adj <= rules.significance:
            outcome = "not_significant"
        elif not rr >= rules.min_relative_risk:
            outcome = "small_effect"
        else:
            outcome = "explains"
        e = ResourceEvidence(
            resource=r.resource, threshold=float(r.threshold), unit=r.unit, outcome=outcome,
            n_slow_saturated=int(a), n_normal_saturated=int(b), n_slow_unsaturated=int(c),
            n_normal_unsaturated=int(d), n_slow_unsampled=int(r.n_slow_unsampled),
            n_normal_unsampled=int(r.n_normal_unsampled), coverage=_none_if_nan(coverage),
            slow_share_saturated=_none_if_nan(r.slow_share_saturated),
            slow_share_unsaturated=_none_if_nan(r.slow_share_unsaturated), relative_risk=_none_if_nan(rr),
            p_value=_none_if_nan(float(r.p_value)), p_adjusted=_none_if_nan(p_adj),
            slow_saturated_share=_none_if_nan(r.slow_saturated_share),
            normal_saturated_share=_none_if_nan(r.normal_saturated_share), lift=_none_if_nan(r.lift),
            spearman=_none_if_nan(r.spearman), slow_value_median=_none_if_nan(r.slow_value_median),
            slow_value_max=_none_if_nan(r.slow_value_max),
        )  # fmt: skip
        e.explanation = explain(e, rules, tested=len(adjusted))
        out.append(e)
    return sorted(out, key=lambda e: (e.outcome != "explains", e.p_adjusted if e.p_adjusted is not None else 2.0,
                                      e.resource))  # fmt: skip


def explain(e: ResourceEvidence, rules: ModelThresholds, *, tested: int) -> str:
    """One resource's test result in words, naming the numbers and the rule that decided."""
    n_slow = e.n_slow_saturated + e.n_slow_unsaturated + e.n_slow_unsampled
    sampled = e.n_slow_saturated + e.n_slow_unsaturated
    at = f"{e.resource} >= {fmt(e.threshold)}"
    coverage = f"coverage {sampled}/{n_slow} slow"
    if e.outcome == "no_samples":
        return f"{e.resource}: no real sample at any prediction"
    if e.outcome == "never_saturated":
        return f"{e.resource}: never at or above {fmt(e.threshold)} at a sampled prediction ({coverage})"
    if e.outcome == "low_coverage":
        return (f"{e.resource}: only {sampled} of {n_slow} slow predictions had a real sample "
                f"({coverage} = {pct(e.coverage)} < min_coverage {pct(rules.min_coverage)})")
    if e.outcome == "no_contrast":
        return f"{e.resource}: at or above {fmt(e.threshold)} at every sampled prediction, nothing to compare with"
    sat_n = e.n_slow_saturated + e.n_normal_saturated
    uns_n = e.n_slow_unsaturated + e.n_normal_unsaturated
    numbers = (f"slow at {pct(e.slow_share_saturated)} of {sat_n} predictions at {at} vs {pct(e.slow_share_unsaturated)} "
               f"of {uns_n} below; relative risk {fmt(e.relative_risk)}, p={fmt(e.p_adjusted)} "
               f"({TEST_NAME}, Holm over {tested}); {coverage}")
    if e.outcome == "not_significant":
        return f"{e.resource}: not significant (p > {fmt(rules.significance)}): {numbers}"
    if e.outcome == "small_effect":
        return f"{e.resource}: relative risk below min_relative_risk {fmt(rules.min_relative_risk)}: {numbers}"
    return f"{e.resource}: {numbers}"


#: A warning is quoted in a verdict's reason up to this many characters.
PARTIAL_REASON_CHARS = 200


def partial_evidence(notes: Sequence[Mapping[str, Any]] | None, queries: Sequence[str]) -> list[str]:
    """The saturation queries whose Prometheus answers carried warnings, as ``"<query>: <warning>"`` (one
    entry per distinct warning, in the order of ``queries``).

    :param notes: the ``prometheus_warnings`` of the resources partition's manifest
        (:func:`modelwatch.extract.query_notes` records). :param queries: the queries a verdict rests on.
    """
    per_query: dict[str, list[str]] = {}
    for note in notes or ():
        for text in note.get("warnings") or ():
            per_query.setdefault(str(note.get("query")), []).append(str(text))
    return [f"{q}: {w}" for q in queries for w in dict.fromkeys(per_query.get(q, []))]


def partial_reason(entries: Sequence[str]) -> str:
    """What a reason says about partial evidence: `` (evidence partial: query cpu: <warning>; ...)``, the
    first warning of each query quoted (cut at :data:`PARTIAL_REASON_CHARS`), the others counted."""
    if not entries:
        return ""
    first: dict[str, str] = {}
    more: dict[str, int] = {}
    for entry in entries:
        query, _, text = entry.partition(": ")
        if query in first:
            more[query] = more.get(query, 0) + 1
        else:
            first[query] = text if len(text) <= PARTIAL_REASON_CHARS else text[: PARTIAL_REASON_CHARS - 3] + "..."
    parts = [f"query {q}: {t}" + (f" (+{more[q]} more)" if q in more else "") for q, t in first.items()]
    return f" (evidence partial: {'; '.join(parts)})"


def history_columns(config: ModelwatchConfig) -> list[str]:
    """The columns of the reference predictions that quality and drift read."""
    return list(dict.fromkeys(["model", "model_version", *METRICS, *config.drift.values]))


def dimensions(
    rows: pd.DataFrame, history: pd.DataFrame, config: ModelwatchConfig, model: str, days: list[str]
) -> dict[str, Any]:
    """The quality and drift of one model against its history, as :class:`ModelVerdict` fields.

    :param rows: the model's joined predictions in the window. :param history: its reference predictions.
    :param days: the reference days found.
    """
    rules = config.quality.for_model(model)
    quality, why, metrics = judge_quality(rows, history, rules, days)
    where, because = attribute(rows, history, rules, metrics)
    drift, drift_reason, drift_values = judge_drift(rows, history, config.drift, days)
    return {
        "quality": quality, "quality_reason": f"{why}; sits at {where}: {because}" if where else why,
        "quality_metrics": metrics, "reference_days": days, "quality_attribution": where,
        "versions": per_version(rows), "drift": drift, "drift_reason": drift_reason, "drift_values": drift_values,
    }  # fmt: skip


def evaluate(
    joined: pd.DataFrame,
    correlation: pd.DataFrame,
    resources: pd.DataFrame,
    config: ModelwatchConfig,
    window: Window,
    models: list[str] | None = None,
    reference: pd.DataFrame | None = None,
    reference_days: list[str] | None = None,
    partial: Sequence[Mapping[str, Any]] | None = None,
) -> list[ModelVerdict]:
    """One verdict per model seen in the window or listed in ``evaluation.expected_models``
    (:func:`modelwatch.fanout.models_to_judge`), or per model of ``models`` when a mapped task judges a group.

    - ``no_data``: the model has no predictions, none with a usable ``prediction_time`` (missing, NaN, negative or
      infinite), or Prometheus returned no sample of any saturation query for its instances (without
      evidence a model is never called healthy);
    - ``healthy``: fewer slow predictions than ``min_slow_count`` or a share below ``min_slow_share``;
    - ``degraded``: slow enough, and a resource explains it (:func:`test_resources`);
    - ``slow_unexplained``: slow enough, but no resource explains it; the reason names the test each
      resource failed.

    With a ``reference`` (the predictions of the ``reference_days`` before the window,
    :func:`modelwatch.window.reference_windows`), each verdict also carries its quality
    (:func:`modelwatch.quality.judge_quality`) and drift (:func:`modelwatch.drift.judge_drift`); without
    one, both are ``not_judged``.

    ``partial``: the Prometheus warnings of the window's queries (the resources manifest's
    ``prometheus_warnings``). A verdict judged on a saturation query that carried warnings keeps its
    kind (a degraded one still pages; a healthy one is healthy on what Prometheus returned) but lists them
    in ``evidence_partial`` and its reason ends ``(evidence partial: query cpu: <warning>)``.
    """
    all_limits = config.saturation_thresholds
    scopes = model_scopes(config)
    flagged = partial_evidence(partial, list(all_limits))
    partial_note = partial_reason(flagged)
    # predictions without a model tag have no one to judge (models_to_judge leaves ""); the extractor
    # that read them said so, naming their runs
    seen = set(joined["model"].unique())
    if models is None:
        models = models_to_judge(seen, config.evaluation.expected_models)
    verdicts = []
    for model in models:
        rules = config.evaluation.for_model(model)
        # a per-model query (a serving preset's) is evidence for its own model only
        limits = {q: v for q, v in all_limits.items() if scopes.get(q, model) == model}
        base = {"model": model, "window_start": window.start.isoformat(), "window_end": window.end.isoformat(),
                "slow_threshold_seconds": rules.slow_prediction_seconds}  # fmt: skip
        rows = joined[joined["model"] == model]
        if reference is not None:
            base |= dimensions(rows, reference[reference["model"] == model], config, model, list(reference_days or []))
        if rows.empty:
            verdicts.append(ModelVerdict(verdict="no_data", reason="no predictions in the window", **base))
            continue
        usable = usable_prediction_times(rows["prediction_time"])
        unusable = int((~usable).sum())
        if not usable.any():
            verdicts.append(ModelVerdict(
                verdict="no_data", n_predictions=len(rows),
                model_versions=sorted(set(rows["model_version"].astype(str))),
                reason=f"{len(rows)} predictions but none with a usable prediction_time (missing, NaN, negative or infinite)",
                **base,
            ))  # fmt: skip
            continue
        # a prediction without a usable prediction_time is neither slow nor normal: judge the others
        not_judged = f"; {unusable} prediction(s) without a usable prediction_time not judged" if unusable else ""
        rows = rows[usable]
        instances = set(rows["instance"])
        covered = set(resources.loc[resources["instance"].isin(instances | {""}), "query"].unique())
        without = sorted(q for q in limits if q not in covered)
        slow = rows[rows["slow"]]
        blind = int(slow[[value_column(q) for q in limits]].isna().all(axis=1).sum()) if len(slow) else 0
        share = len(slow) / len(rows)
        common = {
            **base, "model_versions": sorted(set(rows["model_version"].astype(str))),
            "n_predictions": len(rows), "n_slow": len(slow), "slow_share": share,
            "slow_instances": sorted(set(slow["instance"])), "resources_without_data": without,
            "n_slow_unsampled": blind, "evidence_partial": flagged,
        }  # fmt: skip
        if limits and len(without) == len(limits):
            verdicts.append(ModelVerdict(
                verdict="no_data",
                reason=(f"{len(rows)} predictions but no resource samples for instances {', '.join(sorted(instances))}"
                        f"{not_judged}"),
                **common,
            ))  # fmt: skip
            continue
        counted = f"{len(slow)} of {len(rows)} predictions slower than {fmt(rules.slow_prediction_seconds)} s ({pct(share)})"
        if len(slow) < rules.min_slow_count or share < rules.min_slow_share:
            below = (f"fewer than min_slow_count {rules.min_slow_count}" if len(slow) < rules.min_slow_count
                     else f"under min_slow_share {pct(rules.min_slow_share)}")  # fmt: skip
            verdicts.append(ModelVerdict(verdict="healthy", reason=f"{counted}: {below}{not_judged}", **common))
            continue
        tests = test_resources(correlation[correlation["model"] == model], rules)
        explains = [e for e in tests if e.outcome == "explains"]
        rejected = [e for e in tests if e.outcome != "explains"]
        gap = f"; {blind} slow prediction(s) had no real resource sample" if blind else ""
        if explains:
            flags = slow[[saturated_column(e.resource) for e in explains]].any(axis=1)
            hit = slow.loc[flags, "timestamp"]
            verdicts.append(ModelVerdict(
                verdict="degraded",
                reason=(f"{counted}, explained by saturated {', '.join(e.resource for e in explains)}: "
                        f"{'; '.join(e.explanation for e in explains)}{gap}{not_judged}"),
                saturated_resources=explains, rejected_resources=rejected,
                incident_start=hit.min().isoformat() if len(hit) else None,
                incident_end=hit.max().isoformat() if len(hit) else None,
                **common,
            ))  # fmt: skip
        else:
            # Say which test each resource failed: "no resource was saturated" would be false when one was
            # saturated but did not make slowness more likely, or was not sampled.
            verdicts.append(ModelVerdict(
                verdict="slow_unexplained",
                reason=(f"{counted}, not explained by any resource: {'; '.join(e.explanation for e in rejected)}"
                        f"{gap}{not_judged}"),
                rejected_resources=rejected,
                incident_start=slow["timestamp"].min().isoformat(),
                incident_end=slow["timestamp"].max().isoformat(),
                **common,
            ))  # fmt: skip
    for v in verdicts:  # every verdict that rests on the resource evidence (built from ``common``)
        if v.evidence_partial:
            v.reason += partial_note
    return verdicts


def _none_if_nan(x: Any) -> Any:
    if x is None:
        return None
    if hasattr(x, "item"):  # numpy scalars
        x = x.item()
    return None if isinstance(x, float) and math.isnan(x) else x
