"""The model-health view: which lake files it serves, the calendar's filters, and who may see what.

The app runs here in a FastAPI TestClient over a ``file://`` lake, with Airflow's own ``get_user`` dependency
(401 without a login) and, for a logged-in user, a stand-in auth manager that allows the DAGs a test names:
the checks the view asks for are what is tested. The same rules through the real API server and the FAB auth
manager's per-DAG permissions: tests/e2e/test_view_permissions.py; in a real browser: tests/e2e/test_scheduler.py.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import get_user
from fastapi.testclient import TestClient

from modelwatch import plugin
from modelwatch.monitoring_dag import DAILY_DAG_ID, HOURLY_DAG_ID
from modelwatch.plugin import (
    ModelwatchPlugin,
    calendar_rows,
    day_href,
    servable,
    verdict_document_path,
)
from modelwatch.report import relative_path
from modelwatch.storage import Lake
from modelwatch.window import Window

DAY, OLD_DAY, HOURLY_DAY = "2026-03-03", "2026-03-02", "2026-03-04"
REPLAY_DAG = "modelwatch_threshold_replay"  # tagged modelwatch: one of "every modelwatch DAG"
EVERY = frozenset({DAILY_DAG_ID, HOURLY_DAG_ID, REPLAY_DAG})
HOSTILE = ["team/fraud", "50%off", "what?now", "a#b", "modèle-ü ✓", "m" * 300, "..", "a/../b", "x y+z&w=1"]


@pytest.mark.parametrize(("path", "kind"), [
    ("reports/dt=2026-03-03/fraud-detector.html", "text/html; charset=utf-8"),
    ("reports/dt=2026-03-03/fraud-detector-timeline.png", "image/png"),
    ("adhoc/reports/dt=2026-03-03/run=abc/m.html", "text/html; charset=utf-8"),
    ("intraday/reports/dt=2026-03-03/hour=10/m.html", "text/html; charset=utf-8"),
    ("intraday/reports/dt=2026-03-03/hour=10/minute=30/m-timeline.png", "image/png"),
    ("verdicts/dt=2026-03-03/_verdict.json", None),
    ("reports/../verdicts/dt=2026-03-03/data.parquet", None),
    ("intraday/reports/../../verdicts/dt=2026-03-03/_verdict.json", None),
    ("reports/dt=2026-03-03/x.parquet", None),
    ("reports//etc/passwd.html", None),
    ("reports/m.html", None),
    ("reports/etc/m.html", None),
    ("other/reports/dt=2026-03-03/m.html", None),
    ("adhoc/predictions/dt=2026-03-03/run=abc/data.parquet", None),
])  # fmt: skip
def test_only_report_pages_and_charts_are_served(path: str, kind: str | None) -> None:
    assert servable(path) == kind


def test_a_report_file_maps_to_the_verdict_document_of_its_partition() -> None:
    assert verdict_document_path("reports/dt=2026-03-03/m.html") == "verdicts/dt=2026-03-03/_verdict.json"
    assert verdict_document_path("intraday/reports/dt=2026-03-03/hour=10/m.png") == (
        "intraday/verdicts/dt=2026-03-03/hour=10/_verdict.json")  # fmt: skip
    assert verdict_document_path("adhoc/reports/dt=2026-03-03/run=k/m.html") == (
        "adhoc/verdicts/dt=2026-03-03/run=k/_verdict.json")  # fmt: skip
    assert verdict_document_path("reports/../x/m.html") is None


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


# -- the app: a lake, users and a stand-in auth manager --------------------------------------------------
@dataclass
class FakeUser:
    name: str
    allowed: frozenset[str]

    def get_name(self) -> str:
        return self.name

    def get_id(self) -> str:
        return self.name


@dataclass
class FakeAuthManager:
    """Allows reading the runs of ``user.allowed``; records what the view asked."""

    asked: list[tuple[str, Any, str | None]] = field(default_factory=list)

    def is_authorized_dag(self, *, method: str, user: FakeUser, access_entity: Any = None, details: Any = None) -> bool:
        self.asked.append((method, access_entity, details.id if details else None))
        return method == "GET" and details is not None and details.id in user.allowed


@dataclass
class View:
    client: TestClient
    lake: Lake
    root: Path
    manager: FakeAuthManager
    users: dict[str, FakeUser] = field(default_factory=dict)
    as_user: list[str] = field(default_factory=lambda: [""])

    def get(self, path: str, user: str = "", **kwargs: Any) -> Any:
        self.as_user[0] = user
        return self.client.get(path, **kwargs)


def _write(lake: Lake, path: str, content: bytes | str) -> None:
    target = Path(lake.base_url.removeprefix("file://")) / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content.encode() if isinstance(content, str) else content)


def _verdicts(models: list[str], verdict: str = "degraded") -> list[dict[str, str]]:
    return [{"model": m, "verdict": verdict, "quality": "ok", "drift": "stable", "reason": "r"} for m in models]


@pytest.fixture
def view(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[View]:
    """The app over a lake holding: DAY written by the daily DAG (its document names it), OLD_DAY without a
    ``dag_id`` (older data), an intraday hour written by the hourly DAG, and an ad-hoc run's report."""
    root = tmp_path / "private-bucket-name"
    lake = Lake(f"file://{root}")
    day = Window.of_day(date.fromisoformat(DAY))
    _write(lake, "verdicts/dt=2026-03-03/_verdict.json",
           json.dumps({"dag_id": DAILY_DAG_ID, "verdicts": _verdicts(["fraud-detector", *HOSTILE])}))  # fmt: skip
    _write(lake, relative_path(lake, day, "fraud-detector"), "<html>the fraud-detector report of 03-03</html>")
    for name in HOSTILE:
        _write(lake, relative_path(lake, day, name), f"<html>report of {html.escape(name)}</html>")
    _write(lake, "verdicts/dt=2026-03-02/_verdict.json", json.dumps({"verdicts": _verdicts(["recommender"])}))
    _write(lake, "reports/dt=2026-03-02/recommender.html", "<html>old recommender report</html>")
    _write(lake, "intraday/verdicts/dt=2026-03-04/hour=10/_verdict.json",
           json.dumps({"dag_id": HOURLY_DAG_ID, "verdicts": _verdicts(["fraud-detector"])}))  # fmt: skip
    _write(lake, "intraday/reports/dt=2026-03-04/hour=10/fraud-detector.html", "<html>hourly report</html>")
    _write(lake, "intraday/reports/dt=2026-03-04/hour=10/fraud-detector-timeline.png", b"\x89PNG fake")
    _write(lake, "adhoc/verdicts/dt=2026-03-04/run=k1/_verdict.json",
           json.dumps({"dag_id": DAILY_DAG_ID, "verdicts": _verdicts(["fraud-detector"])}))  # fmt: skip
    _write(lake, "adhoc/reports/dt=2026-03-04/run=k1/fraud-detector.html", "<html>ad-hoc report</html>")

    manager = FakeAuthManager()
    monkeypatch.setattr(plugin, "_lake", lambda: (lake, None))
    monkeypatch.setattr(plugin, "_auth_manager", lambda: manager)
    monkeypatch.setattr(plugin, "_team_names", lambda dag_ids: {})
    monkeypatch.setattr(plugin, "modelwatch_dags", lambda: EVERY)
    state = View(TestClient(plugin.app), lake, root, manager)
    state.users = {
        "team": FakeUser("team", frozenset({"team_dag"})),
        "daily": FakeUser("daily", frozenset({DAILY_DAG_ID})),
        "hourly": FakeUser("hourly", frozenset({HOURLY_DAG_ID})),
        "all": FakeUser("all", EVERY | {"team_dag"}),
    }

    def current_user() -> FakeUser:
        from fastapi import HTTPException

        if not state.as_user[0]:
            raise HTTPException(401, "Not authenticated")
        return state.users[state.as_user[0]]

    plugin.app.dependency_overrides[get_user] = current_user
    try:
        yield state
    finally:
        plugin.app.dependency_overrides.pop(get_user, None)


DAILY_REPORT = "/lake/reports/dt=2026-03-03/fraud-detector.html"
DAILY_PAGE = f"/day/{DAY}?model=fraud-detector"


def test_a_user_allowed_only_on_another_dag_sees_nothing_whatever_dag_id_it_passes(view: View) -> None:
    for path in ("/", "/?dag_id=team_dag", f"/?dag_id={DAILY_DAG_ID}", DAILY_PAGE, f"{DAILY_PAGE}&dag_id=team_dag",
                 f"/day/{DAY}/fraud-detector", f"/day/{DAY}/fraud-detector?dag_id=team_dag", DAILY_REPORT,
                 f"{DAILY_REPORT}?dag_id=team_dag", "/lake/intraday/reports/dt=2026-03-04/hour=10/fraud-detector.html",
                 "/lake/adhoc/reports/dt=2026-03-04/run=k1/fraud-detector.html"):  # fmt: skip
        answer = view.get(path, "team")
        assert answer.status_code == 403, (path, answer.status_code, answer.text[:200])
    # the view asked about the DAGs that wrote the data, never about the caller's dag_id
    assert {dag for _, _, dag in view.manager.asked} <= EVERY
    assert all(method == "GET" and entity == DagAccessEntity.RUN for method, entity, _ in view.manager.asked)


def test_the_daily_dags_readers_get_its_days_reports_and_pages(view: View) -> None:
    for path in (DAILY_REPORT, DAILY_PAGE, f"/day/{DAY}/fraud-detector",
                 "/lake/adhoc/reports/dt=2026-03-04/run=k1/fraud-detector.html"):  # fmt: skip
        answer = view.get(path, "daily")
        assert answer.status_code == 200, (path, answer.text[:200])
    assert "fraud-detector" in view.get(DAILY_REPORT, "daily").text
    # the hourly DAG's partitions are not theirs, and neither is a day whose document names no DAG
    assert view.get("/lake/intraday/reports/dt=2026-03-04/hour=10/fraud-detector.html", "daily").status_code == 403
    assert view.get("/lake/reports/dt=2026-03-02/recommender.html", "daily").status_code == 403
    assert view.get(f"/day/{OLD_DAY}?model=recommender", "daily").status_code == 403


def test_hourly_reports_and_charts_are_served_to_the_hourly_dags_readers(view: View) -> None:
    page = view.get("/lake/intraday/reports/dt=2026-03-04/hour=10/fraud-detector.html", "hourly")
    assert page.status_code == 200 and "hourly report" in page.text
    chart = view.get("/lake/intraday/reports/dt=2026-03-04/hour=10/fraud-detector-timeline.png", "hourly")
    assert chart.status_code == 200 and chart.headers["content-type"] == "image/png"
    assert view.get(DAILY_REPORT, "hourly").status_code == 403


def test_data_without_a_writer_needs_every_modelwatch_dag(view: View) -> None:
    assert view.get("/lake/reports/dt=2026-03-02/recommender.html", "all").status_code == 200
    # a partition with no verdict document at all: every modelwatch DAG, then "no such report"
    _write(view.lake, "reports/dt=2026-03-01/m.html", "<html>orphan</html>")
    assert view.get("/lake/reports/dt=2026-03-01/m.html", "daily").status_code == 403
    assert view.get("/lake/reports/dt=2026-03-01/m.html", "all").status_code == 200
    # a document naming a DAG that is not a modelwatch DAG does not open the day to that DAG's readers
    _write(view.lake, "verdicts/dt=2026-03-05/_verdict.json", json.dumps({"dag_id": "team_dag", "verdicts": []}))
    _write(view.lake, "reports/dt=2026-03-05/m.html", "<html>claimed</html>")
    assert view.get("/lake/reports/dt=2026-03-05/m.html", "team").status_code == 403
    assert view.get("/lake/reports/dt=2026-03-05/m.html", "all").status_code == 200


def test_the_calendar_shows_only_the_days_the_user_may_read_and_not_the_lakes_address(view: View) -> None:
    daily = view.get("/", "daily")
    assert daily.status_code == 200
    assert "03-03" in daily.text and "03-02" not in daily.text  # 03-02 names no DAG: every modelwatch DAG
    assert "1 day(s) not shown" in daily.text
    everything = view.get("/", "all")
    assert "03-03" in everything.text and "03-02" in everything.text and "not shown" not in everything.text
    for page in (daily, everything):
        assert view.lake.base_url not in page.text and "private-bucket-name" not in page.text
        assert "file://" not in page.text
    # a user who may read only the hourly DAG: the calendar (daily days) opens, with nothing in it
    hourly = view.get("/", "hourly")
    assert hourly.status_code == 200 and "03-03" not in hourly.text and "fraud-detector" not in hourly.text


def test_every_route_needs_a_login(view: View) -> None:
    for path in ("/", DAILY_PAGE, f"/day/{DAY}/fraud-detector", DAILY_REPORT, f"/run/{DAILY_DAG_ID}/r1"):
        assert view.get(path).status_code == 401, path


def test_without_a_login_airflows_own_dependency_answers_401(view: View) -> None:
    plugin.app.dependency_overrides.pop(get_user, None)  # Airflow's get_user: no cookie, no bearer token
    for path in ("/", DAILY_PAGE, DAILY_REPORT, f"/run/{DAILY_DAG_ID}/r1"):
        assert view.client.get(path).status_code == 401, path
    assert view.manager.asked == []


@pytest.mark.parametrize("path", ["/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect"])
def test_the_app_has_no_api_docs(view: View, path: str) -> None:
    assert view.get(path).status_code == 404
    assert view.get(path, "all").status_code == 404


@pytest.mark.parametrize("name", HOSTILE)
def test_any_model_name_opens_from_its_calendar_link(view: View, name: str) -> None:
    calendar = view.get("/", "daily").text
    links = [html.unescape(h) for h in re.findall(r"href='([^']+)'", calendar)]
    link = day_href(DAY, name)
    assert link in links
    page = view.get(f"/{link}", "daily")
    assert page.status_code == 200 and f"report of {html.escape(name)}" in page.text, (link, page.text[:200])
    if not {".", ".."} & set(name.split("/")) and "?" not in name and "#" not in name and "%" not in name:
        # the older address, the model as the rest of the path, for names a path can carry as they are
        assert f"report of {html.escape(name)}" in view.get(f"/day/{DAY}/{name}", "daily").text


def test_error_pages_say_what_is_missing_in_user_terms_not_where_the_lake_is(view: View) -> None:
    answers = {
        "missing report": view.get("/lake/reports/dt=2026-03-03/nobody.html", "daily"),
        "missing model": view.get(f"/day/{DAY}?model=nobody", "daily"),
        "not a report": view.get("/lake/verdicts/dt=2026-03-03/_verdict.json", "daily"),
        "bad day": view.get("/day/yesterday?model=m", "daily"),
    }
    assert {k: a.status_code for k, a in answers.items()} == {
        "missing report": 404, "missing model": 404, "not a report": 404, "bad day": 400}  # fmt: skip
    assert "nobody" in answers["missing model"].text and DAY in answers["missing model"].text
    for what, answer in answers.items():
        assert "file://" not in answer.text and str(view.root) not in answer.text, (what, answer.text)
        assert "private-bucket-name" not in answer.text, (what, answer.text)
    # a day with a verdict document but no data behind it: the page says so, not the partition's URL
    _write(view.lake, "verdicts/dt=2026-03-06/_verdict.json",
           json.dumps({"dag_id": DAILY_DAG_ID, "verdicts": _verdicts(["m"])}))  # fmt: skip
    answer = view.get("/day/2026-03-06?model=m", "daily")
    assert answer.status_code == 404 and "private-bucket-name" not in answer.text and "file://" not in answer.text


def test_a_runs_page_needs_a_modelwatch_dag_and_read_access_to_it(view: View) -> None:
    assert view.get("/run/team_dag/r1", "team").status_code == 404  # not a modelwatch DAG, whoever asks
    assert view.get("/run/team_dag/r1", "all").status_code == 404
    assert view.get(f"/run/{DAILY_DAG_ID}/r1", "team").status_code == 403
    assert view.get(f"/run/{HOURLY_DAG_ID}/r1", "daily").status_code == 403
