"""What each stage's frame is: its columns (each name defined here once) and their Arrow types.

The data path runs one way, each stage writing one dataset of the lake that the next one reads:

    extract  -> resources, predictions
    correlate -> joined, correlation
    evaluate  -> verdicts

The lake checks every frame against its declared schema when it is written and when it is read
(:func:`conform`), so a stage that drifts (a renamed column, a number arriving as text, an all-null
column Arrow would store as type ``null``) fails with the dataset and column named, instead of leaving
a partition that Athena, DuckDB or Spark read differently from its neighbours.

No heavy import at module level: :mod:`modelwatch.storage` imports this module when a DAG is parsed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from modelwatch.errors import ModelwatchError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

# Logical types, mapped to Arrow by :func:`arrow_type`.
TIMESTAMP = "timestamp"  # timestamp[ms, tz=UTC]: what Athena, DuckDB and Spark all read alike
STRING = "string"
FLOAT = "float"
INT = "int"
BOOL = "bool"

# -- resources (extract) ------------------------------------------------------------------------------
#: Columns of a Prometheus matrix read into a frame.
MATRIX_COLUMNS = ("timestamp", "query", "instance", "labels", "value")
#: The ``resources`` dataset: the matrix columns, then ``sample_time``, the newest real sample behind the
#: value (NaT when Prometheus could not say), and ``window_seconds``, the range the value averages over
#: (``[1m]`` of a rate: 60; a plain gauge: 0).
RESOURCE_COLUMNS = (*MATRIX_COLUMNS, "sample_time", "window_seconds")

# -- predictions (extract) ----------------------------------------------------------------------------
#: Metric columns of a prediction (MLflow metric keys of the same names).
METRIC_KEYS = ("prediction_time", "accuracy", "loss")
#: The ``predictions`` dataset, then the values a team logs beside them (``mlflow.logged``), one column each:
#: ``metric_<key>`` for an MLflow metric (a number), ``param_<key>`` for a param of the run (text).
PREDICTION_COLUMNS = ("timestamp", "model", "model_version", "instance", *METRIC_KEYS, "run_id", "experiment")
LOGGED_METRIC_PREFIX = "metric_"
LOGGED_PARAM_PREFIX = "param_"

# -- joined and correlation (correlate) ---------------------------------------------------------------
#: prefix of the per-resource value columns in the joined frame (``res_cpu``)
VALUE_PREFIX = "res_"
#: prefix of the age of the real sample behind each joined value, seconds (``age_cpu``: prediction time
#: minus sample time; negative when the sample is after the prediction)
AGE_PREFIX = "age_"
#: prefix of the per-resource saturation flags (``sat_cpu``), for resources with a threshold
SATURATED_PREFIX = "sat_"
#: The ``joined`` dataset: :data:`PREDICTION_COLUMNS`, then ``res_<q>``/``age_<q>`` per query, then these,
#: then ``sat_<q>`` per query with a threshold, then ``saturated_resources``.
JOINED_TAIL = ("missing_resources", "slow_threshold", "slow")
#: The ``correlation`` dataset: one row per model and resource, the 2x2 table of the judged predictions
#: (slow/normal x saturated/not saturated among those with a sample) plus the unsampled ones, the effect
#: size and test, and descriptive columns (lift, Spearman, values at slow predictions).
CORRELATION_COLUMNS = (
    "model", "resource", "unit", "threshold", "n_predictions", "n_judged", "n_slow", "n_normal",
    "n_slow_saturated", "n_normal_saturated", "n_slow_unsaturated", "n_normal_unsaturated",
    "n_slow_unsampled", "n_normal_unsampled", "coverage", "slow_share_saturated", "slow_share_unsaturated",
    "relative_risk", "p_value", "slow_saturated_share", "normal_saturated_share", "lift", "spearman",
    "slow_value_median", "slow_value_max", "normal_value_median",
)  # fmt: skip

# -- verdicts (evaluate) ------------------------------------------------------------------------------
#: The ``verdicts`` dataset: one row per model (:meth:`modelwatch.verdict.ModelVerdict.to_record`).
#: ``relative_risk``, ``p_value`` and ``coverage`` are those of the strongest explanation (smallest
#: adjusted p); ``evidence`` is every tested resource's evidence as JSON, so a row restores the whole verdict.
VERDICT_COLUMNS = (
    "model", "verdict", "reason", "window_start", "window_end", "model_versions", "n_predictions", "n_slow",
    "slow_share", "slow_threshold_seconds", "slow_instances", "n_slow_unsampled", "saturated_resources",
    "relative_risk", "p_value", "coverage", "resources_without_data", "evidence_partial", "incident_start",
    "incident_end", "quality", "quality_reason", "quality_attribution", "drift", "drift_reason", "evidence",
)  # fmt: skip
#: The ``drift`` dataset: one row per model and compared value (:class:`modelwatch.verdict.DriftEvidence`);
#: ``role`` is ``input`` or ``output`` for a value a team logs, empty for the service's own columns.
DRIFT_COLUMNS = (
    "model", "window_start", "window_end", "value", "role", "kind", "outcome", "n_window", "n_reference",
    "psi", "psi_threshold", "statistic", "p_value", "p_adjusted", "test", "explanation",
)  # fmt: skip

_TYPES: dict[str, dict[str, str]] = {
    "resources": {
        "timestamp": TIMESTAMP, "query": STRING, "instance": STRING, "labels": STRING, "value": FLOAT,
        "sample_time": TIMESTAMP, "window_seconds": FLOAT,
    },
    "predictions": {
        "timestamp": TIMESTAMP, "model": STRING, "model_version": STRING, "instance": STRING,
        **dict.fromkeys(METRIC_KEYS, FLOAT), "run_id": STRING, "experiment": STRING,
    },
    "correlation": {
        "model": STRING, "resource": STRING, "unit": STRING, "threshold": FLOAT,
        **{c: INT for c in CORRELATION_COLUMNS if c.startswith("n_")},
        **{c: FLOAT for c in CORRELATION_COLUMNS[14:]},
    },
    "drift": {
        **dict.fromkeys(DRIFT_COLUMNS, STRING), "n_window": INT, "n_reference": INT,
        **dict.fromkeys(("psi", "psi_threshold", "statistic", "p_value", "p_adjusted"), FLOAT),
    },
    "verdicts": {
        **dict.fromkeys(VERDICT_COLUMNS, STRING),
        **dict.fromkeys(("n_predictions", "n_slow", "n_slow_unsampled"), INT),
        **dict.fromkeys(("slow_share", "slow_threshold_seconds", "relative_risk", "p_value", "coverage"), FLOAT),
    },
}  # fmt: skip
_LOGGED_PREFIXES = {LOGGED_METRIC_PREFIX: FLOAT, LOGGED_PARAM_PREFIX: STRING}
_JOINED_TAIL_TYPES = {"missing_resources": STRING, "slow_threshold": FLOAT, "slow": BOOL, "saturated_resources": STRING}
#: Text columns added to a dataset after partitions of it were first stored: a partition written before
#: reads them as empty text (nothing was recorded then), instead of failing on a missing column.
ADDED_LATER: dict[str, tuple[str, ...]] = {"verdicts": ("evidence_partial",), "drift": ("role",)}
#: The datasets with a declared frame schema (``alerts`` holds JSON documents only).
FRAME_DATASETS = ("resources", "predictions", "joined", "correlation", "verdicts", "drift")


class SchemaError(ModelwatchError):
    """A frame does not have its dataset's declared columns or types."""


def logged_column(source: str, key: str) -> str:
    """The predictions' column of a value a team logs: ``source`` is ``metric`` or ``param``, ``key`` the
    MLflow key (characters other than letters, digits and ``_`` become ``_``, so every engine reads the name)."""
    import re

    prefix = {"metric": LOGGED_METRIC_PREFIX, "param": LOGGED_PARAM_PREFIX}[source]
    return prefix + re.sub(r"[^A-Za-z0-9_]", "_", key)


def logged_types(columns: Iterable[str]) -> dict[str, str]:
    """The logged-value columns among ``columns`` and their types, in their order."""
    return {c: t for c in columns for prefix, t in _LOGGED_PREFIXES.items() if c.startswith(prefix)}


def value_column(query: str) -> str:
    """The joined frame's column of ``query``'s value at each prediction."""
    return f"{VALUE_PREFIX}{query}"


def age_column(query: str) -> str:
    """The joined frame's column of the age of the sample behind :func:`value_column`."""
    return f"{AGE_PREFIX}{query}"


def saturated_column(query: str) -> str:
    """The joined frame's saturation flag of ``query`` (queries with a threshold only)."""
    return f"{SATURATED_PREFIX}{query}"


def joined_types(queries: Iterable[str], saturated: Iterable[str], logged: Iterable[str] = ()) -> dict[str, str]:
    """The ``joined`` dataset's columns and logical types for these queries (``saturated``: those with a
    saturation threshold) and logged-value columns, in order."""
    queries, saturated = list(queries), list(saturated)
    return {
        **_TYPES["predictions"],
        **logged_types(logged),
        **{c: FLOAT for q in queries for c in (value_column(q), age_column(q))},
        **{c: _JOINED_TAIL_TYPES[c] for c in JOINED_TAIL},
        **{saturated_column(q): BOOL for q in saturated},
        "saturated_resources": STRING,
    }


def types_of(dataset: str, columns: Iterable[str] = ()) -> dict[str, str]:
    """``dataset``'s declared columns and logical types, in order.

    ``joined`` depends on the configured queries, ``predictions`` and ``joined`` on the logged values: their
    types are derived from the ``columns`` given (the fixed columns must all be there; each
    ``res_``/``age_``/``sat_``/``metric_``/``param_`` column has its prefix's type).

    :raises ValueError: for a dataset without a frame schema.
    """
    columns = list(columns)
    if dataset == "joined":
        queries = [c.removeprefix(VALUE_PREFIX) for c in columns if c.startswith(VALUE_PREFIX)]
        saturated = [c.removeprefix(SATURATED_PREFIX) for c in columns if c.startswith(SATURATED_PREFIX)]
        return joined_types(queries, saturated, columns)
    if dataset not in _TYPES:
        raise ValueError(f"dataset {dataset!r} has no frame schema; expected one of {', '.join(FRAME_DATASETS)}")
    if dataset == "predictions":
        return {**_TYPES[dataset], **logged_types(columns)}
    return dict(_TYPES[dataset])


def arrow_type(logical: str) -> pa.DataType:
    """The Arrow type every partition stores a logical type as."""
    import pyarrow as pa

    return {
        TIMESTAMP: pa.timestamp("ms", tz="UTC"), STRING: pa.large_string(), FLOAT: pa.float64(),
        INT: pa.int64(), BOOL: pa.bool_(),
    }[logical]  # fmt: skip


def arrow_schema(dataset: str, columns: Iterable[str] = ()) -> pa.Schema:
    """``dataset``'s declared Arrow schema (see :func:`types_of` for ``columns``)."""
    import pyarrow as pa

    return pa.schema([(name, arrow_type(t)) for name, t in types_of(dataset, columns).items()])


def _compatible(got: pa.DataType, want: pa.DataType) -> bool:
    """Whether a column of type ``got`` can be stored as ``want`` without changing what it says."""
    import pyarrow.types as t

    if got == want or t.is_null(got):  # an all-null column (no value at all in this window)
        return True
    if t.is_timestamp(want):
        return t.is_timestamp(got) and got.tz is not None  # a naive time would be guessed as UTC
    if t.is_large_string(want):
        return t.is_string(got) or t.is_large_string(got) or t.is_dictionary(got)
    if t.is_floating(want):
        return t.is_floating(got) or t.is_integer(got)
    if t.is_integer(want):
        return t.is_integer(got)
    return False


def check(schema: pa.Schema, dataset: str, *, where: str, empty: bool = False, stored: bool = False) -> None:
    """Check a table's or Parquet file's schema against ``dataset``'s declared one, without reading data.

    :param where: names the frame in the error (a partition URL, a staged part).
    :param empty: the frame has no rows: any column type is stored as the declared one (an empty frame
        built without data has whatever dtype pandas guessed, and no value to misread).
    :param stored: the schema of a stored partition, which may predate the columns of :data:`ADDED_LATER`.
    :raises SchemaError: naming the dataset, ``where``, and each missing, unexpected or mistyped column.
    """
    names = list(schema.names)
    declared = types_of(dataset, names)
    problems = []
    if missing := [c for c in declared if c not in names and not (stored and c in ADDED_LATER.get(dataset, ()))]:
        problems.append(f"missing column(s) {', '.join(missing)}")
    if extra := [c for c in names if c not in declared]:
        problems.append(f"undeclared column(s) {', '.join(extra)}")
    for name in names:
        want = arrow_type(declared[name]) if name in declared else None
        if want is not None and not empty and not _compatible(schema.field(name).type, want):
            problems.append(f"column {name} is {schema.field(name).type}, declared {want}")
    if problems:
        raise SchemaError(f"{dataset} frame at {where} does not match its schema: {'; '.join(problems)}")


def conform(table: pa.Table, dataset: str, *, where: str) -> pa.Table:
    """``table`` with exactly ``dataset``'s declared columns, in order, stored as the declared types
    (an all-null column as its declared type, text as ``large_string``, integers as ``float64`` where
    declared so).

    :raises SchemaError: see :func:`check`.
    """
    import pyarrow as pa

    check(table.schema, dataset, where=where, empty=table.num_rows == 0)
    declared = types_of(dataset, table.column_names)
    columns = []
    for name, logical in declared.items():
        column, want = table.column(name), arrow_type(logical)
        if column.type != want:
            if pa.types.is_dictionary(column.type):
                column = column.cast(column.type.value_type)
            if table.num_rows == 0:
                column = pa.chunked_array([], type=want)
            else:
                # timestamps: truncated to milliseconds, as the Parquet writer always did (coerce_timestamps)
                column = column.cast(want, safe=not pa.types.is_timestamp(want))
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=pa.schema([(n, arrow_type(t)) for n, t in declared.items()]))


def conform_frame(frame: pd.DataFrame, dataset: str, *, where: str) -> pa.Table:
    """:func:`conform` of a pandas frame (its index dropped)."""
    import pyarrow as pa

    return conform(pa.Table.from_pandas(frame, preserve_index=False), dataset, where=where)


def usable_prediction_times(prediction_time: pd.Series) -> np.ndarray:
    """``True`` where ``prediction_time`` can be judged: a finite number of seconds, not negative.

    The one definition of a judged prediction (the extractors warn about the others, the correlation and
    the verdicts leave them out). A run that never logged the metric (NaN), logged NaN, or logged an
    infinity (which MLflow stores as the largest float) says nothing about speed: it is neither slow nor
    normal, and never makes a model look healthy.
    """
    import numpy as np

    values = prediction_time.to_numpy(dtype="float64", na_value=np.nan)
    with np.errstate(invalid="ignore"):
        return np.isfinite(values) & (values >= 0) & (values < np.finfo("float64").max)
