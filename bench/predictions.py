"""Benchmark: the one-run-per-prediction read against a real local MLflow server (sqlite, one worker).

Starts a throwaway MLflow on a free port in a temporary folder, seeds ``--runs`` one-run-per-prediction
runs in one day, then times, interleaved in the same process (order rotated each round), ``--rounds``
times each, and prints medians:

(a) the raw REST call loop alone: ``requests`` POST ``/api/2.0/mlflow/runs/search`` with 50,000 per page,
    ``json.loads``, ``next_page_token`` followed; no frame;
(b) ``extract_predictions``: the hook's one request path (experiment by name and the search over REST through
    ``ApiHook._request``, frame straight from the JSON, sorted);
(c) the old path: ``MlflowClient`` (experiment by name, ``search_runs`` entity objects, every page) -> the
    frame ``runs_to_frame`` built from the entities -> sorted. The hook no longer has a client path: this
    restates it here, so the two can still be compared in one process.

Each read also counts the response body bytes it received (every HTTP response of the read, decoded, counted
in ``requests``' transport adapter, which ``MlflowClient`` uses too).

For (a) and (b) the time waiting on the server (``response.elapsed`` of each ``runs/search``: until the
answer's headers arrive, and the server sends them only once its whole JSON body is built) is recorded too,
so the table splits each read into server wait and client-side work. The server's own time varies by
10-20 % from one request to the next on this 2-core machine, which moves b/a more than anything the client
does: besides the ratio of medians the table gives the median of the per-round ratios (a and b run next to
each other in every round) and the client-side seconds, where a difference between (a) and (b) is ours.

Seeding: one run is created and filled through the API (``create_run``, ``log_batch``, ``set_terminated``,
as ``devstack.seed`` does), then copied row for row in the server's sqlite database with new run ids,
start times and metric values: logging 20,000 runs through the API takes about 15 minutes here (22 runs/s).
Both paths read the same server rows, so the copy changes nothing of what is measured.

Run: ``flock /tmp/modelwatch-stack.lock .venv/bin/python -m bench.predictions --runs 20000``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

DAY = datetime(2026, 5, 4, tzinfo=UTC)
EXPERIMENT = "bench-run-per-prediction"
TAGS = {"model": "model", "model_version": "model_version", "instance": "instance"}
PAGE = 50_000


def _seed(tracking_uri: str, db_path: Path, runs: int) -> str:
    """``runs`` one-run-per-prediction runs spread over :data:`DAY`; returns the experiment id."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp_id = client.create_experiment(EXPERIMENT)
    day_ms = int(DAY.timestamp() * 1000)
    template = client.create_run(
        exp_id, start_time=day_ms, tags={"model": "fraud-detector", "model_version": "3", "instance": "model-a:8000"},
        run_name="template",
    )  # fmt: skip
    tid = template.info.run_id
    client.log_batch(tid, metrics=[Metric("prediction_time", 0.2, day_ms, 0), Metric("accuracy", 0.9, day_ms, 0),
                                   Metric("loss", 0.1, day_ms, 0)], synchronous=True)  # fmt: skip
    client.set_terminated(tid, "FINISHED", end_time=day_ms + 200)

    rng = random.Random(7)
    with sqlite3.connect(db_path, timeout=60) as db:
        tables = [
            name
            for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if any(col[1] == "run_uuid" for col in db.execute(f'PRAGMA table_info("{name}")'))
        ]
        rows = {t: ([c[1] for c in db.execute(f'PRAGMA table_info("{t}")')],
                    db.execute(f'SELECT * FROM "{t}" WHERE run_uuid = ?', (tid,)).fetchall()) for t in tables}  # fmt: skip
        # One plan per run, shared by every table: the runs, tags and metrics rows must carry the same ids.
        plan = []
        for i in range(runs - 1):
            start = day_ms + (i * 86_400_000) // runs + rng.randrange(1000)
            model, instance = rng.choice([("fraud-detector", "model-a:8000"), ("fraud-detector", "model-b:8000"),
                                          ("recommender", "model-b:8000")])  # fmt: skip
            values = {"prediction_time": rng.lognormvariate(-1.6, 0.5), "accuracy": rng.random(),
                      "loss": rng.random()}  # fmt: skip
            plan.append((uuid.uuid4().hex, start, model, instance, values))
        for table, (columns, template_rows) in rows.items():
            if not template_rows:
                continue
            out = []
            for run_id, start, model, instance, values in plan:
                for row in template_rows:
                    new = dict(zip(columns, row, strict=True))
                    new["run_uuid"] = run_id
                    if "start_time" in new:
                        new["start_time"], new["end_time"] = start, start + 200
                    if "artifact_uri" in new and new["artifact_uri"]:
                        new["artifact_uri"] = new["artifact_uri"].replace(tid, run_id)
                    if table in ("metrics", "latest_metrics"):
                        new["value"], new["timestamp"] = values[new["key"]], start
                    if table == "tags" and new["key"] in ("model", "instance"):
                        new["value"] = model if new["key"] == "model" else instance
                    out.append(tuple(new[c] for c in columns))
            marks = ", ".join("?" * len(columns))
            names = ", ".join(f'"{c}"' for c in columns)
            db.executemany(f'INSERT INTO "{table}" ({names}) VALUES ({marks})', out)
    return exp_id


def _raw_rest(url: str, exp_id: str, start_ms: int, end_ms: int, waits: list[float] | None = None) -> int:
    import requests

    body: dict[str, Any] = {
        "experiment_ids": [exp_id],
        "filter": f"attributes.start_time >= {start_ms} AND attributes.start_time < {end_ms}",
        "max_results": PAGE,
        "order_by": ["attributes.start_time ASC"],
    }
    runs: list[Any] = []
    with requests.Session() as session:
        while True:
            response = session.post(f"{url}/api/2.0/mlflow/runs/search", json=body, timeout=300)
            response.raise_for_status()
            if waits is not None:
                waits.append(response.elapsed.total_seconds())
            answer = json.loads(response.content)
            runs.extend(answer.get("runs") or [])
            if not answer.get("next_page_token"):
                return len(runs)
            body["page_token"] = answer["next_page_token"]


def _new_path(start: datetime, end: datetime, waits: list[float] | None = None) -> int:
    from modelwatch.extract import extract_predictions
    from modelwatch.hooks import MlflowHook

    hook = MlflowHook()
    if waits is not None:
        # on the hook's own session: record each runs/search answer's server wait, change nothing else
        def wait(r: Any, *args: Any, **kwargs: Any) -> None:  # a hook that returns None keeps the response
            if r.url.endswith("/runs/search"):
                waits.append(r.elapsed.total_seconds())

        hook.get_conn().hooks["response"].append(wait)
    experiment = SimpleNamespace(name=EXPERIMENT, layout="run_per_prediction")
    return len(extract_predictions(hook, [experiment], TAGS, start, end, PAGE))


def _old_path(url: str, start: datetime, end: datetime) -> int:
    """The hook's former MlflowClient path, then ``runs_to_frame`` as it was (rows of entity values)."""
    from mlflow.tracking import MlflowClient

    from modelwatch.extract import _prediction_frame, _tag_keys, epoch_ms, sort_predictions, strip_port

    client = MlflowClient(url)
    exp_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    flt = f"attributes.start_time >= {epoch_ms(start)} AND attributes.start_time < {epoch_ms(end)}"
    runs, token = [], None
    while True:
        page = client.search_runs([exp_id], flt, max_results=PAGE, order_by=["attributes.start_time ASC"],
                                  page_token=token)  # fmt: skip
        runs.extend(page)
        token = page.token
        if not token:
            break
    keys, rows = _tag_keys(TAGS), []
    for run in runs:
        tags, metrics = run.data.tags, run.data.metrics
        row = {column: str(tags.get(tag, "")) for column, tag in keys.items()}
        row["instance"] = strip_port(row["instance"])
        rows.append({"timestamp": int(run.info.start_time), **row,
                     **{k: float(metrics.get(k, math.nan)) for k in ("prediction_time", "accuracy", "loss")},
                     "run_id": run.info.run_id, "experiment": EXPERIMENT})  # fmt: skip
    return len(sort_predictions(_prediction_frame(rows)))


#: Response body bytes received since the last reset (see :func:`_count_received`).
RECEIVED = [0]


def _count_received() -> None:
    """Count every response body ``requests`` receives (the hook, the raw loop and MlflowClient alike)."""
    from requests.adapters import HTTPAdapter

    send = HTTPAdapter.send
    if getattr(send, "counts_bytes", False):
        return

    def counting(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        response = send(self, request, *args, **kwargs)
        size = len(response.content)  # read first: the sum is then one short step (reads run one at a time)
        RECEIVED[0] += size
        return response

    counting.counts_bytes = True  # type: ignore[attr-defined]
    HTTPAdapter.send = counting  # type: ignore[method-assign]


def measure(runs: int, rounds: int) -> list[dict[str, Any]]:
    """Start MLflow, seed, time the three reads; one row per read with its median seconds."""
    import logging

    from devstack.stack import Stack, StackConfig

    logging.getLogger("airflow.task.hooks").setLevel(logging.WARNING)
    _count_received()
    with tempfile.TemporaryDirectory(prefix="modelwatch-bench-predictions-") as tmp:
        stack = Stack(StackConfig.free_ports(Path(tmp)))
        try:
            stack.start(["mlflow"])
            url = stack.config.mlflow_url
            os.environ.update(stack.airflow_env())
            t0 = time.perf_counter()
            exp_id = _seed(url, stack.config.mlflow_db_path, runs)
            print(f"seeded {runs} runs in {time.perf_counter() - t0:.1f} s", flush=True)
            start, end = DAY, DAY + timedelta(days=1)
            start_ms, end_ms = int(start.timestamp() * 1000), int(end.timestamp() * 1000)
            waits: list[float] = []
            reads: dict[str, Callable[[], int]] = {
                "(a) raw REST loop (requests + json, no frame)": lambda: _raw_rest(url, exp_id, start_ms, end_ms,
                                                                                   waits),
                "(b) extract_predictions (hook: REST -> frame from JSON)": lambda: _new_path(start, end, waits),
                "(c) old path (MlflowClient -> frame from entities)": lambda: _old_path(url, start, end),
            }  # fmt: skip
            names = list(reads)
            for name in names:  # warm-up, untimed: imports (pandas, mlflow, modelwatch), connections
                reads[name]()
            times: dict[str, list[float]] = {n: [] for n in names}
            server: dict[str, list[float]] = {n: [] for n in names}
            received: dict[str, list[int]] = {n: [] for n in names}
            for k in range(rounds):
                for name in names[k % 3:] + names[: k % 3]:  # rotate the order each round
                    waits.clear()
                    RECEIVED[0] = 0
                    t = time.perf_counter()
                    n = reads[name]()
                    times[name].append(time.perf_counter() - t)
                    received[name].append(RECEIVED[0])
                    server[name].append(sum(waits) if waits else math.nan)
                    if n != runs:
                        raise AssertionError(f"{name} read {n} runs, expected {runs}")
                    print(f"  round {k + 1} {name[:3]} {times[name][-1]:.2f} s", flush=True)
        finally:
            stack.stop()
    return [{"read": n, "seconds": statistics.median(times[n]), "all": times[n], "server": server[n],
             "bytes": statistics.median(received[n])} for n in names]  # fmt: skip


DESCRIPTION = "the run_per_prediction read: raw REST loop vs extract_predictions vs the old MlflowClient path"


def add_arguments(group: Any) -> None:
    """Options of this benchmark in ``python -m bench``."""
    group.add_argument("--predictions-runs", type=int, default=20_000, help="runs to seed (default 20,000)")
    group.add_argument("--predictions-rounds", type=int, default=5, help="timed reads of each (median; default 5)")


def report(rows: list[dict[str, Any]], runs: int, rounds: int) -> str:
    """The measured reads as a markdown table, each beside the raw REST loop of the same run."""
    raw = rows[0]["seconds"]
    lines = [
        f"## MLflow read, run_per_prediction\n\nMLflow 1 worker sqlite, {runs} runs, one day, pages of {PAGE}; "
        f"median of {rounds}, interleaved\n",
        "| read | seconds | runs/s | vs (a) | server wait | client side | MB received | all rounds |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]  # fmt: skip
    for row in rows:
        s = row["seconds"]
        every = " ".join(f"{t:.2f}" for t in row["all"])
        if any(math.isnan(w) for w in row["server"]):
            wait = client = "-"
        else:
            wait = f"{statistics.median(row['server']):.2f}"
            client = f"{statistics.median(t - w for t, w in zip(row['all'], row['server'], strict=True)):.2f}"
        lines.append(f"| {row['read']} | {s:.2f} | {runs / s:,.0f} | {s / raw:.3f} | {wait} | {client} | "
                     f"{row['bytes'] / 1e6:.2f} | {every} |")  # fmt: skip
    ratio = rows[1]["seconds"] / raw
    paired = statistics.median(b / a for a, b in zip(rows[0]["all"], rows[1]["all"], strict=True))
    lines.append(f"\nb/a = {ratio:.3f} (ratio of medians; target <= 1.1): {'met' if ratio <= 1.1 else 'NOT met'}; "
                 f"median of the per-round b/a: {paired:.3f}")  # fmt: skip
    return "\n".join(lines)


def run(args: Any) -> str:
    """``python -m bench`` entry: measure and return the markdown section."""
    return report(measure(args.predictions_runs, args.predictions_rounds), args.predictions_runs,
                  args.predictions_rounds)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(prog="python -m bench.predictions", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20_000, help="runs to seed (default 20,000)")
    parser.add_argument("--rounds", type=int, default=5, help="timed reads of each kind (median; default 5)")
    args = parser.parse_args(argv)
    print(report(measure(args.runs, args.rounds), args.runs, args.rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
