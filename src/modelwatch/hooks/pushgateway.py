"""Prometheus Pushgateway hook: replace a group's series (``PUT /metrics/job/...``), read what a group holds
(``GET /api/v1/metrics``), delete a group. :func:`modelwatch.publish.publish_verdicts` drives it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

from modelwatch import connections
from modelwatch.errors import PushgatewayError, PushgatewayRefused, UpstreamUnavailable, is_refusal
from modelwatch.hooks.base import ApiHook
from modelwatch.publish import WINDOW_END, count_samples, group_path

METRICS_API_PATH = "/api/v1/metrics"


def group_value(groups: Any, job: str, grouping: Mapping[str, str], series: str) -> float | None:
    """The value of a label-less gauge of one group, from the body of ``GET /api/v1/metrics``.

    :param groups: the decoded JSON answer (``{"status": "success", "data": [group, ...]}``).
    :param job: the group's job.
    :param grouping: the group's other grouping labels.
    :param series: the metric name.
    :return: the value; ``None`` when the group or the series is not there (or holds NaN).
    :raises ValueError: when the answer is not shaped like the Pushgateway's.
    """
    if not isinstance(groups, dict) or not isinstance(groups.get("data"), list):
        raise ValueError("expected a JSON object with a 'data' list of groups")
    wanted = {"job": job, **grouping}
    for group in groups["data"]:
        if not isinstance(group, dict) or group.get("labels") != wanted:
            continue
        family = group.get(series)
        metrics = family.get("metrics") if isinstance(family, dict) else None
        if not metrics:
            return None
        try:
            value = float(metrics[0]["value"])
        except (KeyError, TypeError, ValueError, IndexError):
            raise ValueError(f"{series} of group {wanted} has no numeric value: {metrics[0]!r}") from None
        return None if math.isnan(value) else value
    return None


class PushgatewayHook(ApiHook):
    """Push series to a Prometheus Pushgateway and read them back.

    Connection as every modelwatch HTTP API connection (:class:`~modelwatch.hooks.base.ApiHook`):
    ``host``/``port``/``schema``, optional ``login``/``password`` with extra ``auth: basic`` (a
    Pushgateway behind ``--web.config.file``) and ``path_prefix`` (``--web.route-prefix``).

    :param pushgateway_conn_id: Airflow connection id.
    :param kwargs: retry settings, see :class:`~modelwatch.hooks.base.ApiHook`.
    """

    conn_name_attr: ClassVar[str] = "pushgateway_conn_id"
    default_conn_name: ClassVar[str] = "pushgateway_default"
    conn_type: ClassVar[str] = connections.PUSHGATEWAY
    hook_name: ClassVar[str] = "Prometheus Pushgateway"
    service_name: ClassVar[str] = "Pushgateway"
    test_request: ClassVar[tuple[str, str, dict[str, Any]]] = ("GET", "/api/v1/status", {})

    def __init__(self, pushgateway_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(pushgateway_conn_id, **kwargs)
        self.pushgateway_conn_id = self.conn_id

    def test_problem(self, response: Any) -> str | None:
        """A 2xx answer that is not the Pushgateway's status JSON (another server on that port) fails too."""
        problem = super().test_problem(response)
        if problem:
            return problem
        try:
            ok = response.json().get("status") == "success"
        except (ValueError, AttributeError):
            ok = False
        return None if ok else f"not a Pushgateway status answer: {self.body_excerpt(response)!r}"

    def group_url(self, job: str, grouping: Mapping[str, str]) -> str:
        """The group's URL (credentials removed): where :meth:`push` puts it."""
        return self.base_url + group_path(job, grouping)

    def _check(self, response: Any, path: str, what: str) -> None:
        if not 200 <= response.status_code < 300:
            # a refusal (4xx) fails the task without Airflow's retries: the same series would be refused again
            kind = PushgatewayRefused if is_refusal(response.status_code) else PushgatewayError
            raise kind(response.status_code, self.body_excerpt(response), server=self.base_url, path=path, what=what)

    def push(self, job: str, grouping: Mapping[str, str], text: str) -> None:
        """Replace the whole group with the series of ``text`` (``PUT``; the text exposition format).

        :param job: the group's job.
        :param grouping: the other grouping labels (a value with ``/`` goes base64-encoded).
        :param text: the series, as :func:`modelwatch.publish.verdict_series` writes them.
        :raises PushgatewayError: on a non-2xx answer (4xx at once, as
            :class:`~modelwatch.errors.PushgatewayRefused`: unparsable or inconsistent series; 5xx after
            retries), with the Pushgateway's reason.
        :raises UpstreamUnavailable: when the Pushgateway cannot be reached.
        """
        path = group_path(job, grouping)
        what = f"pushing {count_samples(text)} series to the Pushgateway group {job}/{dict(grouping)}"
        try:
            response = self._request("PUT", path, data=text.encode("utf-8"))
        except UpstreamUnavailable as exc:
            raise exc.doing(what) from None
        self._check(response, path, what)
        self.log.info("pushed %d series to %s", count_samples(text), self.base_url + path)

    def delete(self, job: str, grouping: Mapping[str, str]) -> None:
        """Delete the group (every series pushed to it); a group that does not exist is no error.

        :raises PushgatewayError: on a non-2xx answer.
        :raises UpstreamUnavailable: when the Pushgateway cannot be reached.
        """
        path = group_path(job, grouping)
        what = f"deleting the Pushgateway group {job}/{dict(grouping)}"
        try:
            response = self._request("DELETE", path)
        except UpstreamUnavailable as exc:
            raise exc.doing(what) from None
        self._check(response, path, what)

    def groups(self) -> list[dict[str, Any]]:
        """Every group the Pushgateway holds (``GET /api/v1/metrics``: ``labels`` plus one entry per
        metric name, each with its ``metrics``, values as strings).

        :raises PushgatewayError: on a non-2xx answer or a body that is not the Pushgateway's JSON.
        :raises UpstreamUnavailable: when the Pushgateway cannot be reached.
        """
        return self._metrics_api()["data"]

    def _metrics_api(self) -> dict[str, Any]:
        what = "reading the groups the Pushgateway holds"
        try:
            response = self._request("GET", METRICS_API_PATH)
        except UpstreamUnavailable as exc:
            raise exc.doing(what) from None
        self._check(response, METRICS_API_PATH, what)
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            raise PushgatewayError(
                response.status_code,
                f"expected a JSON object with a 'data' list of groups, got {self.body_excerpt(response)!r}",
                server=self.base_url,
                path=METRICS_API_PATH,
                what=what,
            )
        return body

    def published_window_end(self, job: str, grouping: Mapping[str, str]) -> float | None:
        """:data:`~modelwatch.publish.WINDOW_END` of the group (Unix seconds), ``None`` when the gateway
        holds no such group or series.

        :raises PushgatewayError: on a non-2xx answer or a body that is not the Pushgateway's JSON.
        :raises UpstreamUnavailable: when the Pushgateway cannot be reached.
        """
        body = self._metrics_api()
        try:
            return group_value(body, job, grouping, WINDOW_END)
        except ValueError as exc:
            raise PushgatewayError(
                200, str(exc), server=self.base_url, path=METRICS_API_PATH, what="reading the published window"
            ) from None
