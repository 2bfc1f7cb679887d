"""Verdicts as Prometheus series: the exposition parses back, labels survive escaping, NaN is left out, an
older window never replaces a newer one, and group paths are what the Pushgateway decodes."""

from __future__ import annotations

import base64
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelwatch import publish
from modelwatch.hooks.pushgateway import group_value
from modelwatch.publish import (
    DEGRADED,
    DRIFT_PSI,
    PREDICTIONS,
    QUALITY_REGRESSED,
    SLOW_SHARE,
    VERDICT_INFO,
    WINDOW_END,
    group_path,
    publish_verdicts,
    should_publish,
    verdict_series,
)
from modelwatch.verdict import DriftEvidence, ModelVerdict

END = datetime(2026, 3, 4, tzinfo=UTC)
DAG = "model_performance_monitoring"


def drift(value: str, psi: float | None) -> DriftEvidence:
    return DriftEvidence(value=value, kind="number", outcome="stable", n_window=500, n_reference=3000, psi=psi,
                         statistic=None, p_value=None, p_adjusted=None, psi_threshold=0.25)  # fmt: skip


def verdict(model: str, v: str = "healthy", **kw: Any) -> ModelVerdict:
    kw.setdefault("n_predictions", 288)
    kw.setdefault("slow_share", 0.0)
    return ModelVerdict(model=model, verdict=v, reason="", window_start="2026-03-03T00:00:00+00:00",  # type: ignore[arg-type]
                        window_end="2026-03-04T00:00:00+00:00", **kw)  # fmt: skip


def labels(*pairs: tuple[str, str], **more: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted([*pairs, *more.items()]))


def parsed(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample, keyed by name and sorted labels; also checks each family is a gauge with help."""
    samples = {}
    for family in text_string_to_metric_families(text):
        assert family.type == "gauge" and family.documentation, family
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in samples, f"{key} twice"
            samples[key] = s.value
    return samples


def test_every_series_of_two_models_parses_back() -> None:
    verdicts = [
        verdict("recommender", "healthy", quality="ok", drift="drifted", slow_share=0.004,
                drift_values=[drift("prediction_time", 0.41), drift("metric_amount", None)]),
        verdict("fraud-detector", "degraded", n_predictions=288, slow_share=0.125, quality="regressed"),
    ]  # fmt: skip
    samples = parsed(verdict_series(verdicts, END, DAG))
    fd = (("dag", DAG), ("model", "fraud-detector"))
    rec = (("dag", DAG), ("model", "recommender"))
    assert samples == {
        (WINDOW_END, (("dag", DAG),)): END.timestamp(),
        (VERDICT_INFO, labels(*fd, drift="not_judged", quality="regressed", verdict="degraded")): 1.0,
        (VERDICT_INFO, labels(*rec, drift="drifted", quality="ok", verdict="healthy")): 1.0,
        (DEGRADED, fd): 1.0,
        (DEGRADED, rec): 0.0,
        (QUALITY_REGRESSED, fd): 1.0,
        (QUALITY_REGRESSED, rec): 0.0,
        (SLOW_SHARE, fd): 0.125,
        (SLOW_SHARE, rec): 0.004,
        (PREDICTIONS, fd): 288.0,
        (PREDICTIONS, rec): 288.0,
        # metric_amount was not compared (psi None): no sample, not a 0
        (DRIFT_PSI, (*rec, ("value", "prediction_time"))): 0.41,
    }


def test_text_is_deterministic_and_each_family_is_declared_once() -> None:
    a, b = verdict("a", drift_values=[drift("y", 0.1), drift("x", 0.2)]), verdict("b")
    text = verdict_series([b, a], END, DAG)
    assert text == verdict_series([a, b], END, DAG)
    assert text.endswith("\n")
    for name in publish.FAMILIES:
        assert text.count(f"# TYPE {name} gauge\n") == 1
        assert text.count(f"# HELP {name} ") == 1
    # samples of a family stay together, models sorted, drift values sorted
    lines = [line for line in text.splitlines() if line.startswith(DRIFT_PSI)]
    assert [line.split('value="')[1].split('"')[0] for line in lines] == ["x", "y"]
    assert text.index('model="a"') < text.index('model="b"')


def test_label_values_are_escaped_and_read_back_unchanged() -> None:
    nasty = 'fraud "v2"\\canary\nline'
    text = verdict_series([verdict(nasty, drift_values=[drift('param_"x"', 0.3)])], END, 'dag\\"odd"')
    assert '\\"v2\\"\\\\canary\\nline' in text
    assert "\nline" not in text  # a raw newline inside a label would end the sample line
    models = {dict(k[1]).get("model") for k in parsed(text)} - {None}
    assert models == {nasty}
    assert {dict(k[1])["dag"] for k in parsed(text)} == {'dag\\"odd"'}
    assert any(dict(k[1]).get("value") == 'param_"x"' for k in parsed(text))


def test_nan_and_missing_numbers_are_left_out_not_zero() -> None:
    text = verdict_series(
        [verdict("m", slow_share=math.nan, drift_values=[drift("a", math.nan), drift("b", None)])], END, DAG
    )
    names = {name for name, _ in parsed(text)}
    assert SLOW_SHARE not in names and DRIFT_PSI not in names
    assert f"# TYPE {DRIFT_PSI}" not in text and "NaN" not in text
    assert {VERDICT_INFO, DEGRADED, PREDICTIONS, QUALITY_REGRESSED, WINDOW_END} <= names


def test_no_predictions_means_no_slow_share() -> None:
    samples = parsed(verdict_series([verdict("m", "no_data", n_predictions=0)], END, DAG))
    assert samples[(PREDICTIONS, (("dag", DAG), ("model", "m")))] == 0.0
    assert not any(name == SLOW_SHARE for name, _ in samples)


def test_an_infinite_psi_is_written_as_prometheus_infinity() -> None:
    text = verdict_series([verdict("m", drift_values=[drift("a", math.inf)])], END, DAG)
    assert f'{DRIFT_PSI}{{dag="{DAG}",model="m",value="a"}} +Inf' in text
    assert parsed(text)[(DRIFT_PSI, (("dag", DAG), ("model", "m"), ("value", "a")))] == math.inf


def test_no_verdicts_still_publish_the_window() -> None:
    assert parsed(verdict_series([], END, DAG)) == {(WINDOW_END, (("dag", DAG),)): END.timestamp()}


def test_window_end_is_utc_whatever_the_zone() -> None:
    paris = END.astimezone(timezone(timedelta(hours=1)))
    naive = END.replace(tzinfo=None)
    assert verdict_series([], paris, DAG) == verdict_series([], naive, DAG) == verdict_series([], END, DAG)


# -- the ordering rule -----------------------------------------------------------------------------------


def test_ordering_rule() -> None:
    day = END.timestamp()
    assert should_publish(None, END)  # nothing published yet
    assert should_publish(math.nan, END)
    assert should_publish(day - 86400, END)  # a newer window replaces an older one
    assert should_publish(day, END)  # re-running the newest window republishes it
    assert not should_publish(day + 86400, END)  # a backfill of an older day leaves the newer one
    assert not should_publish(day + 1, END)


class FakeGateway:
    """Records what publish_verdicts asks of a gateway (the real one is in tests/integration)."""

    def __init__(self, current: float | None) -> None:
        self.current = current
        self.pushed: list[tuple[str, dict[str, str], str]] = []

    def group_url(self, job: str, grouping: Any) -> str:
        return "http://gw" + group_path(job, grouping)

    def published_window_end(self, job: str, grouping: Any) -> float | None:
        return self.current

    def push(self, job: str, grouping: Any, text: str) -> None:
        self.pushed.append((job, dict(grouping), text))


def test_publish_verdicts_pushes_a_newer_window_and_says_what_it_did() -> None:
    gw = FakeGateway(current=(END - timedelta(days=1)).timestamp())
    done = publish_verdicts(gw, [verdict("b"), verdict("a")], END, DAG)
    assert gw.pushed == [("modelwatch", {"dag": DAG}, verdict_series([verdict("a"), verdict("b")], END, DAG))]
    assert done["action"] == "pushed" and done["series"] == 1 + 2 * 5
    assert done["group"] == f"http://gw/metrics/job/modelwatch/dag/{DAG}"
    assert done["models"] == ["a", "b"]
    assert (done["window_end"], done["published_window_end"]) == (
        "2026-03-04T00:00:00+00:00", "2026-03-03T00:00:00+00:00"
    )


def test_publish_verdicts_skips_an_older_window() -> None:
    gw = FakeGateway(current=(END + timedelta(days=2)).timestamp())
    done = publish_verdicts(gw, [verdict("a")], END, DAG, job="other")
    assert gw.pushed == []
    assert (done["action"], done["series"], done["job"]) == ("skipped", 0, "other")
    assert "2026-03-06T00:00:00+00:00" in done["reason"] and "newer" in done["reason"]


# -- grouping paths --------------------------------------------------------------------------------------


def test_group_path_escapes_values() -> None:
    assert group_path("modelwatch", {"dag": DAG}) == f"/metrics/job/modelwatch/dag/{DAG}"
    assert group_path("modelwatch", {"dag": "a b%c"}) == "/metrics/job/modelwatch/dag/a%20b%25c"
    slashed = group_path("modelwatch", {"dag": "team/daily"})
    assert slashed.startswith("/metrics/job/modelwatch/dag@base64/")
    assert base64.urlsafe_b64decode(slashed.rsplit("/", 1)[1]) == b"team/daily"
    assert group_path("a/b", {}) == "/metrics/job@base64/" + base64.urlsafe_b64encode(b"a/b").decode()
    assert group_path("j", {"dag": ""}) == "/metrics/job/j/dag@base64/="
    # labels in a stable order
    assert group_path("j", {"z": "1", "a": "2"}) == "/metrics/job/j/a/2/z/1"


@pytest.mark.parametrize("grouping", [{"job": "x"}, {"1dag": "x"}, {"da-g": "x"}, {"__name__": "x"}])
def test_group_path_refuses_labels_prometheus_would_refuse(grouping: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="grouping label"):
        group_path("modelwatch", grouping)
    with pytest.raises(ValueError, match="job"):
        group_path("", {})


def test_group_value_reads_the_pushgateway_answer() -> None:
    answer = {"status": "success", "data": [
        {"labels": {"dag": "other", "job": "modelwatch"},
         WINDOW_END: {"metrics": [{"labels": {}, "value": "1.5e+09"}]}},
        {"labels": {"dag": DAG, "job": "modelwatch"}, "push_time_seconds": {"metrics": [{"value": "1"}]},
         WINDOW_END: {"type": "GAUGE", "metrics": [{"labels": {"dag": DAG}, "value": "1.7725824e+09"}]}},
        {"labels": {"dag": "empty", "job": "modelwatch"}, "push_time_seconds": {"metrics": [{"value": "1"}]}},
    ]}  # fmt: skip
    assert group_value(answer, "modelwatch", {"dag": DAG}, WINDOW_END) == 1772582400.0
    assert group_value(answer, "modelwatch", {"dag": "empty"}, WINDOW_END) is None
    assert group_value(answer, "modelwatch", {"dag": "absent"}, WINDOW_END) is None
    assert group_value(answer, "other-job", {"dag": DAG}, WINDOW_END) is None
    with pytest.raises(ValueError, match="data"):
        group_value({"status": "error"}, "modelwatch", {"dag": DAG}, WINDOW_END)
