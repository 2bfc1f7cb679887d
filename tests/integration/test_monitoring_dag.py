"""The monitoring DAG under ``dag.test()`` against the real seeded stack, one run per scenario day."""

from __future__ import annotations

import json
import urllib.request
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from config_helpers import own_alertnames
from polling import wait_until
from webhook import until_notified

from devstack.runner import load_dag, run_day
from devstack.scenarios import TEST_DAYS

DAG_ID = "model_performance_monitoring"
EXPECTED = {
    "normal": {"fraud-detector": "healthy", "recommender": "healthy"},
    "cpu_saturation": {"fraud-detector": "degraded", "recommender": "healthy"},
    "slow_unexplained": {"fraud-detector": "slow_unexplained", "recommender": "healthy"},
    "saturation_no_slow": {"fraud-detector": "healthy", "recommender": "healthy"},
    "memory_pressure": {"fraud-detector": "degraded", "recommender": "degraded"},
    "no_data": {"fraud-detector": "no_data", "recommender": "no_data"},
}
EXPECTED_RESOURCE = {"cpu_saturation": "cpu", "memory_pressure": "memory"}


def _day(name: str) -> date:
    return next(d for d, s in TEST_DAYS.items() if s == name)


def _webhook_alerts(stack, alertname: str) -> list[dict]:
    with urllib.request.urlopen(f"{stack.config.webhook_url}/alerts", timeout=5) as resp:
        notifications = json.loads(resp.read())
    return [a for n in notifications for a in n.get("alerts", []) if a["labels"].get("alertname") == alertname]


@pytest.fixture
def monitoring_dag(airflow_db):
    """A freshly parsed DAG: one object per ``dag.test()`` (see :func:`devstack.runner.load_dag`)."""
    from devstack.runner import load_dag

    return load_dag(DAG_ID)


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    return f"file://{tmp_path_factory.mktemp('lake')}"


@pytest.fixture(scope="module")
def alertname(tmp_path_factory):
    """This module's own alert name, in a copy of thresholds.yaml that MODELWATCH_CONFIG points at.

    Alertmanager identifies an alert by its labels, and other tests of the session post alerts for the
    same models: a name of this module's own keeps its pages apart (a second post of one alert pages no one).
    """
    import uuid

    import yaml

    raw = yaml.safe_load((Path(__file__).resolve().parents[2] / "include" / "thresholds.yaml").read_text())
    own_alertnames(raw, f"ModelPredictionsDegraded{uuid.uuid4().hex[:8]}")
    path = tmp_path_factory.mktemp("config") / "thresholds.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    mp = pytest.MonkeyPatch()
    mp.setenv("MODELWATCH_CONFIG", str(path))
    yield raw["alerting"]["alertname"]
    mp.undo()


#: scenario -> what each day's publish_verdicts task returned, read right after its run (a later dag.test() of
#: the same logical date in another module replaces the run's task instances)
PUBLISHED: dict[str, dict] = {}


@pytest.fixture(scope="module")
def runs(seeded_stack, airflow_db, lake, alertname):
    """Run the DAG once per scenario day; return {scenario: (dag_run, verdict document)}."""
    from devstack.runner import task_states, xcom
    from modelwatch.storage import Lake
    from modelwatch.window import Window

    mp = pytest.MonkeyPatch()
    for key, value in seeded_stack.config.airflow_env().items():
        mp.setenv(key, value)
    mp.setenv("MODELWATCH_STORAGE_URL", lake)
    results = {}
    try:
        for day, scenario in sorted(TEST_DAYS.items()):
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            dag_run = run_day(day, DAG_ID)
            window = Window(start, start + timedelta(days=1))
            doc = Lake(lake).read_document(f"{Lake(lake).partition_url('verdicts', window)}/_verdict.json")
            results[scenario] = (dag_run, doc)
            PUBLISHED[scenario] = {"state": task_states(dag_run).get("publish_verdicts"),
                                   **(xcom(dag_run, "publish_verdicts") or {})}  # fmt: skip
            until_notified(seeded_stack, Lake(lake).read_document(doc["alert"]["payload"]) if doc["alert"]["payload"]
                           else [])  # fmt: skip
    finally:
        mp.undo()
    return results


@pytest.mark.parametrize("scenario", list(EXPECTED))
def test_each_scenario_gets_its_verdict(runs, scenario):
    dag_run, doc = runs[scenario]
    assert str(getattr(dag_run.state, "value", dag_run.state)) == "success"
    got = {v["model"]: v["verdict"] for v in doc["verdicts"]}
    assert got == EXPECTED[scenario]
    start = _day(scenario).isoformat()
    assert doc["window"]["start"].startswith(start)


@pytest.mark.parametrize("scenario", ["cpu_saturation", "memory_pressure"])
def test_degraded_verdict_names_the_saturated_resource(runs, scenario):
    _, doc = runs[scenario]
    for v in doc["verdicts"]:
        if v["verdict"] == "degraded":
            names = [e["resource"] for e in v["saturated_resources"]]
            assert EXPECTED_RESOURCE[scenario] in names
            evidence = next(e for e in v["saturated_resources"] if e["resource"] == EXPECTED_RESOURCE[scenario])
            assert evidence["slow_value_median"] >= evidence["threshold"]


def test_alerts_reach_the_webhook_exactly_for_degraded_days(runs, seeded_stack, alertname):
    degraded = {
        (s, m) for s, expected in EXPECTED.items() for m, verdict in expected.items() if verdict == "degraded"
    }

    def seen() -> set[tuple[str | None, str]]:
        got = set()
        for alert in _webhook_alerts(seeded_stack, alertname):
            window = alert["annotations"].get("window", "")
            scenario = next((s for d, s in TEST_DAYS.items() if window.startswith(d.isoformat())), None)
            got.add((scenario, alert["labels"]["model"]))
            if scenario in EXPECTED_RESOURCE:
                assert EXPECTED_RESOURCE[scenario] in alert["labels"]["resources"].split(",")
        return got

    # every run is over (the fixture): all alerts were posted before this wait, which ends when the degraded
    # days' have come through; an alert for another day would have been posted just as early
    got = wait_until(seen, until=lambda got: got >= degraded, timeout=30, interval=0.5,
                     what=f"the webhook receiver to get the alerts of {sorted(degraded)}")  # fmt: skip
    assert got == degraded


def test_an_expected_model_without_predictions_pages_once_with_its_own_labels(runs, seeded_stack, alertname):
    """The no_data day: both expected models logged nothing, and silence is an incident of its own kind."""
    missing, day = f"{alertname}Missing", _day("no_data").isoformat()

    def firing() -> list[dict]:
        return [a for a in _webhook_alerts(seeded_stack, missing) if a["status"] == "firing"]

    # every run is over (the fixture), so every alert was posted before this wait
    got = wait_until(firing, until=lambda got: len({a["labels"]["model"] for a in got}) == 2, timeout=30,
                     interval=0.5, what=f"the webhook receiver to get the {missing} alerts of the no_data day")  # fmt: skip
    assert sorted(a["labels"]["model"] for a in got) == ["fraud-detector", "recommender"]  # once each
    for a in got:
        assert a["labels"] == {"alertname": missing, "model": a["labels"]["model"], "severity": "warning",
                               "source": "modelwatch", "dag": DAG_ID, "scope": "canonical"}  # fmt: skip
        assert a["annotations"]["window"].startswith(day) and a["annotations"]["verdict"] == "no_data"
        assert a["annotations"]["description"] == "no predictions in the window"


def test_each_day_judges_quality_against_the_days_before_it_in_the_lake(runs):
    """The seeded accuracy and loss do not change from day to day: with the days before it in this lake as
    reference a day's quality is ok; the first day has no history; the day without predictions no labels."""
    first = min(TEST_DAYS)
    for scenario, (_, doc) in runs.items():
        day = _day(scenario)
        for v in doc["verdicts"]:
            expected = "no_reference" if day == first else "no_labels" if scenario == "no_data" else "ok"
            assert v["quality"] == expected, (scenario, v["model"], v["quality_reason"])
            # the reference is the canonical days before this one that the lake holds (never the day itself)
            assert v["reference_days"] == [d.isoformat() for d in sorted(TEST_DAYS, reverse=True) if d < day][:7]
            if expected == "ok":
                assert "Mann-Whitney U, one-sided" in v["quality_reason"], v["quality_reason"]
                assert {m["metric"] for m in v["quality_metrics"]} == {"accuracy", "loss"}
            # drift of prediction_time against the same days: nothing to compare on the first day and the silent one
            if day == first or scenario == "no_data":
                assert v["drift"] == "no_reference", (scenario, v["model"], v["drift_reason"])
            else:
                assert v["drift"] in ("stable", "drifted") and "prediction_time: PSI" in v["drift_reason"]


def test_the_drift_dataset_holds_a_row_per_model_and_value(runs, lake):
    import duckdb

    base = lake.removeprefix("file://")
    rows = duckdb.sql(
        f"select dt, model, value, outcome, n_reference from read_parquet('{base}/drift/*/*.parquet', "
        "hive_partitioning=true) order by all"
    ).fetchall()
    assert {(str(dt), m) for dt, m, *_ in rows} == {(d.isoformat(), m) for d in TEST_DAYS
                                                  for m in ("fraud-detector", "recommender")}  # fmt: skip
    # the values thresholds.yaml names: prediction_time, the amount and channel the predictions log (inputs),
    # and the score they log (the model's output)
    assert {value for _, _, value, _, _ in rows} == {"prediction_time", "metric_amount", "param_channel", "metric_score"}
    assert all(outcome == "too_few" for dt, _, _, outcome, _ in rows if dt == min(TEST_DAYS))


def test_partitions_are_hive_style_and_complete(runs, lake):
    import duckdb

    base = lake.removeprefix("file://")
    for dataset in ("resources", "predictions", "joined", "correlation", "verdicts"):
        for day in TEST_DAYS:
            assert (Path(base) / dataset / f"dt={day.isoformat()}" / "_manifest.json").exists(), (dataset, day)
    counts = duckdb.sql(
        f"select dt, verdict, count(*) as n from read_parquet('{base}/verdicts/*/*.parquet', hive_partitioning=true) "
        "group by all order by all"
    ).fetchall()
    assert {(str(dt), v) for dt, v, _ in counts} >= {(_day("cpu_saturation").isoformat(), "degraded")}
    assert sum(n for *_, n in counts) == 2 * len(TEST_DAYS)


def test_rerunning_a_day_replaces_its_partition(runs, seeded_stack, monitoring_dag, lake, monkeypatch):
    day = _day("cpu_saturation")
    part = Path(lake.removeprefix("file://")) / "predictions" / f"dt={day.isoformat()}"
    before = {p.name: p.read_bytes() for p in part.iterdir() if p.suffix == ".parquet"}
    for key, value in seeded_stack.config.airflow_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MODELWATCH_STORAGE_URL", lake)
    run_day(day, DAG_ID, monitoring_dag)
    after = {p.name: p.read_bytes() for p in part.iterdir() if p.suffix == ".parquet"}
    assert list(after) == ["part-00000.parquet"]
    assert after == before  # deterministic: the same window gives the same bytes


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_failed_run_emails_dag_run_task_and_log_link(seeded_stack, monitoring_dag, lake, monkeypatch):
    for key, value in seeded_stack.config.airflow_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MODELWATCH_STORAGE_URL", lake)
    # Prometheus "down": nothing listens on this port
    monkeypatch.setenv(
        "AIRFLOW_CONN_PROMETHEUS_DEFAULT", json.dumps({"conn_type": "prometheus", "host": "127.0.0.1", "port": _free_port()})
    )
    # a fresh parse, not copy.deepcopy: a deep-copied mapped task fails at run time in Airflow 3.3
    dag = load_dag(monitoring_dag.dag_id)
    for t in dag.tasks:
        t.retries = 0  # the failure path, not the retry schedule, is under test here

    def ours(since: int) -> list[dict]:
        # Alertmanager mails the sink too (its email route): keep modelwatch's failure emails of this run
        return [m for m in seeded_stack.mail()[since:] if m["subject"].startswith("[modelwatch]")]

    before = len(seeded_stack.mail())
    day = _day("normal")
    run = run_day(day, DAG_ID, dag)
    assert str(getattr(run.state, "value", run.state)) == "failed"
    # the run is over (dag.test returned): its failure email is sent, wait for it to reach the sink
    mails = wait_until(lambda: ours(before), timeout=20, what="the failure email of the run in the SMTP sink")
    assert len(mails) == 1, mails
    mail = mails[0]
    assert DAG_ID in mail["subject"] and "extract_resources" in mail["subject"] and run.run_id in mail["subject"]
    assert f"/dags/{DAG_ID}/runs/" in mail["body"] and "/tasks/extract_resources" in mail["body"]
    assert "127.0.0.1" in mail["body"]  # the error names the server it could not reach


def test_a_day_written_to_s3_through_the_aws_connection(seeded_stack, monitoring_dag, monkeypatch):
    for key, value in seeded_stack.config.airflow_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MODELWATCH_STORAGE_URL", "s3://modelwatch/lake")
    day = _day("cpu_saturation")
    run = run_day(day, DAG_ID, monitoring_dag)
    assert str(getattr(run.state, "value", run.state)) == "success"
    s3 = seeded_stack.s3_client()
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="modelwatch", Prefix="lake/")["Contents"]}
    for dataset in ("resources", "predictions", "joined", "correlation", "verdicts"):
        assert f"lake/{dataset}/dt={day.isoformat()}/part-00000.parquet" in keys
        assert f"lake/{dataset}/dt={day.isoformat()}/_manifest.json" in keys
    doc = json.loads(
        s3.get_object(Bucket="modelwatch", Key=f"lake/verdicts/dt={day.isoformat()}/_verdict.json")["Body"].read()
    )
    assert {v["model"]: v["verdict"] for v in doc["verdicts"]} == EXPECTED["cpu_saturation"]
    assert not any(k.endswith(".partial") for k in keys)
    # the degraded model's report, and the model-health view reading it back from S3 (the same Lake code)
    assert {f"lake/reports/dt={day.isoformat()}/fraud-detector.html",
            f"lake/reports/dt={day.isoformat()}/fraud-detector-timeline.png"} <= keys  # fmt: skip
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    from modelwatch import plugin

    # Airflow's own simple auth manager and a viewer (the view's permission checks are proven against the
    # real API server and FAB roles in tests/e2e/test_view_permissions.py; here: reading back from S3)
    manager = SimpleAuthManager()
    monkeypatch.setattr(plugin, "_auth_manager", lambda: manager)
    viewer = SimpleAuthManagerUser(username="viewer", role="viewer")
    page = plugin.calendar(viewer, model="", verdict="").body.decode()
    assert "fraud-detector" in page and day.isoformat()[5:] in page
    report = plugin.day_report(viewer, day.isoformat(), "fraud-detector").body.decode()
    assert "fraud-detector" in report and "Evidence per resource" in report and "data:image/png;base64," in report


def test_a_trigger_form_window_and_dry_run_evaluate_without_paging(
    seeded_stack, monitoring_dag, lake, alertname, monkeypatch
):
    """What a person does in the UI: trigger with a two-hour window around the CPU incident, as a dry run."""
    from devstack.runner import xcom
    from modelwatch.storage import Lake
    from modelwatch.window import Window, run_key

    for key, value in seeded_stack.config.airflow_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MODELWATCH_STORAGE_URL", lake)
    start, end = datetime(2026, 3, 3, 10, tzinfo=UTC), datetime(2026, 3, 3, 12, tzinfo=UTC)
    run = monitoring_dag.test(
        logical_date=None,
        run_conf={"window_start": start.isoformat(), "window_end": end.isoformat(), "dry_run": True,
                  "models": ["fraud-detector"]},
    )  # fmt: skip
    assert str(getattr(run.state, "value", run.state)) == "success"
    window = Window(start, end, run_key=run_key(run.run_id, run.dag_id))  # an ad-hoc run: a place of its own
    store = Lake(lake)
    url = store.partition_url("verdicts", window)
    assert url.endswith(f"/adhoc/verdicts/dt=2026-03-03/run={run_key(run.run_id, run.dag_id)}")
    assert xcom(run, "evaluate")["verdict_document"] == f"{url}/_verdict.json"
    doc = store.read_document(f"{url}/_verdict.json")
    assert doc["canonical"] is False and doc["window"]["run_key"] == run_key(run.run_id, run.dag_id)
    assert [(v["model"], v["verdict"]) for v in doc["verdicts"]] == [("fraud-detector", "degraded")]
    assert doc["alert"]["post"] is False and "dry run" in doc["alert"]["reason"]
    # what it would have posted, without posting it
    payload = store.read_document(f"{store.partition_url('alerts', window)}/_payload.json")
    assert [a["labels"]["model"] for a in payload] == ["fraud-detector"]
    assert store.read_document(f"{store.partition_url('alerts', window)}/_delivery.json") is None
    tasks = {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in run.get_task_instances()}
    assert tasks["post_alert"] == "skipped" and tasks["no_alert"] == "success"


def test_replay_judges_the_stored_days_under_other_thresholds_without_posting(runs, lake, alertname, tmp_path,
                                                                              capsys):  # fmt: skip
    """``make replay``: the days this module's runs stored, under the current thresholds (what the runs paged)
    and under a candidate where nothing is slow."""
    import os

    import yaml

    from modelwatch.replay import main

    raw = yaml.safe_load(Path(os.environ["MODELWATCH_CONFIG"]).read_text())
    raw["evaluation"] = {**raw["evaluation"], "slow_prediction_seconds": 1000, "models": {}}
    candidate = tmp_path / "relaxed.yaml"
    candidate.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert main(["--candidate", str(candidate), "--lake", lake]) == 0
    out = capsys.readouterr().out
    lines = [" ".join(line.split()) for line in out.splitlines()]
    assert f"replaying {len(TEST_DAYS)} day(s)" in out and "nothing is posted or written" in out
    cpu, memory = _day("cpu_saturation").isoformat(), _day("memory_pressure").isoformat()
    assert f"{cpu} degraded fraud-detector -" in lines
    assert f"{memory} degraded fraud-detector, recommender -" in lines
    assert "total degraded 3 page(s) on 2 day(s) 0 page(s) on 0 day(s)" in lines
    assert "total no_data 2 page(s) on 1 day(s) 2 page(s) on 1 day(s)" in lines


def test_the_replay_dag_gives_the_same_table_from_its_trigger_form(runs, lake, seeded_stack, monkeypatch) -> None:
    """The ``modelwatch_threshold_replay`` DAG through ``dag.test()``: only the key to change, pasted as YAML in
    the trigger form; the table in its XCom; nothing posted (its only task reads the lake)."""
    from devstack.runner import task_states, xcom

    for key, value in seeded_stack.config.airflow_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MODELWATCH_STORAGE_URL", lake)

    days = sorted(TEST_DAYS)
    run = load_dag("modelwatch_threshold_replay").test(logical_date=None, run_conf={
        "candidate": "evaluation:\n  slow_prediction_seconds: 1000\n  models: {}\n",
        "from": days[0].isoformat(), "to": days[-1].isoformat(),
    })  # fmt: skip
    assert task_states(run) == {"replay_thresholds": "success"}
    result = xcom(run, "replay_thresholds")
    assert result["days"] == [d.isoformat() for d in days]
    assert ["total", "degraded", "3 page(s) on 2 day(s)", "0 page(s) on 0 day(s)"] in result["table"]
    assert [_day("cpu_saturation").isoformat(), "degraded", "fraud-detector", "-"] in result["table"]
    # a candidate with a mistake fails at once, naming the form field and the key
    bad = load_dag("modelwatch_threshold_replay").test(logical_date=None, run_conf={"candidate": "evaluation: {slow: 1}"})
    assert task_states(bad) == {"replay_thresholds": "failed"}
    # days the lake does not hold fail at once too, rather than an empty table
    empty = load_dag("modelwatch_threshold_replay").test(logical_date=None, run_conf={"from": "2025-01-01",
                                                                                       "to": "2025-01-02"})  # fmt: skip
    assert task_states(empty) == {"replay_thresholds": "failed"}


def test_each_run_publishes_its_verdicts_unless_a_newer_window_is_published(runs, seeded_stack, monkeypatch):
    """The ``publish_verdicts`` task of each day's run: the gateway holds this DAG's newest window, an older
    day never replaces it, and Prometheus scrapes the models' verdicts back."""
    from polling import wait_until

    from modelwatch.hooks.pushgateway import PushgatewayHook

    results = {scenario: PUBLISHED[scenario] for scenario in runs}
    for scenario, result in results.items():
        assert result["state"] == "success", (scenario, result)
        if result["action"] == "skipped":  # another module's runs of the same DAG published a later day
            assert result["published_window_end"] > result["window_end"], (scenario, result)
        else:
            assert result["models"] == ["fraud-detector", "recommender"], (scenario, result)
    for key, value in seeded_stack.config.airflow_env().items():
        monkeypatch.setenv(key, value)
    newest = max(datetime.fromisoformat(r["window_end"]) for r in results.values())
    published = PushgatewayHook().published_window_end("modelwatch", {"dag": DAG_ID})
    assert published is not None and published >= newest.timestamp()
    query = f'modelwatch_verdict_info{{dag="{DAG_ID}"}}'
    series = wait_until(lambda: _instant(seeded_stack.config.prometheus_url, query),
                        until=lambda got: {s["metric"]["model"] for s in got} >= {"fraud-detector", "recommender"},
                        timeout=30, interval=1, what=f"Prometheus to scrape {query}")  # fmt: skip
    assert {s["metric"]["verdict"] for s in series} <= {"healthy", "degraded", "slow_unexplained", "no_data"}


def _instant(prometheus_url, query):
    import json
    import urllib.parse
    import urllib.request

    url = f"{prometheus_url}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return json.loads(opener.open(url, timeout=10).read())["data"]["result"]
