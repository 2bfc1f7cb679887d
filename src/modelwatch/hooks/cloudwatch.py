"""CloudWatch GetMetricData through the Airflow AWS connection (the Amazon provider's ``AwsBaseHook``: its
credentials, role assumption, region and ``endpoint_url``), following ``NextToken`` until every datapoint of
a call is in. The client is made on first use, so parsing a DAG never builds one."""

from __future__ import annotations

from contextlib import suppress
from datetime import datetime
from typing import Any

from modelwatch.errors import CloudWatchError, CloudWatchRefused

#: AWS error codes that a retry would get again: the task fails at once
REFUSED_CODES = frozenset({"ValidationError", "InvalidParameterValue", "InvalidParameterCombination",
                           "MissingParameter", "AccessDenied", "AccessDeniedException", "UnauthorizedOperation",
                           "InvalidClientTokenId", "UnrecognizedClientException", "InvalidNextToken"})  # fmt: skip


class CloudWatchHook:
    """Read CloudWatch metrics.

    :param aws_conn_id: the Airflow AWS connection (``aws`` type; ``endpoint_url`` in its extra points it at
        another endpoint, such as moto's server). :param region_name: default: the connection's.
    """

    def __init__(self, aws_conn_id: str = "aws_default", region_name: str | None = None) -> None:
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self._client: Any = None
        self.requests_made = 0

    def get_conn(self) -> Any:
        """The boto3 CloudWatch client (made once)."""
        if self._client is None:
            from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

            self._client = AwsBaseHook(aws_conn_id=self.aws_conn_id, client_type="cloudwatch",
                                       region_name=self.region_name).get_conn()  # fmt: skip
        return self._client

    def redact(self, text: str) -> str:
        """``text`` with the client's AWS secret key and session token (in every form
        :func:`~modelwatch.hooks.base.secret_forms` lists), any ``Bearer``/``Basic`` credential and URL
        userinfo replaced by ``***``."""
        from modelwatch.hooks.base import redact_text, secret_forms

        secrets: list[str] = []
        with suppress(Exception):  # botocore keeps the credentials on the client's signer
            creds = self.get_conn()._request_signer._credentials.get_frozen_credentials()
            secrets = [*secret_forms(creds.secret_key), *secret_forms(creds.token)]
        return redact_text(text, secrets)

    @property
    def where(self) -> str:
        """The region and endpoint, for messages (no credentials)."""
        client = self.get_conn()
        return self.redact(f"{client.meta.region_name} ({client.meta.endpoint_url}, connection {self.aws_conn_id!r})")

    def get_metric_data(self, queries: list[dict[str, Any]], start: datetime, end: datetime
                        ) -> dict[str, tuple[list[datetime], list[float]]]:  # fmt: skip
        """Every datapoint of ``queries`` (``MetricDataQueries``, at most 500) over ``[start, end)``, all pages.

        :returns: id -> (timestamps, values), oldest first.
        :raises CloudWatchRefused: a request CloudWatch refuses (bad query, no permission): no retry helps.
        :raises CloudWatchError: anything else (throttling, a failing or unreachable service): retried by Airflow.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        client = self.get_conn()
        out: dict[str, tuple[list[datetime], list[float]]] = {q["Id"]: ([], []) for q in queries}
        kwargs: dict[str, Any] = {"MetricDataQueries": queries, "StartTime": start, "EndTime": end,
                                  "ScanBy": "TimestampAscending"}  # fmt: skip
        while True:
            # the error is worded (redacted) in the except block and raised after it: the botocore
            # exception is not chained into the traceback
            failure: Exception | None = None
            try:
                answer = client.get_metric_data(**kwargs)
            except ClientError as exc:
                error = exc.response.get("Error", {})
                reason = self.redact(f"{error.get('Code', 'error')}: {error.get('Message', exc)}")
                kind = CloudWatchRefused if error.get("Code") in REFUSED_CODES else CloudWatchError
                failure = kind(self.where, reason)
            except BotoCoreError as exc:
                failure = CloudWatchError(self.where, self.redact(f"{type(exc).__name__}: {exc}"))
            if failure is not None:
                raise failure
            self.requests_made += 1
            for result in answer.get("MetricDataResults", []):
                timestamps, values = out.setdefault(result["Id"], ([], []))
                timestamps.extend(result.get("Timestamps", []))
                values.extend(result.get("Values", []))
            token = answer.get("NextToken")
            if not token:
                return out
            kwargs["NextToken"] = token
