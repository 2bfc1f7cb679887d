"""Deterministic synthetic history: what the two model servers did on a given UTC day.

Everything here is pure: the data of a day depends only on the date and the scenario name (a numpy
Generator is seeded from both), so a day generated twice is byte-for-byte identical, in the tests, in
``make demo`` and on any machine with the pinned numpy.

The scenarios, the dates and the series follow ``devstack/CONTRACT.md``:

- :func:`resource_series` gives every node-exporter and FastAPI-instrumentator series of both instances
  at 15 s for the whole day, and :func:`write_openmetrics` writes them for ``promtool tsdb
  create-blocks-from openmetrics``.
- :func:`predictions` gives the predictions the two models logged to MLflow that day.

Counters restart from zero at 00:00:00 UTC (each synthetic day is an independent "boot"): the first
sample of a day equals the increase over its first 15 s, so Prometheus' counter-reset handling gives
exact rates across midnight whatever the previous day's scenario was.

Why: the tests assert the DAG's verdicts exactly, so they need history whose every value is known in
advance; recorded data or a live load would not give that, and no library generates these scenarios.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import NamedTuple

import numpy as np

#: Bump when the generated data changes, so that seeded stores notice they hold an older history.
GENERATOR_VERSION = 3

STEP_S = 15
POINTS_PER_DAY = 86400 // STEP_S
INSTANCES = ("model-a", "model-b")
NODE_PORT = 9100
APP_PORT = 8000
NCPU = 2
MEM_TOTAL_BYTES = 8 * 1024**3
#: Bucket bounds of ``http_request_duration_seconds``, spelled as prometheus_client writes them.
LATENCY_BUCKETS = ("0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0", "+Inf")
HANDLER_LABELS = {"handler": "/predict", "method": "POST"}

NORMAL_PREDICTION_S = 0.2
SLOW_PREDICTION_S = 2.5
#: What a team logs with each prediction besides its time and quality (``mlflow.logged`` in thresholds.yaml):
#: an input feature as a metric, and the channel the request came through as a param of a one-prediction
#: run (a run of many predictions has no per-prediction param).
AMOUNT_METRIC = "amount"
CHANNEL_PARAM = "channel"
CHANNELS = ("web", "app", "pos")
CHANNEL_SHARES = (0.5, 0.3, 0.2)
#: where an input shift moves the channel mix by the day's end
SHIFTED_CHANNEL_SHARES = (0.05, 0.9, 0.05)
#: The model's output, logged as a metric with each prediction: its score, the predicted probability of the
#: positive class (fraud, a click), Beta(SCORE_BETA) distributed (mean 0.25) on an ordinary day.
SCORE_METRIC = "score"
SCORE_BETA = (2.0, 6.0)


# --------------------------------------------------------------------------------------------------
# Models and scenarios
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """A model served on the synthetic instances and how its predictions are logged to MLflow."""

    name: str
    version: str
    experiment: str
    #: ``run_per_prediction`` or ``metric_history`` (the thresholds.yaml layouts).
    layout: str
    instances: tuple[str, ...]
    #: Seconds between two predictions on one instance.
    period_s: int
    #: Seconds after midnight of the first prediction, per instance.
    offsets_s: Mapping[str, int] = field(default_factory=dict)


MODELS: dict[str, ModelSpec] = {
    "fraud-detector": ModelSpec(
        name="fraud-detector",
        version="3",
        experiment="fraud-detector-predictions",
        layout="run_per_prediction",
        instances=("model-a", "model-b"),
        period_s=600,
        offsets_s={"model-a": 0, "model-b": 300},
    ),
    "recommender": ModelSpec(
        name="recommender",
        version="12",
        experiment="recommender-predictions",
        layout="metric_history",
        instances=("model-b",),
        period_s=120,
        offsets_s={"model-b": 0},
    ),
}


@dataclass(frozen=True)
class Scenario:
    """One kind of day. At most one incident, on one instance, during one time-of-day window.

    :ivar name: the scenario name used in :data:`TEST_DAYS` and in the seeding markers.
    :ivar doc: what happens, in words.
    :ivar instance: the instance the incident happens on (``model-a``/``model-b``), ``None`` if none.
    :ivar window: ``(start, end)`` UTC times of day of the incident, end excluded.
    :ivar saturated: the resource saturated on ``instance`` during the window: ``"cpu"``, ``"memory"``
        or ``None``.
    :ivar slow_models: the models whose predictions on ``instance`` are slow during the window.
    :ivar has_data: ``False`` for a day with nothing in Prometheus nor MLflow.
    :ivar expected: the verdict per model the product must reach, as in CONTRACT.md.
    :ivar slow_accuracy: the accuracy of the slow predictions (timeouts and fallbacks during saturation);
        ``None``: as any prediction's.
    :ivar rollout: ``(model, instance, version, accuracy)``: that instance serves a new version all day,
        with that accuracy.
    :ivar drift_models: models whose ``prediction_time`` grows through the day, to ``drift_factor`` times
        its usual value at midnight's end (a gradual shift of the inputs, still under the slow threshold).
    :ivar labelled: ``False``: no accuracy or loss logged yet (the labels have not arrived).
    :ivar input_shift: ``(model, factor)``: that model's inputs shift through the day: its ``amount`` grows to
        ``factor`` times its usual by the day's end, and its channel mix moves to
        :data:`SHIFTED_CHANNEL_SHARES` (an input drift its latency and accuracy do not show).
    :ivar output_shift: ``(model, log_odds)``: that model's output shifts through the day, its inputs
        unchanged: the log-odds of its ``score`` rise by up to ``log_odds`` by the day's end (a model that
        answers "yes" more often to the same questions: an output drift its accuracy does not show yet).
    """

    name: str
    doc: str
    instance: str | None = None
    window: tuple[time, time] | None = None
    saturated: str | None = None
    slow_models: tuple[str, ...] = ()
    has_data: bool = True
    expected: tuple[tuple[str, str], ...] = ()
    slow_accuracy: float | None = None
    rollout: tuple[str, str, str, float] | None = None
    drift_models: tuple[str, ...] = ()
    drift_factor: float = 1.0
    labelled: bool = True
    input_shift: tuple[str, float] | None = None
    output_shift: tuple[str, float] | None = None

    @property
    def expected_verdicts(self) -> dict[str, str]:
        """Expected verdict per model, e.g. ``{"fraud-detector": "degraded (cpu)", ...}``."""
        return dict(self.expected)

    def window_bounds(self, day: date) -> tuple[int, int] | None:
        """The incident window of ``day`` as Unix seconds ``(start, end)``, end excluded."""
        if self.window is None:
            return None
        start = datetime.combine(day, self.window[0], tzinfo=UTC)
        end = datetime.combine(day, self.window[1], tzinfo=UTC)
        return int(start.timestamp()), int(end.timestamp())


_HEALTHY = (("fraud-detector", "healthy"), ("recommender", "healthy"))

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            name="normal",
            doc="CPU about 25 %, memory about 45 %, every prediction fast.",
            expected=_HEALTHY,
        ),
        Scenario(
            name="cpu_saturation",
            doc="model-a CPU about 97 % (load1 about 3.5) 10:00-12:00; fraud-detector slow on model-a then.",
            instance="model-a",
            window=(time(10), time(12)),
            saturated="cpu",
            slow_models=("fraud-detector",),
            expected=(("fraud-detector", "degraded (cpu)"), ("recommender", "healthy")),
        ),
        Scenario(
            name="slow_unexplained",
            doc="fraud-detector slow on model-a 14:00-16:00 while every resource stays normal.",
            instance="model-a",
            window=(time(14), time(16)),
            slow_models=("fraud-detector",),
            expected=(("fraud-detector", "slow_unexplained"), ("recommender", "healthy")),
        ),
        Scenario(
            name="saturation_no_slow",
            doc="model-b CPU about 97 % 09:00-11:00, yet every prediction stays fast.",
            instance="model-b",
            window=(time(9), time(11)),
            saturated="cpu",
            expected=_HEALTHY,
        ),
        Scenario(
            name="memory_pressure",
            doc="model-b memory about 96 % 16:00-18:00; predictions on model-b slow (both models).",
            instance="model-b",
            window=(time(16), time(18)),
            saturated="memory",
            slow_models=("fraud-detector", "recommender"),
            expected=(("fraud-detector", "degraded (memory)"), ("recommender", "degraded (memory)")),
        ),
        Scenario(
            name="no_data",
            doc="Nothing in Prometheus, nothing in MLflow.",
            has_data=False,
            expected=(("fraud-detector", "no_data"), ("recommender", "no_data")),
        ),
    )
}

#: Scenario order of the test week, reused by :func:`recent_days`.
SCENARIO_ORDER: tuple[str, ...] = tuple(SCENARIOS)

#: The fixed test dates of CONTRACT.md.
TEST_DAYS: dict[date, str] = {
    date(2026, 3, 2) + timedelta(days=i): name for i, name in enumerate(SCENARIO_ORDER)
}


#: Days whose predictions say whether the models are still right (issue 12): quality and drift, judged
#: against the days before them. Apart from :data:`TEST_DAYS`, whose verdicts the latency tests assert.
QUALITY_SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(name="quality_reference", doc="An ordinary day: the reference of the days after it.",
                 expected=_HEALTHY),
        Scenario(
            name="accuracy_during_saturation",
            doc="model-a CPU ~97 % 06:00-12:00; fraud-detector's predictions there slow and mostly wrong "
                "(accuracy ~0.5: timeouts answered by a fallback).",
            instance="model-a", window=(time(6), time(12)), saturated="cpu", slow_models=("fraud-detector",),
            slow_accuracy=0.5, expected=(("fraud-detector", "degraded (cpu)"), ("recommender", "healthy")),
        ),
        Scenario(
            name="version_rollout",
            doc="fraud-detector version 4 serves on model-b all day, accuracy ~0.80 (version 3 on model-a: 0.94).",
            rollout=("fraud-detector", "model-b", "4", 0.80), expected=_HEALTHY,
        ),
        Scenario(
            name="gradual_drift",
            doc="recommender's prediction_time grows through the day to 1.8 times its usual (still fast), and "
                "its output shifts, its inputs unchanged: the log-odds of its score rise by up to 2; "
                "fraud-detector's inputs shift: amount to 3 times its usual, most requests through the app "
                "(its score does not move).",
            drift_models=("recommender",), drift_factor=1.8, input_shift=("fraud-detector", 3.0),
            output_shift=("recommender", 2.0), expected=_HEALTHY,
        ),
        Scenario(name="no_labels_yet", doc="An ordinary day whose labels have not arrived: no accuracy, no loss.",
                 labelled=False, expected=_HEALTHY),
    )
}  # fmt: skip

#: The dates of the quality scenarios, in this order (each judged against the ones before it).
QUALITY_DAYS: dict[date, str] = {date(2026, 4, 1) + timedelta(days=i): name for i, name in enumerate(QUALITY_SCENARIOS)}


def get_scenario(scenario: Scenario | str) -> Scenario:
    """Return the :class:`Scenario` named ``scenario`` (or ``scenario`` itself)."""
    if isinstance(scenario, Scenario):
        return scenario
    try:
        return SCENARIOS.get(scenario) or QUALITY_SCENARIOS[scenario]
    except KeyError:
        known = ", ".join([*SCENARIOS, *QUALITY_SCENARIOS])
        raise ValueError(f"unknown scenario {scenario!r}; known: {known}") from None


def recent_days(end_date: date | None = None, n: int = 6) -> dict[date, str]:
    """Map the scenarios, in the test-week order, onto the ``n`` full UTC days before ``end_date``.

    :param end_date: first day *not* included (default: today, UTC), so the last day is yesterday.
    :param n: number of days; the scenario order repeats if ``n`` exceeds the number of scenarios.
    :returns: ``{day: scenario name}`` in date order.
    """
    if end_date is None:
        end_date = datetime.now(UTC).date()
    first = end_date - timedelta(days=n)
    return {first + timedelta(days=i): SCENARIO_ORDER[i % len(SCENARIO_ORDER)] for i in range(n)}


def day_start(day: date) -> int:
    """Unix seconds of ``day`` 00:00:00 UTC."""
    return int(datetime.combine(day, time(0), tzinfo=UTC).timestamp())


def day_timestamps(day: date) -> np.ndarray:
    """The 5,760 scrape timestamps (Unix seconds, int64) of ``day``: 00:00:00 to 23:59:45."""
    return day_start(day) + STEP_S * np.arange(POINTS_PER_DAY, dtype=np.int64)


def _rng(day: date, scenario: Scenario, *stream: str) -> np.random.Generator:
    # A hash rather than hash(): Python salts str hashes per process, which would break determinism.
    material = "|".join((scenario.name, day.isoformat(), *stream)).encode()
    return np.random.default_rng(int.from_bytes(hashlib.sha256(material).digest()[:16], "big"))


# --------------------------------------------------------------------------------------------------
# Resource series
# --------------------------------------------------------------------------------------------------


class Series(NamedTuple):
    """One time series of one day: unpacks as ``(name, labels, timestamps, values, type)``."""

    name: str
    labels: dict[str, str]
    timestamps: np.ndarray
    values: np.ndarray
    type: str


#: Family name (as on the TYPE line), type and HELP text, in the order they are written.
FAMILIES: dict[str, tuple[str, str]] = {
    "node_cpu_seconds": ("counter", "Seconds the CPUs spent in each mode."),
    "node_memory_MemTotal_bytes": ("gauge", "Memory information field MemTotal_bytes."),
    "node_memory_MemAvailable_bytes": ("gauge", "Memory information field MemAvailable_bytes."),
    "node_disk_io_time_seconds": ("counter", "Total seconds spent doing I/Os."),
    "node_disk_read_bytes": ("counter", "The total number of bytes read successfully."),
    "node_disk_written_bytes": ("counter", "The total number of bytes written successfully."),
    "node_network_receive_bytes": ("counter", "Network device statistic receive_bytes."),
    "node_network_transmit_bytes": ("counter", "Network device statistic transmit_bytes."),
    "node_load1": ("gauge", "1m load average."),
    "http_requests": ("counter", "Total number of requests by method, status and handler."),
    "http_request_duration_seconds": (
        "histogram",
        "Latency with only few buckets by handler. Made to be only used if aggregation by handler is important.",
    ),
    # the instrumentator's body sizes: summaries without quantiles (``_sum`` and ``_count``), label ``handler``
    "http_request_size_bytes": ("summary", "Content length of incoming requests by handler. Only value of header is respected. Otherwise ignored. No percentile calculated. "),
    "http_response_size_bytes": ("summary", "Content length of outgoing responses by handler. Only value of header is respected. Otherwise ignored. No percentile calculated. "),
}
#: mean body sizes of a prediction request (the features as JSON) and of its answer (label, probability,
#: model, version), in bytes, as the sample service's are
REQUEST_BYTES, RESPONSE_BYTES = 160.0, 95.0


def family_of(name: str, type_: str) -> str:
    """The metric family (TYPE line) name of sample name ``name``: counters, histograms and summaries drop
    suffixes."""
    if type_ == "counter":
        return name.removesuffix("_total")
    if type_ in ("histogram", "summary"):
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix):
                return name.removesuffix(suffix)
    return name


def _window_masks(day: date, scenario: Scenario, instance: str) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks over the day's samples: gauges sampled in the window, counter intervals in it.

    A counter sample at ``t`` carries the increase over ``(t - 15 s, t]``; that interval belongs to
    the incident when it starts inside the window, so the first saturated counter sample is the one
    15 s after the window opens and the last one is at the window end.
    """
    ts = day_timestamps(day)
    bounds = scenario.window_bounds(day)
    if bounds is None or scenario.instance != instance:
        none = np.zeros(ts.shape, dtype=bool)
        return none, none
    start, end = bounds
    gauge = (ts >= start) & (ts < end)
    interval_start = ts - STEP_S
    counter = (interval_start >= start) & (interval_start < end)
    return gauge, counter


def _counter(increments: np.ndarray) -> np.ndarray:
    return np.cumsum(increments, dtype=np.int64)


def _instance_series(day: date, scenario: Scenario, instance: str) -> list[Series]:
    rng = _rng(day, scenario, "resources", instance)
    ts = day_timestamps(day)
    n = ts.size
    # -1 at midnight, +1 at noon: a gentle day/night cycle so the data does not look flat.
    diurnal = -np.cos(2 * np.pi * (ts - ts[0]) / 86400.0)
    gauge_in, counter_in = _window_masks(day, scenario, instance)
    cpu_hot = counter_in if scenario.saturated == "cpu" else np.zeros(n, dtype=bool)
    mem_hot_gauge = gauge_in if scenario.saturated == "memory" else np.zeros(n, dtype=bool)
    mem_hot = counter_in if scenario.saturated == "memory" else np.zeros(n, dtype=bool)
    slow = counter_in if scenario.slow_models else np.zeros(n, dtype=bool)
    b_offset = 0.02 if instance == "model-b" else 0.0
    node = {"instance": f"{instance}:{NODE_PORT}", "job": "node"}
    app = {"instance": f"{instance}:{APP_PORT}", "job": "model-server"}
    out: list[Series] = []

    # CPU: busy share per CPU and interval, split into user/system; the kernel counts in 1/100 s.
    busy_total = np.zeros(n)
    for cpu in range(NCPU):
        busy = 0.25 + b_offset + 0.06 * diurnal + rng.normal(0.0, 0.025, n)
        busy = np.clip(busy, 0.03, 0.7)
        busy = np.where(cpu_hot, np.clip(rng.normal(0.97, 0.008, n), 0.94, 0.995), busy)
        busy_total += busy
        per_interval = STEP_S * 100
        user = np.rint(per_interval * busy * 0.78).astype(np.int64)
        system = np.rint(per_interval * busy * 0.22).astype(np.int64)
        idle = per_interval - user - system
        for mode, inc in (("idle", idle), ("user", user), ("system", system)):
            out.append(
                Series(
                    "node_cpu_seconds_total",
                    {"cpu": str(cpu), "mode": mode, **node},
                    ts,
                    _counter(inc) / 100.0,
                    "counter",
                )
            )

    # Memory: whole 4 KiB pages, as /proc/meminfo reports.
    used = 0.45 + b_offset + 0.02 * diurnal + rng.normal(0.0, 0.005, n)
    used = np.where(mem_hot_gauge, np.clip(rng.normal(0.96, 0.004, n), 0.935, 0.985), used)
    available = np.rint((1.0 - used) * MEM_TOTAL_BYTES / 4096).astype(np.int64) * 4096
    out.append(
        Series("node_memory_MemTotal_bytes", dict(node), ts, np.full(n, float(MEM_TOTAL_BYTES)), "gauge")
    )
    out.append(
        Series("node_memory_MemAvailable_bytes", dict(node), ts, available.astype(np.float64), "gauge")
    )

    # Disk: memory pressure pages to disk, busier but far from saturated (0.9) so memory stays the cause.
    disk = {"device": "vda", **node}
    io_share = 0.03 + 0.01 * diurnal + np.abs(rng.normal(0.0, 0.01, n))
    io_share = np.where(mem_hot, np.clip(rng.normal(0.35, 0.03, n), 0.2, 0.5), io_share)
    io_ms = np.rint(STEP_S * 1000 * io_share).astype(np.int64)
    out.append(Series("node_disk_io_time_seconds_total", dict(disk), ts, _counter(io_ms) / 1000.0, "counter"))
    read_rate = np.where(mem_hot, 25e6, 150e3 * (1 + 0.3 * diurnal)) * rng.lognormal(0.0, 0.2, n)
    written_rate = np.where(mem_hot, 8e6, 400e3 * (1 + 0.3 * diurnal)) * rng.lognormal(0.0, 0.2, n)
    for name, rate in (
        ("node_disk_read_bytes_total", read_rate),
        ("node_disk_written_bytes_total", written_rate),
    ):
        blocks = np.rint(rate * STEP_S / 4096).astype(np.int64) * 4096
        out.append(Series(name, dict(disk), ts, _counter(blocks).astype(np.float64), "counter"))

    # Requests: Poisson arrivals around a daily cycle; model-b serves two models so it is busier.
    req_rate = (8.0 + 3.0 * diurnal) if instance == "model-b" else (5.0 + 2.0 * diurnal)
    requests = rng.poisson(req_rate * STEP_S)
    errors = rng.binomial(requests, 0.005)

    net = {"device": "eth0", **node}
    rx = (40e3 + 3e3 * req_rate) * STEP_S * rng.lognormal(0.0, 0.1, n)
    tx = (20e3 + 1.5e3 * req_rate) * STEP_S * rng.lognormal(0.0, 0.1, n)
    out.append(
        Series(
            "node_network_receive_bytes_total",
            dict(net),
            ts,
            _counter(np.rint(rx).astype(np.int64)) * 1.0,
            "counter",
        )
    )
    out.append(
        Series(
            "node_network_transmit_bytes_total",
            dict(net),
            ts,
            _counter(np.rint(tx).astype(np.int64)) * 1.0,
            "counter",
        )
    )

    # load1: runnable tasks through the kernel's 1-minute exponential average. Saturation queues work
    # beyond the two CPUs (about 3.5), paging adds tasks waiting on I/O.
    runnable = busy_total * np.where(cpu_hot, 1.8, 1.0) + 0.1 + np.where(mem_hot, 0.5, 0.0)
    runnable = runnable * rng.lognormal(0.0, 0.05, n)
    decay = math.exp(-STEP_S / 60.0)
    load = np.empty(n)
    level = runnable[0]
    for i in range(n):  # 5,760 steps: a recurrence, cheap enough in Python.
        level = level * decay + runnable[i] * (1.0 - decay)
        load[i] = level
    out.append(Series("node_load1", dict(node), ts, np.round(load, 2), "gauge"))

    for status, count in (("2xx", requests - errors), ("5xx", errors)):
        labels = {**HANDLER_LABELS, "status": status, **app}
        out.append(Series("http_requests_total", labels, ts, _counter(count).astype(np.float64), "counter"))

    # Latency histogram: each request is fast or slow, durations lognormal; bucket shares from the
    # lognormal CDF, counts drawn per interval.
    slow_share = np.where(slow, 0.9, 0.0)
    n_slow = rng.binomial(requests, slow_share)
    n_fast = requests - n_slow
    fast_p, fast_mean = _lognormal_buckets(0.15, 0.35)
    slow_p, slow_mean = _lognormal_buckets(SLOW_PREDICTION_S, 0.25)
    per_bucket = rng.multinomial(n_fast, fast_p) + rng.multinomial(n_slow, slow_p)
    cumulative = np.cumsum(np.cumsum(per_bucket, axis=1), axis=0)
    total_s = n_fast * fast_mean * rng.normal(1.0, 0.02, n) + n_slow * slow_mean * rng.normal(1.0, 0.02, n)
    hist = {**HANDLER_LABELS, **app}
    for j, le in enumerate(LATENCY_BUCKETS):
        out.append(
            Series(
                "http_request_duration_seconds_bucket",
                {**HANDLER_LABELS, "le": le, **app},
                ts,
                cumulative[:, j].astype(np.float64),
                "histogram",
            )
        )
    out.append(
        Series(
            "http_request_duration_seconds_sum", dict(hist), ts, np.round(np.cumsum(total_s), 4), "histogram"
        )
    )
    out.append(
        Series(
            "http_request_duration_seconds_count",
            dict(hist),
            ts,
            _counter(requests).astype(np.float64),
            "histogram",
        )
    )
    # Body sizes (no draws: the streams above stay as they were): every request's and answer's mean size
    sizes = {"handler": HANDLER_LABELS["handler"], **app}
    for family, mean in (("http_request_size_bytes", REQUEST_BYTES), ("http_response_size_bytes", RESPONSE_BYTES)):
        out.append(Series(f"{family}_sum", dict(sizes), ts, _counter(requests).astype(np.float64) * mean, "summary"))
        out.append(Series(f"{family}_count", dict(sizes), ts, _counter(requests).astype(np.float64), "summary"))
    return out


def _lognormal_buckets(median: float, sigma: float) -> tuple[np.ndarray, float]:
    """Per-bucket probabilities (non-cumulative, one per ``le``) and mean of a lognormal duration."""
    bounds = [float(le) for le in LATENCY_BUCKETS[:-1]]
    cdf = [0.5 * (1.0 + math.erf(math.log(b / median) / (sigma * math.sqrt(2.0)))) for b in bounds] + [1.0]
    probs = np.diff(np.array([0.0, *cdf]))
    return probs / probs.sum(), median * math.exp(sigma**2 / 2.0)


def resource_series(day: date, scenario: Scenario | str) -> list[Series]:
    """Every Prometheus series of both instances on ``day``, at 15 s from 00:00:00 to 23:59:45 UTC.

    :param day: the UTC day.
    :param scenario: a :class:`Scenario` or its name.
    :returns: :class:`Series` tuples ``(name, labels, timestamps_s, values, type)`` grouped by metric
        family in :data:`FAMILIES` order (the order OpenMetrics requires), model-a before model-b.
        Empty for a scenario without data. ``type`` is ``counter``, ``gauge`` or ``histogram``;
        timestamps are int64 Unix seconds, values float64.
    """
    sc = get_scenario(scenario)
    if not sc.has_data:
        return []
    series = [s for instance in INSTANCES for s in _instance_series(day, sc, instance)]
    order = {family: i for i, family in enumerate(FAMILIES)}
    # sorted() is stable: within a family the series keep instance and label order.
    return sorted(series, key=lambda s: order[family_of(s.name, s.type)])


# --------------------------------------------------------------------------------------------------
# OpenMetrics
# --------------------------------------------------------------------------------------------------


def _format_labels(labels: Mapping[str, str]) -> str:
    return ",".join(f'{k}="{v}"' for k, v in labels.items())


def _format_values(values: np.ndarray) -> np.ndarray:
    # Integral values print as integers (shorter, faster); others use numpy's shortest round-trip
    # repr, so Prometheus stores exactly the float64 we generated.
    if np.all(values == np.rint(values)) and np.all(np.abs(values) < 2**53):
        return values.astype(np.int64).astype("S20")
    return values.astype("S32")


def openmetrics_lines(day: date, scenario: Scenario | str) -> Iterator[bytes]:
    """The OpenMetrics exposition of ``day`` as byte chunks (one per family header or series).

    Timestamps are Unix seconds (promtool takes milliseconds for seconds silently). The last chunk
    is ``b"# EOF\\n"``.
    """
    return _chunks(resource_series(day, scenario))


def _chunks(series: list[Series]) -> Iterator[bytes]:
    suffix = None
    current = None
    for s in series:
        family = family_of(s.name, s.type)
        if family != current:
            current = family
            type_, help_ = FAMILIES[family]
            yield f"# HELP {family} {help_}\n# TYPE {family} {type_}\n".encode()
        if suffix is None:
            # Every series shares the day's timestamps: build " <ts>\n" once.
            suffix = np.char.add(np.char.add(b" ", s.timestamps.astype("S12")), b"\n")
        prefix = f"{s.name}{{{_format_labels(s.labels)}}} ".encode()
        yield b"".join(np.char.add(np.char.add(prefix, _format_values(s.values)), suffix).tolist())
    yield b"# EOF\n"


def write_openmetrics(day: date, scenario: Scenario | str, path: str | Path) -> int:
    """Write the day's series to ``path`` in OpenMetrics text format, ending with exactly ``# EOF\\n``.

    One file holds one day: promtool re-reads the whole file for every 2-hour block, so build time
    grows with the square of the span of a file.

    :returns: the number of samples written (0 for a scenario without data, whose file holds only
        ``# EOF``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    series = resource_series(day, scenario)
    with path.open("wb") as f:
        for chunk in _chunks(series):
            f.write(chunk)
    return sum(s.values.size for s in series)


# --------------------------------------------------------------------------------------------------
# Predictions
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Prediction:
    """One prediction as logged to MLflow.

    :ivar timestamp_ms: prediction time, epoch milliseconds.
    :ivar prediction_time: seconds the prediction took.
    :ivar slow: whether the scenario made it slow (for tests; not logged).
    :ivar amount: the input feature logged as metric :data:`AMOUNT_METRIC`.
    :ivar channel: the param :data:`CHANNEL_PARAM` (logged by one-prediction runs only).
    :ivar score: the model's output, logged as metric :data:`SCORE_METRIC`.
    """

    model: str
    model_version: str
    instance: str
    timestamp_ms: int
    prediction_time: float
    accuracy: float
    loss: float
    slow: bool
    amount: float = math.nan
    channel: str = ""
    score: float = math.nan


def _inputs(day: date, sc: Scenario, model: str, instance: str, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ``amount`` (log-normal around 50) and channel of each prediction; shifted through the day by the
    scenario's ``input_shift``. A stream of their own, so the other values stay as they were."""
    rng = _rng(day, sc, "inputs", model, instance)
    n = ts.size
    progress = (ts - day_start(day)) / 86400
    amount = rng.lognormal(math.log(50), 0.4, n)
    shares = np.tile(np.asarray(CHANNEL_SHARES), (n, 1))
    if sc.input_shift is not None and sc.input_shift[0] == model:
        amount = amount * (1 + (sc.input_shift[1] - 1) * progress)
        shares = shares + np.outer(progress, np.asarray(SHIFTED_CHANNEL_SHARES) - np.asarray(CHANNEL_SHARES))
    picks = (rng.random(n)[:, None] > np.cumsum(shares, axis=1)).sum(axis=1)
    return np.round(amount, 2), np.asarray(CHANNELS)[np.minimum(picks, len(CHANNELS) - 1)]


def _outputs(day: date, sc: Scenario, model: str, instance: str, ts: np.ndarray) -> np.ndarray:
    """The ``score`` of each prediction (Beta :data:`SCORE_BETA`); its log-odds raised through the day by the
    scenario's ``output_shift``. A stream of its own, so the other values stay as they were."""
    rng = _rng(day, sc, "outputs", model, instance)
    score = rng.beta(*SCORE_BETA, ts.size)
    if sc.output_shift is not None and sc.output_shift[0] == model:
        progress = (ts - day_start(day)) / 86400
        score = 1 / (1 + (1 / score - 1) * np.exp(-sc.output_shift[1] * progress))
    return np.round(np.clip(score, 1e-4, 1 - 1e-4), 4)


def prediction_timestamps(day: date, model: str, instance: str) -> np.ndarray:
    """Unix seconds of the predictions of ``model`` on ``instance`` during ``day`` (the contract cadence)."""
    spec = MODELS[model]
    start = day_start(day) + spec.offsets_s[instance]
    return np.arange(start, day_start(day) + 86400, spec.period_s, dtype=np.int64)


def predictions(day: date, scenario: Scenario | str) -> list[Prediction]:
    """The predictions of both models on ``day``, ordered by model, instance, then time.

    fraud-detector predicts every 10 minutes on model-a (from 00:00) and model-b (from 00:05);
    recommender every 2 minutes on model-b. A prediction is slow when the scenario makes its model
    slow on its instance and it falls in ``[window start, window end)``. Normal ``prediction_time``
    is about 0.2 s (0.05-0.45), slow about 2.5 s (1.8-3.6).
    """
    sc = get_scenario(scenario)
    if not sc.has_data:
        return []
    bounds = sc.window_bounds(day)
    out: list[Prediction] = []
    for spec in MODELS.values():
        for instance in spec.instances:
            rng = _rng(day, sc, "predictions", spec.name, instance)
            ts = prediction_timestamps(day, spec.name, instance)
            n = ts.size
            slow = np.zeros(n, dtype=bool)
            if bounds is not None and sc.instance == instance and spec.name in sc.slow_models:
                slow = (ts >= bounds[0]) & (ts < bounds[1])
            fast_s = np.clip(rng.lognormal(math.log(NORMAL_PREDICTION_S), 0.25, n), 0.05, 0.45)
            slow_s = np.clip(rng.normal(SLOW_PREDICTION_S, 0.3, n), 1.8, 3.6)
            seconds = np.round(np.where(slow, slow_s, fast_s), 4)
            accuracy = np.round(np.clip(rng.normal(0.94, 0.01, n), 0.9, 0.99), 4)
            loss = np.round(np.clip(rng.normal(0.15, 0.02, n), 0.08, 0.25), 4)
            # The quality knobs draw from streams of their own: the scenarios without them stay byte-identical.
            version = spec.version
            if spec.name in sc.drift_models:
                seconds = np.round(seconds * (1 + (sc.drift_factor - 1) * (ts - day_start(day)) / 86400), 4)
            if sc.slow_accuracy is not None:
                quality = _rng(day, sc, "slow-accuracy", spec.name, instance)
                accuracy = np.where(slow, np.round(np.clip(quality.normal(sc.slow_accuracy, 0.02, n), 0, 1), 4),
                                    accuracy)  # fmt: skip
            if sc.rollout is not None and sc.rollout[:2] == (spec.name, instance):
                quality = _rng(day, sc, "rollout", spec.name, instance)
                version = sc.rollout[2]
                accuracy = np.round(np.clip(quality.normal(sc.rollout[3], 0.02, n), 0, 1), 4)
            if not sc.labelled:
                accuracy = loss = np.full(n, np.nan)
            amount, channel = _inputs(day, sc, spec.name, instance, ts)
            score = _outputs(day, sc, spec.name, instance, ts)
            out.extend(
                Prediction(spec.name, version, instance, int(t) * 1000, float(p), float(a), float(lo), bool(s),
                           float(am), str(ch), float(o))
                for t, p, a, lo, s, am, ch, o in zip(ts, seconds, accuracy, loss, slow, amount, channel, score,
                                                       strict=True)
            )  # fmt: skip
    return out
