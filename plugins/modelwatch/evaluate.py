"""Verdicts: is a model healthy, degraded by saturation, slow for no visible reason, or unseen?

Pure functions: the correlation frames in, one verdict per model out.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import pandas as pd

    from modelwatch.config import ModelwatchConfig
    from modelwatch.window import Window

log = logging.getLogger(__name__)

Verdict = Literal["healthy", "degraded", "slow_unexplained", "no_data"]


@dataclass
class ResourceEvidence:
    """One saturated resource that coincided with a model's slow predictions."""

    resource: str
    threshold: float
    unit: str
    n_slow_saturated: int
    slow_saturated_share: float
    normal_saturated_share: float | None
    lift: float | None
    spearman: float | None
    slow_value_median: float
    slow_value_max: float


@dataclass
class ModelVerdict:
    """The verdict for one model in one window, as stored in the ``verdicts`` dataset and ``_verdict.json``."""

    model: str
    verdict: Verdict
    reason: str
    window_start: str
    window_end: str
    model_versions: list[str] = field(default_factory=list)
    n_predictions: int = 0
    n_slow: int = 0
    slow_share: float = 0.0
    slow_threshold_seconds: float = 0.0
    slow_instances: list[str] = field(default_factory=list)
    saturated_resources: list[ResourceEvidence] = field(default_factory=list)
    resources_without_data: list[str] = field(default_factory=list)
    incident_start: str | None = None
    incident_end: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return _json_safe(asdict(self))


def evaluate(
    joined: pd.DataFrame, correlation: pd.DataFrame, resources: pd.DataFrame, config: ModelwatchConfig, window: Window
) -> list[ModelVerdict]:
    """One verdict per model seen in the window or listed in ``evaluation.expected_models``.

    - ``no_data``: the model has no predictions, none with a usable ``prediction_time`` (missing, NaN, negative or
      infinite), or Prometheus returned no sample of any saturation query for its instances (without
      evidence a model is never called healthy);
    - ``healthy``: fewer slow predictions than ``min_slow_count`` and a share below ``min_slow_share``;
    - ``degraded``: slow enough, and at least one resource was saturated at ``min_coincidence_share`` of
      the slow predictions, ``min_lift`` times more often than at normal ones;
    - ``slow_unexplained``: slow enough, but no resource explains it.
    """
    from modelwatch.correlate import usable_prediction_times

    limits = config.saturation_thresholds
    seen = set(joined["model"].unique())
    if "" in seen:
        untagged = joined[joined["model"] == ""]
        # No model to give a verdict (or an alert label) to: say so instead of judging a nameless model.
        log.warning(
            "%d prediction(s) without a model tag are not judged (run ids %s)",
            len(untagged), ", ".join(sorted(set(untagged["run_id"].astype(str)))[:5]),
        )  # fmt: skip
    models = sorted((seen - {""}) | set(config.evaluation.expected_models))
    verdicts = []
    for model in models:
        rules = config.evaluation.for_model(model)
        base = {"model": model, "window_start": window.start.isoformat(), "window_end": window.end.isoformat(),
                "slow_threshold_seconds": rules.slow_prediction_seconds}  # fmt: skip
        rows = joined[joined["model"] == model]
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
        common = {
            **base, "model_versions": sorted(set(rows["model_version"].astype(str))),
            "n_predictions": len(rows), "n_slow": len(slow), "slow_share": len(slow) / len(rows),
            "slow_instances": sorted(set(slow["instance"])), "resources_without_data": without,
        }  # fmt: skip
        if len(without) == len(limits):
            verdicts.append(ModelVerdict(
                verdict="no_data",
                reason=(f"{len(rows)} predictions but no resource samples for instances {', '.join(sorted(instances))}"
                        f"{not_judged}"),
                **common,
            ))  # fmt: skip
            continue
        is_slow = len(slow) >= rules.min_slow_count or len(slow) / len(rows) >= rules.min_slow_share
        if not is_slow:
            verdicts.append(ModelVerdict(
                verdict="healthy",
                reason=f"{len(slow)} of {len(rows)} predictions slower than {rules.slow_prediction_seconds:g} s{not_judged}",
                **common,
            ))  # fmt: skip
            continue
        evidence = _evidence(correlation[correlation["model"] == model], rules.min_coincidence_share, rules.min_lift)
        if evidence:
            names = [e.resource for e in evidence]
            flags = slow[[f"sat_{n}" for n in names]].any(axis=1)
            hit = slow.loc[flags, "timestamp"]
            verdicts.append(ModelVerdict(
                verdict="degraded",
                reason=(f"{len(slow)} of {len(rows)} predictions slower than {rules.slow_prediction_seconds:g} s, "
                        f"coinciding with saturated {', '.join(names)}{not_judged}"),
                saturated_resources=evidence,
                incident_start=hit.min().isoformat() if len(hit) else None,
                incident_end=hit.max().isoformat() if len(hit) else None,
                **common,
            ))  # fmt: skip
        else:
            # A slow prediction in a scrape gap is unexplained for want of evidence, not for want of
            # saturation: say so, or a gap would read as "resources were fine".
            blind = int(slow[[f"res_{q}" for q in limits]].isna().all(axis=1).sum())
            gap = f"; {blind} of them had no resource sample within the tolerance" if blind else ""
            verdicts.append(ModelVerdict(
                verdict="slow_unexplained",
                reason=(f"{len(slow)} of {len(rows)} predictions slower than {rules.slow_prediction_seconds:g} s "
                        f"with no resource saturated at the time{gap}{not_judged}"),
                incident_start=slow["timestamp"].min().isoformat(),
                incident_end=slow["timestamp"].max().isoformat(),
                **common,
            ))  # fmt: skip
    return verdicts


def _evidence(rows: pd.DataFrame, min_share: float, min_lift: float) -> list[ResourceEvidence]:
    out = []
    for r in rows.itertuples(index=False):  # one row per resource, a handful
        if math.isnan(r.threshold) or not r.n_slow_with_sample:
            continue
        lift = r.lift
        if r.slow_saturated_share >= min_share and (math.isnan(lift) or lift >= min_lift):
            out.append(ResourceEvidence(
                resource=r.resource, threshold=r.threshold, unit=r.unit, n_slow_saturated=r.n_slow_saturated,
                slow_saturated_share=r.slow_saturated_share, normal_saturated_share=_none_if_nan(r.normal_saturated_share),
                lift=_none_if_nan(lift), spearman=_none_if_nan(r.spearman),
                slow_value_median=r.slow_value_median, slow_value_max=r.slow_value_max,
            ))  # fmt: skip
    return sorted(out, key=lambda e: (-e.slow_saturated_share, e.resource))


def verdicts_frame(verdicts: list[ModelVerdict]) -> pd.DataFrame:
    """The verdicts as a flat frame for the ``verdicts`` Parquet dataset."""
    import pandas as pd

    return pd.DataFrame(
        [{
            "model": v.model, "verdict": v.verdict, "reason": v.reason, "window_start": v.window_start,
            "window_end": v.window_end, "model_versions": ",".join(v.model_versions),
            "n_predictions": v.n_predictions, "n_slow": v.n_slow, "slow_share": v.slow_share,
            "slow_threshold_seconds": v.slow_threshold_seconds, "slow_instances": ",".join(v.slow_instances),
            "saturated_resources": ",".join(e.resource for e in v.saturated_resources),
            "resources_without_data": ",".join(v.resources_without_data),
            "incident_start": v.incident_start, "incident_end": v.incident_end,
        } for v in verdicts],
        columns=["model", "verdict", "reason", "window_start", "window_end", "model_versions", "n_predictions",
                 "n_slow", "slow_share", "slow_threshold_seconds", "slow_instances", "saturated_resources",
                 "resources_without_data", "incident_start", "incident_end"],
    )  # fmt: skip


def _none_if_nan(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def _json_safe(obj: Any) -> Any:
    """JSON has no NaN or Infinity: NaN becomes null, infinity the string "inf"."""
    if isinstance(obj, float):
        if math.isnan(obj):
            return None
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
        return obj
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if hasattr(obj, "item"):  # numpy scalars
        return _json_safe(obj.item())
    return obj
