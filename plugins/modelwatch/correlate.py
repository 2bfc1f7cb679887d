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

#: pandas keeps "str" columns in Arrow: build the name columns there directly
_ARROW_STRINGS = getattr(pd.api.types.pandas_dtype("str"), "storage", None) == "pyarrow"

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
    return pd.Series(_is_slow(predictions["prediction_time"], limits.to_numpy(dtype="float64")),
                     index=predictions.index)  # fmt: skip


def _is_slow(prediction_time: pd.Series, limits: np.ndarray) -> np.ndarray:
    """The slow rule itself: a usable ``prediction_time`` above the row's limit."""
    pt = prediction_time.to_numpy(dtype="float64", na_value=np.nan)
    with np.errstate(invalid="ignore"):
        return (pt > limits) & usable_prediction_times(prediction_time)


class _Samples:
    """The resource samples of every query, collapsed to one per instance and evaluation time and sorted for
    a binary search: per query, one segment per instance (sorted by the time each value stands for) plus
    the global segment (``instance == ""``).

    Several series per instance (e.g. per device) collapse to their maximum: the most saturated one is the
    one that can explain a slow prediction. Their stalest sample time is kept.

    A rate over ``[W]`` evaluated at ``t`` averages ``(t - W, t]``: it stands for the middle of that range
    (``rep``), so a prediction is matched to the value whose range is centred on it, not to one that lags by
    ``W``. ``st`` is the newest real sample behind the value in float ns (NaN when unknown: 256 ns
    resolution at today's epoch, ample for seconds).
    """

    def __init__(self, resources: pd.DataFrame, queries: list[str], instances: pd.Index) -> None:
        self.queries = queries
        wanted = resources["query"].isin(queries).to_numpy(dtype=bool) if len(resources) else np.zeros(0, bool)
        res = resources.loc[wanted] if not wanted.all() else resources
        q_codes, q_uniques = pd.factorize(res["query"], sort=False)
        q_codes = pd.Index(queries).get_indexer(q_uniques)[q_codes] if len(res) else np.zeros(0, np.intp)
        # instance codes in the predictions' space; -1: the global series (""), -2: an instance no prediction has
        r_codes, r_uniques = pd.factorize(res["instance"], sort=False, use_na_sentinel=False)
        to_pred = instances.get_indexer(r_uniques) if len(r_uniques) else np.zeros(0, np.intp)
        to_pred = np.where(to_pred < 0, -2, to_pred)
        is_global = np.asarray(r_uniques == "", dtype=bool) if len(r_uniques) else np.zeros(0, bool)
        to_pred[is_global] = -1
        inst = to_pred[r_codes] if len(r_codes) else np.zeros(0, np.intp)
        ts = _as_ns(res["timestamp"]) if len(res) else np.zeros(0, np.int64)
        value = res["value"].to_numpy(dtype="float64", na_value=np.nan)
        if "sample_time" in res.columns:
            st_dt = pd.to_datetime(res["sample_time"], utc=True).dt.as_unit("ns")
            st = st_dt.astype("int64").to_numpy().astype("float64") if len(res) else np.zeros(0)
            st[st_dt.isna().to_numpy()] = np.nan
        else:  # partitions written before sample times were recorded
            st = ts.astype("float64")
        window = (res["window_seconds"].to_numpy(dtype="float64", na_value=np.nan) if "window_seconds" in res.columns
                  else np.zeros(len(res)))  # fmt: skip
        keep = inst != -2
        q_codes, inst, ts, value, st, window = (a[keep] for a in (q_codes, inst, ts, value, st, window))
        first = np.flatnonzero(keep)  # row in the resource frame: ties keep the frame's order
        # one stable sort by query, instance and time (none when the frame is already in that order)
        if not _is_sorted(q_codes, inst, ts):
            order = np.lexsort((ts, inst, q_codes))
            q_codes, inst, ts, value, st, window, first = (
                a[order] for a in (q_codes, inst, ts, value, st, window, first))  # fmt: skip
        # collapse duplicate (query, instance, time) rows: max value, stalest sample time, widest window
        if len(ts) > 1:
            new = np.empty(len(ts), dtype=bool)
            new[0] = True
            new[1:] = (q_codes[1:] != q_codes[:-1]) | (inst[1:] != inst[:-1]) | (ts[1:] != ts[:-1])
            if not new.all():
                starts = np.flatnonzero(new)
                value = np.fmax.reduceat(value, starts)
                st = np.fmin.reduceat(st, starts)
                window = np.fmax.reduceat(window, starts)
                q_codes, inst, ts, first = q_codes[starts], inst[starts], ts[starts], first[starts]
        rep = ts - (window * 5e8).astype("int64")
        # a window that changes within a series can reorder the centred times: sort again there
        if len(rep) > 1:
            same = (q_codes[1:] == q_codes[:-1]) & (inst[1:] == inst[:-1])
            if np.any(same & (rep[1:] <= rep[:-1])):
                order = np.lexsort((first, rep, inst, q_codes))
                q_codes, inst, rep, value, st = (a[order] for a in (q_codes, inst, rep, value, st))
        self.rep, self.value, self.st, self.inst = rep, value, st, inst
        #: whether every series holds each centred time at most once (a grid lookup needs that)
        self.distinct = len(rep) < 2 or not np.any(
            (q_codes[1:] == q_codes[:-1]) & (inst[1:] == inst[:-1]) & (rep[1:] == rep[:-1]))
        # segment bounds per (query, instance code + 1): instance code -1 (global) is column 0
        n_inst = len(instances) + 1
        key = q_codes.astype(np.int64) * n_inst + (inst + 1)
        bounds = np.searchsorted(key, np.arange(len(queries) * n_inst + 1, dtype=np.int64))
        self.bounds = bounds.reshape(-1)
        self.n_inst = n_inst

    def segment(self, query: int, instance: int) -> tuple[int, int]:
        """Start and end of the samples of query number ``query`` on instance code ``instance`` (-1: global)."""
        k = query * self.n_inst + instance + 1
        return int(self.bounds[k]), int(self.bounds[k + 1])

    def query_range(self, query: int) -> tuple[int, int]:
        return int(self.bounds[query * self.n_inst]), int(self.bounds[(query + 1) * self.n_inst])


def _is_sorted(*keys: np.ndarray) -> bool:
    """Whether rows are in ascending lexicographic order of ``keys`` (the first key most significant)."""
    n = len(keys[0])
    if n < 2:
        return True
    undecided = np.ones(n - 1, dtype=bool)
    for k in keys:
        a, b = k[:-1], k[1:]
        if np.any(undecided & (b < a)):
            return False
        undecided &= b == a
    return True


def _nearest(rep: np.ndarray, t: np.ndarray, tol: int) -> np.ndarray:
    """Index into sorted ``rep`` of the value nearest to each of ``t`` within ``tol`` (-1: none), as
    ``merge_asof(direction="nearest", tolerance=tol)`` picks it: the earlier one on a tie, the last of equal
    earlier keys and the first of equal later ones."""
    n = len(rep)
    back = np.searchsorted(rep, t, side="right") - 1
    fwd = np.searchsorted(rep, t, side="left")
    bdiff = t - rep[np.maximum(back, 0)]
    fdiff = rep[np.minimum(fwd, n - 1)] - t
    b_ok = (back >= 0) & (bdiff <= tol)
    f_ok = (fwd < n) & (fdiff <= tol)
    return np.where(b_ok & (~f_ok | (bdiff <= fdiff)), back, np.where(f_ok, fwd, -1))


class _Join:
    """What :func:`join_resources` computes, with the codes :func:`correlate` reuses: the sorted frame,
    model and instance codes, and per query the index of the sample behind each value (-1: none)."""

    def __init__(self, predictions: pd.DataFrame, resources: pd.DataFrame, tolerance: timedelta,
                 queries: list[str]) -> None:  # fmt: skip
        ts = _as_ns(predictions["timestamp"]) if len(predictions) else np.zeros(0, np.int64)
        if len(predictions) and pd.isna(predictions["timestamp"]).any():
            raise ValueError("Merge keys contain null values on left side")
        m_codes, m_uniques = pd.factorize(predictions["model"], sort=True, use_na_sentinel=False)
        i_codes, i_uniques = pd.factorize(predictions["instance"], sort=True, use_na_sentinel=False)
        # the frame sorted by timestamp, model and instance (stable), as sort_values orders them
        if _is_sorted(ts, m_codes, i_codes):
            out = predictions.reset_index(drop=True)
        else:
            order = np.lexsort((i_codes, m_codes, ts))
            out = predictions.take(order).reset_index(drop=True)
            ts, m_codes, i_codes = ts[order], m_codes[order], i_codes[order]
        self.frame, self.ts = out, ts
        self.model_codes, self.models = m_codes, pd.Index(m_uniques)
        instances = pd.Index(i_uniques)
        samples = _Samples(resources, queries, instances)
        self.samples = samples
        tol = int(tolerance.total_seconds() * 1e9)
        n = len(out)
        # predictions grouped by instance, each group in time order
        self._grid_cache: tuple | None = None
        by_inst: np.ndarray | None = None
        self.sample_index: list[np.ndarray] = []
        #: per query, the value at each prediction (set by :func:`_join_frame`)
        self.value_arrays: list[np.ndarray] = []
        for j in range(len(queries)):
            chosen = self._grid(j, i_codes, ts, tol) if samples.distinct else None
            if chosen is not None:
                self.sample_index.append(chosen)
                continue
            chosen = np.full(n, -1, dtype=np.int64)
            if by_inst is None:
                by_inst = np.argsort(i_codes, kind="stable")
                inst_bounds = np.searchsorted(i_codes[by_inst], np.arange(len(instances) + 1))
            for i in range(len(instances)):
                lo, hi = samples.segment(j, i)
                if lo == hi:
                    continue
                rows = by_inst[inst_bounds[i] : inst_bounds[i + 1]]
                self._take(chosen, rows, ts[rows], lo, hi, tol, only_missing=False)
            lo, hi = samples.segment(j, -1)
            if lo < hi:
                rows = np.flatnonzero(chosen < 0)
                self._take(chosen, rows, ts[rows], lo, hi, tol, only_missing=True)
            self.sample_index.append(chosen)

    def _grid(self, j: int, i_codes: np.ndarray, ts: np.ndarray, tol: int) -> np.ndarray | None:
        """The sample behind each prediction's value of query number ``j``, by table lookup when the
        query's centred times lie on one regular grid (Prometheus evaluates every query_range on its step):
        the same answer as :func:`_nearest` per instance and then the global series, without a search.
        ``None`` when the times are not on a grid small enough to tabulate."""
        s = self.samples
        lo, hi = s.query_range(j)
        n = len(ts)
        if hi == lo:
            return np.full(n, -1, dtype=np.int64)
        rep = s.rep[lo:hi]
        t0 = int(rep.min())
        step = int(np.gcd.reduce(rep - t0)) or 1
        size = (int(rep.max()) - t0) // step + 1
        rows, width = s.n_inst, size + 2
        if rows * width > 4 * (hi - lo + n) + 4096:
            return None
        # per instance row, grid slot k at column k + 1 (column 0: before the grid, the last: after it): the
        # sample at or before / at or after the slot (-1: none)
        slot = np.full((rows, width), -1, dtype=np.int64)
        slot[s.inst[lo:hi] + 1, (rep - t0) // step + 1] = np.arange(hi - lo)
        cols = np.broadcast_to(np.arange(width), (rows, width))
        have = slot >= 0
        b_col = np.maximum.accumulate(np.where(have, cols, 0), axis=1)
        f_col = np.minimum.accumulate(np.where(have, cols, width - 1)[:, ::-1], axis=1)[:, ::-1]
        row_base = np.arange(rows)[:, None] * width
        before = slot.reshape(-1)[(row_base + b_col).reshape(-1)]
        after = slot.reshape(-1)[(row_base + f_col).reshape(-1)]
        key = (t0, step, size)
        if self._grid_cache is None or self._grid_cache[0] != key:
            d = ts - t0
            kb = d // step
            kf = kb + (d % step != 0)
            self._grid_cache = (key, np.clip(kb, -1, size - 1) + 1, np.clip(kf, 0, size) + 1)
        _, col_b, col_f = self._grid_cache
        # sentinels at index -1: no sample is infinitely far and has no value
        rep_b = np.append(rep, np.int64(-(2**62)))
        rep_f = np.append(rep, np.int64(2**62))
        value = np.append(s.value[lo:hi], np.nan)
        st = np.append(s.st[lo:hi], np.nan)

        def take(base: np.ndarray | int, t: np.ndarray, cb: np.ndarray, cf: np.ndarray) -> np.ndarray:
            back = before[base + cb]
            fwd = after[base + cf]
            bdiff = t - rep_b[back]
            fdiff = rep_f[fwd] - t
            f_ok = fdiff <= tol
            k = np.where((bdiff <= tol) & (~f_ok | (bdiff <= fdiff)), back, np.where(f_ok, fwd, -1))
            with np.errstate(invalid="ignore"):  # fresh: a real sample no more than the tolerance before
                ok = ~np.isnan(value[k]) & (t - st[k] <= tol)
            return np.where(ok, k + lo, -1)

        chosen = take((i_codes + 1) * width, ts, col_b, col_f)
        if have[0].any():  # the global series, for predictions without a fresh value of their own instance
            rest = np.flatnonzero(chosen < 0)
            chosen[rest] = take(0, ts[rest], col_b[rest], col_f[rest])
        return chosen

    def _take(self, chosen: np.ndarray, rows: np.ndarray, t: np.ndarray, lo: int, hi: int, tol: int,
              only_missing: bool) -> None:  # fmt: skip
        """Give ``rows`` the nearest sample of ``[lo, hi)`` if it is real and fresh: a real sample no more
        than the tolerance before the prediction (an unknown sample time is not fresh)."""
        s = self.samples
        k = _nearest(s.rep[lo:hi], t, tol)
        has = k >= 0
        k = np.where(has, k + lo, 0)
        v = s.value[k]
        st = s.st[k]
        with np.errstate(invalid="ignore"):
            fresh = has & ~np.isnan(v) & ~np.isnan(st) & (t - st <= tol)
        chosen[rows[fresh]] = k[fresh]


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

    The output is sorted by ``timestamp``, ``model`` and ``instance`` (stable).

    :param queries: the resource names to join (columns ``res_<name>`` and ``age_<name>`` each).
    """
    return _join_frame(_Join(predictions, resources, tolerance, queries), queries)


def _join_frame(join: _Join, queries: list[str]) -> pd.DataFrame:
    out = join.frame
    ts = join.ts
    missing = np.zeros((len(out), len(queries)), dtype=bool)
    columns: dict[str, np.ndarray] = {}
    value = np.append(join.samples.value, np.nan)  # index -1: no sample
    st = np.append(join.samples.st, np.nan)
    join.value_arrays = []
    for j, name in enumerate(queries):
        k = join.sample_index[j]
        has = k >= 0
        values = value[k]  # a sample whose value is NaN is never chosen
        join.value_arrays.append(values)
        columns[f"{VALUE_PREFIX}{name}"] = values
        columns[f"{AGE_PREFIX}{name}"] = (ts - st[k]) / 1e9
        missing[:, j] = ~has
    columns["missing_resources"] = _join_names(missing, queries)
    return _with_columns(out, columns)


def _with_columns(frame: pd.DataFrame, columns: dict[str, np.ndarray]) -> pd.DataFrame:
    """``frame`` with ``columns`` added (or replaced) in order, without copying the existing columns."""
    if frame.columns.intersection(list(columns)).empty and frame.columns.is_unique:
        # setitem would copy every new array; a frame built on them with copy=False and a concat do not
        extra = pd.DataFrame(columns, index=frame.index, copy=False)
        return pd.concat([frame, extra], axis=1)
    out = frame.copy(deep=False)
    for name, values in columns.items():
        out[name] = values
    return out


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
    join = _Join(predictions, resources, thresholds.correlation.tolerance, queries)
    joined = _join_frame(join, queries)

    def slow_seconds(model: str) -> float:
        return thresholds.evaluation.for_model(model).slow_prediction_seconds

    # per-model thresholds through the model codes, not a map over every row's string
    per_model = np.array([slow_seconds(m) for m in join.models], dtype="float64")
    slow_threshold = per_model[join.model_codes] if len(per_model) else np.zeros(len(joined))
    slow = _is_slow(joined["prediction_time"], slow_threshold)
    columns: dict[str, np.ndarray] = {"slow_threshold": slow_threshold, "slow": slow}
    saturated = np.zeros((len(joined), len(limits)), dtype=bool)
    for j, (name, limit) in enumerate(limits.items()):
        flags = joined[f"{VALUE_PREFIX}{name}"].to_numpy() >= limit
        columns[f"{SATURATED_PREFIX}{name}"] = flags
        saturated[:, j] = flags
    columns["saturated_resources"] = _join_names(saturated, list(limits))
    joined = _with_columns(joined, columns)
    return joined, _summarise(joined, thresholds, join)


def summarise(joined: pd.DataFrame, thresholds: ModelwatchConfig) -> pd.DataFrame:
    """One row per model and resource (:data:`CORRELATION_COLUMNS`).

    Counts are over the model's judged predictions (a usable ``prediction_time``). ``coverage`` is the
    share of slow predictions that had a sample of the resource; ``slow_share_saturated`` and
    ``slow_share_unsaturated`` are P(slow | saturated) and P(slow | sampled, not saturated);
    ``relative_risk`` and ``p_value`` (:func:`relative_risk`, :func:`fisher_greater`) compare them.
    ``lift`` (P(saturated | slow) / P(saturated | normal)) and ``spearman`` are descriptive only.
    """
    return _summarise(joined, thresholds, None)


def _summarise(joined: pd.DataFrame, thresholds: ModelwatchConfig, join: _Join | None) -> pd.DataFrame:
    """:func:`summarise`; with ``join`` (the join that made ``joined``, same row order) its model codes
    and sample indices stand in for grouping by model strings and ranking values from scratch."""
    rows = []
    units = {q.name: q.unit for q in thresholds.prometheus.queries}
    limits = thresholds.saturation_thresholds
    if join is not None:
        codes, models = join.model_codes, join.models
    else:
        codes, models = pd.factorize(joined["model"], sort=True, use_na_sentinel=False)
    codes = np.asarray(codes)
    pt_all = joined["prediction_time"].to_numpy(dtype="float64", na_value=np.nan)
    usable_all = usable_prediction_times(joined["prediction_time"])
    slow_all = joined["slow"].to_numpy(dtype=bool)
    # rank codes of every resource's values: the dense rank of the sample each value came from
    value_codes: dict[str, tuple[np.ndarray, np.ndarray] | None] = {}
    queries = join.samples.queries if join is not None else []
    for name in units:
        if name in queries:
            j = queries.index(name)
            lo, hi = join.samples.query_range(j)
            uniq, inv = np.unique(join.samples.value[lo:hi], return_inverse=True)
            k = join.sample_index[j]
            value_codes[name] = (uniq, np.where(k >= 0, inv[np.maximum(k - lo, 0)] if hi > lo else 0, -1))
        else:
            value_codes[name] = None
    if join is not None:
        column_of = dict(zip(queries, join.value_arrays, strict=True))
    else:
        column_of = {name: joined[f"{VALUE_PREFIX}{name}"].to_numpy(dtype="float64") for name in units}
    # stable: each model's rows stay in frame order (small integer codes sort by radix)
    by_model = np.argsort(codes.astype(np.int16) if len(models) < 2**15 else codes, kind="stable")
    model_bounds = np.searchsorted(codes[by_model], np.arange(len(models) + 1))
    for m, model in enumerate(models):
        if pd.isna(model):  # groupby leaves out predictions without a model
            continue
        idx = by_model[model_bounds[m] : model_bounds[m + 1]]
        # predictions without a usable prediction_time are neither slow nor normal
        judged = idx[usable_all[idx]]
        slow = slow_all[judged]
        pt = pt_all[judged]
        n_slow = int(np.count_nonzero(slow))
        pt_ranks = _Ranks(pt)
        for name in units:
            values = column_of[name][judged]
            has = ~np.isnan(values)
            limit = limits.get(name)
            sat = (values >= limit) if limit is not None else np.zeros(len(values), dtype=bool)
            t = two_by_two(slow, has, sat)
            a, b, c, d = t["n_slow_saturated"], t["n_normal_saturated"], t["n_slow_unsaturated"], t["n_normal_unsaturated"]
            n_slow_with, n_norm_with = a + c, b + d
            slow_share = a / n_slow_with if n_slow_with else np.nan
            norm_share = b / n_norm_with if n_norm_with else np.nan
            tested = limit is not None
            all_sampled = bool(has.all())
            vc = value_codes.get(name)
            if vc is not None:
                y_ranks = _Ranks.from_codes(vc[1][judged] if all_sampled else vc[1][judged][has], len(vc[0]))
            else:
                y_ranks = _Ranks(values if all_sampled else values[has])
            rx = pt_ranks.ranks() if all_sampled else pt_ranks.subset(has)
            slow_values = values[slow & has]
            rows.append({
                "model": model, "resource": name, "unit": units[name],
                "threshold": float(limit) if limit is not None else np.nan,
                "n_predictions": len(idx), "n_judged": len(judged), "n_slow": n_slow, "n_normal": len(judged) - n_slow,
                **t,
                "coverage": n_slow_with / n_slow if n_slow else np.nan,
                "slow_share_saturated": a / (a + b) if tested and a + b else np.nan,
                "slow_share_unsaturated": c / (c + d) if tested and c + d else np.nan,
                "relative_risk": relative_risk(a, b, c, d) if tested else np.nan,
                "p_value": fisher_greater(a, b, c, d) if tested else np.nan,
                "slow_saturated_share": slow_share if tested else np.nan,
                "normal_saturated_share": norm_share if tested else np.nan,
                "lift": _lift(slow_share, norm_share) if tested else np.nan,
                "spearman": _spearman_of_ranks(rx, y_ranks.ranks()),
                "slow_value_median": _nan_stat(np.median, slow_values),
                "slow_value_max": _nan_stat(np.max, slow_values),
                "normal_value_median": _nan_stat(np.median, values[~slow & has]),
            })  # fmt: skip
    frame = pd.DataFrame(rows, columns=CORRELATION_COLUMNS)
    return frame.astype({"model": "str", "resource": "str", "unit": "str"})


def two_by_two(slow: np.ndarray, sampled: np.ndarray, saturated: np.ndarray) -> dict[str, int]:
    """The contingency counts of judged predictions: slow/normal x saturated / sampled but not saturated /
    without a sample, from four counts (the rest follow by subtraction)."""
    n_slow, n = int(np.count_nonzero(slow)), len(slow)
    slow_sampled = int(np.count_nonzero(slow & sampled))
    sampled_n = int(np.count_nonzero(sampled))
    sat = saturated & sampled
    slow_sat = int(np.count_nonzero(slow & sat))
    sat_n = int(np.count_nonzero(sat))
    return {
        "n_slow_saturated": slow_sat, "n_normal_saturated": sat_n - slow_sat,
        "n_slow_unsaturated": slow_sampled - slow_sat, "n_normal_unsaturated": sampled_n - sat_n - (slow_sampled - slow_sat),
        "n_slow_unsampled": n_slow - slow_sampled, "n_normal_unsampled": (n - n_slow) - (sampled_n - slow_sampled),
    }  # fmt: skip


class _Ranks:
    """Average ranks (1-based, ties share the mean of their positions, as ``Series.rank()``) of a set of
    values, and of any subset of them, from dense codes: one sort for the set, a ``bincount`` per subset."""

    def __init__(self, values: np.ndarray) -> None:
        if len(values):
            self.uniq, self.codes = np.unique(values, return_inverse=True)
        else:
            self.uniq, self.codes = values, np.zeros(0, dtype=np.intp)
        self._all: np.ndarray | None = None

    @classmethod
    def from_codes(cls, codes: np.ndarray, n_codes: int) -> _Ranks:
        self = cls.__new__(cls)
        self.uniq, self.codes, self._all = np.empty(n_codes), codes, None
        return self

    def ranks(self) -> np.ndarray:
        if self._all is None:
            self._all = _average_ranks(self.codes, len(self.uniq))
        return self._all

    def subset(self, mask: np.ndarray) -> np.ndarray:
        return _average_ranks(self.codes[mask], len(self.uniq))


def _average_ranks(codes: np.ndarray, n_codes: int) -> np.ndarray:
    counts = np.bincount(codes, minlength=n_codes)
    last = np.cumsum(counts)
    return (last - (counts - 1) / 2.0)[codes]


def _spearman_of_ranks(rx: np.ndarray, ry: np.ndarray) -> float:
    if len(rx) < 3:
        return float("nan")
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); NaN with fewer than 3 points or no variance."""
    if len(x) < 3:
        return float("nan")
    x, y = np.asarray(x, dtype="float64"), np.asarray(y, dtype="float64")
    if np.isnan(x).any() or np.isnan(y).any():  # Series.rank() leaves NaN unranked
        rx = pd.Series(x).rank(method="average").to_numpy()
        ry = pd.Series(y).rank(method="average").to_numpy()
    else:
        rx, ry = _Ranks(x).ranks(), _Ranks(y).ranks()
    return _spearman_of_ranks(rx, ry)


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
    if flags.shape[1] <= 16:  # every pattern has a slot: a table lookup instead of sorting the rows
        packed = np.packbits(flags, axis=1, bitorder="little")
        codes = packed[:, 0].astype(np.int64)
        if packed.shape[1] > 1:
            codes |= packed[:, 1].astype(np.int64) << 8
        table = np.empty(1 << flags.shape[1], dtype=object)
        present = np.flatnonzero(np.bincount(codes, minlength=len(table)))
        table[present] = [",".join(n for k, n in enumerate(names) if code >> k & 1) for code in present]
        if _ARROW_STRINGS:  # the column pandas would make of the strings, without converting 1M objects
            import pyarrow as pa

            labels = pa.array(table[present].tolist(), type=pa.large_string())
            index = np.zeros(len(table), dtype=np.int32)
            index[present] = np.arange(len(present), dtype=np.int32)
            return pd.array(pa.DictionaryArray.from_arrays(index[codes], labels).cast(pa.large_string()), dtype="str")
        return table[codes]
    codes = flags.astype(np.int64) @ (1 << np.arange(flags.shape[1], dtype=np.int64))
    uniq, inverse = np.unique(codes, return_inverse=True)
    labels = np.array([",".join(n for k, n in enumerate(names) if code >> k & 1) for code in uniq], dtype=object)
    return labels[inverse]
