"""Alertmanager API v2 hook (``/api/v2/alerts``); with ``path_prefix: /alertmanager`` also AMP's."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from modelwatch import connections
from modelwatch.errors import AlertmanagerError, AlertmanagerRefused, UpstreamUnavailable, is_refusal
from modelwatch.hooks.base import ApiHook

ALERTS_PATH = "/api/v2/alerts"


def matcher(label: str, value: str) -> str:
    """An Alertmanager equality matcher ``label="value"``, the value's quotes/backslashes escaped.

    :param label: label name.
    :param value: exact label value.
    """
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'{label}="{escaped}"'


class AlertmanagerHook(ApiHook):
    """Post and read alerts through Alertmanager's v2 API.

    :param alertmanager_conn_id: Airflow connection id.
    :param kwargs: retry settings, see :class:`~modelwatch.hooks.base.ApiHook`.
    """

    conn_name_attr: ClassVar[str] = "alertmanager_conn_id"
    default_conn_name: ClassVar[str] = "alertmanager_default"
    conn_type: ClassVar[str] = connections.ALERTMANAGER
    hook_name: ClassVar[str] = "Alertmanager"
    service_name: ClassVar[str] = "Alertmanager"
    test_request: ClassVar[tuple[str, str, dict[str, Any]]] = ("GET", "/api/v2/status", {})

    def __init__(self, alertmanager_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(alertmanager_conn_id, **kwargs)
        self.alertmanager_conn_id = self.conn_id

    def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        """Send alerts (``labels``, ``annotations``, ``startsAt``, ``endsAt``, ``generatorURL``).

        An empty list sends nothing.

        :raises AlertmanagerError: when Alertmanager answers non-2xx (4xx at once, as
            :class:`~modelwatch.errors.AlertmanagerRefused`; 5xx after retries), with its status and body text.
        :raises UpstreamUnavailable: when Alertmanager cannot be reached.
        """
        if not alerts:
            self.log.info("no alerts to post")
            return
        try:
            response = self._request("POST", ALERTS_PATH, json=alerts)
        except UpstreamUnavailable as exc:
            raise exc.doing(f"posting {len(alerts)} alert(s) to Alertmanager") from None
        if not 200 <= response.status_code < 300:
            # a refusal (4xx) fails the task without Airflow's retries: the same payload would be refused again
            kind = AlertmanagerRefused if is_refusal(response.status_code) else AlertmanagerError
            raise kind(response.status_code, self.body_excerpt(response), server=self.base_url, path=ALERTS_PATH)
        self.log.info("posted %d alert(s)", len(alerts))

    def get_alerts(self, filters: Mapping[str, str] | None = None, active: bool = True) -> list[dict[str, Any]]:
        """Alerts Alertmanager holds, optionally only those whose labels equal ``filters``.

        :param filters: label -> exact value; each becomes a ``filter=label="value"`` matcher.
        :param active: ``True`` for active alerts only, ``False`` for the others (silenced, inhibited
            and unprocessed ones are always included).
        :raises AlertmanagerError: on a non-2xx answer or a body that is not a JSON list.
        """
        params: list[tuple[str, str]] = [("active", "true" if active else "false")]
        params += [("filter", matcher(k, v)) for k, v in sorted((filters or {}).items())]
        try:
            response = self._request("GET", ALERTS_PATH, params=params)
        except UpstreamUnavailable as exc:
            raise exc.doing("reading the alerts Alertmanager holds") from None
        if not 200 <= response.status_code < 300:
            raise AlertmanagerError(
                response.status_code, self.body_excerpt(response), server=self.base_url, path=ALERTS_PATH
            )
        try:
            alerts = response.json()
        except ValueError:
            alerts = None
        if not isinstance(alerts, list):
            raise AlertmanagerError(
                response.status_code,
                f"expected a JSON list of alerts, got {self.body_excerpt(response)!r}",
                server=self.base_url,
                path=ALERTS_PATH,
            )
        return alerts
