"""Run the monitoring DAG with ``dag.test()`` in this process: whole days, or one trigger-form window.

Used by ``make demo`` (in a child process whose Airflow log goes to a file) and usable by hand::

    python -m devstack.runner 2026-03-02 2026-03-03
    python -m devstack.runner --window-start 2026-03-03T10:00:00Z --window-end 2026-03-03T12:00:00Z \
        --param models='["fraud-detector"]' --param dry_run=true

Airflow reads its configuration when first imported, so :func:`airflow_env` must be in the environment
before this module's :func:`run_days` or :func:`run_window` imports Airflow.

Why not ``airflow dags test``: it runs the same ``dag.test()``, but one run per command (Airflow imported
and the DAG parsed each time), gives back no run whose task states and XComs the caller can read, and with
the DAG's Deadline Alert it exits 1 after the tasks succeed (Airflow 3.3.2).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DAG_ID = "model_performance_monitoring"
#: lines starting with this are progress for a parent process; everything else is Airflow's log
PROGRESS = "MODELWATCH-PROGRESS"


def airflow_env(airflow_home: Path, connections: dict[str, str], lake_url: str) -> dict[str, str]:
    """Environment for a local Airflow that runs this repo's DAGs against the given connections and lake."""
    return {
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PYTHONPATH": str(REPO),  # devstack (sqlite_args); modelwatch is an installed package
        "MODELWATCH_STORAGE_URL": lake_url,
        **connections,
    }


def migrate(env: dict[str, str]) -> None:
    """Create or upgrade the Airflow metadata database (SQLite under AIRFLOW_HOME)."""
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
        env={**os.environ, **env}, check=True, capture_output=True, timeout=300,
    )  # fmt: skip


def load_dag(dag_id: str = DAG_ID) -> Any:
    """Parse the DAG files and return ``dag_id``.

    :raises RuntimeError: listing the import errors, if any.
    """
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=os.environ.get("AIRFLOW__CORE__DAGS_FOLDER", str(REPO / "dags")))
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
    return bag.dags[dag_id]


def run_day(day: date, dag_id: str = DAG_ID, dag: Any = None, *, params: dict[str, Any] | None = None) -> Any:
    """``dag.test()`` for one UTC day; returns the DagRun.

    A manual run covers the last full interval before its date, so the run is dated at the day's end.

    :param params: trigger-form params for the run (``models``, ``dry_run``, ``page_on_backfill``), as
        ``run_conf``; the window comes from the date.
    """
    dag = dag if dag is not None else load_dag(dag_id)
    return dag.test(
        logical_date=datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1),
        run_conf=dict(params) if params else None,
    )


def run_days(
    days: Iterable[date], dag_id: str = DAG_ID, *, params: dict[str, Any] | None = None
) -> dict[date, str]:
    """:func:`run_day` once per day, printing progress lines; returns each run's state."""
    states = {}
    for day in days:
        print(f"{PROGRESS} start {day.isoformat()}", flush=True)
        run = run_day(day, dag_id, params=params)
        states[day] = _state(run)
        print(f"{PROGRESS} done {day.isoformat()} {states[day]}", flush=True)
    return states


#: the trigger-form params that :func:`run_window` sets from its ``start`` and ``end``
WINDOW_PARAMS = ("window_start", "window_end")


def window_conf(start: datetime, end: datetime, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run conf of a trigger-form window: ``params`` plus ``window_start``/``window_end`` in ISO 8601 UTC.

    A naive bound is read as UTC (as the DAG reads a trigger-form time without an offset). The order of the
    bounds is not checked here: the DAG itself fails an inverted window at once, naming the parameter.

    :raises ValueError: if ``params`` sets the window itself.
    """
    params = dict(params or {})
    if clash := [k for k in WINDOW_PARAMS if k in params]:
        raise ValueError(f"{', '.join(clash)}: give the window as start and end, not as params")
    bounds = [(t if t.tzinfo else t.replace(tzinfo=UTC)).astimezone(UTC).isoformat() for t in (start, end)]
    return {**params, **dict(zip(WINDOW_PARAMS, bounds, strict=True))}


def run_window(
    start: datetime,
    end: datetime,
    *,
    dag_id: str = DAG_ID,
    params: dict[str, Any] | None = None,
    dag: Any = None,
) -> Any:
    """``dag.test()`` for one trigger-form window ``[start, end)``; returns the DagRun.

    The run is what the UI's Trigger form makes: no logical date, the window in the ``window_start`` and
    ``window_end`` params, plus ``params`` (e.g. ``{"models": ["fraud-detector"], "dry_run": True}``),
    validated against the DAG's params like a triggered run's conf. A window other than one whole day, or a
    ``models`` subset, is an ad-hoc run stored under ``<lake>/adhoc/<dataset>/dt=D/run=<run id>/``.

    :param dag: a freshly parsed DAG (:func:`load_dag`); parsed here when not given.
    :raises ValueError: if ``params`` sets ``window_start``/``window_end``.
    """
    conf = window_conf(start, end, params)
    dag = dag if dag is not None else load_dag(dag_id)
    return dag.test(logical_date=None, run_conf=conf)


def task_states(run: Any) -> dict[str, str]:
    """:returns: task id -> state of the run's task instances; a mapped task's state is that of all its
    instances when they agree, else their states joined (``"failed,success"``)."""
    states: dict[str, set[str]] = {}
    for ti in run.get_task_instances():
        states.setdefault(ti.task_id, set()).add(_state(ti))
    return {task: ",".join(sorted(s)) for task, s in states.items()}


def xcom(run: Any, task_id: str, key: str = "return_value") -> Any:
    """:returns: the XCom ``key`` that task ``task_id`` pushed in ``run`` (``None`` if it pushed none)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.scalars(
            XComModel.get_many(run_id=run.run_id, key=key, task_ids=task_id, dag_ids=run.dag_id, limit=1)
        ).first()
        return XComModel.deserialize_value(row) if row is not None else None


def _state(obj: Any) -> str:
    return str(getattr(obj.state, "value", obj.state))


def _param(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` from the command line; VALUE is read as JSON when it parses (``true``, ``["a"]``), else text."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name.strip(), json.loads(value)
    except ValueError:
        return name.strip(), value


def _instant(text: str) -> datetime:
    """An ISO 8601 time from the command line (``Z`` allowed; no offset means UTC)."""
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _print_window_run(run: Any) -> None:
    print(f"{PROGRESS} run {run.run_id} {_state(run)}", flush=True)
    for task_id, state in sorted(task_states(run).items()):
        print(f"{PROGRESS} task {task_id} {state}", flush=True)
    evaluation = xcom(run, "evaluate")
    if evaluation:
        print(f"{PROGRESS} verdicts {json.dumps(evaluation.get('summary'), sort_keys=True)}", flush=True)
        print(f"{PROGRESS} alert post={evaluation.get('post')} ({evaluation.get('reason')})", flush=True)
        print(f"{PROGRESS} verdict document {evaluation.get('verdict_document')}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Give either days or --window-start and --window-end. Exit code 0 when every run succeeded.",
    )
    parser.add_argument("days", nargs="*", type=date.fromisoformat, help="UTC days, YYYY-MM-DD")
    parser.add_argument("--window-start", type=_instant, help="ISO 8601 start of one trigger-form window")
    parser.add_argument("--window-end", type=_instant, help="ISO 8601 end (exclusive) of that window")
    parser.add_argument(
        "--param", type=_param, action="append", default=[], metavar="NAME=VALUE",
        help="a trigger-form param (models, dry_run, page_on_backfill); VALUE is JSON when it parses, "
        "e.g. --param models='[\"fraud-detector\"]' --param dry_run=true",
    )  # fmt: skip
    parser.add_argument("--dag-id", default=DAG_ID)
    args = parser.parse_args(argv)
    params = dict(args.param)
    window = (args.window_start, args.window_end)
    if any(window):
        if not all(window):
            parser.error("--window-start and --window-end go together")
        if args.days:
            parser.error("give either days or a window, not both")
        try:
            conf = window_conf(*window, params)
        except ValueError as exc:
            parser.error(str(exc))
        print(f"{PROGRESS} start window {conf['window_start']} {conf['window_end']}", flush=True)
        run = run_window(*window, dag_id=args.dag_id, params=params)
        _print_window_run(run)
        return 0 if _state(run) == "success" else 1
    if not args.days:
        parser.error("give UTC days or --window-start/--window-end")
    states = run_days(args.days, args.dag_id, params=params or None)
    return 0 if all(s == "success" for s in states.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
