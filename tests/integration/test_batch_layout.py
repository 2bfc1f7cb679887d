"""The ``batch_table`` layout against the session stack's real MLflow server: batches written as the sample
service writes them (a run per batch, ``predictions.parquet``), across a window edge, come back through
``extract_predictions`` with exactly the window's rows; a finished batch run without its table is refused
naming the run and the artifact; the server's artifact proxy (``mlflow-artifacts:/``) reads the same as its
local artifact root, both through ``/get-artifact``. Seconds."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from devstack.model_service import BatchRecorder, log_batch_run
from devstack.stack import Stack
from modelwatch.errors import MlflowSourceRefused
from modelwatch.extract import batch_table, extract_predictions
from modelwatch.hooks import MlflowHook
from modelwatch.schema import PREDICTION_COLUMNS
from modelwatch.timegrid import epoch_ms

TAGS = {"model": "model", "model_version": "model_version", "instance": "instance"}
WINDOW = datetime(2026, 4, 1, tzinfo=UTC), datetime(2026, 4, 2, tzinfo=UTC)


@pytest.fixture
def mlflow(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, str, str]]:
    """(client, experiment id, experiment name): a fresh experiment, the stack's connections in the env."""
    from mlflow.tracking import MlflowClient

    for name, value in stack.airflow_env().items():
        monkeypatch.setenv(name, value)
    client = MlflowClient(tracking_uri=stack.config.mlflow_url)
    name = f"batch-layout-{uuid.uuid4().hex[:8]}"
    yield client, client.create_experiment(name), name


def read(name: str, start: datetime = WINDOW[0], end: datetime = WINDOW[1]) -> Any:
    return extract_predictions(MlflowHook(), [SimpleNamespace(name=name, layout="batch_table")], TAGS, start, end)


def test_batches_across_the_window_edges_give_exactly_the_window(mlflow: tuple[Any, str, str]) -> None:
    client, exp_id, name = mlflow
    start, end = epoch_ms(WINDOW[0]), epoch_ms(WINDOW[1])
    tags_a = {"model": "fraud-detector", "model_version": "3", "instance": "model-a:8000"}
    tags_b = {"model": "recommender", "model_version": "12", "instance": "model-b"}
    batches = [
        (tags_a, [start - 120_000, start - 1]),  # the day before: not even searched into
        (tags_a, [start - 60_000, start - 1, start, start + 59_999]),  # straddles the start
        (tags_b, [start + 3_600_000 + i for i in range(500)]),  # inside
        (tags_a, [end - 30_000, end - 1, end, end + 30_000]),  # straddles the end
        (tags_b, [end, end + 60_000]),  # the next day
    ]
    expected = sorted(t for _, ts in batches for t in ts if start <= t < end)
    run_ids = []
    for i, (tags, ts) in enumerate(batches):
        table = batch_table(ts, [0.1 + i] * len(ts), [1.0] * len(ts), None)
        run_ids.append(log_batch_run(client, exp_id, table, tags))

    frame = read(name)
    assert list(frame.columns) == list(PREDICTION_COLUMNS)
    assert [epoch_ms(t) for t in frame["timestamp"].dt.to_pydatetime()] == expected
    assert set(frame["run_id"]) == set(run_ids[1:4])
    assert frame.groupby("run_id").size().to_dict() == {run_ids[1]: 2, run_ids[2]: 500, run_ids[3]: 2}
    edge = frame[frame["run_id"] == run_ids[1]]
    assert set(edge["instance"]) == {"model-a"} and set(edge["model"]) == {"fraud-detector"}  # tags, port off
    assert frame["loss"].isna().all() and (frame["accuracy"] == 1.0).all()
    assert str(frame["timestamp"].dtype) == "datetime64[ms, UTC]"
    # The next window starts exactly at `end`: no row is read twice across the edge.
    following = read(name, WINDOW[1], WINDOW[1] + timedelta(days=1))
    assert [epoch_ms(t) for t in following["timestamp"].dt.to_pydatetime()] == [end, end, end + 30_000, end + 60_000]


def test_the_sample_service_recorder_writes_what_modelwatch_reads(mlflow: tuple[Any, str, str]) -> None:
    client, _, name = mlflow
    now = [epoch_ms(WINDOW[0]) / 1000 + 600]
    rec = BatchRecorder(client=client, experiment=name, model="sample-classifier", version="1",
                        instance="127.0.0.1", batch_seconds=60, batch_rows=1000, clock=lambda: now[0])
    t0 = epoch_ms(WINDOW[0]) + 600_000
    for i in range(1500):
        rec.record(t0 + i * 10, 0.01 * (i % 7), 1.0 if i % 2 else None, 0.2 if i % 2 else None)
    assert rec.flush() == 1500 and len(rec.batch_runs) == 2  # batch_rows splits it
    rec.record(t0 + 20_000, 0.5)
    assert rec.flush() == 0  # a one-row batch is not due before batch_seconds
    rec.close()
    assert len(rec.batch_runs) == 3 and rec.pending == 0
    run = client.get_run(rec.batch_runs[0])
    assert (run.info.status, run.info.start_time, run.info.end_time) == ("FINISHED", t0, t0 + 999 * 10)
    frame = read(name)
    assert len(frame) == 1501 and frame["run_id"].nunique() == 3
    assert set(frame["model"]) == {"sample-classifier"} and set(frame["instance"]) == {"127.0.0.1"}
    assert frame["accuracy"].isna().sum() == 751  # no label: null in Parquet, NaN in the frame


def test_batches_behind_the_servers_artifact_proxy_read_like_the_local_root(mlflow: tuple[Any, str, str]) -> None:
    client, exp_id, name = mlflow
    proxied_name = f"{name}-proxied"
    proxied_id = client.create_experiment(proxied_name, artifact_location=f"mlflow-artifacts:/{proxied_name}")
    start = epoch_ms(WINDOW[0])
    table = batch_table([start + 1, start + 2, start + 3], [0.1, 0.2, 0.3], [1.0, 0.0, None], [0.3, 0.4, None])
    tags = {"model": "fraud-detector", "model_version": "3", "instance": "model-a:8000"}
    local_run = log_batch_run(client, exp_id, table, tags)
    proxied_run = log_batch_run(client, proxied_id, table, tags)
    assert client.get_run(proxied_run).info.artifact_uri.startswith("mlflow-artifacts:/")
    assert client.get_run(local_run).info.artifact_uri.startswith("/")  # the stack's --default-artifact-root
    local, proxied = read(name), read(proxied_name)
    assert len(local) == 3 and set(local["run_id"]) == {local_run} and set(proxied["run_id"]) == {proxied_run}
    same = ["timestamp", "model", "model_version", "instance", "prediction_time", "accuracy", "loss"]
    assert local[same].equals(proxied[same])


def test_finished_batch_without_its_table_is_refused(mlflow: tuple[Any, str, str]) -> None:
    client, exp_id, name = mlflow
    start = epoch_ms(WINDOW[0])
    run = client.create_run(exp_id, start_time=start + 1000, tags={"model": "m", "instance": "i"})
    client.set_terminated(run.info.run_id, "FINISHED", end_time=start + 2000)
    with pytest.raises(MlflowSourceRefused) as info:
        read(name)
    message = str(info.value)
    assert name in message and run.info.run_id in message and "'predictions.parquet'" in message
    # The same run still RUNNING is a batch being written: skipped, not an error.
    client.update_run(run.info.run_id, status="RUNNING")
    assert len(read(name)) == 0
