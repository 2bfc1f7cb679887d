"""The lake's answers to a write race and to leftovers, on a local disk (no server involved).

The servers' side of the storage faults (S3 unreachable, access denied, bucket missing, concurrent writers
on S3) is in ``tests/integration/test_faults_storage.py``.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest

from modelwatch import storage
from modelwatch.storage import DATA_FILE, MANIFEST, IncompletePartition, Lake, StorageError
from modelwatch.window import Window

WINDOW = Window(datetime(2026, 3, 3, tzinfo=UTC), datetime(2026, 3, 4, tzinfo=UTC))


def _frame(n: int, value: float = 0.5) -> pd.DataFrame:
    ts = pd.date_range("2026-03-03", periods=n, freq="15s", tz="UTC").as_unit("ms")
    return pd.DataFrame({"timestamp": ts, "query": "cpu", "instance": "model-a", "labels": "{}", "value": value,
                         "sample_time": ts, "window_seconds": 0.0})  # fmt: skip


def test_a_writer_gives_up_only_with_the_partition_incomplete_never_inconsistent(tmp_path: Any) -> None:
    """The give-up path, forced: another run replaces the data after every one of our manifest writes."""
    lake = Lake(f"file://{tmp_path}/lake")
    url = lake.partition_url("resources", WINDOW)
    theirs = storage.frame_to_parquet(_frame(7, value=9.0))
    original = Lake._atomic_write

    def racing(self: Lake, part: Any, name: str, payload: bytes) -> None:
        original(self, part, name, payload)
        if name == MANIFEST:
            original(self, part, DATA_FILE, theirs)  # the other run's data lands right after our manifest

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Lake, "_atomic_write", racing)
        mp.setattr(storage, "MAX_WRITE_ATTEMPTS", 2)
        mp.setattr(storage.time, "sleep", lambda s: None)
        with pytest.raises(StorageError, match="kept rewriting it"):
            lake.write_frame("resources", WINDOW, _frame(3), run_id="ours")
    with pytest.raises(IncompletePartition):
        lake.read_partition(url)
    lake.write_frame("resources", WINDOW, _frame(3), run_id="rerun")
    assert len(lake.read_partition(url)) == 3


def test_old_leftovers_are_removed_but_a_concurrent_writers_temporary_file_is_not(tmp_path: Any) -> None:
    lake = Lake(f"file://{tmp_path}/lake")
    lake.write_frame("resources", WINDOW, _frame(2), run_id="first")
    part = tmp_path / "lake" / "resources" / "dt=2026-03-03"
    young = part / "_tmp-0123456789abcdef.partial"  # another run's write, about to be renamed
    old = part / "_tmp-fedcba9876543210.partial"  # a write that died an hour ago
    young.write_bytes(b"x")
    old.write_bytes(b"x")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    lake.write_frame("resources", WINDOW, _frame(3), run_id="second")
    assert young.exists() and not old.exists()
    assert len(lake.read_partition(lake.partition_url("resources", WINDOW))) == 3
