"""Alertmanager payloads from verdicts, and the decision whether a run may page.

Alert identity in Alertmanager is its label set, so labels hold only stable facts (alert name, model,
severity, the saturated resources): posting the same verdict again updates the same alert and pages no
one twice. Everything that varies (values, links, window) goes into annotations.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from modelwatch.text import fmt_pct, fmt_value

if TYPE_CHECKING:
    from modelwatch.config import AlertingConfig
    from modelwatch.verdict import ModelVerdict

SOURCE_LABEL = "modelwatch"


@dataclass(frozen=True)
class PagingDecision:
    """Whether a run posts its alerts, and why (recorded in the verdict document)."""

    post: bool
    reason: str


def paging_decision(
    verdicts: list[ModelVerdict], *, run_type: str, dry_run: bool, page_on_backfill: bool
) -> PagingDecision:
    """Decide whether this run posts to Alertmanager.

    :param run_type: the DAG run's type (``scheduled``, ``manual``, ``backfill``, ...).
    """
    degraded = [v.model for v in verdicts if v.verdict == "degraded"]
    if not degraded:
        return PagingDecision(False, "no model is degraded")
    if dry_run:
        return PagingDecision(False, f"dry run: would page for {', '.join(degraded)}")
    if run_type == "backfill" and not page_on_backfill:
        return PagingDecision(False, f"backfill run: not paging for {', '.join(degraded)} (set page_on_backfill)")
    return PagingDecision(True, f"paging for degraded {', '.join(degraded)}")


def build_alerts(
    verdicts: list[ModelVerdict], cfg: AlertingConfig, *, run_url: str, partition_url: str
) -> list[dict[str, Any]]:
    """One Alertmanager v2 alert per degraded model (``startsAt`` from the incident; ``endsAt`` is set when
    posting, see :func:`stamp_for_posting`)."""
    alerts = []
    for v in verdicts:
        if v.verdict != "degraded":
            continue
        evidence = v.saturated_resources
        resources = sorted(e.resource for e in evidence)
        lines = [
            f"{e.resource}: median {fmt_value(e.slow_value_median)}, max {fmt_value(e.slow_value_max)} {e.unit} at "
            f"slow predictions (threshold {fmt_value(e.threshold)}); slow at {fmt_pct(e.slow_share_saturated)} of "
            f"{e.n_saturated} predictions at saturation against {fmt_pct(e.slow_share_unsaturated)} of "
            f"{e.n_unsaturated} below it (relative risk {fmt_value(e.relative_risk)}, p={fmt_value(e.p_adjusted)}, "
            f"{e.test}, Holm-adjusted); coverage {fmt_pct(e.coverage)} of slow predictions sampled"
            for e in evidence
        ]
        if v.n_slow_unsampled:
            lines.append(f"{v.n_slow_unsampled} slow prediction(s) had no real resource sample.")
        alerts.append({
            "labels": {
                "alertname": cfg.alertname,
                "model": v.model,
                "severity": cfg.severity,
                "resources": ",".join(resources),
                "source": SOURCE_LABEL,
            },
            "annotations": {
                "summary": f"{v.model}: {v.reason}",
                "description": "\n".join([
                    f"{v.n_slow} of {v.n_predictions} predictions took longer than "
                    f"{fmt_value(v.slow_threshold_seconds)} s on {', '.join(v.slow_instances)} "
                    f"between {v.incident_start} and {v.incident_end}.",
                    *lines,
                ]),
                "window": f"{v.window_start} to {v.window_end}",
                "incident_start": str(v.incident_start),
                "incident_end": str(v.incident_end),
                "model_versions": ",".join(v.model_versions),
                "coverage": ", ".join(f"{e.resource} {fmt_pct(e.coverage)}" for e in evidence),
                "relative_risk": ", ".join(f"{e.resource} {fmt_value(e.relative_risk)}" for e in evidence),
                "partition": partition_url,
                "airflow_run": run_url,
            },
            "startsAt": v.incident_start or v.window_start,
            "generatorURL": run_url,
        })  # fmt: skip
    return alerts


def stamp_for_posting(alerts: list[dict[str, Any]], posted_at: datetime, active_for: timedelta) -> list[dict[str, Any]]:
    """Set ``endsAt`` to ``posted_at + active_for`` so the alert fires (a past endsAt resolves it on arrival)."""
    ends = (posted_at + active_for).isoformat()
    return [{**a, "endsAt": max(ends, a["startsAt"])} for a in alerts]


def run_url(base_url: str, dag_id: str, run_id: str) -> str:
    """The Airflow UI page of a DAG run (Airflow 3 route)."""
    return f"{base_url.rstrip('/')}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"
