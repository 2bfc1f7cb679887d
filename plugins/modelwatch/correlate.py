"""Join predictions to the resource samples at their time, and measure how saturation goes with slowness.

Pure functions on DataFrames: no Airflow, no I/O, so they test in milliseconds and the benchmark
measures exactly what a task runs.

Frames in (as the extractors write them):

- predictions: ``timestamp`` (UTC), ``model``, ``model_version``, ``instance``, ``prediction_time`` (s),
  ``accuracy``, ``loss``, ``run_id``, ``experiment``
- resources: ``timestamp`` (UTC), ``query``, ``instance``, ``labels``, ``value``
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from modelwatch.config import ModelwatchConfig

#: prefix of the per-resource value columns in the joined frame (``res_cpu``)
VALUE_PREFIX = "res_"
#: prefix of the per-resource saturation flags (``sat_cpu``)
SATURATED_PREFIX = "sat_"

CORRELATION_COLUMNS = [
    "model", "resource", "unit", "threshold", "n_predictions", "n_slow", "n_slow_with_sample",
    "n_slow_without_sample", "n_slow_saturated", "slow_saturated_share", "n_normal_with_sample",
    "n_normal_saturated", "normal_saturated_share", "lift", "spearman", "slow_value_median",
    "slow_value_max", "normal_value_median",
]  # fmt: skip


def usable_prediction_times(prediction_time: pd.Series) -> np.ndarray:
    """``True`` where ``prediction_time`` can be judged: a finite number of seconds, not negative.

    A run that never logged the metric (NaN), logged NaN, or logged an infinity (which MLflow stores as
    the largest float) says nothing about speed: it is neither slow nor normal, and never makes a model
    look healthy.
    """
    values = prediction_time.to_numpy(dtype="float64", na_value=np.nan)
    with np.errstate(invalid="ignore"):
        return np.isfinite(values) & (values >= 0) & (values < np.finfo("float64").max)


def slow_flags(predictions: pd.DataFrame, slow_seconds_for: Callable[[str], float]) -> pd.Series:
    """``True`` where a prediction took longer than its model's ``slow_prediction_seconds`` (never for a
    prediction without a usable ``prediction_time``)."""
    limits = predictions["model"].map({m: slow_seconds_for(m) for m in predictions["model"].unique()})
    slow = predictions["prediction_time"].astype("float64") > limits.astype("float64")
    return slow & usable_prediction_times(predictions["prediction_time"])


def join_resources(
    predictions: pd.DataFrame,
    resources: pd.DataFrame,
    tolerance: timedelta,
    queries: list[str],
) -> pd.DataFrame:
    """Give every prediction the nearest sample of each resource on its own instance.

    A resource series without an instance label (``instance == ""``, e.g. a cluster-wide query) applies
    to every prediction. A prediction with no sample within ``tolerance`` (a scrape gap) gets NaN and is
    listed in ``missing_resources``; it is never joined to a far sample.

    :param queries: the resource names to join (one column ``res_<name>`` each, in this order).
    """
    out = predictions.sort_values(["timestamp", "model", "instance"], kind="stable").reset_index(drop=True)
    out["_ts"] = _as_ns(out["timestamp"])
    out["_row"] = np.arange(len(out))
    tol = int(tolerance.total_seconds() * 1e9)
    missing = np.zeros((len(out), len(queries)), dtype=bool)
    for j, name in enumerate(queries):
        samples = resources.loc[resources["query"] == name, ["timestamp", "instance", "value"]]
        # Several series per instance (e.g. per device) collapse to their maximum: the most saturated
        # one is the one that can explain a slow prediction.
        samples = samples.groupby(["instance", "timestamp"], sort=False, as_index=False)["value"].max()
        samples["_ts"] = _as_ns(samples["timestamp"])
        per_instance = samples[samples["instance"] != ""]
        global_ = samples[samples["instance"] == ""]
        values = np.full(len(out), np.nan)
        if len(per_instance):
            m = pd.merge_asof(
                out[["_ts", "instance", "_row"]],
                per_instance[["_ts", "instance", "value"]].sort_values("_ts", kind="stable"),
                on="_ts", by="instance", direction="nearest", tolerance=tol,
            )  # fmt: skip
            values[m["_row"].to_numpy()] = m["value"].to_numpy(dtype="float64")
        if len(global_):
            g = pd.merge_asof(
                out[["_ts", "_row"]], global_[["_ts", "value"]].sort_values("_ts", kind="stable"),
                on="_ts", direction="nearest", tolerance=tol,
            )  # fmt: skip
            gv = g["value"].to_numpy(dtype="float64")
            rows = g["_row"].to_numpy()
            fill = np.isnan(values[rows])
            values[rows[fill]] = gv[fill]
        out[f"{VALUE_PREFIX}{name}"] = values
        missing[:, j] = np.isnan(values)
    out["missing_resources"] = _join_names(missing, queries)
    return out.drop(columns=["_ts", "_row"])


def correlate(
    predictions: pd.DataFrame,
    resources: pd.DataFrame,
    thresholds: ModelwatchConfig,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Correlate prediction slowness with resource saturation.

    :returns: ``(joined, correlation)``: ``joined`` has one row per prediction with ``slow``, the value
        of every resource at its time (``res_<name>``), a saturation flag per resource with a threshold
        (``sat_<name>``), and ``saturated_resources``/``missing_resources``; ``correlation`` has one row
        per model and resource: how many slow predictions coincided with saturation against normal ones
        (the lift), the Spearman rank correlation of prediction_time with the resource, and the resource's
        values at slow and normal predictions.
    """
    queries = [q.name for q in thresholds.prometheus.queries]
    limits = thresholds.saturation_thresholds
    joined = join_resources(predictions, resources, thresholds.correlation.tolerance, queries)

    def slow_seconds(model: str) -> float:
        return thresholds.evaluation.for_model(model).slow_prediction_seconds

    joined["slow_threshold"] = joined["model"].map({m: slow_seconds(m) for m in joined["model"].unique()}).astype(
        "float64"
    )
    joined["slow"] = slow_flags(joined, slow_seconds)
    saturated = np.zeros((len(joined), len(limits)), dtype=bool)
    for j, (name, limit) in enumerate(limits.items()):
        flags = (joined[f"{VALUE_PREFIX}{name}"] >= limit).to_numpy()
        joined[f"{SATURATED_PREFIX}{name}"] = flags
        saturated[:, j] = flags
    joined["saturated_resources"] = _join_names(saturated, list(limits))
    return joined, summarise(joined, thresholds)


def summarise(joined: pd.DataFrame, thresholds: ModelwatchConfig) -> pd.DataFrame:
    """One row per model and resource (see :func:`correlate`)."""
    rows = []
    units = {q.name: q.unit for q in thresholds.prometheus.queries}
    limits = thresholds.saturation_thresholds
    for model, group in joined.groupby("model", sort=True):
        # predictions without a usable prediction_time are neither slow nor normal
        usable = usable_prediction_times(group["prediction_time"])
        slow = group["slow"].to_numpy() & usable
        pt = group["prediction_time"].to_numpy(dtype="float64")
        for name in units:
            values = group[f"{VALUE_PREFIX}{name}"].to_numpy(dtype="float64")
            has = ~np.isnan(values) & usable
            limit = limits.get(name)
            sat = (values >= limit) & usable if limit is not None else np.zeros(len(values), dtype=bool)
            n_slow_with = int((slow & has).sum())
            n_norm_with = int((~slow & has).sum())
            n_slow_sat = int((slow & sat).sum())
            n_norm_sat = int((~slow & sat).sum())
            slow_share = n_slow_sat / n_slow_with if n_slow_with else np.nan
            norm_share = n_norm_sat / n_norm_with if n_norm_with else np.nan
            rows.append({
                "model": model, "resource": name, "unit": units[name],
                "threshold": float(limit) if limit is not None else np.nan,
                "n_predictions": len(group), "n_slow": int(slow.sum()),
                "n_slow_with_sample": n_slow_with, "n_slow_without_sample": int(slow.sum()) - n_slow_with,
                "n_slow_saturated": n_slow_sat, "slow_saturated_share": slow_share,
                "n_normal_with_sample": n_norm_with, "n_normal_saturated": n_norm_sat,
                "normal_saturated_share": norm_share, "lift": _lift(slow_share, norm_share),
                "spearman": spearman(pt[has], values[has]),
                "slow_value_median": _nan_stat(np.median, values[slow & has]),
                "slow_value_max": _nan_stat(np.max, values[slow & has]),
                "normal_value_median": _nan_stat(np.median, values[~slow & has]),
            })  # fmt: skip
    frame = pd.DataFrame(rows, columns=CORRELATION_COLUMNS)
    return frame.astype({"model": "str", "resource": "str", "unit": "str"})


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); NaN with fewer than 3 points or no variance."""
    if len(x) < 3:
        return float("nan")
    rx = pd.Series(x).rank(method="average").to_numpy()
    ry = pd.Series(y).rank(method="average").to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def _lift(slow_share: float, normal_share: float) -> float:
    if np.isnan(slow_share):
        return float("nan")
    if np.isnan(normal_share) or normal_share == 0:
        return float("inf") if slow_share > 0 else float("nan")
    return float(slow_share / normal_share)


def _nan_stat(fn: Callable[[np.ndarray], float], values: np.ndarray) -> float:
    return float(fn(values)) if len(values) else float("nan")


def _as_ns(ts: pd.Series) -> np.ndarray:
    return pd.to_datetime(ts, utc=True).dt.as_unit("ns").astype("int64").to_numpy()


def _join_names(flags: np.ndarray, names: list[str]) -> np.ndarray:
    """Comma-joined names of the set flags per row, vectorised over distinct flag patterns."""
    if flags.shape[1] == 0 or len(flags) == 0:
        return np.full(len(flags), "", dtype=object)
    codes = flags.astype(np.int64) @ (1 << np.arange(flags.shape[1], dtype=np.int64))
    uniq, inverse = np.unique(codes, return_inverse=True)
    labels = np.array([",".join(n for k, n in enumerate(names) if code >> k & 1) for code in uniq], dtype=object)
    return labels[inverse]
