"""The verdict: one typed object from :mod:`modelwatch.evaluate` to :mod:`modelwatch.alerting`.

A :class:`ModelVerdict` is built once, by ``evaluate``, and read as an object by everything after it
(paging, alert payloads, the verdict document). It is serialised once for the lake, as one row of the
``verdicts`` dataset (:meth:`ModelVerdict.to_record`, columns :data:`modelwatch.schema.VERDICT_COLUMNS`),
and restored from that row (:meth:`ModelVerdict.from_record`) by the task that commits the run's parts.
:meth:`ModelVerdict.to_dict` is its JSON view for the run's ``_verdict.json``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal

from modelwatch.schema import DRIFT_COLUMNS, VERDICT_COLUMNS
from modelwatch.stats import TEST_NAME

if TYPE_CHECKING:
    import pandas as pd

Verdict = Literal["healthy", "degraded", "slow_unexplained", "no_data"]
#: The quality dimension (:mod:`modelwatch.quality`): ``not_judged`` for a verdict built without it.
Quality = Literal["ok", "regressed", "no_labels", "no_reference", "not_judged"]
#: The drift dimension (:mod:`modelwatch.drift`).
Drift = Literal["stable", "drifted", "no_reference", "not_judged"]
#: What a drift value is to the model: what it sees, what it answers, or neither (the service's own columns).
DriftRole = Literal["input", "output", ""]
#: What the evidence test of one resource concluded (see :func:`modelwatch.evaluate.test_resources`).
Outcome = Literal["explains", "no_samples", "never_saturated", "low_coverage", "no_contrast", "not_significant",
                  "small_effect"]  # fmt: skip


@dataclass
class ResourceEvidence:
    """The evidence test of one resource with a saturation threshold, for one model in one window.

    ``a``/``b``: slow/normal predictions at saturation; ``c``/``d``: slow/normal ones with a sample below
    the threshold; plus those without a real sample. ``p_adjusted`` is the one-sided Fisher p-value after
    Holm's correction over the model's tested resources.
    """

    resource: str
    threshold: float
    unit: str
    outcome: Outcome
    n_slow_saturated: int
    n_normal_saturated: int
    n_slow_unsaturated: int
    n_normal_unsaturated: int
    n_slow_unsampled: int
    n_normal_unsampled: int
    coverage: float | None
    slow_share_saturated: float | None
    slow_share_unsaturated: float | None
    relative_risk: float | None
    p_value: float | None
    p_adjusted: float | None
    slow_saturated_share: float | None
    normal_saturated_share: float | None
    lift: float | None
    spearman: float | None
    slow_value_median: float | None
    slow_value_max: float | None
    test: str = TEST_NAME
    explanation: str = ""

    @property
    def n_saturated(self) -> int:
        """Sampled predictions at or above the threshold."""
        return self.n_slow_saturated + self.n_normal_saturated

    @property
    def n_unsaturated(self) -> int:
        """Sampled predictions below the threshold."""
        return self.n_slow_unsaturated + self.n_normal_unsaturated

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ResourceEvidence:
        """The inverse of the JSON view (``"inf"`` back to infinity)."""
        return _from_dict(cls, d)


@dataclass
class QualityEvidence:
    """One quality metric of one model in one window, against its bound and its reference.

    ``worsening`` is signed so that positive is worse (a drop of accuracy, a rise of loss); ``p_adjusted``
    is the one-sided Mann-Whitney U p-value after Holm's correction over the model's tested metrics.
    """

    metric: str
    outcome: Literal["regressed", "ok", "no_labels", "no_reference"]
    n_window: int
    n_reference: int
    window_mean: float | None
    reference_mean: float | None
    worsening: float | None
    limit: float | None
    beyond_limit: bool
    p_value: float | None
    p_adjusted: float | None
    min_change: float
    test: str = ""
    explanation: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QualityEvidence:
        return _from_dict(cls, d)


@dataclass
class DriftEvidence:
    """One value's distribution in one window against the reference: the population stability index and
    the two-sample test (``p_adjusted``: Holm over the model's compared values). ``role``: what a value a
    team logs is to the model, ``input`` or ``output``; ``""`` for the service's own columns
    (``prediction_time``, ``model_version``, ...) and for values judged before roles were recorded."""

    value: str
    kind: str
    outcome: Literal["drifted", "stable", "too_few"]
    n_window: int
    n_reference: int
    psi: float | None
    statistic: float | None
    p_value: float | None
    p_adjusted: float | None
    psi_threshold: float
    test: str = ""
    explanation: str = ""
    role: DriftRole = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DriftEvidence:
        return _from_dict(cls, d)


@dataclass
class ModelVerdict:
    """The verdict for one model in one window.

    ``saturated_resources`` are the resources whose saturation explains the slowness (``outcome ==
    "explains"``), strongest first; ``rejected_resources`` the other tested ones, each with the test that
    ruled it out.
    """

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
    #: slow predictions without a real sample of any resource with a threshold (a blind spot)
    n_slow_unsampled: int = 0
    saturated_resources: list[ResourceEvidence] = field(default_factory=list)
    rejected_resources: list[ResourceEvidence] = field(default_factory=list)
    resources_without_data: list[str] = field(default_factory=list)
    #: the saturation queries whose Prometheus answers carried warnings (partial data: a remote-read,
    #: federated or store node failed), each as ``"<query>: <warning>"``; the reason says so too
    evidence_partial: list[str] = field(default_factory=list)
    incident_start: str | None = None
    incident_end: str | None = None
    #: is the model still right (:func:`modelwatch.quality.judge_quality`), and the numbers behind it
    quality: Quality = "not_judged"
    quality_reason: str = ""
    quality_metrics: list[QualityEvidence] = field(default_factory=list)
    #: the reference days the quality was judged against (canonical daily partitions found in the lake)
    reference_days: list[str] = field(default_factory=list)
    #: where a regression sits (:func:`modelwatch.quality.attribute`): infrastructure, version or data
    quality_attribution: str = ""
    #: latency and quality per model version when several serve in the window (:func:`modelwatch.quality.per_version`)
    versions: list[dict[str, Any]] = field(default_factory=list)
    #: has the distribution of what the model sees or answers shifted (:func:`modelwatch.drift.judge_drift`)
    drift: Drift = "not_judged"
    drift_reason: str = ""
    drift_values: list[DriftEvidence] = field(default_factory=list)

    def drift_headline(self) -> str:
        """What drifted, in a few words, outputs first: ``output metric_score and inputs metric_amount,
        param_channel drifted``; ``prediction_time drifted``; ``""`` when nothing did."""
        drifted = [d for d in self.drift_values if d.outcome == "drifted"]
        groups = []
        for role in ("output", "input", ""):
            names = [d.value for d in drifted if d.role == role]
            if names and role:
                groups.append(f"{role}{'s' if len(names) > 1 else ''} {', '.join(names)}")
            elif names:
                groups.append(", ".join(names))
        return " and ".join(groups) + " drifted" if groups else ""

    def to_dict(self) -> dict[str, Any]:
        """The JSON view (``_verdict.json``): NaN as null, infinity as ``"inf"``."""
        return _json_safe(asdict(self))

    def to_record(self) -> dict[str, Any]:
        """One row of the ``verdicts`` dataset: flat columns a person can query with DuckDB or Athena
        (lists joined with commas; the strongest explanation's effect size, test result and coverage),
        and ``evidence``, every tested resource as JSON, so :meth:`from_record` restores the verdict."""
        top = self.saturated_resources[0] if self.saturated_resources else None
        evidence = {"saturated": [asdict(e) for e in self.saturated_resources],
                    "rejected": [asdict(e) for e in self.rejected_resources],
                    "quality": [asdict(q) for q in self.quality_metrics],
                    "reference_days": self.reference_days, "versions": self.versions,
                    "drift": [asdict(d) for d in self.drift_values], "partial": self.evidence_partial}  # fmt: skip
        return {
            "model": self.model, "verdict": self.verdict, "reason": self.reason,
            "window_start": self.window_start, "window_end": self.window_end,
            "model_versions": ",".join(self.model_versions), "n_predictions": self.n_predictions,
            "n_slow": self.n_slow, "slow_share": self.slow_share, "slow_threshold_seconds": self.slow_threshold_seconds,
            "slow_instances": ",".join(self.slow_instances), "n_slow_unsampled": self.n_slow_unsampled,
            "saturated_resources": ",".join(e.resource for e in self.saturated_resources),
            "relative_risk": top.relative_risk if top else None, "p_value": top.p_adjusted if top else None,
            "coverage": top.coverage if top else None,
            "resources_without_data": ",".join(self.resources_without_data),
            "evidence_partial": "; ".join(self.evidence_partial),
            "incident_start": self.incident_start, "incident_end": self.incident_end,
            "quality": self.quality, "quality_reason": self.quality_reason,
            "quality_attribution": self.quality_attribution, "drift": self.drift, "drift_reason": self.drift_reason,
            "evidence": json.dumps(_json_safe(evidence), sort_keys=True, allow_nan=False),
        }  # fmt: skip

    @classmethod
    def from_record(cls, row: dict[str, Any]) -> ModelVerdict:
        """The verdict a :meth:`to_record` row holds."""
        evidence = json.loads(row["evidence"])

        def names(value: Any) -> list[str]:
            return [s for s in str(value or "").split(",") if s]

        return cls(
            model=row["model"], verdict=row["verdict"], reason=row["reason"], window_start=row["window_start"],
            window_end=row["window_end"], model_versions=names(row["model_versions"]),
            n_predictions=int(row["n_predictions"]), n_slow=int(row["n_slow"]), slow_share=float(row["slow_share"]),
            slow_threshold_seconds=float(row["slow_threshold_seconds"]), slow_instances=names(row["slow_instances"]),
            n_slow_unsampled=int(row["n_slow_unsampled"]),
            saturated_resources=[ResourceEvidence.from_dict(e) for e in evidence["saturated"]],
            rejected_resources=[ResourceEvidence.from_dict(e) for e in evidence["rejected"]],
            resources_without_data=names(row["resources_without_data"]),
            evidence_partial=list(evidence.get("partial", [])),
            incident_start=_none_if_missing(row["incident_start"]), incident_end=_none_if_missing(row["incident_end"]),
            quality=row["quality"], quality_reason=row["quality_reason"],
            quality_metrics=[QualityEvidence.from_dict(q) for q in evidence.get("quality", [])],
            reference_days=list(evidence.get("reference_days", [])),
            quality_attribution=row["quality_attribution"], versions=list(evidence.get("versions", [])),
            drift=row["drift"], drift_reason=row["drift_reason"],
            drift_values=[DriftEvidence.from_dict(d) for d in evidence.get("drift", [])],
        )  # fmt: skip


def verdicts_frame(verdicts: list[ModelVerdict]) -> pd.DataFrame:
    """The verdicts as rows of the ``verdicts`` dataset."""
    import pandas as pd

    return pd.DataFrame([v.to_record() for v in verdicts], columns=list(VERDICT_COLUMNS))


def drift_frame(verdicts: list[ModelVerdict]) -> pd.DataFrame:
    """The verdicts' drift statistics as rows of the ``drift`` dataset: one per model and value."""
    import pandas as pd

    rows = [{"model": v.model, "window_start": v.window_start, "window_end": v.window_end,
             **{k: getattr(d, k) for k in DRIFT_COLUMNS if hasattr(d, k)}}
            for v in verdicts for d in v.drift_values]  # fmt: skip
    return pd.DataFrame(rows, columns=list(DRIFT_COLUMNS))


def verdicts_from_frame(frame: pd.DataFrame) -> list[ModelVerdict]:
    """The verdicts of a ``verdicts`` partition, in its row order."""
    return [ModelVerdict.from_record(row) for row in frame.to_dict("records")]


def _none_if_missing(x: Any) -> Any:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def _from_dict(cls: Any, d: dict[str, Any]) -> Any:
    """An evidence dataclass from its JSON view: missing keys take their default, ``"inf"`` is infinity."""
    return cls(**{f.name: _from_json(d[f.name]) if f.name in d else f.default for f in fields(cls)})


def _from_json(x: Any) -> Any:
    return float(x) if x in ("inf", "-inf") else x


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
