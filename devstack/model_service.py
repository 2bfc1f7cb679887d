"""A sample model service: the live data modelwatch's verdicts must hold on.

``python -m devstack.model_service --host 127.0.0.1 --port 18000 --mlflow-url http://127.0.0.1:15000
--experiment sample-service-predictions --model sample-classifier --version 1 --instance 127.0.0.1``

A FastAPI app serving a small scikit-learn classifier (a random forest trained at start on
``make_classification`` data, fixed seed), instrumented with prometheus-fastapi-instrumentator and logging
every prediction to MLflow in modelwatch's ``metric_history`` layout.

Why it is written here: FastAPI, scikit-learn, prometheus-fastapi-instrumentator and ``MlflowClient`` do
the serving, the model, the metrics and the writes. What is left is the ``prediction_time`` measurement at
the ASGI edge and the two MLflow layouts modelwatch reads; MLflow's own scoring server (``mlflow models
serve``) does not log each prediction to a tracking run.

Endpoints
    ``POST /predict`` ``{"features": [20 floats], "label": 0|1 (optional)}`` ->
    ``{"label": int, "probability": float, "model": ..., "version": ...}`` (the predicted class and its
    probability). The request's ``label`` is the true class as delayed feedback (the load generator knows
    it); with it the prediction gets ``accuracy`` and ``loss``.
    ``GET /health`` answers 200 once the model is trained. ``GET /metrics``: Prometheus exposition with
    ``http_requests_total{handler,method,status}`` (status grouped ``2xx``/``4xx``/``5xx``),
    ``http_request_duration_seconds`` (histogram, ``le`` 0.1 ... 10), ``http_request_size_bytes`` and
    ``http_response_size_bytes``: the series ``include/thresholds.yaml`` queries.

Definition of ``prediction_time``
    Seconds from the moment the service received the request to the moment the answer was sent.
    "Received" is the entry of a pure ASGI middleware wrapped around the whole app (before Starlette's
    middleware stack, before routing, before the request waits for a thread of the threadpool that runs the
    sync endpoint); "sent" is the return of the ASGI ``send`` of the last body chunk. It therefore includes
    every queue inside the service: the threadpool, the event loop, the GIL, the CPU the process is given.
    It does not include the time a connection waits in the kernel's accept backlog or socket buffers before
    uvicorn reads it. Timing only the model call would miss most of the queueing (in an earlier drill the
    in-app p50 was 61 ms while clients saw 0.89 s), so the model call is never what is measured.

MLflow layout (``metric_history``, as :func:`modelwatch.extract.history_to_frame` reads it)
    One run per (model, version, instance) and UTC day in ``--experiment`` (created if missing), tags
    ``model``, ``model_version``, ``instance`` (the host without port, so it joins Prometheus' ``instance``
    label with the port stripped). Each prediction is one point of ``prediction_time`` (s), of the model's
    output ``score`` (the probability of class 1) and ``predicted_label`` (0.0/1.0), and when a label was
    given ``accuracy`` (1.0/0.0) and ``loss`` (log loss of the true class), all at timestamp = the
    request's arrival time in epoch ms and step = a per-run counter (0, 1, 2, ... per prediction). A run
    starts at the service's start (or at 00:00:00 UTC for the following days) and is terminated with
    end_time = 23:59:59.999 of its day once the day is over (plus a grace period for late points), or at
    shutdown after a final flush, so a run's history stays within one day.

    Points are buffered and written by a background thread with ``MlflowClient.log_batch`` every
    ``--flush-seconds`` (1,000 metrics per call at most). A failed write is logged and retried at the next
    flush (MLflow ignores a point written twice); the buffer is bounded (``--max-buffer`` points, oldest
    dropped first, counted in the log). MLflow being down never stops the service from answering.

MLflow layout ``batch_table`` (``--layout batch_table``, as :func:`modelwatch.extract.batches_to_frame` reads it)
    One run per batch: every ``--batch-seconds`` (default 60), or as soon as ``--batch-rows`` predictions
    are pending, the buffer becomes one run with the same tags, start_time = its first prediction and
    end_time = its last (epoch ms, status FINISHED), holding one artifact ``predictions.parquet``: columns
    ``timestamp`` (``timestamp[ms, UTC]``, the arrival time), ``prediction_time``, ``accuracy``, ``loss``
    (float64, null when no label was given), ``score`` (float64) and ``predicted_label`` (int64). The run is created, the file uploaded, then the run
    terminated; a failed upload deletes the run and the rows are retried at the next flush. Needs pyarrow
    (an mlflow dependency).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel, Field

log = logging.getLogger("devstack.model_service")

DEFAULT_EXPERIMENT = "sample-service-predictions"
DEFAULT_MODEL = "sample-classifier"
DEFAULT_VERSION = "1"
N_FEATURES = 20
#: Seed of the training data and of the forest: the same model at every start.
SEED = 7
#: Trees of the forest: one /predict costs about 8 ms of CPU in the forest plus ~2 ms in FastAPI on the
#: project's 2-core machines (measured: 160 trees, depth 8).
DEFAULT_TREES = 160
#: MLflow refuses more than 1,000 metrics in one log_batch call.
MAX_METRICS_PER_BATCH = 1000
DEFAULT_MAX_BUFFER = 200_000
#: A finished day's run is terminated this long after midnight, so predictions that arrived just before
#: midnight and were recorded just after still land in it.
ROLLOVER_GRACE_S = 30.0
#: ``--layout`` values: the modelwatch layouts this service can write.
SERVICE_LAYOUTS = ("metric_history", "batch_table")
#: Artifact of a ``batch_table`` run (modelwatch.extract.BATCH_ARTIFACT_PATH; this file must not import
#: modelwatch: docker-compose mounts it alone).
BATCH_ARTIFACT_PATH = "predictions.parquet"
DEFAULT_BATCH_SECONDS = 60.0
DEFAULT_BATCH_ROWS = 50_000
#: The model's output, logged with each prediction (metric keys; columns of a batch table): the predicted
#: probability of class 1 and the predicted class. modelwatch judges their drift as outputs
#: (``mlflow.logged`` and ``drift.values`` with ``role: output`` in include/thresholds.live.yaml).
SCORE_METRIC = "score"
PREDICTED_LABEL_METRIC = "predicted_label"
#: Scope key under which the timing middleware hands the endpoint a dict to fill.
SCOPE_KEY = "modelwatch.prediction"
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_DAY_MS = 86_400_000


# -- pure helpers ------------------------------------------------------------------------------------------


def utc_day(ts_ms: int) -> date:
    """:param ts_ms: epoch milliseconds. :returns: the UTC date it falls on."""
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).date()


def day_bounds_ms(day: date) -> tuple[int, int]:
    """:param day: a UTC date. :returns: ``(start, end)`` epoch ms: 00:00:00.000 and 23:59:59.999."""
    start = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
    return start, start + _DAY_MS - 1


def run_start_ms(day: date, service_start_ms: int) -> int:
    """Start time of the run of ``day``: the service's start on its first day, midnight on later days.

    :param day: the run's UTC date.
    :param service_start_ms: when the service started, epoch ms.
    :returns: epoch ms, never before the day's start.
    """
    return max(day_bounds_ms(day)[0], service_start_ms)


def split_batches(items: Sequence[Any], size: int = MAX_METRICS_PER_BATCH) -> list[list[Any]]:
    """:param items: metrics to write. :param size: at most this many per batch (> 0).
    :returns: consecutive chunks of ``items`` in order, none empty, none longer than ``size``."""
    if size <= 0:
        raise ValueError(f"batch size must be positive, got {size}")
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def log_loss_of(probability_of_true_class: float, eps: float = 1e-15) -> float:
    """:param probability_of_true_class: the model's probability of the class that was right.
    :returns: ``-ln(p)``, with ``p`` clipped to ``[eps, 1 - eps]``."""
    p = min(max(float(probability_of_true_class), eps), 1.0 - eps)
    return -math.log(p)


@dataclass(frozen=True)
class Point:
    """One prediction as MLflow gets it."""

    timestamp_ms: int
    step: int
    prediction_time: float
    accuracy: float | None = None
    loss: float | None = None
    #: the model's output: the probability of class 1 and the predicted class (None: not given)
    score: float | None = None
    predicted_label: int | None = None

    @property
    def day(self) -> date:
        """UTC date of the prediction."""
        return utc_day(self.timestamp_ms)

    def metrics(self) -> list[tuple[str, float]]:
        """:returns: ``(key, value)`` of the metric points of this prediction."""
        out = [("prediction_time", self.prediction_time)]
        if self.score is not None:
            out.append((SCORE_METRIC, self.score))
        if self.predicted_label is not None:
            out.append((PREDICTED_LABEL_METRIC, float(self.predicted_label)))
        if self.accuracy is not None:
            out.append(("accuracy", self.accuracy))
        if self.loss is not None:
            out.append(("loss", self.loss))
        return out


@dataclass
class _DayRun:
    run_id: str
    terminated: bool = False


@dataclass
class PredictionRecorder:
    """Buffers predictions and writes them to MLflow, one run per UTC day (see the module docstring).

    Thread-safe: :meth:`record` is called from the event loop, :meth:`flush` from the flusher thread
    (:meth:`start`) and at shutdown (:meth:`close`). ``client`` is an ``MlflowClient`` (or anything with
    ``get_experiment_by_name``, ``create_experiment``, ``create_run``, ``log_batch``, ``set_terminated``).
    """

    client: Any
    experiment: str
    model: str
    version: str
    instance: str
    flush_seconds: float = 1.0
    max_buffer: int = DEFAULT_MAX_BUFFER
    clock: Callable[[], float] = time.time
    service_start_ms: int = field(default=0)
    grace_s: float = ROLLOVER_GRACE_S

    def __post_init__(self) -> None:
        if not self.service_start_ms:
            self.service_start_ms = int(self.clock() * 1000)
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._pending: deque[Point] = deque()
        self._steps: dict[date, int] = {}
        self._runs: dict[date, _DayRun] = {}
        self._experiment_id: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: Counters for logs and tests.
        self.dropped = 0
        self.written = 0
        self.failures = 0

    # -- recording -------------------------------------------------------------------------------------
    def record(
        self,
        arrival_ms: int,
        prediction_time: float,
        accuracy: float | None = None,
        loss: float | None = None,
        score: float | None = None,
        predicted_label: int | None = None,
    ) -> Point:
        """Queue one prediction (never blocks on MLflow).

        :param arrival_ms: when the request arrived, epoch ms (the points' timestamp).
        :param prediction_time: seconds, see the module docstring.
        :param accuracy: 1.0/0.0 when the true label was known, else None.
        :param loss: log loss of the true class when known, else None.
        :param score: the model's probability of class 1, None when not given.
        :param predicted_label: the class the model answered, None when not given.
        :returns: the queued point (with its step).
        """
        day = utc_day(arrival_ms)
        with self._lock:
            step = self._steps.get(day, 0)
            self._steps[day] = step + 1
            point = Point(arrival_ms, step, float(prediction_time), accuracy, loss,
                          None if score is None else float(score),
                          None if predicted_label is None else int(predicted_label))  # fmt: skip
            self._pending.append(point)
            while len(self._pending) > self.max_buffer:
                self._pending.popleft()
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    log.warning(
                        "MLflow buffer full (%d points): %d oldest dropped so far",
                        self.max_buffer,
                        self.dropped,
                    )
        return point

    @property
    def pending(self) -> int:
        """Points not written yet."""
        with self._lock:
            return len(self._pending)

    # -- writing ---------------------------------------------------------------------------------------
    def flush(self) -> int:
        """Write every pending point; terminate the runs of days that are over.

        A failure is logged and the unwritten points go back to the front of the buffer for the next flush.

        :returns: how many predictions were written.
        """
        with self._flush_lock:
            with self._lock:
                batch = list(self._pending)
                self._pending.clear()
            written = 0
            unwritten: list[Point] = batch
            try:
                by_day: dict[date, list[Point]] = {}
                for p in batch:
                    by_day.setdefault(p.day, []).append(p)
                for day in sorted(by_day):
                    points = by_day[day]
                    self._write(self._run_for(day), points)
                    written += len(points)
                    unwritten = [p for p in unwritten if p.day != day]
                self._roll_over()
            except Exception as exc:
                self.failures += 1
                self._requeue(unwritten)
                log.warning(
                    "MLflow write failed (%s: %s); %d point(s) kept for the next flush",
                    type(exc).__name__, (str(exc).splitlines() or [""])[0][:300], self.pending,
                )  # fmt: skip
            self.written += written
            return written

    def _requeue(self, points: list[Point]) -> None:
        with self._lock:
            self._pending.extendleft(reversed(points))
            while len(self._pending) > self.max_buffer:
                self._pending.popleft()
                self.dropped += 1

    def _write(self, run_id: str, points: list[Point]) -> None:
        from mlflow.entities import Metric

        metrics = [
            Metric(key=key, value=value, timestamp=p.timestamp_ms, step=p.step)
            for p in points
            for key, value in p.metrics()
        ]
        for chunk in split_batches(metrics):
            self.client.log_batch(run_id, metrics=chunk, synchronous=True)

    def _experiment(self) -> str:
        if self._experiment_id is None:
            exp = self.client.get_experiment_by_name(self.experiment)
            if exp is None:
                try:
                    self._experiment_id = self.client.create_experiment(self.experiment)
                except Exception:
                    # Another service may have created it meanwhile.
                    exp = self.client.get_experiment_by_name(self.experiment)
                    if exp is None:
                        raise
                    self._experiment_id = exp.experiment_id
            else:
                if getattr(exp, "lifecycle_stage", "active") == "deleted":
                    self.client.restore_experiment(exp.experiment_id)
                self._experiment_id = exp.experiment_id
        return self._experiment_id

    def _run_for(self, day: date) -> str:
        known = self._runs.get(day)
        if known is not None:
            return known.run_id
        run = self.client.create_run(
            self._experiment(),
            start_time=run_start_ms(day, self.service_start_ms),
            tags={"model": self.model, "model_version": self.version, "instance": self.instance},
            run_name=f"{self.model}-v{self.version}-{self.instance}-{day.isoformat()}",
        )
        self._runs[day] = _DayRun(run.info.run_id)
        log.info(
            "MLflow run %s for %s (%s v%s on %s)",
            run.info.run_id,
            day,
            self.model,
            self.version,
            self.instance,
        )
        return run.info.run_id

    def _roll_over(self) -> None:
        """Terminate the runs of days that ended more than ``grace_s`` ago; forget those of older days."""
        now_ms = int(self.clock() * 1000)
        for day, run in sorted(self._runs.items()):
            end_ms = day_bounds_ms(day)[1]
            if not run.terminated and now_ms > end_ms + self.grace_s * 1000:
                self.client.set_terminated(run.run_id, "FINISHED", end_time=end_ms)
                run.terminated = True
                log.info("MLflow run %s of %s terminated (day over)", run.run_id, day)
            if run.terminated and now_ms > end_ms + _DAY_MS:
                del self._runs[day]
        with self._lock:
            for day in [d for d in self._steps if d < utc_day(now_ms) - timedelta(days=1)]:
                del self._steps[day]

    def terminate_all(self) -> None:
        """Mark every open run FINISHED (at its day's end, or now if the day is not over)."""
        now_ms = int(self.clock() * 1000)
        for day, run in sorted(self._runs.items()):
            if not run.terminated:
                self.client.set_terminated(
                    run.run_id, "FINISHED", end_time=min(now_ms, day_bounds_ms(day)[1])
                )
                run.terminated = True

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the flusher thread (daemon): :meth:`flush` every ``flush_seconds``."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="mlflow-flusher", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            self.flush()

    def close(self) -> None:
        """Stop the flusher, write what is left once, terminate the open runs. Never raises."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.flush()
        try:
            self.terminate_all()
        except Exception as exc:
            log.warning("could not terminate the MLflow run(s): %s", exc)
        if self.pending:
            log.warning("%d prediction(s) could not be written to MLflow before shutdown", self.pending)
        log.info(
            "recorder closed: %d written, %d dropped, %d failed flush(es)",
            self.written,
            self.dropped,
            self.failures,
        )


# -- the batch_table layout -----------------------------------------------------------------------------------


def batch_arrow_table(points: Sequence[Point]) -> Any:
    """:param points: predictions of one batch. :returns: the pyarrow table of ``predictions.parquet``:
    ``timestamp`` (``timestamp[ms, tz=UTC]``), ``prediction_time``, ``accuracy``, ``loss``, ``score`` (float64,
    null when unknown) and ``predicted_label`` (int64, null when unknown)."""
    import pyarrow as pa

    def floats(values: list[float | None]) -> Any:
        return pa.array(values, type=pa.float64())

    return pa.table({
        "timestamp": pa.array([p.timestamp_ms for p in points], type=pa.timestamp("ms", tz="UTC")),
        "prediction_time": floats([p.prediction_time for p in points]),
        "accuracy": floats([p.accuracy for p in points]),
        "loss": floats([p.loss for p in points]),
        SCORE_METRIC: floats([p.score for p in points]),
        PREDICTED_LABEL_METRIC: pa.array([p.predicted_label for p in points], type=pa.int64()),
    })


def log_batch_run(
    client: Any, experiment_id: str, table: Any, tags: dict[str, str], run_name: str | None = None
) -> str:
    """Write one ``batch_table`` run: create it at the batch's first timestamp, upload ``table`` as
    ``predictions.parquet``, terminate it FINISHED at the last timestamp. On a failed upload the run is
    deleted (a reader would otherwise find a finished run without its table) and the error raised.

    :param client: an ``MlflowClient``.
    :param experiment_id: where the run goes.
    :param table: a pyarrow table with a ``timestamp`` column (see :func:`batch_arrow_table`).
    :param tags: the run's tags (model, model_version, instance).
    :param run_name: optional run name.
    :returns: the run id.
    """
    import tempfile
    from pathlib import Path

    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if table.num_rows == 0:
        raise ValueError("an empty batch is not written")
    ts = pc.cast(table.column("timestamp"), "int64")
    start, end = pc.min(ts).as_py(), pc.max(ts).as_py()
    run = client.create_run(experiment_id, start_time=start, tags=tags, run_name=run_name)
    run_id = run.info.run_id
    try:
        with tempfile.TemporaryDirectory(prefix="batch-") as tmp:
            path = Path(tmp) / BATCH_ARTIFACT_PATH
            pq.write_table(table, path)
            client.log_artifact(run_id, str(path))
        client.set_terminated(run_id, "FINISHED", end_time=end)
    except Exception:
        with contextlib.suppress(Exception):
            client.delete_run(run_id)
        raise
    return run_id


@dataclass
class BatchRecorder(PredictionRecorder):
    """Like :class:`PredictionRecorder`, but writes the ``batch_table`` layout: one run per batch of
    ``batch_seconds`` (counted from the oldest pending prediction) or ``batch_rows`` predictions, whichever
    comes first; :meth:`close` writes what is left."""

    batch_seconds: float = DEFAULT_BATCH_SECONDS
    batch_rows: int = DEFAULT_BATCH_ROWS
    #: Run ids written, oldest first (for logs and tests).
    batch_runs: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._closing = False

    def _due(self) -> bool:
        with self._lock:
            if not self._pending:
                return False
            if self._closing or len(self._pending) >= self.batch_rows:
                return True
            return self.clock() * 1000 - self._pending[0].timestamp_ms >= self.batch_seconds * 1000

    def flush(self) -> int:
        """Write the pending predictions as one run (several of ``batch_rows`` at most) when a batch is due.

        :returns: how many predictions were written.
        """
        with self._flush_lock:
            if not self._due():
                return 0
            with self._lock:
                batch = list(self._pending)
                self._pending.clear()
            written = 0
            try:
                tags = {"model": self.model, "model_version": self.version, "instance": self.instance}
                for chunk in split_batches(batch, self.batch_rows):
                    first = datetime.fromtimestamp(chunk[0].timestamp_ms / 1000, tz=UTC)
                    run_id = log_batch_run(
                        self.client, self._experiment(), batch_arrow_table(chunk), tags,
                        run_name=f"{self.model}-v{self.version}-{self.instance}-{first:%Y%m%dT%H%M%S}",
                    )  # fmt: skip
                    self.batch_runs.append(run_id)
                    written += len(chunk)
                    log.info("MLflow batch run %s: %d prediction(s) from %s", run_id, len(chunk), first.isoformat())
            except Exception as exc:
                self.failures += 1
                self._requeue(batch[written:])
                log.warning(
                    "MLflow batch write failed (%s: %s); %d point(s) kept for the next flush",
                    type(exc).__name__, (str(exc).splitlines() or [""])[0][:300], self.pending,
                )  # fmt: skip
            self.written += written
            return written

    def close(self) -> None:
        """Stop the flusher and write what is left as a last batch. Never raises."""
        self._closing = True
        super().close()


# -- the app -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceSettings:
    """What the service serves and where it logs (the CLI flags)."""

    mlflow_url: str | None
    experiment: str = DEFAULT_EXPERIMENT
    model: str = DEFAULT_MODEL
    version: str = DEFAULT_VERSION
    instance: str = "127.0.0.1"
    flush_seconds: float = 1.0
    max_buffer: int = DEFAULT_MAX_BUFFER
    trees: int = DEFAULT_TREES
    layout: str = "metric_history"
    batch_seconds: float = DEFAULT_BATCH_SECONDS
    batch_rows: int = DEFAULT_BATCH_ROWS


def train_model(trees: int = DEFAULT_TREES) -> Any:
    """:param trees: number of trees. :returns: the fitted classifier (same one for the same arguments)."""
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    x, y = make_classification(
        n_samples=2000, n_features=N_FEATURES, n_informative=8, n_redundant=4, flip_y=0.05, random_state=SEED
    )
    return RandomForestClassifier(n_estimators=trees, max_depth=8, random_state=SEED, n_jobs=1).fit(x, y)


def sample_rows(n: int, seed: int = SEED + 1) -> tuple[list[list[float]], list[int]]:
    """Feature rows with their true labels from the training distribution (for the load generator and tests).

    :param n: how many rows.
    :param seed: random seed (other than the training seed gives unseen rows).
    :returns: ``(rows, labels)``.
    """
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=n, n_features=N_FEATURES, n_informative=8, n_redundant=4, flip_y=0.05, random_state=seed
    )
    return x.tolist(), [int(v) for v in y]


class PredictRequest(BaseModel):
    """Body of ``POST /predict``."""

    features: list[float] = Field(min_length=N_FEATURES, max_length=N_FEATURES)
    label: int | None = Field(default=None, ge=0, le=1)


class PredictResponse(BaseModel):
    """Answer of ``POST /predict``."""

    label: int
    probability: float
    model: str
    version: str


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]


class PredictionTimer:
    """Pure ASGI middleware: stamps each HTTP request on arrival and, when the endpoint filled the dict it
    finds under ``scope[SCOPE_KEY]``, records the prediction once the last body chunk has been sent."""

    def __init__(self, app: ASGIApp, on_prediction: Callable[[int, float, dict[str, Any]], None]) -> None:
        """:param app: the wrapped ASGI app.
        :param on_prediction: called with ``(arrival epoch ms, prediction_time s, what the endpoint put)``.
        """
        self.app = app
        self.on_prediction = on_prediction

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        arrival_ms = int(time.time() * 1000)
        holder: dict[str, Any] = {}
        scope[SCOPE_KEY] = holder

        async def timed_send(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False) and holder:
                try:
                    self.on_prediction(arrival_ms, time.perf_counter() - t0, holder)
                except Exception:
                    log.exception("could not record a prediction")

        await self.app(scope, receive, timed_send)


def create_app(settings: ServiceSettings, recorder: PredictionRecorder | None = None) -> Any:
    """Build the ASGI app: FastAPI with /predict, /health, /metrics, wrapped in :class:`PredictionTimer`.

    :param settings: the service settings.
    :param recorder: where predictions go (default: a :class:`PredictionRecorder` on ``settings.mlflow_url``;
        None there and here: predictions are not logged).
    :returns: the ASGI app; its ``.fastapi`` attribute is the FastAPI app.
    """
    import numpy as np
    from prometheus_fastapi_instrumentator import Instrumentator, metrics

    if recorder is None and settings.mlflow_url:
        recorder = make_recorder(settings)
    state: dict[str, Any] = {"model": None}

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> Any:
        import anyio.to_thread

        t0 = time.perf_counter()
        state["model"] = await anyio.to_thread.run_sync(train_model, settings.trees)
        log.info("model trained (%d trees) in %.1f s", settings.trees, time.perf_counter() - t0)
        if recorder is not None:
            recorder.start()
        try:
            yield
        finally:
            if recorder is not None:
                await anyio.to_thread.run_sync(recorder.close)

    app = FastAPI(title="modelwatch sample model service", lifespan=lifespan)

    @app.post("/predict", response_model=PredictResponse)
    def predict(body: PredictRequest, request: Request) -> PredictResponse:
        model = state["model"]
        if model is None:
            raise HTTPException(status_code=503, detail="model not trained yet")
        proba = model.predict_proba(np.asarray([body.features], dtype=float))[0]
        label = int(np.argmax(proba))
        holder = request.scope.get(SCOPE_KEY)
        if holder is not None:
            holder["label"] = label
            holder["score"] = float(proba[1])
            if body.label is not None:
                holder["accuracy"] = 1.0 if label == body.label else 0.0
                holder["loss"] = log_loss_of(proba[body.label])
        return PredictResponse(
            label=label, probability=float(proba[label]), model=settings.model, version=settings.version
        )

    @app.get("/health")
    def health() -> dict[str, Any]:
        if state["model"] is None:
            raise HTTPException(status_code=503, detail="model not trained yet")
        return {
            "status": "ok",
            "model": settings.model,
            "version": settings.version,
            "instance": settings.instance,
            "pending": recorder.pending if recorder else 0,
        }

    instrumentator = Instrumentator(should_group_status_codes=True, excluded_handlers=["/metrics"])
    instrumentator.add(metrics.default(latency_lowr_buckets=LATENCY_BUCKETS))
    instrumentator.instrument(app).expose(app, include_in_schema=False)

    def on_prediction(arrival_ms: int, seconds: float, holder: dict[str, Any]) -> None:
        if recorder is not None:
            recorder.record(arrival_ms, seconds, holder.get("accuracy"), holder.get("loss"),
                            score=holder.get("score"), predicted_label=holder.get("label"))  # fmt: skip

    wrapped = PredictionTimer(app, on_prediction)
    wrapped.fastapi = app  # type: ignore[attr-defined]
    wrapped.recorder = recorder  # type: ignore[attr-defined]
    return wrapped


def make_recorder(settings: ServiceSettings) -> PredictionRecorder:
    """:param settings: the service settings (``mlflow_url`` set). :returns: a recorder on an MlflowClient."""
    # Bounded retries and timeouts: MLflow's defaults retry for minutes, which would hold the final flush
    # past the stack's stop timeout. A failed flush is retried at the next one anyway.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    from mlflow.tracking import MlflowClient

    common: dict[str, Any] = {
        "client": MlflowClient(tracking_uri=settings.mlflow_url),
        "experiment": settings.experiment,
        "model": settings.model,
        "version": settings.version,
        "instance": settings.instance,
        "flush_seconds": settings.flush_seconds,
        "max_buffer": settings.max_buffer,
    }
    if settings.layout == "batch_table":
        return BatchRecorder(**common, batch_seconds=settings.batch_seconds, batch_rows=settings.batch_rows)
    if settings.layout != "metric_history":
        raise ValueError(f"unknown layout {settings.layout!r} (one of {', '.join(SERVICE_LAYOUTS)})")
    return PredictionRecorder(**common)


def build_parser() -> argparse.ArgumentParser:
    """:returns: the command line parser."""
    p = argparse.ArgumentParser(prog="python -m devstack.model_service", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=18000)
    p.add_argument(
        "--mlflow-url", default=None, help="MLflow tracking URI; omitted: predictions are not logged"
    )
    p.add_argument("--experiment", default=DEFAULT_EXPERIMENT)
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--version", default=DEFAULT_VERSION)
    p.add_argument("--instance", default="127.0.0.1", help="MLflow `instance` tag: the host, without port")
    p.add_argument("--flush-seconds", type=float, default=1.0)
    p.add_argument("--max-buffer", type=int, default=DEFAULT_MAX_BUFFER)
    p.add_argument(
        "--trees", type=int, default=DEFAULT_TREES, help="forest size: the CPU cost of a prediction"
    )
    p.add_argument(
        "--layout", choices=SERVICE_LAYOUTS, default="metric_history",
        help="MLflow layout: metric points in one run per day, or one run per batch with a Parquet table",
    )  # fmt: skip
    p.add_argument("--batch-seconds", type=float, default=DEFAULT_BATCH_SECONDS, help="batch_table: seconds per batch")
    p.add_argument("--batch-rows", type=int, default=DEFAULT_BATCH_ROWS, help="batch_table: rows per batch at most")
    return p


def settings_from_args(args: argparse.Namespace) -> ServiceSettings:
    """:param args: parsed :func:`build_parser` arguments. :returns: the settings."""
    return ServiceSettings(
        mlflow_url=args.mlflow_url,
        experiment=args.experiment,
        model=args.model,
        version=args.version,
        instance=args.instance,
        flush_seconds=args.flush_seconds,
        max_buffer=args.max_buffer,
        trees=args.trees,
        layout=args.layout,
        batch_seconds=args.batch_seconds,
        batch_rows=args.batch_rows,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT (uvicorn runs the lifespan's final flush on either)."""
    # One BLAS/OpenMP thread: the forest does not use them, and 2 cores need no oversubscription.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import uvicorn

    app = create_app(settings_from_args(args))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False, lifespan="on")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
