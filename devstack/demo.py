"""``python -m devstack demo``: start the local stack, seed recent days, summarise what was seeded.

For now the demo prints, per seeded day, what the product will find: the maximum of every
``include/thresholds.yaml`` query per instance (run through Prometheus ``query_range``) and the MLflow
run/prediction/slow counts per model. The helpers (:func:`summarise_day`, :func:`format_summary`)
are meant to be reused once the demo runs the DAG.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import requests
import yaml

from devstack.scenarios import MODELS, STEP_S, day_start, get_scenario
from devstack.seed import DEFAULT_THREADS, days_from_args, search_all_runs, seed_stack
from devstack.seed import add_arguments as _seed_arguments

THRESHOLDS_PATH = Path(__file__).resolve().parent.parent / "include" / "thresholds.yaml"
#: Prometheus looks back up to 5 minutes for an instant value: a query at 00:00 would still see the
#: day before, so summaries start at 00:05.
LOOKBACK_S = 300


@dataclass(frozen=True)
class Query:
    """A thresholds.yaml query: name, PromQL and saturation threshold (``None`` when informative only)."""

    name: str
    promql: str
    saturation: float | None = None
    unit: str = ""


@dataclass
class DaySummary:
    """What the stores hold for one day.

    :ivar resources: ``{instance (no port): {query name: max over the day}}``.
    :ivar models: ``{model: {"runs": n, "predictions": n, "slow": n}}``.
    """

    day: date
    scenario: str
    resources: dict[str, dict[str, float]] = field(default_factory=dict)
    models: dict[str, dict[str, int]] = field(default_factory=dict)


def load_thresholds(path: str | Path = THRESHOLDS_PATH) -> dict[str, Any]:
    """Read ``include/thresholds.yaml`` as plain YAML.

    :param path: the file.
    :returns: the parsed document.
    """
    return yaml.safe_load(Path(path).read_text())


def load_queries(path: str | Path = THRESHOLDS_PATH) -> list[Query]:
    """The Prometheus queries of ``include/thresholds.yaml``.

    :param path: the file.
    :returns: one :class:`Query` per entry, in file order.
    """
    return [
        Query(q["name"], q["promql"], q.get("saturation"), q.get("unit", ""))
        for q in load_thresholds(path)["prometheus"]["queries"]
    ]


def slow_thresholds(path: str | Path = THRESHOLDS_PATH) -> dict[str, float]:
    """Seconds above which a prediction is slow, per model (``evaluation`` section of thresholds.yaml).

    :param path: the file.
    :returns: ``{model: seconds}`` for every model of :data:`~devstack.scenarios.MODELS`.
    """
    ev = load_thresholds(path)["evaluation"]
    per_model = ev.get("models") or {}
    return {
        m: float((per_model.get(m) or {}).get("slow_prediction_seconds", ev["slow_prediction_seconds"]))
        for m in MODELS
    }


def query_range(
    prometheus_url: str, promql: str, start: float, end: float, step: float = STEP_S
) -> list[dict]:
    """Run a PromQL range query.

    :param prometheus_url: e.g. ``http://127.0.0.1:19090``.
    :param promql: the expression.
    :param start: Unix seconds.
    :param end: Unix seconds (included).
    :param step: seconds between points (at most 11,000 points per series).
    :returns: the ``data.result`` list: ``{"metric": {...}, "values": [[t, "v"], ...]}`` per series.
    :raises RuntimeError: on an error answer, with Prometheus' message.
    """
    resp = requests.get(
        f"{prometheus_url}/api/v1/query_range",
        params={"query": promql, "start": start, "end": end, "step": step},
        timeout=60,
    )
    body = resp.json()
    if resp.status_code != 200 or body.get("status") != "success":
        raise RuntimeError(f"query_range {promql!r} failed ({resp.status_code}): {body.get('error', body)}")
    return body["data"]["result"]


def _instance(labels: dict[str, str]) -> str:
    return labels.get("instance", "?").split(":", 1)[0]


def summarise_day(
    prometheus_url: str,
    mlflow_url: str,
    day: date,
    scenario: str,
    queries: list[Query] | None = None,
    slow_s: dict[str, float] | None = None,
) -> DaySummary:
    """Summarise what Prometheus and MLflow hold for ``day``.

    :param prometheus_url: Prometheus base URL.
    :param mlflow_url: MLflow tracking URI.
    :param day: the UTC day.
    :param scenario: its scenario name (only carried into the summary).
    :param queries: the queries (default: :func:`load_queries`).
    :param slow_s: slow thresholds per model (default: :func:`slow_thresholds`).
    :returns: the maxima per instance and query from 00:05 to 23:59:45 (see :data:`LOOKBACK_S`), and
        per model the runs started that day, their predictions and how many were slow.
    """
    from mlflow import MlflowClient

    queries = load_queries() if queries is None else queries
    slow_s = slow_thresholds() if slow_s is None else slow_s
    start = day_start(day)
    summary = DaySummary(day, scenario)
    for q in queries:
        for series in query_range(prometheus_url, q.promql, start + LOOKBACK_S, start + 86400 - STEP_S):
            values = [float(v) for _, v in series["values"]]
            inst = summary.resources.setdefault(_instance(series["metric"]), {})
            inst[q.name] = max(values + [inst.get(q.name, float("-inf"))])

    client = MlflowClient(tracking_uri=mlflow_url)
    window = f"attributes.start_time >= {start * 1000} AND attributes.start_time < {(start + 86400) * 1000}"
    for spec in MODELS.values():
        exp = client.get_experiment_by_name(spec.experiment)
        runs = search_all_runs(client, [exp.experiment_id], window) if exp is not None else []
        counts = {"runs": len(runs), "predictions": 0, "slow": 0}
        for run in runs:
            if spec.layout == "run_per_prediction":
                times = [run.data.metrics.get("prediction_time", 0.0)]
            else:
                times = [m.value for m in client.get_metric_history(run.info.run_id, "prediction_time")]
            counts["predictions"] += len(times)
            counts["slow"] += sum(t > slow_s[spec.name] for t in times)
        summary.models[spec.name] = counts
    return summary


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 10_000:
        return f"{value / 1000:.0f}k"
    return f"{value:.3g}"


def format_summary(summary: DaySummary, queries: list[Query] | None = None) -> str:
    """Render a :class:`DaySummary` as a small text table.

    Values at or above their saturation threshold are marked ``*``.

    :param summary: the summary.
    :param queries: the queries, for their order and thresholds (default: :func:`load_queries`).
    :returns: several lines of text.
    """
    queries = load_queries() if queries is None else queries
    sc = get_scenario(summary.scenario)
    lines = [f"{summary.day}  {sc.name}: {sc.doc}"]
    rows = [["  instance", *[q.name for q in queries]]]
    for inst in sorted(summary.resources):
        row = [f"  {inst}"]
        for q in queries:
            v = summary.resources[inst].get(q.name)
            hot = v is not None and q.saturation is not None and v >= q.saturation
            row.append(_fmt(v) + ("*" if hot else ""))
        rows.append(row)
    if len(rows) == 1:
        lines.append("  prometheus: no series")
    else:
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    parts = [
        f"{m} {c['runs']} run{'' if c['runs'] == 1 else 's'} / {c['predictions']} predictions / {c['slow']} slow"
        for m, c in summary.models.items()
    ]
    lines.append("  mlflow: " + "; ".join(parts))
    lines.append("  expected: " + ", ".join(f"{m} {v}" for m, v in sc.expected))
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m devstack demo`` (the same as ``seed``).

    :param parser: the sub-command's parser.
    """
    _seed_arguments(parser)


def demo_main(args: argparse.Namespace | None = None) -> int:
    """``python -m devstack demo``: start the whole stack, seed the recent days, print a summary per day.

    :param args: parsed arguments (see :func:`add_arguments`); ``None`` means defaults.
    :returns: exit code.
    """
    from devstack.stack import Stack, StackConfig

    args = args or argparse.Namespace()
    days = days_from_args(args)
    stack = Stack(StackConfig.from_env())
    t0 = time.perf_counter()
    print(f"starting the stack in {stack.config.state_dir} ...")
    stack.start()
    print(f"stack up in {time.perf_counter() - t0:.1f} s; seeding {len(days)} days:")
    seed_stack(
        stack,
        days,
        threads=getattr(args, "threads", DEFAULT_THREADS),
        work_dir=stack.config.state_dir / "seed",
        progress=lambda line: print(f"  {line}"),
    )
    queries = load_queries()
    slow_s = slow_thresholds()
    print("\nWhat the product will find (max per instance from 00:05 to 23:59:45; * = saturated):\n")
    for day, scenario in sorted(days.items()):
        summary = summarise_day(
            stack.config.prometheus_url, stack.config.mlflow_url, day, scenario, queries, slow_s
        )
        print(format_summary(summary, queries) + "\n")
    print(f"Prometheus: {stack.config.prometheus_url}   MLflow: {stack.config.mlflow_url}")
    print("Stop the stack with: make stack-down")
    return 0
