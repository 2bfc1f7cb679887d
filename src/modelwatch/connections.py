"""The connection types modelwatch registers with Airflow, and the connection extras each one reads.

Defined here once, with no imports, because two layers need them: the hooks read these extras, and the
provider (:mod:`modelwatch.provider`) shows them as fields of the Airflow connection form. Airflow reads
the provider's information in every process, so this module must stay free of heavy imports.
"""

from __future__ import annotations

from typing import Any

PROMETHEUS = "prometheus"
MLFLOW = "mlflow"
ALERTMANAGER = "alertmanager"
PUSHGATEWAY = "pushgateway"

#: Values of the extra ``auth`` of the HTTP API connections (Prometheus, Alertmanager, Pushgateway).
AUTH_MODES = ("none", "basic", "bearer", "sigv4")


def _text(label: str, description: str, **schema: Any) -> dict[str, Any]:
    return {"label": label, "description": description, "schema": {"type": ["string", "null"], **schema}}


def _number(label: str, description: str, **schema: Any) -> dict[str, Any]:
    return {"label": label, "description": description, "schema": {"type": ["number", "null"], **schema}}


#: Extras of the HTTP API hooks (:class:`modelwatch.hooks.base.ApiHook`): name -> form field (JSON schema).
API_FIELDS: dict[str, dict[str, Any]] = {
    "auth": _text("Auth", "none, basic (login/password), bearer (token in password) or sigv4 (AWS)",
                  enum=list(AUTH_MODES), default="none"),
    "path_prefix": _text("Path prefix", "path before /api, e.g. /workspaces/ws-123 or /alertmanager"),
    "timeout": _number("Timeout (s)", "per request, default 60", minimum=0),
    "verify": _text("TLS verify", "true, false, or the path of a CA bundle"),
    "region": _text("AWS region", "for auth=sigv4, e.g. us-east-1"),
    "sigv4_service": _text("SigV4 service", "for auth=sigv4; default aps (Amazon Managed Prometheus)"),
    "aws_conn_id": _text("AWS connection id", "for auth=sigv4: the Airflow AWS connection whose credentials sign"),
}  # fmt: skip

#: Extras of the MLflow hook (:class:`modelwatch.hooks.mlflow.MlflowHook`).
MLFLOW_FIELDS: dict[str, dict[str, Any]] = {
    "max_retries": _number("Max retries", "retries of a failed request; default 7 (MLflow's own default)", minimum=0),
    "backoff_factor": _number("Backoff factor (s)", "delay before the first retry, doubled per retry; default 2",
                              minimum=0),
    "timeout": _number("Timeout (s)", "per request, default 120", minimum=0),
    "insecure_tls": {"label": "Skip TLS verification", "description": "only for a test server",
                     "schema": {"type": ["boolean", "null"], "default": False}},
}  # fmt: skip

_API_FORM = {
    "hidden-fields": [],
    "relabeling": {"schema": "Scheme (http/https)", "password": "Password or bearer token"},
    "placeholders": {"host": "127.0.0.1, or a full URL such as https://aps-workspaces.us-east-1.amazonaws.com"},
}

#: connection type -> (display name, hook class, extra fields, form behaviour), read by the provider.
CONNECTION_TYPES: dict[str, tuple[str, str, dict[str, dict[str, Any]], dict[str, Any]]] = {
    PROMETHEUS: ("Prometheus", "modelwatch.hooks.prometheus.PrometheusHook", API_FIELDS, _API_FORM),
    ALERTMANAGER: ("Alertmanager", "modelwatch.hooks.alertmanager.AlertmanagerHook", API_FIELDS, _API_FORM),
    PUSHGATEWAY: ("Prometheus Pushgateway", "modelwatch.hooks.pushgateway.PushgatewayHook", API_FIELDS, _API_FORM),
    MLFLOW: ("MLflow", "modelwatch.hooks.mlflow.MlflowHook", MLFLOW_FIELDS, {
        "hidden-fields": [],
        "relabeling": {"schema": "Scheme (http/https)", "password": "Password (or token without login)"},
        "placeholders": {"host": "127.0.0.1, or a full tracking URI such as https://mlflow.example.com"},
    }),
}
