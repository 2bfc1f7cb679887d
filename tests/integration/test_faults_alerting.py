"""Faults on the way out: Alertmanager down or answering 5xx/4xx, the same alert posted twice, SMTP down.

The alert payload is written to the lake (``alerts/dt=.../_payload.json``) before any post, so an alert
that cannot be delivered now is kept, the post is retried (by the hook, then by Airflow), and a later
try delivers it. Full ``dag.test()`` runs are used where the row is about the DAG: retries then a failed
task, the branch, the failure email.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException
from faultdag import fault_config, parse_dag, run_day, state, task_states, test_copy
from faultproxy import Fault, FaultProxy, airflow_conn
from polling import holds_for, wait_until

from devstack.stack import alertmanager_config
from modelwatch.errors import AlertmanagerError, UpstreamUnavailable
from modelwatch.hooks import AlertmanagerHook

CPU_DAY = date(2026, 3, 3)  # fraud-detector degraded (cpu): the run posts one alert
FAST = {"backoff_base_seconds": 0.05, "backoff_max_seconds": 0.2}


@pytest.fixture(scope="module")
def monitoring_dag(airflow_db: Any) -> Any:
    return parse_dag()


@pytest.fixture
def env(seeded_stack: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Any:
    for name, value in seeded_stack.airflow_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MODELWATCH_STORAGE_URL", f"file://{tmp_path}/lake")
    return seeded_stack


@pytest.fixture
def am_proxy(env: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    with FaultProxy(env.config.alertmanager_url, lifetime=150) as proxy:
        monkeypatch.setenv("AIRFLOW_CONN_ALERTMANAGER_DEFAULT", airflow_conn("alertmanager", proxy.url))
        yield proxy


def _alerts_named(stack: Any, alertname: str) -> list[dict[str, Any]]:
    """Notifications the webhook receiver got that carry an alert called ``alertname``."""
    return [n for n in stack.webhook_notifications()
            if any(a["labels"].get("alertname") == alertname for a in n.get("alerts", []))]  # fmt: skip


def _lake_docs(tmp_path: Any, day: date) -> dict[str, Any]:
    part = tmp_path / "lake" / "alerts" / f"dt={day.isoformat()}"
    return {p.name: p for p in part.iterdir()} if part.exists() else {}


def _alert(model: str, alertname: str = "ModelPredictionsDegraded", **labels: str) -> dict[str, Any]:
    now = datetime.now(UTC)  # Alertmanager judges alerts by its own clock
    return {
        "labels": {"alertname": alertname, "model": model, "severity": "warning", "source": "modelwatch", **labels},
        "annotations": {"summary": f"{model}: fault test"},
        "startsAt": (now - timedelta(minutes=5)).isoformat(),
        "endsAt": (now + timedelta(hours=1)).isoformat(),
    }


# -- Alertmanager answering 5xx: kept, retried, delivered by a later try (DAG) ------------------------------


def test_alertmanager_5xx_keeps_the_payload_and_a_task_retry_delivers_it(
    env: Any, am_proxy: FaultProxy, monitoring_dag: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    config, alertname = fault_config(tmp_path)
    monkeypatch.setenv("MODELWATCH_CONFIG", str(config))
    # every attempt of post_alert's first post (the hook makes 4) gets a 503; the second try gets through
    am_proxy.add(Fault.status_code(503, '{"code":503,"message":"cluster not settled"}', times=4, match="^POST "))
    run = run_day(test_copy(monitoring_dag, retries=1), CPU_DAY)

    assert state(run) == "success"
    states = task_states(run)
    assert states["post_alert"] == ("success", 2) and states["no_alert"][0] == "skipped"
    assert am_proxy.count(status=503) == 4
    # the second try: its alert, then the read of what Alertmanager holds (nothing of this run's to resolve)
    assert [(s.method, s.status) for s in am_proxy.seen if s.action == "forwarded"] == [("POST", 200), ("GET", 200)]
    docs = _lake_docs(tmp_path, CPU_DAY)
    assert {"_payload.json", "_delivery.json"} <= set(docs)
    payload = json.loads(docs["_payload.json"].read_text())
    assert [a["labels"]["alertname"] for a in payload] == [alertname]
    # kept before the first post was attempted
    first_post = min(s.wall for s in am_proxy.seen if s.method == "POST")
    assert docs["_payload.json"].stat().st_mtime <= first_post
    assert json.loads(docs["_delivery.json"].read_text())["alerts"][0]["labels"] == payload[0]["labels"]
    notified = wait_until(lambda: _alerts_named(env, alertname), timeout=20,
                          what=f"the webhook receiver to get the {alertname} notification")  # fmt: skip
    assert len(notified) == 1, notified  # delivered once


# -- Alertmanager down through every try, SMTP down too (DAG) -----------------------------------------------


def test_alertmanager_and_smtp_down_fail_the_run_keep_the_payload_and_log_the_lost_email(
    env: Any, monitoring_dag: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    config, alertname = fault_config(tmp_path)
    monkeypatch.setenv("MODELWATCH_CONFIG", str(config))
    mails_before = len(env.mail())
    assert env.stop_service("alertmanager") and env.stop_service("smtp")
    try:
        run = run_day(test_copy(monitoring_dag, retries=1), CPU_DAY)
        out = capfd.readouterr()
    finally:
        env.start(["alertmanager", "smtp"])
    logs = out.out + out.err

    # the run's own state is what its tasks did: post_alert retried, then failed; everything else as usual
    assert state(run) == "failed"
    states = task_states(run)
    assert states["post_alert"] == ("failed", 2)
    for task in ("extract_resources", "extract_predictions", "correlate", "evaluate", "choose_alert_path"):
        assert states[task][0] == "success", states
    assert "posting 1 alert(s) to Alertmanager" in logs and env.config.alertmanager_url in logs
    # the failure email could not be sent: that is logged, and changes nothing else
    assert "Failed to send notification" in logs and "Connection refused" in logs, logs[-3000:]
    assert "SmtpNotifier" in logs
    assert len(env.mail()) == mails_before

    # the alert was never dropped: its payload waits in the lake; posting it (what clearing post_alert, or a
    # retry once Alertmanager is back, does) delivers it
    docs = _lake_docs(tmp_path, CPU_DAY)
    assert "_payload.json" in docs and "_delivery.json" not in docs
    verdict = json.loads((tmp_path / "lake" / "verdicts" / f"dt={CPU_DAY}" / "_verdict.json").read_text())
    assert verdict["alert"]["post"] is True and verdict["alert"]["payload"].endswith("alerts/dt=2026-03-03/_payload.json")
    from modelwatch.alerting import stamp_for_posting

    kept = json.loads(docs["_payload.json"].read_text())
    AlertmanagerHook(**FAST).post_alerts(stamp_for_posting(kept, datetime.now(UTC), timedelta(hours=1)))
    notified = wait_until(lambda: _alerts_named(env, alertname), timeout=20,
                          what=f"the webhook receiver to get the kept {alertname} alert")  # fmt: skip
    assert len(notified) == 1, notified
    # and mail works again: Alertmanager's email receiver reaches the restarted sink
    wait_until(lambda: env.mail()[mails_before:], timeout=20,
               what="a mail from Alertmanager's email receiver through the restarted SMTP sink")  # fmt: skip


# -- Alertmanager answering errors (hook) --------------------------------------------------------------------


def test_alertmanager_down_names_server_and_what_was_being_posted(env: Any) -> None:
    hook = AlertmanagerHook(max_attempts=2, **FAST)
    assert env.stop_service("alertmanager")
    try:
        with pytest.raises(UpstreamUnavailable) as info:
            hook.post_alerts([_alert("faults-down")])
    finally:
        env.start(["alertmanager"])
    assert info.value.attempts == 2 and hook.requests_made == 2
    assert "posting 1 alert(s) to Alertmanager" in str(info.value) and env.config.alertmanager_url in str(info.value)


def test_alertmanager_5xx_every_time_names_status_and_body(am_proxy: FaultProxy) -> None:
    am_proxy.add(Fault.status_code(500, '{"code":500,"message":"failed to store alerts"}', times=None))
    hook = AlertmanagerHook(max_attempts=3, **FAST)
    with pytest.raises(AlertmanagerError) as info:
        hook.post_alerts([_alert("faults-5xx")])
    assert info.value.status == 500 and "failed to store alerts" in str(info.value)
    assert hook.requests_made == 3 and am_proxy.url in str(info.value)
    assert not isinstance(info.value, AirflowFailException)  # Airflow retries the task later


def test_alertmanager_4xx_fails_at_once_with_its_own_message(env: Any) -> None:
    hook = AlertmanagerHook(**FAST)
    bad = _alert("faults-4xx")
    bad["endsAt"] = (datetime.now(UTC) - timedelta(hours=2)).isoformat()  # before startsAt
    with pytest.raises(AlertmanagerError) as info:
        hook.post_alerts([bad])
    assert info.value.status == 400 and "start time must be before end time" in str(info.value)
    assert hook.requests_made == 1  # a refusal is not retried, by the hook ...
    assert isinstance(info.value, AirflowFailException)  # ... nor by Airflow


def test_posting_the_same_alert_twice_pages_once(env: Any) -> None:
    from modelwatch.alerting import stamp_for_posting

    model = f"faults-dedupe-{uuid.uuid4().hex[:8]}"
    payload = [_alert(model)]
    hook = AlertmanagerHook(**FAST)
    hook.post_alerts(stamp_for_posting(payload, datetime.now(UTC), timedelta(hours=1)))

    def notified() -> list[Any]:
        return [n for n in env.webhook_notifications() if any(a["labels"].get("model") == model for a in n["alerts"])]

    first = wait_until(notified, timeout=20, what=f"the webhook receiver to get the {model} notification")
    assert len(first) == 1, first
    # a retry posts the same payload again, with a later endsAt
    hook.post_alerts(stamp_for_posting(payload, datetime.now(UTC) + timedelta(seconds=30), timedelta(hours=1)))
    # Only waiting can tell here: deduplicating, Alertmanager sends nothing and records nothing of this group
    # that the test could read (its metrics count every group's flushes). The group flushes every
    # group_interval; past one interval and a margin, a second notification would have come.
    group_interval = float(alertmanager_config(env.config)["route"]["group_interval"].removesuffix("s"))
    holds_for(notified, until=lambda got: len(got) == 1, seconds=group_interval + 2,
              what=f"a single notification for {model} after the same alert was posted again")  # fmt: skip
    assert len(hook.get_alerts({"model": model})) == 1
