"""Spreading models over mapped tasks: which models are judged, how they are grouped, and that judging them
in groups (staged parts committed by ``evaluate``) gives exactly what judging them together gives."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from config_helpers import small_config
from test_evidence_matrix import Case, frames

from modelwatch.correlate import correlate
from modelwatch.evaluate import evaluate
from modelwatch.fanout import model_groups, models_to_judge
from modelwatch.storage import Lake, StorageError
from modelwatch.verdict import verdicts_frame


def test_models_to_judge_are_the_seen_and_the_expected_without_untagged() -> None:
    assert models_to_judge({"b", "a", ""}, ["c"]) == ["a", "b", "c"]
    assert models_to_judge([], []) == []


def test_a_run_that_selects_models_judges_only_those() -> None:
    assert models_to_judge({"a", "b"}, ["c"], {"b", "c", "zz"}) == ["b", "c"]


@pytest.mark.parametrize(("n", "per_task", "groups"), [(1, 10, 1), (10, 10, 1), (11, 10, 2), (100, 10, 10), (7, 1, 7)])
def test_groups_hold_every_model_once_and_at_most_per_task(n: int, per_task: int, groups: int) -> None:
    models = [f"m{i:03d}" for i in range(n)]
    planned = model_groups(models, per_task)
    assert len(planned) == groups
    assert sorted(m for g in planned for m in g) == models
    assert all(0 < len(g) <= per_task for g in planned)


def test_groups_balance_prediction_counts() -> None:
    # two busy models and two quiet ones: alphabetical chunks would put both busy ones in one task
    rows = {"a": 100, "b": 100, "c": 1, "d": 1}
    planned = model_groups(sorted(rows), 2, rows)
    assert planned == [["a", "c"], ["b", "d"]]
    assert [sum(rows[m] for m in g) for g in planned] == [101, 101]


def test_groups_are_the_same_on_a_rerun() -> None:
    rows = {f"m{i}": (i * 37) % 11 for i in range(40)}
    assert model_groups(sorted(rows), 7, rows) == model_groups(sorted(rows, reverse=True), 7, dict(rows))


def test_no_model_still_gives_one_empty_group() -> None:
    assert model_groups([], 10) == [[]]


def test_per_task_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="models_per_task"):
        model_groups(["a"], 0)


def _fleet() -> tuple[pd.DataFrame, pd.DataFrame, object]:
    """Five models on their own instances, with the evidence matrix's incidents (degraded, unexplained,
    healthy), plus one global series."""
    cases = [Case(3600, 0.2, 0.4), Case(3600, 0.2, 0.4, saturates=False), Case(3600, 0.2, 0.4, slows=False),
             Case(600, 0.3, 0.5), Case(3600, 0.1, 0.3, gap=(1500, 2100))]  # fmt: skip
    preds, res = [], []
    for i, case in enumerate(cases):
        p, r, window = frames(case, seed=i)
        preds.append(p.assign(model=f"model-{i}", instance=f"host-{i}", run_id=p["run_id"] + f"-{i}"))
        res.append(r.assign(instance=f"host-{i}"))
    return pd.concat(preds, ignore_index=True), pd.concat(res, ignore_index=True), window


def test_judging_in_groups_equals_judging_together(tmp_path: Path) -> None:
    pred, res, window = _fleet()
    cfg = small_config()
    joined, corr = correlate(pred, res, cfg)
    together = evaluate(joined, corr, res, cfg, window)
    assert {v.verdict for v in together} >= {"degraded", "slow_unexplained", "healthy"}

    lake = Lake(tmp_path.as_uri())
    run_id = "manual__2026-03-03T00:00:00+00:00"
    models = models_to_judge(set(pred["model"]), cfg.evaluation.expected_models)
    rows = pred.groupby("model").size().to_dict()
    parts: dict[str, list[str]] = {"joined": [], "correlation": [], "verdicts": []}
    for k, group in enumerate(model_groups(models, 2, rows)):
        p = pred[pred["model"].isin(group)]
        r = res[res["instance"].isin({*p["instance"], ""})]
        j, c = correlate(p, r, cfg)
        v = evaluate(j, c, r, cfg, window, models=group)
        parts["joined"].append(lake.stage_frame(window, run_id, f"joined-{k}", j))
        parts["correlation"].append(lake.stage_frame(window, run_id, f"correlation-{k}", c))
        parts["verdicts"].append(lake.stage_frame(window, run_id, f"verdicts-{k}", verdicts_frame(v)))
    committed = {
        d: lake.read_partition(lake.commit_parts(d, window, urls, run_id=run_id, sort_by="model").url)
        for d, urls in parts.items()
    }

    def canonical(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
        return frame.sort_values(keys).reset_index(drop=True)

    pd.testing.assert_frame_equal(canonical(committed["verdicts"], ["model"]), canonical(
        lake.read_partition(lake.write_frame("verdicts", window, verdicts_frame(together), run_id="x").url),
        ["model"]))  # fmt: skip
    pd.testing.assert_frame_equal(canonical(committed["correlation"], ["model", "resource"]),
                                  canonical(corr, ["model", "resource"]), check_dtype=False)  # fmt: skip
    assert len(committed["joined"]) == len(joined)
    pd.testing.assert_frame_equal(canonical(committed["joined"], ["run_id"]), canonical(
        lake.read_partition(lake.write_frame("joined", window, joined, run_id="x").url), ["run_id"]))  # fmt: skip

    # staged parts live outside the datasets, per run, and are gone once dropped
    staged = Path(tmp_path, "_staging")
    assert any(staged.rglob("*.parquet"))
    lake.drop_staging(window, run_id)
    assert not any(staged.rglob("*.parquet"))


def test_a_missing_staged_part_names_it(tmp_path: Path) -> None:
    pred, res, window = _fleet()
    lake = Lake(tmp_path.as_uri())
    url = lake.stage_frame(window, "r1", "joined-0", pred.head())
    Path(url.removeprefix("file://")).unlink()
    with pytest.raises(StorageError, match="staged part .*joined-0.parquet is missing"):
        lake.commit_parts("joined", window, [url], run_id="r1")


def test_two_runs_of_a_window_stage_apart(tmp_path: Path) -> None:
    _, _, window = _fleet()
    lake = Lake(tmp_path.as_uri())
    assert lake.staging_url(window, "manual__a") != lake.staging_url(window, "scheduled__a")
    lake.stage_frame(window, "manual__a", "p", pd.DataFrame({"x": [1]}))
    kept = lake.stage_frame(window, "scheduled__a", "p", pd.DataFrame({"x": [2]}))
    lake.drop_staging(window, "manual__a")
    assert Path(kept.removeprefix("file://")).exists()
