"""The stack's Alertmanager routes and inhibits modelwatch's three alert kinds as configured.

devstack's ``alertmanager_config`` (and compose/alertmanager.yml, its docker-compose twin) holds an
inhibition rule: a firing ``ModelPredictionsDegraded`` of a model suppresses that model's
``ModelPredictionsSlowUnexplained``, and nothing is inhibited by ``ModelPredictionsMissing``, which has a
route of its own grouping by alert name only. These tests post the real alert names to the real
Alertmanager 0.25 of the session stack, each for a model name of its own, and resolve what they posted.

The alerts go through :class:`~modelwatch.hooks.alertmanager.AlertmanagerHook` on the stack's connection
(the ``conns`` fixture), as the DAG posts them.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from polling import wait_until

from modelwatch.hooks import AlertmanagerHook

DEGRADED = "ModelPredictionsDegraded"
MISSING = "ModelPredictionsMissing"
UNEXPLAINED = "ModelPredictionsSlowUnexplained"
FAST = {"backoff_base_seconds": 0.05, "backoff_max_seconds": 0.2}


def _model() -> str:
    return f"routes-{uuid.uuid4().hex[:10]}"


def _alert(alertname: str, model: str, severity: str, **labels: str) -> dict[str, Any]:
    now = datetime.now(UTC)  # Alertmanager judges alerts by its own clock
    return {
        "labels": {
            "alertname": alertname,
            "model": model,
            "severity": severity,
            "source": "modelwatch",
            **labels,
        },
        "annotations": {"summary": f"{model}: posted by test_alertmanager_routes.py"},
        "startsAt": (now - timedelta(minutes=1)).isoformat(),
        "endsAt": (now + timedelta(minutes=10)).isoformat(),
    }


def _resolved(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same alerts with ``endsAt`` in the past: Alertmanager resolves them on arrival."""
    ended = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    return [{**a, "endsAt": ended} for a in alerts]


def _held(hook: AlertmanagerHook, model: str) -> dict[tuple[str, str], dict[str, Any]]:
    """(alertname, source) -> the alert Alertmanager holds for ``model`` (active, suppressed or not)."""
    return {(a["labels"]["alertname"], a["labels"]["source"]): a for a in hook.get_alerts({"model": model})}


def _delivered(stack: Any, model: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(notification, alert) for every alert of ``model`` the webhook receiver got, oldest first."""
    return [
        (doc, a)
        for doc in stack.webhook_notifications()
        for a in doc.get("alerts", [])
        if a["labels"].get("model") == model
    ]


def _kinds(
    pairs: list[tuple[dict[str, Any], dict[str, Any]]], status: str = "firing"
) -> set[tuple[str, str]]:
    return {(a["labels"]["alertname"], a["labels"]["source"]) for _, a in pairs if a["status"] == status}


@pytest.fixture
def hook(conns: Any) -> AlertmanagerHook:
    return AlertmanagerHook(**FAST)


def test_degraded_inhibits_slow_unexplained_of_the_same_model(conns: Any, hook: AlertmanagerHook) -> None:
    model, other = _model(), _model()
    degraded = _alert(DEGRADED, model, "warning", resources="cpu")
    unexplained = _alert(UNEXPLAINED, model, "info")
    # Same labels but `source`: in the same group as `unexplained` (group_by alertname, model), yet not a
    # target of the rule. Its delivery is the positive signal that the group was flushed with the inhibited
    # alert in it, so the inhibited alert's absence from the webhook is then a fact, not a wait. (These
    # alerts started a minute ago, longer than group_wait: Alertmanager flushes their new groups at once;
    # the probe, posted after the target, is in whichever flush first sends it.)
    probe = _alert(UNEXPLAINED, model, "info", source="routes-test-probe")
    # Another model's unexplained alert: the rule inhibits only on an equal `model`.
    bystander = _alert(UNEXPLAINED, other, "info")
    posted = [degraded, unexplained, probe, bystander]
    try:
        hook.post_alerts([degraded])
        wait_until(lambda: _kinds(_delivered(conns, model)), timeout=10,
                   what=f"the webhook receiver to get {DEGRADED} of {model}")  # fmt: skip
        hook.post_alerts([unexplained, probe, bystander])

        held = wait_until(lambda: _held(hook, model), until=lambda h: len(h) == 3, timeout=10,
                          what=f"Alertmanager to hold the three alerts of {model}")  # fmt: skip
        source = held[(DEGRADED, "modelwatch")]
        target = held[(UNEXPLAINED, "modelwatch")]
        assert source["status"]["state"] == "active" and not source["status"]["inhibitedBy"], source["status"]
        assert target["status"]["state"] == "suppressed", target["status"]
        assert target["status"]["inhibitedBy"] == [source["fingerprint"]], target["status"]
        assert held[(UNEXPLAINED, "routes-test-probe")]["status"]["state"] == "active"
        assert _held(hook, other)[(UNEXPLAINED, "modelwatch")]["status"]["state"] == "active"

        got = wait_until(lambda: _delivered(conns, model),
                         until=lambda pairs: (UNEXPLAINED, "routes-test-probe") in _kinds(pairs), timeout=15,
                         what=f"the webhook receiver to get the probe of {model}'s {UNEXPLAINED} group")  # fmt: skip
        # Of modelwatch's alerts for the model, only the degraded one reached the receiver.
        sent = {
            (a["labels"]["alertname"], a["status"]) for _, a in got if a["labels"]["source"] == "modelwatch"
        }
        assert sent == {(DEGRADED, "firing")}, got
        probe_docs = [doc for doc, a in got if a["labels"]["source"] == "routes-test-probe"]
        assert all(doc["groupLabels"] == {"alertname": UNEXPLAINED, "model": model} for doc in probe_docs)
        wait_until(lambda: _kinds(_delivered(conns, other)), until=lambda k: (UNEXPLAINED, "modelwatch") in k,
                   timeout=15, what=f"the webhook receiver to get {UNEXPLAINED} of {other} (not inhibited)")  # fmt: skip

        # Inhibition only holds while the source fires: once it resolves, the held alert comes through.
        hook.post_alerts(_resolved([degraded]))
        wait_until(lambda: _kinds(_delivered(conns, model)), until=lambda k: (UNEXPLAINED, "modelwatch") in k,
                   timeout=15, what=f"{model}'s {UNEXPLAINED} to reach the webhook once {DEGRADED} resolved")  # fmt: skip
    finally:
        hook.post_alerts(_resolved(posted))


def test_missing_inhibits_nothing_and_is_grouped_by_alertname(conns: Any, hook: AlertmanagerHook) -> None:
    model, second = _model(), _model()
    missing = _alert(MISSING, model, "warning")
    degraded = _alert(DEGRADED, model, "warning", resources="memory")
    # A second model without data: the Missing route groups by alertname only, so both come in one group.
    missing_too = _alert(MISSING, second, "warning")
    posted = [missing, degraded, missing_too]
    try:
        hook.post_alerts(posted)
        held = wait_until(lambda: _held(hook, model), until=lambda h: len(h) == 2, timeout=10,
                          what=f"Alertmanager to hold the two alerts of {model}")  # fmt: skip
        for kind in (MISSING, DEGRADED):
            status = held[(kind, "modelwatch")]["status"]
            assert status["state"] == "active" and not status["inhibitedBy"] and not status["silencedBy"], (
                kind,
                status,
            )

        got = wait_until(lambda: _delivered(conns, model),
                         until=lambda pairs: _kinds(pairs) == {(MISSING, "modelwatch"), (DEGRADED, "modelwatch")},
                         timeout=15, what=f"the webhook receiver to get {MISSING} and {DEGRADED} of {model}")  # fmt: skip
        for doc, alert in got:
            if alert["labels"]["alertname"] == DEGRADED:
                assert doc["groupLabels"] == {"alertname": DEGRADED, "model": model}, doc["groupLabels"]
            else:
                # One notification per alert name: no `model` among the group labels.
                assert doc["groupLabels"] == {"alertname": MISSING}, doc["groupLabels"]
        # A group's notification lists all its alerts: both models without data show up in one of them.
        wait_until(
            lambda: [
                doc
                for doc in conns.webhook_notifications()
                if doc.get("groupLabels") == {"alertname": MISSING}
                and {model, second} <= {a["labels"].get("model") for a in doc.get("alerts", [])}
            ],
            timeout=15,
            what=f"one {MISSING} notification naming both {model} and {second}",
        )

        # The email receiver gets both kinds too (the mail lists each alert's labels).
        mails = wait_until(
            lambda: [m for m in conns.mail() if model in m["body"]],
            until=lambda ms: (
                any(DEGRADED in m["subject"] for m in ms) and any(MISSING in m["subject"] for m in ms)
            ),
            timeout=15,
            what=f"mails about {DEGRADED} and {MISSING} of {model} in the SMTP sink",
        )
        assert all(m["to"] == ["oncall@modelwatch.local"] for m in mails)
    finally:
        hook.post_alerts(_resolved(posted))
