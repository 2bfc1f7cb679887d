"""Alertmanager payloads: identity is the label set (stable across runs), everything that varies is an
annotation; and whether a run may page at all."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from modelwatch.alerting import (
    PagingDecision,
    build_alerts,
    continue_incidents,
    judged_models,
    paging_decision,
    resolutions,
    run_url,
    stamp_for_posting,
)
from modelwatch.config import AlertingConfig
from modelwatch.verdict import ModelVerdict, ResourceEvidence

RUN_URL = "http://airflow.example/dags/model_performance_monitoring/runs/scheduled__2026-03-04"
PARTITION = "s3://lake/verdicts/dt=2026-03-03"


def evidence(resource: str = "cpu", **over: Any) -> ResourceEvidence:
    # 9 of 10 slow predictions at saturation (1 below it), 14 normal ones at saturation, 264 below
    values: dict[str, Any] = {
        "resource": resource, "threshold": 0.9, "unit": "ratio", "outcome": "explains",
        "n_slow_saturated": 9, "n_normal_saturated": 14, "n_slow_unsaturated": 1, "n_normal_unsaturated": 264,
        "n_slow_unsampled": 0, "n_normal_unsampled": 0, "coverage": 1.0, "slow_share_saturated": 9 / 23,
        "slow_share_unsaturated": 1 / 265, "relative_risk": 104.0, "p_value": 1e-12, "p_adjusted": 6e-12,
        "slow_saturated_share": 0.9, "normal_saturated_share": 0.05, "lift": 18.0, "spearman": 0.71,
        "slow_value_median": 0.97, "slow_value_max": 0.99,
    }  # fmt: skip
    return ResourceEvidence(**{**values, **over})


def verdict(
    model: str = "fraud-detector", kind: str = "degraded", day: int = 3, **over: Any
) -> ModelVerdict:
    start = datetime(2026, 3, day, tzinfo=UTC)
    degraded = kind == "degraded"
    values: dict[str, Any] = {
        "model": model, "verdict": kind, "reason": f"{kind} because of reasons",
        "window_start": start.isoformat(), "window_end": (start + timedelta(days=1)).isoformat(),
        "model_versions": ["3"], "n_predictions": 288, "n_slow": 10 if degraded else 0,
        "slow_share": 10 / 288 if degraded else 0.0, "slow_threshold_seconds": 1.0,
        "slow_instances": ["model-a"] if degraded else [],
        "saturated_resources": [evidence()] if degraded else [],
        "incident_start": (start + timedelta(hours=10)).isoformat() if degraded else None,
        "incident_end": (start + timedelta(hours=12)).isoformat() if degraded else None,
    }  # fmt: skip
    return ModelVerdict(**{**values, **over})


CFG = AlertingConfig()


# -- paging ------------------------------------------------------------------------------------------------


def decide(verdicts: list[ModelVerdict], run_type: str = "scheduled", *, dry_run: bool = False,
           page_on_backfill: bool = False, cfg: AlertingConfig = CFG) -> PagingDecision:
    return paging_decision(verdicts, cfg, run_type=run_type, dry_run=dry_run, page_on_backfill=page_on_backfill)


@pytest.mark.parametrize("run_type", ["scheduled", "manual", "asset_triggered"])
def test_degraded_pages(run_type: str) -> None:
    d = decide([verdict(), verdict("recommender", "healthy")], run_type)
    assert d.post is True
    assert "fraud-detector (degraded)" in d.reason and "recommender" not in d.reason


def test_a_run_with_nothing_to_page_still_talks_to_alertmanager_to_resolve() -> None:
    d = decide([verdict("a", "healthy"), verdict("b", "slow_unexplained")])
    assert d.post is True
    assert "nothing pages" in d.reason and "resolving" in d.reason and "a, b" in d.reason


def test_no_data_pages_by_default_and_slow_unexplained_does_not() -> None:
    d = decide([verdict("quiet", "no_data"), verdict("odd", "slow_unexplained")])
    assert "quiet (no_data)" in d.reason and "odd" not in d.reason.split("paging for")[1]
    loud = AlertingConfig(slow_unexplained={"page": True, "alertname": "Odd", "severity": "info"})
    assert "odd (slow_unexplained)" in decide([verdict("odd", "slow_unexplained")], cfg=loud).reason


def test_dry_run_does_not_page_but_says_what_it_would_do() -> None:
    d = decide([verdict("alpha"), verdict("beta")], dry_run=True, page_on_backfill=True)
    assert d.post is False
    assert "dry run" in d.reason and "alpha" in d.reason and "beta" in d.reason
    assert decide([verdict("alpha", "healthy")], dry_run=True).reason == "dry run: nothing would page"


def test_backfill_pages_only_when_asked() -> None:
    quiet = decide([verdict()], "backfill")
    assert quiet.post is False
    assert "backfill" in quiet.reason and "page_on_backfill" in quiet.reason
    assert decide([verdict("a", "healthy")], "backfill").post is False  # nor resolves
    loud = decide([verdict()], "backfill", page_on_backfill=True)
    assert loud.post is True
    dry = decide([verdict()], "backfill", dry_run=True, page_on_backfill=True)
    assert dry.post is False


def test_page_on_backfill_does_not_affect_other_runs() -> None:
    assert decide([verdict()], "scheduled", page_on_backfill=False).post is True


# -- alerts ------------------------------------------------------------------------------------------------


def test_one_alert_per_model_whose_verdict_pages() -> None:
    alerts = build_alerts(
        [verdict("a"), verdict("b", "healthy"), verdict("c", "slow_unexplained"), verdict("d", "no_data"),
         verdict("e")],
        CFG, run_url=RUN_URL, partition_url=PARTITION,
    )  # fmt: skip
    assert [(a["labels"]["model"], a["labels"]["alertname"]) for a in alerts] == [
        ("a", CFG.alertname), ("d", CFG.no_data.alertname), ("e", CFG.alertname)]  # fmt: skip


def test_a_no_data_alert_has_its_own_name_severity_and_stable_labels() -> None:
    silent = verdict("quiet", "no_data", reason="no predictions in the window")
    (alert,) = build_alerts([silent], CFG, run_url=RUN_URL, partition_url=PARTITION)
    assert alert["labels"] == {"alertname": "ModelPredictionsMissing", "model": "quiet", "severity": "warning",
                               "source": "modelwatch", "dag": "", "scope": "canonical"}  # fmt: skip
    assert alert["annotations"]["description"] == "no predictions in the window"
    assert alert["annotations"]["verdict"] == "no_data"
    assert alert["startsAt"] == silent.window_start
    cfg = AlertingConfig(no_data={"page": True, "alertname": "Silence", "severity": "critical"})
    (custom,) = build_alerts([silent], cfg, run_url=RUN_URL, partition_url=PARTITION)
    assert (custom["labels"]["alertname"], custom["labels"]["severity"]) == ("Silence", "critical")
    off = AlertingConfig(no_data={"page": False, "alertname": "Silence", "severity": "critical"})
    assert build_alerts([silent], off, run_url=RUN_URL, partition_url=PARTITION) == []


def test_alert_names_must_differ() -> None:
    with pytest.raises(ValueError, match="must differ"):
        AlertingConfig(no_data={"page": True, "alertname": CFG.alertname, "severity": "warning"})


def test_labels_are_stable_across_runs() -> None:
    day3 = build_alerts([verdict(day=3)], CFG, run_url=RUN_URL, partition_url=PARTITION)[0]
    other = verdict(
        day=5, n_slow=40, n_predictions=300, slow_instances=["model-a", "model-b"], model_versions=["4"],
        saturated_resources=[evidence(slow_value_median=0.93, slow_value_max=1.0, lift=None, spearman=None)],
    )  # fmt: skip
    day5 = build_alerts([other], CFG, run_url=RUN_URL + "-other", partition_url=PARTITION + "-other")[0]
    assert day3["labels"] == day5["labels"]
    assert day3["labels"] == {
        "alertname": CFG.alertname, "model": "fraud-detector", "severity": CFG.severity, "resources": "cpu",
        "source": "modelwatch", "dag": "", "scope": "canonical",
    }  # fmt: skip
    assert day3["annotations"] != day5["annotations"]
    assert day3["startsAt"] != day5["startsAt"]


def test_resources_label_does_not_depend_on_evidence_order() -> None:
    a = build_alerts([verdict(saturated_resources=[evidence("memory"), evidence("cpu")])], CFG, run_url=RUN_URL,
                     partition_url=PARTITION)  # fmt: skip
    b = build_alerts([verdict(saturated_resources=[evidence("cpu"), evidence("memory")])], CFG, run_url=RUN_URL,
                     partition_url=PARTITION)  # fmt: skip
    assert a[0]["labels"] == b[0]["labels"]
    assert a[0]["labels"]["resources"] == "cpu,memory"


def test_label_values_are_strings() -> None:
    (alert,) = build_alerts([verdict()], CFG, run_url=RUN_URL, partition_url=PARTITION)
    assert all(isinstance(v, str) for v in alert["labels"].values())
    assert all(isinstance(v, str) for v in alert["annotations"].values())


def test_annotations_carry_values_thresholds_and_links() -> None:
    (alert,) = build_alerts([verdict()], CFG, run_url=RUN_URL, partition_url=PARTITION)
    ann = alert["annotations"]
    text = ann["description"]
    assert "10 of 288" in text
    assert "longer than 1 s" in text
    assert "model-a" in text
    assert "median 0.97" in text and "max 0.99" in text
    assert "threshold 0.9" in text
    # effect size, test and coverage: what the verdict rests on
    assert "slow at 39% of 23 predictions at saturation against 0.4% of 265 below it" in text
    assert "relative risk 104" in text and "p=6e-12" in text and "Fisher's exact test" in text
    assert "coverage 100% of slow predictions sampled" in text
    assert ann["coverage"] == "cpu 100%" and ann["relative_risk"] == "cpu 104"
    assert ann["partition"] == PARTITION
    assert ann["airflow_run"] == RUN_URL
    assert alert["generatorURL"] == RUN_URL
    assert ann["incident_start"] == "2026-03-03T10:00:00+00:00"
    assert ann["incident_end"] == "2026-03-03T12:00:00+00:00"
    assert ann["model_versions"] == "3"
    assert "2026-03-03T00:00:00+00:00" in ann["window"] and "2026-03-04T00:00:00+00:00" in ann["window"]
    assert alert["startsAt"] == "2026-03-03T10:00:00+00:00"
    assert "endsAt" not in alert  # set when posting


def test_unknown_statistics_are_written_as_n_a() -> None:
    ev = evidence(slow_value_median=None, relative_risk=None, coverage=None)
    (alert,) = build_alerts(
        [verdict(saturated_resources=[ev])], CFG, run_url=RUN_URL, partition_url=PARTITION
    )
    text = alert["annotations"]["description"]
    assert "median n/a" in text
    assert "relative risk n/a" in text and "coverage n/a" in text


def test_slow_predictions_without_a_sample_are_named() -> None:
    (alert,) = build_alerts([verdict(n_slow_unsampled=4)], CFG, run_url=RUN_URL, partition_url=PARTITION)
    assert "4 slow prediction(s) had no real resource sample" in alert["annotations"]["description"]


def test_infinite_values_from_a_real_verdict() -> None:
    (alert,) = build_alerts([verdict(saturated_resources=[evidence(lift=float("inf"), slow_value_max=float("inf"))])],
                            CFG, run_url=RUN_URL, partition_url=PARTITION)  # fmt: skip
    assert "max inf" in alert["annotations"]["description"]
    json.dumps(alert, allow_nan=False)


def test_configured_alertname_and_severity() -> None:
    cfg = AlertingConfig(alertname="MlSlow", severity="critical")
    (alert,) = build_alerts([verdict()], cfg, run_url=RUN_URL, partition_url=PARTITION)
    assert (alert["labels"]["alertname"], alert["labels"]["severity"]) == ("MlSlow", "critical")


STRANGE_NAMES = [
    'fraud "detector"',
    "model with spaces",
    "modèle-ünïcødé-模型-🚀",
    'x{job="a",instance=~".*"}',
    "<script>alert('x')</script> &amp; &lt;",
    "back\\slash",
    "tab\tand\nnewline",
    "a,b=c",
]


@pytest.mark.parametrize("name", STRANGE_NAMES)
def test_model_names_survive_as_is(name: str) -> None:
    alerts = build_alerts([verdict(name)], CFG, run_url=RUN_URL, partition_url=PARTITION)
    assert alerts[0]["labels"]["model"] == name
    assert alerts[0]["annotations"]["summary"].startswith(name)
    for ensure_ascii in (True, False):
        assert json.loads(json.dumps(alerts, ensure_ascii=ensure_ascii)) == alerts
    decision = decide([verdict(name)])
    assert name in decision.reason


def test_strange_names_stay_distinct() -> None:
    alerts = build_alerts([verdict(n) for n in STRANGE_NAMES], CFG, run_url=RUN_URL, partition_url=PARTITION)
    labels = [json.dumps(a["labels"], sort_keys=True) for a in alerts]
    assert len(set(labels)) == len(STRANGE_NAMES)


# -- posting -----------------------------------------------------------------------------------------------


def test_stamp_for_posting_keeps_the_alert_active() -> None:
    alerts = build_alerts([verdict()], CFG, run_url=RUN_URL, partition_url=PARTITION)
    original = json.dumps(alerts, sort_keys=True)
    posted_at = datetime(2026, 3, 4, 0, 5, tzinfo=UTC)
    (stamped,) = stamp_for_posting(alerts, posted_at, timedelta(hours=4))
    assert datetime.fromisoformat(stamped["endsAt"]) == datetime(2026, 3, 4, 4, 5, tzinfo=UTC)
    assert datetime.fromisoformat(stamped["endsAt"]) > posted_at  # a past endsAt would resolve it on arrival
    assert stamped["startsAt"] == alerts[0]["startsAt"]
    assert stamped["labels"] == alerts[0]["labels"]
    assert json.dumps(alerts, sort_keys=True) == original  # the stored payload is not modified


def test_stamp_for_posting_a_retry_extends_the_same_alert() -> None:
    alerts = build_alerts([verdict()], CFG, run_url=RUN_URL, partition_url=PARTITION)
    first = stamp_for_posting(alerts, datetime(2026, 3, 4, 0, 5, tzinfo=UTC), timedelta(hours=4))[0]
    later = stamp_for_posting(alerts, datetime(2026, 3, 4, 3, 0, tzinfo=UTC), timedelta(hours=4))[0]
    assert later["labels"] == first["labels"]
    assert later["endsAt"] > first["endsAt"]


def test_alert_without_incident_starts_at_the_window() -> None:
    (alert,) = build_alerts([verdict(incident_start=None, incident_end=None)], CFG, run_url=RUN_URL,
                            partition_url=PARTITION)  # fmt: skip
    assert alert["startsAt"] == "2026-03-03T00:00:00+00:00"


# -- links -------------------------------------------------------------------------------------------------


def test_run_url_quotes_the_run_id() -> None:
    run_id = "manual__2026-03-03T10:00:00+00:00"
    url = run_url("http://localhost:8080/", "model_performance_monitoring", run_id)
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc) == ("http", "localhost:8080")
    segments = parts.path.split("/")
    assert segments[:4] == ["", "dags", "model_performance_monitoring", "runs"]
    assert unquote(segments[4]) == run_id
    assert "+" not in segments[4] and ":" not in segments[4]
    assert "//dags" not in url


# -- lifecycle ---------------------------------------------------------------------------------------------

POSTED_AT = datetime(2026, 3, 4, 0, 5, tzinfo=UTC)


def active(alert: dict[str, Any], ends: datetime = POSTED_AT + timedelta(hours=3)) -> dict[str, Any]:
    """An alert as Alertmanager's GET /api/v2/alerts returns it."""
    return {**alert, "endsAt": ends.isoformat(), "status": {"state": "active"}, "fingerprint": "f",
            "receivers": [{"name": "x"}], "updatedAt": POSTED_AT.isoformat()}  # fmt: skip


def ended(alerts: list[dict[str, Any]], held: list[dict[str, Any]], models: list[str],
          window_end: str = "2026-03-04T00:00:00+00:00") -> list[dict[str, Any]]:
    judged = judged_models([verdict(m, "healthy", quality="ok") for m in models], CFG)
    return resolutions(alerts, held, judged=judged, window_end=window_end, resolved_at=POSTED_AT)


def test_a_model_judged_healthy_again_has_its_alert_resolved() -> None:
    (fired,) = build_alerts([verdict()], CFG, run_url=RUN_URL, partition_url=PARTITION)
    (resolved,) = ended([], [active(fired)], ["fraud-detector"])
    assert resolved["labels"] == fired["labels"]  # the same alert: Alertmanager's identity is the label set
    assert resolved["startsAt"] == fired["startsAt"]
    assert datetime.fromisoformat(resolved["endsAt"]) == POSTED_AT  # not in the future: resolved on arrival
    assert set(resolved) == {"labels", "annotations", "startsAt", "endsAt", "generatorURL"}  # what POST takes


def test_alerts_carry_their_dag_and_scope_and_only_that_dag_and_scope_resolves_them() -> None:
    """The daily DAG pages for a model; a healthy hourly run of it, or an ad-hoc run (a model subset) of the
    daily DAG, must neither update that page nor end it."""
    daily = "model_performance_monitoring"
    (fired,) = build_alerts([verdict()], CFG, run_url=RUN_URL, partition_url=PARTITION, dag_id=daily)
    assert (fired["labels"]["dag"], fired["labels"]["scope"]) == (daily, "canonical")
    (hourly,) = build_alerts([verdict()], CFG, run_url=RUN_URL, partition_url=PARTITION,
                             dag_id=daily + "_hourly")  # fmt: skip
    assert hourly["labels"] != fired["labels"]  # two alerts in Alertmanager: neither overwrites the other's notes
    judged = judged_models([verdict("fraud-detector", "healthy", quality="ok")], CFG)

    def resolve(dag_id: str, scope: str) -> list[dict[str, Any]]:
        return resolutions([], [active(fired)], judged=judged, window_end="2026-03-04T00:00:00+00:00",
                           resolved_at=POSTED_AT, dag_id=dag_id, scope=scope)  # fmt: skip

    assert resolve(daily + "_hourly", "canonical") == []
    assert resolve(daily, "adhoc") == []
    (resolved,) = resolve(daily, "canonical")
    assert resolved["labels"] == fired["labels"]


def test_degraded_on_other_resources_supersedes_the_old_alert() -> None:
    (old,) = build_alerts([verdict()], CFG, run_url=RUN_URL, partition_url=PARTITION)
    new = build_alerts([verdict(saturated_resources=[evidence("memory")])], CFG, run_url=RUN_URL,
                       partition_url=PARTITION)  # fmt: skip
    assert [a["labels"]["resources"] for a in ended(new, [active(old)], ["fraud-detector"])] == ["cpu"]


def test_the_alert_posted_again_is_not_resolved() -> None:
    alerts = build_alerts([verdict()], CFG, run_url=RUN_URL, partition_url=PARTITION)
    assert ended(alerts, [active(alerts[0])], ["fraud-detector"]) == []


def test_only_modelwatchs_own_alerts_of_the_judged_models_are_resolved() -> None:
    (fired,) = build_alerts([verdict()], CFG, run_url=RUN_URL, partition_url=PARTITION)
    other_model = {**fired, "labels": {**fired["labels"], "model": "recommender"}}
    other_name = {**fired, "labels": {**fired["labels"], "alertname": "SomeoneElsesAlert"}}
    not_ours = {**fired, "labels": {**fired["labels"], "source": "prometheus"}}
    held = [active(a) for a in (other_model, other_name, not_ours)]
    assert ended([], held, ["fraud-detector"]) == []


def test_a_rerun_of_an_older_window_never_resolves_a_newer_windows_alert() -> None:
    (newer,) = build_alerts([verdict(day=5)], CFG, run_url=RUN_URL, partition_url=PARTITION)
    assert ended([], [active(newer)], ["fraud-detector"], window_end="2026-03-04T00:00:00+00:00") == []
    assert len(ended([], [active(newer)], ["fraud-detector"], window_end="2026-03-06T00:00:00+00:00")) == 1


def test_an_alert_posted_before_the_window_annotation_existed_is_resolved() -> None:
    (fired,) = build_alerts([verdict()], CFG, run_url=RUN_URL, partition_url=PARTITION)
    old = {**fired, "annotations": {k: v for k, v in fired["annotations"].items() if k != "window_end"}}
    assert len(ended([], [active(old)], ["fraud-detector"])) == 1


def _across_midnight() -> tuple[dict[str, Any], dict[str, Any]]:
    day3 = verdict(day=3, incident_start="2026-03-03T22:00:00+00:00", incident_end="2026-03-03T23:55:00+00:00")
    day4 = verdict(day=4, incident_start="2026-03-04T00:05:00+00:00", incident_end="2026-03-04T01:30:00+00:00")
    (a3,) = build_alerts([day3], CFG, run_url=RUN_URL, partition_url=PARTITION)
    (a4,) = build_alerts([day4], CFG, run_url=RUN_URL, partition_url=PARTITION)
    return a3, a4


def test_an_incident_across_midnight_is_one_alert_covering_both_days() -> None:
    a3, a4 = _across_midnight()
    (merged,) = continue_incidents([a4], [a3], timedelta(minutes=30))
    assert merged["labels"] == a4["labels"]
    assert merged["startsAt"] == "2026-03-03T22:00:00+00:00"
    notes = merged["annotations"]
    assert notes["incident_start"] == "2026-03-03T22:00:00+00:00" and notes["incident_end"] == "2026-03-04T01:30:00+00:00"
    assert notes["windows"] == ("2026-03-03T00:00:00+00:00 to 2026-03-04T00:00:00+00:00; "
                                "2026-03-04T00:00:00+00:00 to 2026-03-05T00:00:00+00:00")  # fmt: skip
    # an incident through the whole of day 4 carries on into day 5 with every window
    all_day = {**merged, "annotations": {**notes, "incident_end": "2026-03-04T23:58:00+00:00"}}
    day5 = verdict(day=5, incident_start="2026-03-05T00:01:00+00:00", incident_end="2026-03-05T02:00:00+00:00")
    (a5,) = continue_incidents(build_alerts([day5], CFG, run_url=RUN_URL, partition_url=PARTITION), [all_day],
                               timedelta(minutes=30))  # fmt: skip
    assert a5["annotations"]["windows"].count(" to ") == 3
    assert a5["startsAt"] == "2026-03-03T22:00:00+00:00"


def test_a_gap_longer_than_incident_gap_starts_a_new_incident() -> None:
    a3, a4 = _across_midnight()
    (alone,) = continue_incidents([a4], [a3], timedelta(minutes=5))  # 23:55 -> 00:05 is 10 minutes
    assert alone == a4
    other = {**a3, "labels": {**a3["labels"], "resources": "memory"}}  # another alert (other labels)
    assert continue_incidents([a4], [other], timedelta(minutes=30)) == [a4]
    assert continue_incidents([a4], [], timedelta(minutes=30)) == [a4]


# -- quality --------------------------------------------------------------------------------------------------


def test_a_quality_regression_pages_under_its_own_name_whatever_the_latency_verdict() -> None:
    v = verdict("ranker", "healthy", quality="regressed", quality_reason="accuracy 0.9 against 0.94 ...",
                reference_days=["2026-03-02", "2026-03-01"])  # fmt: skip
    (alert,) = build_alerts([v], CFG, run_url=RUN_URL, partition_url=PARTITION)
    assert alert["labels"] == {"alertname": "ModelQualityRegressed", "model": "ranker", "severity": "warning",
                               "source": "modelwatch", "dag": "", "scope": "canonical"}  # fmt: skip
    assert alert["annotations"]["description"] == "quality regressed: accuracy 0.9 against 0.94 ..."
    assert alert["annotations"]["reference_days"] == "2026-03-02,2026-03-01"
    assert alert["startsAt"] == v.window_start and "incident_start" not in alert["annotations"]
    assert "ranker (quality regressed)" in decide([v]).reason
    both = build_alerts([verdict(quality="regressed")], CFG, run_url=RUN_URL, partition_url=PARTITION)
    assert [a["labels"]["alertname"] for a in both] == [CFG.alertname, "ModelQualityRegressed"]
    off = AlertingConfig(quality={"page": False, "alertname": "Q", "severity": "info"})
    assert build_alerts([v], off, run_url=RUN_URL, partition_url=PARTITION) == []


def test_a_quality_alert_is_resolved_only_by_a_judged_quality() -> None:
    v = verdict("ranker", "healthy", quality="regressed", quality_reason="worse")
    (fired,) = build_alerts([v], CFG, run_url=RUN_URL, partition_url=PARTITION)
    for quality, resolved in (("ok", 1), ("no_labels", 0), ("no_reference", 0), ("not_judged", 0)):
        judged = judged_models([verdict("ranker", "healthy", quality=quality)], CFG)
        got = resolutions([], [active(fired)], judged=judged, window_end="2026-03-04T00:00:00+00:00",
                          resolved_at=POSTED_AT)  # fmt: skip
        assert len(got) == resolved, quality


def test_only_evidence_ends_an_incident() -> None:
    (fired,) = build_alerts([verdict()], CFG, run_url=RUN_URL, partition_url=PARTITION)
    for kind, resolved in (("healthy", 1), ("slow_unexplained", 1), ("no_data", 0)):
        judged = judged_models([verdict(kind=kind)], CFG)
        got = resolutions([], [active(fired)], judged=judged, window_end="2026-03-04T00:00:00+00:00",
                          resolved_at=POSTED_AT)  # fmt: skip
        assert len(got) == resolved, kind  # a model gone silent pages as missing; its degradation is not over


def test_a_quality_only_run_posts_and_resolves_quality_alerts_only() -> None:
    from modelwatch.alerting import quality_alerts_only

    regressed = verdict(quality="regressed", quality_reason="worse")  # degraded latency, regressed quality
    d = paging_decision([regressed], CFG, run_type="manual", dry_run=False, page_on_backfill=False, quality_only=True)
    assert d.post is True and d.reason == "quality only: paging for fraud-detector (quality regressed)"
    alerts = build_alerts([regressed], CFG, run_url=RUN_URL, partition_url=PARTITION)
    kept, judged = quality_alerts_only(alerts, judged_models([regressed], CFG), CFG)
    assert [a["labels"]["alertname"] for a in kept] == ["ModelQualityRegressed"]
    assert judged == {"ModelQualityRegressed": ["fraud-detector"]}  # the latency alert is neither posted nor resolved
    ok = paging_decision([verdict(kind="healthy", quality="ok")], CFG, run_type="manual", dry_run=False,
                         page_on_backfill=False, quality_only=True)  # fmt: skip
    assert ok.post is True and "resolving quality alerts" in ok.reason
    dry = paging_decision([regressed], CFG, run_type="manual", dry_run=True, page_on_backfill=False, quality_only=True)
    assert dry.post is False and dry.reason == "dry run: would page for fraud-detector (quality regressed)"
