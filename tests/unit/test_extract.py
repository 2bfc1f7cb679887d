"""The pure extractors: chunk planning, matrix merging, frames, metric-history join, window edges."""

from __future__ import annotations

import bisect
import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric, Run, RunData, RunInfo, RunTag

from modelwatch.config import LoggedValues
from modelwatch.extract import (
    BATCH_ARTIFACT_PATH,
    BATCH_COLUMNS,
    NO_SAMPLE,
    attach_sample_times,
    batch_table,
    batch_timestamps_ms,
    batches_to_frame,
    combine_selectors,
    extract_predictions,
    extract_resources,
    first_raw_span,
    history_to_frame,
    matrix_to_frame,
    merge_matrices,
    newest_sample_at,
    next_raw_span,
    runs_json_to_frame,
    series_sample_times,
    strip_port,
)
from modelwatch.promql import analyse
from modelwatch.schema import MATRIX_COLUMNS, PREDICTION_COLUMNS, RESOURCE_COLUMNS
from modelwatch.timegrid import epoch_ms, from_epoch_ms, last_step_before, plan_chunks

DAY = datetime(2026, 3, 3, tzinfo=UTC)
DAY_MS = epoch_ms(DAY)
NEXT_MS = DAY_MS + 86_400_000
TAGS = {"model": "model", "model_version": "model_version", "instance": "instance"}


def grid(start: datetime, end: datetime, step: float) -> list[int]:
    """Evaluation instants (ms) of one query_range over [start, end], as Prometheus computes them."""
    s, e, st = epoch_ms(start), epoch_ms(end), round(step * 1000)
    return list(range(s, e + 1, st))


# -- plan_chunks --------------------------------------------------------------------------------------


def check_plan(
    start: datetime, end: datetime, step: float, max_points: int
) -> list[tuple[datetime, datetime]]:
    chunks = plan_chunks(start, end, step, max_points)
    step_ms = round(step * 1000)
    covered: list[int] = []
    for a, b in chunks:
        points = grid(a, b, step)
        assert len(points) <= max_points
        assert (epoch_ms(b) - epoch_ms(a)) / step_ms <= 11000  # Prometheus's own check
        assert (epoch_ms(a) - epoch_ms(start)) % step_ms == 0  # on the request's grid
        assert a.tzinfo is not None and b.tzinfo is not None
        covered += points
    assert covered == grid(start, end, step)  # same instants, in order, none twice
    for (_, b), (a, _) in zip(chunks, chunks[1:], strict=False):
        assert epoch_ms(a) - epoch_ms(b) == step_ms  # seams share no point and skip none
    return chunks


def test_three_days_at_15s_needs_several_chunks() -> None:
    start = datetime(2026, 3, 2, tzinfo=UTC)
    end = datetime(2026, 3, 5, tzinfo=UTC) - timedelta(seconds=15)
    assert len(grid(start, end, 15)) == 3 * 5760 > 11000  # one request would be refused
    chunks = check_plan(start, end, 15, 11000)
    assert len(chunks) == 2
    assert len(check_plan(start, end, 15, 1000)) == 18  # ceil(17280 / 1000)


@pytest.mark.parametrize(
    ("span", "step", "max_points"),
    [
        (timedelta(days=1), 15, 11000),
        (timedelta(days=1) - timedelta(seconds=15), 15, 5760),
        (timedelta(days=4, seconds=7), 60, 1000),
        (timedelta(hours=5, milliseconds=123), 7.5, 97),
        (timedelta(0), 15, 11000),
        (timedelta(seconds=14), 15, 1),
        (timedelta(minutes=1), 15, 1),
    ],
)
def test_plan_chunks_union_equals_single_request(span: timedelta, step: float, max_points: int) -> None:
    check_plan(DAY, DAY + span, step, max_points)


def test_plan_chunks_exact_multiple_has_no_empty_tail() -> None:
    chunks = plan_chunks(DAY, DAY + timedelta(seconds=15 * 19), 15, 10)  # 20 points
    assert chunks == [
        (DAY, DAY + timedelta(seconds=15 * 9)),
        (DAY + timedelta(seconds=15 * 10), DAY + timedelta(seconds=15 * 19)),
    ]


def test_plan_chunks_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        plan_chunks(DAY, DAY - timedelta(seconds=1), 15)
    with pytest.raises(ValueError):
        plan_chunks(DAY, DAY, 0)
    with pytest.raises(ValueError):
        plan_chunks(DAY, DAY, 15, 0)
    with pytest.raises(ValueError, match="naive"):
        plan_chunks(datetime(2026, 3, 3), datetime(2026, 3, 4), 15)


def test_last_step_before_end() -> None:
    assert last_step_before(DAY, DAY + timedelta(days=1), 15) == DAY + timedelta(
        hours=23, minutes=59, seconds=45
    )
    assert last_step_before(DAY, DAY + timedelta(seconds=100), 15) == DAY + timedelta(seconds=90)
    assert last_step_before(DAY, DAY + timedelta(seconds=1), 15) == DAY
    with pytest.raises(ValueError):
        last_step_before(DAY, DAY, 15)


# -- merge_matrices -----------------------------------------------------------------------------------


def test_merge_matrices() -> None:
    a = [
        {"metric": {"instance": "model-b:9100", "job": "node"}, "values": [[1.0, "1"], [2.0, "2"]]},
        {"metric": {"instance": "model-a:9100", "job": "node"}, "values": [[1.0, "10"]]},
    ]
    b = [
        # same label set, other key order; 2.0 is a seam duplicate
        {"metric": {"job": "node", "instance": "model-b:9100"}, "values": [[3.0, "3"], [2.0, "2"]]},
        {"metric": {"instance": "model-c:9100", "job": "node"}, "values": [[3.0, "30"]]},
    ]
    merged = merge_matrices([a, b])
    assert [m["metric"]["instance"] for m in merged] == ["model-a:9100", "model-b:9100", "model-c:9100"]
    assert merged[1]["values"] == [[1.0, "1"], [2.0, "2"], [3.0, "3"]]
    assert merge_matrices([]) == [] and merge_matrices([[], []]) == []


# -- matrix_to_frame ----------------------------------------------------------------------------------


def test_matrix_to_frame() -> None:
    result = [
        {
            "metric": {"job": "node", "instance": "model-a:9100"},
            "values": [
                [1772496000, "0.5"],
                [1772496015.5, "NaN"],
                [1772496030, "+Inf"],
                [1772496045, "-Inf"],
            ],
        },
        {"metric": {"__name__": "x"}, "values": [[1772496000, "1e3"]]},
    ]
    df = matrix_to_frame(result, "cpu")
    assert list(df.columns) == list(MATRIX_COLUMNS)
    assert str(df["timestamp"].dtype) == "datetime64[ms, UTC]"
    assert df["value"].dtype == "float64"
    assert df["timestamp"].iloc[0] == pd.Timestamp(DAY)
    assert df["timestamp"].iloc[1] == pd.Timestamp(DAY + timedelta(seconds=15.5))
    values = df["value"].tolist()
    assert values[0] == 0.5 and math.isnan(values[1]) and values[2] == math.inf and values[3] == -math.inf
    assert values[4] == 1000.0
    assert df["instance"].tolist() == ["model-a"] * 4 + [""]
    assert df["query"].unique().tolist() == ["cpu"]
    assert json.loads(df["labels"].iloc[0]) == {"instance": "model-a:9100", "job": "node"}
    assert df["labels"].iloc[0] == '{"instance":"model-a:9100","job":"node"}'  # sorted keys, stable text
    for column in ("query", "instance", "labels"):
        assert pd.api.types.is_string_dtype(df[column])


def test_matrix_to_frame_custom_instance_label() -> None:
    df = matrix_to_frame(
        [{"metric": {"pod": "model-b:8000"}, "values": [[1, "1"]]}], "q", instance_label="pod"
    )
    assert df["instance"].tolist() == ["model-b"]


def test_empty_matrix_frame_has_columns_and_dtypes() -> None:
    df = matrix_to_frame([], "cpu")
    assert list(df.columns) == list(MATRIX_COLUMNS) and len(df) == 0
    assert str(df["timestamp"].dtype) == "datetime64[ms, UTC]" and df["value"].dtype == "float64"
    assert pd.api.types.is_string_dtype(df["instance"])


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("model-a:9100", "model-a"),
        ("model-a", "model-a"),
        ("10.0.0.1:8000", "10.0.0.1"),
        ("[::1]:9100", "::1"),
        ("::1", "::1"),
        ("", ""),
        ("host:abc", "host:abc"),
    ],
)
def test_strip_port(raw: str, expected: str) -> None:
    assert strip_port(raw) == expected


# -- extract_resources --------------------------------------------------------------------------------


@dataclass
class Q:
    name: str
    promql: str


def live_sample(events: Sequence[tuple[int, str]], t: int, lookback: int) -> int | None:
    """The time of a series' newest event at or before ``t`` when it is a real sample at most ``lookback``
    old (the series is live at ``t``), else None."""
    k = bisect.bisect_right(events, (t, "~")) - 1  # "~" sorts after both kinds
    if k < 0 or events[k][1] != "s" or t - events[k][0] > lookback:
        return None
    return events[k][0]


class GridPrometheus:
    """Answers like Prometheus would, from simulated scrapes.

    ``scrapes`` maps a selector to its series: ``{labels: [(time_ms, kind), ...]}`` with kind ``"s"`` (a
    real sample) or ``"x"`` (a staleness marker), sorted by time. A query that is not a presence query
    answers 0.25 at every grid instant in [start, end] (inclusive) for each of ``instances``. The presence
    query ``count by (instance) (<selector>)`` and the raw read follow Prometheus 2.42: a series is live at
    ``t`` when its newest event at or before ``t`` is a real sample at most ``LOOKBACK`` old; a range
    vector holds the real samples in ``[start, end]``."""

    LOOKBACK = 300_000

    def __init__(self, scrapes: dict[str, dict[tuple[tuple[str, str], ...], list[tuple[int, str]]]] | None = None,
                 instances: Sequence[str] = ("model-a:9100",)) -> None:  # fmt: skip
        self.scrapes = scrapes or {}
        self.instances = list(instances)
        self.calls: list[tuple[str, str, int, int]] = []  # (kind, promql or selector, start ms, end ms)
        self.returned: list[int] = []  # samples per raw read
        self.requests_made = 0

    def query_range(self, promql: str, start: datetime, end: datetime, step_seconds: float, *,
                    query_name: str) -> list[dict[str, Any]]:  # fmt: skip
        # one request: extract.query_range_chunked splits long windows into such calls
        self.requests_made += 1
        steps = grid(start, end, step_seconds)
        if promql.startswith("count by (instance) ("):
            self.calls.append(("presence", promql, epoch_ms(start), epoch_ms(end)))
            selector = promql.removeprefix("count by (instance) (").removesuffix(")")
            live: dict[str, dict[int, int]] = {}
            for labels, events in self.scrapes.get(selector, {}).items():
                counts = live.setdefault(dict(labels).get("instance", ""), {})
                for t in steps:
                    if live_sample(events, t, self.LOOKBACK) is not None:
                        counts[t] = counts.get(t, 0) + 1
            return [{"metric": {"instance": i} if i else {}, "values": [[t / 1000, str(n)] for t, n in sorted(c.items())]}
                    for i, c in live.items() if c]  # fmt: skip
        self.calls.append(("query", promql, epoch_ms(start), epoch_ms(end)))
        return [{"metric": {"instance": i, "job": "node"}, "values": [[t / 1000, "0.25"] for t in steps]}
                for i in self.instances]  # fmt: skip

    def raw_samples(
        self, selector: str, start: datetime, end: datetime, *, query_name: str
    ) -> list[dict[str, Any]]:
        self.requests_made += 1
        s, e = epoch_ms(start), epoch_ms(end)
        assert e > s
        self.calls.append(("raw", selector, s, e))
        out = []
        for labels, events in self.scrapes.get(selector, {}).items():
            values = [[t / 1000, "1"] for t, kind in events if kind == "s" and s <= t <= e]
            if values:
                out.append({"metric": dict(labels), "values": values})
        self.returned.append(sum(len(x["values"]) for x in out))
        return out


def regular(instance: str, first: datetime, last: datetime, every: float, lag: float = 0.0,
            **labels: str) -> dict[tuple[tuple[str, str], ...], list[tuple[int, str]]]:  # fmt: skip
    """One series scraped every ``every`` seconds from ``first - lag`` to ``last - lag``."""
    key = tuple(sorted({"instance": instance, **labels}.items()))
    return {key: [(t - round(lag * 1000), "s") for t in grid(first, last, every)]}


def reference_sample_times(
    sim: GridPrometheus, promql: str, steps: Sequence[int]
) -> dict[tuple[str, int], int]:
    """What ``min by (instance) (max by (instance) (timestamp(<selector>)) or ...)`` answers, then the
    newest over the label values of one instance (ports stripped): {(instance, step): sample ms}."""
    selectors, _ = analyse(promql)
    per_raw: dict[tuple[str, int], int] = {}
    for t in steps:
        for_step: dict[str, list[int]] = {}
        for selector in selectors:
            newest_live: dict[str, int] = {}
            for labels, events in sim.scrapes.get(selector, {}).items():
                newest = live_sample(events, t, sim.LOOKBACK)
                if newest is not None:
                    instance = dict(labels).get("instance", "")
                    newest_live[instance] = max(newest_live.get(instance, newest), newest)
            for instance, newest in newest_live.items():
                for_step.setdefault(instance, []).append(newest)
        for instance, newest in for_step.items():
            per_raw[(instance, t)] = min(newest)
    out: dict[tuple[str, int], int] = {}
    for (instance, t), sample in per_raw.items():
        key = (strip_port(instance), t)
        out[key] = max(out.get(key, sample), sample)
    return out


def check_against_reference(sim: GridPrometheus, promql: str, start: datetime, end: datetime, step: float,
                            **kwargs: Any) -> pd.DataFrame:  # fmt: skip
    df = extract_resources(sim, [Q("q", promql)], start, end, step, **kwargs)  # type: ignore[arg-type]
    expected = reference_sample_times(sim, promql, grid(start, last_step_before(start, end, step), step))
    ts = df["timestamp"].to_numpy(dtype="datetime64[ms]").view("int64")
    st = df["sample_time"].to_numpy(dtype="datetime64[ms]").view("int64")
    for instance, t, sample in zip(df["instance"], ts, st, strict=True):
        want = expected.get((instance, int(t)))
        got = None if sample == NO_SAMPLE else int(sample)
        assert got == want, (promql, instance, from_epoch_ms(int(t)).isoformat(), got, want)
    return df


def test_extract_resources_window_edges_and_concat() -> None:
    hook = GridPrometheus({"cpu_metric": regular("model-a:9100", DAY - timedelta(minutes=5), DAY + timedelta(days=1), 15),
                           "mem_metric": regular("model-a:9100", DAY - timedelta(minutes=5), DAY + timedelta(days=1), 15)})  # fmt: skip
    queries = [Q("cpu", "cpu_metric"), Q("memory", "mem_metric")]
    df = extract_resources(hook, queries, DAY, DAY + timedelta(days=1), 15, 11000, "instance")  # type: ignore[arg-type]
    # each query, then the presence and raw sample reads of its selector
    assert [c[:2] for c in hook.calls if c[0] != "raw"] == [
        ("query", "cpu_metric"), ("presence", "count by (instance) (cpu_metric)"),
        ("query", "mem_metric"), ("presence", "count by (instance) (mem_metric)"),
    ]  # fmt: skip
    last = epoch_ms(DAY + timedelta(days=1) - timedelta(seconds=15))
    assert {c[2:] for c in hook.calls if c[0] != "raw"} == {(DAY_MS, last)}
    raw = [c for c in hook.calls if c[0] == "raw" and c[1] == "cpu_metric"]
    assert raw[0][2] == DAY_MS - 300_000 and raw[-1][3] == last  # from the lookback before the first step
    assert all(a[3] == b[2] for a, b in zip(raw, raw[1:], strict=False))  # contiguous spans
    assert len(df) == 2 * 5760
    for _name, part in df.groupby("query"):
        assert part["timestamp"].min() == pd.Timestamp(DAY)  # the start is in
        assert part["timestamp"].max() == pd.Timestamp(DAY + timedelta(hours=23, minutes=59, seconds=45))
    assert pd.Timestamp(DAY + timedelta(days=1)) not in set(df["timestamp"])  # the end is the next window's
    assert list(df.columns) == list(RESOURCE_COLUMNS) and str(df["timestamp"].dtype) == "datetime64[ms, UTC]"
    assert df["query"].tolist()[0] == "cpu" and df["query"].tolist()[-1] == "memory"
    assert (df["sample_time"] == df["timestamp"]).all()


def test_extract_resources_records_the_real_sample_time_and_the_rate_window() -> None:
    # node_load1's last scrape was 105 s before the window: Prometheus repeats it for its 5-minute lookback
    # (the frame says how old it is) and then has nothing (NaT); the CPU counter is scraped 3 s before each step
    before = DAY - timedelta(minutes=10)
    hook = GridPrometheus({"node_load1": regular("model-a:9100", before, DAY - timedelta(seconds=105), 15),
                           "node_cpu_seconds_total": regular("model-a:9100", before, DAY + timedelta(hours=2), 15, lag=3)})  # fmt: skip
    queries = [Q("load", "node_load1"), Q("cpu", "1 - avg by (instance) (rate(node_cpu_seconds_total[1m]))")]
    df = extract_resources(hook, queries, DAY, DAY + timedelta(hours=1), 15)  # type: ignore[arg-type]
    load, cpu = df[df["query"] == "load"], df[df["query"] == "cpu"]
    repeated = load["timestamp"] <= pd.Timestamp(DAY + timedelta(seconds=195))
    assert (
        repeated.sum() == 14
        and (load.loc[repeated, "sample_time"] == pd.Timestamp(DAY - timedelta(seconds=105))).all()
    )
    assert load.loc[~repeated, "sample_time"].isna().all()
    assert ((cpu["timestamp"] - cpu["sample_time"]) == pd.Timedelta(seconds=3)).all()
    assert set(load["window_seconds"]) == {0.0} and set(cpu["window_seconds"]) == {60.0}
    assert str(df["sample_time"].dtype) == "datetime64[ms, UTC]"


def test_a_query_that_reads_no_series_is_its_own_sample() -> None:
    hook = GridPrometheus()
    df = extract_resources(hook, [Q("one", "vector(1)")], DAY, DAY + timedelta(minutes=5), 15)  # type: ignore[arg-type]
    assert [c[:2] for c in hook.calls] == [("query", "vector(1)")]
    assert (df["sample_time"] == df["timestamp"]).all()


def test_extract_resources_no_queries_is_empty_frame() -> None:
    df = extract_resources(GridPrometheus(), [], DAY, DAY + timedelta(hours=1), 15)  # type: ignore[arg-type]
    assert list(df.columns) == list(RESOURCE_COLUMNS) and len(df) == 0


def test_a_selector_read_by_several_queries_is_read_once_and_an_absent_one_not_at_all() -> None:
    span = (DAY - timedelta(minutes=5), DAY + timedelta(hours=1))
    hook = GridPrometheus({"http_requests_total": regular("model-a:9100", *span, 15)})
    queries = [Q("rate", "sum by (instance) (rate(http_requests_total[1m]))"),
               Q("errors", '(sum by (instance) (rate(http_requests_total{status="5xx"}[1m])) or '
                           "sum by (instance) (rate(http_requests_total[1m])) * 0) / "
                           "sum by (instance) (rate(http_requests_total[1m]))")]  # fmt: skip
    df = extract_resources(hook, queries, DAY, DAY + timedelta(hours=1), 15)  # type: ignore[arg-type]
    presence = [c[1] for c in hook.calls if c[0] == "presence"]
    assert presence == ["count by (instance) (http_requests_total)",
                        'count by (instance) (http_requests_total{status="5xx"})']  # fmt: skip
    assert {c[1] for c in hook.calls if c[0] == "raw"} == {"http_requests_total"}  # no 5xx series: not read
    # the absent 5xx counter constrains nothing
    assert (df["sample_time"] == df["timestamp"]).all()


def test_sample_times_follow_gaps_staleness_and_several_selectors() -> None:
    """Against a brute-force evaluation of the timestamp() definition, on scrapes with every edge case."""
    t0 = DAY_MS - 600_000
    every = 15_000
    a, b = "model-a:9100", "model-a:9200"  # two label values of one instance (ports stripped)

    def series(
        instance: str, present: Any, down: Any = lambda k: False, offset: int = 0, **labels: str
    ) -> Any:
        """Scrapes every 15 s for 2 hours; ``present(k)`` says whether the series was in scrape k (absent after
        being present: a staleness marker), ``down(k)`` that scrape k did not happen (no marker: a gap)."""
        events, was = [], False
        for k in range(2 * 240 + 40):
            t = t0 + k * every + offset
            if down(k):
                continue
            if present(k):
                events.append((t, "s"))
                was = True
            elif was:
                events.append((t, "x"))
                was = False
        return {tuple(sorted({"instance": instance, **labels}.items())): events}

    def gap(k: int) -> bool:
        return 100 <= k < 140

    scrapes = {
        # 10 minutes without any scrape (Prometheus or the agent down: no markers) from scrape 100
        "gauge": {**series(a, lambda k: True, down=gap),
                  # appears mid-window, disappears with a marker, comes back
                  **series(a, lambda k: 60 <= k < 200 or k >= 260, down=gap, kind="late"),
                  # another port of the same instance, scraped 4 s later, gone (marker) from scrape 300 on
                  **series(b, lambda k: k < 300, down=gap, offset=4000)},
        # scraped every 60 s only, 7 s after the gauge: several selectors take the oldest
        "slow": series(a, lambda k: k % 4 == 0, offset=7000),
        # a counter that exists only for a while (an error counter after the first errors, then a restart)
        "errors": series(a, lambda k: 150 <= k < 330),
    }  # fmt: skip
    sim = GridPrometheus(scrapes, instances=[a, b])
    start, end = DAY, DAY + timedelta(hours=2)
    for promql in ("gauge", "max by (instance) (gauge) / max by (instance) (slow)",
                   "(sum by (instance) (rate(errors[1m])) or max by (instance) (gauge) * 0) / max by (instance) (slow)",
                   "rate(gauge[1m])"):  # fmt: skip
        check_against_reference(sim, promql, start, end, 15)
        check_against_reference(
            sim, promql, start + timedelta(seconds=2), end, 7
        )  # steps off the scrape grid
        # tiny raw reads: many spans, same answer
        check_against_reference(sim, promql, start, end, 15, max_raw_samples=50)
    df = check_against_reference(sim, "gauge", start, end, 15)
    assert df["sample_time"].isna().any() and df["sample_time"].notna().any()


def test_raw_reads_stay_under_the_sample_budget() -> None:
    span = (DAY - timedelta(minutes=5), DAY + timedelta(days=1))
    scrapes = {"m": {**regular("a:1", *span, 15, cpu="0"), **regular("a:1", *span, 15, cpu="1"),
                     **regular("b:1", *span, 15, cpu="0")}}  # fmt: skip
    hook = GridPrometheus(scrapes, instances=["a:1", "b:1"])
    df = extract_resources(hook, [Q("m", "m")], DAY, DAY + timedelta(days=1), 15, max_raw_samples=2000)  # type: ignore[arg-type]
    assert (df["sample_time"] == df["timestamp"]).all()
    # the first span assumes a sample per series every 5 s (3 series: 55.5 min, 669 samples); the others are
    # sized from the density seen before (plus a shared boundary)
    assert hook.returned[0] == 3 * 223
    assert max(hook.returned[1:]) <= 2000 * 1.01 + 3
    assert 9 <= len(hook.returned) <= 13  # 3 x 5,780 samples in spans of about 2,000


# -- sample-time helpers ------------------------------------------------------------------------------


def test_series_sample_times_unions_the_series_of_an_instance() -> None:
    matrix = [
        {"metric": {"instance": "a:1", "cpu": "0"}, "values": [[1.5, "1"], [3.0, "2"]]},
        {"metric": {"instance": "a:1", "cpu": "1"}, "values": [[1.5, "7"], [2.001, "8"]]},
        {"metric": {"job": "x"}, "values": [[4, "1"]]},
        {"metric": {"instance": "b:1"}, "values": []},
    ]
    out = series_sample_times(matrix)
    assert {k: v.tolist() for k, v in out.items()} == {"a:1": [1500, 2001, 3000], "": [4000]}


def test_newest_sample_at() -> None:
    times = np.array([1000, 2000, 5000], dtype="int64")
    got = newest_sample_at(times, np.array([500, 1000, 1999, 4999, 5000, 9000]))
    assert got.tolist() == [NO_SAMPLE, 1000, 1000, 2000, 5000, 5000]
    assert newest_sample_at(np.empty(0, dtype="int64"), np.array([1])).tolist() == [NO_SAMPLE]


def test_next_raw_span() -> None:
    assert next_raw_span(1_800_000, 0, 250_000) == 8 * 1_800_000  # nothing there: grow
    assert next_raw_span(1_800_000, 1_000, 250_000) == 8 * 1_800_000  # sparse: grow at most 8x
    assert next_raw_span(1_800_000, 500_000, 250_000) == 900_000  # dense: half the span
    assert next_raw_span(1_000, 10**9, 1) == 1000  # never under a second


def test_first_raw_span() -> None:
    assert first_raw_span(2, 250_000) == 250_000 * 5 * 1000 // 2  # a few series: all of a day at once
    assert first_raw_span(10**7, 250_000) == 60_000  # very many: a minute
    assert first_raw_span(0, 100) == 500_000


def test_combine_selectors_takes_the_oldest_of_the_live_ones() -> None:
    def arr(*v: int) -> Any:
        return np.array(v, dtype="int64")

    a = {"x:1": (arr(10, 20, 30), arr(9, 19, 29)), "y:1": (arr(10), arr(1))}
    b = {"x:1": (arr(20, 30), arr(15, NO_SAMPLE))}
    out = combine_selectors([a, b])
    assert out["x:1"][0].tolist() == [10, 20, 30]
    assert out["x:1"][1].tolist() == [9, 15, NO_SAMPLE]  # b absent at 10; unknown at 30 stays unknown
    assert out["y:1"][1].tolist() == [1]


def test_attach_sample_times_matches_instance_and_step() -> None:
    frame = matrix_to_frame([
        {"metric": {"instance": "x:9100"}, "values": [[10, "1"], [20, "1"], [30, "1"]]},
        {"metric": {"instance": "z:9100"}, "values": [[10, "1"]]},
    ], "q")  # fmt: skip
    times = {
        "x:9100": (np.array([10_000, 20_000]), np.array([9_000, NO_SAMPLE])),
        "x:9200": (np.array([20_000]), np.array([18_000])),  # another port of x: the newest wins
    }
    out = attach_sample_times(frame, times, 60.0)
    assert out["sample_time"].tolist()[:3] == [pd.Timestamp(9_000, unit="ms", tz="UTC"),
                                               pd.Timestamp(18_000, unit="ms", tz="UTC"), pd.NaT]  # fmt: skip
    assert out["sample_time"].isna().tolist() == [False, False, True, True]
    assert str(out["sample_time"].dtype) == "datetime64[ms, UTC]" and set(out["window_seconds"]) == {60.0}
    assert attach_sample_times(frame, {}, 0.0)["sample_time"].isna().all()
    empty = attach_sample_times(matrix_to_frame([], "q"), times, 0.0)
    assert len(empty) == 0 and list(empty.columns) == list(RESOURCE_COLUMNS)


# -- MLflow frames ------------------------------------------------------------------------------------


def run_entity(
    run_id: str,
    start_ms: int,
    metrics: dict[str, float] | None = None,
    tags: dict[str, str] | None = None,
    end_ms: int | None = None,
) -> Run:
    info = RunInfo(run_id, "1", "u", "FINISHED", start_ms, end_ms, "active")
    data = RunData(
        metrics=[Metric(k, v, start_ms, 0) for k, v in (metrics or {}).items()],
        tags=[RunTag(k, v) for k, v in (tags or {}).items()],
    )
    return Run(info, data)


def rest_json(r: Run) -> dict[str, Any]:
    """A run as MLflow's REST API sends it (``runs/search``): MLflow's own proto -> JSON conversion."""
    from mlflow.utils.proto_json_utils import message_to_json

    return json.loads(message_to_json(r.to_proto()))


def run(
    run_id: str,
    start_ms: int,
    metrics: dict[str, float] | None = None,
    tags: dict[str, str] | None = None,
    end_ms: int | None = None,
) -> dict[str, Any]:
    """One run as the server's JSON."""
    return rest_json(run_entity(run_id, start_ms, metrics, tags, end_ms))


def point(key: str, value: float, timestamp: int, step: int) -> dict[str, Any]:
    """One metric point as ``metrics/get-history`` sends it (MLflow's own proto -> JSON conversion)."""
    from mlflow.utils.proto_json_utils import message_to_json

    return json.loads(message_to_json(Metric(key, value, timestamp, step).to_proto()))


def client_frame(runs: list[Run], tag_keys: Any, experiment: str) -> pd.DataFrame:
    """The frame the MlflowClient path built from run entities (``runs_to_frame`` until the hook read REST
    only), kept as the reference the REST frame must equal."""
    from modelwatch.extract import _prediction_frame, _tag_keys

    keys = _tag_keys(tag_keys)
    rows = []
    for r in runs:
        tags, metrics = r.data.tags or {}, r.data.metrics or {}
        row = {column: str(tags.get(tag, "")) for column, tag in keys.items()}
        row["instance"] = strip_port(row["instance"])
        rows.append({"timestamp": int(r.info.start_time), **row,
                     **{k: float(metrics.get(k, math.nan)) for k in ("prediction_time", "accuracy", "loss")},
                     "run_id": r.info.run_id, "experiment": experiment})  # fmt: skip
    return _prediction_frame(rows)


FRAUD_TAGS = {"model": "fraud-detector", "model_version": "3", "instance": "model-a"}


#: tag keys under which r2 of :func:`two_runs` says where it ran
SERVED_ON_TAGS = {"model": "model", "model_version": "model_version", "instance": "served_on"}


def two_run_entities() -> list[Run]:
    """r1 with every metric and the fraud tags; r2 with prediction_time only, its instance under ``served_on``."""
    return [
        run_entity("r1", DAY_MS + 600_000, {"prediction_time": 0.2, "accuracy": 0.9, "loss": 0.1}, FRAUD_TAGS),
        run_entity(
            "r2",
            DAY_MS + 1_200_000,
            {"prediction_time": 2.5},
            {"model": "fraud-detector", "served_on": "model-b:8000"},
        ),
    ]


def two_runs() -> list[dict[str, Any]]:
    """:func:`two_run_entities` as the server's JSON."""
    return [rest_json(r) for r in two_run_entities()]


def test_runs_json_to_frame() -> None:
    runs = two_runs()
    df = runs_json_to_frame(runs, SERVED_ON_TAGS, "exp")
    assert list(df.columns) == list(PREDICTION_COLUMNS)
    assert str(df["timestamp"].dtype) == "datetime64[ms, UTC]"
    assert df["timestamp"].tolist() == [
        pd.Timestamp(DAY + timedelta(minutes=10)),
        pd.Timestamp(DAY + timedelta(minutes=20)),
    ]
    assert df["instance"].tolist() == ["", "model-b"]  # r1 has no served_on tag; ports are dropped
    assert df["model_version"].tolist() == ["3", ""]
    assert (
        df.loc[1, "prediction_time"] == 2.5
        and math.isnan(df.loc[1, "accuracy"])
        and math.isnan(df.loc[1, "loss"])
    )
    assert df["run_id"].tolist() == ["r1", "r2"] and df["experiment"].tolist() == ["exp", "exp"]
    for column in ("prediction_time", "accuracy", "loss"):
        assert df[column].dtype == "float64"


def test_runs_json_to_frame_equals_the_client_frame() -> None:
    tags = SERVED_ON_TAGS
    runs = [
        *two_run_entities(),
        run_entity(
            "r3",
            DAY_MS + 1_200_000,
            {"prediction_time": math.nan, "accuracy": math.inf, "loss": -math.inf},
            {"served_on": "[::1]:9100", "model_version": ""},
        ),
        run_entity("r4", DAY_MS, {}, {}),  # no metrics, no tags: the JSON has no lists at all
        run_entity("r5", DAY_MS + 5, {"prediction_time": 0.0, "accuracy": -1.5}, {"served_on": "10.0.0.7:8000"}),
    ]
    payload = [rest_json(r) for r in runs]
    assert "metrics" not in payload[3].get("data", {}) and payload[2]["data"]["metrics"][0]["value"] == "NaN"
    expected = client_frame(runs, tags, "exp")
    got = runs_json_to_frame(payload, tags, "exp")
    pd.testing.assert_frame_equal(got, expected)
    assert got["instance"].tolist() == ["", "model-b", "::1", "", "10.0.0.7"]
    assert math.isnan(got.loc[2, "prediction_time"]) and got.loc[2, "accuracy"] == math.inf
    assert got.loc[4, "prediction_time"] == 0.0  # a real zero is not missing


def test_runs_json_to_frame_reads_the_server_json_text() -> None:
    # int64 fields as JSON strings (proto3 JSON style) and non-finite values as strings parse the same way
    text = json.dumps(
        {
            "runs": [
                {
                    "info": {"run_id": "a", "run_uuid": "a", "start_time": str(DAY_MS)},
                    "data": {
                        "metrics": [
                            {"key": "loss", "value": "Infinity"},
                            {"key": "prediction_time", "value": 1},
                        ],
                        "tags": [{"key": "instance", "value": "m:1"}],
                    },
                }
            ]
        }
    )
    got = runs_json_to_frame(json.loads(text)["runs"], TAGS, "exp")
    assert got["timestamp"].tolist() == [pd.Timestamp(DAY)] and got["instance"].tolist() == ["m"]
    assert (
        got.loc[0, "loss"] == math.inf
        and got.loc[0, "prediction_time"] == 1.0
        and math.isnan(got.loc[0, "accuracy"])
    )
    assert got["model"].tolist() == [""] and got["prediction_time"].dtype == "float64"


def test_runs_json_to_frame_empty() -> None:
    pd.testing.assert_frame_equal(runs_json_to_frame([], TAGS, "exp"), client_frame([], TAGS, "exp"))
    df = runs_json_to_frame([], TAGS, "exp")
    assert list(df.columns) == list(PREDICTION_COLUMNS) and len(df) == 0
    assert str(df["timestamp"].dtype) == "datetime64[ms, UTC]" and df["loss"].dtype == "float64"


def test_history_to_frame_joins_on_timestamp_and_step() -> None:
    r = run("h1", DAY_MS, tags={"model": "recommender", "model_version": "12", "instance": "model-b"})
    t1, t2, t3 = DAY_MS, DAY_MS + 120_000, DAY_MS + 240_000
    histories = {
        "prediction_time": [
            point("prediction_time", 0.2, t1, 0),
            point("prediction_time", 0.3, t2, 1),
            point("prediction_time", 0.4, t3, 2),
        ],
        # logged out of order, t3 missing, one point duplicated (last value wins)
        "accuracy": [
            point("accuracy", 0.8, t2, 1),
            point("accuracy", 0.9, t1, 0),
            point("accuracy", 0.95, t1, 0),
        ],
        "loss": [point("loss", 0.1, t1, 0), point("loss", 0.2, t2, 1), point("loss", 0.3, t3, 2)],
        "other": [point("other", 1.0, t1, 0)],
    }
    df = history_to_frame(r, histories, TAGS, "recommender-predictions", DAY_MS, NEXT_MS)
    assert list(df.columns) == list(PREDICTION_COLUMNS)
    assert [epoch_ms(t) for t in df["timestamp"].dt.to_pydatetime()] == [t1, t2, t3]
    assert df["prediction_time"].tolist() == [0.2, 0.3, 0.4]
    assert df["accuracy"].tolist()[:2] == [0.95, 0.8] and math.isnan(df["accuracy"].iloc[2])
    assert set(df["model"]) == {"recommender"} and set(df["instance"]) == {"model-b"}
    assert set(df["run_id"]) == {"h1"}


def test_history_same_timestamp_different_steps_are_two_predictions() -> None:
    r = run("h1", DAY_MS, tags=FRAUD_TAGS)
    histories = {
        "prediction_time": [
            point("prediction_time", 0.2, DAY_MS, 0),
            point("prediction_time", 0.3, DAY_MS, 1),
        ]
    }
    assert len(history_to_frame(r, histories, TAGS, "e", DAY_MS, NEXT_MS)) == 2


def test_history_window_edges() -> None:
    r = run("h1", DAY_MS - 86_400_000, tags=FRAUD_TAGS)
    points = [DAY_MS - 1, DAY_MS, NEXT_MS - 1, NEXT_MS]
    histories = {"prediction_time": [point("prediction_time", 0.2, t, i) for i, t in enumerate(points)]}
    df = history_to_frame(r, histories, TAGS, "e", DAY_MS, NEXT_MS)
    assert [epoch_ms(t) for t in df["timestamp"].dt.to_pydatetime()] == [DAY_MS, NEXT_MS - 1]


# -- extract_predictions ------------------------------------------------------------------------------


@dataclass
class E:
    name: str
    layout: str


def overlaps(r: dict[str, Any], start_ms: int, end_ms: int) -> bool:
    """A run's JSON overlaps [start, end): started before the end, not ended before the start."""
    info = r["info"]
    return int(info["start_time"]) < end_ms and ("end_time" not in info or int(info["end_time"]) >= start_ms)


class FakeMlflow:
    """Filters like the MLflow server would (start_time in [start, end); overlap for histories), answering
    the server's JSON."""

    def __init__(
        self, per_run: list[dict[str, Any]], histories: list[tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]]
    ) -> None:
        self.per_run = per_run
        self.histories = {r["info"]["run_id"]: (r, h) for r, h in histories}
        self.page_sizes: list[int] = []

    def experiment_ids(self, names: Sequence[str]) -> dict[str, str]:
        return {n: f"id-{n}" for n in names}

    def search_runs_json(
        self,
        experiment_ids: Sequence[str],
        start_ms: int,
        end_ms: int,
        *,
        page_size: int = 1000,
        experiment: str | None = None,
    ) -> list[dict[str, Any]]:
        assert experiment_ids == ["id-fraud"] and experiment == "fraud"
        self.page_sizes.append(page_size)
        return [r for r in self.per_run if start_ms <= int(r["info"]["start_time"]) < end_ms]

    def search_runs_overlapping(
        self,
        experiment_ids: Sequence[str],
        start_ms: int,
        end_ms: int,
        page_size: int = 1000,
        *,
        experiment: str | None = None,
    ) -> list[dict[str, Any]]:
        assert experiment_ids == ["id-rec"] and experiment == "rec"
        return [r for r, _ in self.histories.values() if overlaps(r, start_ms, end_ms)]

    def metric_history(self, run_id: str, key: str, *, experiment: str | None = None) -> list[dict[str, Any]]:
        assert experiment == "rec"
        return self.histories[run_id][1].get(key, [])


def fixture_runs(shuffle: int | None = None) -> FakeMlflow:
    per_run = [
        run("f-prev", DAY_MS - 1, {"prediction_time": 9.0}, FRAUD_TAGS),
        run("f-start", DAY_MS, {"prediction_time": 0.2, "accuracy": 0.9, "loss": 0.1}, FRAUD_TAGS),
        run(
            "f-b",
            DAY_MS + 300_000,
            {"prediction_time": 0.3, "accuracy": 0.9, "loss": 0.1},
            {**FRAUD_TAGS, "instance": "model-b"},
        ),
        run("f-last", NEXT_MS - 1, {"prediction_time": 0.4, "accuracy": 0.9, "loss": 0.1}, FRAUD_TAGS),
        run("f-end", NEXT_MS, {"prediction_time": 9.0}, FRAUD_TAGS),
    ]
    rec_tags = {"model": "recommender", "model_version": "12", "instance": "model-b"}
    days = []
    for d in (-1, 0, 1):
        start = DAY_MS + d * 86_400_000
        r = run(f"rec-{d}", start, tags=rec_tags, end_ms=start + 86_399_999)
        ts = [start + i * 120_000 for i in range(720)]
        days.append(
            (
                r,
                {
                    "prediction_time": [point("prediction_time", 0.2, t, i) for i, t in enumerate(ts)],
                    "accuracy": [point("accuracy", 0.9, t, i) for i, t in enumerate(ts)],
                    "loss": [point("loss", 0.1, t, i) for i, t in enumerate(ts)],
                },
            )
        )
    if shuffle is not None:
        random.Random(shuffle).shuffle(per_run)
        random.Random(shuffle).shuffle(days)
    return FakeMlflow(per_run, days)


EXPERIMENTS = [E("fraud", "run_per_prediction"), E("rec", "metric_history")]


def test_extract_predictions_both_layouts_one_day() -> None:
    hook = fixture_runs()
    df = extract_predictions(hook, EXPERIMENTS, TAGS, DAY, DAY + timedelta(days=1), page_size=50)  # type: ignore[arg-type]
    assert list(df.columns) == list(PREDICTION_COLUMNS)
    assert hook.page_sizes == [50]
    fraud = df[df["experiment"] == "fraud"]
    assert fraud["run_id"].tolist() == ["f-start", "f-b", "f-last"]  # start in, end out
    rec = df[df["experiment"] == "rec"]
    assert len(rec) == 720 and set(rec["run_id"]) == {"rec-0"}
    assert rec["timestamp"].min() == pd.Timestamp(DAY)
    assert rec["timestamp"].max() == pd.Timestamp(DAY + timedelta(hours=23, minutes=58))
    assert df["timestamp"].is_monotonic_increasing
    assert str(df["timestamp"].dtype) == "datetime64[ms, UTC]"
    for column in ("prediction_time", "accuracy", "loss"):
        assert df[column].dtype == "float64"
    # at 00:00 both models predicted: ordered by model name
    assert df["model"].tolist()[:2] == ["fraud-detector", "recommender"]


def test_extract_predictions_is_deterministic() -> None:
    first = extract_predictions(fixture_runs(), EXPERIMENTS, TAGS, DAY, DAY + timedelta(days=1))  # type: ignore[arg-type]
    for seed in (1, 2, 3):
        again = extract_predictions(fixture_runs(seed), EXPERIMENTS, TAGS, DAY, DAY + timedelta(days=1))  # type: ignore[arg-type]
        pd.testing.assert_frame_equal(first, again)


def test_extract_predictions_accepts_config_tag_keys() -> None:
    from modelwatch.config import TagKeys

    df = extract_predictions(fixture_runs(), EXPERIMENTS[:1], TagKeys(), DAY, DAY + timedelta(days=1))  # type: ignore[arg-type]
    assert df["model"].tolist() == ["fraud-detector"] * 3


def test_extract_predictions_rejects_unknown_layout() -> None:
    with pytest.raises(ValueError, match="layout"):
        extract_predictions(
            fixture_runs(), [E("fraud", "one_file_per_day")], TAGS, DAY, DAY + timedelta(days=1)
        )  # type: ignore[arg-type]


# -- layout batch_table -------------------------------------------------------------------------------


def batch_run(
    run_id: str,
    start_ms: int,
    end_ms: int | None,
    tags: dict[str, str] | None = None,
    status: str = "FINISHED",
) -> dict[str, Any]:
    """A batch run as the server's JSON."""
    info = RunInfo(run_id, "1", "u", status, start_ms, end_ms, "active", artifact_uri=f"/nowhere/{run_id}")
    return rest_json(Run(info, RunData(tags=[RunTag(k, v) for k, v in (tags or FRAUD_TAGS).items()])))


def test_batch_table_schema_and_nulls() -> None:
    import pyarrow as pa

    table = batch_table([DAY_MS, DAY_MS + 1], [0.2, 0.3], [1.0, None], None)
    assert table.column_names == list(BATCH_COLUMNS)
    assert table.schema.field("timestamp").type == pa.timestamp("ms", tz="UTC")
    assert table.column("accuracy").to_pylist() == [1.0, None]
    assert table.column("loss").null_count == 2
    with pytest.raises(ValueError, match="accuracy"):
        batch_table([DAY_MS], [0.2], [1.0, 0.0])


def test_batches_to_frame_keeps_only_the_window() -> None:
    # a batch straddling the window start, one inside, one straddling the end
    first = batch_run("b-first", DAY_MS - 2, DAY_MS + 1)
    inside = batch_run("b-in", DAY_MS + 10, DAY_MS + 12, {**FRAUD_TAGS, "instance": "model-b:8000"})
    last = batch_run("b-last", NEXT_MS - 1, NEXT_MS)
    batches = [
        (
            first,
            batch_table(
                [DAY_MS - 2, DAY_MS - 1, DAY_MS, DAY_MS + 1], [9.0, 9.0, 0.1, 0.2], [1, 1, 1, 0], [0.1] * 4
            ),
        ),
        (inside, batch_table([DAY_MS + 10, DAY_MS + 12], [0.3, 0.4])),
        (last, batch_table([NEXT_MS - 1, NEXT_MS], [0.5, 9.0], [1.0, 1.0], [0.2, 0.2])),
    ]
    df = batches_to_frame(batches, TAGS, "exp", DAY_MS, NEXT_MS)
    assert list(df.columns) == list(PREDICTION_COLUMNS)
    assert [epoch_ms(t) for t in df["timestamp"].dt.to_pydatetime()] == [
        DAY_MS,
        DAY_MS + 1,
        DAY_MS + 10,
        DAY_MS + 12,
        NEXT_MS - 1,
    ]
    assert df["prediction_time"].tolist() == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert df["run_id"].tolist() == ["b-first", "b-first", "b-in", "b-in", "b-last"]
    assert df["instance"].tolist() == ["model-a", "model-a", "model-b", "model-b", "model-a"]  # port stripped
    assert df["accuracy"].tolist()[:2] == [1.0, 0.0] and math.isnan(df["accuracy"].iloc[2])  # null -> NaN
    assert set(df["experiment"]) == {"exp"} and set(df["model_version"]) == {"3"}


def test_batches_to_frame_dtypes_match_the_other_layouts() -> None:
    batch = [(batch_run("b", DAY_MS, DAY_MS), batch_table([DAY_MS], [0.2], [1.0], [0.1]))]
    per_run = runs_json_to_frame(
        [run("r", DAY_MS, {"prediction_time": 0.2, "accuracy": 1.0, "loss": 0.1}, FRAUD_TAGS)], TAGS, "exp"
    )
    df = batches_to_frame(batch, TAGS, "exp", DAY_MS, NEXT_MS)
    pd.testing.assert_frame_equal(df.drop(columns="run_id"), per_run.drop(columns="run_id"))
    empty = batches_to_frame([], TAGS, "exp", DAY_MS, NEXT_MS)
    assert list(empty.columns) == list(PREDICTION_COLUMNS) and dict(empty.dtypes) == dict(df.dtypes)
    outside = batches_to_frame(
        [(batch_run("b", DAY_MS - 5, DAY_MS - 1), batch_table([DAY_MS - 5], [0.2]))],
        TAGS,
        "exp",
        DAY_MS,
        NEXT_MS,
    )
    assert len(outside) == 0 and dict(outside.dtypes) == dict(df.dtypes)


def test_batches_to_frame_configurable_tag_keys() -> None:
    r = batch_run("b", DAY_MS, DAY_MS, {"model": "fraud-detector", "served_on": "model-c:9", "v": "7"})
    df = batches_to_frame(
        [(r, batch_table([DAY_MS], [0.2]))],
        {"model": "model", "model_version": "v", "instance": "served_on"},
        "e",
        DAY_MS,
        NEXT_MS,
    )
    assert (df["instance"].iloc[0], df["model_version"].iloc[0]) == ("model-c", "7")


def test_batch_timestamps_units_and_types() -> None:
    import pyarrow as pa

    ms = DAY_MS + 1234
    as_ms = batch_timestamps_ms(pa.array([ms], type=pa.int64()))
    assert as_ms.tolist() == [ms]
    for unit, value in (
        ("s", ms // 1000),
        ("ms", ms),
        ("us", ms * 1000 + 999),
        ("ns", ms * 1_000_000 + 999_999),
    ):
        for tz in ("UTC", None):  # naive timestamps are read as UTC
            got = batch_timestamps_ms(pa.array([value], type=pa.timestamp(unit, tz=tz)))
            assert got.tolist() == [(ms // 1000) * 1000 if unit == "s" else ms], (unit, tz)
    with pytest.raises(ValueError, match="'timestamp' is string"):
        batch_timestamps_ms(pa.array(["2026-03-03T00:00:00Z"]), "run x")


def test_batches_to_frame_errors_name_experiment_run_and_artifact() -> None:
    import pyarrow as pa

    r = batch_run("run-42", DAY_MS, DAY_MS)
    with pytest.raises(
        ValueError, match=r"experiment 'exp', run run-42, artifact 'predictions.parquet': no 'timestamp'"
    ):
        batches_to_frame([(r, pa.table({"ts": [DAY_MS]}))], TAGS, "exp", DAY_MS, NEXT_MS)
    bad = pa.table({"timestamp": pa.array([DAY_MS], pa.int64()), "prediction_time": ["slow"]})
    with pytest.raises(ValueError, match=r"run run-42.*'prediction_time' is string"):
        batches_to_frame([(r, bad)], TAGS, "exp", DAY_MS, NEXT_MS)


def test_batches_to_frame_drops_untimed_rows_and_warns_on_strays(caplog: pytest.LogCaptureFixture) -> None:
    import pyarrow as pa

    table = pa.table(
        {
            "timestamp": pa.array([DAY_MS + 5, None, DAY_MS + 50], pa.timestamp("ms", tz="UTC")),
            "prediction_time": [0.1, 0.2, 0.3],
        }
    )
    with caplog.at_level("WARNING", logger="modelwatch.extract"):
        df = batches_to_frame([(batch_run("b", DAY_MS, DAY_MS + 10), table)], TAGS, "exp", DAY_MS, NEXT_MS)
    assert df["prediction_time"].tolist() == [0.1, 0.3]
    assert math.isnan(df["loss"].iloc[0])  # a missing metric column is NaN
    assert (
        "without a timestamp" in caplog.text
        and "1 row(s) outside their batch run's start/end time" in caplog.text
    )


class FakeBatchMlflow:
    """Overlap search and artifact reads of a batch_table experiment."""

    tracking_uri = "http://mlflow.test"

    def __init__(self, batches: list[tuple[dict[str, Any], Any]]) -> None:
        self.batches = batches
        self.read: list[str] = []

    def experiment_ids(self, names: Sequence[str]) -> dict[str, str]:
        return {n: f"id-{n}" for n in names}

    def search_runs_overlapping(
        self,
        experiment_ids: Sequence[str],
        start_ms: int,
        end_ms: int,
        page_size: int = 1000,
        *,
        experiment: str | None = None,
    ) -> list[dict[str, Any]]:
        return [r for r, _ in self.batches if overlaps(r, start_ms, end_ms)]

    def read_parquet_artifacts(
        self, runs: Sequence[dict[str, Any]], path: str, *, experiment: str | None = None
    ) -> list[tuple[dict[str, Any], Any]]:
        assert path == BATCH_ARTIFACT_PATH
        tables = {r["info"]["run_id"]: t for r, t in self.batches}
        self.read += [r["info"]["run_id"] for r in runs]
        return [(r, tables[r["info"]["run_id"]]) for r in runs]


def test_extract_predictions_batch_table_reads_only_overlapping_runs() -> None:
    batches = [
        (batch_run("before", DAY_MS - 100, DAY_MS - 1), batch_table([DAY_MS - 100, DAY_MS - 1], [9.0, 9.0])),
        (
            batch_run("edge", DAY_MS - 1, DAY_MS + 1),
            batch_table([DAY_MS - 1, DAY_MS, DAY_MS + 1], [9.0, 0.1, 0.2]),
        ),
        (
            batch_run(
                "rec",
                DAY_MS + 60_000,
                DAY_MS + 60_000,
                {"model": "recommender", "model_version": "12", "instance": "model-b"},
            ),
            batch_table([DAY_MS + 60_000], [0.3]),
        ),
        (batch_run("after", NEXT_MS, NEXT_MS + 5), batch_table([NEXT_MS, NEXT_MS + 5], [9.0, 9.0])),
    ]
    hook = FakeBatchMlflow(batches)
    df = extract_predictions(hook, [E("b", "batch_table")], TAGS, DAY, DAY + timedelta(days=1))  # type: ignore[arg-type]
    assert hook.read == ["edge", "rec"]
    assert df["prediction_time"].tolist() == [0.1, 0.2, 0.3]
    assert df["run_id"].tolist() == ["edge", "edge", "rec"] and df["timestamp"].is_monotonic_increasing


def test_extract_predictions_batch_schema_error_is_a_refusal() -> None:
    import pyarrow as pa

    from modelwatch.errors import MlflowSourceRefused

    hook = FakeBatchMlflow([(batch_run("r9", DAY_MS, DAY_MS), pa.table({"when": [1]}))])
    with pytest.raises(
        MlflowSourceRefused,
        match=r"http://mlflow.test: experiment 'b', run r9, artifact 'predictions.parquet'",
    ):
        extract_predictions(hook, [E("b", "batch_table")], TAGS, DAY, DAY + timedelta(days=1))  # type: ignore[arg-type]


# -- values a team logs (mlflow.logged) ---------------------------------------------------------------

LOGGED = LoggedValues(metrics=["amount", "score.v2"], params=["region"]).columns()


def with_params(r: dict[str, Any], params: dict[str, str]) -> dict[str, Any]:
    """``r`` with the params the server sends in ``data.params``."""
    return {**r, "data": {**r["data"], "params": [{"key": k, "value": v} for k, v in params.items()]}}


def test_every_layout_reads_logged_metrics_and_params_alike() -> None:
    tags = FRAUD_TAGS
    per_run = [with_params(run("r1", DAY_MS, {"prediction_time": 0.2, "amount": 12.5, "score.v2": 0.9}, tags),
                           {"region": "eu", "other": "x"}),
               run("r2", DAY_MS + 1, {"prediction_time": 0.3}, tags)]  # fmt: skip
    runs = runs_json_to_frame(per_run, TAGS, "e", LOGGED)
    history = history_to_frame(
        with_params(run("h", DAY_MS, tags=tags), {"region": "eu"}),
        {"prediction_time": [point("prediction_time", 0.2, DAY_MS, 0), point("prediction_time", 0.3, DAY_MS + 1, 1)],
         "amount": [point("amount", 12.5, DAY_MS, 0)], "score.v2": [point("score.v2", 0.9, DAY_MS, 0)]},
        TAGS, "e", DAY_MS, NEXT_MS, LOGGED,
    )  # fmt: skip
    import pyarrow as pa

    table = batch_table([DAY_MS, DAY_MS + 1], [0.2, 0.3])
    table = table.append_column("amount", pa.array([12.5, None])).append_column("score.v2", pa.array([0.9, None]))
    batch = batches_to_frame([(with_params(batch_run("b", DAY_MS, DAY_MS + 5), {"region": "eu"}), table)],
                             TAGS, "e", DAY_MS, NEXT_MS, logged=LOGGED)  # fmt: skip
    for frame in (runs, history, batch):
        assert list(frame.columns) == [*PREDICTION_COLUMNS, "metric_amount", "metric_score_v2", "param_region"]
        assert frame["metric_amount"].iloc[0] == 12.5 and math.isnan(frame["metric_amount"].iloc[1])
        assert frame["metric_score_v2"].iloc[0] == 0.9
    # a param is the run's: every prediction of a history or batch run has it; a run without it has None
    assert runs["param_region"].tolist() == ["eu", None]
    assert history["param_region"].tolist() == batch["param_region"].tolist() == ["eu", "eu"]
    assert dict(runs.dtypes) == dict(history.dtypes) == dict(batch.dtypes)
    # what the lake stores: the logged columns with their declared types, whatever the layout
    from modelwatch.schema import conform_frame

    stored = conform_frame(runs, "predictions", where="test")
    assert str(stored.schema.field("metric_amount").type) == "double"
    assert str(stored.schema.field("param_region").type) == "large_string"
