"""The model-health view's pure parts: which lake files it serves, and the calendar's filters. The app
itself is tested in a real browser against the real API server (tests/e2e/test_model_health_view.py)."""

from __future__ import annotations

import pytest

from modelwatch.plugin import ModelwatchPlugin, calendar_rows, servable


@pytest.mark.parametrize(("path", "kind"), [
    ("reports/dt=2026-03-03/fraud-detector.html", "text/html; charset=utf-8"),
    ("reports/dt=2026-03-03/fraud-detector-timeline.png", "image/png"),
    ("adhoc/reports/dt=2026-03-03/run=abc/m.html", "text/html; charset=utf-8"),
    ("verdicts/dt=2026-03-03/_verdict.json", None),
    ("reports/../verdicts/dt=2026-03-03/data.parquet", None),
    ("reports/dt=2026-03-03/x.parquet", None),
    ("reports//etc/passwd.html", None),
    ("adhoc/predictions/dt=2026-03-03/run=abc/data.parquet", None),
])  # fmt: skip
def test_only_report_pages_and_charts_are_served(path: str, kind: str | None) -> None:
    assert servable(path) == kind


def test_the_calendar_filters_by_model_and_by_verdict_or_dimension() -> None:
    docs = {
        "2026-03-04": {"verdicts": [{"model": "a", "verdict": "healthy", "quality": "regressed", "drift": "stable"},
                                    {"model": "b", "verdict": "degraded", "quality": "ok", "drift": "stable"}]},
        "2026-03-03": {"verdicts": [{"model": "a", "verdict": "degraded", "quality": "ok", "drift": "drifted"}]},
    }  # fmt: skip
    assert [m for m, _ in calendar_rows(docs)] == ["a", "b"]
    assert [(m, sorted(days)) for m, days in calendar_rows(docs, verdict="degraded")] == [
        ("a", ["2026-03-03"]), ("b", ["2026-03-04"])]  # fmt: skip
    assert [(m, sorted(days)) for m, days in calendar_rows(docs, verdict="quality_regressed")] == [("a", ["2026-03-04"])]
    assert [(m, sorted(days)) for m, days in calendar_rows(docs, model="a", verdict="drift_drifted")] == [
        ("a", ["2026-03-03"])]  # fmt: skip


def test_the_plugin_adds_the_view_to_the_navigation_and_the_report_button() -> None:
    assert ModelwatchPlugin.fastapi_apps[0]["url_prefix"] == "/modelwatch"
    view = ModelwatchPlugin.external_views[0]
    assert view["href"] == "modelwatch/" and view["destination"] == "nav"  # relative: works behind a proxy
    assert [link.name for link in ModelwatchPlugin.global_operator_extra_links] == ["Model report"]
