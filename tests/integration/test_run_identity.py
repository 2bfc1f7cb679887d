"""Run identity and the alert lifecycle, against the real seeded stack, Alertmanager and webhook receiver.

- An ad-hoc run (a trigger-form window, a model subset) writes under ``adhoc/`` and leaves the scheduled
  day's partitions and documents byte-identical.
- A day judged degraded and then, re-run with other thresholds, healthy: the re-run leaves no alert
  document for the day, and the alert is resolved in Alertmanager; the webhook receiver gets ``resolved``.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml
from config_helpers import own_alertnames
from polling import wait_until

from devstack.runner import run_day, run_window, task_states, xcom

REPO = Path(__file__).resolve().parents[2]
CPU_DAY = date(2026, 3, 3)  # cpu_saturation (devstack/CONTRACT.md): fraud-detector degraded 10:00-12:00


def _config(path: Path, name: str, **evaluation: Any) -> Path:
    raw = own_alertnames(yaml.safe_load((REPO / "include" / "thresholds.yaml").read_text()), name)
    raw["evaluation"] = {**raw["evaluation"], **evaluation}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture
def env(seeded_stack: Any, airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The stack's connections, a lake of this test's own and a configuration with alert names of its own."""
    name = f"ModelPredictionsDegradedLifecycle{uuid.uuid4().hex[:8]}"
    config = _config(tmp_path / "thresholds.yaml", name)
    for key, value in seeded_stack.airflow_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MODELWATCH_CONFIG", str(config))
    monkeypatch.setenv("MODELWATCH_STORAGE_URL", (tmp_path / "lake").as_uri())
    return {"lake": tmp_path / "lake", "alertname": name, "tmp": tmp_path, "monkeypatch": monkeypatch}


def _canonical_files(lake: Path) -> dict[str, bytes]:
    """Every file of the lake's canonical tables (not ``adhoc/``, not the staging area), with its bytes."""
    return {
        str(p.relative_to(lake)): p.read_bytes()
        for p in sorted(lake.rglob("*"))
        if p.is_file() and p.relative_to(lake).parts[0] not in ("adhoc", "_staging")
    }


def _state(run: Any) -> str:
    return str(getattr(run.state, "value", run.state))


def test_ad_hoc_and_model_subset_runs_leave_the_scheduled_partitions_byte_identical(env: dict[str, Any]) -> None:
    from modelwatch.window import run_key

    lake = env["lake"]
    assert _state(run_day(CPU_DAY)) == "success"
    scheduled = _canonical_files(lake)
    assert f"verdicts/dt={CPU_DAY}/part-00000.parquet" in scheduled and f"alerts/dt={CPU_DAY}/_payload.json" in scheduled

    # the trigger form: two hours around the incident, every model; then the whole day for one model
    two_hours = run_window(datetime(2026, 3, 3, 10, tzinfo=UTC), datetime(2026, 3, 3, 12, tzinfo=UTC))
    subset = run_day(CPU_DAY, params={"models": ["recommender"]})
    assert (_state(two_hours), _state(subset)) == ("success", "success")

    assert _canonical_files(lake) == scheduled  # byte for byte, documents included
    keys = {run_key(two_hours.run_id, two_hours.dag_id): two_hours, run_key(subset.run_id, subset.dag_id): subset}
    for key, run in keys.items():
        document = xcom(run, "evaluate")["verdict_document"]
        assert document == f"{lake.as_uri()}/adhoc/verdicts/dt={CPU_DAY}/run={key}/_verdict.json"
    # a person finds them with DuckDB, by run
    rows = duckdb.sql(
        f"select run, model, verdict from read_parquet('{lake}/adhoc/verdicts/*/*/*.parquet', hive_partitioning=true) "
        "order by all"
    ).fetchall()
    assert rows == sorted([
        (run_key(two_hours.run_id, two_hours.dag_id), "fraud-detector", "degraded"),
        (run_key(two_hours.run_id, two_hours.dag_id), "recommender", "healthy"),
        (run_key(subset.run_id, subset.dag_id), "recommender", "healthy"),
    ])  # fmt: skip


def test_a_multi_day_trigger_form_window_is_refused_and_writes_nothing(env: dict[str, Any]) -> None:
    run = run_window(datetime(2026, 3, 3, tzinfo=UTC), datetime(2026, 3, 5, tzinfo=UTC))
    assert _state(run) == "failed"
    assert task_states(run)["extract_resources"] == "failed"
    assert not env["lake"].exists() or not any(p.suffix == ".parquet" for p in env["lake"].rglob("*"))


def _alertmanager(stack: Any, alertname: str, model: str) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode([("filter", f'alertname="{alertname}"'), ("filter", f'model="{model}"')])
    with urllib.request.urlopen(f"{stack.config.alertmanager_url}/api/v2/alerts?{query}", timeout=5) as resp:
        return json.loads(resp.read())


def _notified(stack: Any, alertname: str, model: str, status: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{stack.config.webhook_url}/alerts", timeout=5) as resp:
        notifications = json.loads(resp.read())
    return [a for n in notifications for a in n.get("alerts", [])
            if a["labels"].get("alertname") == alertname and a["labels"].get("model") == model
            and a["status"] == status]  # fmt: skip


def test_a_degraded_then_healthy_rerun_resolves_the_alert_and_leaves_no_alert_document(
    seeded_stack: Any, env: dict[str, Any]
) -> None:
    lake, name = env["lake"], env["alertname"]
    alerts = lake / "alerts" / f"dt={CPU_DAY}"

    first = run_day(CPU_DAY)
    assert task_states(first)["post_alert"] == "success"
    assert {p.name for p in alerts.iterdir()} == {"_payload.json", "_delivery.json"}
    held = wait_until(lambda: _alertmanager(seeded_stack, name, "fraud-detector"), timeout=15,
                      what=f"Alertmanager to hold {name} for fraud-detector")  # fmt: skip
    assert held[0]["status"]["state"] == "active"
    wait_until(lambda: _notified(seeded_stack, name, "fraud-detector", "firing"), timeout=30,
               what="the webhook receiver to get the firing alert")  # fmt: skip

    # The same day judged again with thresholds under which nothing is slow: the model is healthy now.
    env["monkeypatch"].setenv("MODELWATCH_CONFIG", str(_config(env["tmp"] / "relaxed.yaml", name,
                                                               slow_prediction_seconds=1000, models={})))  # fmt: skip
    again = run_day(CPU_DAY)
    assert _state(again) == "success"
    doc = json.loads((lake / "verdicts" / f"dt={CPU_DAY}" / "_verdict.json").read_text())
    assert doc["run_id"] == again.run_id
    assert {v["model"]: v["verdict"] for v in doc["verdicts"]} == {"fraud-detector": "healthy", "recommender": "healthy"}
    assert not alerts.exists() or list(alerts.iterdir()) == []  # no alert document outlives its verdict
    result = xcom(again, "post_alert")
    assert result["posted"] == 0 and [r["model"] for r in result["resolved"]] == ["fraud-detector"]

    # resolved in Alertmanager (not active any more) and the receivers told so
    wait_until(lambda: _alertmanager(seeded_stack, name, "fraud-detector"),
               until=lambda got: all(a["status"]["state"] != "active" for a in got), timeout=15,
               what=f"Alertmanager to resolve {name} for fraud-detector")  # fmt: skip
    resolved = wait_until(lambda: _notified(seeded_stack, name, "fraud-detector", "resolved"), timeout=30,
                          what="the webhook receiver to get status: resolved")  # fmt: skip
    assert "cpu" in resolved[0]["labels"]["resources"].split(",")


def _active(stack: Any, name: str, model: str) -> list[dict[str, Any]]:
    return [a for a in _alertmanager(stack, name, model) if a["status"]["state"] == "active"]


def test_only_the_dag_and_scope_that_paged_end_the_page(seeded_stack: Any, env: dict[str, Any]) -> None:
    """The daily DAG pages for fraud-detector; the same model judged healthy by the hourly DAG, or by an
    ad-hoc run of the daily DAG, does not end that page (before, both resolved it and overwrote its notes)."""
    lake, name = env["lake"], env["alertname"]
    assert task_states(run_day(CPU_DAY))["post_alert"] == "success"
    (held,) = wait_until(lambda: _active(seeded_stack, name, "fraud-detector"), timeout=15,
                         what=f"Alertmanager to hold {name} for fraud-detector")  # fmt: skip
    assert (held["labels"]["dag"], held["labels"]["scope"]) == ("model_performance_monitoring", "canonical")
    delivered = (lake / "alerts" / f"dt={CPU_DAY}" / "_delivery.json").read_bytes()

    # nothing is slow under these thresholds: every run below judges fraud-detector healthy and may page
    env["monkeypatch"].setenv("MODELWATCH_CONFIG", str(_config(env["tmp"] / "relaxed.yaml", name,
                                                               slow_prediction_seconds=1000, models={})))  # fmt: skip
    hour = run_window(datetime(2026, 3, 3, 10, tzinfo=UTC), datetime(2026, 3, 3, 11, tzinfo=UTC),
                      dag_id="model_performance_monitoring_hourly")  # fmt: skip
    assert task_states(hour)["post_alert"] == "success" and xcom(hour, "post_alert")["resolved"] == []
    subset = run_day(CPU_DAY, params={"models": ["fraud-detector"]})
    assert task_states(subset)["post_alert"] == "success" and xcom(subset, "post_alert")["resolved"] == []
    dry = run_day(CPU_DAY, params={"dry_run": True})
    assert xcom(dry, "evaluate")["verdict_document"].startswith(f"{lake.as_uri()}/adhoc/verdicts/")
    (still,) = _active(seeded_stack, name, "fraud-detector")
    assert still["labels"] == held["labels"] and still["annotations"] == held["annotations"]  # not overwritten
    # the record of what was sent is the paging run's still
    assert (lake / "alerts" / f"dt={CPU_DAY}" / "_delivery.json").read_bytes() == delivered


def test_a_source_with_nothing_for_a_judged_day_keeps_its_evidence(seeded_stack: Any, env: dict[str, Any]) -> None:
    """Re-judging a day Prometheus no longer has (past its retention; here every query made to answer
    nothing) never replaces the stored samples with an empty partition: the day stays degraded."""
    lake, name = env["lake"], env["alertname"]
    first = run_day(CPU_DAY)
    stored = xcom(first, "evaluate")["resources"]
    assert stored["rows"] > 0
    raw = yaml.safe_load(_config(env["tmp"] / "gone.yaml", name).read_text())
    for q in raw["prometheus"]["queries"]:
        q["promql"] = f"({q['promql']}) unless on() vector(1)"  # a valid query with no series
    (env["tmp"] / "gone.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    env["monkeypatch"].setenv("MODELWATCH_CONFIG", str(env["tmp"] / "gone.yaml"))
    again = run_day(CPU_DAY)
    assert _state(again) == "success"
    evaluation = xcom(again, "evaluate")
    assert evaluation["resources"]["sha256"] == stored["sha256"]  # the stored partition, as it was
    assert evaluation["summary"]["fraud-detector"] == "degraded"
    manifest = json.loads((lake / "resources" / f"dt={CPU_DAY}" / "_manifest.json").read_text())
    assert manifest["run_id"] == first.run_id
