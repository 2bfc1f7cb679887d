"""The one-run-per-prediction read over REST (``runs/search`` JSON -> frame) against the real MLflow server:
exactly the frame the hook's former MlflowClient path built (``MlflowClient.search_runs`` entity objects ->
``runs_to_frame``, restated here as the reference), on the seeded days and on runs with what the seeded
ones never have (a missing metric or tag, NaN and infinite values, an instance with a port).
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest

from devstack.scenarios import TEST_DAYS
from modelwatch.config import load_config
from modelwatch.extract import (
    _prediction_frame,
    _tag_keys,
    extract_predictions,
    runs_json_to_frame,
    sort_predictions,
    strip_port,
)
from modelwatch.hooks import MlflowHook
from modelwatch.timegrid import epoch_ms


def _client_frame(tracking_uri: str, exp_id: str, name: str, tags: Any, start_ms: int, end_ms: int,
                  page_size: int) -> pd.DataFrame:  # fmt: skip
    """The former MlflowClient path: the same search through ``MlflowClient`` (entity objects, every page),
    then ``runs_to_frame`` as it was."""
    from mlflow.tracking import MlflowClient

    client, runs, token = MlflowClient(tracking_uri), [], None
    while True:
        page = client.search_runs(
            [exp_id], f"attributes.start_time >= {start_ms} AND attributes.start_time < {end_ms}",
            max_results=page_size, order_by=["attributes.start_time ASC"], page_token=token,
        )  # fmt: skip
        runs.extend(page)
        token = page.token
        if not token:
            break
    keys, rows = _tag_keys(tags), []
    for run in runs:
        row = {column: str(run.data.tags.get(tag, "")) for column, tag in keys.items()}
        row["instance"] = strip_port(row["instance"])
        rows.append({"timestamp": int(run.info.start_time), **row,
                     **{k: float(run.data.metrics.get(k, math.nan)) for k in ("prediction_time", "accuracy", "loss")},
                     "run_id": run.info.run_id, "experiment": name})  # fmt: skip
    return _prediction_frame(rows)


def _both_ways(hook: MlflowHook, exp_id: str, name: str, tags: Any, start_ms: int, end_ms: int,
               page_size: int) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    old = _client_frame(hook.tracking_uri, exp_id, name, tags, start_ms, end_ms, page_size)
    new = runs_json_to_frame(
        hook.search_runs_json([exp_id], start_ms, end_ms, page_size=page_size, experiment=name), tags, name
    )
    return old, new


@pytest.mark.parametrize("day", sorted(TEST_DAYS), ids=str)
def test_seeded_day_reads_the_same_both_ways(seeded: Any, day: Any) -> None:
    cfg = load_config()
    [experiment] = [e for e in cfg.mlflow.experiments if e.layout == "run_per_prediction"]
    hook = MlflowHook()
    exp_id = hook.experiment_ids([experiment.name])[experiment.name]
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    start_ms, end_ms = epoch_ms(start), epoch_ms(start + timedelta(days=1))
    old, new = _both_ways(hook, exp_id, experiment.name, cfg.mlflow.tags, start_ms, end_ms, 50_000)
    pd.testing.assert_frame_equal(new, old)  # same rows in the same (server) order, same dtypes
    assert TEST_DAYS[day] == "no_data" or len(new) > 0
    # and extract_predictions (the REST path) is today's sorted frame of the client path
    got = extract_predictions(MlflowHook(), [experiment], cfg.mlflow.tags, start, start + timedelta(days=1), 50_000)
    pd.testing.assert_frame_equal(got, sort_predictions(old))


def test_rest_pages_of_50_equal_one_page_of_50000(seeded: Any) -> None:
    cfg = load_config()
    experiments = [e for e in cfg.mlflow.experiments if e.layout == "run_per_prediction"]
    start = datetime(2026, 3, 3, tzinfo=UTC)
    small_hook = MlflowHook()
    small = extract_predictions(small_hook, experiments, cfg.mlflow.tags, start, start + timedelta(days=1), 50)
    large_hook = MlflowHook()
    large = extract_predictions(large_hook, experiments, cfg.mlflow.tags, start, start + timedelta(days=1), 50_000)
    assert len(small) == sum(small_hook.pages_read) == 288
    assert small_hook.pages_read == [50] * 5 + [38]
    assert large_hook.pages_read == [288]
    assert small["run_id"].is_unique
    pd.testing.assert_frame_equal(small, large)


def test_missing_and_odd_values_read_the_same_both_ways(seeded: Any) -> None:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(seeded.config.mlflow_url)
    name = f"rest-read-{uuid.uuid4().hex[:8]}"
    exp_id = client.create_experiment(name)
    t0 = epoch_ms(datetime(2026, 4, 1, tzinfo=UTC))
    cases: list[tuple[int, dict[str, str], dict[str, float]]] = [
        (t0, {"model": "m", "model_version": "1", "instance": "model-a:8000"},
         {"prediction_time": 0.2, "accuracy": 0.9, "loss": 0.1}),
        (t0, {"model": "m", "instance": "[::1]:9100"}, {"prediction_time": 0.0}),  # same start time, no version
        (t0 + 1, {}, {}),  # no tag, no metric
        (t0 + 2, {"model": "m", "instance": "model-b"},
         {"prediction_time": math.nan, "accuracy": math.inf, "loss": -math.inf}),
        (t0 + 86_400_000, {"model": "m"}, {"prediction_time": 1.0}),  # next day: outside the window
    ]
    for ts, tags, metrics in cases:
        run = client.create_run(exp_id, start_time=ts, tags=tags)
        if metrics:
            client.log_batch(run.info.run_id, metrics=[Metric(k, v, ts, 0) for k, v in metrics.items()])
    hook = MlflowHook()
    keys = {"model": "model", "model_version": "model_version", "instance": "instance"}
    for page_size in (1, 3, 50_000):
        old, new = _both_ways(hook, exp_id, name, keys, t0, t0 + 86_400_000, page_size)
        pd.testing.assert_frame_equal(new, old)
    assert len(new) == 4
    assert sorted(new["instance"]) == ["", "::1", "model-a", "model-b"]
    odd = new.set_index("instance")
    assert math.isnan(odd.loc["", "prediction_time"]) and odd.loc["", "model"] == ""
    assert odd.loc["::1", "prediction_time"] == 0.0 and math.isnan(odd.loc["::1", "loss"])
    assert odd.loc["::1", "model_version"] == ""
    # the server keeps NaN but stores an infinite value as the largest finite double (either way the same)
    assert math.isnan(odd.loc["model-b", "prediction_time"]) and odd.loc["model-b", "accuracy"] > 1e308
    assert odd.loc["model-b", "loss"] < -1e308
