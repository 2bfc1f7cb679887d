"""The connection form, through the real API server: modelwatch's provider registers its four connection
types with their fields, and the Test button reaches the local stack (or says why it cannot).

The API server learns the types from the installed package's ``apache_airflow_provider`` entry point
(``pyproject.toml``): nothing here puts modelwatch on a path by hand.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from devstack.airflow_services import AirflowApi, AirflowServices, free_port
from devstack.stack import HOST, Stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def api(airflow: AirflowServices) -> AirflowApi:
    return airflow.api()


@pytest.fixture(scope="module")
def hook_meta(api: AirflowApi) -> dict[str, dict[str, Any]]:
    """What the connection form renders: one entry per connection type (the UI's own endpoint)."""
    return {m["connection_type"]: m for m in api.request("GET", "/ui/connections/hook_meta")}


@pytest.mark.parametrize(
    ("conn_type", "hook_name", "field"),
    [("prometheus", "Prometheus", "auth"), ("alertmanager", "Alertmanager", "path_prefix"),
     ("mlflow", "MLflow", "max_retries"), ("pushgateway", "Prometheus Pushgateway", "auth")],
)  # fmt: skip
def test_the_form_lists_each_connection_type_with_its_fields(
    hook_meta: dict[str, dict[str, Any]], conn_type: str, hook_name: str, field: str
) -> None:
    meta = hook_meta.get(conn_type)
    assert meta is not None, f"{conn_type} missing from the form's types: {sorted(t for t in hook_meta if t)}"
    assert meta["hook_name"] == hook_name
    assert meta["hook_class_name"].startswith("modelwatch.hooks.")
    extra = meta["extra_fields"] or {}
    assert field in json.dumps(extra), f"{conn_type}: no {field!r} field in {sorted(extra)}"
    assert meta["standard_fields"]["url_schema"]["title"] == "Scheme (http/https)"


def _test(api: AirflowApi, conn_type: str, port: int, **extra: Any) -> dict[str, Any]:
    body = {"connection_id": f"e2e_{conn_type}", "conn_type": conn_type, "host": HOST, "port": port,
            "schema": "http", "extra": json.dumps(extra) if extra else None}  # fmt: skip
    return api.request("POST", "/api/v2/connections/test", body)


@pytest.mark.parametrize("service", ["prometheus", "alertmanager", "mlflow", "pushgateway"])
def test_the_test_button_reaches_the_local_stack(api: AirflowApi, stack: Stack, service: str) -> None:
    answer = _test(api, service, stack.config.port(service))
    assert answer["status"] is True, answer
    assert f"{HOST}:{stack.config.port(service)}" in answer["message"] and "HTTP 200" in answer["message"]


def test_the_test_button_says_why_a_connection_fails(api: AirflowApi, stack: Stack) -> None:
    closed = free_port()
    answer = _test(api, "prometheus", closed, timeout=5)
    assert answer["status"] is False
    assert f"{HOST}:{closed}" in answer["message"] and "ConnectionError" in answer["message"], answer
    # a server that answers, but not as Prometheus: Alertmanager's port
    answer = _test(api, "prometheus", stack.config.port("alertmanager"))
    assert answer["status"] is False and "not a successful Prometheus answer" in answer["message"], answer
