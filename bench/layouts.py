"""Benchmark: one day of about 1M predictions in the ``batch_table`` layout, written and read back through a
real local MLflow server (sqlite, one worker), beside the raw cost of the same requests.

Starts a throwaway MLflow (``devstack.stack.Stack`` on free ports in a temporary folder, ``mlflow`` only; its
runs' artifacts go to a local folder, and the server's artifact proxy serves ``mlflow-artifacts:/`` into the
same temporary folder). Three experiments:

- ``batch_table``, artifact proxy: ``--layouts-batches`` runs (one per minute of the day) of
  ``--layouts-rows`` predictions each, experiment artifact location ``mlflow-artifacts:/...`` (every upload
  and download goes through the server, the default of ``mlflow server``);
- ``batch_table``, local artifact root: the same runs, artifacts in a folder the client reads and writes
  itself (the stack's ``--default-artifact-root``; what a shared volume or an object store looks like);
- ``metric_history``: ``--layouts-history`` predictions as metric points of 4 runs (2 models x 2 instances).

Writes go through the server with the layout's own writer (:func:`devstack.model_service.log_batch_run`:
create run, upload ``predictions.parquet``, terminate; ``log_batch`` for metric history), 4 threads.

Reads: each timed read runs in its own child process (imports done before the clock starts; peak RSS growth
is the child's high-water mark during the read, reset with ``/proc/self/clear_refs`` after the imports),
``--layouts-rounds`` rounds, kinds interleaved with the order rotated each round, medians reported:

- ``extract_predictions`` over the day (the DAG's read: overlap search, downloads 8 at a time, frame, sort);
- the reference, raw: the same run searches over REST (``runs/search``, 50,000 per page, ``json.loads``) and
  the same downloads with the same concurrency (8 threads of ``requests`` GETs of the proxy, or ``read()`` of
  the local files), bytes kept in memory, no Parquet decoding, no frame; for metric history the REST
  ``metrics/get-history`` calls, one per run and key, pages followed.

Run: ``flock /tmp/modelwatch-stack.lock .venv/bin/python -m bench --only layouts``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

DESCRIPTION = "1M predictions a day in the batch_table layout (artifact proxy, local root) and metric_history: write and read vs raw REST + downloads"

DAY = datetime(2026, 5, 4, tzinfo=UTC)
TAGS = {"model": "model", "model_version": "model_version", "instance": "instance"}
COMBOS = [
    ("fraud-detector", "model-a:8000"),
    ("fraud-detector", "model-b:8000"),
    ("recommender", "model-b:8000"),
]
PAGE = 50_000
WORKERS = 8  # = modelwatch.hooks.mlflow.DOWNLOAD_WORKERS, the reader's concurrency
WRITERS = 4
TARGET_SECONDS = 30.0
ARTIFACT = "predictions.parquet"
EXPERIMENTS = {
    "proxy": "bench-batch-proxy",
    "local": "bench-batch-local",
    "history": "bench-metric-history",
}
METRIC_KEYS = ("prediction_time", "accuracy", "loss")


# -- writing -------------------------------------------------------------------------------------------


def _batch_tables(batches: int, rows: int, seed: int) -> list[tuple[Any, dict[str, str]]]:
    """One table per minute of :data:`DAY` (the last ``batches`` minutes), ``rows`` predictions each."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    day_ms = int(DAY.timestamp() * 1000)
    span = 86_400_000 // batches
    out = []
    for i in range(batches):
        ts = np.sort(day_ms + i * span + rng.integers(0, span, rows))
        table = pa.table({
            "timestamp": pa.array(ts, type=pa.timestamp("ms", tz="UTC")),
            "prediction_time": pa.array(rng.lognormal(-1.6, 0.5, rows)),
            "accuracy": pa.array(rng.random(rows)),
            "loss": pa.array(rng.random(rows)),
        })  # fmt: skip
        model, instance = COMBOS[i % len(COMBOS)]
        out.append((table, {"model": model, "model_version": "3", "instance": instance}))
    return out


def _write_batches(url: str, exp_id: str, tables: list[tuple[Any, dict[str, str]]]) -> float:
    from mlflow.tracking import MlflowClient

    from devstack.model_service import log_batch_run

    client = MlflowClient(url)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=WRITERS) as pool:
        list(pool.map(lambda item: log_batch_run(client, exp_id, item[0], item[1]), tables))
    return time.perf_counter() - started


def _write_history(url: str, exp_id: str, predictions: int) -> float:
    """``predictions`` metric-history points (x3 keys) in 4 runs spanning the day, ``log_batch`` of 999."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(url)
    rng = random.Random(11)
    day_ms = int(DAY.timestamp() * 1000)
    started = time.perf_counter()
    per_run = predictions // 4
    jobs = []
    for model, instance in [("fraud-detector", "model-a:8000"), ("fraud-detector", "model-b:8000"),
                            ("recommender", "model-a:8000"), ("recommender", "model-b:8000")]:  # fmt: skip
        run = client.create_run(exp_id, start_time=day_ms,
                                tags={"model": model, "model_version": "3", "instance": instance})  # fmt: skip
        points = []
        for step in range(per_run):
            ts = day_ms + (step * 86_400_000) // per_run
            values = (rng.lognormvariate(-1.6, 0.5), rng.random(), rng.random())
            points.extend(Metric(k, v, ts, step) for k, v in zip(METRIC_KEYS, values, strict=True))
        jobs += [(run.info.run_id, points[i : i + 999]) for i in range(0, len(points), 999)]
        jobs.append((run.info.run_id, None))
    with ThreadPoolExecutor(max_workers=WRITERS) as pool:
        list(
            pool.map(
                lambda j: j[1] is not None and client.log_batch(j[0], metrics=j[1], synchronous=True), jobs
            )
        )
    for run_id in {j[0] for j in jobs}:
        client.set_terminated(run_id, "FINISHED", end_time=day_ms + 86_400_000 - 1)
    return time.perf_counter() - started


# -- reading (in a child process) -----------------------------------------------------------------------


def _window() -> tuple[datetime, datetime, int, int]:
    start, end = DAY, DAY + timedelta(days=1)
    return start, end, int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def _read_extract(name: str, layout: str) -> int:
    from modelwatch.extract import extract_predictions
    from modelwatch.hooks import MlflowHook

    start, end, _, _ = _window()
    return len(
        extract_predictions(MlflowHook(), [SimpleNamespace(name=name, layout=layout)], TAGS, start, end, PAGE)
    )


def _raw_search(session: Any, url: str, exp_id: str, flt: str) -> list[dict[str, Any]]:
    body: dict[str, Any] = {"experiment_ids": [exp_id], "filter": flt, "max_results": PAGE,
                            "order_by": ["attributes.start_time ASC"]}  # fmt: skip
    runs: list[dict[str, Any]] = []
    while True:
        response = session.post(f"{url}/api/2.0/mlflow/runs/search", json=body, timeout=600)
        response.raise_for_status()
        answer = json.loads(response.content)
        runs.extend(answer.get("runs") or [])
        if not answer.get("next_page_token"):
            return runs
        body["page_token"] = answer["next_page_token"]


def _raw_overlapping(session: Any, url: str, exp_id: str) -> list[dict[str, Any]]:
    # the two searches the reader needs (MLflow filters have no OR): finished runs overlapping, running runs
    _, _, start_ms, end_ms = _window()
    before = f"attributes.start_time < {end_ms}"
    return (_raw_search(session, url, exp_id, f"{before} AND attributes.end_time >= {start_ms}")
            + _raw_search(session, url, exp_id, f"{before} AND attributes.status = 'RUNNING'"))  # fmt: skip


def _raw_batch(url: str, exp_id: str) -> int:
    import threading

    import requests

    local = threading.local()

    def fetch(run: dict[str, Any]) -> int:
        uri = run["info"]["artifact_uri"].rstrip("/")
        if uri.startswith("mlflow-artifacts:/"):
            if not hasattr(local, "session"):
                local.session = requests.Session()
            response = local.session.get(
                f"{url}/api/2.0/mlflow-artifacts/artifacts/{uri.removeprefix('mlflow-artifacts:/')}/{ARTIFACT}",
                timeout=600,
            )
            response.raise_for_status()
            return len(response.content)
        with open(Path(uri.removeprefix("file://")) / ARTIFACT, "rb") as f:
            return len(f.read())

    with requests.Session() as session:
        runs = _raw_overlapping(session, url, exp_id)
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        sizes = list(pool.map(fetch, runs))
    if not all(sizes):
        raise AssertionError("an empty artifact")
    return len(runs)


def _raw_history(url: str, exp_id: str) -> int:
    import requests

    points = 0
    with requests.Session() as session:
        for run in _raw_overlapping(session, url, exp_id):
            for key in METRIC_KEYS:
                params = {"run_id": run["info"]["run_id"], "metric_key": key}
                while True:
                    response = session.get(
                        f"{url}/api/2.0/mlflow/metrics/get-history", params=params, timeout=600
                    )
                    response.raise_for_status()
                    answer = json.loads(response.content)
                    points += len(answer.get("metrics") or []) if key == METRIC_KEYS[0] else 0
                    if not answer.get("next_page_token"):
                        break
                    params["page_token"] = answer["next_page_token"]
    return points


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def child(kind: str, url: str, exp_id: str, name: str) -> dict[str, Any]:
    """One timed read in this (fresh) process: seconds, rows and peak RSS growth in MiB."""
    import logging

    # everything the reads import, before the clock and the memory baseline
    import mlflow.store.artifact.artifact_repository_registry  # noqa: F401
    import mlflow.store.artifact.http_artifact_repo  # noqa: F401
    import mlflow.store.artifact.local_artifact_repo  # noqa: F401
    import mlflow.store.artifact.mlflow_artifacts_repo  # noqa: F401
    import mlflow.tracking  # noqa: F401
    import pandas  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    import requests  # noqa: F401

    import modelwatch.correlate  # noqa: F401
    import modelwatch.extract  # noqa: F401
    import modelwatch.hooks  # noqa: F401

    logging.getLogger("airflow.task.hooks").setLevel(logging.WARNING)
    logging.getLogger("modelwatch").setLevel(logging.WARNING)
    reads: dict[str, Callable[[], int]] = {
        "extract-batch": lambda: _read_extract(name, "batch_table"),
        "raw-batch": lambda: _raw_batch(url, exp_id),
        "extract-history": lambda: _read_extract(name, "metric_history"),
        "raw-history": lambda: _raw_history(url, exp_id),
    }
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        before = _rss_kib("VmHWM")
    except OSError:
        before = _rss_kib("VmRSS")
    started = time.perf_counter()
    n = reads[kind]()
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "n": n, "peak_mib": (_rss_kib("VmHWM") - before) / 1024}


def _run_child(kind: str, url: str, exp_id: str, name: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.layouts", "--child", kind, url, exp_id, name],
        capture_output=True, text=True, env=os.environ.copy(), check=False,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"child {kind} {name} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- the benchmark --------------------------------------------------------------------------------------


def measure(batches: int, rows: int, history: int, rounds: int) -> dict[str, Any]:
    """Start MLflow, write the three experiments, time the reads; writes and per-read rounds."""
    from mlflow.tracking import MlflowClient

    from devstack.stack import Stack, StackConfig

    result: dict[str, Any] = {"writes": {}, "reads": {}}
    with tempfile.TemporaryDirectory(prefix="modelwatch-bench-layouts-") as tmp:
        stack = Stack(StackConfig.free_ports(Path(tmp)))
        try:
            stack.start(["mlflow"])
            url = stack.config.mlflow_url
            os.environ.update(stack.airflow_env())
            os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
            client = MlflowClient(url)
            ids = {
                "proxy": client.create_experiment(EXPERIMENTS["proxy"],
                                                  artifact_location=f"mlflow-artifacts:/{EXPERIMENTS['proxy']}"),
                "local": client.create_experiment(EXPERIMENTS["local"]),
                "history": client.create_experiment(EXPERIMENTS["history"]),
            }  # fmt: skip
            uri = client.get_experiment(ids["proxy"]).artifact_location
            if not uri.startswith("mlflow-artifacts:/"):
                raise AssertionError(f"the proxy experiment stores its artifacts at {uri}")
            tables = _batch_tables(batches, rows, seed=3)
            total = sum(t.num_rows for t, _ in tables)
            for store in ("proxy", "local"):
                seconds = _write_batches(url, ids[store], tables)
                result["writes"][store] = {"seconds": seconds, "runs": batches, "predictions": total}
                print(
                    f"wrote {batches} batch runs ({total:,} predictions, {store}) in {seconds:.1f} s",
                    flush=True,
                )
            del tables
            if history:
                seconds = _write_history(url, ids["history"], history)
                result["writes"]["history"] = {"seconds": seconds, "runs": 4, "predictions": history // 4 * 4}
                print(f"wrote {history:,} metric-history predictions in {seconds:.1f} s", flush=True)
            cases = [
                ("proxy", "extract-batch", total), ("proxy", "raw-batch", batches),
                ("local", "extract-batch", total), ("local", "raw-batch", batches),
            ]  # fmt: skip
            if history:
                cases += [
                    ("history", "extract-history", history // 4 * 4),
                    ("history", "raw-history", history // 4 * 4),
                ]
            for k in range(rounds):
                shift = (2 * k) % len(cases)
                for store, kind, expected in cases[shift:] + cases[:shift]:  # rotated each round
                    got = _run_child(kind, url, ids[store], EXPERIMENTS[store])
                    if got["n"] != expected:
                        raise AssertionError(f"{kind} {store} read {got['n']}, expected {expected}")
                    result["reads"].setdefault((store, kind), []).append(got)
                    print(f"  round {k + 1} {store} {kind}: {got['seconds']:.2f} s, +{got['peak_mib']:.0f} MiB",
                          flush=True)  # fmt: skip
            files = list(stack.config.mlflow_artifacts_dir.rglob(ARTIFACT))
            result["artifact_mib"] = sum(p.stat().st_size for p in files) / 2**20
        finally:
            stack.stop()
    return result


def _median(rounds: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in rounds)


def report(result: dict[str, Any], rounds: int) -> str:
    """Markdown: writes, then each read beside its raw reference, ratio and the 30 s target."""
    w = result["writes"]
    r = result["reads"]
    total = w["proxy"]["predictions"]
    lines = [
        f"## MLflow layouts: one day of {total:,} predictions\n",
        f"MLflow 1 worker sqlite; batch_table: {w['proxy']['runs']:,} runs (one per minute) of "
        f"{total // w['proxy']['runs']} rows, `predictions.parquet` "
        f"({result['artifact_mib']:.1f} MiB a day); reads in a fresh child process each, "
        f"median of {rounds}, interleaved\n",
        f"Writes ({WRITERS} threads, through the server):\n",
        "| write | seconds | predictions/s | runs/s |", "|---|---:|---:|---:|",
    ]  # fmt: skip
    names = {"proxy": "batch_table, artifact proxy (`mlflow-artifacts:/`)", "local": "batch_table, local artifact root",
             "history": "metric_history (`log_batch`, 999 points a call)"}  # fmt: skip
    for store, row in w.items():
        lines.append(f"| {names[store]} | {row['seconds']:.1f} | {row['predictions'] / row['seconds']:,.0f} | "
                     f"{row['runs'] / row['seconds']:.1f} |")  # fmt: skip
    lines += [
        "\nReads of the day (`extract_predictions`) beside the raw requests of the same read:\n",
        "| read | predictions | seconds | peak RSS growth | reference (raw REST search + downloads / get-history) "
        "| ratio | target | all rounds |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]  # fmt: skip
    for store in ("proxy", "local", "history"):
        if (store, "extract-batch") not in r and (store, "extract-history") not in r:
            continue
        kind = "history" if store == "history" else "batch"
        ours, raw = r[(store, f"extract-{kind}")], r[(store, f"raw-{kind}")]
        s, ref = _median(ours, "seconds"), _median(raw, "seconds")
        n = ours[0]["n"]
        if store == "history":
            target = f"- ({n / s:,.0f}/s; 1M at that rate: {1_000_000 / (n / s) / 60:.0f} min)"
        else:
            target = f"< {TARGET_SECONDS:.0f} s: {'met' if s < TARGET_SECONDS else 'NOT met'}"
        every = (
            " ".join(f"{x['seconds']:.1f}" for x in ours)
            + " / "
            + " ".join(f"{x['seconds']:.1f}" for x in raw)
        )
        lines.append(
            f"| {names[store]} | {n:,} | {s:.2f} | +{_median(ours, 'peak_mib'):.0f} MiB | {ref:.2f} s, "
            f"+{_median(raw, 'peak_mib'):.0f} MiB | {s / ref:.2f}x | {target} | {every} |"
        )
    return "\n".join(lines)


def add_arguments(group: Any) -> None:
    """Options of this benchmark in ``python -m bench``."""
    group.add_argument(
        "--layouts-batches", type=int, default=1440, help="batch runs in the day (default 1,440)"
    )
    group.add_argument(
        "--layouts-rows", type=int, default=696, help="predictions per batch run (default 696)"
    )
    group.add_argument("--layouts-history", type=int, default=20_000,
                       help="metric_history predictions (0: skip; default 20,000)")  # fmt: skip
    group.add_argument(
        "--layouts-rounds", type=int, default=3, help="timed reads of each (median; default 3)"
    )


def run(args: Any) -> str:
    """``python -m bench`` entry: measure and return the markdown section."""
    result = measure(args.layouts_batches, args.layouts_rows, args.layouts_history, args.layouts_rounds)
    return report(result, args.layouts_rounds)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.layouts [options]``, or ``--child KIND URL EXP_ID NAME`` (one timed read, JSON)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        print(json.dumps(child(*argv[1:5])))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.layouts", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    print(report(measure(args.layouts_batches, args.layouts_rows, args.layouts_history, args.layouts_rounds),
                 args.layouts_rounds))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
