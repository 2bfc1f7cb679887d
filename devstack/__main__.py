"""Command line of the local stack: ``python -m devstack up|down|status|airflow-status|env|seed|demo``.

Configuration comes from the environment (``MODELWATCH_STACK_DIR``, ``MODELWATCH_<SERVICE>_PORT``, see
``devstack/CONTRACT.md``), so ``down`` in one shell stops what ``up`` started in another.

Why: argparse over the modules below, one entry point for the Makefile and a developer's shell. The state
is in PID files rather than in a foreground supervisor (``airflow standalone``, a compose engine), so
``up`` returns and the tests start the very same services from their fixtures.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Callable

from devstack.stack import SERVICES, Stack, StackConfig, StackError


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def cmd_up(args: argparse.Namespace) -> int:
    """Start the stack (or the services named with ``--only``) and print where everything is.

    :param args: parsed arguments.
    :returns: exit code.
    """
    stack = Stack(StackConfig.from_env())
    t0 = time.monotonic()
    stack.start(args.only or None)
    print(f"modelwatch stack up in {time.monotonic() - t0:.1f} s (state: {stack.config.state_dir})\n")
    rows = [["SERVICE", "URL", "PID", "READY", "LOG"]]
    for row in stack.describe():
        if args.only and row["service"] not in args.only:
            continue
        took = stack.ready_seconds.get(row["service"])
        ready = f"{took:.1f} s" if took is not None else "-"
        rows.append([row["service"], row["url"], str(row["pid"] or "-"), ready, row["log"]])
    print(_table(rows))
    print("\nAirflow connections: dev/connections.env (default ports) or `python -m devstack env`.")
    print("Stop with: make down   (or: .venv/bin/python -m devstack down)")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    """Stop every service started from the state folder and print what was stopped.

    :param args: parsed arguments.
    :returns: exit code.
    """
    stack = Stack(StackConfig.from_env())
    t0 = time.monotonic()
    stopped = stack.stop()
    if stopped:
        print(f"stopped {', '.join(stopped)} in {time.monotonic() - t0:.1f} s")
    else:
        print(f"nothing was running (state: {stack.config.state_dir})")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Print which services run; exit code 0 only when all of them do.

    :param args: parsed arguments.
    :returns: exit code.
    """
    stack = Stack(StackConfig.from_env())
    rows = [["SERVICE", "STATE", "URL", "PID"]]
    for row in stack.describe():
        state = "running" if row["pid"] else "stopped"
        rows.append([row["service"], state, row["url"], str(row["pid"] or "-")])
    print(_table(rows))
    return 0 if all(stack.status().values()) else 3


def cmd_env(args: argparse.Namespace) -> int:
    """Print the Airflow connection variables (``KEY='json'`` lines) for the configured stack.

    :param args: parsed arguments.
    :returns: exit code.
    """
    cfg = StackConfig() if args.defaults else StackConfig.from_env()
    sys.stdout.write(cfg.connections_env_text())
    return 0


# ---------------------------------------------------------------------------------------------------
# seed / demo: implemented in devstack/seed.py (seed_main(args)) and devstack/demo.py (demo_main(args)).
# Imported lazily so that up/down/status work before (and independently of) those modules.
# Options: if the module defines add_arguments(parser: argparse.ArgumentParser), build_parser() calls it
# on that sub-command's parser (only when that sub-command is the one being run).
# ---------------------------------------------------------------------------------------------------
def cmd_seed(args: argparse.Namespace) -> int:
    """Seed the stack with the synthetic history (delegates to :func:`devstack.seed.seed_main`).

    :param args: parsed arguments.
    :returns: exit code.
    """
    from devstack.seed import seed_main

    return int(seed_main(args) or 0)


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the end-to-end demo (delegates to :func:`devstack.demo.demo_main`).

    :param args: parsed arguments.
    :returns: exit code.
    """
    from devstack.demo import demo_main

    return int(demo_main(args) or 0)


# ---------------------------------------------------------------------------------------------------
# Airflow beside the stack (devstack/airflow_services.py): `up` starts the stack and then Airflow's API
# server, scheduler, DAG processor and triggerer; `down` stops Airflow and then the stack; `airflow-status`
# shows Airflow alone. `up --no-airflow` (or `up --only ...`) is the stack alone, as before.
# ---------------------------------------------------------------------------------------------------
def cmd_up_with_airflow(args: argparse.Namespace) -> int:
    """Start the stack (:func:`cmd_up`), then Airflow beside it, and print the UI address and the login.

    :param args: parsed arguments.
    :returns: exit code.
    """
    if args.only or args.no_airflow:
        return cmd_up(args)
    from devstack.airflow_services import AirflowConfig, AirflowServices

    stack = Stack(StackConfig.from_env())
    services = AirflowServices(AirflowConfig.from_stack(stack.config))
    services.check_port()  # before the stack starts: a taken Airflow port must not leave half of it running
    was_running = {s for s, running in stack.status().items() if running}
    code = cmd_up(args)
    if code:
        return code
    t0 = time.monotonic()
    try:
        # Seeded before the scheduler starts: its first scheduled run (yesterday) then finds data.
        from devstack.scenarios import recent_days
        from devstack.seed import seed_stack

        print("\nseeding the last six days of synthetic history ...")
        seed_stack(stack, recent_days(), work_dir=stack.config.state_dir / "seed", progress=lambda line: print(f"  {line}"))
        services.start()
    except BaseException:
        # Like Stack.start(): a failed `up` leaves nothing behind that it started.
        for name in reversed(SERVICES):
            if name not in was_running:
                stack.stop_service(name)
        raise
    c = services.config
    print(f"\nAirflow up in {time.monotonic() - t0:.1f} s (AIRFLOW_HOME: {c.home})\n")
    rows = [["COMPONENT", "PID", "READY", "LOG"]]
    for row in services.describe():
        took = services.ready_seconds.get(row["component"])
        rows.append([row["component"], str(row["pid"] or "-"), f"{took:.1f} s" if took else "-", row["log"]])
    print(_table(rows))
    print(f"\nAirflow UI:  {c.base_url}")
    print(f"model health: {c.base_url}/modelwatch/   (in the UI's navigation: Model health; reports per model and day)")
    print(f"login:       admin / {services.password()}   (kept in {c.passwords_file})")
    print(f"lake:        {c.lake_url}")
    print(f"CLI env:     set -a; . {c.env_file}; set +a   (then e.g. .venv/bin/airflow backfill create ...)")
    print("Stop everything with: make down   (or: .venv/bin/python -m devstack down)")
    return 0


def cmd_down_with_airflow(args: argparse.Namespace) -> int:
    """Stop Airflow (if it runs), then the stack (:func:`cmd_down`).

    :param args: parsed arguments.
    :returns: exit code.
    """
    from devstack.airflow_services import AirflowConfig, AirflowServices

    t0 = time.monotonic()
    stopped = AirflowServices(AirflowConfig.from_stack(StackConfig.from_env())).stop()
    if stopped:
        print(f"stopped airflow {', '.join(stopped)} in {time.monotonic() - t0:.1f} s")
    return cmd_down(args)


def cmd_airflow_status(args: argparse.Namespace) -> int:
    """Print Airflow's components, their health and where to log in; exit code 0 only when all are healthy.

    :param args: parsed arguments.
    :returns: exit code.
    """
    from devstack.airflow_services import AirflowConfig, AirflowServices

    services = AirflowServices(AirflowConfig.from_stack(StackConfig.from_env()))
    health = services.health() or {}
    keys = {"scheduler": "scheduler", "dag-processor": "dag_processor", "triggerer": "triggerer"}
    rows = [["COMPONENT", "STATE", "HEALTH", "PID", "LOG"]]
    healthy = True
    for row in services.describe():
        name = row["component"]
        if name == "api-server":
            status = "healthy" if health else "-"
        else:
            status = (health.get(keys[name]) or {}).get("status") or "-"
        healthy = healthy and bool(row["pid"]) and status == "healthy"
        rows.append([name, "running" if row["pid"] else "stopped", status, str(row["pid"] or "-"), row["log"]])
    print(_table(rows))
    c = services.config
    print(f"\nAirflow UI: {c.base_url}   login: admin / password in {c.passwords_file}")
    return 0 if healthy else 3


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Build the argument parser of ``python -m devstack``.

    :param command: the sub-command about to run; for ``seed``/``demo`` its module is imported so that its
        optional ``add_arguments(parser)`` can declare options.
    :returns: the parser.
    """
    parser = argparse.ArgumentParser(prog="python -m devstack", description="modelwatch local stack")
    sub = parser.add_subparsers(dest="command", required=True)
    commands: dict[str, tuple[Callable[[argparse.Namespace], int], str]] = {
        "up": (cmd_up_with_airflow, "start the stack and Airflow beside it; wait until all are ready"),
        "down": (cmd_down_with_airflow, "stop Airflow and every service of the stack"),
        "airflow-status": (cmd_airflow_status, "show Airflow's components and health (exit 3 unless all healthy)"),
        "status": (cmd_status, "show which services run (exit 3 unless all do)"),
        "env": (cmd_env, "print the AIRFLOW_CONN_* variables for this stack"),
        "seed": (cmd_seed, "load the synthetic history into the stack (devstack/seed.py)"),
        "demo": (cmd_demo, "run the whole demo on the stack (devstack/demo.py)"),
    }
    parsers = {}
    for name, (func, text) in commands.items():
        parsers[name] = sub.add_parser(name, help=text, description=text)
        parsers[name].set_defaults(func=func)
    parsers["up"].add_argument(
        "--only", nargs="+", choices=SERVICES, metavar="SERVICE", help="start only these"
    )
    parsers["up"].add_argument("--no-airflow", action="store_true", help="start the stack alone, without Airflow")
    parsers["env"].add_argument("--defaults", action="store_true", help="use the contract's default ports")
    if command in ("seed", "demo"):
        try:
            module = importlib.import_module(f"devstack.{command}")
        except ModuleNotFoundError as exc:
            if exc.name != f"devstack.{command}":
                raise
            parser.exit(2, f"error: `{command}` needs devstack/{command}.py, which does not exist yet\n")
        add_arguments = getattr(module, "add_arguments", None)
        if add_arguments is not None:
            add_arguments(parsers[command])
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m devstack``.

    :param argv: arguments (default ``sys.argv[1:]``).
    :returns: exit code.
    """
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    try:
        return args.func(args)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Stack.start() has already stopped what it launched; a traceback would only hide that.
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
