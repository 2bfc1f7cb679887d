"""Quality through the whole DAG against the real seeded stack: a window judged against the lake's own
history, a regression paging under its own alert name, and resolved once a run judges the quality ok.

The seeded accuracy (about 0.94 per prediction, every day) does not drift, so the regression comes from a
floor above it (``quality.accuracy.limit: 0.95``); the second run drops the floor and compares with the
day before, which the first run of this test wrote to the lake.
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from config_helpers import own_alertnames
from polling import wait_until

from devstack.runner import run_day, task_states, xcom

REPO = Path(__file__).resolve().parents[2]
REFERENCE_DAY, DAY = date(2026, 3, 2), date(2026, 3, 3)  # normal, then cpu_saturation (devstack/CONTRACT.md)


def _config(path: Path, name: str, accuracy_limit: float | None) -> Path:
    raw = own_alertnames(yaml.safe_load((REPO / "include" / "thresholds.yaml").read_text()), name)
    raw["quality"]["accuracy"] = {**raw["quality"]["accuracy"], "limit": accuracy_limit}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _webhook(stack: Any, alertname: str, status: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{stack.config.webhook_url}/alerts", timeout=5) as resp:
        notifications = json.loads(resp.read())
    return [a for n in notifications for a in n.get("alerts", [])
            if a["labels"].get("alertname") == alertname and a["status"] == status]  # fmt: skip


def test_a_quality_regression_pages_on_its_own_and_is_resolved_when_quality_is_ok_again(
    seeded_stack: Any, airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"ModelPredictionsDegradedQ{uuid.uuid4().hex[:8]}"
    quality_alert = f"{name}Quality"
    for key, value in seeded_stack.airflow_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MODELWATCH_STORAGE_URL", (lake := tmp_path / "lake").as_uri())
    monkeypatch.setenv("MODELWATCH_CONFIG", str(_config(tmp_path / "floor.yaml", name, 0.95)))

    run_day(REFERENCE_DAY, params={"dry_run": True})  # the history the next day is judged against
    floor = run_day(DAY)
    doc = json.loads((lake / "verdicts" / f"dt={DAY}" / "_verdict.json").read_text())
    quality = {v["model"]: (v["quality"], v["quality_reason"], v["reference_days"]) for v in doc["verdicts"]}
    for model, (verdict, reason, days) in quality.items():
        assert verdict == "regressed", (model, reason)
        assert "below its limit 0.95" in reason and days == [REFERENCE_DAY.isoformat()]
    assert task_states(floor)["post_alert"] == "success"
    fired = wait_until(lambda: _webhook(seeded_stack, quality_alert, "firing"), timeout=30,
                       until=lambda got: {a["labels"]["model"] for a in got} == set(quality),
                       what=f"the webhook receiver to get {quality_alert} for {sorted(quality)}")  # fmt: skip
    for a in fired:
        assert a["labels"] == {"alertname": quality_alert, "model": a["labels"]["model"], "severity": "warning",
                               "source": "modelwatch"}  # fmt: skip
        assert a["annotations"]["verdict"] == "quality regressed"
        assert a["annotations"]["reference_days"] == REFERENCE_DAY.isoformat()
    # the latency page of the same day is its own alert, next to it
    assert {a["labels"]["alertname"] for a in json.loads((lake / "alerts" / f"dt={DAY}" / "_payload.json").read_text())
            } == {name, quality_alert}  # fmt: skip

    # Without the floor the same day is judged against the day before: the same accuracy, ok.
    monkeypatch.setenv("MODELWATCH_CONFIG", str(_config(tmp_path / "no-floor.yaml", name, None)))
    again = run_day(DAY)
    evaluation = xcom(again, "evaluate")
    assert set(evaluation["quality"].values()) == {"ok"}, evaluation["quality"]
    resolved = xcom(again, "post_alert")["resolved"]
    assert sorted(r["model"] for r in resolved if r["alertname"] == quality_alert) == sorted(quality)
    wait_until(lambda: _webhook(seeded_stack, quality_alert, "resolved"), timeout=30,
               until=lambda got: {a["labels"]["model"] for a in got} == set(quality),
               what=f"the webhook receiver to get {quality_alert} resolved")  # fmt: skip


def test_each_day_asks_to_rejudge_the_quality_of_the_days_before_and_a_rejudging_pages_only_quality(
    seeded_stack: Any, airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Labels arrive late: with ``quality.rejudge_days: 2`` a day's run triggers a quality-only run of each
    of the two days before it (canonical windows in the trigger form's params); such a run judges and
    stores its day as any run, and posts quality alerts only."""
    from airflow.models import DagRun
    from airflow.utils.session import create_session

    from devstack.runner import DAG_ID, run_window

    name = f"ModelPredictionsDegradedR{uuid.uuid4().hex[:8]}"
    path = _config(tmp_path / "floor.yaml", name, 0.95)
    raw = yaml.safe_load(path.read_text())
    raw["quality"]["rejudge_days"] = 2
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    for key, value in seeded_stack.airflow_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MODELWATCH_STORAGE_URL", (tmp_path / "lake").as_uri())
    monkeypatch.setenv("MODELWATCH_CONFIG", str(path))

    day_run = run_day(DAY)
    assert task_states(day_run)["rejudge_quality"] == "success"
    with create_session() as session:
        asked = {r.run_id: r.conf for r in session.query(DagRun).filter(DagRun.dag_id == DAG_ID,
                 DagRun.run_id.like(f"rejudge_quality__%__{day_run.run_id}"))}  # fmt: skip
    assert asked == {
        f"rejudge_quality__{d}__{day_run.run_id}": {"window_start": f"{d}T00:00:00+00:00",
                                                  "window_end": f"{e}T00:00:00+00:00", "quality_only": True}
        for d, e in (("2026-03-02", "2026-03-03"), ("2026-03-01", "2026-03-02"))
    }  # fmt: skip

    # what one of them does (run here in-process: dag.test() does not run the runs it triggers)
    start = datetime(2026, 3, 3, tzinfo=UTC)
    rejudged = run_window(start, start + timedelta(days=1), params={"quality_only": True})
    evaluation = xcom(rejudged, "evaluate")
    assert evaluation["verdict_document"].endswith(f"/verdicts/dt={DAY}/_verdict.json")  # canonical
    assert evaluation["reason"].startswith("quality only: paging for"), evaluation["reason"]
    assert task_states(rejudged)["rejudge_quality"] == "skipped"  # a re-judging asks for no more
    posted = json.loads((tmp_path / "lake" / "alerts" / f"dt={DAY}" / "_delivery.json").read_text())["alerts"]
    assert {a["labels"]["alertname"] for a in posted} == {f"{name}Quality"}  # the degraded alert is not re-posted
    assert xcom(rejudged, "post_alert")["resolved"] == []  # nor resolved
