"""Configuration builders shared by the unit and fault tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from modelwatch.config import ModelwatchConfig

Edit = Callable[[dict[str, Any]], None]


def small_config(**evaluation: Any) -> ModelwatchConfig:
    """Two saturation resources (cpu, memory at 0.9) and one context-only query, 60 s tolerance, slow above 1 s.

    :param evaluation: overrides of the ``evaluation`` section (the schema's defaults otherwise).
    """
    return ModelwatchConfig.model_validate(small_raw(**evaluation))


def small_raw(**evaluation: Any) -> dict[str, Any]:
    """:func:`small_config` as the YAML's mapping, to edit before validating."""
    return {
        "prometheus": {"queries": [
            {"name": "cpu", "promql": "cpu", "saturation": 0.9, "unit": "ratio"},
            {"name": "memory", "promql": "memory", "saturation": 0.9, "unit": "ratio"},
            {"name": "request_rate", "promql": "rate", "unit": "req/s"},
        ]},
        "mlflow": {"experiments": [{"name": "e"}]},
        "correlation": {"tolerance": "60s"},
        "evaluation": {"slow_prediction_seconds": 1.0, **evaluation},
    }  # fmt: skip


def set_key(*keys: Any, value: Any) -> Edit:
    """An edit of a raw YAML document that sets ``raw[k1][k2]...[kn] = value``."""

    def mutate(raw: dict[str, Any]) -> None:
        node = raw
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value

    return mutate


def delete_key(*keys: Any) -> Edit:
    """An edit of a raw YAML document that deletes ``raw[k1][k2]...[kn]``."""

    def mutate(raw: dict[str, Any]) -> None:
        node = raw
        for k in keys[:-1]:
            node = node[k]
        del node[keys[-1]]

    return mutate


def own_alertnames(raw: dict[str, Any], name: str) -> dict[str, Any]:
    """Give a raw thresholds document alert names of a test's own, for every verdict kind that may page
    (``name``, ``name``Missing, ``name``Unexplained, ``name``Quality, ``name``Drift), and return it.

    Alertmanager keeps alerts by label set and the session's tests share one Alertmanager, and a run
    resolves the alerts of the names it owns: names of its own keep each test's pages and resolutions apart.
    """
    alerting = raw.setdefault("alerting", {})
    alerting["alertname"] = name
    kinds = (("no_data", "Missing", True), ("slow_unexplained", "Unexplained", False), ("quality", "Quality", True),
             ("drift", "Drift", False))  # fmt: skip
    for kind, suffix, default_page in kinds:
        rule = dict(alerting.get(kind) or {})
        rule.setdefault("page", default_page)
        rule.setdefault("severity", "warning" if default_page else "info")
        alerting[kind] = {**rule, "alertname": f"{name}{suffix}"}
    return raw
