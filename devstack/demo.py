"""``python -m devstack demo`` (``make demo``): the whole job on a local real stack.

1. start the stack (Prometheus, Alertmanager, node-exporter, MLflow, moto S3, SMTP sink, webhook receiver);
2. seed the synthetic history: one scenario per day for the last six full days, and the five quality days
   (``devstack.scenarios.QUALITY_DAYS``: an accuracy drop during saturation, a version rollout, a drift of
   the logged inputs, a day without labels; ``--no-quality`` leaves them out);
3. run the monitoring DAG over those days (``dag.test()`` in a child process, its Airflow log in a file);
4. print, per day and model, the verdict, the slow predictions, the resources that coincided (with values
   against thresholds) and whether an alert was posted; then the alerts as Alertmanager holds them, what
   its receivers got, and where the partitions are;
5. live: load the sample model service (Locust), burn both CPUs for a bounded time while traffic surges,
   run the DAG over that window with ``include/thresholds.live.yaml`` and print the verdict, its reason and
   the alert (``--no-live`` skips it);
6. stop the stack (``--keep`` leaves it running for a look around; ``make stack-down`` stops it).

Why: nothing in Airflow or the libraries seeds a stack, runs a DAG over chosen days and prints the verdicts
beside their evidence; this is that script. The DAG runs through :mod:`devstack.runner` (``dag.test()``),
not through a scheduler: six past days need no API server, and the report reads the lake and Alertmanager.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

from devstack.runner import PROGRESS, airflow_env, migrate
from devstack.seed import DEFAULT_THREADS, days_from_args, seed_stack
from devstack.seed import add_arguments as _seed_arguments
from modelwatch.text import fmt_pct, fmt_value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m devstack demo``: those of ``seed`` plus ``--keep``."""
    _seed_arguments(parser)
    parser.add_argument("--keep", action="store_true", help="leave the stack running at the end")
    parser.add_argument("--no-live", action="store_true", help="skip the live chapter (sample service under load)")
    parser.add_argument("--no-quality", action="store_true", help="leave out the quality days (QUALITY_DAYS)")


def _say(text: str = "") -> None:
    print(text, flush=True)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run_days(days: list[date], env: dict[str, str], log_path: Path) -> dict[date, str]:
    """Run the DAG for ``days`` in a child process, echoing progress; its full Airflow log goes to ``log_path``."""
    states: dict[date, str] = {}
    started: dict[str, float] = {}
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "devstack.runner", *(d.isoformat() for d in days)],
            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if not line.startswith(PROGRESS):
                continue
            _, what, day, *rest = line.split()
            if what == "start":
                started[day] = time.monotonic()
                _say(f"  [{len(started)}/{len(days)}] {day} ...")
            else:
                states[date.fromisoformat(day)] = rest[0]
                _say(f"        {day}: run {rest[0]} in {time.monotonic() - started[day]:.1f} s")
        proc.wait()
    return states


def _evidence(e: dict[str, Any]) -> str:
    return (f"{e['resource']} {fmt_value(e['slow_value_median'])} / {fmt_value(e['slow_value_max'])} vs "
            f"{fmt_value(e['threshold'])}; RR {fmt_value(e['relative_risk'])}, cov {fmt_pct(e['coverage'])}")  # fmt: skip


def _quality(v: dict[str, Any]) -> str:
    quality = v.get("quality", "-")
    return f"{quality} ({v['quality_attribution']})" if v.get("quality_attribution") else quality


def _drift(v: dict[str, Any]) -> str:
    """``drifted: prediction_time, output metric_score``: the drifted values, an output said to be one."""
    drifted = [("output " if d.get("role") == "output" else "") + d["value"]
               for d in v.get("drift_values", []) if d["outcome"] == "drifted"]  # fmt: skip
    return f"drifted: {', '.join(drifted)}" if drifted else v.get("drift", "-")


def verdict_rows(lake: Any, days: dict[date, str]) -> list[list[str]]:
    """One row per day and model from the ``_verdict.json`` documents in the lake."""
    from modelwatch.window import Window

    rows = [["DAY", "SCENARIO", "MODEL", "VERDICT", "SLOW",
             "EXPLAINED BY (median / max at slow vs threshold; relative risk, coverage)", "QUALITY", "DRIFT", "ALERT"]]  # fmt: skip
    for day, scenario in sorted(days.items()):
        window = Window.of_day(day)
        doc = lake.read_document(f"{lake.partition_url('verdicts', window)}/_verdict.json")
        if doc is None:
            rows.append([day.isoformat(), scenario, "-", "(no verdict: the run failed)", "", "", "", "", ""])
            continue
        delivery = lake.read_document(f"{lake.partition_url('alerts', window)}/_delivery.json")
        posted: dict[str, list[str]] = {}
        for a in (delivery or {}).get("alerts", []):
            posted.setdefault(a["labels"]["model"], []).append(a["labels"]["alertname"])
        for v in doc["verdicts"]:
            evidence = "; ".join(_evidence(e) for e in v["saturated_resources"])
            if v["model"] in posted:
                alert = f"posted {', '.join(posted[v['model']])}"
            elif v["verdict"] == "degraded":
                alert = f"not sent: {doc['alert']['reason']}"
            else:
                alert = "-"
            slow = f"{v['n_slow']}/{v['n_predictions']}" if v["n_predictions"] else "0/0"
            rows.append([day.isoformat(), scenario, v["model"], v["verdict"], slow, evidence or "-",
                         _quality(v), _drift(v), alert])  # fmt: skip
    return rows


def report_lines(lake: Any, days: dict[date, str]) -> list[str]:
    """One line per report the runs wrote: day, model, verdict and the page's file."""

    from modelwatch.window import Window

    lines = []
    for day in sorted(days):
        doc = lake.read_document(f"{lake.partition_url('verdicts', Window.of_day(day))}/_verdict.json")
        verdicts = {v["model"]: v for v in (doc or {}).get("verdicts", [])}
        for model, where in sorted((doc or {}).get("reports", {}).items()):
            v = verdicts.get(model, {})
            what = ", ".join(x for x in (v.get("verdict"), f"quality {v.get('quality')}" if v.get("quality") == "regressed"
                                         else "", "drifted" if v.get("drift") == "drifted" else "") if x)  # fmt: skip
            lines.append(f"{day} {model} ({what}): {where['file'].removeprefix('file://')}")
    return lines or ["(none: no model needed a look)"]


#: The live chapter's phases (seconds) and Locust users: long enough for the 20 s rate windows of
#: include/thresholds.live.yaml to see the burn, short enough to wait for.
LIVE_PHASES = {"quiet_s": 40.0, "burn_s": 75.0, "after_s": 30.0, "users_quiet": 5, "users_surge": 15}
LIVE_CONFIG = Path(__file__).resolve().parents[1] / "include" / "thresholds.live.yaml"


def live_chapter(stack: Any, env: dict[str, str], lake_url: str, log_path: Path) -> bool:
    """Drill the sample service, judge the drill's window, print the verdict and the alert; True on success."""
    from devstack.drill import run_drill
    from modelwatch.storage import Lake

    drill = run_drill(stack.config.model_service_url, **LIVE_PHASES, progress=lambda line: _say(f"    {line}"))
    time.sleep(8)  # the service flushes to MLflow every second; Prometheus scrapes every few seconds
    start, end = drill.start.isoformat(), drill.end.isoformat()
    _say(f"    judging the window {start[:19]} to {end[:19]} (burn {drill.burn_start.isoformat()[11:19]}-"
         f"{drill.burn_end.isoformat()[11:19]}) with {LIVE_CONFIG.name} (Airflow log: {log_path}) ...")  # fmt: skip
    with log_path.open("w") as log:
        proc = subprocess.run(
            [sys.executable, "-m", "devstack.runner", "--window-start", start, "--window-end", end],
            env={**os.environ, **env, "MODELWATCH_CONFIG": str(LIVE_CONFIG)}, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, check=False, timeout=600,
        )  # fmt: skip
        log.write(proc.stdout)
    document_url = next((line.split(" verdict document ", 1)[1].strip() for line in proc.stdout.splitlines()
                         if line.startswith(PROGRESS) and " verdict document " in line), None)  # fmt: skip
    document = Lake(lake_url).read_document(document_url) if document_url else None
    if proc.returncode != 0 or document is None:
        _say(f"    the live run did not succeed (exit {proc.returncode}); see {log_path}")
        return False
    for v in document["verdicts"]:
        _say(f"\n    {v['model']}: {v['verdict'].upper()}  ({v['n_slow']} of {v['n_predictions']} predictions slower "
             f"than {fmt_value(v['slow_threshold_seconds'])} s)")  # fmt: skip
        _say(f"    reason: {v['reason']}")
    _say(f"    alert: {document['alert']['reason']}; verdict document {document_url}")
    return True


def _held_alerts(filters: dict[str, str]) -> list[dict[str, Any]]:
    """Alertmanager's modelwatch alerts, through the product's hook; its request log (Airflow's structlog
    writes to stdout) kept out of the summary."""
    import contextlib
    import io

    from modelwatch.hooks.alertmanager import AlertmanagerHook

    with contextlib.redirect_stdout(io.StringIO()):
        return AlertmanagerHook().get_alerts(filters=filters)


def demo_main(args: argparse.Namespace | None = None) -> int:
    """Run the demo; returns the exit code (non-zero if a day's run did not succeed)."""
    from devstack.scenarios import QUALITY_DAYS
    from devstack.stack import Stack, StackConfig
    from modelwatch.storage import Lake

    args = args or argparse.Namespace()
    days = days_from_args(args)
    if not getattr(args, "no_quality", False):
        days |= QUALITY_DAYS
    stack = Stack(StackConfig.from_env())
    state = stack.config.state_dir
    lake_url = f"file://{state / 'lake'}"
    t_all = time.monotonic()
    try:
        _say(f"1/5 starting the local stack in {state} ...")
        stack.start()
        _say(f"    up: Prometheus {stack.config.prometheus_url}, Alertmanager {stack.config.alertmanager_url}, "
             f"MLflow {stack.config.mlflow_url}, S3 {stack.config.s3_url}")  # fmt: skip
        _say(f"2/5 seeding {len(days)} days of synthetic history ({', '.join(sorted(set(days.values())))}) ...")
        seed_stack(stack, days, threads=getattr(args, "threads", DEFAULT_THREADS), work_dir=state / "seed",
                   progress=lambda line: _say(f"    {line}"))  # fmt: skip
        # A fresh Airflow database per demo: the demo shows this checkout's DAG, not a previous one's state.
        shutil.rmtree(state / "airflow-demo", ignore_errors=True)
        env = airflow_env(state / "airflow-demo", stack.config.airflow_env(), lake_url)
        log_path = state / "demo-airflow.log"
        _say(f"3/5 running the DAG model_performance_monitoring over {len(days)} days (Airflow log: {log_path}) ...")
        migrate(env)
        # The receivers' files outlive a demo: count only what this one adds.
        seen_notifications, seen_mails = len(stack.webhook_notifications()), len(stack.mail())
        states = run_days(sorted(days), env, log_path)
        time.sleep(2)  # Alertmanager's group_wait before the receivers get the last alerts

        _say("\n4/5 what modelwatch found and sent\n")
        lake = Lake(lake_url)
        _say(_table(verdict_rows(lake, days)))
        os.environ.update(stack.config.airflow_env())
        held = _held_alerts({"source": "modelwatch"})
        _say(f"\nAlerts as Alertmanager holds them ({stack.config.alertmanager_url}/api/v2/alerts):\n")
        if held:
            rows = [["ALERTNAME", "MODEL", "RESOURCES", "SEVERITY", "STARTS", "ENDS", "STATE", "WINDOW"]]
            for a in sorted(held, key=lambda a: (a["labels"]["model"], a["startsAt"])):
                rows.append([a["labels"]["alertname"], a["labels"]["model"], a["labels"].get("resources", ""),
                             a["labels"].get("severity", ""), a["startsAt"][:19], a["endsAt"][:19],
                             a["status"]["state"], a["annotations"].get("window", "")[:10]])  # fmt: skip
            _say(_table(rows))
        else:
            _say("  (none)")
        notifications = stack.webhook_notifications()[seen_notifications:]
        mails = stack.mail()[seen_mails:]
        _say(f"\nDuring this demo Alertmanager delivered {len(notifications)} notification(s) to the webhook receiver "
             f"({stack.config.webhook_file}) and the SMTP sink got {len(mails)} email(s) ({stack.config.mail_dir}):")  # fmt: skip
        for m in mails:
            _say(f"  mail: {m['subject']}")
        _say(f"\nPartitions (Hive-style, readable by DuckDB/Athena/Spark) under {lake_url}:")
        for dataset in ("resources", "predictions", "joined", "correlation", "verdicts", "drift", "alerts"):
            parts = sorted(p.name for p in (state / "lake" / dataset).glob("dt=*"))
            _say(f"  {dataset + '/':<13} {', '.join(parts)}")
        _say(f"  e.g. duckdb -c \"select * from read_parquet('{state}/lake/verdicts/*/*.parquet', hive_partitioning=true)\"")
        _say(f"  verdict documents: {state}/lake/verdicts/dt=*/_verdict.json")
        _say("  tune before changing thresholds: make replay CANDIDATE=<your thresholds.yaml> (judges these days "
             "again, side by side, without posting)")
        _say("\nReports (one page per model that needs a look: charts, evidence, what was sent):")
        for line in report_lines(lake, days):
            _say(f"  {line}")
        from devstack.airflow_services import AirflowConfig

        _say(f"  all models and days, with their reports: `make up`, then {AirflowConfig.from_stack(stack.config).base_url}"
             "/modelwatch/ (Model health in the Airflow UI's navigation)")
        failed = {d: s for d, s in states.items() if s != "success"}
        if failed or len(states) != len(days):
            _say(f"\nRuns that did not succeed: {failed or 'some days did not run'}; see {log_path}")
        live_ok = True
        if not getattr(args, "no_live", False):
            _say(f"\n5/5 live: the sample model service ({stack.config.model_service_url}) under Locust load, both CPUs "
                 f"burnt for {LIVE_PHASES['burn_s']:.0f} s while traffic triples, then the DAG over it")  # fmt: skip
            live_ok = live_chapter(stack, env, lake_url, state / "demo-live-airflow.log")
            held = _held_alerts({"source": "modelwatch", "model": "sample-classifier"})
            for a in held:
                _say(f"    Alertmanager holds {a['labels']['alertname']} for {a['labels']['model']} "
                     f"(resources {a['labels'].get('resources', '-')}; coverage {a['annotations'].get('coverage')}; "
                     f"relative risk {a['annotations'].get('relative_risk')})")  # fmt: skip
        _say(f"\ndemo finished in {time.monotonic() - t_all:.0f} s")
        return 1 if failed or len(states) != len(days) or not live_ok else 0
    finally:
        if getattr(args, "keep", False):
            _say("\nThe stack is still running (--keep): stop it with `make stack-down`.")
        else:
            stopped = stack.stop()
            _say(f"stopped {', '.join(stopped)}; no process left behind." if stopped else "")
