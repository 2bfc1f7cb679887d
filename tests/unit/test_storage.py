"""The Parquet lake on a local file:// base: round trips, the manifest as the completeness marker, rewrites
without duplicates, and a layout DuckDB reads as a Hive-partitioned table."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from airflow.sdk.exceptions import AirflowFailException

from modelwatch.schema import SchemaError, arrow_schema
from modelwatch.storage import (
    DATA_FILE,
    MANIFEST,
    IncompletePartition,
    Lake,
    PartitionReplaced,
    StorageError,
    frame_to_parquet,
)
from modelwatch.verdict import ModelVerdict, verdicts_frame
from modelwatch.window import Window


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


DAY3 = Window(utc(2026, 3, 3), utc(2026, 3, 4))
DAY2 = Window(utc(2026, 3, 2), utc(2026, 3, 3))


def samples(n: int, start: str = "2026-03-03T00:00:00Z", value: float = 0.0) -> pd.DataFrame:
    ts = pd.Timestamp(start) + pd.to_timedelta(np.arange(n) * 15, unit="s")
    return pd.DataFrame({
        "timestamp": ts,
        "query": "cpu",
        "instance": [f"model-{'ab'[k % 2]}" for k in range(n)],
        "labels": '{instance="model-a:9100"}',
        "value": value + np.arange(n) / 100.0,
        "sample_time": ts,
        "window_seconds": 0.0,
    })  # fmt: skip


def verdict_rows(n: int) -> pd.DataFrame:
    """A ``verdicts`` frame of ``n`` models."""
    return verdicts_frame([
        ModelVerdict(model=f"m{k}", verdict="healthy", reason="fine", window_start=DAY3.start.isoformat(),
                     window_end=DAY3.end.isoformat())
        for k in range(n)
    ])  # fmt: skip


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(tmp_path.as_uri())


def part_dir(tmp_path: Path, dataset: str, window: Window) -> Path:
    return tmp_path / window.table / dataset / window.partition_path


def manifest_on_disk(tmp_path: Path, dataset: str, window: Window) -> dict[str, Any]:
    return json.loads((part_dir(tmp_path, dataset, window) / MANIFEST).read_text())


# -- round trip --------------------------------------------------------------------------------------------


def test_round_trip_with_utc_millisecond_timestamps(lake: Lake, tmp_path: Path) -> None:
    frame = pd.DataFrame({
        "timestamp": pd.to_datetime(["2026-03-03T10:00:00.123456Z", "2026-03-03T23:59:59.999999Z",
                                     "2026-03-03T00:00:00.000000Z"], utc=True),
        "model": ["fraud-detector", 'quo"te', "modèle"],
        "model_version": "v1",
        "instance": "model-a",
        "prediction_time": [0.2, np.nan, 2.5],
        "accuracy": [1.0, 0.0, np.nan],
        "loss": 0.1,
        "run_id": ["r1", "r2", "r3"],
        "experiment": "predictions",
    })  # fmt: skip
    ref = lake.write_frame("predictions", DAY3, frame, run_id="scheduled__2026-03-04")
    assert ref.url == f"{tmp_path.as_uri()}/predictions/dt=2026-03-03"
    assert ref.rows == 3
    back = lake.read_partition(ref.url)
    assert str(back["timestamp"].dt.tz) == "UTC"
    # millisecond precision, truncated: 10:00:00.123456 -> .123, 23:59:59.999999 stays on the same day
    expected_ms = [
        int(utc(2026, 3, 3, 10, 0, 0).timestamp()) * 1000 + 123,
        int(utc(2026, 3, 3, 23, 59, 59).timestamp()) * 1000 + 999,
        int(utc(2026, 3, 3).timestamp()) * 1000,
    ]
    assert list(back["timestamp"].dt.as_unit("ns").astype("int64")) == [t * 1_000_000 for t in expected_ms]
    # stored as millisecond UTC timestamps, the type Athena, DuckDB and Spark all read
    schema = pq.read_schema(part_dir(tmp_path, "predictions", DAY3) / DATA_FILE)
    assert schema.field("timestamp").type == pa.timestamp("ms", tz="UTC")
    assert list(back["model"]) == list(frame["model"])
    np.testing.assert_array_equal(back["prediction_time"].to_numpy(), frame["prediction_time"].to_numpy())
    # every column stored as the dataset declares it (modelwatch.schema)
    assert schema.remove_metadata() == arrow_schema("predictions")
    pd.testing.assert_frame_equal(lake.read_frame("predictions", DAY3), back)


def test_empty_frame_round_trips(lake: Lake) -> None:
    ref = lake.write_frame("resources", DAY3, samples(0), run_id="r")
    back = lake.read_partition(ref.url)
    assert len(back) == 0
    assert list(back.columns) == list(samples(0).columns)


# -- the manifest ------------------------------------------------------------------------------------------


def test_manifest_lists_checksum_and_rows(lake: Lake, tmp_path: Path) -> None:
    frame = samples(40)
    lake.write_frame("resources", DAY3, frame, run_id="scheduled__2026-03-04", extra={"requests": 8})
    m = manifest_on_disk(tmp_path, "resources", DAY3)
    data = (part_dir(tmp_path, "resources", DAY3) / DATA_FILE).read_bytes()
    assert m["files"] == [
        {"name": DATA_FILE, "rows": 40, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    ]
    assert m["dataset"] == "resources"
    assert m["partition"] == {"dt": "2026-03-03"}
    assert m["run_id"] == "scheduled__2026-03-04"
    assert m["columns"] == list(frame.columns)
    assert m["requests"] == 8
    assert datetime.fromisoformat(m["window"]["start"]) == DAY3.start
    assert datetime.fromisoformat(m["window"]["end"]) == DAY3.end
    assert lake.manifest("resources", DAY3) == m


class RecordingLake(Lake):
    """Records the order of object writes (and can fail one), to see what a reader sees at each step."""

    def __init__(self, base_url: str, fail_on: str | None = None) -> None:
        super().__init__(base_url)
        self.writes: list[str] = []
        self.fail_on = fail_on

    def _atomic_write(self, part: Any, name: str, payload: bytes) -> None:
        if name == self.fail_on:
            raise OSError(28, "No space left on device")
        self.writes.append(name)
        super()._atomic_write(part, name, payload)


def test_manifest_is_written_last(tmp_path: Path) -> None:
    lake = RecordingLake(tmp_path.as_uri())
    lake.write_frame("resources", DAY3, samples(5), run_id="r")
    assert lake.writes == [DATA_FILE, MANIFEST]


def test_failed_rewrite_leaves_the_partition_incomplete_not_stale(tmp_path: Path) -> None:
    Lake(tmp_path.as_uri()).write_frame("resources", DAY3, samples(5), run_id="first")
    failing = RecordingLake(tmp_path.as_uri(), fail_on=DATA_FILE)
    with pytest.raises(StorageError) as info:
        failing.write_frame("resources", DAY3, samples(7), run_id="second")
    url = failing.partition_url("resources", DAY3)
    assert url in str(info.value) and "No space left" in str(info.value)
    # the old manifest went first: nobody reads the old data as if it were the new run's
    with pytest.raises(IncompletePartition):
        failing.read_frame("resources", DAY3)


def test_read_without_manifest_names_the_url(lake: Lake) -> None:
    url = lake.partition_url("resources", DAY3)
    with pytest.raises(IncompletePartition) as info:
        lake.read_partition(url)
    assert url in str(info.value)


def test_read_after_manifest_removed(lake: Lake, tmp_path: Path) -> None:
    ref = lake.write_frame("resources", DAY3, samples(5), run_id="r")
    (part_dir(tmp_path, "resources", DAY3) / MANIFEST).unlink()
    with pytest.raises(IncompletePartition) as info:
        lake.read_partition(ref.url)
    assert ref.url in str(info.value)


def test_data_not_matching_manifest_is_incomplete(lake: Lake, tmp_path: Path) -> None:
    ref = lake.write_frame("resources", DAY3, samples(5), run_id="r")
    # another run replaced the data file but has not written its manifest yet
    (part_dir(tmp_path, "resources", DAY3) / DATA_FILE).write_bytes(frame_to_parquet(samples(6)))
    with pytest.raises(IncompletePartition) as info:
        lake.read_partition(ref.url)
    assert ref.url in str(info.value)
    assert "does not match" in str(info.value)


# -- rewrites ----------------------------------------------------------------------------------------------


def test_rewrite_replaces_the_partition(lake: Lake, tmp_path: Path) -> None:
    lake.write_frame("resources", DAY3, samples(10, value=0.0), run_id="first")
    lake.write_frame("resources", DAY3, samples(4, value=5.0), run_id="second")
    files = sorted(p.name for p in part_dir(tmp_path, "resources", DAY3).iterdir())
    assert files == [MANIFEST, DATA_FILE]
    back = lake.read_frame("resources", DAY3)
    assert len(back) == 4
    assert back["value"].min() == 5.0
    assert manifest_on_disk(tmp_path, "resources", DAY3)["run_id"] == "second"


def test_rewrite_removes_stray_files_and_keeps_documents(lake: Lake, tmp_path: Path) -> None:
    lake.write_frame("verdicts", DAY3, verdict_rows(3), run_id="first")
    doc_url = lake.write_document("verdicts", DAY3, "verdict", {"ok": True})
    part = part_dir(tmp_path, "verdicts", DAY3)
    stray = frame_to_parquet(verdict_rows(3))
    (part / "part-00001.parquet").write_bytes(stray)  # an older layout with more parts
    (part / "_tmp-0123abcd-part-00000.parquet").write_bytes(stray)  # a write that died before its rename
    (part / ".part-00000.parquet.crc").write_bytes(b"crc")
    lake.write_frame("verdicts", DAY3, verdict_rows(2), run_id="second")
    assert sorted(p.name for p in part.iterdir()) == ["_manifest.json", "_verdict.json", DATA_FILE]
    assert lake.read_document(doc_url) == {"ok": True}
    assert len(lake.read_frame("verdicts", DAY3)) == 2


def test_days_do_not_touch_each_other(lake: Lake) -> None:
    lake.write_frame("resources", DAY2, samples(2, "2026-03-02T00:00:00Z"), run_id="a")
    lake.write_frame("resources", DAY3, samples(3), run_id="b")
    lake.write_frame("resources", DAY3, samples(4), run_id="c")
    assert len(lake.read_frame("resources", DAY2)) == 2
    assert len(lake.read_frame("resources", DAY3)) == 4


def test_hourly_partitions_do_not_overwrite_each_other(lake: Lake, tmp_path: Path) -> None:
    h10 = Window(utc(2026, 3, 3, 10), utc(2026, 3, 3, 11))
    h11 = Window(utc(2026, 3, 3, 11), utc(2026, 3, 3, 12))
    lake.write_frame("resources", h10, samples(3, "2026-03-03T10:00:00Z"), run_id="h10")
    lake.write_frame("resources", h11, samples(5, "2026-03-03T11:00:00Z"), run_id="h11")
    a, b = lake.read_frame("resources", h10), lake.read_frame("resources", h11)
    assert (len(a), len(b)) == (3, 5)
    assert a["timestamp"].min() == pd.Timestamp("2026-03-03T10:00:00Z")
    assert b["timestamp"].min() == pd.Timestamp("2026-03-03T11:00:00Z")
    assert (tmp_path / "intraday" / "resources" / "dt=2026-03-03" / "hour=10" / DATA_FILE).is_file()
    assert (tmp_path / "intraday" / "resources" / "dt=2026-03-03" / "hour=11" / DATA_FILE).is_file()


def test_daily_rewrite_after_an_hourly_run_of_the_same_day(lake: Lake) -> None:
    # someone triggered the DAG with window_start/window_end for 10:00-12:00 to look at an incident ...
    lake.write_frame(
        "resources", Window(utc(2026, 3, 3, 10), utc(2026, 3, 3, 12)), samples(3), run_id="manual"
    )
    # ... and the daily run of that day (or its backfill) writes the day
    lake.write_frame("resources", DAY3, samples(7), run_id="scheduled")
    assert len(lake.read_frame("resources", DAY3)) == 7


# -- documents ---------------------------------------------------------------------------------------------


def test_documents_round_trip(lake: Lake) -> None:
    url = lake.write_document("alerts", DAY3, "payload", [{"labels": {"model": 'modèle "x"'}}])
    assert url.endswith("/alerts/dt=2026-03-03/_payload.json")
    assert lake.read_document(url) == [{"labels": {"model": 'modèle "x"'}}]
    assert lake.read_document(url.replace("_payload", "_nothing")) is None


def test_document_with_nan_is_refused(lake: Lake) -> None:
    with pytest.raises(StorageError):
        lake.write_document("verdicts", DAY3, "verdict", {"lift": float("nan")})


def test_unknown_dataset_is_refused(lake: Lake) -> None:
    with pytest.raises(ValueError, match="unknown dataset"):
        lake.partition_url("resource", DAY3)


# -- readable by DuckDB ------------------------------------------------------------------------------------


def test_duckdb_reads_the_lake_as_a_partitioned_table(lake: Lake, tmp_path: Path) -> None:
    lake.write_frame("resources", DAY2, samples(6, "2026-03-02T00:00:00Z"), run_id="a")
    lake.write_frame("resources", DAY3, samples(4), run_id="b")
    lake.write_frame("resources", DAY3, samples(5), run_id="c")  # a rewrite: no duplicates
    lake.write_document("resources", DAY3, "notes", {"documents": "sit beside the data"})
    glob = f"{tmp_path}/resources/*/*.parquet"
    con = duckdb.connect()
    try:
        rows = con.sql(
            f"select dt, count(*), min(epoch_ms(timestamp)), max(value) "
            f"from read_parquet('{glob}', hive_partitioning=true) group by dt order by dt"
        ).fetchall()
        columns = {r[0]: r[1] for r in con.sql(
            f"describe select * from read_parquet('{glob}', hive_partitioning=true)").fetchall()}  # fmt: skip
    finally:
        con.close()
    t2 = int(utc(2026, 3, 2).timestamp()) * 1000
    t3 = int(utc(2026, 3, 3).timestamp()) * 1000
    assert rows == [
        (date(2026, 3, 2), 6, t2, pytest.approx(0.05)),
        (date(2026, 3, 3), 5, t3, pytest.approx(0.04)),
    ]
    assert columns["timestamp"] == "TIMESTAMP WITH TIME ZONE"
    assert columns["dt"] == "DATE"
    assert set(columns) == {"timestamp", "query", "instance", "labels", "value", "sample_time", "window_seconds", "dt"}


def test_duckdb_sees_only_the_complete_file_after_rewrites(lake: Lake, tmp_path: Path) -> None:
    for k in range(5):
        lake.write_frame("resources", DAY3, samples(10 + k), run_id=f"r{k}")
    con = duckdb.connect()
    try:
        n = con.sql(f"select count(*) from read_parquet('{tmp_path}/resources/*/*.parquet')").fetchall()
    finally:
        con.close()
    assert n == [(14,)]


# -- declared schemas ----------------------------------------------------------------------------------------


def test_a_frame_off_its_schema_is_refused_naming_dataset_and_column_and_nothing_is_written(
    lake: Lake, tmp_path: Path
) -> None:
    wrong = samples(3).drop(columns=["window_seconds"]).assign(value=["1", "2", "3"])
    with pytest.raises(SchemaError) as err:
        lake.write_frame("resources", DAY3, wrong, run_id="r")
    message = str(err.value)
    assert "resources frame at" in message and "dt=2026-03-03" in message
    assert "missing column(s) window_seconds" in message and "column value is" in message
    assert not part_dir(tmp_path, "resources", DAY3).exists()


def test_a_window_without_any_explanation_stores_the_same_types_as_one_with(lake: Lake, tmp_path: Path) -> None:
    # all-healthy verdicts have no relative risk at all: without the declared schema Arrow would store the
    # column as type null, and a table over many days would see two types for one column
    lake.write_frame("verdicts", DAY3, verdict_rows(2), run_id="r")
    schema = pq.read_schema(part_dir(tmp_path, "verdicts", DAY3) / DATA_FILE).remove_metadata()
    assert schema == arrow_schema("verdicts")
    assert schema.field("relative_risk").type == pa.float64()


def test_a_partition_written_off_schema_is_refused_when_read(lake: Lake, tmp_path: Path) -> None:
    ref = lake.write_frame("resources", DAY3, samples(3), run_id="r")
    # another writer (an older modelwatch) left a file without window_seconds, with a matching manifest
    data = frame_to_parquet(samples(3).drop(columns=["window_seconds"]))
    (part_dir(tmp_path, "resources", DAY3) / DATA_FILE).write_bytes(data)
    manifest = manifest_on_disk(tmp_path, "resources", DAY3)
    manifest["files"][0]["sha256"] = hashlib.sha256(data).hexdigest()
    (part_dir(tmp_path, "resources", DAY3) / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(SchemaError, match="missing column\\(s\\) window_seconds"):
        lake.read_partition(ref.url)


def test_verdicts_stored_before_a_column_was_added_read_it_as_not_recorded(lake: Lake, tmp_path: Path) -> None:
    """A day judged before ``evidence_partial`` existed stays readable (the view, replay, the summary); a
    new frame without the column is still refused on write."""
    from modelwatch.verdict import verdicts_from_frame

    ref = lake.write_frame("verdicts", DAY3, verdict_rows(2), run_id="r")
    data = frame_to_parquet(verdict_rows(2).drop(columns=["evidence_partial"]))
    (part_dir(tmp_path, "verdicts", DAY3) / DATA_FILE).write_bytes(data)
    manifest = manifest_on_disk(tmp_path, "verdicts", DAY3)
    manifest["files"][0]["sha256"] = hashlib.sha256(data).hexdigest()
    (part_dir(tmp_path, "verdicts", DAY3) / MANIFEST).write_text(json.dumps(manifest))
    frame = lake.read_partition(ref.url)
    assert list(frame["evidence_partial"]) == ["", ""]
    assert [v.evidence_partial for v in verdicts_from_frame(frame)] == [[], []]
    with pytest.raises(SchemaError, match="missing column\\(s\\) evidence_partial"):
        lake.write_frame("verdicts", DAY3, verdict_rows(1).drop(columns=["evidence_partial"]), run_id="r2")

# -- run identity and versions -------------------------------------------------------------------------------


ADHOC = Window(utc(2026, 3, 3, 10), utc(2026, 3, 3, 12), run_key="manual__2026-03-04T09-00-00-00-00")


def test_an_ad_hoc_run_writes_its_own_place_and_leaves_the_canonical_day_alone(lake: Lake, tmp_path: Path) -> None:
    lake.write_frame("resources", DAY3, samples(4), run_id="scheduled__2026-03-04")
    canonical = (part_dir(tmp_path, "resources", DAY3) / DATA_FILE).read_bytes()
    ref = lake.write_frame("resources", ADHOC, samples(9, "2026-03-03T10:00:00Z"), run_id="manual__x")
    assert ref.url == f"{tmp_path.as_uri()}/adhoc/resources/dt=2026-03-03/run={ADHOC.run_key}"
    assert (part_dir(tmp_path, "resources", DAY3) / DATA_FILE).read_bytes() == canonical
    con = duckdb.connect()
    try:
        runs = con.sql(f"select run, count(*) from read_parquet('{tmp_path}/adhoc/resources/*/*/*.parquet', "
                       "hive_partitioning=true) group by run").fetchall()  # fmt: skip
    finally:
        con.close()
    assert runs == [(ADHOC.run_key, 9)]  # a person finds an ad-hoc run's results by its run id
    assert manifest_on_disk(tmp_path, "resources", ADHOC)["window"]["run_key"] == ADHOC.run_key


def test_a_reference_names_its_version_and_reads_it(lake: Lake) -> None:
    ref = lake.write_frame("resources", DAY3, samples(4), run_id="run-a")
    d = ref.to_dict()
    assert d["run_id"] == "run-a" and len(d["sha256"]) == 64 and d["rows"] == 4
    assert len(lake.read_ref(d)) == 4


def test_a_partition_rewritten_by_another_run_is_not_read_as_this_runs_input(lake: Lake) -> None:
    mine = lake.write_frame("resources", DAY3, samples(4), run_id="run-a").to_dict()
    lake.write_frame("resources", DAY3, samples(6), run_id="run-b")
    with pytest.raises(PartitionReplaced, match=r"rewritten by run 'run-b' after run 'run-a'.*clear this whole run"):
        lake.read_ref(mine)
    assert isinstance(PartitionReplaced("x"), AirflowFailException)  # retrying the task cannot help
    assert len(lake.read_partition(mine["url"])) == 6  # without a version: the partition as it is now


def test_removing_a_document_of_an_earlier_run(lake: Lake, tmp_path: Path) -> None:
    url = lake.write_document("alerts", DAY3, "payload", [{"labels": {"model": "m"}}])
    assert lake.document_url("alerts", DAY3, "payload") == url
    assert lake.remove_document("alerts", DAY3, "payload") is True
    assert lake.read_document(url) is None
    assert lake.remove_document("alerts", DAY3, "payload") is False


# -- reference history ---------------------------------------------------------------------------------


def predictions(window: Window, n: int, **logged: list[Any]) -> pd.DataFrame:
    """``n`` predictions of model m in ``window``, with the logged-value columns given."""
    ts = pd.Timestamp(window.start) + pd.to_timedelta(np.arange(n), unit="min")
    frame = pd.DataFrame({"timestamp": ts, "model": "m", "model_version": "1", "instance": "model-a",
                          "prediction_time": 0.2, "accuracy": 1.0, "loss": 0.1, "run_id": "r",
                          "experiment": "e"})  # fmt: skip
    return frame.assign(**logged)


def test_history_reads_a_logged_value_added_after_older_days_were_written(lake: Lake) -> None:
    # mlflow.logged gained amount and region on day 3: day 2's partition never had them
    lake.write_frame("predictions", DAY2, predictions(DAY2, 2), run_id="d2")
    lake.write_frame("predictions", DAY3, predictions(DAY3, 2, metric_amount=[1.5, 2.5], param_region=["eu", None]),
                     run_id="d3")  # fmt: skip
    frame, found = lake.read_history("predictions", [DAY2, DAY3], ["model", "metric_amount", "param_region"])
    assert found == [DAY2, DAY3]
    assert list(frame.columns) == ["model", "metric_amount", "param_region"]
    assert frame["metric_amount"].tolist()[2:] == [1.5, 2.5] and frame["metric_amount"].iloc[:2].isna().all()
    assert frame["param_region"].isna().tolist() == [True, True, False, True] and frame["param_region"].iloc[2] == "eu"
    # nothing written yet: the declared empty frame, logged columns included
    empty, none = lake.read_history("predictions", [Window(utc(2026, 3, 1), utc(2026, 3, 2))], ["metric_amount"])
    assert none == [] and list(empty.columns) == ["metric_amount"] and empty.empty


# -- a run that failed for good leaves its staged parts; the next run of the window removes them ----------


def _age(folder: Path, seconds: float) -> None:
    import os
    import time

    for p in folder.rglob("*"):
        os.utime(p, (time.time() - seconds, time.time() - seconds))


def test_the_next_run_removes_staged_parts_a_failed_run_left(lake: Lake, tmp_path: Path) -> None:
    adhoc = Window(utc(2026, 3, 3, 10), utc(2026, 3, 3, 12), run_key="manual__x-0123456789ab")
    failed = Path(lake.stage_frame(DAY3, "failed_run", "joined-group-00000", samples(3)).removeprefix("file://")).parent
    failed_adhoc = Path(lake.stage_frame(adhoc, "failed_adhoc", "joined-group-00000", samples(3)).removeprefix("file://")).parent
    running = Path(lake.stage_frame(DAY3, "still_running", "joined-group-00000", samples(3)).removeprefix("file://")).parent
    own = Path(lake.stage_frame(DAY3, "this_run", "joined-group-00000", samples(3)).removeprefix("file://")).parent
    other_day = Path(lake.stage_frame(DAY2, "failed_run", "joined-group-00000", samples(3)).removeprefix("file://")).parent
    for folder in (failed, failed_adhoc, own, other_day):
        _age(folder, 7200)
    removed = lake.drop_stale_staging(DAY3, "this_run", older_than=3600)
    assert sorted(removed) == sorted(f"file://{p}" for p in (failed, failed_adhoc))
    assert not failed.exists() and not failed_adhoc.exists()
    # a younger folder may be a run under way; this run's own and another day's are not this call's business
    assert running.exists() and own.exists() and other_day.exists()
    assert lake.drop_stale_staging(DAY3, "this_run", older_than=3600) == []


def test_stored_ref_is_what_a_reader_of_the_stored_partition_gets(lake: Lake) -> None:
    assert lake.stored_ref("resources", DAY3) is None
    ref = lake.write_frame("resources", DAY3, samples(4), run_id="scheduled__1")
    assert lake.stored_ref("resources", DAY3) == ref
    assert len(lake.read_ref(ref.to_dict())) == 4
