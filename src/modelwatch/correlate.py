"""Join predictions to the resource samples at their time, and measure how saturation goes with slowness.

Pure functions on DataFrames: no Airflow, no I/O, so they test in milliseconds and the benchmark
measures exactly what a task runs.

Frames in (as the extractors write them):

- predictions: ``timestamp`` (UTC), ``model``, ``model_version``, ``instance``, ``prediction_time`` (s),
  ``accuracy``, ``loss``, ``run_id``, ``experiment``
- resources: ``timestamp`` (UTC), ``query``, ``instance``, ``labels``, ``value``
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Callable, Generator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from modelwatch.schema import (
    CORRELATION_COLUMNS,
    age_column,
    saturated_column,
    usable_prediction_times,
    value_column,
)
from modelwatch.stats import fisher_greater, relative_risk

if TYPE_CHECKING:
    from modelwatch.config import ModelwatchConfig

#: pandas keeps "str" columns in Arrow: build the name columns there directly
_ARROW_STRINGS = getattr(pd.api.types.pandas_dtype("str"), "storage", None) == "pyarrow"


def slow_flags(predictions: pd.DataFrame, slow_seconds_for: Callable[[str], float]) -> pd.Series:
    """``True`` where a prediction took longer than its model's ``slow_prediction_seconds`` (never for a
    prediction without a usable ``prediction_time``)."""
    codes, models = pd.factorize(predictions["model"], use_na_sentinel=False)
    limits = slow_thresholds(models, np.asarray(codes), slow_seconds_for)
    usable = usable_prediction_times(predictions["prediction_time"])
    return pd.Series(is_slow(predictions["prediction_time"], limits, usable), index=predictions.index)


def slow_thresholds(models: Any, codes: np.ndarray, slow_seconds_for: Callable[[str], float]) -> np.ndarray:
    """Each row's ``slow_prediction_seconds``, looked up once per model and spread through the model codes."""
    per_model = np.array([slow_seconds_for(m) for m in models], dtype="float64")
    return per_model[codes] if len(per_model) else np.zeros(len(codes))


def is_slow(prediction_time: pd.Series, limits: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """The slow rule: a usable ``prediction_time`` (``usable``, :func:`usable_prediction_times`) above the
    row's limit."""
    pt = prediction_time.to_numpy(dtype="float64", na_value=np.nan)
    with np.errstate(invalid="ignore"):
        return (pt > limits) & usable


def is_saturated(values: np.ndarray, limit: float) -> np.ndarray:
    """The saturation rule: a real value at or above the resource's threshold (no sample: never saturated)."""
    with np.errstate(invalid="ignore"):
        return values >= limit


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
        #: per sample, the dense code of its value among its query's sample values (``np.unique``): a
        #: prediction's value code ranks it by a ``bincount``, without sorting the predictions' values
        self.value_code = np.empty(len(value), dtype=np.int32)
        self.n_codes: list[int] = []
        for j in range(len(queries)):
            lo, hi = self.query_range(j)
            uniq, inv = np.unique(value[lo:hi], return_inverse=True)
            self.value_code[lo:hi] = inv
            self.n_codes.append(len(uniq))

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


#: from this many predictions on, :func:`correlate` uses a second thread (when there is a second core)
PARALLEL_ROWS = 200_000
#: predictions per chunk of the join: the lookup's temporaries are a few arrays of this length, whatever the
#: frame's size (the output columns are filled in place, chunk by chunk)
CHUNK_ROWS = 1 << 18


class _Grid:
    """One query's samples tabulated on their step grid (Prometheus evaluates every query_range on its step):
    per instance row and grid slot, the sample at or before / at or after the slot. Looking a prediction up is
    the same answer as :func:`_nearest` per instance and then the global series, without a search."""

    def __init__(self, samples: _Samples, j: int, tol: int) -> None:
        s = self.samples = samples
        lo, hi = self.lo, _ = s.query_range(j)
        rep = s.rep[lo:hi]
        self.t0 = t0 = int(rep.min())
        self.step = step = int(np.gcd.reduce(rep - t0)) or 1
        self.size = size = (int(rep.max()) - t0) // step + 1
        rows, self.width = s.n_inst, size + 2
        width = self.width
        # per instance row, grid slot k at column k + 1 (column 0: before the grid, the last: after it): the
        # sample at or before / at or after the slot (-1: none)
        slot = np.full((rows, width), -1, dtype=np.int64)
        slot[s.inst[lo:hi] + 1, (rep - t0) // step + 1] = np.arange(hi - lo)
        cols = np.broadcast_to(np.arange(width), (rows, width))
        have = slot >= 0
        b_col = np.maximum.accumulate(np.where(have, cols, 0), axis=1)
        f_col = np.minimum.accumulate(np.where(have, cols, width - 1)[:, ::-1], axis=1)[:, ::-1]
        row_base = np.arange(rows)[:, None] * width
        self.before = slot.reshape(-1)[(row_base + b_col).reshape(-1)]
        self.after = slot.reshape(-1)[(row_base + f_col).reshape(-1)]
        self.has_global = bool(have[0].any())
        # sentinels at index -1: no sample is infinitely far and has no value
        self.rep_b = np.append(rep, np.int64(-(2**62)))
        self.rep_f = np.append(rep, np.int64(2**62))
        self.value = np.append(s.value[lo:hi], np.nan)
        self.st = np.append(s.st[lo:hi], np.nan)
        self.tol = tol

    @staticmethod
    def fits(samples: _Samples, j: int, n_predictions: int) -> bool:
        """Whether query ``j``'s centred times tabulate in a table no bigger than a few times its samples (plus
        a bounded share of the predictions: a fine grid is worth it when many predictions look it up)."""
        lo, hi = samples.query_range(j)
        if hi == lo:
            return True
        rep = samples.rep[lo:hi]
        t0 = int(rep.min())
        step = int(np.gcd.reduce(rep - t0)) or 1
        size = (int(rep.max()) - t0) // step + 1
        return samples.n_inst * (size + 2) <= 4 * (hi - lo) + min(4 * n_predictions, 1 << 22) + 4096

    def lookup(self, ts: np.ndarray, inst: np.ndarray) -> np.ndarray:
        """The sample (index into the samples, -1: none) behind each prediction at ``ts`` on instance code
        ``inst``: its own instance's nearest real and fresh sample, else the global series'."""
        d = ts - self.t0
        kb = d // self.step
        kf = kb + (d % self.step != 0)
        col_b = np.clip(kb, -1, self.size - 1) + 1
        col_f = np.clip(kf, 0, self.size) + 1
        chosen = self._take((inst.astype(np.int64) + 1) * self.width, ts, col_b, col_f)
        if self.has_global:  # the global series, for predictions without a fresh value of their own instance
            rest = np.flatnonzero(chosen < 0)
            if len(rest):
                chosen[rest] = self._take(0, ts[rest], col_b[rest], col_f[rest])
        return chosen

    def _take(self, base: np.ndarray | int, t: np.ndarray, cb: np.ndarray, cf: np.ndarray) -> np.ndarray:
        tol = self.tol
        # gathers through take: no index conversion; -1 (none) wraps to the sentinels at the end
        back = self.before.take(base + cb)
        fwd = self.after.take(base + cf)
        bdiff = t - self.rep_b.take(back, mode="wrap")
        fdiff = self.rep_f.take(fwd, mode="wrap") - t
        f_ok = fdiff <= tol
        k = np.where((bdiff <= tol) & (~f_ok | (bdiff <= fdiff)), back, np.where(f_ok, fwd, -1))
        with np.errstate(invalid="ignore"):  # fresh: a real sample no more than the tolerance before
            ok = ~np.isnan(self.value.take(k, mode="wrap")) & (t - self.st.take(k, mode="wrap") <= tol)
        return np.where(ok, k + self.lo, -1)


class _Join:
    """The join :func:`join_resources` computes, with the codes :func:`correlate` reuses: the sorted frame,
    model and instance codes, and per query (:meth:`columns`) the value, age and value code at each
    prediction, looked up chunk by chunk."""

    def __init__(self, predictions: pd.DataFrame, resources: pd.DataFrame, tolerance: timedelta,
                 queries: list[str]) -> None:  # fmt: skip
        ts = _as_ns(predictions["timestamp"]) if len(predictions) else np.zeros(0, np.int64)
        if len(predictions) and pd.isna(predictions["timestamp"]).any():
            raise ValueError("Merge keys contain null values on left side")
        m_codes, m_uniques = pd.factorize(predictions["model"], sort=True, use_na_sentinel=False)
        i_codes, i_uniques = pd.factorize(predictions["instance"], sort=True, use_na_sentinel=False)
        m_codes, i_codes = _small_codes(m_codes, len(m_uniques)), _small_codes(i_codes, len(i_uniques))
        # the frame sorted by timestamp, model and instance (stable), as sort_values orders them; the
        # extractors write predictions in that order already, so usually nothing is copied
        if _is_sorted(ts, m_codes, i_codes):
            out = predictions.reset_index(drop=True)
        else:
            order = np.lexsort((i_codes, m_codes, ts))
            out = predictions.take(order).reset_index(drop=True)
            ts, m_codes, i_codes = ts[order], m_codes[order], i_codes[order]
            del order
        self.frame, self.n = out, len(out)
        # the times in ns, chunk by chunk from the sorted frame's own buffer when it holds datetimes (a 10M-row
        # frame's 80 MB copy is not kept); ``ts`` itself otherwise
        self._raw = _datetime_ticks(out["timestamp"]) if len(out) else None
        self.ts: np.ndarray | None = ts if self._raw is None else None
        del ts
        self.model_codes, self.models = m_codes, pd.Index(m_uniques)
        self.instance_codes = i_codes
        instances = pd.Index(i_uniques)
        self.n_instances = len(instances)
        self.samples = _Samples(resources, queries, instances)
        self.tol = int(tolerance.total_seconds() * 1e9)
        s = self.samples
        # index -1: no sample (no value, no sample time, no code)
        self._value = np.append(s.value, np.nan)
        self._st = np.append(s.st, np.nan)
        self._code = np.append(s.value_code, np.int32(-1))
        self._by_inst: tuple[np.ndarray, np.ndarray] | None = None

    def columns(self, j: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Query number ``j`` at every prediction: its value (NaN: no real, fresh sample within the
        tolerance), the age of the sample behind it in seconds, and the value's dense code among the query's
        sample values (:attr:`_Samples.value_code`, -1: none)."""
        n = self.n
        values, ages, codes = np.empty(n), np.empty(n), np.empty(n, dtype=np.int32)
        s = self.samples
        lo, hi = s.query_range(j)
        if hi == lo:
            values.fill(np.nan)
            ages.fill(np.nan)
            codes.fill(-1)
            return values, ages, codes
        grid = _Grid(s, j, self.tol) if s.distinct and _Grid.fits(s, j, n) else None
        searched = self._search(j) if grid is None else None
        for a in range(0, n, CHUNK_ROWS):
            b = min(a + CHUNK_ROWS, n)
            t = self.times(a, b)
            k = grid.lookup(t, self.instance_codes[a:b]) if grid is not None else searched[a:b]
            np.take(self._value, k, mode="wrap", out=values[a:b])
            np.take(self._code, k, mode="wrap", out=codes[a:b])
            age = ages[a:b]
            np.subtract(t, self._st.take(k, mode="wrap"), out=age)
            np.divide(age, 1e9, out=age)
        return values, ages, codes

    def times(self, a: int, b: int) -> np.ndarray:
        """The prediction times of rows ``[a, b)``, int64 ns."""
        if self.ts is not None:
            return self.ts[a:b]
        ticks, factor = self._raw  # type: ignore[misc]
        return ticks[a:b] * factor if factor != 1 else ticks[a:b]

    def _search(self, j: int) -> np.ndarray:
        """The sample behind each prediction's value of query number ``j`` by binary search in each instance's
        series (then the global one), when the query's times are not on a grid small enough to tabulate."""
        s, ts = self.samples, self.times(0, self.n)
        chosen = np.full(len(ts), -1, dtype=np.int64)
        if self._by_inst is None:
            by_inst = np.argsort(self.instance_codes, kind="stable")
            bounds = np.searchsorted(self.instance_codes[by_inst], np.arange(self.n_instances + 1))
            self._by_inst = by_inst, bounds
        by_inst, inst_bounds = self._by_inst
        for i in range(self.n_instances):
            lo, hi = s.segment(j, i)
            if lo == hi:
                continue
            rows = by_inst[inst_bounds[i] : inst_bounds[i + 1]]
            self._take(chosen, rows, ts[rows], lo, hi)
        lo, hi = s.segment(j, -1)
        if lo < hi:
            rows = np.flatnonzero(chosen < 0)
            self._take(chosen, rows, ts[rows], lo, hi)
        return chosen

    def _take(self, chosen: np.ndarray, rows: np.ndarray, t: np.ndarray, lo: int, hi: int) -> None:
        """Give ``rows`` the nearest sample of ``[lo, hi)`` if it is real and fresh: a real sample no more
        than the tolerance before the prediction (an unknown sample time is not fresh)."""
        s, tol = self.samples, self.tol
        k = _nearest(s.rep[lo:hi], t, tol)
        has = k >= 0
        k = np.where(has, k + lo, 0)
        v = s.value[k]
        st = s.st[k]
        with np.errstate(invalid="ignore"):
            fresh = has & ~np.isnan(v) & ~np.isnan(st) & (t - st <= tol)
        chosen[rows[fresh]] = k[fresh]


def _small_codes(codes: np.ndarray, n: int) -> np.ndarray:
    """Factorize codes in the smallest integer type that holds them (a 10M-row frame's codes in 10 MB, not 80)."""
    for dtype in (np.int8, np.int16, np.int32):
        if n < np.iinfo(dtype).max:
            return codes.astype(dtype)
    return np.asarray(codes)


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
    join = _Join(predictions, resources, tolerance, queries)
    columns: dict[str, np.ndarray] = {}
    for j, name in enumerate(queries):
        values, ages, _ = join.columns(j)
        columns[value_column(name)] = values
        columns[age_column(name)] = ages
    columns["missing_resources"] = _missing_names(columns, queries, len(join.frame))
    return _with_columns(join.frame, columns)


def _missing_names(columns: dict[str, np.ndarray], queries: list[str], n: int,
                   applies: dict[int, np.ndarray] | None = None) -> np.ndarray:  # fmt: skip
    """``missing_resources``: the queries without a value (a sample whose value is NaN is never chosen, so
    a NaN value is exactly a missing sample), leaving out a per-model query on other models' rows
    (``applies``: query number -> the rows it applies to)."""
    values = [columns[value_column(name)] for name in queries]
    applies = applies or {}

    def missing(k: int, rows: slice) -> np.ndarray:
        gap = np.isnan(values[k][rows])
        return gap & applies[k][rows] if k in applies else gap

    return _join_names(missing, queries, n)


def model_scopes(thresholds: ModelwatchConfig) -> dict[str, str]:
    """Query name -> the model it is read for, for the per-model queries (``QueryConfig.model``: a serving
    preset's per-model metric). Such a query joins that model's predictions only and judges no other model."""
    return {q.name: q.model for q in thresholds.resource_queries if getattr(q, "model", None)}


def _scope_rows(scopes: dict[str, str], queries: list[str], models: pd.Index, model_codes: np.ndarray) -> dict[int, np.ndarray]:
    """Query number -> the rows (model codes in frame order) of the model a per-model query is read for."""
    out = {}
    for j, name in enumerate(queries):
        if name in scopes:
            code = models.get_indexer([scopes[name]])[0]  # -1: the model has no prediction: no row applies
            out[j] = model_codes == code if code >= 0 else np.zeros(len(model_codes), dtype=bool)
    return out


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

    The work goes query by query (and each query's lookup chunk by chunk, :data:`CHUNK_ROWS`): besides the
    output columns, only one query's value codes and a chunk's temporaries are alive at a time.
    """
    queries = [q.name for q in thresholds.resource_queries]
    limits = thresholds.saturation_thresholds
    join = _Join(predictions, resources, thresholds.correlation.tolerance, queries)
    frame = join.frame
    scopes = model_scopes(thresholds)
    applies = _scope_rows(scopes, queries, pd.Index(join.models), np.asarray(join.model_codes))

    # per-model thresholds through the model codes, not a map over every row's string
    slow_threshold = slow_thresholds(
        join.models, join.model_codes, lambda m: thresholds.evaluation.for_model(m).slow_prediction_seconds
    )
    usable = usable_prediction_times(frame["prediction_time"])
    slow = is_slow(frame["prediction_time"], slow_threshold, usable)
    units = {q.name: q.unit for q in thresholds.resource_queries}
    columns: dict[str, np.ndarray] = {}
    cells: dict[tuple[int, str], dict[str, object]] = {}
    with _worker(len(frame)) as pool:
        groups = _model_groups(frame, join.model_codes, join.models, slow, usable, pool)
        # the next query's lookup runs beside this query's statistics (numpy releases the GIL)
        pending = pool.submit(join.columns, 0) if queries else None
        for j, name in enumerate(queries):
            values, ages, codes = pending.result()  # type: ignore[union-attr]
            # (the future holding this query's codes is dropped with it)
            pending = pool.submit(join.columns, j + 1) if j + 1 < len(queries) else None
            if j in applies:  # a per-model query: no value on another model's predictions
                values, ages = np.where(applies[j], values, np.nan), np.where(applies[j], ages, np.nan)
            columns[value_column(name)] = values
            columns[age_column(name)] = ages
            n_codes = join.samples.n_codes[j]
            for g in groups:
                if name in scopes and g.model != scopes[name]:
                    continue
                limit = limits.get(name)
                cells[(g.code, name)] = _cell(g, name, units[name], limit, values, (codes, n_codes))
            del codes
    # model by model, resources in config order
    order = [(g.code, name) for g in groups for name in units if (g.code, name) in cells]
    del groups, join  # the lookup and the per-model ranks are done: free them before the name columns
    columns["missing_resources"] = _missing_names(columns, queries, len(frame), applies)
    columns["slow_threshold"] = slow_threshold
    columns["slow"] = slow
    saturated = []
    for name, limit in limits.items():
        flags = is_saturated(columns[value_column(name)], limit)
        columns[saturated_column(name)] = flags
        saturated.append(flags)
    columns["saturated_resources"] = _join_names(lambda k, rows: saturated[k][rows], list(limits), len(frame))
    joined = _with_columns(frame, columns)
    return joined, _summary_frame([cells[key] for key in order])


def summarise(joined: pd.DataFrame, thresholds: ModelwatchConfig) -> pd.DataFrame:
    """One row per model and resource (:data:`CORRELATION_COLUMNS`).

    Counts are over the model's judged predictions (a usable ``prediction_time``). ``coverage`` is the
    share of slow predictions that had a sample of the resource; ``slow_share_saturated`` and
    ``slow_share_unsaturated`` are P(slow | saturated) and P(slow | sampled, not saturated);
    ``relative_risk`` and ``p_value`` (:func:`relative_risk`, :func:`fisher_greater`) compare them.
    ``lift`` (P(saturated | slow) / P(saturated | normal)) and ``spearman`` are descriptive only.
    """
    units = {q.name: q.unit for q in thresholds.resource_queries}
    limits = thresholds.saturation_thresholds
    codes, models = pd.factorize(joined["model"], sort=True, use_na_sentinel=False)
    usable = usable_prediction_times(joined["prediction_time"])
    groups = _model_groups(joined, np.asarray(codes), pd.Index(models), joined["slow"].to_numpy(dtype=bool), usable)
    column_of = {name: joined[value_column(name)].to_numpy(dtype="float64") for name in units}
    scopes = model_scopes(thresholds)
    return _summary_frame([
        _cell(g, name, unit, limits.get(name), column_of[name], None) for g in groups for name, unit in units.items()
        if name not in scopes or g.model == scopes[name]
    ])  # fmt: skip


class _Group:
    """One model's judged predictions (a usable ``prediction_time``), in frame order: the rows, their slow
    flags and the ranks of their prediction times."""

    def __init__(self, code: int, model: object, n_predictions: int, judged: np.ndarray, slow: np.ndarray,
                 pt: np.ndarray) -> None:  # fmt: skip
        self.code, self.model, self.n_predictions = code, model, n_predictions
        self.judged, self.slow = judged, slow
        self.n_slow = int(np.count_nonzero(slow))
        self.pt_ranks = _Ranks(pt, compact=True)
        self.pt_ranks.ranks()


@contextlib.contextmanager
def _worker(n_rows: int) -> Generator[Executor, None, None]:
    """A second thread for large frames on a machine with a second core (numpy's sorts, gathers and
    arithmetic release the GIL); small frames run inline."""
    if n_rows >= PARALLEL_ROWS and (os.cpu_count() or 1) > 1:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="correlate") as pool:
            yield pool
    else:
        yield _Inline()


class _Inline(Executor):
    """An executor that runs each call at once, in the caller's thread."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the caller through the future, as a pool does
            future.set_exception(exc)
        return future


def _model_groups(frame: pd.DataFrame, codes: np.ndarray, models: pd.Index, slow_all: np.ndarray,
                  usable_all: np.ndarray, pool: Executor | None = None) -> list[_Group]:  # fmt: skip
    pt_all = frame["prediction_time"].to_numpy(dtype="float64", na_value=np.nan)
    if len(models) <= 16:  # a scan per model: no frame-long sort order held

        def rows_of(m: int) -> np.ndarray:
            return np.flatnonzero(codes == m)
    else:
        # stable: each model's rows stay in frame order (small integer codes sort by radix)
        by_model = np.argsort(codes.astype(np.int16) if len(models) < 2**15 else codes, kind="stable")
        model_bounds = np.searchsorted(codes[by_model], np.arange(len(models) + 1))

        def rows_of(m: int) -> np.ndarray:
            return by_model[model_bounds[m] : model_bounds[m + 1]]

    def group(m: int, model: object) -> _Group:
        idx = rows_of(m)
        # predictions without a usable prediction_time are neither slow nor normal
        judged = idx[usable_all.take(idx)].astype(np.int32 if len(codes) < 2**31 else np.intp)
        return _Group(m, model, len(idx), judged, slow_all.take(judged), pt_all.take(judged))

    # groupby leaves out predictions without a model; every other thread's group sorts beside this one
    pool = pool or _Inline()
    wanted = [(m, model) for m, model in enumerate(models) if not pd.isna(model)]
    futures = [pool.submit(group, m, model) for m, model in wanted[1::2]]
    mine = [group(m, model) for m, model in wanted[::2]]
    others = [f.result() for f in futures]
    return [g for pair in itertools.zip_longest(mine, others) for g in pair if g is not None]


def _cell(g: _Group, name: str, unit: str, limit: float | None, column: np.ndarray,
          value_codes: tuple[np.ndarray, int] | None) -> dict[str, object]:  # fmt: skip
    """The summary row of one model and resource. ``value_codes``: the dense codes of ``column``'s values
    and their count (ranks from a ``bincount`` instead of a sort), or ``None`` to rank the values."""
    judged, slow, n_slow = g.judged, g.slow, g.n_slow
    values = column.take(judged)
    has = ~np.isnan(values)
    sat = is_saturated(values, limit) if limit is not None else np.zeros(len(values), dtype=bool)
    t = two_by_two(slow, has, sat)
    a, b, c, d = t["n_slow_saturated"], t["n_normal_saturated"], t["n_slow_unsaturated"], t["n_normal_unsaturated"]
    n_slow_with, n_norm_with = a + c, b + d
    slow_share = a / n_slow_with if n_slow_with else np.nan
    norm_share = b / n_norm_with if n_norm_with else np.nan
    tested = limit is not None
    all_sampled = bool(has.all())
    if value_codes is not None:
        codes = value_codes[0].take(judged)
        y_ranks = _Ranks.from_codes(codes if all_sampled else codes[has], value_codes[1])
        del codes
    else:
        y_ranks = _Ranks(values if all_sampled else values[has])
    rx = g.pt_ranks.ranks() if all_sampled else g.pt_ranks.subset(has)
    rho = _spearman_of_ranks(rx, y_ranks.ranks())
    del rx, y_ranks
    slow_values = values[slow & has]
    normal_values = values[~slow & has]
    del values
    return {
        "model": g.model, "resource": name, "unit": unit,
        "threshold": float(limit) if limit is not None else np.nan,
        "n_predictions": g.n_predictions, "n_judged": len(judged), "n_slow": n_slow, "n_normal": len(judged) - n_slow,
        **t,
        "coverage": n_slow_with / n_slow if n_slow else np.nan,
        "slow_share_saturated": a / (a + b) if tested and a + b else np.nan,
        "slow_share_unsaturated": c / (c + d) if tested and c + d else np.nan,
        "relative_risk": relative_risk(a, b, c, d) if tested else np.nan,
        "p_value": fisher_greater(a, b, c, d) if tested else np.nan,
        "slow_saturated_share": slow_share if tested else np.nan,
        "normal_saturated_share": norm_share if tested else np.nan,
        "lift": _lift(slow_share, norm_share) if tested else np.nan,
        "spearman": rho,
        "slow_value_median": _nan_stat(_median, slow_values),
        "slow_value_max": _nan_stat(np.max, slow_values),
        "normal_value_median": _nan_stat(_median, normal_values),
    }  # fmt: skip


def _median(values: np.ndarray) -> float:
    """``np.median`` of an array the caller no longer needs (partitioned in place, not copied)."""
    return float(np.median(values, overwrite_input=True))


def _summary_frame(rows: list[dict[str, object]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(CORRELATION_COLUMNS))
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

    def __init__(self, values: np.ndarray, compact: bool = False) -> None:
        """``compact``: keep the ranks of the whole set as float32 when that holds them exactly (halves up
        to 2**23), for a set that lives long; :meth:`ranks` still answers float64."""
        self.codes, self.n_codes = _dense_codes(values)
        self._all: np.ndarray | None = None
        self._compact = compact and len(values) < 2**23

    @classmethod
    def from_codes(cls, codes: np.ndarray, n_codes: int) -> _Ranks:
        self = cls.__new__(cls)
        self.n_codes, self.codes, self._all, self._compact = n_codes, codes, None, False
        return self

    def ranks(self) -> np.ndarray:
        if self._all is None:
            ranks = _average_ranks(self.codes, self.n_codes)
            self._all = ranks.astype(np.float32) if self._compact else ranks
        return self._all.astype(np.float64, copy=False)

    def subset(self, mask: np.ndarray) -> np.ndarray:
        return _average_ranks(self.codes[mask], self.n_codes)


def _dense_codes(values: np.ndarray) -> tuple[np.ndarray, int]:
    """The code of each value among the distinct values in ascending order (``np.unique``'s inverse, for
    values without NaN) and how many there are, as int32 when that holds them: one sort, no more."""
    n = len(values)
    if n == 0:
        return np.zeros(0, dtype=np.int32), 0
    order = np.argsort(values)
    ordered = values.take(order)
    new = np.empty(n, dtype=bool)
    new[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    del ordered
    codes = np.empty(n, dtype=np.int32 if n < 2**31 else np.intp)
    codes[order] = np.cumsum(new, dtype=codes.dtype) - 1
    return codes, int(np.count_nonzero(new))


def _average_ranks(codes: np.ndarray, n_codes: int) -> np.ndarray:
    counts = np.bincount(codes, minlength=n_codes)
    last = np.cumsum(counts)
    return (last - (counts - 1) / 2.0).take(codes)


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


def _datetime_ticks(column: pd.Series) -> tuple[np.ndarray, int] | None:
    """The int64 ticks of a datetime column (a view of its buffer) and the factor to ns, or ``None`` when
    the column holds something else (:func:`_as_ns` converts it then)."""
    dtype = column.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        unit = dtype.unit
    elif isinstance(dtype, np.dtype) and dtype.kind == "M":
        unit = np.datetime_data(dtype)[0]
    else:
        return None
    factor = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}.get(unit)
    return (column.array.asi8, factor) if factor is not None else None


def _as_ns(ts: pd.Series) -> np.ndarray:
    return pd.to_datetime(ts, utc=True).dt.as_unit("ns").astype("int64").to_numpy()


def _join_names(flag: Callable[[int, slice], np.ndarray], names: list[str], n: int) -> np.ndarray:
    """Comma-joined names of the set flags per row (``flag(k, rows)``: name number ``k``'s boolean flags of
    ``rows``, asked chunk by chunk), vectorised over distinct flag patterns."""
    if not names or n == 0:
        return np.full(n, "", dtype=object)
    chunks = [slice(a, min(a + CHUNK_ROWS, n)) for a in range(0, n, CHUNK_ROWS)]
    if len(names) > 16:
        columns = [np.concatenate([flag(k, rows) for rows in chunks]) for k in range(len(names))]
        flags = np.column_stack(columns)
        codes = flags.astype(np.int64) @ (1 << np.arange(len(names), dtype=np.int64))
        uniq, inverse = np.unique(codes, return_inverse=True)
        labels = np.array([_names_of(code, names) for code in uniq], dtype=object)
        return labels[inverse]
    # every pattern has a slot: a table lookup instead of sorting the rows
    codes = np.empty(n, dtype=np.uint16)
    table = np.empty(1 << len(names), dtype=object)
    seen = np.zeros(len(table), dtype=bool)
    for rows in chunks:
        part = codes[rows]
        part.fill(0)
        for k in range(len(names)):
            part |= flag(k, rows).astype(np.uint16) << k
        seen[part] = True
    present = np.flatnonzero(seen)
    table[present] = [_names_of(code, names) for code in present]
    if not _ARROW_STRINGS:
        return table[codes]
    # the column pandas would make of the strings, without converting millions of objects
    import pyarrow as pa

    labels = pa.array(table[present].tolist(), type=pa.large_string())
    index = np.zeros(len(table), dtype=np.int8 if len(present) < 128 else np.int32)
    index[present] = np.arange(len(present), dtype=index.dtype)
    indices = np.empty(n, dtype=index.dtype)
    for rows in chunks:
        np.take(index, codes[rows], out=indices[rows])
    del codes
    return pd.array(pa.DictionaryArray.from_arrays(indices, labels).cast(pa.large_string()), dtype="str")


def _names_of(code: int, names: list[str]) -> str:
    """The names whose bit is set in ``code``, comma-joined."""
    return ",".join(name for k, name in enumerate(names) if code >> k & 1)
