"""Alertmanager payloads from verdicts, the decision whether a run may page, and an alert's lifecycle.

Alert identity in Alertmanager is its label set, so labels hold only stable facts (alert name, model,
severity, the saturated resources, the DAG that raised it and its scope): posting the same verdict again
updates the same alert and pages no one twice. Everything that varies (values, links, window) goes into
annotations. The ``dag`` and ``scope`` labels keep the daily and the hourly DAG, and scheduled windows and
ad-hoc runs, from updating or resolving each other's alerts: a healthy hour never ends the day's page.

The lifecycle: a verdict that pages fires its alert (:func:`build_alerts`); an incident that carries on
from the previous window stays one alert listing both windows (:func:`continue_incidents`); an alert whose
model a later run judges otherwise is resolved (:func:`resolutions`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from modelwatch.text import fmt_pct, fmt_value

if TYPE_CHECKING:
    from collections.abc import Mapping

    from modelwatch.config import AlertingConfig
    from modelwatch.verdict import ModelVerdict

SOURCE_LABEL = "modelwatch"
#: The labels naming who raised an alert: the DAG id, and :data:`CANONICAL` or :data:`ADHOC` (a trigger-form
#: window, a model subset or a dry run: see :mod:`modelwatch.window`).
DAG_LABEL, SCOPE_LABEL = "dag", "scope"
CANONICAL, ADHOC = "canonical", "adhoc"
#: Annotations the lifecycle reads back: the window an alert was raised for, every window its incident
#: spans, and when the incident began.
WINDOW_START, WINDOW_END, WINDOWS, INCIDENT_START = "window_start", "window_end", "windows", "incident_start"


@dataclass(frozen=True)
class PagingDecision:
    """Whether a run talks to Alertmanager (posts its alerts and resolves ended ones), and why (recorded in
    the verdict document)."""

    post: bool
    reason: str


def paging_decision(
    verdicts: list[ModelVerdict],
    cfg: AlertingConfig,
    *,
    run_type: str,
    dry_run: bool,
    page_on_backfill: bool,
    quality_only: bool = False,
) -> PagingDecision:
    """Decide whether this run posts to Alertmanager.

    A run that may page posts even when nothing pages now: a model it paged for earlier and now judges
    otherwise must have that alert resolved (:func:`resolutions`).

    :param run_type: the DAG run's type (``scheduled``, ``manual``, ``backfill``, ...).
    :param quality_only: a re-judging of quality (labels that arrived late, :func:`quality_alerts_only`): only
        quality alerts are posted and resolved.
    """
    paged = pages(verdicts, cfg)
    if quality_only:
        paged = [p for p in paged if p[1] == QUALITY_KIND]
    paging = ", ".join(f"{v.model} ({kind})" for v, kind, *_ in paged)
    if quality_only and not dry_run and run_type != "backfill":
        return PagingDecision(True, f"quality only: paging for {paging}" if paging else
                              "quality only: nothing pages; resolving quality alerts of models judged ok")  # fmt: skip
    if dry_run:
        return PagingDecision(
            False, f"dry run: would page for {paging}" if paging else "dry run: nothing would page"
        )
    if run_type == "backfill" and not page_on_backfill:
        if not paging:
            return PagingDecision(False, "backfill run: nothing would page")
        return PagingDecision(False, f"backfill run: not paging for {paging} (set page_on_backfill)")
    if paging:
        return PagingDecision(True, f"paging for {paging}")
    judged = ", ".join(v.model for v in verdicts) or "no model"
    return PagingDecision(True, f"nothing pages; resolving any modelwatch alert still firing for {judged}")


#: The kinds of page of a quality regression and a drift (the latency kinds are the verdicts' names).
QUALITY_KIND, DRIFT_KIND = "quality regressed", "drifted"


def pages(verdicts: list[ModelVerdict], cfg: AlertingConfig) -> list[tuple[ModelVerdict, str, str, str]]:
    """What pages: ``(verdict, kind, alertname, severity)`` for every latency verdict that pages (``degraded``
    always, ``no_data`` and ``slow_unexplained`` as configured), every regressed quality and every drift
    (each if it pages)."""
    rules = cfg.paging_rules()
    out = [(v, v.verdict, *rules[v.verdict]) for v in verdicts if v.verdict in rules]
    if cfg.quality.page:
        out += [(v, QUALITY_KIND, cfg.quality.alertname, cfg.quality.severity) for v in verdicts
                if v.quality == "regressed"]  # fmt: skip
    if cfg.drift.page:
        out += [(v, DRIFT_KIND, cfg.drift.alertname, cfg.drift.severity) for v in verdicts if v.drift == "drifted"]
    return out


def judged_models(verdicts: list[ModelVerdict], cfg: AlertingConfig) -> dict[str, list[str]]:
    """alertname -> the models this run judged for it, whose earlier alerts it may resolve. Only evidence
    ends an incident: for the latency alerts the models with data (not ``no_data``: a model that went
    silent pages as missing, and its degradation is not over for all we know); for the quality alert those
    whose quality was judged (``ok`` or ``regressed``: a window without labels says nothing either)."""
    seen = [v.model for v in verdicts if v.verdict != "no_data"]
    judged = {name: seen for name in (cfg.alertname, cfg.no_data.alertname, cfg.slow_unexplained.alertname)}
    judged[cfg.quality.alertname] = [v.model for v in verdicts if v.quality in ("ok", "regressed")]
    judged[cfg.drift.alertname] = [v.model for v in verdicts if v.drift in ("stable", "drifted")]
    return judged


def quality_alerts_only(
    alerts: list[dict[str, Any]], judged: dict[str, list[str]], cfg: AlertingConfig
) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    """What a quality-only run (a re-judging of an earlier window once its labels arrived) posts and may
    resolve: its quality alerts only. The latency alerts of that window were the business of its own run;
    they stay in the payload document, and are neither posted again nor resolved."""
    name = cfg.quality.alertname
    return [a for a in alerts if a["labels"]["alertname"] == name], {name: judged.get(name, [])}


def build_alerts(
    verdicts: list[ModelVerdict], cfg: AlertingConfig, *, run_url: str, partition_url: str,
    reports: Mapping[str, str] | None = None, dag_id: str = "", scope: str = CANONICAL,
) -> list[dict[str, Any]]:
    """One Alertmanager v2 alert per model whose verdict pages (``alerting`` of thresholds.yaml: ``degraded``
    always, ``no_data`` and ``slow_unexplained`` as configured), under that verdict's alert name and
    severity. ``startsAt`` comes from the incident; ``endsAt`` is set when posting (:func:`stamp_for_posting`).
    ``reports``: model -> the address of its report page (annotation ``report``); ``dag_id`` and ``scope``
    (labels ``dag``, ``scope``): who raises it, so only runs of that DAG and scope update or resolve it."""
    alerts = []
    for v, kind, alertname, severity in pages(verdicts, cfg):
        labels = {"alertname": alertname, "model": v.model, "severity": severity, "source": SOURCE_LABEL,
                  DAG_LABEL: dag_id, SCOPE_LABEL: scope}  # fmt: skip
        # a drift's summary says what drifted, the model's outputs or its inputs (the alert name stays
        # ModelInputsDrifted for the routes and silences written for it); its description has the numbers
        headline = v.drift_headline() if kind == DRIFT_KIND else ""
        annotations = {
            "summary": f"{v.model}: {headline or _reason(v, kind)}",
            "verdict": kind,
            "window": f"{v.window_start} to {v.window_end}",
            WINDOW_START: v.window_start,
            WINDOW_END: v.window_end,
            WINDOWS: f"{v.window_start} to {v.window_end}",
            "model_versions": ",".join(v.model_versions),
            "partition": partition_url,
            "airflow_run": run_url,
        }
        if reports and v.model in reports:
            annotations["report"] = reports[v.model]
        if kind in (QUALITY_KIND, DRIFT_KIND):
            annotations["description"] = f"{kind}: {_reason(v, kind)}"
            annotations["reference_days"] = ",".join(v.reference_days)
        elif kind == "degraded":
            evidence = v.saturated_resources
            labels["resources"] = ",".join(sorted(e.resource for e in evidence))
            annotations["description"] = _degraded_description(v)
            annotations["coverage"] = ", ".join(f"{e.resource} {fmt_pct(e.coverage)}" for e in evidence)
            annotations["relative_risk"] = ", ".join(
                f"{e.resource} {fmt_value(e.relative_risk)}" for e in evidence
            )
        else:
            annotations["description"] = v.reason
        if v.incident_start is not None and kind not in (QUALITY_KIND, DRIFT_KIND):
            annotations[INCIDENT_START] = str(v.incident_start)
            annotations["incident_end"] = str(v.incident_end)
        alerts.append({
            "labels": labels,
            "annotations": annotations,
            "startsAt": (v.incident_start if kind not in (QUALITY_KIND, DRIFT_KIND) else None) or v.window_start,
            "generatorURL": run_url,
        })  # fmt: skip
    return alerts


def _reason(v: ModelVerdict, kind: str) -> str:
    return {QUALITY_KIND: v.quality_reason, DRIFT_KIND: v.drift_reason}.get(kind, v.reason)


def _degraded_description(v: ModelVerdict) -> str:
    lines = [
        f"{e.resource}: median {fmt_value(e.slow_value_median)}, max {fmt_value(e.slow_value_max)} {e.unit} at "
        f"slow predictions (threshold {fmt_value(e.threshold)}); slow at {fmt_pct(e.slow_share_saturated)} of "
        f"{e.n_saturated} predictions at saturation against {fmt_pct(e.slow_share_unsaturated)} of "
        f"{e.n_unsaturated} below it (relative risk {fmt_value(e.relative_risk)}, p={fmt_value(e.p_adjusted)}, "
        f"{e.test}, Holm-adjusted); coverage {fmt_pct(e.coverage)} of slow predictions sampled"
        for e in v.saturated_resources
    ]
    if v.n_slow_unsampled:
        lines.append(f"{v.n_slow_unsampled} slow prediction(s) had no real resource sample.")
    return "\n".join([
        f"{v.n_slow} of {v.n_predictions} predictions took longer than {fmt_value(v.slow_threshold_seconds)} s on "
        f"{', '.join(v.slow_instances)} between {v.incident_start} and {v.incident_end}.",
        *lines,
    ])  # fmt: skip


def continue_incidents(
    alerts: list[dict[str, Any]], previous: list[dict[str, Any]], max_gap: timedelta
) -> list[dict[str, Any]]:
    """Carry an incident over from the previous window: an alert whose incident starts less than
    ``max_gap`` after the same alert (same labels) of the previous window ended is that alert, continued.
    It keeps the earlier ``startsAt`` and ``incident_start`` and lists every window it spans in ``windows``,
    so an incident across midnight is one alert and its annotations cover both days.

    :param alerts: this window's alerts (:func:`build_alerts`).
    :param previous: the alerts the previous window's run stored (its payload document), or ``[]``.
    :param max_gap: ``alerting.incident_gap``.
    """
    earlier = {_identity(a["labels"]): a for a in previous}
    out = []
    for alert in alerts:
        before = earlier.get(_identity(alert["labels"]))
        notes = alert["annotations"]
        if before is not None and _continues(before["annotations"], notes, max_gap):
            old = before["annotations"]
            notes = {
                **notes,
                WINDOWS: "; ".join(dict.fromkeys([*old[WINDOWS].split("; "), *notes[WINDOWS].split("; ")])),
                INCIDENT_START: old[INCIDENT_START],
            }
            alert = {
                **alert,
                "annotations": notes,
                "startsAt": min(before["startsAt"], alert["startsAt"], key=_instant),
            }
        out.append(alert)
    return out


def _continues(before: dict[str, str], now: dict[str, str], max_gap: timedelta) -> bool:
    if not before.get("incident_end") or not now.get(INCIDENT_START) or WINDOWS not in before:
        return False  # no_data has no incident times: each window's silence is judged on its own
    gap = _instant(now[INCIDENT_START]) - _instant(before["incident_end"])
    return timedelta(0) <= gap < max_gap


def resolutions(
    alerts: list[dict[str, Any]],
    active: list[dict[str, Any]],
    *,
    judged: dict[str, list[str]],
    window_end: str,
    resolved_at: datetime,
    dag_id: str = "",
    scope: str = CANONICAL,
) -> list[dict[str, Any]]:
    """The alerts this run ends: every alert Alertmanager holds for a model this run judged, under one of
    modelwatch's alert names, raised by this run's DAG in this run's scope (labels ``dag``, ``scope``: an
    hourly or a model-subset run never ends the daily DAG's page), that this run does not post (the model is healthy again, or degraded on other
    resources: other labels), unless it was raised for a later window than this run's (a re-run of an old
    day never ends a current incident). Each comes back with ``endsAt`` = ``resolved_at``, which resolves it
    on arrival, so the receivers get the resolved notification.

    :param alerts: this run's alerts (:func:`build_alerts`).
    :param active: ``GET /api/v2/alerts`` (filtered to ``source="modelwatch"``).
    :param judged: alertname -> the models this run judged for it (:func:`judged_models`).
    :param window_end: the end of this run's window (ISO 8601).
    """
    posting = {_identity(a["labels"]) for a in alerts}
    end = _instant(window_end)
    ended = []
    for a in active:
        labels = a.get("labels") or {}
        if labels.get("source") != SOURCE_LABEL or labels.get("model") not in judged.get(labels.get("alertname"), ()):
            continue
        if labels.get(DAG_LABEL) != dag_id or labels.get(SCOPE_LABEL, CANONICAL) != scope:
            continue
        if _identity(labels) in posting:
            continue
        raised_for = (a.get("annotations") or {}).get(WINDOW_END)
        if raised_for and _instant(raised_for) > end:
            continue
        ended.append({
            "labels": labels, "annotations": a.get("annotations") or {},
            "startsAt": a["startsAt"], "endsAt": max(resolved_at.isoformat(), a["startsAt"], key=_instant),
            "generatorURL": a.get("generatorURL", ""),
        })  # fmt: skip
    return ended


def _identity(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    # Alertmanager's identity of an alert: its label set
    return tuple(sorted(labels.items()))


def _instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def stamp_for_posting(
    alerts: list[dict[str, Any]], posted_at: datetime, active_for: timedelta
) -> list[dict[str, Any]]:
    """Set ``endsAt`` to ``posted_at + active_for`` so the alert fires (a past endsAt resolves it on arrival)."""
    ends = (posted_at + active_for).isoformat()
    return [{**a, "endsAt": max(ends, a["startsAt"], key=_instant)} for a in alerts]


def run_url(base_url: str, dag_id: str, run_id: str) -> str:
    """The Airflow UI page of a DAG run (Airflow 3 route)."""
    return f"{base_url.rstrip('/')}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"
