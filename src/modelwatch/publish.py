"""Verdicts as Prometheus series: each canonical run publishes its models' verdicts and key numbers, so
Grafana panels and Prometheus rules can use them (docs/metrics-and-dashboards.md, "Verdicts as metrics").

The series names are defined here once; the Grafana dashboard (:mod:`modelwatch.dashboard`) and the
Pushgateway publisher read them from here. Every series carries ``dag`` (the DAG variant, so the daily and
hourly runs do not overwrite each other) and, except the window's end, ``model``.

The rest of the module is pure (standard library only, no Airflow): :func:`verdict_series` writes the text
exposition of one run, :func:`group_path` the Pushgateway group it goes to (job ``modelwatch``, grouping
label ``dag``), :func:`should_publish` the ordering rule, and :func:`publish_verdicts` ties them to a
:class:`~modelwatch.hooks.pushgateway.PushgatewayHook`. Verdicts and the hook are read through the small
protocols below, so this foundation module imports nothing of modelwatch.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import quote

#: 1 for the model's verdict of the newest window published, with labels ``verdict``, ``quality`` and
#: ``drift`` (an info-style series: one per model, its labels say the verdict)
VERDICT_INFO = "modelwatch_verdict_info"
#: 1 when the model is ``degraded`` (slow predictions that saturated resources explain), else 0
DEGRADED = "modelwatch_model_degraded"
#: share of the model's judged predictions in the window that were slow (0..1)
SLOW_SHARE = "modelwatch_slow_share"
#: predictions of the model in the window
PREDICTIONS = "modelwatch_predictions"
#: 1 when the model's quality ``regressed``, else 0
QUALITY_REGRESSED = "modelwatch_quality_regressed"
#: population stability index of each drift value (label ``value``), where compared
DRIFT_PSI = "modelwatch_drift_psi"
#: end of the newest window published, Unix seconds (label ``dag`` only)
WINDOW_END = "modelwatch_window_end_timestamp_seconds"

#: The Pushgateway job of every modelwatch group (``publish.job`` in thresholds.yaml may rename it).
JOB = "modelwatch"
#: The grouping label: one group per DAG variant (daily, hourly), so their runs never replace each other.
GROUP_LABEL = "dag"

#: Every family in exposition order, with its HELP text (the same text from every DAG: the Pushgateway
#: serves one family per name across groups).
FAMILIES: dict[str, str] = {
    WINDOW_END: "End of the newest window modelwatch published for this DAG, Unix seconds.",
    VERDICT_INFO: "1 per model; labels verdict, quality and drift say the model's verdict of the window.",
    DEGRADED: "1 when slow predictions that saturated resources explain made the model degraded, else 0.",
    QUALITY_REGRESSED: "1 when the model's quality (accuracy or loss) regressed in the window, else 0.",
    SLOW_SHARE: "Share of the model's predictions in the window that were slow (0..1).",
    PREDICTIONS: "Predictions of the model in the window.",
    DRIFT_PSI: "Population stability index of a value against the reference days (label value).",
}

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class _DriftValue(Protocol):
    @property
    def value(self) -> str: ...
    @property
    def psi(self) -> float | None: ...


class VerdictLike(Protocol):
    """What :func:`verdict_series` reads of a :class:`modelwatch.verdict.ModelVerdict`."""

    @property
    def model(self) -> str: ...
    @property
    def verdict(self) -> str: ...
    @property
    def quality(self) -> str: ...
    @property
    def drift(self) -> str: ...
    @property
    def n_predictions(self) -> int: ...
    @property
    def slow_share(self) -> float: ...
    @property
    def drift_values(self) -> Sequence[_DriftValue]: ...


class Gateway(Protocol):
    """What :func:`publish_verdicts` needs of :class:`modelwatch.hooks.pushgateway.PushgatewayHook`."""

    def group_url(self, job: str, grouping: Mapping[str, str]) -> str: ...
    def published_window_end(self, job: str, grouping: Mapping[str, str]) -> float | None: ...
    def push(self, job: str, grouping: Mapping[str, str], text: str) -> None: ...


def escape_label_value(value: str) -> str:
    """A label value as the text exposition writes it: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_value(value: float) -> str | None:
    """A sample value in the text exposition (``+Inf``/``-Inf``); ``None`` for NaN, which is left out."""
    number = float(value)
    if math.isnan(number):
        return None
    if math.isinf(number):
        return "+Inf" if number > 0 else "-Inf"
    return str(int(value)) if isinstance(value, int) else repr(number)


def _sample(name: str, labels: Mapping[str, str], value: float | None) -> str | None:
    text = None if value is None else format_value(value)
    if text is None:
        return None
    body = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in labels.items())
    return f"{name}{{{body}}} {text}"


def _utc(when: datetime) -> datetime:
    # a naive datetime is read as UTC, as everywhere in modelwatch
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def verdict_series(verdicts: Sequence[VerdictLike], window_end: datetime, dag_id: str) -> str:
    """The text exposition (version 0.0.4) of one run's verdicts: every family of :data:`FAMILIES` as a
    gauge, its ``# HELP``/``# TYPE`` lines once, its samples together, models sorted by name and drift
    values by value name, so the same verdicts always give the same text.

    Per model (labels ``dag``, ``model``): :data:`VERDICT_INFO` (plus ``verdict``, ``quality``, ``drift``),
    :data:`DEGRADED`, :data:`QUALITY_REGRESSED`, :data:`PREDICTIONS`, :data:`SLOW_SHARE` (left out when the
    model had no predictions: a share of nothing is not 0), :data:`DRIFT_PSI` per compared value (plus
    ``value``; left out where not compared). Once (label ``dag``): :data:`WINDOW_END`. A NaN or missing
    number is left out, never written as 0. A family without samples is left out whole.

    :param verdicts: the run's verdicts (:class:`modelwatch.verdict.ModelVerdict`).
    :param window_end: end of the judged window (naive: UTC).
    :param dag_id: the DAG variant, the ``dag`` label.
    :return: the exposition text, ending with a newline.
    """
    dag = {GROUP_LABEL: dag_id}
    samples: dict[str, list[str | None]] = {name: [] for name in FAMILIES}
    samples[WINDOW_END].append(_sample(WINDOW_END, dag, _utc(window_end).timestamp()))
    for v in sorted(verdicts, key=lambda v: v.model):
        labels = {**dag, "model": v.model}
        info = {**labels, "verdict": v.verdict, "quality": v.quality, "drift": v.drift}
        samples[VERDICT_INFO].append(_sample(VERDICT_INFO, info, 1))
        samples[DEGRADED].append(_sample(DEGRADED, labels, int(v.verdict == "degraded")))
        samples[QUALITY_REGRESSED].append(_sample(QUALITY_REGRESSED, labels, int(v.quality == "regressed")))
        samples[PREDICTIONS].append(_sample(PREDICTIONS, labels, v.n_predictions))
        samples[SLOW_SHARE].append(_sample(SLOW_SHARE, labels, v.slow_share if v.n_predictions else None))
        for d in sorted(v.drift_values, key=lambda d: d.value):
            samples[DRIFT_PSI].append(_sample(DRIFT_PSI, {**labels, "value": d.value}, d.psi))
    lines: list[str] = []
    for name, help_text in FAMILIES.items():
        present = [s for s in samples[name] if s is not None]
        if present:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", *present]
    return "\n".join(lines) + "\n"


def count_samples(text: str) -> int:
    """Sample lines of an exposition text (every line but comments and blanks)."""
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def _path_part(name: str, value: str) -> str:
    # Pushgateway: a value with "/" (or an empty one) goes base64url-encoded under "<name>@base64"
    if not value or "/" in value:
        return f"{name}@base64/{base64.urlsafe_b64encode(value.encode()).decode() or '='}"
    return f"{name}/{quote(value, safe='')}"


def group_path(job: str, grouping: Mapping[str, str]) -> str:
    """The Pushgateway path of a group: ``/metrics/job/<job>/<label>/<value>...``, labels sorted.

    Values are percent-escaped; a value holding ``/`` (or an empty one) is written ``<label>@base64/<v>``
    in base64url, the Pushgateway's encoding for it.

    :param job: the ``job`` label (not empty).
    :param grouping: the other grouping labels (names as Prometheus allows them, not ``job``).
    :raises ValueError: on an empty job or a label name Prometheus would refuse.
    """
    if not job:
        raise ValueError("the Pushgateway job must not be empty")
    parts = [_path_part("job", job)]
    for name in sorted(grouping):
        if name == "job" or not _LABEL_NAME.match(name) or name.startswith("__"):
            raise ValueError(f"{name!r} cannot be a Pushgateway grouping label")
        parts.append(_path_part(name, grouping[name]))
    return "/metrics/" + "/".join(parts)


def should_publish(current_window_end: float | None, window_end: datetime) -> bool:
    """The ordering rule: the lake is replayable, so a backfill or a re-run of an old day must not replace
    the state of a newer window.

    Publish when the gateway holds nothing for the group yet (``None``, or NaN) or when the run's window
    ends at or after the one it holds (re-running the newest window publishes it again). Only canonical
    runs publish: the caller leaves out the others (quality re-judging, threshold replays, dry runs).

    :param current_window_end: :data:`WINDOW_END` of the group in the gateway, Unix seconds, or ``None``.
    :param window_end: end of the run's window (naive: UTC).
    """
    if current_window_end is None or math.isnan(current_window_end):
        return True
    # a millisecond of slack: the gateway hands the number back through text
    return _utc(window_end).timestamp() >= current_window_end - 1e-3


def _iso(seconds: float | None) -> str | None:
    if seconds is None or math.isnan(seconds):
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def publish_verdicts(
    hook: Gateway,
    verdicts: Sequence[VerdictLike],
    window_end: datetime,
    dag_id: str,
    *,
    job: str = JOB,
) -> dict[str, Any]:
    """Read the group's published window, compare (:func:`should_publish`), and replace the group with this
    run's series (one PUT: models no longer judged disappear) or leave it alone.

    Call it from canonical runs only, with every model the run judged. Not atomic: two runs of the same
    DAG publishing at the same instant may both read the older window (the DAG's own run ordering keeps
    that away; the older one then briefly shows until the next run).

    :param hook: a :class:`~modelwatch.hooks.pushgateway.PushgatewayHook`.
    :param verdicts: the run's :class:`~modelwatch.verdict.ModelVerdict` objects.
    :param window_end: end of the judged window.
    :param dag_id: the DAG variant (grouping label ``dag``).
    :param job: the Pushgateway job (``publish.job``).
    :return: for the task's log and XCom: ``action`` (``pushed`` | ``skipped``), ``reason``, ``series``
        (samples pushed; 0 when skipped), ``models``, ``group`` (the group's URL), ``job``, ``grouping``,
        ``window_end`` and ``published_window_end`` (ISO 8601 UTC, the latter ``None`` when the gateway held
        nothing).
    :raises PushgatewayError: when the gateway answers an error (see the hook).
    :raises UpstreamUnavailable: when it cannot be reached.
    """
    grouping = {GROUP_LABEL: dag_id}
    current = hook.published_window_end(job, grouping)
    end = _utc(window_end)
    result: dict[str, Any] = {
        "group": hook.group_url(job, grouping),
        "job": job,
        "grouping": grouping,
        "window_end": end.isoformat(),
        "published_window_end": _iso(current),
        "models": sorted(v.model for v in verdicts),
    }
    if not should_publish(current, end):
        reason = (
            f"the gateway holds a newer window of {dag_id!r} (ending {_iso(current)}); this run's window "
            f"ends {end.isoformat()}: an older window never replaces a newer one"
        )
        return {**result, "action": "skipped", "reason": reason, "series": 0}
    text = verdict_series(verdicts, end, dag_id)
    hook.push(job, grouping, text)
    reason = "nothing published yet" if current is None else "this window ends at or after the published one"
    return {**result, "action": "pushed", "reason": reason, "series": count_samples(text)}
