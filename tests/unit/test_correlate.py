"""Joining predictions to resource samples and the per-model statistics, on frames small enough to check by
hand (plus one large frame to make sure the join is vectorised)."""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from config_helpers import small_config

from modelwatch.correlate import correlate, join_resources, slow_flags, spearman
from modelwatch.schema import CORRELATION_COLUMNS

T0 = pd.Timestamp("2026-03-03T10:00:00Z")
TOL = timedelta(seconds=60)


def predictions(rows: list[tuple[float, str, str, float]]) -> pd.DataFrame:
    """``(seconds after T0, model, instance, prediction_time)`` per prediction; ``run_id`` is ``r<index>``."""
    return pd.DataFrame({
        "timestamp": pd.to_datetime([T0 + pd.Timedelta(seconds=r[0]) for r in rows], utc=True),
        "model": [r[1] for r in rows],
        "model_version": "1",
        "instance": [r[2] for r in rows],
        "prediction_time": [float(r[3]) for r in rows],
        "accuracy": 0.9,
        "loss": 0.1,
        "run_id": [f"r{i}" for i in range(len(rows))],
        "experiment": "e",
    })  # fmt: skip


def resources(rows: list[tuple[float, str, str, float] | tuple[float, str, str, float, str]]) -> pd.DataFrame:
    """``(seconds after T0, query, instance, value[, labels])`` per sample."""
    return pd.DataFrame({
        "timestamp": pd.to_datetime([T0 + pd.Timedelta(seconds=r[0]) for r in rows], utc=True),
        "query": [r[1] for r in rows],
        "instance": [r[2] for r in rows],
        "labels": [r[4] if len(r) > 4 else f'{{instance="{r[2]}"}}' for r in rows],
        "value": [float(r[3]) for r in rows],
    })  # fmt: skip


def by_run(joined: pd.DataFrame) -> pd.DataFrame:
    return joined.set_index("run_id")


# -- the join ----------------------------------------------------------------------------------------------


def test_nearest_sample_on_the_same_instance() -> None:
    pred = predictions([
        (10, "m", "a", 0.2),   # r0: a's samples at 0 s (10 s away) and 15 s (5 s away)
        (10, "m", "b", 0.2),   # r1: b's sample exactly at 10 s
        (10, "m", "c", 0.2),   # r2: c has no samples at all
        (6, "m", "a", 0.2),    # r3: 6 s after a's 0 s sample, 9 s before its 15 s one
    ])  # fmt: skip
    res = resources(
        [(0, "cpu", "a", 0.10), (15, "cpu", "a", 0.20), (10, "cpu", "b", 0.99), (30, "cpu", "b", 0.80)]
    )
    j = by_run(join_resources(pred, res, TOL, ["cpu"]))
    assert j.loc["r0", "res_cpu"] == 0.20
    assert j.loc["r1", "res_cpu"] == 0.99
    assert j.loc["r3", "res_cpu"] == 0.10
    # b's sample at the very same instant is not c's: c gets nothing
    assert math.isnan(j.loc["r2", "res_cpu"])
    assert j.loc["r2", "missing_resources"] == "cpu"
    assert j.loc["r0", "missing_resources"] == ""


def test_join_keeps_every_prediction_and_its_columns() -> None:
    pred = predictions([(k * 7, "m", "ab"[k % 2], 0.1 * k) for k in range(30)])
    res = resources([(k * 15, "cpu", i, 0.5) for k in range(20) for i in "ab"])
    j = join_resources(pred, res, TOL, ["cpu"])
    assert len(j) == len(pred)
    assert set(pred.columns) <= set(j.columns)
    pd.testing.assert_frame_equal(
        by_run(j)[pred.columns.drop("run_id")].sort_index(), by_run(pred).sort_index(), check_like=True
    )


def test_gap_larger_than_tolerance_gives_no_sample() -> None:
    # cpu has a scrape gap between 0 s and 200 s; memory is sampled throughout
    res = resources(
        [(0, "cpu", "a", 0.5), (200, "cpu", "a", 0.7)] + [(k * 15, "memory", "a", 0.4) for k in range(15)]
    )
    pred = predictions([
        (100, "m", "a", 0.2),  # r0: 100 s from both cpu samples
        (59, "m", "a", 0.2),   # r1: 59 s after the first: within tolerance
        (141, "m", "a", 0.2),  # r2: 59 s before the second
        (261, "m", "a", 0.2),  # r3: 61 s after the last cpu sample, 51 s after the last memory sample
        (275, "m", "a", 0.2),  # r4: past both
    ])  # fmt: skip
    j = by_run(join_resources(pred, res, TOL, ["cpu", "memory"]))
    assert math.isnan(j.loc["r0", "res_cpu"])
    assert j.loc["r0", "res_memory"] == 0.4
    assert j.loc["r0", "missing_resources"] == "cpu"
    assert j.loc["r1", "res_cpu"] == 0.5
    assert j.loc["r2", "res_cpu"] == 0.7
    assert math.isnan(j.loc["r3", "res_cpu"])
    assert j.loc["r3", "missing_resources"] == "cpu"
    assert j.loc["r4", "missing_resources"] == "cpu,memory"
    assert j.loc["r1", "missing_resources"] == j.loc["r2", "missing_resources"] == ""


def test_series_without_instance_applies_to_every_instance() -> None:
    res = resources([(0, "cpu", "", 0.3, "{}"), (60, "cpu", "", 0.95, "{}")])
    pred = predictions([(5, "m", "a", 0.2), (5, "m", "b", 0.2), (50, "n", "zzz", 0.2)])
    j = by_run(join_resources(pred, res, TOL, ["cpu"]))
    assert list(j.loc[["r0", "r1", "r2"], "res_cpu"]) == [0.3, 0.3, 0.95]
    assert (j["missing_resources"] == "").all()


def test_several_series_per_instance_take_the_maximum() -> None:
    res = resources([
        (0, "cpu", "a", 0.20, 'device="vda"'), (0, "cpu", "a", 0.95, 'device="vdb"'),
        (15, "cpu", "a", 0.97, 'device="vda"'), (15, "cpu", "a", 0.10, 'device="vdb"'),
        (0, "cpu", "b", 0.99, 'device="vda"'), (15, "cpu", "b", 0.99, 'device="vda"'),
    ])  # fmt: skip
    pred = predictions([(1, "m", "a", 0.2), (14, "m", "a", 0.2)])
    j = by_run(join_resources(pred, res, TOL, ["cpu"]))
    assert j.loc["r0", "res_cpu"] == 0.95
    assert j.loc["r1", "res_cpu"] == 0.97


def test_one_column_per_query_in_config_order() -> None:
    res = resources([(0, "memory", "a", 0.4)])
    j = join_resources(predictions([(0, "m", "a", 0.2)]), res, TOL, ["cpu", "memory", "request_rate"])
    assert [c for c in j.columns if c.startswith("res_")] == ["res_cpu", "res_memory", "res_request_rate"]
    assert j.loc[0, "missing_resources"] == "cpu,request_rate"


# -- slow flags --------------------------------------------------------------------------------------------


def test_slow_flags_use_the_per_model_threshold() -> None:
    cfg = small_config(models={"recommender": {"slow_prediction_seconds": 1.5}})
    pred = predictions([
        (0, "fraud", "a", 1.2),        # r0: above the default 1.0
        (0, "recommender", "a", 1.2),  # r1: below its own 1.5
        (0, "recommender", "a", 1.6),  # r2
        (0, "fraud", "a", 1.0),        # r3: exactly the threshold is not slower than it
        (0, "fraud", "a", 0.3),        # r4
    ])  # fmt: skip
    flags = slow_flags(pred, lambda m: cfg.evaluation.for_model(m).slow_prediction_seconds)
    assert list(flags) == [True, False, True, False, False]

    joined, _ = correlate(pred, resources([(0, "cpu", "a", 0.5)]), cfg)
    j = by_run(joined)
    assert list(j.loc[["r0", "r1", "r2", "r3", "r4"], "slow"]) == [True, False, True, False, False]
    assert list(j.loc[["r0", "r1"], "slow_threshold"]) == [1.0, 1.5]


def test_saturation_flags_at_and_above_threshold() -> None:
    cfg = small_config()
    res = resources(
        [(0, "cpu", "a", 0.9), (0, "cpu", "b", 0.89), (0, "memory", "a", 0.95), (0, "cpu", "c", 0.99)]
    )
    joined, _ = correlate(predictions([(0, "m", "a", 0.2), (0, "m", "b", 0.2), (0, "m", "c", 0.2)]), res, cfg)
    j = by_run(joined)
    assert list(j["sat_cpu"].loc[["r0", "r1", "r2"]]) == [True, False, True]
    assert list(j["saturated_resources"].loc[["r0", "r1", "r2"]]) == ["cpu,memory", "", "cpu"]
    assert "sat_request_rate" not in j.columns  # no threshold, context only


# -- the statistics ----------------------------------------------------------------------------------------

# Ten predictions of model "m" on instance "a", one per minute, cpu sampled at each prediction:
#   prediction_time  0.1  0.2  0.3  0.4  0.5  0.6 | 2.0  2.1  2.2  2.3   (slow > 1.0)
#   cpu              0.10 0.20 0.30 0.40 0.50 0.91| 0.60 0.92 0.93 0.94  (saturated >= 0.9)
# The 2x2 table for cpu: slow & saturated a=3, normal & saturated b=1, slow below c=1, normal below d=5.
# P(slow | saturated) = 3/4, P(slow | below) = 1/6: relative risk 4.5. Fisher's exact test, one-sided: the
# hypergeometric tail P(X >= 3) for 4 saturated of 10 with 4 slow = (C(4,3)C(6,1) + C(4,4)) / C(10,4) = 25/210.
# P(saturated | slow) = 3/4, P(saturated | normal) = 1/6: lift 4.5 (equal to the relative risk only by chance).
# Ranks of prediction_time 1..10; ranks of cpu 1,2,3,4,5,7,6,8,9,10: two ranks differ by one, so
# Spearman = 1 - 6 * 2 / (10 * (100 - 1)) = 1 - 12/990.
# memory is sampled only in the first five minutes (0-240 s): the sixth prediction (300 s, normal) is 60 s
# from the last sample, within tolerance; the slow ones (360 s on) are not, so no slow one has a sample.
KNOWN_PT = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 2.0, 2.1, 2.2, 2.3]
KNOWN_CPU = [0.10, 0.20, 0.30, 0.40, 0.50, 0.91, 0.60, 0.92, 0.93, 0.94]


def known_example() -> tuple[pd.DataFrame, pd.DataFrame]:
    pred = predictions([(60 * k, "m", "a", pt) for k, pt in enumerate(KNOWN_PT)])
    res = resources(
        [(60 * k, "cpu", "a", v) for k, v in enumerate(KNOWN_CPU)]
        + [(60 * k, "memory", "a", 0.95 if k == 2 else 0.5) for k in range(5)]
        + [(60 * k, "request_rate", "a", 10.0 + k) for k in range(10)]
    )
    return pred, res


def test_statistics_on_a_known_example() -> None:
    pred, res = known_example()
    _, corr = correlate(pred, res, small_config())
    assert list(corr.columns) == list(CORRELATION_COLUMNS)
    assert list(corr["resource"]) == ["cpu", "memory", "request_rate"]
    cpu = corr.set_index("resource").loc["cpu"]
    assert cpu["model"] == "m"
    assert cpu["threshold"] == 0.9
    assert cpu["unit"] == "ratio"
    assert (cpu["n_predictions"], cpu["n_judged"], cpu["n_slow"], cpu["n_normal"]) == (10, 10, 4, 6)
    table = ("n_slow_saturated", "n_normal_saturated", "n_slow_unsaturated", "n_normal_unsaturated",
             "n_slow_unsampled", "n_normal_unsampled")  # fmt: skip
    assert tuple(cpu[list(table)]) == (3, 1, 1, 5, 0, 0)
    assert cpu["coverage"] == 1.0
    assert (cpu["slow_share_saturated"], cpu["slow_share_unsaturated"]) == (pytest.approx(0.75), pytest.approx(1 / 6))
    assert cpu["relative_risk"] == pytest.approx(4.5)
    assert cpu["p_value"] == pytest.approx(25 / 210)
    assert cpu["slow_saturated_share"] == pytest.approx(0.75)
    assert cpu["normal_saturated_share"] == pytest.approx(1 / 6)
    assert cpu["lift"] == pytest.approx(4.5)
    assert cpu["spearman"] == pytest.approx(1 - 12 / 990)
    assert cpu["slow_value_median"] == pytest.approx((0.92 + 0.93) / 2)
    assert cpu["slow_value_max"] == pytest.approx(0.94)
    assert cpu["normal_value_median"] == pytest.approx((0.30 + 0.40) / 2)


def test_statistics_without_samples_at_slow_predictions() -> None:
    pred, res = known_example()
    _, corr = correlate(pred, res, small_config())
    mem = corr.set_index("resource").loc["memory"]
    assert (mem["n_slow"], mem["n_slow_unsampled"], mem["coverage"]) == (4, 4, 0.0)
    assert (mem["n_normal_saturated"], mem["n_normal_unsaturated"], mem["n_normal_unsampled"]) == (1, 5, 0)
    assert math.isnan(mem["slow_saturated_share"])
    # no slow prediction had a sample: P(slow | saturated) = 0 of 1 against 0 of 5, 0 / 0: no evidence either way
    assert math.isnan(mem["relative_risk"])
    assert mem["p_value"] == 1.0
    assert math.isnan(mem["lift"])  # nothing is known about slow predictions: no lift, not zero
    assert math.isnan(mem["slow_value_median"]) and math.isnan(mem["slow_value_max"])


def test_context_query_has_no_threshold_but_a_spearman() -> None:
    pred, res = known_example()
    _, corr = correlate(pred, res, small_config())
    rate = corr.set_index("resource").loc["request_rate"]
    assert math.isnan(rate["threshold"])
    assert rate["n_slow_saturated"] == 0
    assert rate["spearman"] == pytest.approx(1.0)  # request rate rises with every prediction here


def test_lift_is_infinite_when_normal_predictions_are_never_saturated() -> None:
    pred = predictions([(60 * k, "m", "a", 2.0 if k < 2 else 0.2) for k in range(6)])
    res = resources([(60 * k, "cpu", "a", 0.95 if k < 2 else 0.5) for k in range(6)])
    _, corr = correlate(pred, res, small_config())
    cpu = corr.set_index("resource").loc["cpu"]
    assert (cpu["slow_saturated_share"], cpu["normal_saturated_share"]) == (1.0, 0.0)
    assert cpu["lift"] == math.inf


def test_statistics_are_per_model() -> None:
    # same instance, same cpu: model "slowpoke" is slow when cpu is high, model "steady" never is
    cpu = [0.95, 0.95, 0.2, 0.2, 0.2, 0.2]
    res = resources([(60 * k, "cpu", "a", v) for k, v in enumerate(cpu)])
    pred = predictions(
        [(60 * k, "slowpoke", "a", 2.0 if v > 0.9 else 0.2) for k, v in enumerate(cpu)]
        + [(60 * k, "steady", "a", 0.2) for k in range(6)]
    )
    _, corr = correlate(pred, res, small_config())
    c = corr[corr["resource"] == "cpu"].set_index("model")
    assert list(c.index) == ["slowpoke", "steady"]
    assert (c.loc["slowpoke", "n_slow"], c.loc["slowpoke", "n_slow_saturated"]) == (2, 2)
    assert (c.loc["steady", "n_slow"], c.loc["steady", "n_normal_saturated"]) == (0, 2)
    assert math.isnan(c.loc["steady", "lift"])


def test_spearman_with_ties_and_degenerate_input() -> None:
    # average ranks of y = 1.5, 1.5, 3, 4; Pearson of the ranks = 4.5 / sqrt(5 * 4.5) = sqrt(0.9)
    assert spearman(np.array([1.0, 2, 3, 4]), np.array([1.0, 1, 2, 3])) == pytest.approx(math.sqrt(0.9))
    assert spearman(np.array([1.0, 1, 2, 3]), np.array([1.0, 2, 3, 4])) == pytest.approx(math.sqrt(0.9))
    assert spearman(np.array([1.0, 2, 3]), np.array([30.0, 20, 10])) == pytest.approx(-1.0)
    assert spearman(np.array([1.0, 2, 3]), np.array([1.0, 4, 9])) == pytest.approx(
        1.0
    )  # monotone, not linear
    assert math.isnan(spearman(np.array([1.0, 2]), np.array([1.0, 2])))
    assert math.isnan(spearman(np.array([1.0, 2, 3]), np.array([5.0, 5, 5])))


def test_empty_window_gives_empty_frames() -> None:
    pred = predictions([]).astype({"model": "str", "instance": "str", "model_version": "str"})
    res = resources([])
    joined, corr = correlate(pred, res, small_config())
    assert len(joined) == 0 and len(corr) == 0
    assert {"slow", "res_cpu", "sat_cpu", "missing_resources"} <= set(joined.columns)


# -- scale -------------------------------------------------------------------------------------------------


def test_two_hundred_thousand_predictions_join_vectorised() -> None:
    """200k predictions, 20 instances, two resources at 15 s over a day: the exact nearest sample is known
    because every prediction is less than half a step after a sample."""
    rng = np.random.default_rng(7)
    n, n_inst, steps = 200_000, 20, 86_400 // 15
    grid = T0.normalize() + pd.to_timedelta(np.arange(steps) * 15, unit="s")
    inst_names = np.array([f"i{k:02d}" for k in range(n_inst)])
    res = pd.concat([
        pd.DataFrame({
            "timestamp": np.tile(grid, n_inst), "query": "cpu", "instance": np.repeat(inst_names, steps),
            "labels": "", "value": (np.repeat(np.arange(n_inst), steps) * 10_000 + np.tile(np.arange(steps), n_inst))
            .astype("float64"),
        }),
        pd.DataFrame({"timestamp": grid, "query": "memory", "instance": "", "labels": "",
                      "value": np.arange(steps, dtype="float64") / steps}),
    ], ignore_index=True)  # fmt: skip
    step_idx = rng.integers(0, steps, n)
    inst_idx = rng.integers(0, n_inst, n)
    offset_ms = rng.integers(0, 7_000, n)
    pred = pd.DataFrame({
        "timestamp": grid[step_idx] + pd.to_timedelta(offset_ms, unit="ms"),
        "model": np.where(inst_idx % 2, "m1", "m2"), "model_version": "1", "instance": inst_names[inst_idx],
        "prediction_time": rng.gamma(2.0, 0.1, n), "accuracy": 0.9, "loss": 0.1,
        "run_id": np.char.add("r", np.arange(n).astype(str)), "experiment": "e",
    })  # fmt: skip

    joined, corr = correlate(pred, res, small_config())
    assert len(joined) == n
    j = joined.set_index("run_id").loc[pred["run_id"]]
    np.testing.assert_array_equal(j["res_cpu"].to_numpy(), (inst_idx * 10_000 + step_idx).astype("float64"))
    np.testing.assert_array_equal(j["res_memory"].to_numpy(), step_idx / steps)
    assert (j["missing_resources"] == "request_rate").all()
    assert sorted(corr["model"].unique()) == ["m1", "m2"]
    assert corr.groupby("model")["n_predictions"].first().sum() == n


def test_grid_lookup_and_binary_search_join_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    """The join takes a table lookup when a query's times lie on one step grid and a binary search otherwise:
    both give the same frame, with gaps, stale sample times, rate windows, several series per instance and a
    global series."""
    import modelwatch.correlate as mod

    rng = np.random.default_rng(11)
    n, steps = 2_000, 80
    grid = [T0 + pd.Timedelta(seconds=15 * k) for k in range(steps)]
    rows = []
    for q in ("cpu", "memory", "request_rate"):
        for inst in ("a", "b", "c", ""):
            for k in range(steps):
                if rng.random() < 0.2:  # gaps
                    continue
                for _ in range(1 + (rng.random() < 0.1)):  # sometimes two series on one instance
                    rows.append((grid[k], q, inst, float(rng.random()),
                                 grid[k] - pd.Timedelta(seconds=float(rng.integers(0, 90))),
                                 60.0 if q == "request_rate" else 0.0))  # fmt: skip
    res = pd.DataFrame(rows, columns=["timestamp", "query", "instance", "value", "sample_time", "window_seconds"])
    res = res.assign(labels="").sample(frac=1, random_state=3).reset_index(drop=True)
    pred = predictions([
        (float(rng.uniform(-60, 15 * steps + 60)), str(rng.choice(["m1", "m2"])), str(rng.choice(["a", "b", "d", ""])),
         float(rng.gamma(2.0, 0.6))) for _ in range(n)
    ])  # fmt: skip
    on_grid = correlate(pred, res, small_config())
    monkeypatch.setattr(mod._Grid, "fits", staticmethod(lambda *args: False))
    searched = correlate(pred, res, small_config())
    pd.testing.assert_frame_equal(on_grid[0], searched[0], check_exact=True)
    pd.testing.assert_frame_equal(on_grid[1], searched[1], check_exact=True)
    assert on_grid[0]["res_cpu"].notna().any() and on_grid[0]["res_cpu"].isna().any()


def test_chunked_and_threaded_join_equal_the_whole_frame_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """``correlate`` looks predictions up a chunk at a time (:data:`CHUNK_ROWS`) and, on large frames, with a
    second thread: a tiny chunk size (chunks that split instances, models and the global fallback) and the
    thread forced on small frames give exactly the frames of one pass over everything, on the grid lookup
    and on the binary search, unsorted input included."""
    import modelwatch.correlate as mod

    rng = np.random.default_rng(5)
    steps = 40
    rows = [
        (15.0 * k + float(rng.choice([0.0, 0.0, 0.4, 0.123])), q, inst, float(rng.random()))
        for q in ("cpu", "memory", "request_rate") for inst in ("a", "b", "")
        for k in range(steps) if rng.random() > 0.15
    ]  # fmt: skip
    res = resources(rows)
    pred = predictions([
        (float(rng.uniform(-60, 15 * steps + 60)), str(rng.choice(["m1", "m2", "m3"])), str(rng.choice(["a", "b", "c"])),
         float(rng.gamma(2.0, 0.6)) if rng.random() > 0.05 else float("nan")) for _ in range(500)
    ])  # fmt: skip
    for frame in (res, res[res["timestamp"].dt.microsecond == 0]):  # off the grid (searched), then on it
        whole = correlate(pred, frame, small_config())
        monkeypatch.setattr(mod, "CHUNK_ROWS", 7)
        monkeypatch.setattr(mod, "PARALLEL_ROWS", 0)
        chunked = correlate(pred, frame, small_config())
        monkeypatch.undo()
        pd.testing.assert_frame_equal(whole[0], chunked[0], check_exact=True)
        pd.testing.assert_frame_equal(whole[1], chunked[1], check_exact=True)
        assert whole[0]["res_cpu"].notna().any() and whole[0]["res_cpu"].isna().any()
