"""CloudWatch as a source: the configured metrics (``cloudwatch`` in thresholds.yaml) read with GetMetricData
into the same ``resources`` frame as the Prometheus queries (:data:`modelwatch.schema.RESOURCE_COLUMNS`).

The pure parts, testable without AWS: which period CloudWatch can still serve for the window
(:func:`effective_period`), the requests within GetMetricData's limits (:func:`plan_requests`: at most 500
metrics and 100,800 datapoints per call), and the frame from the answers (:func:`results_to_frame`). The
hook (:class:`modelwatch.hooks.cloudwatch.CloudWatchHook`) sends the requests and follows ``NextToken``.

A CloudWatch value aggregates the period that *starts* at its timestamp. It is stored at the period's end
with ``window_seconds`` = the period, as a Prometheus ``rate()`` over a range is, so the join
(:func:`modelwatch.correlate.join_resources`) centres both kinds on the middle of their range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from modelwatch.config import CloudWatchQuery

#: GetMetricData's limits per call
MAX_QUERIES_PER_CALL = 500
MAX_DATAPOINTS_PER_CALL = 100_800
#: how long CloudWatch keeps each resolution: (age of the data, the shortest period served for it)
RETENTION = ((timedelta(days=15), 60), (timedelta(days=63), 300), (timedelta(days=455), 3600))


@dataclass(frozen=True)
class Series:
    """One metric series of a query: its GetMetricData id, the predictions' instance it joins, its dimensions."""

    id: str
    query: CloudWatchQuery
    instance: str
    dimensions: dict[str, str]

    def metric_data_query(self, period_s: int) -> dict[str, Any]:
        """The ``MetricDataQueries`` entry."""
        return {
            "Id": self.id,
            "MetricStat": {
                "Metric": {"Namespace": self.query.namespace, "MetricName": self.query.metric,
                           "Dimensions": [{"Name": k, "Value": v} for k, v in sorted(self.dimensions.items())]},
                "Period": period_s,
                "Stat": self.query.stat,
            },
            "ReturnData": True,
        }  # fmt: skip

    @property
    def labels(self) -> str:
        """The series' dimensions written as Prometheus labels (the ``labels`` column)."""
        body = ",".join(f'{k}="{v}"' for k, v in sorted({"namespace": self.query.namespace,
                                                          "metric": self.query.metric, **self.dimensions}.items()))
        return "{" + body + "}"


def all_series(queries: list[CloudWatchQuery]) -> list[Series]:
    """Every series of the queries, with ids GetMetricData accepts (``m<n>``: a letter, then letters/digits)."""
    out = []
    for q in queries:
        for instance, dims in q.series():
            out.append(Series(f"m{len(out)}", q, instance, dims))
    return out


def effective_period(period_s: int, window_start: datetime, now: datetime) -> int:
    """The configured period, or the shortest CloudWatch still keeps for data as old as the window's start
    (1-minute data for 15 days, 5-minute for 63, 1-hour for 455): a finer period would come back empty.

    Why ``now``: retention is about the present, not the run; the window itself still comes from the run.
    """
    age = now - window_start
    for keep, shortest in RETENTION:
        if age <= keep:
            return max(period_s, shortest)
    raise ValueError(f"the window starts {age.days} days ago: CloudWatch keeps no data older than 455 days")


def plan_requests(n_series: int, start: datetime, end: datetime, period_s: int) -> list[tuple[range, datetime, datetime]]:
    """GetMetricData calls covering every series over ``[start, end)``: ``(series indexes, start, end)``, at most
    :data:`MAX_QUERIES_PER_CALL` series each, and time slices (whole periods) short enough that
    series x periods stays within :data:`MAX_DATAPOINTS_PER_CALL`."""
    calls = []
    for first in range(0, n_series, MAX_QUERIES_PER_CALL):
        batch = range(first, min(first + MAX_QUERIES_PER_CALL, n_series))
        per_call = max(1, MAX_DATAPOINTS_PER_CALL // len(batch))
        step = timedelta(seconds=period_s * per_call)
        t = start
        while t < end:
            calls.append((batch, t, min(t + step, end)))
            t += step
    return calls


def results_to_frame(series: list[Series], results: dict[str, tuple[list[datetime], list[float]]], period_s: int,
                     start: datetime, end: datetime) -> pd.DataFrame:  # fmt: skip
    """The ``resources`` rows of the answers: each value (scaled) at its period's end, inside ``[start, end)``
    by its period's start; ``sample_time`` the period's end, ``window_seconds`` the period.

    :param results: series id -> (period start timestamps, values), as the hook gathers them.
    """
    import pandas as pd

    from modelwatch.schema import RESOURCE_COLUMNS

    rows = []
    for s in series:
        timestamps, values = results.get(s.id, ([], []))
        for t, v in zip(timestamps, values, strict=True):
            if not start <= t < end or v is None or not math.isfinite(float(v)):
                continue
            at = t + timedelta(seconds=period_s)
            rows.append((at, s.query.name, s.instance, s.labels, float(v) * s.query.scale, at, float(period_s)))
    frame = pd.DataFrame(rows, columns=list(RESOURCE_COLUMNS))
    for column in ("timestamp", "sample_time"):
        frame[column] = pd.to_datetime(frame[column], utc=True).dt.as_unit("ms")
    return frame.sort_values(["query", "instance", "timestamp"], kind="mergesort").reset_index(drop=True)


def extract_cloudwatch(hook: Any, queries: list[CloudWatchQuery], start: datetime, end: datetime, period_s: int,
                       now: datetime) -> tuple[pd.DataFrame, dict[str, Any]]:  # fmt: skip
    """Every series of ``queries`` over ``[start, end)`` as ``resources`` rows, and what it took.

    :param hook: a :class:`~modelwatch.hooks.cloudwatch.CloudWatchHook`. :param now: for the retention only.
    :returns: the frame and ``{"period", "series", "requests", "datapoints"}``.
    """
    period = effective_period(period_s, start, now)
    series = all_series(queries)
    results: dict[str, tuple[list[datetime], list[float]]] = {}
    calls = plan_requests(len(series), start, end, period)
    for batch, t0, t1 in calls:
        got = hook.get_metric_data([series[i].metric_data_query(period) for i in batch], t0, t1)
        for key, (timestamps, values) in got.items():
            ts, vs = results.setdefault(key, ([], []))
            ts.extend(timestamps)
            vs.extend(values)
    frame = results_to_frame(series, results, period, start, end)
    return frame, {"period": period, "series": len(series), "requests": len(calls), "datapoints": len(frame)}
