"""CloudWatch history in moto's server: a SageMaker endpoint whose instances' CPU saturates, for the
scenario whose verdict comes from CloudWatch evidence (``tests/integration/test_cloudwatch_source.py``).

Why: neither moto nor boto3 seeds metrics; this writes what a SageMaker endpoint publishes to
``/aws/sagemaker/Endpoints`` (``CPUUtilization`` per ``EndpointName`` and ``VariantName``, in percent of one
core, one datapoint a minute) with PutMetricData, 1,000 datapoints per call (its limit).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any

ENDPOINT_NAMESPACE = "/aws/sagemaker/Endpoints"
PUT_LIMIT = 1000


def endpoint_cpu(endpoint: str, variants: Mapping[str, tuple[datetime, datetime] | None], start: datetime,
                 end: datetime, *, normal: float = 35.0, hot: float = 97.0) -> Iterator[dict[str, Any]]:  # fmt: skip
    """One ``CPUUtilization`` datum a minute per variant over ``[start, end)``: ``hot`` percent inside the
    variant's incident ``(from, to)``, ``normal`` (with a small deterministic ripple) elsewhere."""
    t, k = start, 0
    while t < end:
        for variant, incident in variants.items():
            busy = incident is not None and incident[0] <= t < incident[1]
            yield {"MetricName": "CPUUtilization", "Timestamp": t, "Unit": "Percent",
                   "Dimensions": [{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": variant}],
                   "Value": hot if busy else normal + (k % 7) - 3}  # fmt: skip
        t += timedelta(minutes=1)
        k += 1


def put_metric_data(client: Any, namespace: str, data: Iterator[dict[str, Any]]) -> int:
    """Write ``data`` with PutMetricData in calls of at most :data:`PUT_LIMIT`; :returns: datums written."""
    batch: list[dict[str, Any]] = []
    written = 0
    for datum in data:
        batch.append(datum)
        if len(batch) == PUT_LIMIT:
            client.put_metric_data(Namespace=namespace, MetricData=batch)
            written, batch = written + len(batch), []
    if batch:
        client.put_metric_data(Namespace=namespace, MetricData=batch)
        written += len(batch)
    return written
