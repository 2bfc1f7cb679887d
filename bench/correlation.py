"""Correlation of a day of predictions against the resource samples, vectorised vs a naive loop.

The data is synthetic and seeded (same numbers every run): ``--correlation-predictions`` predictions over one
UTC day from four models on ``--correlation-instances`` instances, and every query of
``include/thresholds.yaml`` (eight) sampled per instance every 15 s, with 1 % of the samples missing
(scrape gaps) and three 30-minute saturation episodes per instance during which most predictions there are
slow. The configuration is the shipped one, so the columns and thresholds are what a real run uses. The
predictions come in the order :func:`modelwatch.extract.extract_predictions` writes them (and the lake
returns them): :func:`modelwatch.extract.sort_predictions`, by timestamp, model and instance.

Cases, each in its own subprocess (a fresh interpreter: its peak memory is its own):

- ``vectorised``: :func:`modelwatch.correlate.correlate` on everything. The first call runs with the resident
  set sampled every 2 ms (peak RSS growth, Arrow's string buffers included); wall time is the best of the
  next ``--correlation-repeat`` runs; a last run under ``tracemalloc`` gives the peak of Python and numpy
  allocations; max RSS is the whole process's high-water mark (synthetic frames included).
- ``naive``: the same join and statistics with a plain Python loop over ``--correlation-naive-sample``
  predictions (nearest sample by binary search in per-series arrays), extrapolated to the full count:
  ``index build + per-prediction time x predictions`` (each the best of ``--correlation-repeat`` runs). Its
  output is checked against ``correlate`` on the same sample. In the same process, the loop as first
  written (filter the resource frame for every prediction and query) on ``--correlation-filter-sample``
  predictions, extrapolated the same way and checked against the indexed loop.

- ``floor``: the least a pandas user would write for the same join, :func:`floor_script` (one string-keyed
  ``merge_asof`` per query, nearest within the tolerance, no freshness rule, no Spearman or tests), timed
  alternately with ``correlate`` in the ``vectorised`` process: the ratio of their medians is the cost of
  everything ``correlate`` adds.
- ``large``: ``correlate`` on ``--correlation-large-predictions`` predictions (10M; 0 skips it), same
  instances: peak RSS growth of the first call, median wall time of three, against the target of issue 9
  (:data:`LARGE_TARGET_SECONDS`, :data:`LARGE_TARGET_MIB`; the returned frames included).

scipy.stats is imported before anything is measured (``correlate`` imports it on its first call).

Run alone: ``python -m bench --only correlation``; one case: ``python -m bench.correlation --case naive``.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import ctypes
import gc
import json
import math
import os
import resource
import subprocess
import sys
import threading
import time
import tracemalloc
from typing import Any

import numpy as np
import pandas as pd

import bench
from modelwatch.config import ModelwatchConfig, load_config
from modelwatch.correlate import correlate, spearman
from modelwatch.extract import sort_predictions
from modelwatch.schema import SATURATED_PREFIX, VALUE_PREFIX

DESCRIPTION = "modelwatch.correlate.correlate on a synthetic day against a naive per-prediction Python loop"

DAY = pd.Timestamp("2026-03-03T00:00:00Z")
STEP_SECONDS = 15
MODELS = ("fraud-detector", "recommender", "ranker", "search")
#: typical level of each shipped query (saturating queries get pushed past their threshold in episodes)
LEVELS = {"cpu": 0.3, "memory": 0.45, "disk_io": 0.1, "network_io": 2e7, "load": 0.6, "request_rate": 20.0,
          "error_rate": 0.004, "p95_latency": 0.2}  # fmt: skip
EPISODE_QUERIES = ("cpu", "memory")
#: the large case's target (issue 9): median wall time and peak RSS growth, returned frames included
LARGE_TARGET_SECONDS = 10.0
LARGE_TARGET_MIB = 2048


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--correlation-predictions", type=int, default=1_000_000, metavar="N")
    group.add_argument("--correlation-instances", type=int, default=20, metavar="N")
    group.add_argument("--correlation-naive-sample", type=int, default=2_000, metavar="N",
                       help="predictions the naive loop runs on (the rest is extrapolated)")  # fmt: skip
    group.add_argument("--correlation-filter-sample", type=int, default=50, metavar="N",
                       help="predictions the filter-per-row loop runs on (it scans all samples per prediction)")  # fmt: skip
    group.add_argument(
        "--correlation-repeat", type=int, default=3, metavar="N", help="timed runs, best is kept"
    )
    group.add_argument("--correlation-seed", type=int, default=20260303)
    group.add_argument("--correlation-large-predictions", type=int, default=10_000_000, metavar="N",
                       help="predictions of the large case (0: skip it)")  # fmt: skip


# -- synthetic data ----------------------------------------------------------------------------------------


def synthetic(
    n_predictions: int, n_instances: int, cfg: ModelwatchConfig, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(predictions, resources)`` as the extractors write them (millisecond UTC timestamps)."""
    rng = np.random.default_rng(seed)
    steps = 86_400 // STEP_SECONDS
    instances = np.array([f"node-{k:02d}" for k in range(n_instances)], dtype=object)
    # three 30-minute saturation episodes per instance
    episode = np.zeros((n_instances, steps), dtype=bool)
    length = 30 * 60 // STEP_SECONDS
    for i in range(n_instances):
        for start in rng.integers(0, steps - length, 3):
            episode[i, start : start + length] = True

    grid_ms = DAY.value // 1_000_000 + np.arange(steps, dtype=np.int64) * STEP_SECONDS * 1000
    thresholds = cfg.saturation_thresholds
    frames = []
    for q in cfg.prometheus.queries:
        level = LEVELS.get(q.name, 1.0)
        values = level * rng.uniform(0.5, 1.5, (n_instances, steps))
        if q.name in EPISODE_QUERIES:
            values[episode] = thresholds[q.name] * rng.uniform(1.02, 1.1, int(episode.sum()))
        keep = rng.random((n_instances, steps)) >= 0.01  # 1 % scrape gaps
        inst_idx, step_idx = np.nonzero(keep)
        frames.append(pd.DataFrame({
            "timestamp": pd.to_datetime(grid_ms[step_idx], unit="ms", utc=True),
            "query": q.name,
            "instance": pd.array(instances[inst_idx], dtype="str"),
            "labels": pd.array(np.char.add('{instance="', instances[inst_idx].astype(str)).astype(object), dtype="str"),
            "value": values[inst_idx, step_idx],
        }))  # fmt: skip
    res = pd.concat(frames, ignore_index=True)

    ts_ms = DAY.value // 1_000_000 + np.sort(rng.integers(0, 86_400_000, n_predictions))
    inst_idx = rng.integers(0, n_instances, n_predictions)
    step_idx = np.minimum((ts_ms - grid_ms[0]) // (STEP_SECONDS * 1000), steps - 1)
    in_episode = episode[inst_idx, step_idx]
    slow = in_episode & (rng.random(n_predictions) < 0.7) | (rng.random(n_predictions) < 0.002)
    pred = pd.DataFrame({
        "timestamp": pd.to_datetime(ts_ms, unit="ms", utc=True),
        "model": pd.array(np.array(MODELS, dtype=object)[rng.integers(0, len(MODELS), n_predictions)], dtype="str"),
        "model_version": pd.array(["3"] * n_predictions, dtype="str"),
        "instance": pd.array(instances[inst_idx], dtype="str"),
        "prediction_time": np.where(slow, 2.5 + rng.gamma(2.0, 0.2, n_predictions), rng.gamma(2.0, 0.1, n_predictions)),
        "accuracy": rng.uniform(0.8, 1.0, n_predictions),
        "loss": rng.uniform(0.0, 0.3, n_predictions),
        "run_id": pd.array(np.char.add("run-", np.arange(n_predictions).astype(str)).astype(object), dtype="str"),
        "experiment": "synthetic",
    })  # fmt: skip
    return sort_predictions(pred), res


# -- the naive version -------------------------------------------------------------------------------------


def naive_index(res: pd.DataFrame) -> dict[tuple[str, str], tuple[list[int], list[float]]]:
    """Per (query, instance): sorted sample times (ns) and values, several series collapsed to their max."""
    index = {}
    for (query, instance), g in res.groupby(["query", "instance"], sort=False):
        per_ts = g.groupby("timestamp")["value"].max().sort_index()
        index[(query, instance)] = (per_ts.index.as_unit("ns").asi8.tolist(), per_ts.to_numpy().tolist())
    return index


def naive_correlate(
    pred: pd.DataFrame, index: dict[tuple[str, str], tuple[list[int], list[float]]], cfg: ModelwatchConfig
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One prediction at a time: nearest sample per query, flags, and running counts per model and query."""
    queries = [q.name for q in cfg.prometheus.queries]
    limits = cfg.saturation_thresholds
    tol = int(cfg.correlation.tolerance.total_seconds() * 1e9)
    slow_limit: dict[str, float] = {}
    rows = []
    pairs: dict[tuple[str, str], list[tuple[float, float, bool]]] = {}
    for p in pred.itertuples(index=False):
        t = p.timestamp.value
        if p.model not in slow_limit:
            slow_limit[p.model] = cfg.evaluation.for_model(p.model).slow_prediction_seconds
        slow = p.prediction_time > slow_limit[p.model]
        row: dict[str, Any] = {"run_id": p.run_id, "model": p.model, "slow": slow}
        missing, saturated = [], []
        for q in queries:
            value = math.nan
            for key in ((q, p.instance), (q, "")):
                series = index.get(key)
                if series is None:
                    continue
                times, values = series
                i = bisect.bisect_left(times, t)
                best = None
                for j in (i - 1, i):  # the earlier one wins a tie, as in merge_asof
                    if (
                        0 <= j < len(times)
                        and abs(times[j] - t) <= tol
                        and (best is None or abs(times[j] - t) < abs(times[best] - t))
                    ):
                        best = j
                if best is not None:
                    value = values[best]
                    break
            row[f"{VALUE_PREFIX}{q}"] = value
            if math.isnan(value):
                missing.append(q)
            else:
                pairs.setdefault((p.model, q), []).append((p.prediction_time, value, slow))
            if q in limits:
                flag = value >= limits[q]
                row[f"{SATURATED_PREFIX}{q}"] = flag
                if flag:
                    saturated.append(q)
        row["missing_resources"] = ",".join(missing)
        row["saturated_resources"] = ",".join(saturated)
        rows.append(row)
    summary = []
    for (model, q), points in sorted(pairs.items()):
        limit = limits.get(q)
        slow_vals = [v for _, v, s in points if s]
        norm_vals = [v for _, v, s in points if not s]
        n_slow_sat = sum(1 for v in slow_vals if limit is not None and v >= limit)
        n_norm_sat = sum(1 for v in norm_vals if limit is not None and v >= limit)
        summary.append({
            "model": model, "resource": q, "n_slow_with_sample": len(slow_vals), "n_slow_saturated": n_slow_sat,
            "n_normal_with_sample": len(norm_vals), "n_normal_saturated": n_norm_sat,
            "spearman": spearman(np.array([pt for pt, _, _ in points]), np.array([v for _, v, _ in points])),
        })  # fmt: skip
    return pd.DataFrame(rows), pd.DataFrame(summary)


def filter_loop(pred: pd.DataFrame, res: pd.DataFrame, cfg: ModelwatchConfig) -> pd.DataFrame:
    """The loop as first written: for every prediction and query, filter the resource frame for its instance
    and take the nearest sample within tolerance (no index: every prediction scans every sample)."""
    queries = [q.name for q in cfg.prometheus.queries]
    tol = pd.Timedelta(cfg.correlation.tolerance)
    rows = []
    for p in pred.itertuples(index=False):
        row: dict[str, Any] = {"run_id": p.run_id}
        for q in queries:
            value = math.nan
            for instance in (p.instance, ""):
                s = res[(res["query"] == q) & (res["instance"] == instance)]
                distance = (s["timestamp"] - p.timestamp).abs()
                near = distance <= tol
                if near.any():
                    value = float(s.loc[near & (distance == distance[near].min()), "value"].max())
                    break
            row[f"{VALUE_PREFIX}{q}"] = value
        rows.append(row)
    return pd.DataFrame(rows)


def floor_script(pred: pd.DataFrame, res: pd.DataFrame, cfg: ModelwatchConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The floor: a minimal pandas script for the same question. Sort the predictions by time, one
    ``merge_asof`` per query (by instance, nearest within the tolerance), slow and saturation flags, and the
    per-model counts of slow/normal predictions at saturation. No freshness rule, no global series, no
    unsampled counts, no tests, ranks or medians."""
    tol = pd.Timedelta(cfg.correlation.tolerance)
    out = pred.sort_values("timestamp", kind="stable").reset_index(drop=True)
    limits = {m: cfg.evaluation.for_model(m).slow_prediction_seconds for m in out["model"].unique()}
    out["slow"] = out["prediction_time"] > out["model"].map(limits)
    for q in cfg.prometheus.queries:
        r = res.loc[res["query"] == q.name, ["timestamp", "instance", "value"]].sort_values("timestamp", kind="stable")
        m = pd.merge_asof(out[["timestamp", "instance"]], r, on="timestamp", by="instance", direction="nearest",
                          tolerance=tol)  # fmt: skip
        out[f"{VALUE_PREFIX}{q.name}"] = m["value"].to_numpy()
    sat = {f"{SATURATED_PREFIX}{k}": out[f"{VALUE_PREFIX}{k}"] >= v for k, v in cfg.saturation_thresholds.items()}
    out = out.assign(**sat)
    return out, out.groupby(["model", "slow"])[list(sat)].sum()


# -- cases (each in its own process) -----------------------------------------------------------------------


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _release_free_memory() -> None:
    """Hand memory freed so far back to the OS, so RSS growth afterwards is what the next call needs."""
    gc.collect()
    with contextlib.suppress(Exception):
        import pyarrow as pa

        pa.default_memory_pool().release_unused()
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _rss_growth(fn: Any) -> tuple[Any, float]:
    """Run ``fn`` while sampling the resident set every 2 ms; returns its result and the peak growth in MiB.

    Unlike tracemalloc this sees Arrow's allocations too (pandas' string columns live in Arrow buffers). Run
    it first in a fresh process: memory an earlier call freed but the allocator kept would hide growth.
    """
    _release_free_memory()
    before = _rss_mib()
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss_mib())
            done.wait(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = fn()
    finally:
        done.set()
        sampler.join()
    return result, max(peak, _rss_mib()) - before


def _traced(fn: Any) -> tuple[Any, float]:
    """Run ``fn`` under tracemalloc; returns its result and the peak traced allocation in MiB (Python objects
    and numpy buffers; not Arrow's memory pool)."""
    gc.collect()
    tracemalloc.start()
    try:
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak / 2**20


def case_vectorised(args: argparse.Namespace) -> dict[str, Any]:
    cfg = load_config(bench.REPO / "include" / "thresholds.yaml")
    pred, res = synthetic(
        args.correlation_predictions, args.correlation_instances, cfg, args.correlation_seed
    )
    import scipy.stats  # noqa: F401  (correlate imports it on its first call: not what is measured)

    rss_before = _maxrss_mib()
    # memory first, in the fresh process; then the timed runs; tracemalloc (which slows the call) last
    (joined, _), growth = _rss_growth(lambda: correlate(pred, res, cfg))
    n_slow = int(joined["slow"].sum())
    del joined
    times, floor_times = [], []
    for _ in range(args.correlation_repeat):  # alternately, so both see the same machine
        gc.collect()
        started = time.perf_counter()
        joined, corr = correlate(pred, res, cfg)
        times.append(time.perf_counter() - started)
        del joined, corr
        gc.collect()
        started = time.perf_counter()
        floor_out = floor_script(pred, res, cfg)
        floor_times.append(time.perf_counter() - started)
        del floor_out
    _, peak = _traced(lambda: correlate(pred, res, cfg))
    return {
        "predictions": len(pred), "resource_rows": len(res), "series": int(res.groupby(["query", "instance"]).ngroups),
        "seconds": min(times), "median_seconds": float(np.median(times)), "all_seconds": times,
        "floor_median_seconds": float(np.median(floor_times)), "floor_all_seconds": floor_times,
        "traced_peak_mib": peak, "rss_growth_mib": growth,
        "maxrss_mib": _maxrss_mib(), "maxrss_before_mib": rss_before, "slow": n_slow,
        "queries": len(cfg.prometheus.queries),
    }  # fmt: skip


def case_floor(args: argparse.Namespace) -> dict[str, Any]:
    """Peak RSS growth of the floor script in a fresh process (its time is taken beside correlate's)."""
    cfg = load_config(bench.REPO / "include" / "thresholds.yaml")
    pred, res = synthetic(args.correlation_predictions, args.correlation_instances, cfg, args.correlation_seed)
    _, growth = _rss_growth(lambda: floor_script(pred, res, cfg))
    return {"rss_growth_mib": growth}


def case_large(args: argparse.Namespace) -> dict[str, Any]:
    import scipy.stats  # noqa: F401

    cfg = load_config(bench.REPO / "include" / "thresholds.yaml")
    n = args.correlation_large_predictions
    pred, res = synthetic(n, args.correlation_instances, cfg, args.correlation_seed)
    started = time.perf_counter()
    (joined, corr), growth = _rss_growth(lambda: correlate(pred, res, cfg))
    times = [time.perf_counter() - started]
    output_mib = (joined.memory_usage(deep=True).sum() + corr.memory_usage(deep=True).sum()) / 2**20
    del joined, corr
    for _ in range(2):
        gc.collect()
        started = time.perf_counter()
        joined, corr = correlate(pred, res, cfg)
        times.append(time.perf_counter() - started)
        del joined, corr
    return {
        "predictions": n, "median_seconds": float(np.median(times)), "all_seconds": times, "rss_growth_mib": growth,
        "output_mib": output_mib, "input_mib": pred.memory_usage(deep=True).sum() / 2**20,
        "maxrss_mib": _maxrss_mib(),
    }  # fmt: skip


def case_naive(args: argparse.Namespace) -> dict[str, Any]:
    cfg = load_config(bench.REPO / "include" / "thresholds.yaml")
    pred, res = synthetic(
        args.correlation_predictions, args.correlation_instances, cfg, args.correlation_seed
    )
    rng = np.random.default_rng(args.correlation_seed + 1)
    sample = pred.iloc[np.sort(rng.choice(len(pred), args.correlation_naive_sample, replace=False))]
    sample = sample.reset_index(drop=True)
    index_times, loop_times = [], []
    for _ in range(args.correlation_repeat):
        gc.collect()
        started = time.perf_counter()
        index = naive_index(res)
        index_times.append(time.perf_counter() - started)
    _, growth = _rss_growth(lambda: naive_correlate(sample, index, cfg))
    for _ in range(args.correlation_repeat):
        gc.collect()
        started = time.perf_counter()
        naive_joined, naive_summary = naive_correlate(sample, index, cfg)
        loop_times.append(time.perf_counter() - started)
    index_seconds, loop_seconds = min(index_times), min(loop_times)
    _, peak = _traced(lambda: naive_correlate(sample, index, cfg))
    few = sample.iloc[: args.correlation_filter_sample]
    started = time.perf_counter()
    filtered = filter_loop(few, res, cfg).set_index("run_id")
    filter_seconds = time.perf_counter() - started
    reference = naive_joined.set_index("run_id").loc[filtered.index, filtered.columns]
    filter_same = int(
        np.isclose(filtered.to_numpy(float), reference.to_numpy(float), equal_nan=True).all(axis=1).sum()
    )

    # same answer as correlate on the same sample?
    joined, corr = correlate(sample, res, cfg)
    a = joined.set_index("run_id").sort_index()
    b = naive_joined.set_index("run_id").sort_index()
    cols = [c for c in a.columns if c.startswith((VALUE_PREFIX, SATURATED_PREFIX))] + [
        "slow", "missing_resources", "saturated_resources"]  # fmt: skip
    same_rows = int(sum(
        bool(np.all([_same(a.at[r, c], b.at[r, c]) for c in cols])) for r in a.index
    ))  # fmt: skip
    key = ["model", "resource"]
    corr = corr.assign(  # the 2x2 table's sampled rows, as the naive loop counts them
        n_slow_with_sample=corr["n_slow_saturated"] + corr["n_slow_unsaturated"],
        n_normal_with_sample=corr["n_normal_saturated"] + corr["n_normal_unsaturated"],
    )
    s_vec = corr.set_index(key)[["n_slow_with_sample", "n_slow_saturated", "n_normal_with_sample",
                                 "n_normal_saturated", "spearman"]]  # fmt: skip
    s_naive = naive_summary.set_index(key)[s_vec.columns].reindex(s_vec.index)
    same_summary = bool(np.allclose(s_vec.to_numpy(float), s_naive.to_numpy(float), equal_nan=True))
    return {
        "sample": len(sample), "index_seconds": index_seconds, "loop_seconds": loop_seconds,
        "traced_peak_mib": peak, "rss_growth_mib": growth, "maxrss_mib": _maxrss_mib(), "same_rows": same_rows,
        "same_summary": same_summary, "filter_sample": len(few), "filter_seconds": filter_seconds,
        "filter_same_rows": filter_same,
    }  # fmt: skip


def _same(x: Any, y: Any) -> bool:
    if isinstance(x, float) and isinstance(y, float):
        return (math.isnan(x) and math.isnan(y)) or x == y
    return bool(x == y)


CASES = {"vectorised": case_vectorised, "naive": case_naive, "floor": case_floor, "large": case_large}


def _in_subprocess(case: str, args: argparse.Namespace) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bench.correlation", "--case", case]
    for name, value in vars(args).items():
        if name.startswith("correlation_"):
            argv += [f"--{name.replace('_', '-')}", str(value)]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(bench.REPO), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(argv, cwd=bench.REPO, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"case {case} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- report ------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> str:
    vec = _in_subprocess("vectorised", args)
    floor = _in_subprocess("floor", args)
    naive = _in_subprocess("naive", args)
    large = _in_subprocess("large", args) if args.correlation_large_predictions else None
    n = vec["predictions"]
    per_pred = naive["loop_seconds"] / naive["sample"]
    extrapolated = naive["index_seconds"] + per_pred * n
    ratio = extrapolated / vec["seconds"]
    naive_mem = naive["traced_peak_mib"] / naive["sample"] * n
    large_time_ok = bool(large and large["median_seconds"] < LARGE_TARGET_SECONDS)
    large_mem_ok = bool(large and large["rss_growth_mib"] < LARGE_TARGET_MIB)
    per_filter = naive["filter_seconds"] / naive["filter_sample"]
    table = [
        "| case | predictions | wall time | per prediction | peak traced memory | peak RSS growth | process max RSS |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| `correlate` (vectorised) | {n:,} | {vec['seconds']:.2f} s | {vec['seconds'] / n * 1e6:.2f} µs | "
        f"{vec['traced_peak_mib']:,.0f} MiB | {vec['rss_growth_mib']:,.0f} MiB | {vec['maxrss_mib']:,.0f} MiB |",
        f"| floor: minimal pandas `merge_asof` script (median) | {n:,} | {vec['floor_median_seconds']:.2f} s | "
        f"{vec['floor_median_seconds'] / n * 1e6:.2f} µs | | {floor['rss_growth_mib']:,.0f} MiB | |",
        *([f"| `correlate`, large (median of 3) | {large['predictions']:,} | {large['median_seconds']:.2f} s | "
           f"{large['median_seconds'] / large['predictions'] * 1e6:.2f} µs | | {large['rss_growth_mib']:,.0f} MiB | "
           f"{large['maxrss_mib']:,.0f} MiB |",
           f"| target for the large case | {large['predictions']:,} | < {LARGE_TARGET_SECONDS:.0f} s "
           f"({'met' if large_time_ok else 'NOT met'}) | | | < {LARGE_TARGET_MIB:,} MiB "
           f"({'met' if large_mem_ok else 'NOT met'}) | |"] if large else []),
        f"| naive loop, measured on a sample | {naive['sample']:,} | {naive['loop_seconds']:.2f} s "
        f"(+ {naive['index_seconds']:.2f} s index) | {per_pred * 1e6:,.0f} µs | {naive['traced_peak_mib']:,.1f} MiB "
        f"| {naive['rss_growth_mib']:,.1f} MiB | {naive['maxrss_mib']:,.0f} MiB |",
        f"| naive loop, extrapolated | {n:,} | {extrapolated:,.0f} s ({extrapolated / 60:.1f} min) | "
        f"{per_pred * 1e6:,.0f} µs | ~{naive_mem:,.0f} MiB (linear) | n/a | n/a |",
        f"| filter-per-row loop, measured on a sample | {naive['filter_sample']:,} | {naive['filter_seconds']:.2f} s "
        f"| {per_filter * 1e3:,.0f} ms | | | |",
        f"| filter-per-row loop, extrapolated | {n:,} | {per_filter * n / 3600:,.1f} h | {per_filter * 1e3:,.0f} ms "
        f"| | | |",
    ]
    return "\n".join([
        "## correlation",
        "",
        f"{n:,} predictions (4 models, {vec['slow']:,} slow) against {vec['series']} series "
        f"({vec['queries']} queries x {args.correlation_instances} instances, 15 s over one day, 1 % gaps): "
        f"{vec['resource_rows']:,} resource samples. Seed {args.correlation_seed}.",
        "",
        *table,
        "",
        f"**Vectorised is about {ratio:,.0f}x faster than the naive loop with a per-series index, and about "
        f"{per_filter * n / vec['seconds']:,.0f}x faster than filtering the resource frame per prediction** "
        f"(both extrapolated linearly from their samples). "
        f"Timed runs: {', '.join(f'{s:.2f}' for s in vec['all_seconds'])} s (best in the table). "
        f"Traced memory counts Python objects and numpy buffers, not Arrow's pool (pandas strings); RSS growth is "
        f"sampled every 2 ms during one call; max RSS includes the synthetic frames "
        f"({vec['maxrss_before_mib']:,.0f} MiB before the first call).",
        f"**`correlate` against the floor, same process, alternating: {vec['median_seconds']:.2f} s vs "
        f"{vec['floor_median_seconds']:.2f} s (medians of {len(vec['all_seconds'])}), "
        f"{vec['median_seconds'] / vec['floor_median_seconds']:.2f}x**; the floor is one `merge_asof` per query "
        f"without the freshness rule, the global series, unsampled counts, tests, ranks or medians. "
        f"Floor runs: {', '.join(f'{s:.2f}' for s in vec['floor_all_seconds'])} s.",
        *([f"Large: {large['predictions']:,} predictions, runs {', '.join(f'{s:.2f}' for s in large['all_seconds'])} s "
           f"(the first with RSS sampling); peak RSS growth {large['rss_growth_mib']:,.0f} MiB, of which the returned "
           f"frames hold {large['output_mib']:,.0f} MiB by `memory_usage(deep=True)` (the "
           f"{large['input_mib']:,.0f} MiB of prediction columns included, which the joined frame shares with the "
           f"input when it comes sorted as the extractors write it). "
           f"**Target {LARGE_TARGET_SECONDS:.0f} s / {LARGE_TARGET_MIB:,} MiB: "
           f"{'met' if large_time_ok and large_mem_ok else 'NOT met'}** "
           f"({large['median_seconds']:.2f} s, {large['rss_growth_mib']:,.0f} MiB)."] if large else []),
        f"Naive loop agrees with `correlate` on {naive['same_rows']:,} of {naive['sample']:,} joined rows; "
        f"per-model statistics {'identical' if naive['same_summary'] else 'DIFFER'}; the filter-per-row loop "
        f"agrees on {naive['filter_same_rows']:,} of {naive['filter_sample']:,}.",
    ])  # fmt: skip


def _main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.correlation", description=DESCRIPTION)
    parser.add_argument("--case", choices=sorted(CASES), required=True)
    add_arguments(parser.add_argument_group("correlation"))
    args = parser.parse_args()
    print(json.dumps(CASES[args.case](args)))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
