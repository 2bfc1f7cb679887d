"""Load the synthetic history of :mod:`devstack.scenarios` into Prometheus and MLflow.

- :func:`seed_prometheus` backfills a Prometheus data folder offline (one OpenMetrics file per day through
  ``promtool tsdb create-blocks-from openmetrics``); Prometheus must be stopped meanwhile.
- :func:`seed_mlflow` logs the predictions to a running MLflow tracking server.
- :func:`seed_main` is ``python -m devstack seed``: stop Prometheus, backfill, start it, seed MLflow.

Both seeders are idempotent: a day already seeded with the same scenario and generator version is
skipped, so running them twice never duplicates data.

Why: Prometheus 2.42 takes days-old samples only through promtool's backfill (remote write refuses samples
older than its head block, the Pushgateway refuses timestamps) and MLflow through its client; this module
is the glue around both, plus the markers that make seeding idempotent.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Generator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from devstack.scenarios import (
    AMOUNT_METRIC,
    CHANNEL_PARAM,
    GENERATOR_VERSION,
    MODELS,
    SCORE_METRIC,
    TEST_DAYS,
    Prediction,
    day_start,
    get_scenario,
    predictions,
    recent_days,
    write_openmetrics,
)

#: File in the Prometheus data folder that records which days were backfilled, with what.
MARKER_FILE = ".modelwatch-seed.json"
DAY_TAG = "modelwatch.synthetic_day"
SCENARIO_TAG = "modelwatch.scenario"
VERSION_TAG = "modelwatch.generator_version"
#: MLflow refuses more than 1,000 metrics in one log_batch call.
MAX_METRICS_PER_BATCH = 1000
#: Concurrent MLflow requests. The single-worker server is the bottleneck: measured 1 thread 38 s per
#: day, 4 threads 13-28 s, 8 threads 17-28 s (2 loaded cores).
DEFAULT_THREADS = 4
_SUPPRESS_URLS = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class DayResult:
    """What seeding did for one day of one store.

    :ivar day: the day.
    :ivar scenario: its scenario name.
    :ivar skipped: True when the day was already seeded identically (nothing done).
    :ivar items: samples written to Prometheus, or runs created in MLflow.
    :ivar seconds: wall time spent on that day (``generate_s + load_s``).
    :ivar generate_s: time to generate the data (OpenMetrics file, predictions).
    :ivar load_s: time to load it (promtool, MLflow calls).
    :ivar file_bytes: size of the OpenMetrics file (Prometheus only).
    """

    day: date
    scenario: str
    skipped: bool
    items: int = 0
    seconds: float = 0.0
    generate_s: float = 0.0
    load_s: float = 0.0
    file_bytes: int = 0


# --------------------------------------------------------------------------------------------------
# Prometheus
# --------------------------------------------------------------------------------------------------


def _signature(scenario: str) -> dict[str, Any]:
    return {"scenario": scenario, "generator_version": GENERATOR_VERSION}


def _same(marker: Mapping[str, Any], scenario: str) -> bool:
    return all(marker.get(k) == v for k, v in _signature(scenario).items())


def read_markers(data_dir: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """The days backfilled into ``data_dir`` so far: ``{"YYYY-MM-DD": {"scenario": ..., ...}}``."""
    path = Path(data_dir) / MARKER_FILE
    try:
        return json.loads(path.read_text())["days"]
    except FileNotFoundError:
        return {}


def _write_markers(data_dir: Path, markers: Mapping[str, Any]) -> None:
    # Write-then-rename: an interrupted seed leaves the previous marker file, never half of one.
    tmp = data_dir / f"{MARKER_FILE}.tmp"
    tmp.write_text(json.dumps({"days": dict(sorted(markers.items()))}, indent=1) + "\n")
    tmp.replace(data_dir / MARKER_FILE)


def processes_using(path: str | os.PathLike[str]) -> list[int]:
    """PIDs of the other processes holding a file open under ``path`` (from ``/proc/*/fd``).

    Prometheus 2.42 takes no lock file by default (``--storage.tsdb.use-lockfile`` is opt-in), but a
    running one always keeps its WAL segment open, which is what this sees.

    :param path: a folder.
    :returns: PIDs, empty when none (or when ``/proc`` is unavailable).
    """
    root = os.path.realpath(path) + os.sep
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        pid = int(entry.name)
        if pid == os.getpid():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith(root):
                found.append(pid)
                break
    return found


def prometheus_days_to_seed(data_dir: str | os.PathLike[str], days: Mapping[date, str]) -> dict[date, str]:
    """The days of ``days`` that :func:`seed_prometheus` would (re)build in ``data_dir``.

    :param data_dir: Prometheus' data folder.
    :param days: ``{day: scenario name}``.
    :returns: the subset not yet recorded identically; empty means seeding is a no-op.
    """
    markers = read_markers(data_dir)
    return {d: s for d, s in days.items() if not _same(markers.get(d.isoformat(), {}), s)}


def _check_not_in_use(data_dir: Path) -> None:
    """Raise if a process (a Prometheus) holds files in ``data_dir``: promtool must have it to itself."""
    pids = processes_using(data_dir)
    if pids:
        raise RuntimeError(
            f"process(es) {', '.join(map(str, pids))} hold files in {data_dir}: stop the Prometheus running on "
            "it before seeding (Stack.stop_service('prometheus'))"
        )


def _promtool() -> str:
    found = shutil.which("promtool")
    if not found:
        raise RuntimeError(
            "promtool is not on PATH; it comes with the Debian package prometheus "
            "(scripts/ensure-system-deps.sh)"
        )
    return found


def _backfill_day(day: date, scenario: str, data_dir: Path, work_dir: Path, keep_files: bool) -> DayResult:
    t0 = time.perf_counter()
    path = work_dir / f"{day.isoformat()}-{scenario}.om"
    samples = write_openmetrics(day, scenario, path)
    size = path.stat().st_size
    t1 = time.perf_counter()
    if samples:
        proc = subprocess.run(
            [_promtool(), "tsdb", "create-blocks-from", "openmetrics", "--quiet", str(path), str(data_dir)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"promtool failed on {path} (exit {proc.returncode}):\n{proc.stderr[-2000:] or proc.stdout[-2000:]}"
            )
    t2 = time.perf_counter()
    if not keep_files:
        path.unlink(missing_ok=True)
    return DayResult(day, scenario, False, samples, t2 - t0, t1 - t0, t2 - t1, size)


def seed_prometheus(
    data_dir: str | os.PathLike[str],
    days: Mapping[date, str],
    work_dir: str | os.PathLike[str] | None = None,
    *,
    jobs: int = 2,
    keep_files: bool = False,
    progress: Progress = _quiet,
) -> list[DayResult]:
    """Backfill ``days`` into the Prometheus data folder ``data_dir``, offline.

    One OpenMetrics file per day goes through ``promtool tsdb create-blocks-from openmetrics`` (one file
    per day keeps promtool linear: it re-reads the whole file for each 2-hour block). A scenario without
    data writes nothing. Prometheus must not run on ``data_dir`` meanwhile (checked through its lock
    file): stop it before and start it after, with ``--storage.tsdb.retention.time=3650d``.

    Idempotent: each seeded day is recorded in ``data_dir/.modelwatch-seed.json`` with its scenario and
    :data:`~devstack.scenarios.GENERATOR_VERSION`; a day recorded identically is skipped. When a
    requested day was recorded with *another* scenario or generator version, blocks cannot be removed
    day by day (Prometheus compacts them across days), so the whole folder is wiped (live scrapes
    included) and only the requested days are seeded.

    :param data_dir: Prometheus' ``--storage.tsdb.path`` (created if missing).
    :param days: ``{day: scenario name}``, e.g. :data:`~devstack.scenarios.TEST_DAYS`.
    :param work_dir: folder for the OpenMetrics files (default: a temporary folder).
    :param jobs: days processed in parallel (promtool uses about one core).
    :param keep_files: keep the OpenMetrics files in ``work_dir`` (for inspection).
    :param progress: called with one line of text per day.
    :returns: one :class:`DayResult` per requested day, in date order.
    :raises RuntimeError: when Prometheus holds ``data_dir`` or promtool fails.
    """
    data_dir = Path(data_dir)
    for scenario in days.values():
        get_scenario(scenario)  # fail on a typo before touching anything
    markers = read_markers(data_dir)
    conflicts = [
        d for d, s in days.items() if d.isoformat() in markers and not _same(markers[d.isoformat()], s)
    ]
    if conflicts or any(d.isoformat() not in markers for d in days):
        # Only now: a no-op seed must work while Prometheus runs.
        data_dir.mkdir(parents=True, exist_ok=True)
        _check_not_in_use(data_dir)
    if conflicts:
        progress(
            f"prometheus: {', '.join(d.isoformat() for d in sorted(conflicts))} seeded differently before: "
            f"wiping {data_dir}"
        )
        shutil.rmtree(data_dir)
        data_dir.mkdir(parents=True)
        markers = {}
    todo = {d: s for d, s in sorted(days.items()) if d.isoformat() not in markers}
    results = {d: DayResult(d, s, True) for d, s in days.items() if d not in todo}
    for d in sorted(results):
        progress(f"prometheus: {d} {days[d]:<18} already seeded, skipped")

    with contextlib.ExitStack() as stack:
        if work_dir is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="modelwatch-seed-")))
        else:
            work = Path(work_dir)
            work.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            futures = {
                d: pool.submit(_backfill_day, d, s, data_dir, work, keep_files) for d, s in todo.items()
            }
            # Consume in date order so markers are written as days complete, not all at the end.
            for d, future in futures.items():
                r = future.result()
                results[d] = r
                markers[d.isoformat()] = {**_signature(r.scenario), "samples": r.items}
                _write_markers(data_dir, markers)
                progress(
                    f"prometheus: {d} {r.scenario:<18} {r.items:>7} samples, {r.file_bytes / 1e6:5.1f} MB, "
                    f"generated {r.generate_s:.2f} s, promtool {r.load_s:.2f} s"
                )
    return [results[d] for d in sorted(results)]


# --------------------------------------------------------------------------------------------------
# MLflow
# --------------------------------------------------------------------------------------------------


def _client(tracking_uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def ensure_experiments(client: Any) -> dict[str, str]:
    """Create the contract's experiments if missing.

    :param client: an ``MlflowClient``.
    :returns: ``{model name: experiment id}``.
    """
    from mlflow.exceptions import MlflowException

    ids: dict[str, str] = {}
    for spec in MODELS.values():
        exp = client.get_experiment_by_name(spec.experiment)
        if exp is None:
            try:
                ids[spec.name] = client.create_experiment(
                    spec.experiment, tags={"modelwatch.synthetic": "true"}
                )
                continue
            except MlflowException:
                # Someone else created it in between.
                exp = client.get_experiment_by_name(spec.experiment)
                if exp is None:
                    raise
        ids[spec.name] = exp.experiment_id
    return ids


def search_all_runs(
    client: Any, experiment_ids: list[str], filter_string: str, page_size: int = 1000
) -> list[Any]:
    """All runs matching ``filter_string``, following ``page_token`` through every page.

    :param client: an ``MlflowClient``.
    :param experiment_ids: experiments to search.
    :param filter_string: an MLflow search filter.
    :param page_size: ``max_results`` per call.
    :returns: the runs (``mlflow.entities.Run``).
    """
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(experiment_ids, filter_string, max_results=page_size, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _metrics(p: Prediction) -> list[tuple[str, float]]:
    """What a prediction logs: its time, input amount and output score, and its accuracy and loss once its
    label is known (not NaN)."""
    values = (("prediction_time", p.prediction_time), (AMOUNT_METRIC, p.amount), (SCORE_METRIC, p.score),
              ("accuracy", p.accuracy), ("loss", p.loss))  # fmt: skip
    return [(k, v) for k, v in values if k == "prediction_time" or v == v]


def _tags(p: Prediction, day: date, scenario: str) -> dict[str, str]:
    return {
        "model": p.model,
        "model_version": p.model_version,
        "instance": p.instance,
        DAY_TAG: day.isoformat(),
        SCENARIO_TAG: scenario,
        VERSION_TAG: str(GENERATOR_VERSION),
    }


def _log_prediction_run(client: Any, experiment_id: str, p: Prediction, day: date, scenario: str) -> None:
    from mlflow.entities import Metric, Param

    hhmm = time.strftime("%H%M", time.gmtime(p.timestamp_ms // 1000))
    run = client.create_run(
        experiment_id,
        start_time=p.timestamp_ms,
        tags=_tags(p, day, scenario),
        run_name=f"{p.model}-{p.instance}-{day.isoformat()}-{hhmm}",
    )
    ts = p.timestamp_ms
    client.log_batch(
        run.info.run_id,
        # a prediction whose label has not arrived has no accuracy and no loss yet
        metrics=[Metric(key, value, ts, 0) for key, value in _metrics(p)],
        params=[Param(CHANNEL_PARAM, p.channel)],
        synchronous=True,
    )
    # The run lasts as long as the prediction did.
    client.set_terminated(run.info.run_id, "FINISHED", end_time=ts + round(p.prediction_time * 1000))


def _log_history_run(
    client: Any,
    experiment_id: str,
    preds: list[Prediction],
    day: date,
    scenario: str,
    pool: ThreadPoolExecutor,
) -> None:
    from mlflow.entities import Metric

    first = preds[0]
    start_ms = day_start(day) * 1000
    run = client.create_run(
        experiment_id,
        start_time=start_ms,
        tags=_tags(first, day, scenario),
        run_name=f"{first.model}-{first.instance}-{day.isoformat()}",
    )
    metrics = [
        Metric(key, value, p.timestamp_ms, step)
        for step, p in enumerate(preds)
        for key, value in _metrics(p)
    ]
    batches = [metrics[i : i + MAX_METRICS_PER_BATCH] for i in range(0, len(metrics), MAX_METRICS_PER_BATCH)]
    for f in [pool.submit(client.log_batch, run.info.run_id, metrics=b, synchronous=True) for b in batches]:
        f.result()
    client.set_terminated(run.info.run_id, "FINISHED", end_time=start_ms + 86_400_000 - 1)


def expected_run_count(day: date, scenario: str) -> dict[str, int]:
    """Runs :func:`seed_mlflow` creates for ``day``: ``{model name: runs}``."""
    preds = predictions(day, scenario)
    counts = {}
    for spec in MODELS.values():
        mine = [p for p in preds if p.model == spec.name]
        # A metric-history model has one run per instance that predicted that day.
        counts[spec.name] = (
            len(mine) if spec.layout == "run_per_prediction" else len({p.instance for p in mine})
        )
    return counts


def seed_mlflow(
    tracking_uri: str,
    days: Mapping[date, str],
    *,
    threads: int = DEFAULT_THREADS,
    progress: Progress = _quiet,
) -> list[DayResult]:
    """Log the predictions of ``days`` to the MLflow tracking server at ``tracking_uri``.

    Experiments are created if missing. fraud-detector (``run_per_prediction``) gets one run per
    prediction whose start time is the prediction time (epoch ms) and end time the start plus the
    prediction's duration, with metrics ``prediction_time``, ``accuracy``, ``loss`` at that timestamp,
    step 0. recommender (``metric_history``) gets one run per instance and day (start 00:00:00, end
    23:59:59.999) whose metric history has one point per prediction (timestamp = prediction time,
    step = index). Every run is tagged ``model``, ``model_version``, ``instance`` and
    ``modelwatch.synthetic_day``/``modelwatch.scenario``/``modelwatch.generator_version``.

    Idempotent: a day whose tagged runs are all there with the same scenario and generator version is
    skipped; a partly seeded or differently seeded day has its runs deleted and is seeded again.

    :param tracking_uri: e.g. ``http://127.0.0.1:15000``.
    :param days: ``{day: scenario name}``.
    :param threads: concurrent requests to the server.
    :param progress: called with one line of text per day.
    :returns: one :class:`DayResult` per day, in date order (``items`` = runs created).
    """
    with _suppress_run_urls():
        return _seed_mlflow(tracking_uri, days, threads, progress)


@contextlib.contextmanager
def _suppress_run_urls() -> Generator[None]:
    # Besides printing two lines per run, set_terminated() fetches the run again to build its URL:
    # one extra request per run, a quarter of the seeding time.
    old = os.environ.get(_SUPPRESS_URLS)
    os.environ[_SUPPRESS_URLS] = "true"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(_SUPPRESS_URLS, None)
        else:
            os.environ[_SUPPRESS_URLS] = old


def _seed_mlflow(
    tracking_uri: str, days: Mapping[date, str], threads: int, progress: Progress
) -> list[DayResult]:
    client = _client(tracking_uri)
    exp_ids = ensure_experiments(client)
    results: list[DayResult] = []
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for day, scenario in sorted(days.items()):
            t0 = time.perf_counter()
            preds = predictions(day, scenario)
            expected = sum(expected_run_count(day, scenario).values())
            existing = search_all_runs(
                client, list(exp_ids.values()), f"tags.`{DAY_TAG}` = '{day.isoformat()}'"
            )
            same = all(
                r.data.tags.get(SCENARIO_TAG) == scenario
                and r.data.tags.get(VERSION_TAG) == str(GENERATOR_VERSION)
                for r in existing
            )
            if len(existing) == expected and same:
                results.append(DayResult(day, scenario, True, 0, time.perf_counter() - t0))
                progress(f"mlflow: {day} {scenario:<18} {expected} runs already there, skipped")
                continue
            if existing:
                progress(f"mlflow: {day} {scenario:<18} deleting {len(existing)} runs seeded differently")
                for f in [pool.submit(client.delete_run, r.info.run_id) for r in existing]:
                    f.result()
            t1 = time.perf_counter()
            futures = []
            for spec in MODELS.values():
                mine = [p for p in preds if p.model == spec.name]
                if spec.layout == "run_per_prediction":
                    futures += [
                        pool.submit(_log_prediction_run, client, exp_ids[spec.name], p, day, scenario)
                        for p in mine
                    ]
                else:
                    for instance in spec.instances:
                        history = [p for p in mine if p.instance == instance]
                        if history:
                            _log_history_run(client, exp_ids[spec.name], history, day, scenario, pool)
            for f in futures:
                f.result()
            t2 = time.perf_counter()
            results.append(DayResult(day, scenario, False, expected, t2 - t0, t1 - t0, t2 - t1))
            progress(
                f"mlflow: {day} {scenario:<18} {expected:>4} runs, {len(preds):>5} predictions, {t2 - t0:.1f} s"
            )
    return results


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m devstack seed`` (called by :func:`devstack.__main__.build_parser`).

    :param parser: the sub-command's parser.
    """
    parser.add_argument(
        "--test-days",
        action="store_true",
        help="seed the fixed test dates of devstack/CONTRACT.md (2026-03-02..07) instead of recent days",
    )
    parser.add_argument("--days", type=int, default=6, help="number of recent full days to seed (default 6)")
    parser.add_argument(
        "--end-date",
        type=date.fromisoformat,
        default=None,
        help="recent days end the day before this date (default: today, UTC)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=DEFAULT_THREADS,
        help=f"concurrent MLflow requests (default {DEFAULT_THREADS})",
    )


def days_from_args(args: argparse.Namespace) -> dict[date, str]:
    """The ``{day: scenario}`` plan selected by the seed/demo options.

    :param args: parsed arguments (see :func:`add_arguments`).
    :returns: :data:`~devstack.scenarios.TEST_DAYS` or :func:`~devstack.scenarios.recent_days`.
    """
    if getattr(args, "test_days", False):
        return dict(TEST_DAYS)
    return recent_days(getattr(args, "end_date", None), getattr(args, "days", 6))


def seed_stack(
    stack: Any,
    days: Mapping[date, str],
    *,
    threads: int = DEFAULT_THREADS,
    work_dir: str | os.PathLike[str] | None = None,
    progress: Progress = _quiet,
) -> tuple[list[DayResult], list[DayResult]]:
    """Seed a :class:`devstack.stack.Stack` with ``days``: Prometheus and MLflow, concurrently.

    MLflow is started if needed and seeded in the background while Prometheus is stopped, backfilled
    and started again (the two loads use different resources: promtool the CPU, MLflow its server).
    When every day is already in Prometheus, the running Prometheus is left alone.

    :param stack: the stack.
    :param days: ``{day: scenario name}``.
    :param threads: concurrent MLflow requests.
    :param work_dir: folder for the OpenMetrics files (default: a temporary folder).
    :param progress: called with one line of text per step.
    :returns: the Prometheus and MLflow results.
    """
    config = stack.config
    stack.start(["mlflow"])
    with ThreadPoolExecutor(max_workers=1) as background:
        ml_future = background.submit(
            seed_mlflow, config.mlflow_url, days, threads=threads, progress=progress
        )
        if not prometheus_days_to_seed(config.prometheus_data_dir, days):
            prom = seed_prometheus(config.prometheus_data_dir, days, work_dir, progress=progress)
            stack.start(["prometheus"])
        else:
            if stack.stop_service("prometheus"):
                progress("prometheus: stopped for the backfill")
            try:
                prom = seed_prometheus(config.prometheus_data_dir, days, work_dir, progress=progress)
            finally:
                # Even after a failed backfill: leave the stack as complete as it was.
                t0 = time.perf_counter()
                stack.start(["prometheus"])
                progress(
                    f"prometheus: running again at {config.prometheus_url} ({time.perf_counter() - t0:.1f} s)"
                )
        ml = ml_future.result()
    return prom, ml


def seed_main(args: argparse.Namespace | None = None) -> int:
    """``python -m devstack seed``: load the synthetic history into the configured stack.

    Uses :meth:`devstack.stack.StackConfig.from_env`; Prometheus and MLflow are (re)started as needed
    and left running. Default: the scenarios mapped onto the last six full days; ``--test-days``: the
    fixed test dates.

    :param args: parsed arguments (see :func:`add_arguments`); ``None`` means defaults.
    :returns: exit code.
    """
    from devstack.stack import Stack, StackConfig

    args = args or argparse.Namespace()
    days = days_from_args(args)
    stack = Stack(StackConfig.from_env())
    print(f"seeding {len(days)} days into {stack.config.state_dir}:")
    for d, s in days.items():
        print(f"  {d}  {s:<18} {get_scenario(s).doc}")
    t0 = time.perf_counter()
    seed_stack(
        stack,
        days,
        threads=getattr(args, "threads", DEFAULT_THREADS),
        work_dir=stack.config.state_dir / "seed",
        progress=print,
    )
    print(
        f"seeded in {time.perf_counter() - t0:.1f} s. Prometheus {stack.config.prometheus_url}, MLflow {stack.config.mlflow_url}"
    )
    print("Stop with: make stack-down")
    return 0
