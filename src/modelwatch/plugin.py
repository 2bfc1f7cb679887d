"""The model-health view inside the Airflow UI: an Airflow 3 plugin (entry point ``airflow.plugins``).

The API server mounts a FastAPI app at :data:`modelwatch.report.VIEW_PREFIX` (``/modelwatch``) and the UI
shows it as "Model health" in its navigation (an external view, opened in the UI's frame):

- ``/modelwatch/``: models x days with their verdicts as a calendar, filtered by model and verdict
  (``?model=&verdict=``), each cell opening that day's report;
- ``/modelwatch/day/<YYYY-MM-DD>/<model>``: the report a run wrote, or one rendered on demand from the day's
  partitions (:func:`modelwatch.report.build_report`, the same page);
- ``/modelwatch/lake/<path>``: a report file of the lake (``reports/`` and ``adhoc/reports/`` only), the
  address alerts and verdict documents link to;
- ``/modelwatch/run/<dag_id>/<run_id>``: the reports of one DAG run (what the "Model report" button of a
  task's page opens).

Every route needs an Airflow login with read access to DAG runs (the token the UI keeps in its cookie, or a
bearer token): Airflow does not protect a plugin's app by itself. The lake is read through the same
:class:`modelwatch.storage.Lake` as the tasks, so ``file://`` and ``s3://`` lakes both work. Nothing heavy is
imported when the plugin loads: the routes import pandas and matplotlib when called.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk.bases.operatorlink import BaseOperatorLink
from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse, Response

from modelwatch.report import REPORTS, VIEW_PREFIX, alert_text, build_report, file_stem
from modelwatch.text import html_text

if TYPE_CHECKING:
    from airflow.models.taskinstancekey import TaskInstanceKey

    from modelwatch.storage import Lake

#: days shown by the calendar, the newest stored first
CALENDAR_DAYS = 28
#: the task whose XCom names a run's reports (the "Model report" button)
EVALUATE_TASK = "evaluate"
_COLORS = {"healthy": "#a5d6a7", "degraded": "#ef9a9a", "slow_unexplained": "#ffcc80", "no_data": "#e0e0e0"}
_CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".png": "image/png"}


def _read_access() -> Any:
    """Airflow's own check: a logged-in user allowed to read DAG runs (401 without a login, 403 without the
    permission)."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import requires_access_dag

    return Depends(requires_access_dag("GET", DagAccessEntity.RUN))


app = FastAPI(title="modelwatch model health", dependencies=[_read_access()])


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


def calendar_rows(documents: dict[str, dict[str, Any]], model: str = "", verdict: str = "") -> list[tuple[str, dict[str, dict[str, Any]]]]:
    """(model, {day: verdict as in ``_verdict.json``}) per model, sorted, keeping the models and days that pass
    the filters (a verdict filter keeps a model's matching days only)."""
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for day, doc in documents.items():
        for v in doc.get("verdicts", []):
            if model and v["model"] != model:
                continue
            if verdict and verdict not in (v["verdict"], f"quality_{v.get('quality')}", f"drift_{v.get('drift')}"):
                continue
            table.setdefault(v["model"], {})[day] = v
    return sorted(table.items())


def _day_window(day: str) -> Any:
    from modelwatch.window import Window

    try:
        return Window.of_day(date.fromisoformat(day))
    except ValueError:
        raise HTTPException(400, f"not a day: {day!r} (expected YYYY-MM-DD)") from None


@app.get("/", response_class=HTMLResponse)
def calendar(model: str = Query(""), verdict: str = Query("")) -> HTMLResponse:
    """Models x days, newest day first, each cell a verdict (Q: quality regressed, D: drifted) linking to
    the day's report."""
    lake, _ = _lake()
    days = lake.list_days("verdicts")[-CALENDAR_DAYS:][::-1]
    documents = {}
    for day in days:
        doc = lake.read_document(lake.document_url("verdicts", _day_window(day), "verdict"))
        if doc is not None:
            documents[day] = doc
    every_model = sorted({v["model"] for d in documents.values() for v in d.get("verdicts", [])})
    rows = calendar_rows(documents, model, verdict)
    options = "".join(f"<option{' selected' if m == model else ''}>{html_text(m)}</option>" for m in every_model)
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
            marks = ("Q" if v.get("quality") == "regressed" else "") + ("D" if v.get("drift") == "drifted" else "")
            href = f"day/{quote(day)}/{quote(name, safe='')}"
            cells.append(f"<td style='background:{_COLORS.get(v['verdict'], '#fff')}' title='{html_text(v['verdict'])}: "
                         f"{html_text(v.get('reason', ''))}'><a href='{html_text(href)}'>{html_text(v['verdict'][:1].upper())}{marks}</a></td>")  # fmt: skip
        body.append(f"<tr><td class=m>{html_text(name)}</td>{''.join(cells)}</tr>")
    legend = "".join(f"<span style='background:{c}'>{html_text(k)}</span>" for k, c in _COLORS.items())
    return _page("modelwatch: model health", (
        "<h1>Model health</h1>"
        f"<form method=get>model <select name=model><option value=''>all</option>{options}</select> verdict "
        f"<select name=verdict><option value=''>all</option>{verdicts}</select> <button>filter</button></form>"
        f"<p class=legend>{legend} Q quality regressed, D drifted; {len(rows)} model(s), {len(documents)} day(s) "
        f"of {html_text(lake.base_url)}</p>"
        f"<table id=calendar><thead><tr><th>model</th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    ))  # fmt: skip


@app.get("/day/{day}/{model}", response_class=HTMLResponse)
def day_report(day: str, model: str) -> HTMLResponse:
    """The report a run wrote for ``model`` on ``day``, else one rendered now from the day's partitions."""
    from modelwatch.storage import IncompletePartition
    from modelwatch.verdict import verdicts_from_frame

    lake, cfg = _lake()
    window = _day_window(day)
    stored = lake.read_bytes(f"{lake.partition_url(REPORTS, window)}/{file_stem(model)}.html")
    if stored is not None:
        return HTMLResponse(stored.decode())
    try:
        verdicts = [v for v in verdicts_from_frame(lake.read_frame("verdicts", window)) if v.model == model]
        if not verdicts:
            raise HTTPException(404, f"no verdict of model {model!r} on {day}")
        joined = lake.read_partition(lake.partition_url("joined", window), filters=[("model", "==", model)])
        instances = sorted({*joined["instance"].astype(str), ""})
        resources = lake.read_partition(lake.partition_url("resources", window), filters=[("instance", "in", instances)])
    except IncompletePartition as exc:
        raise HTTPException(404, f"{day} is not stored completely: {exc}") from None
    doc = lake.read_document(lake.document_url("verdicts", window, "verdict")) or {}
    reason = (doc.get("alert") or {}).get("reason", "unknown")
    report = build_report(verdicts[0], joined, resources, cfg, window, alert=alert_text(verdicts[0], {}, reason),
                          links={"verdict document": lake.document_url("verdicts", window, "verdict")})  # fmt: skip
    return HTMLResponse(report.html)


def servable(path: str) -> str | None:
    """The content type of a lake path the view serves: an HTML page or PNG chart under ``reports/`` or
    ``adhoc/reports/``, nothing above them (``..``); ``None`` for anything else."""
    parts = path.split("/")
    if ".." in parts or "" in parts or not (parts[0] == REPORTS or parts[:2] == ["adhoc", REPORTS]):
        return None
    return _CONTENT_TYPES.get(path[path.rfind("."):]) if "." in parts[-1] else None


@app.get("/lake/{path:path}")
def lake_file(path: str) -> Response:
    """A report file of the lake, by its path under the lake's base URL (reports only)."""
    kind = servable(path)
    if kind is None:
        raise HTTPException(404, "only report files are served")
    lake, _ = _lake()
    content = lake.read_bytes(f"{lake.base_url}/{path}")
    if content is None:
        raise HTTPException(404, f"no such report: {path}")
    return Response(content, media_type=kind)


@app.get("/run/{dag_id}/{run_id}", response_class=HTMLResponse)
def run_reports(dag_id: str, run_id: str) -> HTMLResponse:
    """The reports of one DAG run, from its ``evaluate`` task's XCom."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.scalars(XComModel.get_many(run_id=run_id, key="return_value", task_ids=EVALUATE_TASK,
                                                 dag_ids=dag_id, limit=1)).first()  # fmt: skip
        result = XComModel.deserialize_value(row) if row is not None else None
    if not result:
        raise HTTPException(404, f"run {run_id!r} of {dag_id!r} has no evaluate result (not finished, or failed)")
    lake, _ = _lake()
    reports = result.get("reports") or {}
    # relative to this page (/modelwatch/run/<dag>/<run>): the app's root is two levels up
    items = "".join(f"<li><a href='../../lake/{html_text(quote(where['file'].removeprefix(lake.base_url + '/')))}'>{html_text(m)}</a></li>"
                    for m, where in sorted(reports.items()))  # fmt: skip
    summary = "".join(f"<li>{html_text(m)}: {html_text(v)}</li>" for m, v in sorted((result.get("summary") or {}).items()))
    return _run_page(run_id, result, items, summary)


def _run_page(run_id: str, result: dict[str, Any], items: str, summary: str) -> HTMLResponse:
    return _page(f"modelwatch: {run_id}", (
        f"<h1>Run {html_text(run_id)}</h1><p>{html_text(result.get('reason', ''))}</p><h2>Reports</h2>"
        f"<ul>{items or '<li>none: no model needed a look</li>'}</ul><h2>Verdicts</h2><ul>{summary}</ul>"
        f"<p>verdict document: {html_text(result.get('verdict_document', ''))}</p>"
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
