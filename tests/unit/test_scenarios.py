"""devstack.scenarios: deterministic synthetic days, their OpenMetrics text and their predictions."""

from __future__ import annotations

import re
from datetime import date, time, timedelta
from pathlib import Path

import numpy as np
import pytest

from devstack.scenarios import (
    FAMILIES,
    LATENCY_BUCKETS,
    MODELS,
    POINTS_PER_DAY,
    SCENARIO_ORDER,
    SCENARIOS,
    STEP_S,
    TEST_DAYS,
    day_start,
    family_of,
    get_scenario,
    openmetrics_lines,
    predictions,
    recent_days,
    resource_series,
    write_openmetrics,
)

CPU_DAY = date(2026, 3, 3)
MEMORY_DAY = date(2026, 3, 6)
SAMPLE = re.compile(rb"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\} (\S+) (\d+)$")


@pytest.fixture(scope="module")
def cpu_day_file(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("om") / "day.om"
    write_openmetrics(CPU_DAY, "cpu_saturation", path)
    return path.read_bytes()


def _series(day: date, name: str, instance: str, **labels: str) -> np.ndarray:
    for s in resource_series(day, TEST_DAYS[day]):
        if s.name == name and s.labels["instance"].startswith(instance) and labels.items() <= s.labels.items():
            return s.values
    raise KeyError(name)


def _tod(day: date, t: time) -> int:
    return day_start(day) + t.hour * 3600 + t.minute * 60


# -- the test week ---------------------------------------------------------------------------------------


def test_test_days_are_the_contract_table() -> None:
    assert TEST_DAYS == {
        date(2026, 3, 2): "normal",
        date(2026, 3, 3): "cpu_saturation",
        date(2026, 3, 4): "slow_unexplained",
        date(2026, 3, 5): "saturation_no_slow",
        date(2026, 3, 6): "memory_pressure",
        date(2026, 3, 7): "no_data",
    }
    assert set(SCENARIOS) == set(TEST_DAYS.values())
    for scenario in SCENARIOS.values():
        assert scenario.doc and set(scenario.expected_verdicts) == set(MODELS)


def test_recent_days_maps_the_same_scenarios_onto_the_last_full_days() -> None:
    days = recent_days(date(2026, 11, 21))
    assert list(days) == [date(2026, 11, 15) + timedelta(days=i) for i in range(6)]
    assert list(days.values()) == list(SCENARIO_ORDER)
    assert list(recent_days(date(2026, 11, 21), n=8).values())[6:] == list(SCENARIO_ORDER[:2])


def test_unknown_scenario_is_named() -> None:
    with pytest.raises(ValueError, match="nope.*normal"):
        get_scenario("nope")


# -- determinism and format --------------------------------------------------------------------------------


def test_same_day_gives_identical_bytes_other_day_differs(tmp_path: Path, cpu_day_file: bytes) -> None:
    again = tmp_path / "again.om"
    write_openmetrics(CPU_DAY, "cpu_saturation", again)
    assert again.read_bytes() == cpu_day_file == b"".join(openmetrics_lines(CPU_DAY, "cpu_saturation"))
    other = tmp_path / "other.om"
    write_openmetrics(CPU_DAY + timedelta(days=7), "cpu_saturation", other)
    assert other.read_bytes() != cpu_day_file
    assert predictions(CPU_DAY, "cpu_saturation") == predictions(CPU_DAY, "cpu_saturation")


def test_file_ends_with_exactly_one_eof(cpu_day_file: bytes) -> None:
    assert cpu_day_file.endswith(b"\n# EOF\n")
    assert cpu_day_file.count(b"# EOF") == 1


def test_no_data_day_writes_only_eof(tmp_path: Path) -> None:
    path = tmp_path / "empty.om"
    assert write_openmetrics(date(2026, 3, 7), "no_data", path) == 0
    assert path.read_bytes() == b"# EOF\n"
    assert resource_series(date(2026, 3, 7), "no_data") == [] and predictions(date(2026, 3, 7), "no_data") == []


def test_samples_are_unix_seconds_of_that_day_in_time_order(cpu_day_file: bytes) -> None:
    lines = cpu_day_file.splitlines()[:-1]
    samples = [SAMPLE.match(line) for line in lines if not line.startswith(b"#")]
    assert all(samples)
    # 30 series per instance, two instances: 26 node/serving series and the four body-size summary series
    assert len(samples) == 60 * POINTS_PER_DAY
    start = day_start(CPU_DAY)
    per_series: dict[bytes, list[int]] = {}
    for m in samples:
        per_series.setdefault(m[1] + m[2], []).append(int(m[4]))
    assert len(per_series) == 60
    expected = list(range(start, start + 86400, STEP_S))
    assert all(ts == expected for ts in per_series.values())


def test_type_lines_and_families(cpu_day_file: bytes) -> None:
    types = re.findall(rb"^# TYPE (\S+) (\S+)$", cpu_day_file, re.M)
    assert [(n.decode(), t.decode()) for n, t in types] == [(f, t) for f, (t, _) in FAMILIES.items()]
    assert b"# TYPE node_cpu_seconds counter" in cpu_day_file  # a counter's family drops _total ...
    assert b'\nnode_cpu_seconds_total{cpu="0",mode="idle",instance="model-a:9100",job="node"} ' in cpu_day_file
    assert len(re.findall(rb"^# HELP ", cpu_day_file, re.M)) == len(FAMILIES)
    # Families are not interleaved: each sample belongs to the family of the last TYPE line.
    family = None
    for line in cpu_day_file.splitlines():
        if line.startswith(b"# TYPE "):
            family, type_ = line.split()[2].decode(), line.split()[3].decode()
        elif not line.startswith(b"#"):
            assert family_of(line.split(b"{")[0].decode(), type_) == family


def test_every_contract_series_is_there() -> None:
    series = resource_series(CPU_DAY, "cpu_saturation")
    names = {(s.name, s.labels["instance"], s.labels["job"]) for s in series}
    for inst in ("model-a", "model-b"):
        for name in ("node_cpu_seconds_total", "node_memory_MemTotal_bytes", "node_memory_MemAvailable_bytes",
                     "node_disk_io_time_seconds_total", "node_disk_read_bytes_total",
                     "node_disk_written_bytes_total", "node_network_receive_bytes_total",
                     "node_network_transmit_bytes_total", "node_load1"):  # fmt: skip
            assert (name, f"{inst}:9100", "node") in names
        for name in ("http_requests_total", "http_request_duration_seconds_bucket",
                     "http_request_duration_seconds_sum", "http_request_duration_seconds_count"):  # fmt: skip
            assert (name, f"{inst}:8000", "model-server") in names
    les = [s.labels["le"] for s in series if s.name.endswith("_bucket") and s.labels["instance"] == "model-a:8000"]
    assert les == list(LATENCY_BUCKETS)
    cpus = {(s.labels["cpu"], s.labels["mode"]) for s in series if s.name == "node_cpu_seconds_total"}
    assert cpus == {(c, m) for c in "01" for m in ("idle", "user", "system")}
    for s in series:
        assert s.timestamps.shape == s.values.shape == (POINTS_PER_DAY,)


# -- values -----------------------------------------------------------------------------------------------


def test_counters_are_monotonic_and_cpu_seconds_add_up() -> None:
    series = resource_series(MEMORY_DAY, "memory_pressure")
    for s in series:
        if s.type == "counter" or s.name.endswith(("_bucket", "_count", "_sum")):
            assert np.all(np.diff(s.values) >= 0), s
    # The three modes of one CPU account for exactly 15 s per 15 s step.
    modes = [s.values for s in series if s.name == "node_cpu_seconds_total" and s.labels["cpu"] == "0"
             and s.labels["instance"] == "model-a:9100"]  # fmt: skip
    assert np.allclose(np.diff(sum(modes)), STEP_S)


def test_histogram_buckets_are_cumulative_and_end_with_count() -> None:
    series = resource_series(CPU_DAY, "cpu_saturation")
    for inst in ("model-a:8000", "model-b:8000"):
        buckets = np.array([s.values for s in series if s.name.endswith("_bucket") and s.labels["instance"] == inst])
        assert np.all(np.diff(buckets, axis=0) >= 0)
        count = next(s.values for s in series if s.name.endswith("_count") and s.labels["instance"] == inst)
        requests = sum(s.values for s in series if s.name == "http_requests_total" and s.labels["instance"] == inst)
        assert np.array_equal(buckets[-1], count) and np.array_equal(count, requests)


def test_cpu_busy_share_follows_the_scenario() -> None:
    ts = day_start(CPU_DAY) + STEP_S * np.arange(POINTS_PER_DAY)
    idle = _series(CPU_DAY, "node_cpu_seconds_total", "model-a", cpu="0", mode="idle")
    busy = 1 - np.diff(idle) / STEP_S  # share of the interval ending at ts[1:]
    start, end = _tod(CPU_DAY, time(10)), _tod(CPU_DAY, time(12))
    in_window = (ts[1:] - STEP_S >= start) & (ts[1:] - STEP_S < end)
    assert in_window.sum() == 480
    assert busy[in_window].min() > 0.9 and busy[~in_window].max() < 0.75
    assert 0.2 < busy[~in_window].mean() < 0.3
    other = _series(CPU_DAY, "node_cpu_seconds_total", "model-b", cpu="1", mode="idle")
    assert (1 - np.diff(other) / STEP_S).max() < 0.75


def test_memory_pressure_window() -> None:
    ts = day_start(MEMORY_DAY) + STEP_S * np.arange(POINTS_PER_DAY)
    avail = _series(MEMORY_DAY, "node_memory_MemAvailable_bytes", "model-b")
    total = _series(MEMORY_DAY, "node_memory_MemTotal_bytes", "model-b")
    used = 1 - avail / total
    window = (ts >= _tod(MEMORY_DAY, time(16))) & (ts < _tod(MEMORY_DAY, time(18)))
    assert used[window].min() > 0.9 and used[~window].max() < 0.6
    assert np.all(avail % 4096 == 0) and np.all(total == 8 * 1024**3)
    assert (1 - _series(MEMORY_DAY, "node_memory_MemAvailable_bytes", "model-a") / total).max() < 0.6


# -- predictions ------------------------------------------------------------------------------------------


def test_prediction_cadence() -> None:
    preds = predictions(date(2026, 3, 2), "normal")
    start_ms = day_start(date(2026, 3, 2)) * 1000
    by_key: dict[tuple[str, str], list[int]] = {}
    for p in preds:
        by_key.setdefault((p.model, p.instance), []).append(p.timestamp_ms)
    assert {k: len(v) for k, v in by_key.items()} == {
        ("fraud-detector", "model-a"): 144, ("fraud-detector", "model-b"): 144, ("recommender", "model-b"): 720
    }  # fmt: skip
    assert by_key["fraud-detector", "model-a"][:2] == [start_ms, start_ms + 600_000]
    assert by_key["fraud-detector", "model-b"][:2] == [start_ms + 300_000, start_ms + 900_000]
    assert by_key["recommender", "model-b"][:2] == [start_ms, start_ms + 120_000]
    assert {(p.model, p.model_version) for p in preds} == {("fraud-detector", "3"), ("recommender", "12")}


@pytest.mark.parametrize("day", [d for d, s in TEST_DAYS.items() if s != "no_data"], ids=str)
def test_slow_exactly_in_the_documented_windows(day: date) -> None:
    scenario = get_scenario(TEST_DAYS[day])
    preds = predictions(day, scenario)
    bounds = scenario.window_bounds(day)
    for p in preds:
        t = p.timestamp_ms // 1000
        expect_slow = (
            bounds is not None and p.instance == scenario.instance and p.model in scenario.slow_models
            and bounds[0] <= t < bounds[1]
        )  # fmt: skip
        assert p.slow == expect_slow, p
        if p.slow:
            assert 1.8 <= p.prediction_time <= 3.6
        else:
            assert 0.05 <= p.prediction_time < 0.5
        assert 0.9 <= p.accuracy <= 0.99 and 0.08 <= p.loss <= 0.25
    slow = {(m, i): sum(p.slow for p in preds if (p.model, p.instance) == (m, i))
            for m, i in {(p.model, p.instance) for p in preds}}  # fmt: skip
    expected = {
        "normal": {},
        "cpu_saturation": {("fraud-detector", "model-a"): 12},
        "slow_unexplained": {("fraud-detector", "model-a"): 12},
        "saturation_no_slow": {},
        "memory_pressure": {("fraud-detector", "model-b"): 12, ("recommender", "model-b"): 60},
    }[scenario.name]
    assert {k: v for k, v in slow.items() if v} == expected
    mean_fast = np.mean([p.prediction_time for p in preds if not p.slow])
    assert 0.15 < mean_fast < 0.25


# -- the model's output ----------------------------------------------------------------------------------


def test_every_prediction_logs_its_score_and_the_seeder_logs_it_as_a_metric() -> None:
    from devstack.scenarios import SCORE_METRIC
    from devstack.seed import _metrics

    preds = predictions(date(2026, 3, 2), "normal")
    scores = np.array([p.score for p in preds])
    assert np.all((scores > 0) & (scores < 1)) and 0.22 < scores.mean() < 0.28  # Beta(2, 6): mean 0.25
    assert SCORE_METRIC == "score" and (SCORE_METRIC, preds[0].score) in _metrics(preds[0])
    assert [k for k, _ in _metrics(preds[0])] == ["prediction_time", "amount", "score", "accuracy", "loss"]


def test_the_output_shift_moves_recommenders_score_and_nothing_else() -> None:
    from dataclasses import replace

    from devstack.scenarios import QUALITY_DAYS, QUALITY_SCENARIOS

    day = next(d for d, s in QUALITY_DAYS.items() if s == "gradual_drift")
    sc = QUALITY_SCENARIOS["gradual_drift"]
    assert sc.output_shift == ("recommender", 2.0) and sc.input_shift == ("fraud-detector", 3.0)
    shifted, unshifted = predictions(day, sc), predictions(day, replace(sc, output_shift=None))
    # the output shift draws from a stream of its own: every other value is as it was
    assert [replace(p, score=0.0) for p in shifted] == [replace(p, score=0.0) for p in unshifted]

    def scores(preds: list, model: str, hours: tuple[int, int]) -> np.ndarray:
        lo, hi = (day_start(day) + h * 3600 for h in hours)
        return np.array([p.score for p in preds if p.model == model and lo <= p.timestamp_ms // 1000 < hi])

    # recommender's score rises through the day (log-odds +2 by its end: a mean of about 0.7), its inputs hold;
    # fraud-detector's inputs shift, its score does not
    assert abs(scores(shifted, "recommender", (0, 2)).mean() - 0.25) < 0.04
    assert scores(shifted, "recommender", (22, 24)).mean() > 0.6
    assert np.array_equal(scores(shifted, "fraud-detector", (0, 24)), scores(unshifted, "fraud-detector", (0, 24)))
    amount = [p.amount for p in shifted if p.model == "recommender"]
    assert amount == [p.amount for p in predictions(day, replace(sc, output_shift=None, input_shift=None))
                      if p.model == "recommender"]  # fmt: skip
