"""Exceptions raised by modelwatch; messages name the source and the reason, never a credential."""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowFailException


class ModelwatchError(Exception):
    """Base class of every error modelwatch raises on purpose."""


def is_refusal(status: int) -> bool:
    """An HTTP status saying the request itself is wrong (4xx but timeout/rate limit): no retry can help."""
    return 400 <= status < 500 and status not in (408, 429)


class UpstreamUnavailable(ModelwatchError):
    """A server stayed unreachable (connection error or timeout) through every retry.

    :param server: base URL of the server, without credentials.
    :param path: request path that was attempted.
    :param last_error: text of the last failure (already redacted).
    :param attempts: how many attempts were made.
    :param what: what was being done (e.g. ``Prometheus query 'cpu'``), put first in the message.
    """

    def __init__(self, server: str, path: str, last_error: str, attempts: int, *, what: str = "") -> None:
        self.server = server
        self.path = path
        self.last_error = last_error
        self.attempts = attempts
        self.what = what
        prefix = f"{what}: " if what else ""
        super().__init__(f"{prefix}{server}{path} unavailable after {attempts} attempt(s): {last_error}")

    def doing(self, what: str) -> UpstreamUnavailable:
        """The same failure, saying what was being done."""
        return UpstreamUnavailable(self.server, self.path, self.last_error, self.attempts, what=what)


class PrometheusQueryError(ModelwatchError):
    """Prometheus answered a query with an error (or with something that is not a Prometheus answer).

    :param query_name: the configured name of the query (e.g. ``cpu``).
    :param promql: the PromQL expression sent.
    :param status: HTTP status of the answer.
    :param error_type: Prometheus's ``errorType`` (``bad_data``, ``execution``, ``timeout``...) or
        ``bad_response`` when the body was not a Prometheus JSON answer.
    :param error: Prometheus's ``error`` text (or a description of the unexpected body).
    :param server: base URL of the server, without credentials.
    """

    def __init__(
        self,
        *,
        query_name: str,
        promql: str,
        status: int,
        error_type: str,
        error: str,
        server: str,
    ) -> None:
        self.query_name = query_name
        self.promql = promql
        self.status = status
        self.error_type = error_type
        self.error = error
        self.server = server
        super().__init__(
            f"Prometheus query {query_name!r} failed on {server}: HTTP {status} {error_type}: {error} "
            f"(PromQL: {promql})"
        )


class PrometheusQueryRefused(PrometheusQueryError, AirflowFailException):
    """Prometheus refused the query itself (400 ``bad_data``, 422 ``execution``, 401/403/404): the same
    query fails the same way on every try, so the task fails at once, without Airflow's retries."""


class AlertmanagerError(ModelwatchError):
    """Alertmanager refused a request (non-2xx after retries).

    :param status: HTTP status of the last answer.
    :param body: Alertmanager's body text (truncated).
    :param server: base URL of the server, without credentials.
    :param path: request path.
    """

    def __init__(self, status: int, body: str, *, server: str = "", path: str = "") -> None:
        self.status = status
        self.body = body
        self.server = server
        self.path = path
        super().__init__(f"Alertmanager {server}{path} answered HTTP {status}: {body}")


class AlertmanagerRefused(AlertmanagerError, AirflowFailException):
    """Alertmanager refused the alerts (4xx): the task fails at once, without Airflow's retries (the
    payload stays in the lake for whoever fixes it)."""


class PushgatewayError(ModelwatchError):
    """The Pushgateway refused a request or answered something unreadable (after retries for 5xx).

    :param status: HTTP status of the last answer.
    :param body: the Pushgateway's body text (truncated), or what was wrong with it.
    :param server: base URL of the server, without credentials.
    :param path: request path.
    :param what: what was being done (e.g. ``pushing 14 series``), put first in the message.
    """

    def __init__(self, status: int, body: str, *, server: str = "", path: str = "", what: str = "") -> None:
        self.status = status
        self.body = body
        self.server = server
        self.path = path
        prefix = f"{what}: " if what else ""
        super().__init__(f"{prefix}Pushgateway {server}{path} answered HTTP {status}: {body}")


class PushgatewayRefused(PushgatewayError, AirflowFailException):
    """The Pushgateway refused the series (4xx: unparsable or inconsistent with what it holds): the same
    push is refused again, so the task fails at once, without Airflow's retries."""


class MlflowSourceError(ModelwatchError):
    """MLflow could not give what was asked (unknown experiment, server error, unreachable server).

    :param server: tracking URI, without credentials.
    :param reason: what went wrong (already redacted).
    :param experiment: experiment name or id concerned, if any.
    """

    def __init__(self, server: str, reason: str, *, experiment: str | None = None) -> None:
        self.server = server
        self.reason = reason
        self.experiment = experiment
        where = f"experiment {experiment!r} on {server}" if experiment else server
        super().__init__(f"MLflow {where}: {reason}")


class MlflowSourceRefused(MlflowSourceError, AirflowFailException):
    """MLflow refused the request itself (no such experiment, permission denied, invalid parameter): the
    task fails at once, without Airflow's retries."""


class CloudWatchError(ModelwatchError):
    """CloudWatch's GetMetricData failed (a throttled, unreachable or failing service: Airflow retries it).

    :param where: the region and endpoint asked (no credentials). :param reason: AWS's code and message.
    """

    def __init__(self, where: str, reason: str) -> None:
        self.where, self.reason = where, reason
        super().__init__(f"CloudWatch GetMetricData at {where}: {reason}")


class CloudWatchRefused(CloudWatchError, AirflowFailException):
    """CloudWatch refused the request itself (a bad query, missing permission): a retry would be refused too."""
