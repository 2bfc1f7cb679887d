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
from datetime import date
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
