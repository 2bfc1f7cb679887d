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

from modelwatch.stats import fisher_greater, relative_risk

if TYPE_CHECKING:
    from modelwatch.config import ModelwatchConfig

#: prefix of the per-resource value columns in the joined frame (``res_cpu``)
VALUE_PREFIX = "res_"
#: prefix of the per-resource saturation flags (``sat_cpu``)
SATURATED_PREFIX = "sat_"
#: prefix of the age of the real sample behind each joined value, seconds (``age_cpu``: prediction time
#: minus sample time; negative when the sample is after the prediction)
AGE_PREFIX = "age_"

#: One row per model and resource: the 2x2 table of the judged predictions (slow/normal x saturated/not
#: saturated among those with a sample) plus the unsampled ones, the effect size and test, and
#: descriptive columns (lift, Spearman, values at slow predictions).
CORRELATION_COLUMNS = [
    "model", "resource", "unit", "threshold", "n_predictions", "n_judged", "n_slow", "n_normal",
    "n_slow_saturated", "n_normal_saturated", "n_slow_unsaturated", "n_normal_unsaturated",
    "n_slow_unsampled", "n_normal_unsampled", "coverage", "slow_share_saturated", "slow_share_unsaturated",
    "relative_risk", "p_value", "slow_saturated_share", "normal_saturated_share", "lift", "spearman",
    "slow_value_median", "slow_value_max", "normal_value_median",
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


def _samples_of(resources: pd.DataFrame, name: str) -> pd.DataFrame:
    """One row per instance and evaluation time of query ``name``: value, real sample time, and the time
    the value stands for (``_rep``, ns)."""
    cols = ["timestamp", "instance", "value"]
    samples = resources.loc[resources["query"] == name, [c for c in (*cols, "sample_time", "window_seconds")
                                                          if c in resources.columns]]  # fmt: skip
    if "sample_time" not in samples.columns:  # partitions written before sample times were recorded
        samples = samples.assign(sample_time=samples["timestamp"])
    if "window_seconds" not in samples.columns:
        samples = samples.assign(window_seconds=0.0)
    # Several series per instance (e.g. per device) collapse to their maximum: the most saturated one is
    # the one that can explain a slow prediction. Their stalest sample time is kept.
    samples = samples.groupby(["instance", "timestamp"], sort=False, as_index=False).agg(
        value=("value", "max"), sample_time=("sample_time", "min"), window_seconds=("window_seconds", "max")
    )
    # A rate over [W] evaluated at t averages (t - W, t]: it stands for the middle of that range, so a
    # prediction is matched to the value whose range is centred on it, not to one that lags by W.
    half = (samples["window_seconds"].to_numpy(dtype="float64") * 5e8).astype("int64")
    samples["_rep"] = _as_ns(samples["timestamp"]) - half
    # float ns (NaN for an unknown sample time): 256 ns resolution at today's epoch, ample for seconds
    st = pd.to_datetime(samples["sample_time"], utc=True).dt.as_unit("ns")
    st_ns = st.fillna(pd.Timestamp(0, tz="UTC")).astype("int64").to_numpy().astype("float64")
    samples["_st"] = np.where(st.isna().to_numpy(), np.nan, st_ns)
    return samples


def join_resources(
    predictions: pd.DataFrame,
    resources: pd.DataFrame,
    tolerance: timedelta,
    queries: list[str],
) -> pd.DataFrame:
    """Give every prediction the value of each resource on its own instance at its time, when a real
    sample backs it.

    A prediction gets the value whose evaluation range is centred nearest to it (within ``tolerance``),
    and only if the newest real sample behind that value was taken at most ``tolerance`` before the
    prediction: Prometheus repeats a series' last value for up to 5 minutes after its last scrape, and
    such a repeated value is not evidence of the prediction's moment. Otherwise the prediction gets NaN
    and the resource is listed in ``missing_resources`` (a gap); it is never joined to a far or stale
    sample. ``age_<name>`` is the prediction's time minus the sample's, in seconds.

    A resource series without an instance label (``instance == ""``, e.g. a cluster-wide query) applies
    to every prediction that has no value of its own instance.

    :param queries: the resource names to join (columns ``res_<name>`` and ``age_<name>`` each).
    """
    out = predictions.sort_values(["timestamp", "model", "instance"], kind="stable").reset_index(drop=True)
    out["_ts"] = _as_ns(out["timestamp"])
    out["_row"] = np.arange(len(out))
    ts = out["_ts"].to_numpy()
    tol = int(tolerance.total_seconds() * 1e9)
    missing = np.zeros((len(out), len(queries)), dtype=bool)
    for j, name in enumerate(queries):
        samples = _samples_of(resources, name)
        values = np.full(len(out), np.nan)
        sampled_at = np.full(len(out), np.nan)
        for scope in ("instance", "global"):
            part = samples[samples["instance"] != ""] if scope == "instance" else samples[samples["instance"] == ""]
            if not len(part):
                continue
            left = out[["_ts", "instance", "_row"]] if scope == "instance" else out[["_ts", "_row"]]
            m = pd.merge_asof(
                left, part[["_rep", "instance", "value", "_st"]].sort_values("_rep", kind="stable"),
                left_on="_ts", right_on="_rep", by="instance" if scope == "instance" else None,
                direction="nearest", tolerance=tol,
            )  # fmt: skip
            rows = m["_row"].to_numpy()
            v = m["value"].to_numpy(dtype="float64")
            st = m["_st"].to_numpy(dtype="float64")
            # Fresh: a real sample no more than the tolerance before the prediction (NaT: unknown, not fresh).
            with np.errstate(invalid="ignore"):
                fresh = ~np.isnan(v) & ~np.isnan(st) & (ts[rows] - st <= tol)
            take = fresh & np.isnan(values[rows])
            values[rows[take]] = v[take]
            sampled_at[rows[take]] = st[take]
        out[f"{VALUE_PREFIX}{name}"] = values
        has = ~np.isnan(values)
        out[f"{AGE_PREFIX}{name}"] = np.where(has, (ts - sampled_at) / 1e9, np.nan)
        missing[:, j] = ~has
    out["missing_resources"] = _join_names(missing, queries)
    return out.drop(columns=["_ts", "_row"])


def correlate(
    predictions: pd.DataFrame,
    resources: pd.DataFrame,
    thresholds: ModelwatchConfig,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Correlate prediction slowness with resource saturation.

    :returns: ``(joined, correlation)``: ``joined`` has one row per prediction with ``slow``, the value
        of every resource at its time (``res_<name>``) and the age of the sample behind it
        (``age_<name>``), a saturation flag per resource with a threshold (``sat_<name>``), and
        ``saturated_resources``/``missing_resources``; ``correlation`` has one row per model and resource
        (see :func:`summarise`).
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


def two_by_two(slow: np.ndarray, sampled: np.ndarray, saturated: np.ndarray) -> dict[str, int]:
    """The contingency counts of judged predictions: slow/normal x saturated / sampled but not saturated /
    without a sample."""
    normal = ~slow
    unsat = sampled & ~saturated
    return {
        "n_slow_saturated": int((slow & saturated).sum()), "n_normal_saturated": int((normal & saturated).sum()),
        "n_slow_unsaturated": int((slow & unsat).sum()), "n_normal_unsaturated": int((normal & unsat).sum()),
        "n_slow_unsampled": int((slow & ~sampled).sum()), "n_normal_unsampled": int((normal & ~sampled).sum()),
    }  # fmt: skip


def summarise(joined: pd.DataFrame, thresholds: ModelwatchConfig) -> pd.DataFrame:
    """One row per model and resource (:data:`CORRELATION_COLUMNS`).

    Counts are over the model's judged predictions (a usable ``prediction_time``). ``coverage`` is the
    share of slow predictions that had a sample of the resource; ``slow_share_saturated`` and
    ``slow_share_unsaturated`` are P(slow | saturated) and P(slow | sampled, not saturated);
    ``relative_risk`` and ``p_value`` (:func:`relative_risk`, :func:`fisher_greater`) compare them.
    ``lift`` (P(saturated | slow) / P(saturated | normal)) and ``spearman`` are descriptive only.
    """
    rows = []
    units = {q.name: q.unit for q in thresholds.prometheus.queries}
    limits = thresholds.saturation_thresholds
    for model, group in joined.groupby("model", sort=True):
        # predictions without a usable prediction_time are neither slow nor normal
        usable = usable_prediction_times(group["prediction_time"])
        judged = group[usable]
        slow = judged["slow"].to_numpy(dtype=bool)
        pt = judged["prediction_time"].to_numpy(dtype="float64")
        n_slow = int(slow.sum())
        for name in units:
            values = judged[f"{VALUE_PREFIX}{name}"].to_numpy(dtype="float64")
            has = ~np.isnan(values)
            limit = limits.get(name)
            sat = (values >= limit) if limit is not None else np.zeros(len(values), dtype=bool)
            t = two_by_two(slow, has, sat)
            a, b, c, d = t["n_slow_saturated"], t["n_normal_saturated"], t["n_slow_unsaturated"], t["n_normal_unsaturated"]
            n_slow_with, n_norm_with = a + c, b + d
            slow_share = a / n_slow_with if n_slow_with else np.nan
            norm_share = b / n_norm_with if n_norm_with else np.nan
            tested = limit is not None
            rows.append({
                "model": model, "resource": name, "unit": units[name],
                "threshold": float(limit) if limit is not None else np.nan,
                "n_predictions": len(group), "n_judged": len(judged), "n_slow": n_slow, "n_normal": len(judged) - n_slow,
                **t,
                "coverage": n_slow_with / n_slow if n_slow else np.nan,
                "slow_share_saturated": a / (a + b) if tested and a + b else np.nan,
                "slow_share_unsaturated": c / (c + d) if tested and c + d else np.nan,
                "relative_risk": relative_risk(a, b, c, d) if tested else np.nan,
                "p_value": fisher_greater(a, b, c, d) if tested else np.nan,
                "slow_saturated_share": slow_share if tested else np.nan,
                "normal_saturated_share": norm_share if tested else np.nan,
                "lift": _lift(slow_share, norm_share) if tested else np.nan,
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
