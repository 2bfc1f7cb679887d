"""Late labels through the whole DAG against the real seeded stack: each day asks for quality-only
re-judgings of the days before it, and such a run pages for quality only.

The seeded accuracy of these days (about 0.94) does not drift, so the regression comes from a floor above
it (``quality.accuracy.limit: 0.95``). The quality scenarios themselves are in test_quality_scenarios.py.
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

from devstack.runner import run_day, task_states, xcom

REPO = Path(__file__).resolve().parents[2]
DAY = date(2026, 3, 3)  # cpu_saturation (devstack/CONTRACT.md)


def _config(path: Path, name: str, accuracy_limit: float | None) -> Path:
    raw = own_alertnames(yaml.safe_load((REPO / "include" / "thresholds.yaml").read_text()), name)
    raw["quality"]["accuracy"] = {**raw["quality"]["accuracy"], "limit": accuracy_limit}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


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
    # the re-judging records its own delivery; the day's _delivery.json stays what the day's own run paged
    alerts = tmp_path / "lake" / "alerts" / f"dt={DAY}"
    posted = json.loads((alerts / "_quality_delivery.json").read_text())["alerts"]
    assert name in {a["labels"]["alertname"] for a in json.loads((alerts / "_delivery.json").read_text())["alerts"]}
    assert {a["labels"]["alertname"] for a in posted} == {f"{name}Quality"}  # the degraded alert is not re-posted
    assert xcom(rejudged, "post_alert")["resolved"] == []  # nor resolved
