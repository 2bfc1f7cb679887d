"""modelwatch as an Airflow provider: the ``apache_airflow_provider`` entry point of ``pyproject.toml``.

Airflow's ProvidersManager calls :func:`get_provider_info` in every process that lists connection types,
so the connection form offers Prometheus, MLflow, Alertmanager and the Pushgateway with their fields, and its Test
button calls each hook's ``test_connection``. Declarative fields (``conn-fields``, ``ui-field-behaviour``)
are what Airflow 3.2+ reads without importing the hooks.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from modelwatch.connections import CONNECTION_TYPES

PACKAGE = "modelwatch"


def get_provider_info() -> dict[str, Any]:
    """The provider information Airflow validates against its ``provider_info.schema.json``."""
    try:
        versions = [version(PACKAGE)]
    except PackageNotFoundError:  # imported from a source tree that is not installed
        versions = []
    return {
        "package-name": PACKAGE,
        "name": "modelwatch",
        "description": "Judges deployed ML models on MLflow prediction records and Prometheus resource saturation.",
        "versions": versions,
        "connection-types": [
            {"connection-type": conn_type, "hook-class-name": hook, "hook-name": name, "conn-fields": fields,
             "ui-field-behaviour": form}
            for conn_type, (name, hook, fields, form) in CONNECTION_TYPES.items()
        ],  # fmt: skip
    }
