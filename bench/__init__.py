"""Benchmarks of modelwatch (``make bench`` = ``python -m bench``); not tests, no pass/fail thresholds.

Each benchmark is a module with ``add_arguments(parser)`` and ``run(args) -> str`` (a markdown section),
registered in :data:`bench.__main__.BENCHMARKS`. Cases that measure memory run in their own subprocess,
so one case's high-water mark never shows up in another's.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
