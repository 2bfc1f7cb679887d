"""Extractors: Prometheus matrices and MLflow runs -> tidy DataFrames for one run window.

The pure functions (chunk planning, matrix merging, frame building) hold every decision and are tested
without servers; :func:`extract_resources` and :func:`extract_predictions` only wire them to the hooks.
pandas is imported inside the functions. Time-grid arithmetic lives in :mod:`modelwatch.timegrid`.

Window convention: a run covers the half-open interval ``[start, end)``. A sample or prediction stamped
exactly ``end`` belongs to the next window.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from modelwatch.schema import (
    MATRIX_COLUMNS,
    METRIC_KEYS,
    PREDICTION_COLUMNS,
    RESOURCE_COLUMNS,
    usable_prediction_times,
)
from modelwatch.timegrid import (
    PROMETHEUS_MAX_POINTS,
    epoch_ms,
    from_epoch_ms,
    last_step_before,
    plan_chunks,
    step_to_ms,
)

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from modelwatch.hooks.mlflow import MlflowHook
    from modelwatch.hooks.prometheus import PrometheusHook

log = logging.getLogger(__name__)

#: Tag columns and the default MLflow tag each one is read from.
DEFAULT_TAG_KEYS = {"model": "model", "model_version": "model_version", "instance": "instance"}
LAYOUTS = ("run_per_prediction", "metric_history", "batch_table")
#: Layout ``batch_table``: the artifact of a batch run that holds its predictions (Parquet, one file).
BATCH_ARTIFACT_PATH = "predictions.parquet"
#: Columns of a batch table: ``timestamp`` (Parquet ``timestamp[ms, UTC]``; any timestamp unit, a naive
#: timestamp read as UTC, or int64 epoch ms also accepted) and the metrics (float64; missing or null = NaN).
BATCH_COLUMNS = ("timestamp", *METRIC_KEYS)

_PORT = re.compile(r"^(?P<host>[^:]+):\d+$")
_BRACKETED = re.compile(r"^\[(?P<host>[^\]]+)\](?::\d+)?$")


class NamedQuery(Protocol):
    """What :func:`extract_resources` needs of a configured query."""

    name: str
    promql: str


class NamedExperiment(Protocol):
    """What :func:`extract_predictions` needs of a configured experiment."""

    name: str
    layout: str


# -- Prometheus ----------------------------------------------------------------------------------------


def _label_key(metric: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(metric.items()))


def merge_matrices(chunks: Iterable[Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Merge query_range matrices: one series per identical label set, values sorted by time, a
    timestamp seen twice kept once (the first value read).

    :param chunks: matrices (``[{"metric": {...}, "values": [[ts, "v"], ...]}, ...]``).
    :return: one matrix, series sorted by label set.
    """
    merged: dict[tuple[tuple[str, str], ...], dict[int, list[Any]]] = {}
    labels: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
    for matrix in chunks:
        for series in matrix:
            metric = dict(series.get("metric") or {})
            key = _label_key(metric)
            labels.setdefault(key, metric)
            points = merged.setdefault(key, {})
            for ts, value in series.get("values") or ():
                points.setdefault(round(float(ts) * 1000), [ts, value])
    return [
        {"metric": labels[key], "values": [merged[key][ms] for ms in sorted(merged[key])]}
        for key in sorted(merged)
    ]


def query_range_chunked(
    hook: PrometheusHook,
    promql: str,
    start: datetime,
    end: datetime,
    step_seconds: float | timedelta,
    *,
    query_name: str,
    max_points: int = PROMETHEUS_MAX_POINTS,
) -> list[dict[str, Any]]:
    """One query_range over any window length: as many requests as the point limit needs (:func:`plan_chunks`),
    merged (:func:`merge_matrices`).

    Chunks sit on the step grid of ``start`` and never share a point, so the merged answer holds exactly
    the evaluations a single (hypothetically unlimited) request would.

    :param max_points: evaluation points per series per request (at most 11,000).
    :return: the merged matrix, series sorted by label set, values by time.
    """
    step = step_to_ms(step_seconds) / 1000
    results = [
        hook.query_range(promql, chunk_start, chunk_end, step, query_name=query_name)
        for chunk_start, chunk_end in plan_chunks(start, end, step, max_points)
    ]
    if len(results) == 1:
        return results[0]
    merged = merge_matrices(results)
    # each chunk was within the hook's series bound; their union must be too
    check = getattr(hook, "check_series", None)
    if check is not None:
        check(len(merged), promql=promql, query_name=query_name, window=f"[{start.isoformat()}, {end.isoformat()}]")
    return merged


#: A query's warnings are named in its log line up to this many characters in all.
NOTES_LOG_CHARS = 1000
#: Distinct warnings (and infos) a query's record keeps.
NOTES_PER_QUERY = 10


def query_notes(
    notes: Sequence[Mapping[str, Any]], query_name: str, start: datetime, end: datetime
) -> dict[str, Any] | None:
    """One query's record of the ``warnings`` and ``infos`` its answers carried (a partial answer: a
    remote-read, federated or store node failed), or ``None`` when none did.

    :param notes: the hook's notes of the answers read for the query (:attr:`PrometheusHook.notes`): its
        query_range requests and its sample-time reads.
    :return: ``{"query", "window_start", "window_end", "answers", "warnings", "infos"}``: the window the run
        asked for, how many answers carried something, and the distinct texts (at most
        :data:`NOTES_PER_QUERY` each, each as the hook bounded it).
    """
    if not notes:
        return None
    record: dict[str, Any] = {"query": query_name, "window_start": start.isoformat(), "window_end": end.isoformat(),
                              "answers": len(notes)}  # fmt: skip
    for key in ("warnings", "infos"):
        texts = list(dict.fromkeys(str(t) for note in notes for t in note.get(key) or ()))
        record[key] = texts[:NOTES_PER_QUERY]
        if len(texts) > NOTES_PER_QUERY:
            record[f"more_{key}"] = len(texts) - NOTES_PER_QUERY
    return record


def _notes_line(texts: Sequence[str], limit: int = NOTES_LOG_CHARS) -> str:
    line = " | ".join(texts)
    return line if len(line) <= limit else line[: limit - 3] + "..."


#: the label naming a series' instance, or the labels whose values joined with ``-`` name it
#: (``QueryConfig.instance_key``: Seldon Core 2's ``server`` and ``server_replica`` make pod ``mlserver-0``)
InstanceKey = str | tuple[str, ...]


def instance_of(metric: Mapping[str, Any], key: InstanceKey) -> str:
    """The instance a series' labels name under ``key``; ``""`` when a label of the key is missing (the series
    then applies to every instance, as one without the instance label does)."""
    if isinstance(key, str):
        return str(metric.get(key, ""))
    values = [metric.get(label) for label in key]
    return "-".join(str(v) for v in values) if all(v not in (None, "") for v in values) else ""


def strip_port(instance: str) -> str:
    """``host:9100`` -> ``host``; ``[::1]:9100`` -> ``::1``; anything else unchanged."""
    if m := _BRACKETED.match(instance):
        return m.group("host")
    if m := _PORT.match(instance):
        return m.group("host")
    return instance


def _resource_frame(
    timestamps_ms: list[int], queries: list[str], instances: list[str], labels: list[str], values: list[float]
) -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    return pd.DataFrame(
        {
            "timestamp": pd.to_datetime(
                np.asarray(timestamps_ms, dtype="int64"), unit="ms", utc=True
            ).as_unit("ms"),
            "query": pd.Series(queries, dtype="str"),
            "instance": pd.Series(instances, dtype="str"),
            "labels": pd.Series(labels, dtype="str"),
            "value": pd.Series(values, dtype="float64"),
        },
        columns=list(MATRIX_COLUMNS),
    )


def matrix_to_frame(
    result: Sequence[Mapping[str, Any]], query_name: str, instance_label: InstanceKey = "instance"
) -> pd.DataFrame:
    """A query_range matrix as rows ``timestamp, query, instance, labels, value``.

    ``timestamp`` is ``datetime64[ms, UTC]``; ``instance`` is the ``instance_label`` value without its
    ``:port`` (``""`` when the series lacks the label); ``labels`` is the JSON text of all labels with
    sorted keys (a plain string column keeps the Parquet readable by Athena, DuckDB and Spark);
    ``value`` is float64 (Prometheus's ``NaN``/``+Inf``/``-Inf`` included).

    :param result: the matrix.
    :param query_name: the query's configured name (the ``query`` column).
    :param instance_label: the label that names the instance (or the labels, :func:`instance_of`).
    """
    ts: list[int] = []
    values: list[float] = []
    instances: list[str] = []
    label_texts: list[str] = []
    for series in result:
        metric = dict(series.get("metric") or {})
        instance = strip_port(instance_of(metric, instance_label))
        text = json.dumps(metric, sort_keys=True, separators=(",", ":"))
        points = series.get("values") or ()
        for point_ts, value in points:
            ts.append(round(float(point_ts) * 1000))
            values.append(float(value))
        instances.extend([instance] * len(points))
        label_texts.extend([text] * len(points))
    return _resource_frame(ts, [query_name] * len(ts), instances, label_texts, values)


# -- sample times ----------------------------------------------------------------------------------------
#
# Per instance and step, the newest real sample behind a query's value: for each selector the query reads,
# the newest sample at or before the step of any of the instance's live series; over several selectors
# the oldest of those (a selector with no live series at the step constrains nothing). This is what
# ``min by (instance) (max by (instance) (timestamp(<selector>)) or ...)`` answers
# (:func:`modelwatch.promql.sample_time_promql`), computed from two cheap reads per selector instead:
#
# - presence, on the query's grid (:func:`modelwatch.promql.presence_promql`): the steps at which the
#   selector has a live series per instance, and how many. Prometheus decides it the way ``timestamp()``
#   does: a real sample within its lookback, not followed by a staleness marker.
# - raw sample times (:meth:`PrometheusHook.raw_samples`), read as range vectors (which never hold
#   staleness markers) in spans of about ``max_raw_samples`` samples each; the newest one at or before
#   each live step is found by binary search over all the instance's series.
#
# The newest over all series equals the newest over the live ones: a series that went stale while its
# target was scraped left the others of that scrape with a newer sample, and a failed scrape makes every
# series of the target stale, so presence has no step there. (The one exception would be series of one
# selector and one instance label value coming from different targets.)

#: ``sample_time`` value meaning "unknown" inside the int64 epoch-ms arrays (numpy reads it as NaT).
NO_SAMPLE = -(2**63)
#: Raw samples per request at most (about 40 MB of parsed JSON): each request's span is sized from the
#: sample density of the previous one.
RAW_SAMPLES_PER_REQUEST = 250_000
#: The first raw-sample request of a selector assumes one sample per live series this often (seconds);
#: the spans after it are sized from the density it measured.
RAW_ASSUMED_INTERVAL_SECONDS = 5
#: A span grows at most this many times from one request to the next.
RAW_SPAN_GROWTH = 8
#: How far before a step raw samples are read: Prometheus's default ``--query.lookback-delta``. A server
#: with a longer lookback gets NaT (unknown) where its answer reaches further back, never a wrong time.
DEFAULT_LOOKBACK = timedelta(minutes=5)

#: per instance label value (port kept): evaluation times (epoch ms, sorted) and the sample time at each
SampleTimes = dict[str, tuple[Any, Any]]


def series_sample_times(
    result: Sequence[Mapping[str, Any]], instance_label: InstanceKey = "instance"
) -> dict[str, Any]:
    """Per ``instance_label`` value (port kept, ``""`` without the label), the sorted distinct times (int64
    epoch ms) of every sample of every series in a matrix (values are ignored)."""
    import numpy as np

    per: dict[str, list[Any]] = {}
    for series in result:
        values = series.get("values") or ()
        if not values:
            continue
        instance = instance_of(series.get("metric") or {}, instance_label)
        per.setdefault(instance, []).append(
            np.fromiter((p[0] for p in values), dtype="float64", count=len(values))
        )
    return {
        instance: np.unique(np.round(np.concatenate(arrays) * 1000).astype("int64"))
        for instance, arrays in per.items()
    }


def newest_sample_at(times: Any, steps: Any) -> Any:
    """For each of ``steps`` (int64 epoch ms), the newest of ``times`` (sorted int64 epoch ms) at or before
    it, :data:`NO_SAMPLE` when there is none."""
    import numpy as np

    times = np.asarray(times, dtype="int64")
    steps = np.asarray(steps, dtype="int64")
    idx = np.searchsorted(times, steps, side="right") - 1
    out = np.full(len(steps), NO_SAMPLE, dtype="int64")
    found = idx >= 0
    out[found] = times[idx[found]]
    return out


def next_raw_span(span_ms: int, samples: int, max_samples: int) -> int:
    """The span (ms) of the next raw-sample request after one of ``span_ms`` that returned ``samples``:
    about ``max_samples`` at the density just seen, at least one second, at most :data:`RAW_SPAN_GROWTH`
    times the last span."""
    grown = span_ms * RAW_SPAN_GROWTH
    if samples <= 0:
        return grown
    return max(1000, min(grown, span_ms * max_samples // samples))


def first_raw_span(live_series: int, max_samples: int) -> int:
    """The span (ms) of a selector's first raw-sample request: ``max_samples`` at one sample per live
    series every :data:`RAW_ASSUMED_INTERVAL_SECONDS`, at least a minute."""
    return max(60_000, max_samples * RAW_ASSUMED_INTERVAL_SECONDS * 1000 // max(1, live_series))


def read_raw_sample_times(
    hook: PrometheusHook,
    selector: str,
    start_ms: int,
    end_ms: int,
    *,
    query_name: str,
    instance_label: InstanceKey = "instance",
    max_samples: int = RAW_SAMPLES_PER_REQUEST,
    live_series: int = 1,
) -> dict[str, Any]:
    """The times of every real sample of ``selector`` in ``[start_ms, end_ms]``, per instance label value
    (:func:`series_sample_times`), read in consecutive spans of about ``max_samples`` samples each (the first
    sized by :func:`first_raw_span` from ``live_series``, the most series live at once, the others by
    :func:`next_raw_span`).

    Consecutive spans share their boundary instant (Prometheus 2.x includes a range's start), so a sample
    there may come twice: the union keeps it once.
    """
    import numpy as np

    parts: dict[str, list[Any]] = {}
    pos = start_ms
    span = first_raw_span(live_series, max_samples)
    while True:
        stop = max(min(pos + span, end_ms), pos + 1)
        result = hook.raw_samples(selector, from_epoch_ms(pos), from_epoch_ms(stop), query_name=query_name)
        samples = sum(len(series.get("values") or ()) for series in result)
        for instance, times in series_sample_times(result, instance_label).items():
            parts.setdefault(instance, []).append(times)
        del result
        if stop >= end_ms:
            break
        span = next_raw_span(stop - pos, samples, max_samples)
        pos = stop
    return {instance: np.unique(np.concatenate(arrays)) for instance, arrays in parts.items()}


def selector_sample_times(live: Mapping[str, Any], raw: Mapping[str, Any]) -> SampleTimes:
    """One selector's sample times: per instance, its live steps (from the presence matrix of
    :func:`modelwatch.promql.presence_promql` through :func:`series_sample_times`) and, at each, the
    newest of the instance's ``raw`` sample times at or before it (:data:`NO_SAMPLE` when the raw read
    did not reach back that far)."""
    import numpy as np

    empty = np.empty(0, dtype="int64")
    return {
        instance: (steps, newest_sample_at(raw.get(instance, empty), steps))
        for instance, steps in live.items()
    }


def combine_selectors(per_selector: Sequence[SampleTimes]) -> SampleTimes:
    """Per instance and step, the oldest of the selectors' sample times, over the selectors live there (an
    unknown one, :data:`NO_SAMPLE`, makes the step unknown)."""
    import numpy as np

    if len(per_selector) == 1:
        return dict(per_selector[0])
    out: SampleTimes = {}
    for instance in dict.fromkeys(i for times in per_selector for i in times):
        pairs = [times[instance] for times in per_selector if instance in times]
        steps = np.concatenate([p[0] for p in pairs])
        samples = np.concatenate([p[1] for p in pairs])
        order = np.lexsort((samples, steps))  # by step, then oldest sample first
        steps, samples = steps[order], samples[order]
        first = np.ones(len(steps), dtype=bool)
        first[1:] = steps[1:] != steps[:-1]
        out[instance] = (steps[first], samples[first])
    return out


def attach_sample_times(
    frame: pd.DataFrame,
    sample_times: SampleTimes | None,
    window_seconds: float,
    instance_label: str = "instance",
) -> pd.DataFrame:
    """Add ``sample_time`` (newest real sample behind each value) and ``window_seconds``.

    Matched on instance (ports stripped; several label values of one instance keep the newest sample)
    and evaluation time. ``sample_times`` of ``None`` (the query reads no series) makes every value its
    own sample (``sample_time = timestamp``); a row without a known sample time gets NaT, which the join
    treats as a value without a real sample.

    :param sample_times: per instance label value, evaluation times and sample times (int64 epoch ms,
        :data:`NO_SAMPLE` for unknown), from :func:`combine_selectors`.
    """
    import numpy as np
    import pandas as pd

    out = frame.copy()
    out["window_seconds"] = float(window_seconds)
    if sample_times is None:
        out["sample_time"] = out["timestamp"]
        return out[list(RESOURCE_COLUMNS)]
    row_ts = out["timestamp"].to_numpy(dtype="datetime64[ms]").view("int64")  # epoch ms
    found = np.full(len(out), NO_SAMPLE, dtype="int64")
    if len(out) and sample_times:
        codes, names = pd.factorize(out["instance"], sort=False)
        code_of = {name: k for k, name in enumerate(names)}
        t_codes, t_steps, t_samples = [], [], []
        for instance, (steps, samples) in sample_times.items():
            code = code_of.get(strip_port(instance))
            if code is not None and len(steps):
                t_codes.append(np.full(len(steps), code, dtype="int64"))
                t_steps.append(steps)
                t_samples.append(samples)
        if t_steps:
            steps, samples = np.concatenate(t_steps), np.concatenate(t_samples)
            lo = min(int(steps.min()), int(row_ts.min()))
            width = max(int(steps.max()), int(row_ts.max())) - lo + 1
            keys = np.concatenate(t_codes) * width + (steps - lo)
            order = np.lexsort((samples, keys))  # by key, newest sample last
            keys, samples = keys[order], samples[order]
            last = np.ones(len(keys), dtype=bool)
            last[:-1] = keys[1:] != keys[:-1]
            keys, samples = keys[last], samples[last]
            row_keys = codes.astype("int64") * width + (row_ts - lo)
            pos = np.minimum(np.searchsorted(keys, row_keys), len(keys) - 1)
            hit = keys[pos] == row_keys
            found[hit] = samples[pos[hit]]
    out["sample_time"] = pd.to_datetime(found.view("datetime64[ms]"), utc=True).as_unit("ms")
    return out[list(RESOURCE_COLUMNS)]


def extract_resources(
    hook: PrometheusHook,
    queries: Sequence[NamedQuery],
    start: datetime,
    end: datetime,
    step_seconds: float | timedelta,
    max_points: int = PROMETHEUS_MAX_POINTS,
    instance_label: str = "instance",
    *,
    lookback: timedelta = DEFAULT_LOOKBACK,
    max_raw_samples: int = RAW_SAMPLES_PER_REQUEST,
    notes: list[dict[str, Any]] | None = None,
) -> pd.DataFrame:
    """Every query evaluated on the step grid of the window ``[start, end)``, as one frame, with the time
    of the real sample behind each value.

    The last evaluation is the last grid point before ``end`` (the point at ``end`` is the next
    window's first). Rows are grouped by query in the given order, then by label set and time. Each
    query is followed by the sample-time reads of the selectors it reads (see the section comment above:
    a presence query on the same grid and raw sample times), because Prometheus repeats a series' last
    value for minutes after its last scrape. A selector read by several queries is read once.

    :param hook: the Prometheus hook.
    :param queries: objects with ``name`` and ``promql``.
    :param start: window start (inclusive, timezone-aware).
    :param end: window end (exclusive, timezone-aware).
    :param step_seconds: evaluation step.
    :param max_points: points per series per request.
    :param instance_label: the label that names the instance.
    :param lookback: how far before a step raw samples are read (the server's lookback delta).
    :param max_raw_samples: raw samples per request at most (bounds memory; see :data:`RAW_SAMPLES_PER_REQUEST`).
    :param notes: when given, each query whose answers carried Prometheus ``warnings`` or ``infos`` (partial
        data) appends its record (:func:`query_notes`); the query's log line names them either way.
    :return: :data:`RESOURCE_COLUMNS`.
    :raises PrometheusAnswerTooLarge: when one query's answer passes the hook's series or byte bound.
    """
    import pandas as pd

    from modelwatch.promql import analyse

    last = last_step_before(start, end, step_seconds)
    frames = [attach_sample_times(matrix_to_frame([], "", instance_label), None, 0.0)]
    analysed = [analyse(query.promql) for query in queries]
    uses: dict[str, int] = {}
    for selectors, _ in analysed:
        for selector in selectors:
            uses[selector] = uses.get(selector, 0) + 1
    cache: dict[tuple[str, InstanceKey], SampleTimes] = {}
    for query, (selectors, window) in zip(queries, analysed, strict=True):
        started = time.monotonic()
        requests_before = hook.requests_made
        hook_notes = getattr(hook, "notes", None)
        notes_before = len(hook_notes) if hook_notes is not None else 0
        result = query_range_chunked(
        hook, query.promql, start, last, step_seconds, query_name=query.name, max_points=max_points
        )
        # a query may name its instance by labels of its own (a serving preset's pod or replica): its values
        # and the sample times behind them are keyed alike
        key_of = getattr(query, "instance_key", None)
        key = key_of(instance_label) if callable(key_of) else instance_label
        frame = matrix_to_frame(result, query.name, key)
        times = None
        if selectors and len(frame):
            per_selector = []
            for selector in selectors:
                if (selector, key) not in cache:
                    cache[(selector, key)] = _selector_sample_times(
                        hook, selector, start, last, step_seconds, query_name=f"{query.name} (sample times)",
                        max_points=max_points, instance_label=key, lookback=lookback,
                        max_raw_samples=max_raw_samples,
                    )  # fmt: skip
                per_selector.append(cache[(selector, key)])
            times = combine_selectors(per_selector)
        for selector in selectors:  # keep only what a later query still reads
            uses[selector] -= 1
            if not uses[selector]:
                for cached in [k for k in cache if k[0] == selector]:
                    cache.pop(cached, None)
        frame = attach_sample_times(frame, times, window.total_seconds(), instance_label)
        stale = _stale_count(frame, step_seconds)
        log.info(
            "query %s: window [%s, %s), step %s s: %d series, %d samples (%d repeated from an older scrape), "
            "%d request(s), %.3f s",
            query.name, start.isoformat(), end.isoformat(), step_to_ms(step_seconds) / 1000,
            len(result), len(frame), stale, hook.requests_made - requests_before, time.monotonic() - started,
        )  # fmt: skip
        record = query_notes(hook_notes[notes_before:] if hook_notes is not None else [], query.name, start, end)
        if record is not None:
            if record["warnings"]:
                log.warning(
                    "query %s: window [%s, %s): Prometheus answered with warnings, the data may be partial "
                    "(%d answer(s)): %s", query.name, start.isoformat(), end.isoformat(), record["answers"],
                    _notes_line(record["warnings"]),
                )  # fmt: skip
            if record["infos"]:
                log.info("query %s: window [%s, %s): Prometheus infos: %s", query.name, start.isoformat(),
                         end.isoformat(), _notes_line(record["infos"]))  # fmt: skip
            if notes is not None:
                notes.append(record)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _selector_sample_times(
    hook: PrometheusHook,
    selector: str,
    start: datetime,
    last: datetime,
    step_seconds: float | timedelta,
    *,
    query_name: str,
    max_points: int,
    instance_label: InstanceKey,
    lookback: timedelta,
    max_raw_samples: int,
) -> SampleTimes:
    """Presence on the grid ``[start, last]``, then the raw samples from the lookback before the first
    live step to the last live step (nothing more when the selector has no live series)."""
    from modelwatch.promql import presence_promql

    presence = query_range_chunked(
        hook, presence_promql(selector, instance_label), start, last, step_seconds, query_name=query_name,
        max_points=max_points,
    )  # fmt: skip
    live = series_sample_times(presence, instance_label)
    if not live:
        return {}
    first_ms = min(int(steps[0]) for steps in live.values())
    last_ms = max(int(steps[-1]) for steps in live.values())
    # the most series live at once, bounded above by the sum of each instance's most
    live_series = sum(max((float(v[1]) for v in s.get("values") or ()), default=0.0) for s in presence)
    raw = read_raw_sample_times(
        hook, selector, first_ms - int(lookback.total_seconds() * 1000), last_ms, query_name=query_name,
        instance_label=instance_label, max_samples=max_raw_samples, live_series=int(live_series),
    )  # fmt: skip
    return selector_sample_times(live, raw)


def _stale_count(frame: pd.DataFrame, step_seconds: float | timedelta) -> int:
    """Values whose newest real sample is more than two steps older than their evaluation time."""
    if not len(frame):
        return 0
    step = step_to_ms(step_seconds)
    age = (frame["timestamp"] - frame["sample_time"]).dt.total_seconds() * 1000
    return int((age > 2 * step).sum())


# -- MLflow --------------------------------------------------------------------------------------------


def _tag_keys(tag_keys: Mapping[str, str] | Any | None) -> dict[str, str]:
    # Accept the config's pydantic TagKeys as well as a plain mapping.
    if tag_keys is None:
        return dict(DEFAULT_TAG_KEYS)
    if hasattr(tag_keys, "model_dump"):
        tag_keys = tag_keys.model_dump()
    return {**DEFAULT_TAG_KEYS, **dict(tag_keys)}


#: column -> (``metric`` or ``param``, MLflow key): the values a team logs (``LoggedValues.columns``)
Logged = Mapping[str, tuple[str, str]]


def _prediction_frame(rows: list[dict[str, Any]], logged: Logged | None = None) -> pd.DataFrame:
    names = [*PREDICTION_COLUMNS, *(logged or {})]
    return _columns_frame({name: [row[name] for row in rows] for name in names}, logged)


def _run_params(run: Mapping[str, Any]) -> dict[str, str]:
    return {p["key"]: str(p.get("value", "")) for p in (run.get("data") or {}).get("params") or ()}


def _columns_frame(columns: Mapping[str, Sequence[Any]], logged: Logged | None = None) -> pd.DataFrame:
    """:data:`PREDICTION_COLUMNS` and the ``logged`` columns from one list per column (``timestamp`` in
    epoch ms): the one place their dtypes are decided. A logged metric is a float (NaN where not logged), a
    logged param text (``None`` where the run has no such param, so "not logged" is not the text "")."""
    import numpy as np
    import pandas as pd

    data: dict[str, Any] = {
        "timestamp": pd.to_datetime(
            np.asarray(columns["timestamp"], dtype="int64"), unit="ms", utc=True
        ).as_unit("ms")
    }
    for name in ("model", "model_version", "instance"):
        data[name] = pd.Series(columns[name], dtype="str")
    for name in METRIC_KEYS:
        data[name] = pd.Series(columns[name], dtype="float64")
    data["run_id"] = pd.Series(columns["run_id"], dtype="str")
    data["experiment"] = pd.Series(columns["experiment"], dtype="str")
    for name, (source, _key) in (logged or {}).items():
        data[name] = pd.Series(columns[name], dtype="float64" if source == "metric" else "object")
    return pd.DataFrame(data, columns=[*PREDICTION_COLUMNS, *(logged or {})])


def _tags_of(run: Mapping[str, Any], keys: Mapping[str, str]) -> dict[str, str]:
    """Tag columns of one run's REST JSON (a missing tag is ``""``, the port removed from the instance)."""
    tags = {t["key"]: t.get("value", "") for t in (run.get("data") or {}).get("tags") or ()}
    out = {column: str(tags.get(tag, "")) for column, tag in keys.items()}
    # Same normalisation as the Prometheus side, so "model-a:8000" in a tag still joins "model-a".
    out["instance"] = strip_port(out["instance"])
    return out


def runs_json_to_frame(
    runs: Sequence[Mapping[str, Any]], tag_keys: Mapping[str, str] | Any, experiment_name: str,
    logged: Logged | None = None,
) -> pd.DataFrame:
    """Layout ``run_per_prediction`` from MLflow's REST JSON (``runs/search`` answers): one row per run, at
    the run's start time, in the order of ``runs``; NaN for a missing metric, ``""`` for a missing tag, port
    removed from the instance. Built column by column, with no per-run objects.

    :param runs: run objects as the server sends them (:meth:`MlflowHook.search_runs_json`).
    :param tag_keys: output column (``model``, ``model_version``, ``instance``) -> MLflow tag name.
    :param experiment_name: value of the ``experiment`` column.
    :param logged: the logged values to read too: each run's metric or param of that key.
    :return: :data:`PREDICTION_COLUMNS`, then the ``logged`` columns.
    """
    keys = _tag_keys(tag_keys)
    logged = logged or {}
    infos = [run["info"] for run in runs]
    datas = [run.get("data") or {} for run in runs]
    # the server leaves out an empty list; an unset proto double is 0.0, an unset string "" (as MLflow reads them)
    metrics = [{m["key"]: m.get("value", 0.0) for m in data.get("metrics") or ()} for data in datas]
    tags = [{t["key"]: t.get("value", "") for t in data.get("tags") or ()} for data in datas]
    nan = math.nan
    columns: dict[str, list[Any]] = {
        "timestamp": [int(info["start_time"]) for info in infos],
        **{column: [str(t.get(tag, "")) for t in tags] for column, tag in keys.items()},
        # float() also reads the JSON strings "NaN", "Infinity", "-Infinity"
        **{key: [float(m.get(key, nan)) for m in metrics] for key in METRIC_KEYS},
        "run_id": [info["run_id"] for info in infos],
        "experiment": [experiment_name] * len(infos),
    }
    if logged:
        params = [_run_params(run) for run in runs]
        for column, (source, key) in logged.items():
            columns[column] = ([float(m.get(key, nan)) for m in metrics] if source == "metric"
                               else [p.get(key) for p in params])  # fmt: skip
    # Same normalisation as the Prometheus side; few distinct instances, so once per value.
    stripped = {value: strip_port(value) for value in set(columns["instance"])}
    columns["instance"] = [stripped[value] for value in columns["instance"]]
    return _columns_frame(columns, logged)


def history_to_frame(
    run: Mapping[str, Any],
    histories: Mapping[str, Sequence[Mapping[str, Any]]],
    tag_keys: Mapping[str, str] | Any,
    experiment_name: str,
    start_ms: int,
    end_ms: int,
    logged: Logged | None = None,
) -> pd.DataFrame:
    """Layout ``metric_history``: one row per prediction logged as metric points in one run.

    Points of the metric keys are joined on ``(timestamp, step)``; a key with no point there is NaN.
    Only points with ``start_ms <= timestamp < end_ms`` are kept. A point logged twice at the same
    ``(timestamp, step)`` keeps its last value.

    :param run: the run's REST JSON (tags give model, version, instance).
    :param histories: metric key -> its points as the server sends them (``metrics/get-history``:
        ``{"key", "value", "timestamp", "step"}``; a NaN value is the string ``"NaN"``, an unset field
        absent). Keys outside :data:`METRIC_KEYS` and the logged metrics are ignored.
    :param tag_keys: output column -> MLflow tag name.
    :param experiment_name: value of the ``experiment`` column.
    :param start_ms: window start, epoch ms, inclusive.
    :param end_ms: window end, epoch ms, exclusive.
    :param logged: logged metrics are points like the others; logged params are the run's, on every row.
    """
    logged = logged or {}
    tags = _tags_of(run, _tag_keys(tag_keys))
    params = _run_params(run)
    metric_of = {column: key for column, (source, key) in logged.items() if source == "metric"}
    points: dict[tuple[int, int], dict[str, float]] = {}
    for key in dict.fromkeys([*METRIC_KEYS, *metric_of.values()]):
        for metric in histories.get(key) or ():
            ts = int(metric.get("timestamp", 0))
            if start_ms <= ts < end_ms:
                points.setdefault((ts, int(metric.get("step", 0))), {})[key] = float(metric.get("value", 0.0))
    rows = [
        {
            "timestamp": ts,
            **tags,
            **{k: values.get(k, math.nan) for k in METRIC_KEYS},
            "run_id": run["info"]["run_id"],
            "experiment": experiment_name,
            **{column: values.get(key, math.nan) if source == "metric" else params.get(key)
               for column, (source, key) in logged.items()},  # fmt: skip
        }
        for (ts, _step), values in sorted(points.items())
    ]
    return _prediction_frame(rows, logged)


# -- layout batch_table ---------------------------------------------------------------------------------

_UNIT_MS_DIVISOR = {"s": None, "ms": 1, "us": 1_000, "ns": 1_000_000}


def batch_table(
    timestamps_ms: Sequence[int],
    prediction_time: Sequence[float],
    accuracy: Sequence[float | None] | None = None,
    loss: Sequence[float | None] | None = None,
) -> pa.Table:
    """One batch of predictions as the ``batch_table`` layout stores it (the writer's side of the contract).

    Columns :data:`BATCH_COLUMNS`: ``timestamp`` as ``timestamp[ms, tz=UTC]``, the metrics as float64
    (None or NaN stored as null). Write it with ``pyarrow.parquet.write_table`` and log the file as the
    run's :data:`BATCH_ARTIFACT_PATH`.

    :param timestamps_ms: prediction times, epoch ms.
    :param prediction_time: seconds per prediction.
    :param accuracy: per prediction, or None when unknown for the whole batch.
    :param loss: per prediction, or None.
    :raises ValueError: when the lengths differ.
    """
    import numpy as np
    import pyarrow as pa

    n = len(timestamps_ms)
    columns: dict[str, Any] = {
        "timestamp": pa.array(np.asarray(timestamps_ms, dtype="int64"), type=pa.timestamp("ms", tz="UTC"))
    }
    for name, values in (("prediction_time", prediction_time), ("accuracy", accuracy), ("loss", loss)):
        if values is None:
            columns[name] = pa.nulls(n, pa.float64())
            continue
        if len(values) != n:
            raise ValueError(f"{name}: {len(values)} value(s) for {n} timestamp(s)")
        arr = np.asarray([math.nan if v is None else v for v in values], dtype="float64")
        columns[name] = pa.array(arr, type=pa.float64(), from_pandas=True)  # NaN -> null
    return pa.table(columns)


def batch_timestamps_ms(column: Any, where: str = "batch") -> Any:
    """A batch table's ``timestamp`` column as int64 epoch ms (numpy; a null is ``INT64_MIN``).

    Accepts Parquet timestamps of any unit (finer units truncated to the millisecond, like
    :func:`epoch_ms`; a timestamp without time zone is read as UTC) and integers (epoch ms).

    :param column: a pyarrow Array or ChunkedArray.
    :param where: names the batch in errors (experiment, run, artifact).
    :raises ValueError: for any other type.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    typ = column.type
    if pa.types.is_timestamp(typ):
        raw = pc.cast(column, pa.int64())
        divisor = _UNIT_MS_DIVISOR[typ.unit]
    elif pa.types.is_integer(typ):
        raw, divisor = pc.cast(column, pa.int64()), 1
    else:
        raise ValueError(f"{where}: column 'timestamp' is {typ}, expected a timestamp or int64 epoch ms")
    filled = pc.fill_null(raw, np.iinfo("int64").min)
    values = np.asarray(
        filled.to_numpy(zero_copy_only=False) if isinstance(filled, pa.Array) else filled.to_numpy()
    )
    values = values.astype("int64", copy=True)  # writable (pyarrow hands out read-only views)
    nulls = values == np.iinfo("int64").min
    if divisor is None:
        values = values * 1000
    elif divisor != 1:
        values = values // divisor
    values[nulls] = np.iinfo("int64").min
    return values


def _batch_metric(table: pa.Table, name: str, where: str) -> Any:
    import numpy as np
    import pyarrow as pa

    if name not in table.column_names:
        return np.full(table.num_rows, np.nan)
    column = table.column(name)
    typ = column.type
    if not (
        pa.types.is_floating(typ)
        or pa.types.is_integer(typ)
        or pa.types.is_decimal(typ)
        or pa.types.is_null(typ)
    ):
        raise ValueError(f"{where}: column {name!r} is {typ}, expected a number")
    return np.asarray(column.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype="float64")


def batches_to_frame(
    batches: Iterable[tuple[Mapping[str, Any], pa.Table]],
    tag_keys: Mapping[str, str] | Any,
    experiment_name: str,
    start_ms: int,
    end_ms: int,
    artifact_path: str = BATCH_ARTIFACT_PATH,
    logged: Logged | None = None,
) -> pd.DataFrame:
    """Layout ``batch_table``: one row per table row with ``start_ms <= timestamp < end_ms``.

    Model, version and instance come from each run's tags (``tag_keys``), ``run_id`` is the batch run.
    Rows keep their order within a batch. Rows without a timestamp, and rows outside their run's
    ``[start_time, end_time]`` (which a search by run times may miss in another window), are counted in a
    warning naming the runs; the former are dropped, the latter kept when inside the window.

    :param batches: ``(run, table)`` pairs: the run's REST JSON and a table with :data:`BATCH_COLUMNS`
        (extra columns ignored; a missing metric column is NaN).
    :param tag_keys: output column -> MLflow tag name.
    :param experiment_name: value of the ``experiment`` column.
    :param start_ms: window start, epoch ms, inclusive.
    :param end_ms: window end, epoch ms, exclusive.
    :param artifact_path: for messages.
    :param logged: a logged metric is the table's column of its key (NaN when the table has none), a logged
        param the run's, on each of its rows.
    :return: :data:`PREDICTION_COLUMNS` and the ``logged`` columns, with the dtypes of
        :func:`runs_json_to_frame`, unsorted.
    :raises ValueError: a table without ``timestamp`` or with a column of the wrong type (message: the
        experiment, run and artifact).
    """
    import numpy as np

    keys = _tag_keys(tag_keys)
    logged = logged or {}
    metric_of = {column: key for column, (source, key) in logged.items() if source == "metric"}
    param_of = {column: key for column, (source, key) in logged.items() if source == "param"}
    timestamps: list[Any] = []
    metrics: dict[str, list[Any]] = {k: [] for k in METRIC_KEYS}
    extra: dict[str, list[Any]] = {c: [] for c in metric_of}
    params: dict[str, list[Any]] = {c: [] for c in param_of}
    counts: list[int] = []
    tags: list[dict[str, str]] = []
    run_ids: list[str] = []
    untimed: list[str] = []
    outside: dict[str, int] = {}
    for run, table in batches:
        info = run["info"]
        run_id = info["run_id"]
        where = f"experiment {experiment_name!r}, run {run_id}, artifact {artifact_path!r}"
        if "timestamp" not in table.column_names:
            raise ValueError(
                f"{where}: no 'timestamp' column (columns: {', '.join(table.column_names) or 'none'})"
            )
        ts = batch_timestamps_ms(table.column("timestamp"), where)
        values = {k: _batch_metric(table, k, where) for k in METRIC_KEYS}
        if (ts == np.iinfo("int64").min).any():
            untimed.append(run_id)
        first = int(info["start_time"]) if info.get("start_time") is not None else np.iinfo("int64").min
        # an unset end time is absent (or 0, the proto default): the run has not ended
        last = int(info.get("end_time") or 0) or np.iinfo("int64").max
        timed = ts != np.iinfo("int64").min
        stray = int((timed & ((ts < first) | (ts > last))).sum())
        if stray:
            outside[run_id] = stray
        keep = (ts >= start_ms) & (ts < end_ms)
        timestamps.append(ts[keep])
        for k in METRIC_KEYS:
            metrics[k].append(values[k][keep])
        for column, key in metric_of.items():
            extra[column].append(_batch_metric(table, key, where)[keep])
        run_params = _run_params(run)
        for column, key in param_of.items():
            params[column].append(run_params.get(key))
        counts.append(int(keep.sum()))
        tags.append(_tags_of(run, keys))
        run_ids.append(run_id)
    if untimed:
        log.warning(
            "experiment %s: rows without a timestamp dropped (runs %s)",
            experiment_name,
            ", ".join(untimed[:5]),
        )
    if outside:
        log.warning(
            "experiment %s: %d row(s) outside their batch run's start/end time (runs %s): a window that does not "
            "overlap the run misses them", experiment_name, sum(outside.values()), ", ".join(list(outside)[:5]),
        )  # fmt: skip
    if not counts:
        return _prediction_frame([], logged)
    index = np.repeat(np.arange(len(counts)), counts)

    def per_run(values: list[str]) -> Any:
        return np.asarray(values, dtype=object)[index]

    return _columns_frame({
        "timestamp": np.concatenate(timestamps),
        **{name: per_run([t[name] for t in tags]) for name in ("model", "model_version", "instance")},
        **{k: np.concatenate(metrics[k]) for k in METRIC_KEYS},
        "run_id": per_run(run_ids),
        "experiment": [experiment_name] * len(index),
        **{column: np.concatenate(extra[column]) for column in metric_of},
        **{column: per_run(params[column]) for column in param_of},
    }, logged)  # fmt: skip


def _warn_incomplete(frame: pd.DataFrame, experiment: str, keys: Mapping[str, str]) -> None:
    """Log the predictions that cannot be judged as they are (kept in the partition all the same)."""
    def ids(mask: Any) -> str:
        run_ids = sorted(set(frame.loc[mask, "run_id"].astype(str)))
        return ", ".join(run_ids[:5]) + (f" and {len(run_ids) - 5} more" if len(run_ids) > 5 else "")

    for column in ("model", "instance"):
        mask = frame[column] == ""
        if mask.any():
            log.warning(
                "experiment %s: %d prediction(s) without tag %r (runs %s)", experiment, int(mask.sum()),
                keys[column], ids(mask),
            )  # fmt: skip
    bad = ~usable_prediction_times(frame["prediction_time"])
    if bad.any():
        log.warning(
            "experiment %s: %d prediction(s) without a usable prediction_time (missing, NaN, negative or "
            "infinite; not judged) (runs %s)", experiment, int(bad.sum()), ids(bad),
        )  # fmt: skip


def sort_predictions(frame: pd.DataFrame) -> pd.DataFrame:
    """Predictions in their canonical order: timestamp, model, instance (then experiment, run id)."""
    return frame.sort_values(
        ["timestamp", "model", "instance", "experiment", "run_id"], kind="mergesort"
    ).reset_index(drop=True)


def extract_predictions(
    hook: MlflowHook,
    experiments: Sequence[NamedExperiment],
    tag_keys: Mapping[str, str] | Any,
    start: datetime,
    end: datetime,
    page_size: int = 1000,
    logged: Logged | None = None,
) -> pd.DataFrame:
    """Every prediction made in ``[start, end)`` in the given experiments, as one frame.

    Every layout reads MLflow's REST JSON through the hook. ``run_per_prediction`` experiments: runs that
    started in the window (:meth:`MlflowHook.search_runs_json`, ``page_size`` runs per request) into
    :func:`runs_json_to_frame`. ``metric_history`` experiments: runs overlapping the window, their metric
    points inside it (:meth:`MlflowHook.metric_history`). ``batch_table`` experiments: runs overlapping the
    window, the rows inside it of each run's :data:`BATCH_ARTIFACT_PATH` (only that file downloaded; see
    :func:`batches_to_frame`).

    :param hook: the MLflow hook.
    :param experiments: objects with ``name`` and ``layout``.
    :param tag_keys: output column -> MLflow tag name (mapping or the config's ``TagKeys``).
    :param start: window start (inclusive, timezone-aware).
    :param end: window end (exclusive, timezone-aware).
    :param page_size: runs per search request (1..50,000).
    :param logged: values a team logs, read too (``mlflow.logged``; see each layout's function).
    :return: :data:`PREDICTION_COLUMNS` and the ``logged`` columns, sorted by :func:`sort_predictions`.
    :raises ValueError: for an unknown layout.
    :raises MlflowSourceError: for an unknown experiment or a server failure; ``MlflowSourceRefused`` for
        a batch artifact that is missing (finished run), not Parquet or of the wrong schema.
    """
    import pandas as pd

    start_ms, end_ms = epoch_ms(start), epoch_ms(end)
    if end_ms <= start_ms:
        raise ValueError(f"window end {end.isoformat()} is not after its start {start.isoformat()}")
    for experiment in experiments:
        if experiment.layout not in LAYOUTS:
            raise ValueError(f"experiment {experiment.name!r}: unknown layout {experiment.layout!r}")
    ids = hook.experiment_ids([e.name for e in experiments])
    logged = logged or {}
    frames = [_prediction_frame([], logged)]
    for experiment in experiments:
        started = time.monotonic()
        exp_id = ids[experiment.name]
        if experiment.layout == "run_per_prediction":
            # REST with the configured page (up to 50,000), a frame straight from the JSON: the fastest read
            runs = hook.search_runs_json(
                [exp_id], start_ms, end_ms, page_size=page_size, experiment=experiment.name
            )
            frame = runs_json_to_frame(runs, tag_keys, experiment.name, logged)
        elif experiment.layout == "batch_table":
            runs = hook.search_runs_overlapping(
                [exp_id], start_ms, end_ms, page_size=page_size, experiment=experiment.name
            )
            batches = hook.read_parquet_artifacts(runs, BATCH_ARTIFACT_PATH, experiment=experiment.name)
            try:
                frame = batches_to_frame(batches, tag_keys, experiment.name, start_ms, end_ms, logged=logged)
            except ValueError as exc:
                from modelwatch.errors import MlflowSourceRefused

                raise MlflowSourceRefused(getattr(hook, "tracking_uri", "MLflow"), str(exc)) from None
        else:
            runs = hook.search_runs_overlapping(
                [exp_id], start_ms, end_ms, page_size=page_size, experiment=experiment.name
            )
            keys = list(dict.fromkeys([*METRIC_KEYS, *(k for s, k in logged.values() if s == "metric")]))
            per_run = [
                history_to_frame(
                    run,
                    {key: hook.metric_history(run["info"]["run_id"], key, experiment=experiment.name) for key in keys},
                    tag_keys,
                    experiment.name,
                    start_ms,
                    end_ms,
                    logged,
                )
                for run in runs
            ]
            frame = pd.concat([_prediction_frame([], logged), *per_run], ignore_index=True)
        log.info(
            "experiment %s (%s): window [%s, %s): %d run(s), %d prediction(s), %.3f s",
            experiment.name,
            experiment.layout,
            start.isoformat(),
            end.isoformat(),
            len(runs),
            len(frame),
            time.monotonic() - started,
        )
        _warn_incomplete(frame, experiment.name, _tag_keys(tag_keys))
        frames.append(frame)
    return sort_predictions(pd.concat(frames, ignore_index=True))
