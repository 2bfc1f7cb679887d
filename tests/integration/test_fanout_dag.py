"""The mapped ``correlate`` under ``dag.test()`` against the real seeded stack: one model per group gives
two mapped task instances, and the day's verdicts and partitions are what one group gives."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
import yaml

from devstack.runner import run_window, xcom

REPO = Path(__file__).resolve().parents[2]
# the memory_pressure day of devstack/CONTRACT.md: both models degraded (memory) on model-b 16:00-18:00
DAY_START, DAY_END = datetime(2026, 3, 6, tzinfo=UTC), datetime(2026, 3, 7, tzinfo=UTC)


def _env(seeded_stack, monkeypatch, folder: Path, per_task: int) -> str:
    raw = yaml.safe_load((REPO / "include" / "thresholds.yaml").read_text())
    raw["correlation"]["models_per_task"] = per_task
    folder.mkdir()
    (folder / "thresholds.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    for key, value in seeded_stack.airflow_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MODELWATCH_CONFIG", str(folder / "thresholds.yaml"))
    monkeypatch.setenv("MODELWATCH_STORAGE_URL", lake := (folder / "lake").as_uri())
    return lake


@pytest.fixture
def runs(seeded_stack, airflow_db, tmp_path, monkeypatch):
    """The memory_pressure day as a dry run, judged in one group and in one group per model: per
    ``models_per_task``, the run's state, the states of its mapped ``correlate`` instances, the ``evaluate``
    XCom and the lake (read at once: the next ``dag.test()`` of a run without logical date replaces it)."""
    out = {}
    for per_task in (10, 1):
        lake = _env(seeded_stack, monkeypatch, tmp_path / f"per-task-{per_task}", per_task)
        run = run_window(DAY_START, DAY_END, params={"dry_run": True})
        mapped = [str(getattr(t.state, "value", t.state)) for t in run.get_task_instances() if t.task_id == "correlate"]
        out[per_task] = (str(getattr(run.state, "value", run.state)), mapped, xcom(run, "evaluate"), lake)
    return out


def test_one_group_per_model_maps_two_tasks_and_judges_as_one_group(runs):
    from modelwatch.storage import Lake

    docs = {}
    for per_task, (state, mapped, evaluation, lake) in runs.items():
        assert state == "success"
        assert mapped == ["success"] * {10: 1, 1: 2}[per_task]
        docs[per_task] = Lake(lake).read_document(evaluation["verdict_document"])
        # one data file per dataset (a dry run's, under adhoc/), and no staged part left behind
        root = Path(lake.removeprefix("file://"))
        for dataset in ("joined", "correlation", "verdicts"):
            folder = Path(evaluation[dataset]["url"].removeprefix("file://"))
            assert folder.is_relative_to(root / "adhoc" / dataset / "dt=2026-03-06"), folder
            assert sorted(p.name for p in folder.glob("*.parquet")) == ["part-00000.parquet"]
        assert not [p for p in root.rglob("*.parquet") if "_staging" in p.parts]

    def verdicts(doc):
        return {v["model"]: (v["verdict"], [r["resource"] for r in v["saturated_resources"]]) for v in doc["verdicts"]}

    assert verdicts(docs[1]) == verdicts(docs[10])
    assert verdicts(docs[1]) == {"fraud-detector": ("degraded", ["memory"]), "recommender": ("degraded", ["memory"])}
    # the joined rows are the same predictions, whichever way they were grouped
    counts = {
        per_task: duckdb.sql(
            f"select model, count(*) n, sum(slow::int) slow from read_parquet('{evaluation['joined']['url'].removeprefix('file://')}"
            "/*.parquet') group by model order by model"
        ).fetchall()
        for per_task, (_, _, evaluation, _) in runs.items()
    }
    assert counts[1] == counts[10] and len(counts[1]) == 2
