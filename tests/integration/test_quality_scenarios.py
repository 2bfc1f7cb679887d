"""Is the model still right, on the seeded quality scenarios (``devstack.scenarios.QUALITY_DAYS``), day after
day through ``dag.test()`` against the real stack, each day judged against the days before it in the lake:

- an accuracy drop during CPU saturation: quality regressed, attributed to infrastructure;
- a version rollout with worse accuracy: regressed, attributed to the version, figures per version;
- a gradual shift of prediction_time, and of the inputs a team logs (an MLflow metric and param): drifted,
  quality still ok;
- a shift of a model's output (its logged score) while its inputs hold: drifted, named as an output;
- a day whose labels have not arrived: no_labels; once they arrive (logged to its MLflow runs), a
  quality-only re-run flips the day to regressed and the alert follows.

Quality and drift alerts reach the webhook receiver under their own names and labels.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from config_helpers import own_alertnames
from polling import wait_until
from webhook import received, until_notified

from devstack.runner import run_day, run_window, xcom
from devstack.scenarios import QUALITY_DAYS
from devstack.seed import seed_stack

REPO = Path(__file__).resolve().parents[2]


def _day(name: str) -> Any:
    return next(d for d, s in QUALITY_DAYS.items() if s == name)


@pytest.fixture(scope="module")
def quality_runs(seeded_stack: Any, airflow_db: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Seed the quality days, run the DAG over them in order into a lake of this module's own."""
    from modelwatch.storage import Lake

    seed_stack(seeded_stack, QUALITY_DAYS, work_dir=tmp_path_factory.mktemp("openmetrics-quality"))
    tmp = tmp_path_factory.mktemp("quality")
    name = f"ModelPredictionsDegradedQS{uuid.uuid4().hex[:8]}"
    raw = own_alertnames(yaml.safe_load((REPO / "include" / "thresholds.yaml").read_text()), name)
    raw["alerting"]["drift"]["page"] = True
    (config := tmp / "thresholds.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    lake = tmp / "lake"
    mp = pytest.MonkeyPatch()
    for key, value in seeded_stack.airflow_env().items():
        mp.setenv(key, value)
    mp.setenv("MODELWATCH_CONFIG", str(config))
    mp.setenv("MODELWATCH_STORAGE_URL", lake.as_uri())
    docs = {}
    try:
        for day, scenario in sorted(QUALITY_DAYS.items()):
            run_day(day)
            docs[scenario] = json.loads((lake / "verdicts" / f"dt={day}" / "_verdict.json").read_text())
            payload = docs[scenario]["alert"]["payload"]
            until_notified(seeded_stack, Lake(lake.as_uri()).read_document(payload) if payload else [])
        yield {"docs": docs, "name": name, "lake": lake, "mp": mp}
    finally:
        mp.undo()


def _verdict(runs: dict[str, Any], scenario: str, model: str) -> dict[str, Any]:
    return next(v for v in runs["docs"][scenario]["verdicts"] if v["model"] == model)


def test_the_first_day_has_no_history_to_compare_with(quality_runs: dict[str, Any]) -> None:
    for v in quality_runs["docs"]["quality_reference"]["verdicts"]:
        assert (v["quality"], v["drift"]) == ("no_reference", "no_reference"), v["model"]


def test_an_accuracy_drop_during_saturation_is_attributed_to_infrastructure(quality_runs: dict[str, Any]) -> None:
    v = _verdict(quality_runs, "accuracy_during_saturation", "fraud-detector")
    assert v["verdict"] == "degraded" and v["quality"] == "regressed", v["quality_reason"]
    assert v["quality_attribution"] == "infrastructure"
    assert "at saturated moments (cpu" in v["quality_reason"]
    assert _verdict(quality_runs, "accuracy_during_saturation", "recommender")["quality"] == "ok"


def test_a_rollout_with_worse_accuracy_is_attributed_to_the_version(quality_runs: dict[str, Any]) -> None:
    v = _verdict(quality_runs, "version_rollout", "fraud-detector")
    assert v["verdict"] == "healthy" and v["quality"] == "regressed", v["quality_reason"]
    assert v["quality_attribution"] == "version"
    assert "on version 4 (first seen in this window) against the other versions in the window" in v["quality_reason"]
    by_version = {r["version"]: r for r in v["versions"]}
    assert set(by_version) == {"3", "4"} and by_version["4"]["accuracy"] < by_version["3"]["accuracy"] - 0.1


def test_a_gradual_shift_of_prediction_time_is_drift_not_a_regression(quality_runs: dict[str, Any]) -> None:
    v = _verdict(quality_runs, "gradual_drift", "recommender")
    assert v["verdict"] == "healthy" and v["quality"] == "ok"
    assert v["drift"] == "drifted" and v["drift_reason"].startswith("prediction_time: PSI"), v["drift_reason"]


def test_a_shift_of_the_inputs_a_team_logs_is_drift_of_those_values(quality_runs: dict[str, Any]) -> None:
    import pandas as pd

    # fraud-detector's amount (an MLflow metric) and channel (a param of each run) shift; its time does not
    v = _verdict(quality_runs, "gradual_drift", "fraud-detector")
    assert (v["verdict"], v["quality"], v["drift"]) == ("healthy", "ok", "drifted"), v["drift_reason"]
    assert "metric_amount: PSI" in v["drift_reason"] and "param_channel: PSI" in v["drift_reason"]
    rows = pd.read_parquet(quality_runs["lake"] / "drift" / f"dt={_day('gradual_drift')}")
    outcome = {(r.model, r.value): r.outcome for r in rows.itertuples()}
    assert outcome[("fraud-detector", "prediction_time")] == "stable"
    assert outcome[("fraud-detector", "metric_amount")] == outcome[("fraud-detector", "param_channel")] == "drifted"
    assert outcome[("recommender", "metric_amount")] == "stable"
    # recommender's runs hold a day of predictions each: no per-prediction channel, so nothing to compare
    assert outcome[("recommender", "param_channel")] == "too_few"
    # the days before, with the usual inputs, did not drift
    for day in ("accuracy_during_saturation", "version_rollout"):
        assert _verdict(quality_runs, day, "fraud-detector")["drift"] == "stable", day


def test_a_shift_of_the_models_output_is_drift_of_that_output(quality_runs: dict[str, Any], seeded_stack: Any) -> None:
    import pandas as pd

    # recommender's score (the output it logs with each prediction, role: output) rises through the day; its
    # input amount does not move. fraud-detector's inputs shift, and its score does not.
    v = _verdict(quality_runs, "gradual_drift", "recommender")
    assert (v["verdict"], v["quality"], v["drift"]) == ("healthy", "ok", "drifted"), v["drift_reason"]
    assert "output metric_score: PSI" in v["drift_reason"] and "input" not in v["drift_reason"], v["drift_reason"]
    assert "output metric_score: PSI" not in _verdict(quality_runs, "gradual_drift", "fraud-detector")["drift_reason"]
    rows = pd.read_parquet(quality_runs["lake"] / "drift" / f"dt={_day('gradual_drift')}")
    judged = {(r.model, r.value): (r.role, r.outcome) for r in rows.itertuples()}
    assert judged[("recommender", "metric_score")] == ("output", "drifted")
    assert judged[("recommender", "metric_amount")] == ("input", "stable")
    assert judged[("fraud-detector", "metric_score")] == ("output", "stable")
    assert judged[("fraud-detector", "metric_amount")] == ("input", "drifted")
    assert judged[("recommender", "prediction_time")] == ("", "drifted")
    by_value = {d["value"]: d for d in v["drift_values"]}
    assert by_value["metric_score"]["role"] == "output" and by_value["metric_score"]["psi"] >= 0.25
    # the days before, with the usual outputs, did not drift; nor did the day after (its reference holds a
    # quarter of a day's shift, below the index that counts)
    for day in ("accuracy_during_saturation", "version_rollout", "no_labels_yet"):
        stored = pd.read_parquet(quality_runs["lake"] / "drift" / f"dt={_day(day)}")
        scores = {r.model: (r.role, r.outcome) for r in stored.itertuples() if r.value == "metric_score"}
        assert scores == {"fraud-detector": ("output", "stable"), "recommender": ("output", "stable")}, day
    for day in ("accuracy_during_saturation", "version_rollout"):
        assert _verdict(quality_runs, day, "recommender")["drift"] == "stable", day
    # the drift alert keeps its name and says that the output drifted
    # (each notification of its group carries it again: every copy says so)
    drift = received(seeded_stack, f"{quality_runs['name']}Drift", "firing")
    pages = [a for a in drift if a["labels"]["model"] == "recommender"
             and a["annotations"]["window"].startswith(str(_day("gradual_drift")))]  # fmt: skip
    assert pages, drift
    for page in pages:
        assert page["annotations"]["summary"] == "recommender: output metric_score and prediction_time drifted"
        assert "output metric_score: PSI" in page["annotations"]["description"]


def test_quality_and_drift_alerts_reach_the_webhook_under_their_own_names(
    quality_runs: dict[str, Any], seeded_stack: Any
) -> None:
    name = quality_runs["name"]
    quality = received(seeded_stack, f"{name}Quality", "firing")
    drift = received(seeded_stack, f"{name}Drift", "firing")
    assert {a["labels"]["model"] for a in quality} == {"fraud-detector"}
    assert {a["labels"]["model"] for a in drift} >= {"recommender"}
    for a in (*quality, *drift):
        assert set(a["labels"]) == {"alertname", "model", "severity", "source", "dag", "scope"}
    assert any(a["annotations"]["window"].startswith(str(_day("gradual_drift"))) for a in drift)
    # the day fraud-detector's quality was ok again resolved its quality alert; the receivers were told
    # (Alertmanager sends a resolved notification at the group's next flush, every group_interval of 5 s: on a
    # busy machine it can come after the last run's own alerts did, so wait for it, bounded)
    resolved = wait_until(lambda: received(seeded_stack, f"{name}Quality", "resolved"), until=bool, timeout=60,
                          interval=1, what=f"the resolved notification of {name}Quality")  # fmt: skip
    assert {a["labels"]["model"] for a in resolved} == {"fraud-detector"}


def test_late_labels_flip_a_day_without_labels_and_the_alert_follows(
    quality_runs: dict[str, Any], seeded_stack: Any
) -> None:
    from datetime import UTC, datetime, timedelta

    from mlflow import MlflowClient
    from mlflow.entities import Metric

    from devstack.seed import DAY_TAG

    day = _day("no_labels_yet")
    assert {v["quality"] for v in quality_runs["docs"]["no_labels_yet"]["verdicts"]} == {"no_labels"}

    # the labels arrive: fraud-detector was wrong 40 % of the time that day
    client = MlflowClient(seeded_stack.config.mlflow_url)
    experiment = client.get_experiment_by_name("fraud-detector-predictions")
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{DAY_TAG}` = '{day}'",
                              max_results=1000)  # fmt: skip
    assert len(runs) == 288
    for k, run in enumerate(runs):
        ts = run.info.start_time
        client.log_batch(run.info.run_id, metrics=[Metric("accuracy", 0.0 if k % 5 < 2 else 1.0, ts, 0),
                                                   Metric("loss", 0.6, ts, 0)], synchronous=True)  # fmt: skip

    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    again = run_window(start, start + timedelta(days=1), params={"quality_only": True})
    evaluation = xcom(again, "evaluate")
    assert evaluation["quality"]["fraud-detector"] == "regressed" and evaluation["quality"]["recommender"] == "no_labels"
    name = quality_runs["name"]
    # a quality-only run's own payload: the day's _payload.json stays what its own run paged
    payload = json.loads((quality_runs["lake"] / "alerts" / f"dt={day}" / "_quality_payload.json").read_text())
    flipped = [a for a in payload if a["labels"]["alertname"] == f"{name}Quality"]
    assert [a["labels"]["model"] for a in flipped] == ["fraud-detector"]
    # the page follows the late labels: Alertmanager holds the quality alert again, raised for that day
    from polling import wait_until

    from modelwatch.hooks.alertmanager import AlertmanagerHook

    hook = AlertmanagerHook()
    held = wait_until(lambda: hook.get_alerts({"alertname": f"{name}Quality", "model": "fraud-detector"}),
                      until=lambda got: any(a["annotations"]["window"].startswith(str(day)) for a in got),
                      timeout=15, what=f"Alertmanager to hold {name}Quality for fraud-detector raised for {day}")  # fmt: skip
    assert all(a["status"]["state"] == "active" for a in held)
    until_notified(seeded_stack, flipped)
