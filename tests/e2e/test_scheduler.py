"""The monitoring DAG run by the real Airflow scheduler, as an operator runs it.

Airflow's API server, scheduler, DAG processor and triggerer run as separate processes (the ``airflow``
fixture) against the seeded stack. Through the REST API, as the UI does, the tests

- wait until the DAG processor has parsed ``model_performance_monitoring`` without import errors and
  make sure it is unpaused;
- trigger a run with the trigger form's ``window_start``/``window_end`` over 2026-03-03 (cpu_saturation:
  fraud-detector degraded, so the run pages);
- create a backfill of 2026-03-04..2026-03-06 with three runs at once (memory_pressure on the 6th is
  degraded for both models, but a backfill does not page);
- trigger a run whose window is inverted, which fails at once and emails.

All of it is submitted together and then awaited: the scheduler runs the manual runs, the backfill runs
and the scheduled run it creates for the latest day side by side, which keeps the module within a few
minutes on two cores. Each test then checks one outcome: run and task states, the partitions and
``_verdict.json`` in the lake (moto's S3, read through :class:`modelwatch.storage.Lake`: the ``lake`` fixture of
``conftest.py``), what Alertmanager passed to the webhook receiver, the mail in the SMTP sink.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from polling import wait_until

from devstack.airflow_services import AirflowApi, AirflowServices
from modelwatch.storage import Lake
from modelwatch.window import Window

pytestmark = pytest.mark.e2e

DAG_ID = "model_performance_monitoring"
DATASETS = ("resources", "predictions", "joined", "correlation", "verdicts")
CPU_DAY = date(2026, 3, 3)
BACKFILL_DAYS = (date(2026, 3, 4), date(2026, 3, 5), date(2026, 3, 6))
EXPECTED = {
    date(2026, 3, 3): {"fraud-detector": "degraded", "recommender": "healthy"},
    date(2026, 3, 4): {"fraud-detector": "slow_unexplained", "recommender": "healthy"},
    date(2026, 3, 5): {"fraud-detector": "healthy", "recommender": "healthy"},
    date(2026, 3, 6): {"fraud-detector": "degraded", "recommender": "degraded"},
}
TRIGGER_CONF = {"window_start": "2026-03-03T00:00:00+00:00", "window_end": "2026-03-04T00:00:00+00:00"}
BAD_CONF = {"window_start": "2026-03-05T00:00:00+00:00", "window_end": "2026-03-04T00:00:00+00:00"}
#: seconds for all runs together; they take about a minute and a half on two idle cores
RUN_TIMEOUT = 420.0


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _tasks(api: AirflowApi, run_id: str) -> dict[str, dict[str, Any]]:
    return {t["task_id"]: t for t in api.task_instances(DAG_ID, run_id)}


def _explain(api: AirflowApi, run_id: str) -> str:
    """Task states and the log of every failed task instance (each of a mapped task), for assertion messages."""
    lines = []
    for ti in api.task_instances(DAG_ID, run_id):
        index = ti.get("map_index", -1)
        name = ti["task_id"] + (f"[{index}]" if index >= 0 else "")
        lines.append(f"{name}: {ti['state']} (try {ti['try_number']})")
        if ti["state"] == "failed":
            lines.append(api.task_log(DAG_ID, run_id, ti["task_id"], max(1, ti["try_number"]), index)[-3000:])
    return "\n".join(lines)


@pytest.fixture(scope="module")
def api(airflow: AirflowServices) -> AirflowApi:
    """A REST client logged in as ``admin``, once the DAG is parsed."""
    client = airflow.api()
    client.wait_for_dag(DAG_ID, timeout=180, file_hint="model_performance_monitoring.py")
    return client


@pytest.fixture(scope="module")
def submitted(api: AirflowApi) -> dict[str, Any]:
    """Unpause the DAG, trigger the good and the bad run, create the backfill; nothing is awaited yet."""
    dag = api.unpause(DAG_ID)
    triggered = api.trigger(DAG_ID, conf=TRIGGER_CONF)
    bad = api.trigger(DAG_ID, conf=BAD_CONF)
    backfill = api.create_backfill(DAG_ID, BACKFILL_DAYS[0], BACKFILL_DAYS[-1], max_active_runs=3)
    return {
        "dag": dag,
        "triggered": triggered,
        "bad": bad,
        "backfill": backfill,
        "deadline": time.monotonic() + RUN_TIMEOUT,
    }


def _remaining(submitted: dict[str, Any]) -> float:
    return max(10.0, submitted["deadline"] - time.monotonic())


@pytest.fixture(scope="module")
def triggered_run(api: AirflowApi, submitted: dict[str, Any]) -> dict[str, Any]:
    return api.wait_for_run(DAG_ID, submitted["triggered"]["dag_run_id"], timeout=_remaining(submitted))


@pytest.fixture(scope="module")
def backfill_runs(api: AirflowApi, submitted: dict[str, Any]) -> dict[date, dict[str, Any]]:
    """The backfill's runs once all have finished, by the day they cover."""
    backfill = submitted["backfill"]

    def runs() -> list[tuple[str, str]]:
        return [(r["dag_run_id"], r["state"]) for r in api.backfill_runs(DAG_ID, backfill)]

    def finished(got: list[tuple[str, str]]) -> bool:
        return len(got) == len(BACKFILL_DAYS) and all(state in ("success", "failed") for _, state in got)

    wait_until(runs, until=finished, timeout=_remaining(submitted), interval=2,
               what=f"the {len(BACKFILL_DAYS)} runs of backfill {backfill['id']} to finish")  # fmt: skip
    return {_when(r["data_interval_start"]).date(): r for r in api.backfill_runs(DAG_ID, backfill)}  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def bad_run(api: AirflowApi, submitted: dict[str, Any]) -> dict[str, Any]:
    return api.wait_for_run(DAG_ID, submitted["bad"]["dag_run_id"], timeout=_remaining(submitted))


def _verdict(lake: Lake, day: date) -> dict[str, Any]:
    url = lake.document_url("verdicts", Window.of_day(day), "verdict")
    doc = lake.read_document(url)
    assert doc is not None, f"{url} is missing"
    return doc


# -- parsing and the trigger form ----------------------------------------------------------------------
def test_the_dag_is_parsed_without_import_errors_and_unpaused(
    api: AirflowApi, submitted: dict[str, Any]
) -> None:
    assert not [e for e in api.import_errors() if "model_performance_monitoring" in e["filename"]]
    assert submitted["dag"]["is_paused"] is False
    assert api.dag(DAG_ID)["is_paused"] is False


def test_a_triggered_run_covers_the_form_window_and_pages(
    api: AirflowApi, triggered_run: dict[str, Any], lake: Lake
) -> None:
    run_id = triggered_run["dag_run_id"]
    assert triggered_run["state"] == "success", _explain(api, run_id)
    # As from the UI form without a date: a manual run with no logical date, the window from the params.
    assert triggered_run["run_type"] == "manual" and triggered_run["logical_date"] is None
    assert triggered_run["conf"] == TRIGGER_CONF
    doc = _verdict(lake, CPU_DAY)
    assert doc["run_id"] == run_id
    assert doc["window"]["start"].startswith("2026-03-03T00:00:00") and doc["window"]["end"].startswith(
        "2026-03-04"
    )
    assert {v["model"]: v["verdict"] for v in doc["verdicts"]} == EXPECTED[CPU_DAY]
    assert doc["alert"]["post"] is True, doc["alert"]
    tasks = _tasks(api, run_id)
    assert tasks["post_alert"]["state"] == "success" and tasks["no_alert"]["state"] == "skipped"


# -- the backfill --------------------------------------------------------------------------------------
def test_the_backfill_runs_one_run_per_day_several_at_once(
    api: AirflowApi, submitted: dict[str, Any], backfill_runs: dict[date, dict[str, Any]]
) -> None:
    backfill = submitted["backfill"]
    assert backfill["max_active_runs"] == 3
    assert sorted(backfill_runs) == list(BACKFILL_DAYS)
    for day, run in backfill_runs.items():
        assert run["state"] == "success", _explain(api, run["dag_run_id"])
        assert run["run_type"] == "backfill"
        # --from-date/--to-date are logical dates; with the daily interval timetable the run of D covers D.
        assert _when(run["logical_date"]) == _midnight(day)
        assert _when(run["data_interval_start"]) == _midnight(day)
        assert _when(run["data_interval_end"]) == _midnight(day) + timedelta(days=1)
    spans = sorted((_when(r["start_date"]), _when(r["end_date"])) for r in backfill_runs.values())
    overlapping = max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)  # type: ignore[operator]
    assert overlapping >= 2, f"the backfill's runs never ran at the same time: {spans}"


def test_the_backfill_writes_each_days_partitions_and_verdicts(
    backfill_runs: dict[date, dict[str, Any]], lake: Lake
) -> None:
    for day, run in backfill_runs.items():
        for dataset in DATASETS:
            part = lake.partition_url(dataset, Window.of_day(day))
            assert lake.read_manifest(part) and lake.read_bytes(f"{part}/part-00000.parquet"), part
        doc = _verdict(lake, day)
        assert doc["run_id"] == run["dag_run_id"]
        assert {v["model"]: v["verdict"] for v in doc["verdicts"]} == EXPECTED[day], day
        assert doc["alert"]["post"] is False, (day, doc["alert"])


def test_a_degraded_day_in_a_backfill_is_not_paged_and_says_why(
    api: AirflowApi, backfill_runs: dict[date, dict[str, Any]], lake: Lake
) -> None:
    day = BACKFILL_DAYS[-1]  # memory_pressure: both models degraded
    alert = _verdict(lake, day)["alert"]
    assert alert["post"] is False
    assert "backfill" in alert["reason"] and "page_on_backfill" in alert["reason"], alert
    assert alert["payload"], "the alert payload is kept even when it is not sent"
    tasks = _tasks(api, backfill_runs[day]["dag_run_id"])
    assert tasks["post_alert"]["state"] == "skipped" and tasks["no_alert"]["state"] == "success"


def test_alertmanager_got_the_triggered_runs_alert_and_none_from_the_backfill(
    seeded_stack: Any, triggered_run: dict[str, Any], backfill_runs: dict[date, dict[str, Any]], e2e_alertname: str
) -> None:
    run_id = triggered_run["dag_run_id"]

    def ours() -> list[dict[str, Any]]:
        return [
            a for n in seeded_stack.webhook_notifications() for a in n.get("alerts", [])
            if a["labels"].get("alertname") == e2e_alertname
        ]  # fmt: skip

    def seen(alerts: list[dict[str, Any]]) -> set[tuple[str, str]]:
        return {(a["annotations"]["window"][:10], a["labels"]["model"]) for a in alerts}

    # the triggered run and the backfill are over (the fixtures): wait for the triggered run's alert, then
    # check that it came alone (a backfill does not page)
    alerts = wait_until(ours, until=lambda got: seen(got) >= {(CPU_DAY.isoformat(), "fraud-detector")},
                        timeout=30, interval=1, what="the webhook receiver to get the triggered run's alert")  # fmt: skip
    assert seen(alerts) == {(CPU_DAY.isoformat(), "fraud-detector")}, seen(alerts)
    for a in alerts:
        assert a["annotations"]["airflow_run"].endswith(f"/runs/{quote(run_id, safe='')}"), a["annotations"]
        assert "cpu" in a["labels"]["resources"].split(",")
    backfilled = {d.isoformat() for d in BACKFILL_DAYS}
    assert not [a for a in alerts if a["annotations"]["window"][:10] in backfilled]


# -- failure -------------------------------------------------------------------------------------------
def test_an_invalid_window_fails_at_once_and_emails(
    api: AirflowApi, seeded_stack: Any, bad_run: dict[str, Any], airflow: AirflowServices
) -> None:
    run_id = bad_run["dag_run_id"]
    assert bad_run["state"] == "failed"
    tasks = _tasks(api, run_id)
    failed = sorted(t for t, ti in tasks.items() if ti["state"] == "failed")
    assert failed == ["extract_predictions", "extract_resources"], _explain(api, run_id)
    assert all(tasks[t]["try_number"] == 1 for t in failed), "an invalid window must not be retried"

    def mails_of_the_run() -> list[dict[str, Any]]:
        return [
            m for m in seeded_stack.mail() if run_id in m["subject"] and "missed its deadline" not in m["subject"]
        ]

    # the run is over: one failure email per failed task is on its way
    mails = wait_until(mails_of_the_run, until=lambda got: len(got) >= len(failed), timeout=30, interval=1,
                       what=f"a failure email for each of {failed}")  # fmt: skip
    assert sorted(m["subject"].split("task ")[1].split()[0] for m in mails) == failed, [
        m["subject"] for m in mails
    ]
    for mail in mails:
        assert DAG_ID in mail["subject"]
        assert "ml-oncall@localhost" in str(mail["to"])
        assert "invalid window" in mail["body"]
        # The log link points at this Airflow's UI.
        assert f"{airflow.config.base_url}/dags/{DAG_ID}/runs/" in mail["body"], mail["body"]


# -- what it shows: the model-health view and the report, in a real browser ---------------------------
#: screenshots kept for a person to look at after the run (git-ignored)
ARTIFACTS = Path(__file__).resolve().parents[2] / ".artifacts"


def _browser_login(api: AirflowApi) -> list[dict[str, Any]]:
    """The cookie Airflow's UI keeps its login in, for the browser (a real token of the admin user)."""
    return [{"name": "_token", "value": api.token(), "url": api.base_url}]


def test_the_views_need_an_airflow_login(airflow: AirflowServices, triggered_run: dict[str, Any]) -> None:
    import urllib.error
    import urllib.request

    for path in ("/modelwatch/", f"/modelwatch/day/{CPU_DAY}/fraud-detector"):
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.build_opener(urllib.request.ProxyHandler({})).open(airflow.config.base_url + path, timeout=30)
        assert denied.value.code == 401, path


def test_the_model_health_view_shows_the_degraded_day_in_a_real_browser(
    api: AirflowApi, triggered_run: dict[str, Any], backfill_runs: dict[date, dict[str, Any]]
) -> None:
    from browser import open_page

    # the UI lists the view in its navigation
    plugins = {p["name"]: p for p in api.request("GET", "/api/v2/plugins")["plugins"]}
    assert [v["href"] for v in plugins["modelwatch"]["external_views"]] == ["modelwatch/"]
    page = open_page(f"{api.base_url}/modelwatch/?verdict=degraded", cookies=_browser_login(api),
                     screenshot=ARTIFACTS / "model-health-view.png")  # fmt: skip
    assert page.status == 200 and not page.console_errors and not page.failed_requests, page
    assert "Model health" in page.text and "fraud-detector" in page.text and "recommender" in page.text
    # the degraded days only: 03-03 (fraud-detector) and 03-06 (both), each cell a link to its report
    assert "03-03" in page.text and "03-06" in page.text


def test_a_degraded_days_report_opens_with_its_charts_and_names_model_and_resource(
    api: AirflowApi, triggered_run: dict[str, Any], e2e_alertname: str, seeded_stack: Any
) -> None:
    from browser import open_page

    # the address the alert carries (annotation report), as the person paged opens it
    alert = wait_until(lambda: [a for n in seeded_stack.webhook_notifications() for a in n.get("alerts", [])
                                if a["labels"].get("alertname") == e2e_alertname],
                       until=bool, timeout=30, interval=1, what="the triggered run's alert")  # fmt: skip
    link = alert[0]["annotations"]["report"]
    assert link == f"{api.base_url}/modelwatch/lake/reports/dt={CPU_DAY}/fraud-detector.html"
    page = open_page(link, cookies=_browser_login(api), screenshot=ARTIFACTS / "report-cpu-day.png")
    assert page.status == 200 and not page.console_errors and not page.failed_requests, page
    assert page.images == 2 and not page.broken_images, page.broken_images  # the timeline and the quality chart
    assert "fraud-detector" in page.text and "degraded" in page.text and "cpu" in page.text
    assert "Evidence per resource" in page.text and f"pages as {e2e_alertname}" in page.text
    assert page.load_seconds < 3, page.load_seconds
    # the day's other model is healthy: no stored page, rendered on demand from the day's partitions
    healthy = open_page(f"{api.base_url}/modelwatch/day/{CPU_DAY}/recommender", cookies=_browser_login(api))
    assert healthy.status == 200 and "recommender" in healthy.text and "healthy" in healthy.text, healthy.text[:300]
    assert healthy.images >= 1 and not healthy.broken_images and not healthy.console_errors


def test_the_evaluate_task_has_a_model_report_button(api: AirflowApi, triggered_run: dict[str, Any]) -> None:
    from browser import open_page

    run_id = triggered_run["dag_run_id"]
    links = api.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}/taskInstances/evaluate/links")
    url = links["extra_links"]["Model report"]
    assert url == f"{api.base_url}/modelwatch/run/{DAG_ID}/{quote(run_id, safe='')}"
    page = open_page(url, cookies=_browser_login(api))
    assert page.status == 200 and "fraud-detector" in page.text and not page.console_errors, page.text[:300]
