"""The documents a run leaves beside a window, on a real lake folder: the alert documents
(``tasks._alert_documents``), the payload ``post_alert`` posts and the window's commit check.

Issue 20: a backfill without paging, a dry run or a quality-only re-judging of a day whose page was delivered
used to delete ``_delivery.json`` (and replace ``_payload.json``) while the alert it recorded still fired;
``post_alert`` posted whatever payload was there now; two runs of a window could leave ``joined`` of one and
``verdicts`` of the other.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowFailException

from modelwatch.alerting import PagingDecision
from modelwatch.schema import arrow_schema
from modelwatch.storage import Lake, StorageError, sha256_of
from modelwatch.tasks import (
    COMMITTED_BY_EVALUATE,
    _alert_documents,
    alert_document_names,
    check_commit,
    payload_to_post,
)
from modelwatch.verdict import ModelVerdict, drift_frame, verdicts_frame
from modelwatch.window import Window

DAY = Window(datetime(2026, 3, 3, tzinfo=UTC), datetime(2026, 3, 4, tzinfo=UTC))
ALERT = {"labels": {"alertname": "ModelPredictionsDegraded", "model": "m"}, "annotations": {}}
PAGED = {"posted_at": "2026-03-04T00:10:00+00:00", "alerts": [ALERT], "run_id": "scheduled__2026-03-03"}


def _lake(tmp_path: Path) -> Lake:
    return Lake(f"file://{tmp_path}")


def _paged_day(lake: Lake) -> tuple[str, str]:
    """The window as its own scheduled run left it: the payload it posted and the delivery record."""
    payload = lake.write_document("alerts", DAY, "payload", [ALERT])
    return payload, lake.write_document("alerts", DAY, "delivery", PAGED)


def test_a_run_that_does_not_page_keeps_the_delivered_payload_and_its_record(tmp_path: Path) -> None:
    lake = _lake(tmp_path)
    payload, delivery = _paged_day(lake)
    other = [{**ALERT, "labels": {**ALERT["labels"], "alertname": "ModelPredictionsSlowUnexplained"}}]
    out = _alert_documents(
        lake, DAY, other, PagingDecision(False, "backfill: not paging"), quality_only=False
    )
    assert out["payload"] is None and out["kept"] == {"payload": payload, "delivery": delivery}
    assert lake.read_document(delivery) == PAGED and lake.read_document(payload) == [ALERT]


def test_a_run_that_pages_replaces_the_documents_and_names_its_payload_version(tmp_path: Path) -> None:
    lake = _lake(tmp_path)
    payload, delivery = _paged_day(lake)
    new = [{**ALERT, "annotations": {"summary": "again"}}]
    out = _alert_documents(lake, DAY, new, PagingDecision(True, "paging"), quality_only=False)
    assert out["payload"] == payload and lake.read_document(payload) == new
    assert out["payload_sha256"] == sha256_of(lake.read_bytes(payload) or b"")
    assert lake.read_bytes(delivery) is None  # this run's post_alert records its own delivery


def test_a_paging_run_with_nothing_to_page_removes_the_payload(tmp_path: Path) -> None:
    lake = _lake(tmp_path)
    payload, delivery = _paged_day(lake)
    out = _alert_documents(lake, DAY, [], PagingDecision(True, "nothing to page"), quality_only=False)
    assert out["payload"] is None and lake.read_bytes(payload) is None and lake.read_bytes(delivery) is None


def test_a_quality_only_run_writes_its_own_pair_and_leaves_the_days_page(tmp_path: Path) -> None:
    lake = _lake(tmp_path)
    payload, delivery = _paged_day(lake)
    quality = [{"labels": {"alertname": "ModelQualityRegressed", "model": "m"}, "annotations": {}}]
    out = _alert_documents(lake, DAY, quality, PagingDecision(True, "quality only"), quality_only=True)
    assert alert_document_names(True) == ("quality_payload", "quality_delivery")
    assert out["payload"] == lake.document_url("alerts", DAY, "quality_payload")
    assert json.loads(lake.read_bytes(out["payload"]) or b"") == quality
    assert lake.read_document(payload) == [ALERT] and lake.read_document(delivery) == PAGED


def test_post_alert_posts_the_payload_version_its_evaluate_wrote(tmp_path: Path) -> None:
    lake = _lake(tmp_path)
    out = _alert_documents(lake, DAY, [ALERT], PagingDecision(True, "paging"), quality_only=False)
    assert payload_to_post(lake, out["payload"], out["payload_sha256"], DAY) == [ALERT]
    # another run of the window wrote its own payload since
    lake.write_document("alerts", DAY, "payload", [{**ALERT, "annotations": {"summary": "the other run"}}])
    with pytest.raises(
        AirflowFailException, match="no longer the one this run's evaluate wrote.*Clear this whole run"
    ):
        payload_to_post(lake, out["payload"], out["payload_sha256"], DAY)
    lake.remove_document("alerts", DAY, "payload")
    with pytest.raises(ValueError, match="missing or empty"):
        payload_to_post(lake, out["payload"], out["payload_sha256"], DAY)


def _commit(lake: Lake, run_id: str, reason: str) -> dict[str, dict[str, object]]:
    """What an ``evaluate`` commits for DAY: the four partitions written by ``run_id``."""
    verdict = ModelVerdict(model="m", verdict="healthy", reason=reason, window_start=DAY.start.isoformat(),
                           window_end=DAY.end.isoformat())  # fmt: skip
    # joined and correlation: empty frames of their datasets' schemas
    frames = {"joined": arrow_schema("joined").empty_table().to_pandas(),
              "correlation": arrow_schema("correlation").empty_table().to_pandas(),
              "verdicts": verdicts_frame([verdict]), "drift": drift_frame([verdict])}  # fmt: skip
    return {n: lake.write_frame(n, DAY, frames[n], run_id=run_id).to_dict() for n in COMMITTED_BY_EVALUATE}


def test_a_commit_holds_only_while_the_window_is_this_runs(tmp_path: Path) -> None:
    lake = _lake(tmp_path)
    ours = _commit(lake, "run-a", "first")
    check_commit(lake, DAY, ours, "run-a")  # nothing happened in between
    lake.write_frame("verdicts", DAY, verdicts_frame([ModelVerdict(
        model="m", verdict="degraded", reason="the other run", window_start=DAY.start.isoformat(),
        window_end=DAY.end.isoformat())]), run_id="run-b")  # fmt: skip
    with pytest.raises(StorageError, match=r"another run of it committed verdicts while this run \(run-a\)"):
        check_commit(lake, DAY, ours, "run-a")
