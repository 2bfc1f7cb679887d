"""The monitoring DAG on the engine users run: a 20-model fleet under the real scheduler with the
CeleryExecutor, two Celery workers, PostgreSQL and the lake on moto's S3 (the session's ``airflow`` fixture),
and one of the workers killed in the middle of ``correlate``.

The fleet: 20 models (``fleet-00`` .. ``fleet-19``, MLflow experiment ``e2e-fleet-predictions``, ``batch_table``
layout) served on CONTRACT.md's instances ``model-a`` and ``model-b`` on 2026-03-03, the cpu_saturation day
(model-a's CPU at ~97 % from 10:00 to 12:00). ``fleet-00`` is slow on model-a then, so it is degraded (cpu)
like fraud-detector (one slow model is enough: each degraded model costs its report, ~2 s of ``evaluate``);
every other model is healthy. With the day's two CONTRACT.md models that is 22 models, which
``correlation.models_per_task: 3`` spreads over 8 mapped ``correlate`` tasks: two waves over the 2 workers x 2
slots.

One canonical run of the day is triggered as the UI's form does. Once each worker has finished a
``correlate`` task while others still run, the worker running the youngest ``correlate`` try is killed:
every process of its session gets SIGKILL, found through its PID file (as when its machine dies).
Its tries stop heartbeating; the scheduler fails them after ``[scheduler] task_instance_heartbeat_timeout``
(12 s here) and Airflow retries them (``tasks.retry_delay``: 2 s here) on the other worker. Meanwhile the same
window runs as an in-process ``dag.test()`` (``python -m devstack.runner``, what ``make demo`` runs: no
executor, every task in one process) as a dry run on the embedded default: its own SQLite metadata database
and a ``file://`` lake.
The tests then check:

- the mapped ``correlate`` task instances ran on both workers (``TaskInstance.hostname`` over the REST
  API: each worker's task processes report its Celery node name);
- the verdicts partition is byte for byte the in-process run's;
- the killed try ran on the killed worker and its retry succeeded on the other; the run succeeded;
- the window's partitions are one commit (each the version the verdict document names, readable through
  :class:`modelwatch.storage.Lake`), every prediction is in ``joined``, nothing is left in ``_staging``;
- the page was posted once (Alertmanager's count of received alerts, ``post_alert`` tried once, its
  delivery record) and each new alert reached the webhook receiver once.

Runs after the other e2e modules (``pytest_collection_modifyitems`` in conftest.py): it adds 20 models to
2026-03-03 and pages for them under the session's alert name, which test_scheduler.py must not see.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from polling import wait_until

from devstack import runner
from devstack.airflow_services import AirflowApi, AirflowServices
from devstack.stack import Stack

pytestmark = pytest.mark.e2e

DAG_ID = "model_performance_monitoring"
REPO = Path(__file__).resolve().parents[2]
DAY = date(2026, 3, 3)
START = datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC)
CONF = {"window_start": START.isoformat(), "window_end": (START + timedelta(days=1)).isoformat()}
FLEET = tuple(f"fleet-{i:02d}" for i in range(20))
#: slow on model-a during its CPU incident: degraded (cpu)
SLOW = FLEET[:1]
INSTANCES = ("model-a", "model-b")
INCIDENT = (START + timedelta(hours=10), START + timedelta(hours=12))
#: one prediction per model and instance every this many seconds
PERIOD_S = 120
EXPECTED = {**dict.fromkeys(FLEET, "healthy"), **dict.fromkeys(SLOW, "degraded"),
            "fraud-detector": "degraded", "recommender": "healthy"}  # fmt: skip
DATASETS = ("resources", "predictions", "joined", "correlation", "verdicts", "drift")
#: bounds of the waits (seconds): a broken run fails within them, none is an expected duration
RUN_TIMEOUT = 300.0
DAG_TEST_TIMEOUT = 300.0


# -- the fleet ------------------------------------------------------------------------------------------------
def fleet_tables() -> Iterator[tuple[dict[str, str], Any]]:
    """(tags, Arrow table) of each fleet model on each instance: one ``batch_table`` run for the whole day,
    seeded numbers (the same day on every run)."""
    import numpy as np
    import pyarrow as pa

    start = int(START.timestamp())
    lo, hi = int(INCIDENT[0].timestamp()), int(INCIDENT[1].timestamp())
    for k, model in enumerate(FLEET):
        for j, instance in enumerate(INSTANCES):
            rng = np.random.default_rng([k, j, DAY.toordinal()])
            t = start + np.arange(0, 86400, PERIOD_S) + (k * 7 + j * 13) % PERIOD_S
            took = rng.lognormal(np.log(0.2), 0.25, len(t))
            if model in SLOW and instance == "model-a":
                took = np.where((t >= lo) & (t < hi), rng.lognormal(np.log(2.5), 0.2, len(t)), took)
            table = pa.table({
                "timestamp": pa.array(t * 1000, type=pa.timestamp("ms", tz="UTC")),
                "prediction_time": took, "accuracy": rng.uniform(0.8, 1.0, len(t)), "loss": rng.uniform(0.0, 0.3, len(t)),
            })  # fmt: skip
            yield {"model": model, "model_version": "1", "instance": instance}, table


def seed_fleet(stack: Stack, experiment: str) -> int:
    """Log the fleet's runs into the (empty) experiment the session fixture created. :returns: predictions."""
    import mlflow

    from devstack.model_service import log_batch_run

    client = mlflow.MlflowClient(stack.config.mlflow_url)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"the session fixture creates {experiment}"
    tables = list(fleet_tables())
    with pytest.MonkeyPatch.context() as patch, ThreadPoolExecutor(max_workers=4) as pool:
        # MLflow prints two lines per run (and fetches the run again to build them) unless told not to
        patch.setenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        list(pool.map(lambda b: log_batch_run(client, exp.experiment_id, b[1], b[0]), tables))
    return sum(t.num_rows for _, t in tables)


# -- helpers --------------------------------------------------------------------------------------------------
def _when(value: str | None) -> datetime:
    assert value, "no time"
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _correlate(api: AirflowApi, run_id: str) -> list[dict[str, Any]]:
    return sorted((t for t in api.task_instances(DAG_ID, run_id) if t["task_id"] == "correlate"),
                  key=lambda t: t["map_index"])  # fmt: skip


def _tries(api: AirflowApi, run_id: str, task_id: str, map_index: int = -1) -> list[dict[str, Any]]:
    path = f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}/{map_index}/tries"
    return sorted(api.request("GET", path)["task_instances"], key=lambda t: t["try_number"])


def _alerts_received(stack: Stack) -> float:
    """Alertmanager's count of firing alerts received through its API (every alert of every post)."""
    with urllib.request.urlopen(f"{stack.config.alertmanager_url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("alertmanager_alerts_received_total{") and 'status="firing"' in line)  # fmt: skip


def _dag_test(env: dict[str, str], log: Path) -> dict[str, Any]:
    """Migrate a SQLite metadata database of its own, then the window as one in-process ``dag.test()`` dry
    run (``python -m devstack.runner``); :returns: its exit code and the verdict document it names."""
    t0 = time.perf_counter()
    runner.migrate(env)
    with log.open("wb") as out:
        proc = subprocess.run(
            [sys.executable, "-m", "devstack.runner", "--window-start", CONF["window_start"],
             "--window-end", CONF["window_end"], "--param", "dry_run=true"],
            env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            timeout=DAG_TEST_TIMEOUT, check=False,
        )  # fmt: skip
    prefix = f"{runner.PROGRESS} verdict document "
    lines = log.read_text(errors="replace").splitlines()
    document = next((line.removeprefix(prefix) for line in lines if line.startswith(prefix)), None)
    return {"returncode": proc.returncode, "document": document, "seconds": time.perf_counter() - t0,
            "log": "\n".join(lines[-40:])}  # fmt: skip


# -- the run --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fleet(
    airflow: AirflowServices, seeded_stack: Stack, lake: Any, e2e_thresholds: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Any]]:
    """Seed the fleet, start the in-process dry run, trigger the canonical run, kill a worker while it runs
    ``correlate``, and wait for both runs.

    :returns: the finished run, the kill (victim, survivor, the tries it hit), the in-process run, timings.
    """
    cfg = airflow.config
    nodes = {cfg.worker_node(w): w for w in cfg.workers}
    assert len(nodes) == 2, f"two Celery workers expected, got {list(nodes)}"
    assert sorted(airflow.ping_workers()) == sorted(cfg.workers), "both workers must consume before the run"
    api = airflow.api()
    api.wait_for_dag(DAG_ID, timeout=180, file_hint="model_performance_monitoring.py")
    t0 = time.perf_counter()
    batch = [e["name"] for e in e2e_thresholds["mlflow"]["experiments"] if e.get("layout") == "batch_table"]
    assert len(batch) == 1, e2e_thresholds["mlflow"]["experiments"]
    rows = seed_fleet(seeded_stack, batch[0])
    seeded = time.perf_counter() - t0
    home = tmp_path_factory.mktemp("dag-test-airflow")
    local_lake = (home / "lake").as_uri()
    env = {**os.environ, **runner.airflow_env(home, seeded_stack.config.airflow_env(), local_lake),
           "MODELWATCH_CONFIG": cfg.extra_env["MODELWATCH_CONFIG"]}  # fmt: skip
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="dag-test") as pool:
        in_process: Future[dict[str, Any]] = pool.submit(_dag_test, env, home / "dag-test.log")
        if api.dag(DAG_ID)["is_paused"]:
            api.unpause(DAG_ID)
        # nothing else runs (the scheduled run of a DAG just unpaused): the workers' slots and what Alertmanager
        # receives are this run's alone
        wait_until(lambda: [r["dag_run_id"] for s in ("queued", "running") for r in api.dag_runs(DAG_ID, state=s)],
                   until=lambda active: not active, timeout=RUN_TIMEOUT, interval=1, what="the DAG's other runs to end")  # fmt: skip
        received_before = _alerts_received(seeded_stack)
        run_id = f"celery_fleet_{int(time.time())}"
        api.trigger(DAG_ID, conf=CONF, run_id=run_id)
        started = time.perf_counter()
        kill = _kill_a_worker_in_correlate(airflow, api, run_id, nodes)
        run = api.wait_for_run(DAG_ID, run_id, timeout=max(30.0, RUN_TIMEOUT - (time.perf_counter() - started)))
        wall = time.perf_counter() - started
        dag_test = in_process.result(timeout=DAG_TEST_TIMEOUT + 120)
    print(f"\nfleet: {rows} predictions seeded in {seeded:.1f} s; Celery run {run['state']} in {wall:.1f} s; "
          f"{kill.get('victim')} killed {kill.get('at', 0):.1f} s after the trigger (tries {kill.get('hit')}); "
          f"in-process dag.test() {dag_test['seconds']:.1f} s\n{_timeline(api, run_id)}")  # fmt: skip
    yield {"run": run, "run_id": run_id, "kill": kill, "dag_test": {**dag_test, "lake": local_lake}, "nodes": nodes,
           "received_before": received_before, "api": api}  # fmt: skip


def _kill_a_worker_in_correlate(
    airflow: AirflowServices, api: AirflowApi, run_id: str, nodes: dict[str, str]
) -> dict[str, Any]:
    """Poll the run's ``correlate`` instances; once each worker has finished one and some are running, SIGKILL the
    worker that runs the youngest try (it has the most work left), by its PID file.

    :returns: ``victim``/``survivor`` (component names), ``hit`` (map index -> try number of the tries it
        was running), ``pids``, ``at`` (seconds after the trigger); or ``missed`` when the chance never came.
    """
    t0 = time.perf_counter()
    deadline = t0 + RUN_TIMEOUT
    while time.perf_counter() < deadline:
        tis = _correlate(api, run_id)
        done_on = {t["hostname"] for t in tis if t["state"] == "success"}
        running = [t for t in tis if t["state"] == "running" and t.get("hostname") in nodes]
        if set(nodes) <= done_on and running:
            youngest = max(running, key=lambda t: _when(t["start_date"]))
            victim = nodes[youngest["hostname"]]
            pids = airflow.kill(victim)
            hit = {t["map_index"]: t["try_number"] for t in running if t["hostname"] == youngest["hostname"]}
            survivor = next(w for w in nodes.values() if w != victim)
            return {"victim": victim, "survivor": survivor, "hit": hit, "pids": pids, "at": time.perf_counter() - t0}
        if tis and all(t["state"] in ("success", "failed", "upstream_failed") for t in tis):
            return {"missed": {t["map_index"]: (t["state"], t.get("hostname")) for t in tis}}
        run = api.dag_run(DAG_ID, run_id)
        if run["state"] in ("success", "failed"):
            return {"missed": f"the run ended {run['state']} before a correlate task ran"}
        time.sleep(0.2)
    raise AssertionError(f"no chance to kill a worker in {RUN_TIMEOUT:.0f} s: {_correlate(api, run_id)}")


def _timeline(api: AirflowApi, run_id: str) -> str:
    """Every try of the run: start and end in seconds after the run's start, state, worker (shown with -s)."""
    run = api.dag_run(DAG_ID, run_id)
    t0 = _when(run["start_date"])
    lines = []
    for ti in sorted(api.task_instances(DAG_ID, run_id), key=lambda t: (t["start_date"] or "", t["map_index"])):
        for t in _tries(api, run_id, ti["task_id"], ti["map_index"]) if ti["try_number"] > 1 else [ti]:
            if not t.get("start_date"):
                continue
            end = f"{(_when(t['end_date']) - t0).total_seconds():5.1f}" if t.get("end_date") else "  ..."
            name = t["task_id"] + (f"[{t['map_index']}]" if t["map_index"] >= 0 else "")
            lines.append(f"  {name:<20} try {t['try_number']} {(_when(t['start_date']) - t0).total_seconds():5.1f} -> {end} "
                         f"{t['state']:<10} {t.get('hostname')}")  # fmt: skip
    return "\n".join(lines)


def _explain(api: AirflowApi, run_id: str) -> str:
    lines = []
    for ti in api.task_instances(DAG_ID, run_id):
        index = ti.get("map_index", -1)
        lines.append(f"{ti['task_id']}[{index}]: {ti['state']} try {ti['try_number']} on {ti.get('hostname')}")
        if ti["state"] == "failed":
            lines.append(api.task_log(DAG_ID, run_id, ti["task_id"], max(1, ti["try_number"]), index)[-3000:])
    return "\n".join(lines)


# -- (a) the fleet over both workers, the verdicts as in-process ----------------------------------------------
def test_the_fleet_run_succeeds_with_its_correlate_tasks_on_both_workers(
    fleet: dict[str, Any], e2e_thresholds: dict[str, Any]
) -> None:
    api, run_id = fleet["api"], fleet["run_id"]
    assert fleet["run"]["state"] == "success", _explain(api, run_id)
    tis = _correlate(api, run_id)
    per_task = e2e_thresholds["correlation"]["models_per_task"]
    assert len(tis) == -(-len(EXPECTED) // per_task) >= 4, [t["map_index"] for t in tis]
    assert all(t["state"] == "success" for t in tis), _explain(api, run_id)
    # each worker's task processes report its Celery node name as their hostname
    assert {t["hostname"] for t in tis} == set(fleet["nodes"]), {t["map_index"]: t["hostname"] for t in tis}


def test_the_verdicts_are_byte_for_byte_those_of_an_in_process_dag_test(fleet: dict[str, Any], lake: Any) -> None:
    from modelwatch.storage import Lake

    dag_test = fleet["dag_test"]
    assert dag_test["returncode"] == 0 and dag_test["document"], dag_test["log"]
    local = Lake(dag_test["lake"])
    here = local.read_document(dag_test["document"])
    there = lake.read_document(lake.document_url("verdicts", _window(), "verdict"))
    assert there is not None and there["run_id"] == fleet["run_id"], there and there["run_id"]
    assert {v["model"]: v["verdict"] for v in there["verdicts"]} == EXPECTED
    ref, ref_here = there["partitions"]["verdicts"], here["partitions"]["verdicts"]
    celery_bytes = lake.read_bytes(f"{ref['url']}/part-00000.parquet")
    local_bytes = local.read_bytes(f"{ref_here['url']}/part-00000.parquet")
    assert celery_bytes and celery_bytes == local_bytes, (len(celery_bytes or b""), len(local_bytes or b""))
    assert ref["sha256"] == ref_here["sha256"] and ref["rows"] == ref_here["rows"] == len(EXPECTED)


def _window() -> Any:
    from modelwatch.window import Window

    return Window.of_day(DAY)


# -- (b) a worker killed in the middle of correlate ------------------------------------------------------------
def test_a_worker_killed_in_correlate_has_its_tries_retried_on_the_other(fleet: dict[str, Any]) -> None:
    api, run_id, kill = fleet["api"], fleet["run_id"], fleet["kill"]
    assert "missed" not in kill, f"the run gave no chance to kill a worker during correlate: {kill['missed']}"
    assert kill["pids"], "the worker's session had no process to kill"
    victim, survivor = kill["victim"], kill["survivor"]
    nodes = {w: n for n, w in fleet["nodes"].items()}
    assert kill["hit"], kill
    for index, killed_try in kill["hit"].items():
        tries = _tries(api, run_id, "correlate", index)
        killed = next(t for t in tries if t["try_number"] == killed_try)
        assert killed["hostname"] == nodes[victim] and killed["state"] != "success", killed
        last = tries[-1]
        assert last["try_number"] > killed_try and last["state"] == "success", tries
        assert last["hostname"] == nodes[survivor], tries
    assert fleet["run"]["state"] == "success", _explain(api, run_id)


def test_the_window_is_one_consistent_commit_after_the_kill(fleet: dict[str, Any], lake: Any, seeded_stack: Stack) -> None:
    window = _window()
    doc = lake.read_document(lake.document_url("verdicts", window, "verdict"))
    assert doc is not None and doc["run_id"] == fleet["run_id"]
    frames = {}
    for dataset in DATASETS:
        ref = doc["partitions"][dataset]
        stored = lake.stored_ref(dataset, window)
        assert stored is not None and stored.sha256 == ref["sha256"], (dataset, stored, ref)
        frames[dataset] = lake.read_committed(dataset, window)
        assert len(frames[dataset]) == ref["rows"], dataset
    # nothing lost: every prediction of the window is joined once, every model judged once
    assert len(frames["joined"]) == len(frames["predictions"])
    assert sorted(frames["verdicts"]["model"]) == sorted(EXPECTED)
    assert set(frames["joined"]["model"]) == set(EXPECTED)
    # the run's staged parts (the killed tries' among them) are gone once committed
    prefix = lake.staging_url(window, fleet["run_id"]).removeprefix("s3://modelwatch/")
    left = seeded_stack.s3_client().list_objects_v2(Bucket="modelwatch", Prefix=prefix).get("Contents") or []
    assert not left, [o["Key"] for o in left]


def test_the_run_paged_once(fleet: dict[str, Any], lake: Any, seeded_stack: Stack, e2e_alertname: str) -> None:
    api, run_id = fleet["api"], fleet["run_id"]
    posts = _tries(api, run_id, "post_alert")
    assert [(t["try_number"], t["state"]) for t in posts] == [(1, "success")], posts
    window = _window()
    delivery = lake.read_document(lake.document_url("alerts", window, "delivery"))
    assert delivery is not None and delivery["run_id"] == run_id, delivery
    posted = sorted(a["labels"]["model"] for a in delivery["alerts"])
    assert posted == sorted([*SLOW, "fraud-detector"]), posted
    # Alertmanager received each of the run's alerts once: one post (nothing else posts meanwhile)
    assert _alerts_received(seeded_stack) - fleet["received_before"] == len(posted)

    def notified() -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for n in seeded_stack.webhook_notifications():
            for a in n.get("alerts", []):
                if (a["labels"].get("alertname") == e2e_alertname and a["status"] == "firing"
                        and a["annotations"].get("window", "")[:10] == DAY.isoformat()):  # fmt: skip
                    out.setdefault(a["labels"]["model"], []).append(a)
        return out

    got = wait_until(notified, until=lambda got: set(SLOW) <= set(got), timeout=30, interval=0.5,
                     what=f"the webhook receiver to get the alerts of {SLOW}")  # fmt: skip
    for model in SLOW:
        assert len(got[model]) == 1, got[model]
        assert got[model][0]["annotations"]["airflow_run"].endswith(f"/runs/{quote(run_id, safe='')}")
    # fraud-detector's alert may already fire from an earlier run of the day (test_scheduler.py): never twice
    assert len(got.get("fraud-detector", [])) <= 1
