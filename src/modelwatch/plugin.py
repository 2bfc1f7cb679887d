"""The model-health view inside the Airflow UI: an Airflow 3 plugin (entry point ``airflow.plugins``).

The API server mounts a FastAPI app at :data:`modelwatch.report.VIEW_PREFIX` (``/modelwatch``) and the UI
shows it as "Model health" in its navigation (an external view, opened in the UI's frame):

- ``/modelwatch/``: models x days with their verdicts as a calendar, filtered by model and verdict
  (``?model=&verdict=``), each cell opening that day's report;
- ``/modelwatch/day/<YYYY-MM-DD>?model=<model>`` (also ``/day/<YYYY-MM-DD>/<model>``, the model may hold
  ``/``): the report a run wrote, or one rendered on demand from the day's partitions
  (:func:`modelwatch.report.build_report`, the same page);
- ``/modelwatch/lake/<path>``: a report file of the lake (``reports/``, ``intraday/reports/`` and
  ``adhoc/reports/`` only), the address alerts and verdict documents link to;
- ``/modelwatch/run/<dag_id>/<run_id>``: the reports of one run of a modelwatch DAG (what the "Model
  report" button of a task's page opens).

Who may see what (Airflow does not protect a plugin's app by itself; every route asks Airflow's auth manager
itself, with the user of the Airflow login: the token the UI keeps in its cookie, or a bearer token; 401
without one, 403 without the permission). The permission is Airflow's "read DAG runs" of the DAG that
*wrote* the data, never of a DAG the caller names:

- the writer of a partition is the ``dag_id`` of its verdict document (``verdicts/<partition>/_verdict.json``;
  a report's partition ``[intraday/|adhoc/]reports/<partition>/`` is its verdict document's). A partition
  whose document names no modelwatch DAG (older data, or no document) needs every modelwatch DAG;
- a modelwatch DAG is one tagged ``modelwatch`` in Airflow's metadata database, or one of
  :data:`modelwatch.monitoring_dag.MONITORING_DAG_IDS`;
- the calendar shows only the days the user may read (as Airflow's own DAG list shows only readable DAGs)
  and says how many it leaves out; a user who may read no modelwatch DAG at all gets 403;
- ``/day/...`` and ``/lake/...`` need the partition's writer; ``/run/<dag_id>/...`` needs ``dag_id``, which
  must be a modelwatch DAG (404 otherwise).

The app has no API docs (``openapi.json``, ``/docs``, ``/redoc`` are off), and no page or error of it shows
the lake's base URL or a lake path outside ``/lake/`` (an s3 URL names a bucket). The lake is read through
the same :class:`modelwatch.storage.Lake` as the tasks, so ``file://`` and ``s3://`` lakes both work. Nothing
heavy is imported when the plugin loads: the routes import pandas and matplotlib when called.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.api_fastapi.core_api.security import GetUserDep
from airflow.plugins_manager import AirflowPlugin
from airflow.sdk.bases.operatorlink import BaseOperatorLink
from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse, Response

from modelwatch.report import REPORTS, VIEW_PREFIX, alert_text, build_report, relative_path
from modelwatch.text import html_text

if TYPE_CHECKING:
    from airflow.api_fastapi.auth.managers.base_auth_manager import BaseAuthManager
    from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
    from airflow.models.taskinstancekey import TaskInstanceKey

    from modelwatch.storage import Lake

#: days shown by the calendar, the newest stored first
CALENDAR_DAYS = 28
#: the task whose XCom names a run's reports (the "Model report" button)
EVALUATE_TASK = "evaluate"
#: the lake's table folders whose reports the view serves ("" is the daily table at the top)
REPORT_TABLES = ("", "intraday", "adhoc")
_COLORS = {"healthy": "#a5d6a7", "degraded": "#ef9a9a", "slow_unexplained": "#ffcc80", "no_data": "#e0e0e0"}
_CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".png": "image/png"}

# No API docs: /openapi.json, /docs and /redoc would answer without a login (and say nothing a user needs).
app = FastAPI(title="modelwatch model health", openapi_url=None, docs_url=None, redoc_url=None)


# -- who may read what -----------------------------------------------------------------------------------
def _auth_manager() -> BaseAuthManager:
    from airflow.api_fastapi.app import get_auth_manager

    return get_auth_manager()


def modelwatch_dags() -> frozenset[str]:
    """The modelwatch DAGs: those tagged ``modelwatch`` in the metadata database, and the monitoring DAGs
    (:data:`~modelwatch.monitoring_dag.MONITORING_DAG_IDS`) even before the DAG processor has stored them,
    so "every modelwatch DAG" is never an empty, vacuous condition."""
    from airflow.models.dag import DagTag
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from modelwatch.monitoring_dag import MONITORING_DAG_IDS, Tag

    with create_session() as session:
        tagged = session.scalars(select(DagTag.dag_id).where(DagTag.name == str(Tag.MODELWATCH))).all()
    return frozenset({*MONITORING_DAG_IDS, *tagged})


def _team_names(dag_ids: list[str]) -> dict[str, str | None]:
    """dag_id -> its team (multi-team Airflow), as Airflow's own ``requires_access_dag`` passes it."""
    from airflow.models.dag import DagModel

    return DagModel.get_dag_id_to_team_name_mapping(dag_ids)


class Access:
    """One request's permission checks: whether ``user`` may read the DAG runs of DAGs, each asked once."""

    def __init__(self, user: BaseUser) -> None:
        self.user = user
        self._known: dict[str, bool] = {}
        self._dags: frozenset[str] | None = None

    @property
    def dags(self) -> frozenset[str]:
        """The modelwatch DAGs (:func:`modelwatch_dags`), read once per request."""
        if self._dags is None:
            self._dags = modelwatch_dags()
        return self._dags

    def may_read(self, dag_ids: Iterable[str]) -> bool:
        """Whether the user may read the runs of every DAG of ``dag_ids`` (False for none at all)."""
        from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

        wanted = sorted(set(dag_ids))
        unknown = [d for d in wanted if d not in self._known]
        if unknown:
            teams = _team_names(unknown)
            manager = _auth_manager()
            for dag_id in unknown:
                self._known[dag_id] = bool(manager.is_authorized_dag(
                    method="GET", access_entity=DagAccessEntity.RUN,
                    details=DagDetails(id=dag_id, team_name=teams.get(dag_id)), user=self.user))  # fmt: skip
        return bool(wanted) and all(self._known[d] for d in wanted)

    def writers(self, document: Any) -> frozenset[str]:
        """The DAGs whose permission a partition needs: the modelwatch DAG its verdict document names, else
        every modelwatch DAG (no document, no ``dag_id``, or one that is not a modelwatch DAG)."""
        dag_id = document.get("dag_id") if isinstance(document, dict) else None
        if isinstance(dag_id, str) and dag_id in self.dags:
            return frozenset({dag_id})
        return self.dags

    def require(self, dag_ids: Iterable[str], what: str = "the DAG that wrote this") -> None:
        """403 unless the user may read the runs of every DAG of ``dag_ids`` (``what`` names them)."""
        if not self.may_read(dag_ids):
            raise HTTPException(403, f"Forbidden: you may not read the runs of {what}")


# -- pages ---------------------------------------------------------------------------------------------------
def _lake() -> tuple[Lake, Any]:
    from modelwatch.config import load_config
    from modelwatch.storage import Lake

    cfg = load_config()
    return Lake(cfg.storage.base_url, cfg.storage.aws_conn_id), cfg


def _page(title: str, body: str) -> HTMLResponse:
    style = ("body{font-family:system-ui,sans-serif;margin:1rem;color:#212121}table{border-collapse:collapse;"
             "font-size:.8rem}td,th{border:1px solid #ddd;padding:.25rem .4rem;text-align:center}"
             "td.m{text-align:left}a{color:inherit}.legend span{padding:.1rem .5rem;margin-right:.3rem}")  # fmt: skip
    return HTMLResponse(f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html_text(title)}</title>"
                        f"<style>{style}</style></head><body>{body}</body></html>")  # fmt: skip


def calendar_rows(
    documents: dict[str, dict[str, Any]], model: str = "", verdict: str = ""
) -> list[tuple[str, dict[str, dict[str, Any]]]]:
    """(model, {day: verdict as in ``_verdict.json``}) per model, sorted, keeping the models and days that pass
    the filters (a verdict filter keeps a model's matching days only)."""
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for day, doc in documents.items():
        for v in doc.get("verdicts", []):
            if model and v["model"] != model:
                continue
            if verdict and verdict not in (
                v["verdict"],
                f"quality_{v.get('quality')}",
                f"drift_{v.get('drift')}",
            ):
                continue
            table.setdefault(v["model"], {})[day] = v
    return sorted(table.items())


def day_href(day: str, model: str) -> str:
    """The link of ``model``'s report on ``day``, relative to the app's root: the model travels as a query
    parameter, so any name (``/``, ``%``, ``?``, ``#``, ``..``, unicode, hundreds of characters) stays one
    value that no browser or proxy normalises."""
    return f"day/{quote(day, safe='')}?model={quote(model, safe='')}"


def _day_window(day: str) -> Any:
    from modelwatch.window import Window

    try:
        return Window.of_day(date.fromisoformat(day))
    except ValueError:
        raise HTTPException(400, f"not a day: {day!r} (expected YYYY-MM-DD)") from None


@app.get("/", response_class=HTMLResponse)
def calendar(user: GetUserDep, model: str = Query(""), verdict: str = Query("")) -> HTMLResponse:
    """Models x days, newest day first, each cell a verdict (Q: quality regressed, D: drifted) linking to
    the day's report; only the days whose writer the user may read."""
    access = Access(user)
    if not any(access.may_read([d]) for d in sorted(access.dags)):
        raise HTTPException(403, "Forbidden: you may not read the runs of any modelwatch DAG")
    lake, _ = _lake()
    days = lake.list_days("verdicts")[-CALENDAR_DAYS:][::-1]
    documents, hidden = {}, 0
    for day in days:
        doc = lake.read_document(lake.document_url("verdicts", _day_window(day), "verdict"))
        if doc is None:
            continue
        if access.may_read(access.writers(doc)):
            documents[day] = doc
        else:
            hidden += 1
    every_model = sorted({v["model"] for d in documents.values() for v in d.get("verdicts", [])})
    rows = calendar_rows(documents, model, verdict)
    options = "".join(
        f"<option{' selected' if m == model else ''}>{html_text(m)}</option>" for m in every_model
    )
    kinds = ["degraded", "slow_unexplained", "no_data", "healthy", "quality_regressed", "drift_drifted"]
    verdicts = "".join(f"<option{' selected' if k == verdict else ''}>{html_text(k)}</option>" for k in kinds)
    head = "".join(f"<th>{html_text(d[5:])}</th>" for d in documents)
    body = []
    for name, per_day in rows:
        cells = []
        for day in documents:
            v = per_day.get(day)
            if v is None:
                cells.append("<td></td>")
                continue
            marks = ("Q" if v.get("quality") == "regressed" else "") + (
                "D" if v.get("drift") == "drifted" else ""
            )
            cells.append(f"<td style='background:{_COLORS.get(v['verdict'], '#fff')}' title='{html_text(v['verdict'])}: "
                         f"{html_text(v.get('reason', ''))}'><a href='{html_text(day_href(day, name))}'>"
                         f"{html_text(v['verdict'][:1].upper())}{marks}</a></td>")  # fmt: skip
        body.append(f"<tr><td class=m>{html_text(name)}</td>{''.join(cells)}</tr>")
    legend = "".join(f"<span style='background:{c}'>{html_text(k)}</span>" for k, c in _COLORS.items())
    not_shown = f"; {hidden} day(s) not shown: written by a DAG whose runs you may not read" if hidden else ""
    return _page("modelwatch: model health", (
        "<h1>Model health</h1>"
        f"<form method=get>model <select name=model><option value=''>all</option>{options}</select> verdict "
        f"<select name=verdict><option value=''>all</option>{verdicts}</select> <button>filter</button></form>"
        f"<p class=legend>{legend} Q quality regressed, D drifted; {len(rows)} model(s), {len(documents)} "
        f"day(s){not_shown}</p>"
        f"<table id=calendar><thead><tr><th>model</th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    ))  # fmt: skip


@app.get("/day/{day}", response_class=HTMLResponse)
def day_report(user: GetUserDep, day: str, model: str = Query(..., min_length=1)) -> HTMLResponse:
    """The report a run wrote for ``model`` on ``day``, else one rendered now from the day's partitions."""
    from modelwatch.storage import IncompletePartition
    from modelwatch.verdict import verdicts_from_frame

    window = _day_window(day)
    lake, cfg = _lake()
    access = Access(user)
    doc = lake.read_document(lake.document_url("verdicts", window, "verdict"))
    access.require(access.writers(doc))
    stored = lake.read_bytes(f"{lake.base_url}/{relative_path(lake, window, model)}")
    if stored is not None:
        return HTMLResponse(stored.decode())
    missing = HTTPException(404, f"no verdict of model {model!r} on {day}")
    if doc is None:
        raise missing
    try:
        # through the window's commit: the verdict, its joined rows and its samples are one run's
        verdicts = [
            v for v in verdicts_from_frame(lake.read_committed("verdicts", window)) if v.model == model
        ]
        if not verdicts:
            raise missing
        joined = lake.read_committed("joined", window, filters=[("model", "==", model)])
        instances = sorted({*joined["instance"].astype(str), ""})
        resources = lake.read_committed("resources", window, filters=[("instance", "in", instances)])
    except IncompletePartition:
        raise HTTPException(404, f"the data of {day} is not stored completely (a run of that day is unfinished "
                                 f"or failed): no report of model {model!r}") from None  # fmt: skip
    reason = (doc.get("alert") or {}).get("reason", "unknown")
    report = build_report(
        verdicts[0], joined, resources, cfg, window, alert=alert_text(verdicts[0], {}, reason)
    )
    return HTMLResponse(report.html)


@app.get("/day/{day}/{model:path}", response_class=HTMLResponse)
def day_report_by_path(user: GetUserDep, day: str, model: str) -> HTMLResponse:
    """The same page by the older address (the model as the rest of the path, ``/`` included)."""
    return day_report(user, day, model)


def _report_parts(path: str) -> tuple[str, list[str], str] | None:
    """(table folder, partition keys, file name) of a report file's lake path, or ``None`` if it is not one:
    ``[intraday/|adhoc/]reports/<key=value>/.../<name>``, nothing above them (``..``)."""
    parts = path.split("/")
    if ".." in parts or "." in parts or "" in parts:
        return None
    table = parts[0] if parts[0] in REPORT_TABLES[1:] else ""
    rest = parts[1:] if table else parts
    if len(rest) < 3 or rest[0] != REPORTS or not all("=" in key for key in rest[1:-1]):
        return None
    return table, rest[1:-1], rest[-1]


def servable(path: str) -> str | None:
    """The content type of a lake path the view serves: an HTML page or PNG chart under ``reports/``,
    ``intraday/reports/`` or ``adhoc/reports/``, nothing above them (``..``); ``None`` for anything else."""
    found = _report_parts(path)
    if found is None or "." not in found[2]:
        return None
    return _CONTENT_TYPES.get(found[2][found[2].rfind(".") :])


def verdict_document_path(path: str) -> str | None:
    """The lake path of the verdict document of a report file's partition (who wrote the report):
    ``intraday/reports/dt=D/hour=H/x.html`` -> ``intraday/verdicts/dt=D/hour=H/_verdict.json``."""
    found = _report_parts(path)
    if found is None:
        return None
    table, keys, _ = found
    return "/".join([*([table] if table else []), "verdicts", *keys, "_verdict.json"])


@app.get("/lake/{path:path}")
def lake_file(user: GetUserDep, path: str) -> Response:
    """A report file of the lake, by its path under the lake's base URL (reports only)."""
    kind, document = servable(path), verdict_document_path(path)
    if kind is None or document is None:
        raise HTTPException(404, "not a report: only report pages and charts are served here")
    lake, _ = _lake()
    access = Access(user)
    access.require(access.writers(lake.read_document(f"{lake.base_url}/{document}")))
    content = lake.read_bytes(f"{lake.base_url}/{path}")
    if content is None:
        raise HTTPException(
            404, "no such report: the run that would write it has not, or a later run replaced it"
        )
    return Response(content, media_type=kind)


@app.get("/run/{dag_id}/{run_id}", response_class=HTMLResponse)
def run_reports(user: GetUserDep, dag_id: str, run_id: str) -> HTMLResponse:
    """The reports of one run of a modelwatch DAG, from its ``evaluate`` task's XCom."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    access = Access(user)
    if dag_id not in access.dags:
        raise HTTPException(404, f"{dag_id!r} is not a modelwatch DAG")
    access.require([dag_id], f"DAG {dag_id!r}")
    with create_session() as session:
        row = session.scalars(XComModel.get_many(run_id=run_id, key="return_value", task_ids=EVALUATE_TASK,
                                                 dag_ids=dag_id, limit=1)).first()  # fmt: skip
        result = XComModel.deserialize_value(row) if row is not None else None
    if not result:
        raise HTTPException(
            404, f"run {run_id!r} of {dag_id!r} has no evaluate result (not finished, or failed)"
        )
    lake, _ = _lake()
    reports = result.get("reports") or {}

    def under_lake(url: Any) -> str:
        return str(url or "").removeprefix(lake.base_url + "/")

    # relative to this page (/modelwatch/run/<dag>/<run>): the app's root is two levels up
    items = "".join(f"<li><a href='../../lake/{html_text(quote(under_lake(where['file'])))}'>{html_text(m)}</a></li>"
                    for m, where in sorted(reports.items()))  # fmt: skip
    summary = "".join(
        f"<li>{html_text(m)}: {html_text(v)}</li>" for m, v in sorted((result.get("summary") or {}).items())
    )
    return _run_page(run_id, result, items, summary, under_lake(result.get("verdict_document")))


def _run_page(run_id: str, result: dict[str, Any], items: str, summary: str, document: str) -> HTMLResponse:
    return _page(f"modelwatch: {run_id}", (
        f"<h1>Run {html_text(run_id)}</h1><p>{html_text(result.get('reason', ''))}</p><h2>Reports</h2>"
        f"<ul>{items or '<li>none: no model needed a look</li>'}</ul><h2>Verdicts</h2><ul>{summary}</ul>"
        f"<p>verdict document: {html_text(document)}</p>"
    ))  # fmt: skip


class ReportLink(BaseOperatorLink):
    """The "Model report" button of a modelwatch run's ``evaluate`` task: the run's reports."""

    name = "Model report"

    def get_link(self, operator: Any, *, ti_key: TaskInstanceKey) -> str:
        if ti_key.task_id != EVALUATE_TASK:
            return ""
        from airflow.configuration import conf

        base = conf.get("api", "base_url", fallback="").rstrip("/")
        return f"{base}{VIEW_PREFIX}/run/{quote(ti_key.dag_id, safe='')}/{quote(ti_key.run_id, safe='')}"


class ModelwatchPlugin(AirflowPlugin):
    """Registers the model-health view and the "Model report" button."""

    name = "modelwatch"
    fastapi_apps = [{"app": app, "url_prefix": VIEW_PREFIX, "name": "modelwatch model health"}]
    external_views = [{"name": "Model health", "href": f"{VIEW_PREFIX.lstrip('/')}/", "destination": "nav",
                       "url_route": "model-health"}]  # fmt: skip
    global_operator_extra_links = [ReportLink()]
