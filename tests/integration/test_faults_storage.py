"""Faults of the lake: S3 (the stack's real moto server) unreachable mid-write, access denied, bucket
missing, and two runs writing the same partition at once.

The manifest is written last and every reader checks the data against it, so whatever fails, a
partition is either complete and consistent or visibly incomplete (:class:`IncompletePartition`), and a
retry or re-run completes it. S3 faults come from :class:`faultproxy.FaultProxy` in front of moto, or
from moto's own IAM enforcement; each test uses its own connection id, so Airflow's per-connection
filesystem cache never hands one test's endpoint to another.
"""

from __future__ import annotations

import json
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest
from faultproxy import Fault, FaultProxy

from modelwatch.storage import DATA_FILE, MANIFEST, IncompletePartition, Lake, StorageError
from modelwatch.window import Window

WINDOW = Window(datetime(2026, 3, 3, tzinfo=UTC), datetime(2026, 3, 4, tzinfo=UTC))
BUCKET = "modelwatch"


def _frame(n: int, value: float = 0.5) -> pd.DataFrame:
    ts = pd.date_range("2026-03-03", periods=n, freq="15s", tz="UTC").as_unit("ms")
    return pd.DataFrame({"timestamp": ts, "query": "cpu", "instance": "model-a", "labels": "{}", "value": value,
                         "sample_time": ts, "window_seconds": 0.0})  # fmt: skip


def _predictions(n: int) -> pd.DataFrame:
    """A ``predictions`` frame of ``n`` rows (the dataset's declared columns, modelwatch.schema)."""
    ts = pd.date_range("2026-03-03", periods=n, freq="15s", tz="UTC").as_unit("ms")
    return pd.DataFrame({"timestamp": ts, "model": "m", "model_version": "1", "instance": "model-a",
                         "prediction_time": 0.1, "accuracy": 1.0, "loss": 0.0, "run_id": [f"r{k}" for k in range(n)],
                         "experiment": "e"})  # fmt: skip


def _verdicts(n: int) -> pd.DataFrame:
    from modelwatch.verdict import ModelVerdict, verdicts_frame

    return verdicts_frame([ModelVerdict(model=f"m{k}", verdict="healthy", reason="fine", window_start="a",
                                        window_end="b") for k in range(n)])  # fmt: skip


def _aws_conn(monkeypatch: pytest.MonkeyPatch, endpoint: str, login: str = "testing", password: str = "testing") -> str:
    """A fresh AWS connection id to ``endpoint`` with a short botocore retry policy."""
    conn_id = f"aws_faults_{uuid.uuid4().hex[:10]}"
    extra = {"endpoint_url": endpoint, "region_name": "us-east-1",
             "config_kwargs": {"retries": {"max_attempts": 2, "mode": "standard"}}}  # fmt: skip
    conn = {"conn_type": "aws", "login": login, "password": password, "extra": extra}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
    return conn_id


def _keys(stack: Any, prefix: str) -> set[str]:
    listing = stack.s3_client().list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return {o["Key"] for o in listing.get("Contents", [])}


@pytest.fixture
def s3_proxy(seeded_stack: Any) -> Iterator[FaultProxy]:
    with FaultProxy(seeded_stack.config.s3_url, lifetime=120) as proxy:
        yield proxy


# -- S3 unreachable mid-write --------------------------------------------------------------------------------


def test_s3_unreachable_before_the_manifest_leaves_the_partition_incomplete_and_a_rerun_completes_it(
    seeded_stack: Any, s3_proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = f"faults-midwrite-{uuid.uuid4().hex[:8]}"
    lake = Lake(f"s3://{BUCKET}/{prefix}", aws_conn_id=_aws_conn(monkeypatch, s3_proxy.url))
    url = lake.partition_url("resources", WINDOW)
    lake.write_frame("resources", WINDOW, _frame(3), run_id="first")  # a complete partition to rewrite

    # S3 goes away after the data file is written, before the manifest is
    s3_proxy.add(Fault.reset(match=rf"^PUT /{BUCKET}/.*/{MANIFEST}", times=None))
    with pytest.raises(StorageError) as info:
        lake.write_frame("resources", WINDOW, _frame(5), run_id="second")
    message = str(info.value)
    assert url in message and "Could not connect to the endpoint URL" in message, message
    keys = _keys(seeded_stack, prefix)
    part = f"{prefix}/resources/dt=2026-03-03"
    assert f"{part}/{DATA_FILE}" in keys and f"{part}/{MANIFEST}" not in keys
    # no reader takes the new data under the old manifest, or the old one as current
    with pytest.raises(IncompletePartition):
        lake.read_partition(url)

    s3_proxy.clear()  # S3 is back: the task's retry (or a re-run of the day) completes the partition
    ref = lake.write_frame("resources", WINDOW, _frame(5), run_id="second-retry")
    assert ref.rows == 5 and len(lake.read_partition(url)) == 5
    assert lake.read_manifest(url)["run_id"] == "second-retry"


def test_s3_failing_on_the_data_write_keeps_no_manifest_over_old_or_new_data(
    seeded_stack: Any, s3_proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = f"faults-datawrite-{uuid.uuid4().hex[:8]}"
    lake = Lake(f"s3://{BUCKET}/{prefix}", aws_conn_id=_aws_conn(monkeypatch, s3_proxy.url))
    url = lake.partition_url("predictions", WINDOW)
    lake.write_frame("predictions", WINDOW, _predictions(3), run_id="first")
    s3_proxy.add(Fault.reset(match=rf"^PUT /{BUCKET}/.*/{DATA_FILE}", times=None))
    with pytest.raises(StorageError, match="predictions partition .* failed"):
        lake.write_frame("predictions", WINDOW, _predictions(4), run_id="second")
    with pytest.raises(IncompletePartition):
        lake.read_partition(url)  # the re-run is visibly unfinished, not silently the old day
    s3_proxy.clear()
    lake.write_frame("predictions", WINDOW, _predictions(4), run_id="second")
    assert len(lake.read_partition(url)) == 4


# -- access denied, bucket missing -----------------------------------------------------------------------------


def _moto_auth(stack: Any, initial_no_auth_count: float) -> None:
    """Switch moto's IAM enforcement on (0) or off (inf) for the whole server."""
    req = urllib.request.Request(
        f"{stack.config.s3_url}/moto-api/reset-auth", data=str(initial_no_auth_count).encode(), method="POST",
        headers={"Content-Type": "text/plain"},
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert json.loads(resp.read())["status"] == "ok"


def test_s3_access_denied_names_the_partition_and_leaves_nothing_complete(
    seeded_stack: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    iam = boto3.client("iam", endpoint_url=seeded_stack.config.s3_url, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
    user = f"faults-reader-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    policy = {"Version": "2012-10-17",
              "Statement": [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": "*"}]}
    iam.put_user_policy(UserName=user, PolicyName="read-only", PolicyDocument=json.dumps(policy))  # fmt: skip
    key = iam.create_access_key(UserName=user)["AccessKey"]
    prefix = f"faults-denied-{uuid.uuid4().hex[:8]}"
    conn_id = _aws_conn(monkeypatch, seeded_stack.config.s3_url, key["AccessKeyId"], key["SecretAccessKey"])
    lake = Lake(f"s3://{BUCKET}/{prefix}", aws_conn_id=conn_id)
    url = lake.partition_url("verdicts", WINDOW)
    _moto_auth(seeded_stack, 0)
    try:
        with pytest.raises(StorageError) as info:
            lake.write_frame("verdicts", WINDOW, _verdicts(2), run_id="denied")
        with pytest.raises(IncompletePartition):
            lake.read_partition(url)  # the read-only user can look: nothing complete is there
    finally:
        _moto_auth(seeded_stack, float("inf"))
    assert url in str(info.value) and "PermissionError: Access Denied" in str(info.value)
    assert key["SecretAccessKey"] not in str(info.value)
    assert _keys(seeded_stack, prefix) == set()


def test_missing_bucket_is_an_error_not_a_new_bucket(seeded_stack: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = f"modelwatch-typo-{uuid.uuid4().hex[:8]}"
    lake = Lake(f"s3://{bucket}/lake", aws_conn_id=_aws_conn(monkeypatch, seeded_stack.config.s3_url))
    with pytest.raises(StorageError) as info:
        lake.write_frame("resources", WINDOW, _frame(2), run_id="typo")
    assert f"s3://{bucket}/lake/resources/dt=2026-03-03" in str(info.value)
    assert "bucket does not exist" in str(info.value), str(info.value)
    with pytest.raises(StorageError, match="bucket does not exist"):
        lake.write_document("alerts", WINDOW, "payload", [{"labels": {}}])
    buckets = {b["Name"] for b in seeded_stack.s3_client().list_buckets()["Buckets"]}
    assert bucket not in buckets  # s3fs's mkdir would have created it


# -- two runs of the same day at once --------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["file", "s3"])
def test_concurrent_writes_of_one_partition_end_consistent_and_readers_never_see_a_mix(
    seeded_stack: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any, where: str
) -> None:
    if where == "file":
        lake = Lake(f"file://{tmp_path}/lake")
    else:
        prefix = f"faults-race-{uuid.uuid4().hex[:8]}"
        lake = Lake(f"s3://{BUCKET}/{prefix}", aws_conn_id=_aws_conn(monkeypatch, seeded_stack.config.s3_url))
    url = lake.partition_url("resources", WINDOW)
    # different content per writer (a re-run racing a retry after the source changed)
    frames = {w: _frame(10 + w, value=float(w)) for w in range(4)}
    rounds = 4 if where == "file" else 2
    errors: list[BaseException] = []
    reads: list[int] = []
    stop = threading.Event()

    def writer(w: int) -> None:
        try:
            for r in range(rounds):
                lake.write_frame("resources", WINDOW, frames[w], run_id=f"writer-{w}-{r}")
        except BaseException as exc:  # reported by the main thread below
            errors.append(exc)

    def reader() -> None:
        while not stop.wait(0.005):
            try:
                got = lake.read_partition(url)
            except (IncompletePartition, StorageError):
                continue  # being rewritten: the reader is told so, and retries
            # whatever a reader gets is exactly one writer's frame, never a mix
            w = int(got["value"].iloc[0])
            pd.testing.assert_frame_equal(got, frames[w])
            reads.append(w)

    lake.write_frame("resources", WINDOW, frames[0], run_id="before")  # the day exists: runs re-write it
    threads = [threading.Thread(target=writer, args=(w,)) for w in frames]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    stop.set()
    watcher.join(timeout=30)
    assert not errors, errors
    manifest = lake.read_manifest(url)
    final = lake.read_partition(url)  # consistent: the data matches the manifest's sha256
    w = int(final["value"].iloc[0])
    pd.testing.assert_frame_equal(final, frames[w])
    assert manifest["files"][0]["rows"] == len(frames[w]) and manifest["run_id"].startswith(f"writer-{w}-")
    if where == "file":
        names = sorted(p.name for p in (tmp_path / "lake" / "resources" / "dt=2026-03-03").iterdir())
        assert names == [MANIFEST, DATA_FILE]
    else:
        assert _keys(seeded_stack, prefix) == {f"{prefix}/resources/dt=2026-03-03/{n}" for n in (DATA_FILE, MANIFEST)}
