"""``python -m bench [--only NAME ...]``: run the benchmarks and print a markdown report.

To add a benchmark: write ``bench/<name>.py`` with ``DESCRIPTION``, ``add_arguments(parser)`` (options
prefixed with the benchmark's name) and ``run(args) -> str`` returning a markdown section, then add it to
:data:`BENCHMARKS` below. ``--only`` picks benchmarks by these names.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from types import ModuleType

from bench import correlation, day, layouts, predictions, quality, report, scale


def _benchmarks() -> dict[str, ModuleType]:
    return {
        "correlation": correlation,
        "day": day,
        "layouts": layouts,
        "predictions": predictions,
        "quality": quality,
        "report": report,
        "scale": scale,
    }


BENCHMARKS = _benchmarks()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", action="append", choices=sorted(BENCHMARKS), metavar="NAME",
        help=f"run only this benchmark (repeatable); one of: {', '.join(BENCHMARKS)}",
    )  # fmt: skip
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    for name, module in BENCHMARKS.items():
        module.add_arguments(parser.add_argument_group(name, module.DESCRIPTION))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for name, module in BENCHMARKS.items():
            print(f"{name}: {module.DESCRIPTION}")
        return 0
    selected = args.only or list(BENCHMARKS)
    # stdout is the report. Airflow's loggers keep the stdout they found when configured, and child
    # processes inherit it: point file descriptor 1 at stderr for all of them, the report at a copy of it.
    sys.stdout.flush()
    report = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    print(f"# modelwatch benchmarks\n\nPython {platform.python_version()} on {platform.platform()}, "
          f"{platform.processor() or platform.machine()}\n", file=report, flush=True)  # fmt: skip
    for name in selected:
        started = time.perf_counter()
        section = BENCHMARKS[name].run(args)
        print(section.rstrip() + f"\n\n_{name}: {time.perf_counter() - started:.0f} s in all_\n", file=report, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
