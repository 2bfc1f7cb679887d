"""The sample model service in the session stack: it answers, exposes the instrumentator series, Prometheus
scrapes it, and the predictions it served come back through modelwatch's own extraction (``metric_history``
layout) with their tags and points. Seconds, no long load."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from mlflow.tracking import MlflowClient
from polling import wait_until

from devstack.model_service import sample_rows
from devstack.stack import (
    MODEL_SERVICE_EXPERIMENT,
    MODEL_SERVICE_MODEL,
    MODEL_SERVICE_VERSION,
    Stack,
)
from modelwatch.extract import extract_predictions
from modelwatch.hooks import MlflowHook
from modelwatch.schema import PREDICTION_COLUMNS

N = 12


def _predict(stack: Stack, n: int, with_labels: bool = True) -> tuple[datetime, datetime, list[dict]]:
    rows, labels = sample_rows(n, seed=1234)
    url = f"{stack.config.model_service_url}/predict"
    t0 = datetime.now(UTC)
    answers = []
    with requests.Session() as http:
        for row, label in zip(rows, labels, strict=True):
            body: dict[str, Any] = {"features": row}
            if with_labels:
                body["label"] = label
            resp = http.post(url, json=body, timeout=10)
            assert resp.status_code == 200, resp.text
            answers.append({**resp.json(), "true": label})
    return t0, datetime.now(UTC), answers


def test_predict_and_health(stack: Stack) -> None:
    health = requests.get(f"{stack.config.model_service_url}/health", timeout=5).json()
    assert health["status"] == "ok"
    assert (health["model"], health["version"], health["instance"]) == (
        MODEL_SERVICE_MODEL, MODEL_SERVICE_VERSION, "127.0.0.1",
    )  # fmt: skip
    _, _, answers = _predict(stack, 3)
    for a in answers:
        assert a["label"] in (0, 1) and 0.5 <= a["probability"] <= 1.0
        assert a["model"] == MODEL_SERVICE_MODEL
    bad = requests.post(f"{stack.config.model_service_url}/predict", json={"features": [1.0]}, timeout=5)
    assert bad.status_code == 422


def test_metrics_have_the_instrumentator_series(stack: Stack) -> None:
    _predict(stack, 2)
    body = requests.get(f"{stack.config.model_service_url}/metrics", timeout=5).text
    assert 'http_requests_total{handler="/predict",method="POST",status="2xx"}' in body
    assert 'http_request_duration_seconds_bucket{handler="/predict",le="0.5",method="POST"}' in body
    assert 'http_request_size_bytes_count{handler="/predict"}' in body
    assert 'http_response_size_bytes_count{handler="/predict"}' in body


def test_prometheus_scrapes_the_service(stack: Stack) -> None:
    prom = stack.config.prometheus_url

    def query(q: str) -> list[dict]:
        r = requests.get(f"{prom}/api/v1/query", params={"query": q}, timeout=5)
        r.raise_for_status()
        return r.json()["data"]["result"]

    got = wait_until(lambda: query('up{job="model-service"} == 1'), timeout=45, interval=1,
                     what="Prometheus to scrape the model service (up == 1)")  # fmt: skip
    assert got[0]["metric"]["instance"] == f"127.0.0.1:{stack.config.model_service_port}"
    # The serving series the DAG's request_rate/error_rate/p95_latency queries read.
    _predict(stack, 2)
    wait_until(lambda: query('http_requests_total{job="model-service",handler="/predict",status="2xx"}'),
               timeout=45, interval=1, what="the /predict 2xx request counter in Prometheus")  # fmt: skip


def test_predictions_come_back_through_modelwatch_extraction(conns: Stack) -> None:
    t0, t1, answers = _predict(conns, N)
    _, t2, unlabelled = _predict(conns, 2, with_labels=False)
    # Arrival stamps are whole milliseconds, truncated: from t0's millisecond on, only this test's predictions.
    start, end = t0.replace(microsecond=t0.microsecond // 1000 * 1000), t2 + timedelta(seconds=1)
    experiment = SimpleNamespace(name=MODEL_SERVICE_EXPERIMENT, layout="metric_history")
    tags = {"model": "model", "model_version": "model_version", "instance": "instance"}

    def mine() -> Any:
        frame = extract_predictions(MlflowHook(), [experiment], tags, start, end)
        return [frame] if len(frame) >= N + 2 else None

    (frame,) = wait_until(mine, timeout=30, interval=0.5,
                          what=f"the {N + 2} predictions to come back through extract_predictions")  # fmt: skip
    assert list(frame.columns) == list(PREDICTION_COLUMNS)
    assert len(frame) == N + 2
    assert set(frame["model"]) == {MODEL_SERVICE_MODEL}
    assert set(frame["model_version"]) == {MODEL_SERVICE_VERSION}
    assert set(frame["instance"]) == {"127.0.0.1"}
    assert set(frame["experiment"]) == {MODEL_SERVICE_EXPERIMENT}
    assert frame["run_id"].nunique() == 1  # one run per model, version, instance and day
    stamps = frame["timestamp"]
    assert stamps.min() >= start and stamps.max() < end
    times = frame["prediction_time"]
    assert ((times > 0) & (times < 5)).all()
    labelled = frame.iloc[:N]
    assert list(labelled["accuracy"]) == [1.0 if a["label"] == a["true"] else 0.0 for a in answers]
    expected_loss = [
        -math.log(a["probability"] if a["label"] == a["true"] else 1 - a["probability"]) for a in answers
    ]
    assert list(labelled["loss"]) == pytest.approx(expected_loss, rel=1e-6, abs=1e-9)
    # No label, no accuracy or loss: the prediction still counts with its time.
    assert frame.iloc[N:]["accuracy"].isna().all() and frame.iloc[N:]["loss"].isna().all()
    assert len(unlabelled) == 2 and t1 <= t2

    # The run: tags and a start before its points, still running (terminated at midnight or shutdown).
    run = MlflowClient(MlflowHook().tracking_uri).get_run(frame["run_id"].iloc[0])
    assert {k: run.data.tags[k] for k in tags} == {
        "model": MODEL_SERVICE_MODEL, "model_version": MODEL_SERVICE_VERSION, "instance": "127.0.0.1",
    }  # fmt: skip
    assert run.info.status == "RUNNING"
    assert run.info.start_time <= int(stamps.min().timestamp() * 1000)
    history = MlflowHook().metric_history(run.info.run_id, "prediction_time")
    steps = [m["step"] for m in history]
    assert len(steps) == len(set(steps)), "step is unique per prediction"


def test_shutdown_flushes_and_terminates_the_run(conns: Stack) -> None:
    # Predictions answered just before SIGTERM are still pending (flushed every second): the final flush
    # writes them, then the run is marked FINISHED. A new process starts a new run.
    t0, _, _ = _predict(conns, 3)
    conns.restart("model-service")
    start = t0.replace(microsecond=t0.microsecond // 1000 * 1000)
    experiment = SimpleNamespace(name=MODEL_SERVICE_EXPERIMENT, layout="metric_history")
    tags = {"model": "model", "model_version": "model_version", "instance": "instance"}
    frame = extract_predictions(MlflowHook(), [experiment], tags, start, datetime.now(UTC))
    assert len(frame) == 3
    run = MlflowClient(MlflowHook().tracking_uri).get_run(frame["run_id"].iloc[0])
    assert run.info.status == "FINISHED"
    assert (
        int(frame["timestamp"].max().timestamp() * 1000)
        <= run.info.end_time
        <= datetime.now(UTC).timestamp() * 1000
    )
    _, _, _ = _predict(conns, 1)
    t1 = datetime.now(UTC)

    def runs() -> list:
        found = extract_predictions(MlflowHook(), [experiment], tags, start, t1 + timedelta(seconds=1))
        return [found] if len(found) == 4 else []

    (after,) = wait_until(runs, timeout=30, interval=0.5,
                          what="the prediction after the restart to come back through extract_predictions")  # fmt: skip
    assert after["run_id"].nunique() == 2
