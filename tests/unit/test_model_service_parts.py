"""The sample model service without servers: day/run helpers, batching, the recorder against a fake MLflow
client (rollover, retries, bounded buffer), and the app in-process (timing middleware, metrics)."""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, date, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from polling import wait_until

from devstack.model_service import (
    MAX_METRICS_PER_BATCH,
    PredictionRecorder,
    PredictionTimer,
    ServiceSettings,
    build_parser,
    create_app,
    day_bounds_ms,
    log_loss_of,
    run_start_ms,
    sample_rows,
    settings_from_args,
    split_batches,
    utc_day,
)


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


class FakeClient:
    """The MlflowClient calls the recorder makes, kept in memory; ``fail`` makes log_batch raise."""

    def __init__(self) -> None:
        self.experiments: dict[str, str] = {}
        self.runs: dict[str, dict[str, Any]] = {}
        self.batches: list[tuple[str, int]] = []
        self.fail = 0

    def get_experiment_by_name(self, name: str) -> Any:
        eid = self.experiments.get(name)
        return SimpleNamespace(experiment_id=eid, lifecycle_stage="active") if eid else None

    def create_experiment(self, name: str) -> str:
        self.experiments[name] = str(len(self.experiments) + 1)
        return self.experiments[name]

    def create_run(self, experiment_id: str, start_time: int, tags: dict[str, str], run_name: str) -> Any:
        run_id = f"run{len(self.runs)}"
        self.runs[run_id] = {
            "experiment_id": experiment_id, "start_time": start_time, "tags": dict(tags), "metrics": [],
            "status": "RUNNING", "end_time": None,
        }  # fmt: skip
        return SimpleNamespace(info=SimpleNamespace(run_id=run_id))

    def log_batch(self, run_id: str, metrics: list[Any], synchronous: bool = True) -> None:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("MLflow is down")
        assert len(metrics) <= MAX_METRICS_PER_BATCH
        self.batches.append((run_id, len(metrics)))
        self.runs[run_id]["metrics"] += [(m.key, m.value, m.timestamp, m.step) for m in metrics]

    def set_terminated(self, run_id: str, status: str, end_time: int) -> None:
        self.runs[run_id].update(status=status, end_time=end_time)


class Clock:
    def __init__(self, when: str) -> None:
        self.now = ms(when) / 1000

    def __call__(self) -> float:
        return self.now


def recorder(client: FakeClient, clock: Clock, **kwargs: Any) -> PredictionRecorder:
    return PredictionRecorder(
        client=client, experiment="exp", model="m", version="1", instance="127.0.0.1", clock=clock, **kwargs
    )


# -- pure helpers ------------------------------------------------------------------------------------------


def test_day_helpers() -> None:
    assert utc_day(ms("2026-11-20T23:59:59.999")) == date(2026, 11, 20)
    assert utc_day(ms("2026-11-21T00:00:00")) == date(2026, 11, 21)
    assert day_bounds_ms(date(2026, 11, 20)) == (ms("2026-11-20T00:00:00"), ms("2026-11-20T23:59:59.999"))
    started = ms("2026-11-20T10:00:00")
    assert run_start_ms(date(2026, 11, 20), started) == started
    assert run_start_ms(date(2026, 11, 21), started) == ms("2026-11-21T00:00:00")


@pytest.mark.parametrize(
    ("n", "sizes"), [(0, []), (1, [1]), (1000, [1000]), (1001, [1000, 1]), (2500, [1000, 1000, 500])]
)
def test_split_batches(n: int, sizes: list[int]) -> None:
    chunks = split_batches(list(range(n)))
    assert [len(c) for c in chunks] == sizes
    assert [x for c in chunks for x in c] == list(range(n))
    with pytest.raises(ValueError):
        split_batches([1], 0)


def test_log_loss() -> None:
    assert log_loss_of(1.0) == pytest.approx(0.0, abs=1e-12)
    assert log_loss_of(0.5) == pytest.approx(math.log(2))
    assert math.isfinite(log_loss_of(0.0))


# -- the recorder ------------------------------------------------------------------------------------------


def test_recorder_writes_the_metric_history_layout() -> None:
    client, clock = FakeClient(), Clock("2026-11-20T10:00:00")
    rec = recorder(client, clock)
    rec.record(ms("2026-11-20T10:00:01"), 0.012, 1.0, 0.1)
    rec.record(ms("2026-11-20T10:00:02"), 0.7)  # no label: prediction_time only
    assert rec.flush() == 2 and rec.pending == 0
    ((run_id, run),) = client.runs.items()
    assert run["tags"] == {"model": "m", "model_version": "1", "instance": "127.0.0.1"}
    assert run["start_time"] == ms("2026-11-20T10:00:00")
    assert sorted(run["metrics"]) == sorted([
        ("prediction_time", 0.012, ms("2026-11-20T10:00:01"), 0),
        ("accuracy", 1.0, ms("2026-11-20T10:00:01"), 0),
        ("loss", 0.1, ms("2026-11-20T10:00:01"), 0),
        ("prediction_time", 0.7, ms("2026-11-20T10:00:02"), 1),
    ])  # fmt: skip
    assert client.experiments == {"exp": "1"}
    assert rec.flush() == 0 and len(client.runs) == 1


def test_recorder_logs_the_models_output_with_each_prediction() -> None:
    client, clock = FakeClient(), Clock("2026-11-20T10:00:00")
    rec = recorder(client, clock)
    rec.record(ms("2026-11-20T10:00:01"), 0.012, 1.0, 0.1, score=0.83, predicted_label=1)
    rec.record(ms("2026-11-20T10:00:02"), 0.7, score=0.21, predicted_label=0)  # no label: no accuracy or loss
    assert rec.flush() == 2
    ((_, run),) = client.runs.items()
    assert sorted(run["metrics"]) == sorted([
        ("prediction_time", 0.012, ms("2026-11-20T10:00:01"), 0), ("score", 0.83, ms("2026-11-20T10:00:01"), 0),
        ("predicted_label", 1.0, ms("2026-11-20T10:00:01"), 0), ("accuracy", 1.0, ms("2026-11-20T10:00:01"), 0),
        ("loss", 0.1, ms("2026-11-20T10:00:01"), 0),
        ("prediction_time", 0.7, ms("2026-11-20T10:00:02"), 1), ("score", 0.21, ms("2026-11-20T10:00:02"), 1),
        ("predicted_label", 0.0, ms("2026-11-20T10:00:02"), 1),
    ])  # fmt: skip


def test_a_batch_table_holds_the_models_output() -> None:
    from devstack.model_service import Point, batch_arrow_table

    table = batch_arrow_table([Point(ms("2026-11-20T10:00:01"), 0, 0.01, 1.0, 0.1, 0.83, 1),
                               Point(ms("2026-11-20T10:00:02"), 1, 0.02)])  # fmt: skip
    assert table.column_names == ["timestamp", "prediction_time", "accuracy", "loss", "score", "predicted_label"]
    assert table.column("score").to_pylist() == [0.83, None]
    assert table.column("predicted_label").to_pylist() == [1, None]
    assert str(table.schema.field("predicted_label").type) == "int64"


def test_recorder_rolls_over_at_utc_midnight() -> None:
    client, clock = FakeClient(), Clock("2026-11-20T23:59:00")
    rec = recorder(client, clock, grace_s=30)
    rec.record(ms("2026-11-20T23:59:59.500"), 0.01)
    rec.flush()
    clock.now = ms("2026-11-21T00:00:10") / 1000
    # Arrived before midnight, recorded after: still the old day's run, step 1.
    rec.record(ms("2026-11-20T23:59:59.900"), 0.02)
    rec.record(ms("2026-11-21T00:00:05"), 0.03)
    rec.flush()
    first, second = client.runs.values()
    assert [m[3] for m in first["metrics"]] == [0, 1]
    assert second["start_time"] == ms("2026-11-21T00:00:00")
    assert [(m[2], m[3]) for m in second["metrics"]] == [(ms("2026-11-21T00:00:05"), 0)]
    assert first["status"] == "RUNNING"  # within the grace period
    clock.now = ms("2026-11-21T00:00:41") / 1000
    rec.flush()
    assert (first["status"], first["end_time"]) == ("FINISHED", ms("2026-11-20T23:59:59.999"))
    assert second["status"] == "RUNNING"
    rec.close()
    assert (second["status"], second["end_time"]) == ("FINISHED", ms("2026-11-21T00:00:41"))


def test_recorder_splits_large_flushes() -> None:
    client, clock = FakeClient(), Clock("2026-11-20T10:00:00")
    rec = recorder(client, clock)
    for i in range(700):  # 3 metrics each: 2,100 points
        rec.record(ms("2026-11-20T10:00:00") + i, 0.01, 0.0, 0.5)
    assert rec.flush() == 700
    assert [n for _, n in client.batches] == [1000, 1000, 100]
    steps = {m[3] for m in next(iter(client.runs.values()))["metrics"]}
    assert steps == set(range(700))


def test_recorder_retries_after_a_failure_and_never_raises() -> None:
    client, clock = FakeClient(), Clock("2026-11-20T10:00:00")
    rec = recorder(client, clock)
    client.fail = 2
    rec.record(ms("2026-11-20T10:00:01"), 0.01)
    assert rec.flush() == 0 and rec.pending == 1 and rec.failures == 1
    rec.record(ms("2026-11-20T10:00:02"), 0.02)
    assert rec.flush() == 0 and rec.pending == 2
    assert rec.flush() == 2 and rec.pending == 0
    points = next(iter(client.runs.values()))["metrics"]
    assert [(m[1], m[3]) for m in points] == [(0.01, 0), (0.02, 1)]  # order and steps kept


def test_recorder_buffer_is_bounded() -> None:
    client, clock = FakeClient(), Clock("2026-11-20T10:00:00")
    rec = recorder(client, clock, max_buffer=5)
    client.fail = 100
    for i in range(8):
        rec.record(ms("2026-11-20T10:00:00") + i, float(i))
    assert rec.pending == 5 and rec.dropped == 3
    rec.flush()
    assert rec.pending == 5
    client.fail = 0
    rec.flush()
    values = [m[1] for m in next(iter(client.runs.values()))["metrics"]]
    assert values == [3.0, 4.0, 5.0, 6.0, 7.0]  # the oldest went first


def test_recorder_thread_flushes_and_close_terminates() -> None:
    client = FakeClient()
    rec = PredictionRecorder(
        client=client, experiment="exp", model="m", version="1", instance="h", flush_seconds=0.05
    )
    rec.start()
    rec.record(int(time.time() * 1000), 0.01)
    wait_until(lambda: rec.written, timeout=5, interval=0.02, what="the flusher thread to write the prediction")
    assert rec.written == 1
    rec.close()
    assert [r["status"] for r in client.runs.values()] == ["FINISHED"]


# -- the app in-process ------------------------------------------------------------------------------------


def test_cli_flags() -> None:
    args = build_parser().parse_args([
        "--host", "127.0.0.1", "--port", "18001", "--mlflow-url", "http://127.0.0.1:15000",
        "--experiment", "e", "--model", "m", "--version", "2", "--instance", "127.0.0.1", "--flush-seconds", "0.5",
    ])  # fmt: skip
    s = settings_from_args(args)
    assert (s.mlflow_url, s.experiment, s.model, s.version, s.instance, s.flush_seconds) == (
        "http://127.0.0.1:15000", "e", "m", "2", "127.0.0.1", 0.5,
    )  # fmt: skip


def test_app_predicts_records_and_exposes_metrics() -> None:
    client, clock = FakeClient(), Clock("2026-11-20T10:00:00")
    rec = recorder(client, clock)
    app = create_app(ServiceSettings(mlflow_url=None, trees=5), recorder=rec)
    rows, labels = sample_rows(3)
    with TestClient(app) as http:
        assert http.get("/health").json()["status"] == "ok"
        before = time.time() * 1000
        answers = []
        for row, label in zip(rows, labels, strict=True):
            got = http.post("/predict", json={"features": row, "label": label})
            assert got.status_code == 200, got.text
            assert got.json()["label"] in (0, 1) and 0.5 <= got.json()["probability"] <= 1.0
            answers.append(got.json())
        unlabelled = http.post("/predict", json={"features": rows[0]})
        assert unlabelled.status_code == 200
        answers.append(unlabelled.json())
        assert http.post("/predict", json={"features": [1.0]}).status_code == 422
        metrics = http.get("/metrics").text
    # Four predictions, each timed by the middleware; the rejected request is no prediction.
    points = list(rec._pending) if rec.pending else []
    written = [m for r in client.runs.values() for m in r["metrics"]]
    times = [p.prediction_time for p in points] or [m[1] for m in written if m[0] == "prediction_time"]
    assert len(times) == 4 and all(0 < t < 5 for t in times)
    # each with the model's output: the probability of class 1 and the class it answered
    logged = [{"score": p.score, "predicted_label": p.predicted_label} for p in points] or [
        {k: v for k, v, _, step in written if step == i and k in ("score", "predicted_label")} for i in range(4)]
    assert [out["predicted_label"] for out in logged] == [a["label"] for a in answers]
    assert [out["score"] for out in logged] == pytest.approx(
        [a["probability"] if a["label"] == 1 else 1 - a["probability"] for a in answers])
    stamps = [p.timestamp_ms for p in points] or [m[2] for m in written if m[0] == "prediction_time"]
    assert all(before - 1 <= ts <= time.time() * 1000 for ts in stamps)
    assert 'http_requests_total{handler="/predict",method="POST",status="2xx"} 4.0' in metrics
    assert 'http_requests_total{handler="/predict",method="POST",status="4xx"} 1.0' in metrics
    assert 'http_request_duration_seconds_bucket{handler="/predict",le="0.25",method="POST"}' in metrics
    for name in ("http_request_size_bytes", "http_response_size_bytes"):
        assert f"{name}_count" in metrics or f"{name}_sum" in metrics


def test_timer_measures_until_the_last_body_chunk() -> None:
    seen: list[tuple[int, float, dict]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scope["modelwatch.prediction"]["label"] = 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        assert not seen  # not yet: more body follows
        await send({"type": "http.response.body", "body": b"b"})

    async def send(message: Any) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body"):
            time.sleep(0.05)  # the client is slow to take the last chunk: counted

    timer = PredictionTimer(app, lambda a, s, h: seen.append((a, s, h)))
    asyncio.run(timer({"type": "http"}, None, send))
    ((_, seconds, holder),) = seen
    assert seconds >= 0.05, f"timed {seconds:.3f} s: the 0.05 s the client took for the last chunk is missing"
    assert holder == {"label": 1}
