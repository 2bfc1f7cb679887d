"""No name stops a page: 56 hostile model and instance names (``tests/hostile_names.py``) through one real
DAG run over the seeded memory_pressure day (devstack/CONTRACT.md: memory about 96 % on model-b 16:00-18:00).

MLflow holds one run per name (the metric_history layout), its predictions slow 16:00-18:00. Half the names
run on ``model-b`` (degraded: they page), half on an instance named by the name itself (no samples there:
judged ``no_data``); three more are expected and silent (they page as missing). Each must reach its verdict,
its Alertmanager alert (label ``model`` exactly the name; ``no_data`` pages as missing), its report, the Pushgateway series, and nothing
may be written outside the lake's own folders.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from config_helpers import own_alertnames
from hostile_names import HOSTILE_NAMES

from devstack.runner import run_day, task_states, xcom

REPO = Path(__file__).resolve().parents[2]
DAY = date(2026, 3, 6)  # memory_pressure
SILENT = ("$\\missing$", "team/missing", "缺失的模型 " * 3)  # expected, without a prediction: page as missing


def _log_runs(tracking_uri: str, experiment: str) -> dict[str, str]:
    """One metric_history run per name: a prediction every 10 minutes, slow (2 s) 16:00-18:00. Returns the
    instance of each name."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.create_experiment(experiment)
    start = datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC)
    instances = {}
    for i, name in enumerate(HOSTILE_NAMES):
        instance = "model-b" if i % 2 == 0 else name
        instances[name] = instance
        run = client.create_run(exp, start_time=int(start.timestamp() * 1000),
                                tags={"model": name, "model_version": "1", "instance": instance})  # fmt: skip
        points = []
        for step in range(144):
            t = start + timedelta(minutes=10 * step)
            points.append(Metric("prediction_time", 2.0 if 16 <= t.hour < 18 else 0.1, int(t.timestamp() * 1000), step))
        client.log_batch(run.info.run_id, metrics=points, synchronous=True)
        client.set_terminated(run.info.run_id, "FINISHED", end_time=int((start + timedelta(days=1)).timestamp() * 1000) - 1)
    return instances


@pytest.fixture
def hostile(seeded_stack: Any, airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    token = uuid.uuid4().hex[:8]
    experiment = f"hostile-names-{token}"
    instances = _log_runs(seeded_stack.config.mlflow_url, experiment)
    raw = own_alertnames(yaml.safe_load((REPO / "include" / "thresholds.yaml").read_text()), f"Hostile{token}")
    raw["mlflow"]["experiments"] = [{"name": experiment, "layout": "metric_history"}]
    raw["mlflow"].pop("logged", None)
    raw["drift"]["values"] = {k: v for k, v in raw["drift"].get("values", {}).items() if k == "prediction_time"}
    raw["evaluation"]["expected_models"] = list(SILENT)
    raw["evaluation"]["models"] = {}
    raw["quality"]["models"] = {}
    raw["publish"]["job"] = f"hostile-{token}"
    (tmp_path / "thresholds.yaml").write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    for key, value in seeded_stack.airflow_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MODELWATCH_CONFIG", str(tmp_path / "thresholds.yaml"))
    monkeypatch.setenv("MODELWATCH_STORAGE_URL", (tmp_path / "lake").as_uri())
    yield {"tmp": tmp_path, "lake": tmp_path / "lake", "instances": instances, "raw": raw, "stack": seeded_stack}
    from modelwatch.hooks.pushgateway import PushgatewayHook

    PushgatewayHook("pushgateway_default").delete(raw["publish"]["job"], {"dag": "model_performance_monitoring"})


def test_every_hostile_name_is_judged_and_pages_and_nothing_escapes_the_lake(hostile: dict[str, Any]) -> None:
    from modelwatch.alerting import SOURCE_LABEL
    from modelwatch.hooks.alertmanager import AlertmanagerHook
    from modelwatch.storage import DATASETS, Lake

    run = run_day(DAY)
    states = task_states(run)
    assert all(s in ("success", "skipped") for s in states.values()), states
    evaluation = xcom(run, "evaluate")
    lake = Lake(hostile["lake"].as_uri())
    document = lake.read_document(evaluation["verdict_document"])
    verdicts = {v["model"]: v for v in document["verdicts"]}
    assert set(verdicts) == {*HOSTILE_NAMES, *SILENT}  # every name exactly as MLflow holds it
    on_b = [n for n, i in hostile["instances"].items() if i == "model-b"]
    elsewhere = [n for n, i in hostile["instances"].items() if i != "model-b"]
    assert {n: verdicts[n]["verdict"] for n in on_b} == dict.fromkeys(on_b, "degraded")
    assert {n: verdicts[n]["verdict"] for n in elsewhere} == dict.fromkeys(elsewhere, "no_data")
    assert {verdicts[n]["verdict"] for n in SILENT} == {"no_data"}
    assert document["not_made"] == [] and document["alert"]["post"] is True

    # Alertmanager holds one page per degraded name and one per silent expected name, labels exact
    degraded_name, missing_name = (hostile["raw"]["alerting"]["alertname"],
                                   hostile["raw"]["alerting"]["no_data"]["alertname"])  # fmt: skip
    held = AlertmanagerHook("alertmanager_default").get_alerts({"source": SOURCE_LABEL})
    mine = [a for a in held if a["labels"]["alertname"] in (degraded_name, missing_name)]
    by_name: dict[str, set[str]] = {}
    for a in mine:
        by_name.setdefault(a["labels"]["alertname"], set()).add(a["labels"]["model"])
    assert by_name[degraded_name] == set(on_b)
    assert by_name[missing_name] == {*elsewhere, *SILENT}  # no_data pages: no evidence to judge it on
    assert {a["labels"]["dag"] for a in mine} == {"model_performance_monitoring"}

    # a report per degraded name, each where the verdict document says, each naming its model
    assert set(document["reports"]) == set(on_b)
    for name, where in document["reports"].items():
        page = lake.read_bytes(where["file"])
        assert page is not None and b"<script>alert(1)</script>" not in page, name

    # the Pushgateway holds every judged name's series
    from modelwatch.hooks.pushgateway import PushgatewayHook

    groups = [g for g in PushgatewayHook("pushgateway_default").groups()
              if g["labels"].get("job") == hostile["raw"]["publish"]["job"]]  # fmt: skip
    assert len(groups) == 1
    published = {m["labels"]["model"] for m in groups[0]["modelwatch_verdict_info"]["metrics"]}
    assert published == set(verdicts)

    # nothing outside the lake's own folders, and every name on disk is bounded
    outside = [p for p in hostile["tmp"].rglob("*") if p.is_file() and not p.is_relative_to(hostile["lake"])]
    assert [p.name for p in outside] == ["thresholds.yaml"]
    tops = {p.relative_to(hostile["lake"]).parts[0] for p in hostile["lake"].rglob("*")}
    assert tops <= {*DATASETS, "_staging", "adhoc", "intraday"}, tops
    assert max(len(p.name.encode()) for p in hostile["lake"].rglob("*")) < 100
    assert not list((hostile["lake"] / "_staging").rglob("*.parquet"))
    json.dumps(document)  # the document stays JSON whatever the names
