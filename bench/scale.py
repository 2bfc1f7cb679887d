"""Scale under the real scheduler: a 30-day backfill, a hundred models spread over mapped tasks, and those
hundred models on the LocalExecutor beside one and two Celery workers.

Starts its own stack and Airflow (API server, scheduler with the LocalExecutor, DAG processor, triggerer)
under ``--scale-state`` (a temporary folder by default; give a folder to keep the seeded history between
runs), then:

- **backfill**: seeds ``--scale-days`` days of the demo scenarios (the repeating test week), creates one
  Airflow backfill of them through the REST API (what the UI's "Run backfill" does) and times it from the
  request to the last run's end. The reference is the pipeline's own work for a sample of those days, run
  in one process without Airflow (the same library functions the tasks call): the share of the task time
  that is not that work is Airflow's (a process per task, imports, XCom, the API round trips).
- **fleet**: seeds one day of ``--scale-models`` models on ``--scale-instances`` instances (each model on two
  instances, a prediction every 30 s on each; five models with a CPU incident on one instance 10:00-12:00;
  a 60 s scrape, queried at a 60 s step with 3-minute rate windows) in the ``batch_table`` layout, then
  triggers dry runs of that day for growing model counts (the trigger form's ``models``) and reports the
  wall time against the model count and the mapped ``correlate`` tasks.
- **engines**: the same fleet day with all its models on each engine of ``--scale-engines`` in turn, each
  a fresh Airflow: ``local`` (SQLite, LocalExecutor) and ``celery-1``/``celery-2`` (PostgreSQL, Redis, the
  CeleryExecutor with that many workers, as tests/e2e runs it), all on a lake on moto's S3 by default
  (``--scale-engine-lake``), ``--scale-engine-repeats`` runs each: the wall time, the task slots, the Celery
  node names that ran the mapped ``correlate`` tasks. On one machine a second worker adds task slots, not
  cores: the figures say what the executor costs, not what a second machine would give.

The verdicts of every backfilled day are checked against the scenarios', and the fleet's against the
incidents it seeded (on every engine).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any

import yaml

from bench import REPO

DESCRIPTION = (
    "a 30-day backfill and 100 models over mapped tasks under the real scheduler (LocalExecutor), and "
    "the 100 models on the LocalExecutor beside 1 and 2 Celery workers"
)
DAG_ID = "model_performance_monitoring"
#: the backfill's days end the day before this (2026-03-02.. for 30 days: the test week, repeated)
BACKFILL_END = date(2026, 4, 1)
FLEET_DAY = date(2026, 5, 5)
FLEET_EXPERIMENT = "fleet-predictions"
FLEET_INCIDENTS = 5
FLEET_SCRAPE_S = 60
FLEET_PERIOD_S = 30
FLEET_BATCH_HOURS = 6
INCIDENT = (dtime(10), dtime(12))
#: task slots of each Celery worker in the engines part (``--concurrency``), as in tests/e2e
WORKER_CONCURRENCY = 2


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--scale-state", help="folder for the stack, Airflow and the lake (default: temporary)"
    )
    group.add_argument("--scale-days", type=int, default=30, help="days to backfill (default %(default)s)")
    group.add_argument("--scale-backfill-runs", type=int, default=4,
                       help="backfill runs at once (default %(default)s)")  # fmt: skip
    group.add_argument("--scale-sample-days", type=int, default=3,
                       help="days whose work is measured without Airflow (default %(default)s)")  # fmt: skip
    group.add_argument("--scale-models", type=int, default=100, help="fleet models (default %(default)s)")
    group.add_argument(
        "--scale-instances", type=int, default=200, help="fleet instances (default %(default)s)"
    )
    group.add_argument(
        "--scale-steps", default="10,50,100", help="model counts of the fleet runs (default %(default)s)"
    )
    group.add_argument("--scale-parts", default="backfill,fleet,engines",
                       help="which parts to run: backfill, fleet, engines (default %(default)s)")  # fmt: skip
    group.add_argument("--scale-engines", default="local,celery-1,celery-2",
                       help="engines of the engines part, in order (default %(default)s)")  # fmt: skip
    group.add_argument("--scale-engine-lake", choices=("s3", "file"), default="s3",
                       help="the engines part's lake: moto's S3 or a local folder (default %(default)s)")  # fmt: skip
    group.add_argument("--scale-engine-repeats", type=int, default=2,
                       help="runs of the fleet day per engine (default %(default)s)")  # fmt: skip


def _progress(text: str) -> None:
    print(f"bench scale: {text}", file=sys.stderr, flush=True)


# -- the fleet's synthetic day ----------------------------------------------------------------------------
def fleet_layout(n_models: int, n_instances: int) -> dict[str, tuple[str, str]]:
    """Model name -> its two instances (model i on instances 2i and 2i+1, wrapping around)."""
    inst = [f"fleet-{i:03d}" for i in range(n_instances)]
    return {
        f"model-{m:03d}": (inst[(2 * m) % n_instances], inst[(2 * m + 1) % n_instances])
        for m in range(n_models)
    }


def fleet_incident_instances(layout: dict[str, tuple[str, str]]) -> dict[str, str]:
    """Instance -> the model slowed by its CPU incident: the first instance of the first models."""
    return {layout[m][0]: m for m in sorted(layout)[:FLEET_INCIDENTS]}


def _fleet_openmetrics(day: date, instances: list[str], incidents: set[str], path: Path) -> int:
    """One OpenMetrics file of ``instances`` at a 60 s scrape (every 4th sample of the 15 s generator)."""
    import numpy as np

    from devstack.scenarios import FAMILIES, SCENARIOS, Scenario, Series, _chunks, _instance_series, family_of

    series: list[Series] = []
    for instance in instances:
        sc = SCENARIOS["normal"]
        if instance in incidents:
            sc = Scenario(
                name=f"fleet-cpu-{instance}", doc="", instance=instance, window=INCIDENT, saturated="cpu"
            )
        for s in _instance_series(day, sc, instance):
            keep = np.arange(0, len(s.timestamps), FLEET_SCRAPE_S // 15)
            series.append(s._replace(timestamps=s.timestamps[keep], values=s.values[keep]))
    order = {family: i for i, family in enumerate(FAMILIES)}
    series.sort(key=lambda s: order[family_of(s.name, s.type)])
    with path.open("wb") as fh:
        for chunk in _chunks(series):
            fh.write(chunk)
    return sum(s.values.size for s in series)


def _fleet_batches(day: date, layout: dict[str, tuple[str, str]]) -> Iterator[tuple[dict[str, str], Any]]:
    """(tags, Arrow table) of every batch run: per model, instance and ``FLEET_BATCH_HOURS`` hours."""
    import numpy as np
    import pyarrow as pa

    incidents = fleet_incident_instances(layout)
    start = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())
    lo = start + INCIDENT[0].hour * 3600
    hi = start + INCIDENT[1].hour * 3600
    for k, (model, instances) in enumerate(sorted(layout.items())):
        for j, instance in enumerate(instances):
            rng = np.random.default_rng([k, j, day.toordinal()])
            t = start + np.arange(0, 86400, FLEET_PERIOD_S) + (k * 7 + j * 13) % FLEET_PERIOD_S
            took = rng.lognormal(np.log(0.2), 0.25, len(t))
            if incidents.get(instance) == model:
                took = np.where((t >= lo) & (t < hi), rng.lognormal(np.log(2.5), 0.2, len(t)), took)
            for b in range(24 // FLEET_BATCH_HOURS):
                sel = (t >= start + b * FLEET_BATCH_HOURS * 3600) & (
                    t < start + (b + 1) * FLEET_BATCH_HOURS * 3600
                )
                table = pa.table({
                    "timestamp": pa.array(t[sel] * 1000, type=pa.timestamp("ms", tz="UTC")),
                    "prediction_time": took[sel], "accuracy": rng.uniform(0.8, 1.0, int(sel.sum())),
                    "loss": rng.uniform(0.0, 0.3, int(sel.sum())),
                })  # fmt: skip
                yield {"model": model, "model_version": "1", "instance": instance}, table


def seed_fleet(stack: Any, state: Path, n_models: int, n_instances: int) -> dict[str, Any]:
    """Seed the fleet day into Prometheus (promtool, Prometheus stopped meanwhile) and MLflow; a marker file
    remembers it, so a kept ``--scale-state`` seeds once."""
    import mlflow

    from devstack.model_service import log_batch_run
    from devstack.seed import _promtool

    marker = state / "fleet-seeded.json"
    want = {"day": FLEET_DAY.isoformat(), "models": n_models, "instances": n_instances, "version": 1}
    if marker.exists() and json.loads(marker.read_text()) == want:
        _progress("fleet: already seeded")
        return {"seconds": 0.0, "samples": None, "runs": None}
    layout = fleet_layout(n_models, n_instances)
    instances = sorted(
        {i for pair in layout.values() for i in pair} | {f"fleet-{i:03d}" for i in range(n_instances)}
    )
    incidents = set(fleet_incident_instances(layout))
    t0 = time.perf_counter()
    work = state / "fleet-openmetrics"
    work.mkdir(parents=True, exist_ok=True)
    stack.stop_service("prometheus")
    samples = 0
    try:
        per_file = 25
        for k in range(0, len(instances), per_file):
            path = work / f"fleet-{k:03d}.om"
            samples += _fleet_openmetrics(FLEET_DAY, instances[k : k + per_file], incidents, path)
            proc = subprocess.run(
                [_promtool(), "tsdb", "create-blocks-from", "openmetrics", "--quiet", str(path),
                 str(stack.config.prometheus_data_dir)], capture_output=True, text=True, timeout=900,
            )  # fmt: skip
            path.unlink()
            if proc.returncode:
                raise RuntimeError(f"promtool failed on {path}: {proc.stderr[-2000:]}")
            _progress(f"fleet: Prometheus {min(k + per_file, len(instances))}/{len(instances)} instances")
    finally:
        stack.start(["prometheus"])
    client = mlflow.MlflowClient(stack.config.mlflow_url)
    exp = client.get_experiment_by_name(FLEET_EXPERIMENT)
    exp_id = exp.experiment_id if exp else client.create_experiment(FLEET_EXPERIMENT)
    batches = list(_fleet_batches(FLEET_DAY, layout))
    with ThreadPoolExecutor(max_workers=4) as pool:
        for n, _ in enumerate(pool.map(lambda b: log_batch_run(client, exp_id, b[1], b[0]), batches), 1):
            if n % 200 == 0 or n == len(batches):
                _progress(f"fleet: MLflow {n}/{len(batches)} batch runs")
    marker.write_text(json.dumps(want))
    return {"seconds": time.perf_counter() - t0, "samples": samples, "runs": len(batches),
            "predictions": sum(t.num_rows for _, t in batches)}  # fmt: skip


def fleet_config(base: dict[str, Any], alertname: str) -> dict[str, Any]:
    """The fleet's configuration: the default queries at a 60 s step with 3-minute rate windows (a 60 s
    scrape leaves a 1-minute window one sample), its one ``batch_table`` experiment, no expected models."""
    cfg = json.loads(json.dumps(base))
    cfg["prometheus"]["step"] = f"{FLEET_SCRAPE_S}s"
    for q in cfg["prometheus"]["queries"]:
        q["promql"] = q["promql"].replace("[1m]", "[3m]")
    cfg["mlflow"]["experiments"] = [{"name": FLEET_EXPERIMENT, "layout": "batch_table"}]
    cfg["evaluation"]["expected_models"] = []
    cfg["evaluation"]["models"] = {}
    cfg["alerting"]["alertname"] = alertname
    # names of the bench's own for the other paging kinds too: a run resolves the alerts of its names
    cfg["alerting"]["no_data"] = {**cfg["alerting"]["no_data"], "alertname": f"{alertname}Missing"}
    cfg["alerting"]["slow_unexplained"] = {
        **cfg["alerting"]["slow_unexplained"],
        "alertname": f"{alertname}Unexplained",
    }
    return cfg


# -- Airflow ---------------------------------------------------------------------------------------------
@contextmanager
def airflow_for(
    stack: Any,
    state: Path,
    name: str,
    config: dict[str, Any],
    lake: str,
    *,
    celery_workers: int = 0,
    timings: dict[str, float] | None = None,
) -> Generator[Any]:
    """Airflow's components on a free port with ``config`` as thresholds.yaml, stopped at the end: on SQLite
    with the LocalExecutor, or with ``celery_workers`` > 0 on PostgreSQL, Redis and that many Celery workers
    (``postgres-celery``, :data:`WORKER_CONCURRENCY` task slots each). ``timings`` receives ``ready``: seconds
    from launch to healthy, and ``slots``: task processes at once (``[core] parallelism``)."""
    from devstack.airflow_services import AirflowConfig, AirflowServices, free_port
    from devstack.engine import EngineConfig, reachable_temp_dir
    from devstack.stack import DEFAULT_PORTS, SERVICES

    folder = state / name
    # a fresh Airflow each time: a kept database would hold the last run's backfill, whose days a new
    # backfill then skips
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    if lake.startswith("file://"):
        shutil.rmtree(urllib.parse.urlparse(lake).path, ignore_errors=True)
    path = folder / "thresholds.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    avoid = [*(stack.config.port(s) for s in SERVICES), *DEFAULT_PORTS.values()]
    engine: dict[str, Any] = {}
    engine_dir = None
    if celery_workers:
        # PostgreSQL runs as its own OS user, which cannot enter a 0700 temporary folder: a folder it can reach
        engine_dir = reachable_temp_dir("modelwatch-bench-engine-")
        ec = EngineConfig.free_ports(engine_dir, avoid=avoid)
        avoid += [ec.postgres_port, ec.redis_port]
        engine = {"engine": "postgres-celery", "celery_workers": celery_workers, "engine_config": ec,
                  "worker_concurrency": WORKER_CONCURRENCY, "parallelism": celery_workers * WORKER_CONCURRENCY}  # fmt: skip
    services = AirflowServices(AirflowConfig(
        state_dir=folder, lake_url=lake, connections=stack.config.airflow_env(), port=free_port(avoid=avoid),
        extra_env={"MODELWATCH_CONFIG": str(path)}, **engine,
    ))  # fmt: skip
    t0 = time.perf_counter()
    try:
        services.start()
        _progress(f"{name}: Airflow ({services.config.engine}) healthy in {time.perf_counter() - t0:.0f} s")
        if timings is not None:
            timings["ready"] = time.perf_counter() - t0
            timings["slots"] = services.config.parallelism
        api = services.api()
        api.wait_for_dag(DAG_ID)
        api.unpause(DAG_ID)
        # catchup is off: unpausing schedules the latest interval only; let it finish before measuring
        deadline = time.monotonic() + 60
        while not (scheduled := api.dag_runs(DAG_ID, run_type="scheduled")) and time.monotonic() < deadline:
            time.sleep(1.0)
        for run in scheduled:
            api.wait_for_run(DAG_ID, run["dag_run_id"], timeout=300)
        yield api
    finally:
        services.stop()
        if engine_dir is not None:
            shutil.rmtree(engine_dir, ignore_errors=True)


def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _task_seconds(api: Any, run_id: str) -> dict[str, float]:
    """Task id -> seconds summed over its instances (a mapped task's groups add up)."""
    out: dict[str, float] = {}
    for ti in api.task_instances(DAG_ID, run_id):
        out[ti["task_id"]] = out.get(ti["task_id"], 0.0) + float(ti.get("duration") or 0.0)
    return out


def _verdicts(stack: Any, lake_url: str, day: date, document: str | None = None) -> dict[str, str]:
    """Model -> its verdict in the lake (``degraded (cpu,...)`` with the saturated resources): of the canonical
    partition of ``day``, or of ``document`` (an ad-hoc run's verdict document: the ``evaluate`` task's XCom)."""
    from modelwatch.storage import Lake
    from modelwatch.window import Window

    with _env(stack.config.airflow_env()):  # an s3:// lake reads through the stack's aws_default connection
        lake = Lake(lake_url)
        doc = lake.read_document(document or lake.document_url("verdicts", Window.of_day(day), "verdict"))
    if doc is None:  # a failed run: its row says so, with no verdict as seeded
        _progress(f"no verdict document {document or day} in {lake_url}")
        return {}
    return {
        v["model"]: v["verdict"]
        + (f" ({','.join(r['resource'] for r in v['saturated_resources'])})" if v["verdict"] == "degraded" else "")
        for v in doc["verdicts"]
    }


def _as_seeded(want: str, got: str) -> bool:
    """``degraded (cpu)`` is met by a degraded verdict naming cpu among its resources (a CPU incident of the
    generator raises the load too); other verdicts must be equal."""
    if want.startswith("degraded (") and got.startswith("degraded ("):
        return want[len("degraded (") : -1] in got[len("degraded (") : -1].split(",")
    return want == got


# -- the reference: the same work without Airflow -----------------------------------------------------------
def pipeline_work(cfg: Any, day: date, lake_url: str) -> float:
    """Seconds of one day's work in this process: the library functions the tasks call, same lake writes."""
    from modelwatch.correlate import correlate
    from modelwatch.evaluate import evaluate
    from modelwatch.extract import extract_predictions, extract_resources
    from modelwatch.hooks.mlflow import MlflowHook
    from modelwatch.hooks.prometheus import PrometheusHook
    from modelwatch.storage import Lake
    from modelwatch.verdict import verdicts_frame
    from modelwatch.window import Window

    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    window, lake, p, m = Window(start, start + timedelta(days=1)), Lake(lake_url), cfg.prometheus, cfg.mlflow
    t0 = time.perf_counter()
    res = extract_resources(PrometheusHook(prometheus_conn_id=p.conn_id), p.queries, window.start, window.end,
                            p.step.total_seconds(), p.max_points_per_request, p.instance_label)  # fmt: skip
    lake.write_frame("resources", window, res, run_id="bench")
    pred = extract_predictions(MlflowHook(mlflow_conn_id=m.conn_id), m.experiments, m.tags.model_dump(),
                               window.start, window.end, m.max_results_per_page)  # fmt: skip
    lake.write_frame("predictions", window, pred, run_id="bench")
    joined, summary = correlate(pred, res, cfg)
    verdicts = evaluate(joined, summary, res, cfg, window)
    for name, frame in (("joined", joined), ("correlation", summary), ("verdicts", verdicts_frame(verdicts))):
        lake.write_frame(name, window, frame, run_id="bench")
    return time.perf_counter() - t0


@contextmanager
def _env(extra: dict[str, str]) -> Generator[None]:
    saved = dict(os.environ)
    os.environ.update(extra)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


# -- the two parts ------------------------------------------------------------------------------------------
def backfill_part(args: argparse.Namespace, stack: Any, state: Path, base: dict[str, Any]) -> list[str]:
    from devstack.scenarios import SCENARIOS, recent_days
    from devstack.seed import seed_stack
    from modelwatch.config import ModelwatchConfig

    days = recent_days(BACKFILL_END, args.scale_days)
    t0 = time.perf_counter()
    seed_stack(stack, days, work_dir=state / "seed", progress=lambda s: _progress(f"seed: {s}"))
    seeded = time.perf_counter() - t0
    lake_dir = state / "backfill-lake"
    config = json.loads(json.dumps(base))
    config["alerting"]["alertname"] = "ModelPredictionsDegradedBench"
    with airflow_for(stack, state, "airflow-backfill", config, lake_dir.as_uri()) as api:
        first, last = min(days), max(days)
        started = time.perf_counter()
        t_request = datetime.now(UTC)
        backfill = api.create_backfill(DAG_ID, first, last, max_active_runs=args.scale_backfill_runs)
        _progress(
            f"backfill {backfill['id']}: {len(days)} days {first}..{last}, {args.scale_backfill_runs} at once"
        )
        deadline = time.monotonic() + 1800
        while True:
            runs = api.backfill_runs(DAG_ID, backfill)
            done = [r for r in runs if r["state"] in ("success", "failed")]
            if len(done) == len(days):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"backfill not finished after 30 min: {len(done)}/{len(days)} runs done")
            time.sleep(1.0)
        elapsed = time.perf_counter() - started
        _progress(f"backfill: {len(days)} runs finished in {elapsed:.0f} s")
        ends = [_when(r["end_date"]) for r in runs]
        starts = [_when(r["start_date"]) for r in runs]
        task_s = [_task_seconds(api, r["dag_run_id"]) for r in runs]
        failed = [r["dag_run_id"] for r in runs if r["state"] != "success"]
    wrong = {}
    for day, scenario in days.items():
        got = _verdicts(stack, lake_dir.as_uri(), day)
        want = SCENARIOS[scenario].expected_verdicts
        if set(got) != set(want) or not all(_as_seeded(want[m], got[m]) for m in want):
            wrong[day] = (scenario, got)
    last_end = max(e for e in ends if e)
    task_total = sum(sum(t.values()) for t in task_s)
    # the reference: a sample of the days (one of each kind of day first), their work in this process
    cfg = ModelwatchConfig.model_validate(config)
    sample = sorted({s: d for d, s in sorted(days.items(), reverse=True)}.values())[: args.scale_sample_days]
    with _env(stack.config.airflow_env()):
        pipeline_work(cfg, sample[0], (state / "reference-lake").as_uri())  # warm: imports, connections
        work = [pipeline_work(cfg, d, (state / "reference-lake").as_uri()) for d in sample]
    work_per_day = sum(work) / len(work)
    n = len(days)
    per_task = {}
    for t in task_s:
        for k, v in t.items():
            per_task[k] = per_task.get(k, 0.0) + v
    return [
        f"## Backfill: {n} days under the scheduler ({first}..{last}, LocalExecutor, {args.scale_backfill_runs} runs at once)\n",
        "| what | figure | reference in the same run |",
        "|---|---|---|",
        f"| {n}-day backfill, from the REST request to the last run's end | "
        f"**{(last_end - t_request).total_seconds():.0f} s** ({(last_end - t_request).total_seconds() / n:.1f} s per day); "
        f"first run started {(min(s for s in starts if s) - t_request).total_seconds():.0f} s after the request | "
        f"target 180 s: {'met' if (last_end - t_request).total_seconds() < 180 else 'NOT met'} |",
        f"| task time, all {n} runs (Airflow's task durations, summed) | {task_total:.0f} s "
        f"({task_total / n:.1f} s per day) | the pipeline's work without Airflow: {work_per_day:.2f} s per day "
        f"(mean of {', '.join(str(d) for d in sample)}: {', '.join(f'{w:.2f}' for w in work)} s) |",
        f"| share of the task time that is Airflow's (process per task, imports, XCom, API) | "
        f"{max(0.0, 1 - work_per_day * n / task_total):.0%} | |",
        f"| verdicts as seeded | {n - len(wrong)} of {n} days{'' if not wrong else ': wrong ' + repr(wrong)} | "
        f"failed runs: {len(failed)} |",
        f"| seeding (not timed above) | {seeded:.0f} s | |",
        "",
        "Task time per task id over all runs: "
        + ", ".join(f"`{k}` {v:.0f} s" for k, v in sorted(per_task.items(), key=lambda kv: -kv[1])),
    ]


def fleet_part(args: argparse.Namespace, stack: Any, state: Path, base: dict[str, Any]) -> list[str]:
    t0 = time.perf_counter()
    seeded = seed_fleet(stack, state, args.scale_models, args.scale_instances)
    layout = fleet_layout(args.scale_models, args.scale_instances)
    incident_models = set(fleet_incident_instances(layout).values())
    steps = sorted({min(int(s), args.scale_models) for s in args.scale_steps.split(",") if s.strip()})
    config = fleet_config(base, "ModelPredictionsDegradedBenchFleet")
    lake_dir = state / "fleet-lake"
    rows = []
    with airflow_for(stack, state, "airflow-fleet", config, lake_dir.as_uri()) as api:
        models = sorted(layout)
        for count in steps:
            r = _fleet_run(api, stack, lake_dir.as_uri(), models[:count], incident_models, "fleet")
            rows.append((count, r["state"], r["wall"], r["mapped"], r["task_s"], r["right"], r["judged"]))
            _progress(
                f"fleet: {count} models: {r['state']} in {r['wall']:.0f} s, {r['mapped']} correlate tasks"
            )
    out = [
        f"## Fleet: {args.scale_models} models on {args.scale_instances} instances, one day ({FLEET_DAY}), "
        f"LocalExecutor\n",
        f"Seeded: {seeded.get('predictions') or 'kept'} predictions in {seeded.get('runs') or 'kept'} batch runs, "
        f"{seeded.get('samples') or 'kept'} Prometheus samples ({seeded['seconds']:.0f} s, not timed below). "
        "Each run is triggered from the REST API with the form's `models` and `dry_run`; wall time is from the "
        "request to the run's end.\n",
        "| models | state | wall | mapped `correlate` tasks | extract_resources | extract_predictions | "
        "correlate (sum of tasks) | evaluate | verdicts as seeded |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for count, state_, wall, mapped, task_s, right, judged in rows:
        out.append(
            f"| {count} | {state_} | {wall:.0f} s | {mapped} | {task_s.get('extract_resources', 0):.1f} s | "
            f"{task_s.get('extract_predictions', 0):.1f} s | {task_s.get('correlate', 0):.1f} s | "
            f"{task_s.get('evaluate', 0):.1f} s | {right} of {count} ({judged} judged) |"
        )
    if len(rows) > 1:
        (c0, *_, w0), (c1, *_, w1) = (rows[0][0], rows[0][2]), (rows[-1][0], rows[-1][2])
        out.append(f"\nFrom {c0} to {c1} models the wall time grows {w1 / w0:.2f}x for {c1 / c0:.0f}x the models "
                   f"({(w1 - w0) / (c1 - c0):.2f} s per added model).")  # fmt: skip
    out.append(f"\n_seeding and runs: {time.perf_counter() - t0:.0f} s_")
    return out


#: engine name of the ``engines`` part -> Celery workers (0: SQLite and the LocalExecutor)
ENGINES = {"local": 0, "celery-1": 1, "celery-2": 2}


def parse_engines(text: str) -> dict[str, int]:
    """``--scale-engines`` (``local,celery-1,celery-2``) -> engine name -> Celery workers, in the given order."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in ENGINES]
    if unknown:
        raise SystemExit(
            f"--scale-engines: unknown engine(s) {', '.join(unknown)}; known: {', '.join(ENGINES)}"
        )
    return {n: ENGINES[n] for n in names}


def _fleet_run(
    api: Any, stack: Any, lake: str, models: list[str], incident_models: set[str], tag: str
) -> dict[str, Any]:
    """Trigger one dry run of the fleet day for ``models`` and wait for it: wall time (request to end), the
    mapped ``correlate`` tasks and the hosts (Celery node names) that ran them, task seconds, verdicts."""
    run_id = f"bench_{tag}_{len(models)}_{int(time.time())}"
    # the form's window (runs without a logical date: one per model count, all of the same day)
    window = {"window_start": f"{FLEET_DAY.isoformat()}T00:00:00Z",
              "window_end": f"{(FLEET_DAY + timedelta(days=1)).isoformat()}T00:00:00Z"}  # fmt: skip
    started = time.perf_counter()
    api.trigger(DAG_ID, {"models": models, "dry_run": True, **window}, run_id=run_id)
    run = api.wait_for_run(DAG_ID, run_id, timeout=1800)
    wall = time.perf_counter() - started
    mapped = [t for t in api.task_instances(DAG_ID, run_id) if t["task_id"] == "correlate"]
    # a form-window run is ad hoc: its verdicts are under adhoc/, named by the evaluate task's XCom
    document = (api.xcom(DAG_ID, run_id, "evaluate") or {}).get("verdict_document") if run["state"] == "success" else None
    got = _verdicts(stack, lake, FLEET_DAY, document) if document else {}
    # an incident model is degraded with cpu among its saturated resources (the generator's CPU incident
    # raises the load too); every other model is healthy
    right = sum(
        _as_seeded("degraded (cpu)" if m in incident_models else "healthy", got.get(m, "")) for m in models
    )
    return {"state": run["state"], "wall": wall, "mapped": len(mapped), "task_s": _task_seconds(api, run_id),
            "hosts": sorted({t.get("hostname") or "?" for t in mapped}), "right": right, "judged": len(got)}  # fmt: skip


def engines_part(args: argparse.Namespace, stack: Any, state: Path, base: dict[str, Any]) -> list[str]:
    """The fleet day with all its models on each engine of ``--scale-engines``, one after the other in this
    run, each on a fresh Airflow and the same kind of lake (``--scale-engine-lake``), ``--scale-engine-repeats``
    runs each."""
    engines = parse_engines(args.scale_engines)
    seeded = seed_fleet(stack, state, args.scale_models, args.scale_instances)
    layout = fleet_layout(args.scale_models, args.scale_instances)
    incident_models = set(fleet_incident_instances(layout).values())
    models = sorted(layout)
    config = fleet_config(base, "ModelPredictionsDegradedBenchEngines")
    rows = []
    for name, workers in engines.items():
        tag = name.replace("-", "")
        lake = (f"s3://modelwatch/bench-engines/{tag}-{int(time.time())}" if args.scale_engine_lake == "s3"
                else (state / f"engines-lake-{tag}").as_uri())  # fmt: skip
        timings: dict[str, float] = {}
        with airflow_for(
            stack, state, f"airflow-{name}", config, lake, celery_workers=workers, timings=timings
        ) as api:
            runs = []
            for k in range(args.scale_engine_repeats):
                runs.append(_fleet_run(api, stack, lake, models, incident_models, tag))
                r = runs[-1]
                _progress(f"engines: {name} run {k + 1}: {r['state']} in {r['wall']:.0f} s, {r['mapped']} correlate "
                          f"tasks on {', '.join(r['hosts'])}")  # fmt: skip
        rows.append((name, timings, runs))
    lake_kind = "moto's S3" if args.scale_engine_lake == "s3" else "file://"
    out = [
        f"## Engines: the {len(models)}-model fleet day ({FLEET_DAY}) on the LocalExecutor and on Celery workers\n",
        f"Each engine gets a fresh Airflow (the same DAG, configuration and seeded stack: "
        f"{seeded.get('predictions') or 'kept'} predictions, {args.scale_instances} instances) and a lake on "
        f"{lake_kind}; each run is a dry run of all {len(models)} models triggered from the REST API, wall time "
        f"from the request to the run's end. `local`: SQLite, LocalExecutor. `celery-N`: PostgreSQL, Redis, "
        f"CeleryExecutor with N workers of {WORKER_CONCURRENCY} task slots each. All on this one machine "
        f"({os.cpu_count()} CPUs), so a second worker adds slots, not cores.\n",
        "| engine | task slots | Airflow healthy | run | wall | mapped `correlate` | ran on | extract_resources | "
        "extract_predictions | correlate (sum) | evaluate | verdicts as seeded |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for name, timings, runs in rows:
        for k, r in enumerate(runs, 1):
            t = r["task_s"]
            hosts = ", ".join(h.split("@")[0] for h in r["hosts"])
            out.append(
                f"| {name} | {timings['slots']:.0f} | {timings['ready']:.0f} s | {k} | **{r['wall']:.0f} s** ({r['state']}) | {r['mapped']} | "
                f"{hosts} | {t.get('extract_resources', 0):.1f} s | {t.get('extract_predictions', 0):.1f} s | "
                f"{t.get('correlate', 0):.1f} s | {t.get('evaluate', 0):.1f} s | {r['right']} of {len(models)} |"
            )
    best = {name: min(r["wall"] for r in runs) for name, _t, runs in rows}
    if "local" in best and len(best) > 1:
        out.append("\nBest wall time against the LocalExecutor's: " + ", ".join(
            f"{n} {w:.0f} s ({w / best['local']:.2f}x)" for n, w in best.items() if n != "local") + ".")  # fmt: skip
    return out


def run(args: argparse.Namespace) -> str:
    parts = {p.strip() for p in args.scale_parts.split(",") if p.strip()}
    base = yaml.safe_load((REPO / "include" / "thresholds.yaml").read_text())
    with tempfile.TemporaryDirectory(prefix="modelwatch-bench-scale-") as tmp:
        state = Path(args.scale_state).absolute() if args.scale_state else Path(tmp)
        state.mkdir(parents=True, exist_ok=True)
        out: list[str] = []
        _run_parts(args, parts, base, state, out)
    return "\n".join(out)


def _run_parts(
    args: argparse.Namespace, parts: set[str], base: dict[str, Any], state: Path, out: list[str]
) -> None:
    from devstack.stack import Stack, StackConfig

    stack = Stack(StackConfig.free_ports(state / "stack"))
    try:
        _progress(f"starting the stack under {state}")
        stack.start()
        if "backfill" in parts:
            out += backfill_part(args, stack, state, base) + [""]
        if "fleet" in parts:
            out += fleet_part(args, stack, state, base) + [""]
        if "engines" in parts:
            out += engines_part(args, stack, state, base)
    finally:
        stack.stop()
