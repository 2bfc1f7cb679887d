"""Verdicts as metrics against the real servers: the run's series reach the Pushgateway (1.5, Debian) and the
stack's Prometheus scrapes them back with their labels; an older window never replaces a newer one.

Connections come from ``stack.airflow_env()`` (``pushgateway_default``), as in a deployment. Each test uses
its own ``dag`` label, so the groups of the session's other tests never meet.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from polling import wait_until

from modelwatch.errors import PushgatewayRefused
from modelwatch.hooks import PushgatewayHook
from modelwatch.publish import DEGRADED, JOB, VERDICT_INFO, WINDOW_END, publish_verdicts
from modelwatch.verdict import DriftEvidence, ModelVerdict

END = datetime(2026, 3, 4, tzinfo=UTC)
FAST = {"backoff_base_seconds": 0.05, "backoff_max_seconds": 0.2}


def verdict(model: str, v: str = "healthy", **kw: Any) -> ModelVerdict:
    return ModelVerdict(model=model, verdict=v, reason="", window_start="", window_end="", **kw)  # type: ignore[arg-type]


def day(n: int) -> list[ModelVerdict]:
    """Two models' verdicts of a window."""
    psi = DriftEvidence(value="prediction_time", kind="number", outcome="drifted", n_window=700, n_reference=5000,
                        psi=0.41, statistic=None, p_value=None, p_adjusted=None, psi_threshold=0.25)  # fmt: skip
    return [
        verdict("fraud-detector", "degraded", n_predictions=288, slow_share=0.125, quality="regressed"),
        verdict("recommender", "healthy", n_predictions=720 + n, slow_share=0.0, quality="ok", drift="drifted",
                drift_values=[psi]),
    ]  # fmt: skip


@pytest.fixture
def dag_id(conns: Any) -> Iterator[str]:
    """A DAG id of this test's own (with a "/", which the group path must carry base64-encoded); its group
    is deleted afterwards."""
    name = f"it/pushgateway_{uuid.uuid4().hex[:8]}"
    yield name
    PushgatewayHook(**FAST).delete(JOB, {"dag": name})


def group(hook: PushgatewayHook, dag: str) -> dict[str, Any]:
    """The group of ``dag`` as the Pushgateway's JSON API holds it (metric name -> its samples' labels and
    values), or {} when there is none."""
    for g in hook.groups():
        if g["labels"] == {"job": JOB, "dag": dag}:
            return {
                name: [(m["labels"], float(m["value"])) for m in family["metrics"]]
                for name, family in g.items()
                if isinstance(family, dict) and "metrics" in family
            }
    return {}


def prometheus(stack: Any, promql: str) -> list[dict[str, Any]]:
    answer = requests.get(f"{stack.config.prometheus_url}/api/v1/query", params={"query": promql}, timeout=10)
    answer.raise_for_status()
    return answer.json()["data"]["result"]


def test_a_runs_verdicts_reach_the_pushgateway_and_prometheus_scrapes_them(conns: Any, dag_id: str) -> None:
    hook = PushgatewayHook(**FAST)
    assert hook.base_url == conns.config.pushgateway_url
    done = publish_verdicts(hook, day(0), END, dag_id)
    assert (done["action"], done["published_window_end"], done["series"]) == ("pushed", None, 1 + 2 * 5 + 1)
    assert done["group"].startswith(f"{conns.config.pushgateway_url}/metrics/job/modelwatch/dag@base64/")

    # read back from the Pushgateway
    assert hook.published_window_end(JOB, {"dag": dag_id}) == END.timestamp()
    held = group(hook, dag_id)
    info = {labels["model"]: labels for labels, _ in held[VERDICT_INFO]}
    assert set(info) == {"fraud-detector", "recommender"}
    assert (info["fraud-detector"]["verdict"], info["fraud-detector"]["quality"]) == ("degraded", "regressed")
    assert (info["recommender"]["verdict"], info["recommender"]["drift"]) == ("healthy", "drifted")

    # and from Prometheus, which scrapes the Pushgateway (a scrape interval of 5 s in the stack)
    series = wait_until(
        lambda: prometheus(conns, f'{VERDICT_INFO}{{dag="{dag_id}"}}'),
        until=lambda result: len(result) == 2,
        timeout=20,
        interval=0.5,
        what=f"Prometheus to scrape {VERDICT_INFO} of both models from the Pushgateway",
    )
    by_model = {s["metric"]["model"]: s["metric"] for s in series}
    assert by_model["fraud-detector"]["verdict"] == "degraded"
    assert by_model["recommender"]["verdict"] == "healthy"
    # honor_labels: the pushed job stays "modelwatch" (not exported_job with job="pushgateway")
    assert {s["metric"]["job"] for s in series} == {JOB}
    assert not any("exported_job" in s["metric"] for s in series)
    degraded = prometheus(conns, f'{DEGRADED}{{dag="{dag_id}"}} == 1')
    assert [s["metric"]["model"] for s in degraded] == ["fraud-detector"]
    window = prometheus(conns, f'{WINDOW_END}{{dag="{dag_id}"}}')
    assert [float(s["value"][1]) for s in window] == [END.timestamp()]


def test_an_older_window_never_replaces_a_newer_one(conns: Any, dag_id: str) -> None:
    hook = PushgatewayHook(**FAST)
    grouping = {"dag": dag_id}
    assert publish_verdicts(hook, day(1), END, dag_id)["action"] == "pushed"

    # a backfill of the day before: skipped, and the gateway still holds the newer window's series
    older = publish_verdicts(hook, [verdict("fraud-detector", "healthy")], END - timedelta(days=1), dag_id)
    assert (older["action"], older["series"]) == ("skipped", 0)
    assert older["published_window_end"] == END.isoformat()
    assert hook.published_window_end(JOB, grouping) == END.timestamp()
    assert {labels["verdict"] for labels, _ in group(hook, dag_id)[VERDICT_INFO]} == {"degraded", "healthy"}

    # re-running the newest window republishes it, whole: a model no longer judged disappears
    again = publish_verdicts(hook, [verdict("fraud-detector", "healthy", n_predictions=288)], END, dag_id)
    assert again["action"] == "pushed"
    held = group(hook, dag_id)
    assert [(labels["model"], labels["verdict"]) for labels, _ in held[VERDICT_INFO]] == [("fraud-detector", "healthy")]
    assert [labels["model"] for labels, _ in held[DEGRADED]] == ["fraud-detector"]

    # and the next window moves the group on
    assert publish_verdicts(hook, day(2), END + timedelta(days=1), dag_id)["action"] == "pushed"
    assert hook.published_window_end(JOB, grouping) == (END + timedelta(days=1)).timestamp()

    hook.delete(JOB, grouping)
    assert hook.published_window_end(JOB, grouping) is None and group(hook, dag_id) == {}


def test_a_refused_push_names_the_gateway_and_its_reason(conns: Any, dag_id: str) -> None:
    hook = PushgatewayHook(**FAST)
    with pytest.raises(PushgatewayRefused) as info:
        hook.push(JOB, {"dag": dag_id}, "modelwatch_broken{ 1\n")
    err = info.value
    assert err.status == 400 and hook.requests_made == 1  # a refusal is not retried
    assert conns.config.pushgateway_url in str(err) and "parsing error" in str(err), str(err)


def test_the_connection_test_button(conns: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    ok, message = PushgatewayHook().test_connection()
    assert ok, message
    assert conns.config.pushgateway_url in message and "HTTP 200" in message
    # another server on the port (Prometheus answers /api/v1/status with 404): a clear no
    monkeypatch.setenv("AIRFLOW_CONN_PUSHGATEWAY_WRONG", conns.airflow_env()["AIRFLOW_CONN_PROMETHEUS_DEFAULT"])
    ok, message = PushgatewayHook("pushgateway_wrong").test_connection()
    assert not ok and conns.config.prometheus_url in message and "HTTP 404" in message, message
