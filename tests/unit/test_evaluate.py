"""Verdicts per model from hand-built windows: one prediction a minute on instance "a", resource samples at
the same minutes, so which predictions are slow and which coincide with saturation is known by construction."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest
from config_helpers import small_config

from modelwatch.config import ModelwatchConfig
from modelwatch.correlate import correlate
from modelwatch.evaluate import evaluate
from modelwatch.storage import frame_to_parquet
from modelwatch.verdict import ModelVerdict, verdicts_frame
from modelwatch.window import Window

T0 = pd.Timestamp("2026-03-03T10:00:00Z")
WINDOW = Window(
    pd.Timestamp("2026-03-03T00:00:00Z").to_pydatetime(), pd.Timestamp("2026-03-04T00:00:00Z").to_pydatetime()
)
SLOW, FAST = 2.5, 0.2
HIGH, LOW = 0.97, 0.3


def at(minute: int) -> pd.Timestamp:
    return T0 + pd.Timedelta(minutes=minute)


def model_frames(
    n: int,
    slow: Callable[[int], bool],
    cpu: Callable[[int], float] | None = lambda k: LOW,
    memory: Callable[[int], float] | None = lambda k: 0.4,
    *,
    model: str = "m",
    instance: str = "a",
    resource_instance: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``n`` predictions (minute ``k`` slow when ``slow(k)``), cpu/memory sampled at the same minutes."""
    pred = pd.DataFrame({
        "timestamp": [at(k) for k in range(n)], "model": model, "model_version": "3", "instance": instance,
        "prediction_time": [SLOW if slow(k) else FAST for k in range(n)], "accuracy": 0.9, "loss": 0.1,
        "run_id": [f"{model}-{k}" for k in range(n)], "experiment": "e",
    })  # fmt: skip
    rows = []
    where = instance if resource_instance is None else resource_instance
    for name, fn in (("cpu", cpu), ("memory", memory), ("request_rate", lambda k: 12.0)):
        if fn is not None:
            rows += [{"timestamp": at(k), "query": name, "instance": where, "labels": "", "value": fn(k)}
                     for k in range(n)]  # fmt: skip
    res = pd.DataFrame(rows, columns=["timestamp", "query", "instance", "labels", "value"])
    return pred, res


def run(
    pred: pd.DataFrame, res: pd.DataFrame, cfg: ModelwatchConfig | None = None
) -> dict[str, ModelVerdict]:
    cfg = cfg or small_config()
    joined, corr = correlate(pred, res, cfg)
    verdicts = evaluate(joined, corr, res, cfg, WINDOW)
    assert len({v.model for v in verdicts}) == len(verdicts)
    return {v.model: v for v in verdicts}


def minutes_10_to_19(k: int) -> bool:
    return 10 <= k < 20


# -- healthy -----------------------------------------------------------------------------------------------


def test_healthy_with_one_slow_prediction_in_a_hundred() -> None:
    v = run(*model_frames(100, lambda k: k == 50))["m"]
    assert v.verdict == "healthy"
    assert (v.n_predictions, v.n_slow) == (100, 1)
    assert v.slow_share == pytest.approx(0.01)
    assert v.model_versions == ["3"]
    assert "1 of 100" in v.reason
    assert v.incident_start is None and v.saturated_resources == []


@pytest.mark.parametrize(
    ("n", "n_slow", "healthy"),
    [
        (200, 2, True),    # 2 < min_slow_count 5
        (20, 3, True),     # 15 %, but 3 < 5: a handful of predictions does not make a model slow
        (300, 4, True),    # 1.3 %, but 4 < 5
        (1000, 9, True),   # 9 >= 5, but 0.9 % < min_slow_share 1 % (within a 99 % SLO's budget)
        (500, 5, False),   # 5 and 1 %: both reached
        (100, 20, False),
    ],
)  # fmt: skip
def test_slow_enough_needs_count_and_share(n: int, n_slow: int, healthy: bool) -> None:
    v = run(*model_frames(n, lambda k: k < n_slow))["m"]
    assert v.n_slow == n_slow
    assert (v.verdict == "healthy") is healthy
    if healthy:
        assert ("min_slow_count" if n_slow < 5 else "min_slow_share") in v.reason
    else:
        assert v.verdict == "slow_unexplained"  # resources are normal throughout
        assert "cpu: never at or above 0.9" in v.reason


def test_saturation_without_slow_predictions_is_healthy() -> None:
    v = run(*model_frames(40, lambda k: False, cpu=lambda k: HIGH if minutes_10_to_19(k) else LOW))["m"]
    assert v.verdict == "healthy"


# -- degraded ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("resource", ["cpu", "memory"])
def test_degraded_names_the_saturated_resource(resource: str) -> None:
    saturated = {"cpu": lambda k: LOW, "memory": lambda k: 0.4}
    saturated[resource] = lambda k: HIGH if minutes_10_to_19(k) else LOW
    v = run(*model_frames(40, minutes_10_to_19, cpu=saturated["cpu"], memory=saturated["memory"]))["m"]
    assert v.verdict == "degraded"
    assert [e.resource for e in v.saturated_resources] == [resource]
    e = v.saturated_resources[0]
    assert (e.n_slow_saturated, e.slow_saturated_share, e.normal_saturated_share) == (10, 1.0, 0.0)
    assert e.threshold == 0.9 and e.unit == "ratio"
    assert e.slow_value_median == HIGH and e.slow_value_max == HIGH
    assert resource in v.reason
    assert (v.n_slow, v.slow_instances) == (10, ["a"])
    assert pd.Timestamp(v.incident_start) == at(10)
    assert pd.Timestamp(v.incident_end) == at(19)


def test_degraded_lists_every_explaining_resource_most_coincident_first() -> None:
    v = run(*model_frames(
        40, minutes_10_to_19,
        cpu=lambda k: HIGH if 10 <= k < 15 else LOW,     # 5 of 10 slow: exactly min_coincidence_share
        memory=lambda k: HIGH if minutes_10_to_19(k) else LOW,  # 10 of 10
    ))["m"]  # fmt: skip
    assert v.verdict == "degraded"
    assert [e.resource for e in v.saturated_resources] == ["memory", "cpu"]


def test_two_saturated_slow_predictions_are_not_significant() -> None:
    # cpu saturated at 2 of the 10 slow predictions and at no normal one: relative risk 4.75, but Fisher's
    # exact p = C(10,2) / C(40,2) = 0.058: chance can do that. memory never reached its threshold, so cpu is
    # the only test and Holm leaves its p as it is.
    v = run(*model_frames(40, minutes_10_to_19, cpu=lambda k: HIGH if 10 <= k < 12 else LOW))["m"]
    assert v.verdict == "slow_unexplained"
    (cpu,) = [e for e in v.rejected_resources if e.resource == "cpu"]
    assert cpu.outcome == "not_significant"
    assert cpu.p_value == pytest.approx(45 / 780)
    assert cpu.p_adjusted == cpu.p_value
    assert cpu.relative_risk == pytest.approx(1 / (8 / 38))
    assert "cpu: not significant" in v.reason and "relative risk 4.75" in v.reason


def test_saturation_at_part_of_the_slow_predictions_explains_and_says_how_much() -> None:
    # cpu saturated at 4 of the 10 slow predictions, and every prediction at saturation was slow
    v = run(*model_frames(40, minutes_10_to_19, cpu=lambda k: HIGH if 10 <= k < 14 else LOW))["m"]
    assert v.verdict == "degraded"
    (cpu,) = v.saturated_resources
    assert (cpu.n_slow_saturated, cpu.n_normal_saturated, cpu.n_slow_unsaturated, cpu.n_normal_unsaturated) == (
        4, 0, 6, 30,
    )  # fmt: skip
    assert "slow at 100% of 4 predictions at cpu >= 0.9 vs 17% of 36 below" in v.reason


def test_incident_covers_the_slow_saturated_predictions() -> None:
    # slow at 10-19 and again at 30 (cpu normal then): the incident is the saturated part
    v = run(*model_frames(40, lambda k: minutes_10_to_19(k) or k == 30,
                          cpu=lambda k: HIGH if minutes_10_to_19(k) else LOW))["m"]  # fmt: skip
    assert v.verdict == "degraded"
    assert (pd.Timestamp(v.incident_start), pd.Timestamp(v.incident_end)) == (at(10), at(19))


# -- effect size -------------------------------------------------------------------------------------------


def _every_other_minute(k: int) -> float:
    return HIGH if k % 2 == 0 else LOW


def test_saturation_as_common_at_normal_predictions_does_not_explain() -> None:
    # cpu is saturated every other minute all along: at 5 of the 10 slow predictions but also at 15 of the
    # 30 normal ones. Slow at 25 % of saturated predictions and at 25 % of the others: relative risk 1.
    v = run(*model_frames(40, minutes_10_to_19, cpu=_every_other_minute))["m"]
    assert v.verdict == "slow_unexplained"
    assert v.saturated_resources == []
    (cpu,) = [e for e in v.rejected_resources if e.resource == "cpu"]
    assert (cpu.outcome, cpu.relative_risk) == ("not_significant", 1.0)


def _mild(k: int) -> bool:
    # slow at 30 % of the even minutes (cpu saturated) and at 20 % of the odd ones: relative risk 1.5
    return k % 20 in ((0, 2, 4) if k % 2 == 0 else (1, 3))


def test_significant_but_small_effect_does_not_explain() -> None:
    pred, res = model_frames(4000, _mild, cpu=_every_other_minute)
    v = run(pred, res)["m"]
    assert v.verdict == "slow_unexplained"
    (cpu,) = [e for e in v.rejected_resources if e.resource == "cpu"]
    assert cpu.outcome == "small_effect"
    assert cpu.relative_risk == pytest.approx(1.5)
    assert cpu.p_adjusted < 1e-6
    assert "relative risk below min_relative_risk 2" in v.reason


def test_per_model_min_relative_risk_override() -> None:
    pred, res = model_frames(4000, _mild, cpu=_every_other_minute)
    cfg = small_config(models={"m": {"min_relative_risk": 1.4}})
    v = run(pred, res, cfg)["m"]
    assert v.verdict == "degraded"
    assert [e.resource for e in v.saturated_resources] == ["cpu"]


def test_slow_predictions_in_a_scrape_gap_lower_the_coverage() -> None:
    # slow at minutes 10-19; cpu saturated at 10-19 but not sampled from 13 to 29: the predictions at 10-12
    # have a sample, 13 too (60 s after the one at 12: within the tolerance), 14-19 none. 4 of 10 slow
    # predictions sampled: 40 % < min_coverage 50 %
    pred, res = model_frames(40, minutes_10_to_19, cpu=lambda k: HIGH if minutes_10_to_19(k) else LOW)
    gap = (res["query"] == "cpu") & res["timestamp"].between(at(13), at(29))
    v = run(pred, res[~gap])["m"]
    assert v.verdict == "slow_unexplained"
    (cpu,) = [e for e in v.rejected_resources if e.resource == "cpu"]
    assert (cpu.outcome, cpu.coverage, cpu.n_slow_unsampled) == ("low_coverage", 0.4, 6)
    assert "only 4 of 10 slow predictions had a real sample" in v.reason
    # the same with min_coverage 0.4 is degraded, and the reason says how many were not sampled
    v = run(pred, res[~gap], small_config(min_coverage=0.4))["m"]
    assert v.verdict == "degraded"
    assert "coverage 4/10 slow" in v.reason


# -- slow_unexplained --------------------------------------------------------------------------------------


def test_slow_unexplained() -> None:
    v = run(*model_frames(40, minutes_10_to_19))["m"]
    assert v.verdict == "slow_unexplained"
    assert (v.n_slow, v.slow_instances, v.saturated_resources) == (10, ["a"], [])
    assert (pd.Timestamp(v.incident_start), pd.Timestamp(v.incident_end)) == (at(10), at(19))


def test_slow_threshold_per_model() -> None:
    cfg = small_config(models={"recommender": {"slow_prediction_seconds": 3.0}})
    p1, r1 = model_frames(40, minutes_10_to_19, model="fraud")
    p2, _ = model_frames(40, minutes_10_to_19, model="recommender")  # the same 2.5 s predictions
    verdicts = run(pd.concat([p1, p2], ignore_index=True), r1, cfg)
    assert (verdicts["fraud"].verdict, verdicts["fraud"].slow_threshold_seconds) == ("slow_unexplained", 1.0)
    assert (verdicts["recommender"].verdict, verdicts["recommender"].slow_threshold_seconds) == (
        "healthy",
        3.0,
    )
    assert verdicts["recommender"].n_slow == 0


# -- no_data -------------------------------------------------------------------------------------------------


def test_expected_model_without_predictions_is_no_data() -> None:
    pred, res = model_frames(40, lambda k: False)
    verdicts = run(pred, res, small_config(expected_models=["m", "ghost"]))
    assert list(verdicts) == ["ghost", "m"]
    assert verdicts["ghost"].verdict == "no_data"
    assert verdicts["ghost"].n_predictions == 0
    assert "no predictions" in verdicts["ghost"].reason
    assert verdicts["m"].verdict == "healthy"


def test_empty_window_every_expected_model_is_no_data() -> None:
    pred, res = model_frames(0, lambda k: False)
    pred = pred.astype(
        {"model": "str", "instance": "str", "model_version": "str", "prediction_time": "float64"}
    )
    verdicts = run(pred, res, small_config(expected_models=["fraud-detector", "recommender"]))
    assert {m: v.verdict for m, v in verdicts.items()} == {
        "fraud-detector": "no_data",
        "recommender": "no_data",
    }


@pytest.mark.parametrize("slow", [False, True])
def test_no_resource_samples_for_the_models_instances_is_no_data(slow: bool) -> None:
    # cpu and memory only for instance "b", the model runs on "a": never healthy (nor slow_unexplained)
    pred, res = model_frames(40, lambda k: slow and minutes_10_to_19(k), resource_instance="b")
    v = run(pred, res)["m"]
    assert v.verdict == "no_data"
    assert v.resources_without_data == ["cpu", "memory"]
    assert "a" in v.reason and "40 predictions" in v.reason


def test_context_only_samples_are_not_evidence() -> None:
    # request_rate (no threshold) is there for "a", but neither cpu nor memory
    pred, res = model_frames(40, lambda k: False, cpu=None, memory=None)
    assert set(res["query"]) == {"request_rate"}
    assert run(pred, res)["m"].verdict == "no_data"


def test_some_resources_missing_is_still_judged() -> None:
    pred, res = model_frames(
        40, minutes_10_to_19, cpu=lambda k: HIGH if minutes_10_to_19(k) else LOW, memory=None
    )
    v = run(pred, res)["m"]
    assert v.verdict == "degraded"
    assert v.resources_without_data == ["memory"]


def test_cluster_wide_series_counts_for_every_instance() -> None:
    pred, res = model_frames(40, minutes_10_to_19, cpu=lambda k: HIGH if minutes_10_to_19(k) else LOW,
                             resource_instance="")  # fmt: skip
    v = run(pred, res)["m"]
    assert v.verdict == "degraded"
    assert v.resources_without_data == []


# -- what is stored --------------------------------------------------------------------------------------------


def _strict_json(obj: Any) -> Any:
    def reject(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(json.dumps(obj), parse_constant=reject)


def test_to_dict_is_strict_json() -> None:
    # cpu sampled only at the slow predictions (minutes 10-19; no prediction at 9 and 20, so no normal one is
    # within the 60 s tolerance): saturated at every sampled prediction, so there is nothing to compare with;
    # P(slow | below), the relative risk and the test are undefined (NaN) and the Spearman too (all slow
    # predictions take the same time)
    pred, res = model_frames(40, minutes_10_to_19, cpu=lambda k: HIGH, memory=None)
    pred = pred[~pred["timestamp"].isin([at(9), at(20)])]
    res = res[(res["query"] != "cpu") | res["timestamp"].between(at(10), at(19))]
    verdicts = run(pred, res, small_config(expected_models=["ghost"]))
    v = verdicts["m"]
    assert v.verdict == "slow_unexplained"
    for verdict in verdicts.values():
        d = _strict_json(verdict.to_dict())
        assert d["model"] == verdict.model
    d = _strict_json(v.to_dict())
    (cpu,) = [e for e in d["rejected_resources"] if e["resource"] == "cpu"]
    assert cpu["outcome"] == "no_contrast"
    assert cpu["slow_share_unsaturated"] is None and cpu["relative_risk"] is None and cpu["p_value"] is None
    assert cpu["spearman"] is None
    assert cpu["lift"] in ("inf", None)  # never a bare Infinity
    assert "nothing to compare with" in v.reason


def test_verdicts_survive_the_lake() -> None:
    """The evaluate task reads joined and correlation back from Parquet: same verdicts as in memory."""
    pred, res = model_frames(40, minutes_10_to_19, cpu=lambda k: HIGH if minutes_10_to_19(k) else LOW)
    cfg = small_config(expected_models=["ghost"])
    joined, corr = correlate(pred, res, cfg)
    in_memory = [v.to_dict() for v in evaluate(joined, corr, res, cfg, WINDOW)]

    def through(frame: pd.DataFrame) -> pd.DataFrame:
        return pd.read_parquet(io.BytesIO(frame_to_parquet(frame)))

    read_back = [v.to_dict() for v in evaluate(through(joined), through(corr), through(res), cfg, WINDOW)]
    assert read_back == in_memory
    frame = verdicts_frame(evaluate(joined, corr, res, cfg, WINDOW))
    assert list(frame["verdict"]) == ["no_data", "degraded"]
    assert frame.loc[1, "saturated_resources"] == "cpu"
    through(frame)  # the verdicts dataset serialises


# -- partial evidence (Prometheus answers with warnings) -------------------------------------------------------

WARNED = "remote read of store 'eu-archive' failed: context deadline exceeded"


def warned(*queries: str, text: str = WARNED) -> list[dict[str, Any]]:
    """The resources manifest's ``prometheus_warnings`` when these queries' answers carried ``text``."""
    return [{"query": q, "window_start": WINDOW.start.isoformat(), "window_end": WINDOW.end.isoformat(),
             "answers": 1, "warnings": [text], "infos": []} for q in queries]  # fmt: skip


def run_partial(pred: pd.DataFrame, res: pd.DataFrame, partial: list[dict[str, Any]],
                cfg: ModelwatchConfig | None = None) -> dict[str, ModelVerdict]:  # fmt: skip
    cfg = cfg or small_config()
    joined, corr = correlate(pred, res, cfg)
    return {v.model: v for v in evaluate(joined, corr, res, cfg, WINDOW, partial=partial)}


def test_a_healthy_verdict_on_partial_evidence_says_so() -> None:
    v = run_partial(*model_frames(100, lambda k: k == 50), warned("cpu"))["m"]
    assert v.verdict == "healthy"  # judged on what Prometheus returned, and says what it did not
    assert v.evidence_partial == [f"cpu: {WARNED}"]
    assert v.reason.endswith(f" (evidence partial: query cpu: {WARNED})")


def test_a_degraded_verdict_on_partial_evidence_stays_degraded() -> None:
    pred, res = model_frames(40, minutes_10_to_19, cpu=lambda k: HIGH if minutes_10_to_19(k) else LOW)
    v = run_partial(pred, res, warned("cpu", "memory"))["m"]
    assert v.verdict == "degraded" and [e.resource for e in v.saturated_resources] == ["cpu"]
    assert v.evidence_partial == [f"cpu: {WARNED}", f"memory: {WARNED}"]
    assert f"(evidence partial: query cpu: {WARNED}; query memory: {WARNED})" in v.reason


def test_no_resource_samples_with_warnings_is_no_data_naming_them() -> None:
    pred, res = model_frames(40, lambda k: False, resource_instance="b")
    v = run_partial(pred, res, warned("cpu"))["m"]
    assert v.verdict == "no_data" and "evidence partial: query cpu" in v.reason


def test_warnings_of_a_query_without_threshold_do_not_mark_the_verdict() -> None:
    v = run_partial(*model_frames(100, lambda k: False), warned("request_rate"))["m"]
    assert v.evidence_partial == [] and "partial" not in v.reason


def test_a_model_without_predictions_is_not_marked_partial() -> None:
    pred, res = model_frames(10, lambda k: False)
    v = run_partial(pred, res, warned("cpu"), small_config(expected_models=["ghost"]))["ghost"]
    assert v.verdict == "no_data" and v.evidence_partial == [] and v.reason == "no predictions in the window"


def test_partial_reason_quotes_the_first_warning_of_each_query_cut_and_counts_the_others() -> None:
    from modelwatch.evaluate import PARTIAL_REASON_CHARS, partial_evidence, partial_reason

    notes = [*warned("cpu", text="a" * 1000), *warned("cpu", text="second"), *warned("load", text="third")]
    entries = partial_evidence(notes, ["load", "cpu", "memory"])
    assert [e.split(": ")[0] for e in entries] == ["load", "cpu", "cpu"]
    reason = partial_reason(entries)
    assert reason.startswith(" (evidence partial: query load: third; query cpu: aaa")
    assert reason.endswith("... (+1 more))") and len(reason) < PARTIAL_REASON_CHARS + 80
    assert partial_reason([]) == ""


def test_partial_evidence_survives_the_verdicts_dataset_and_document() -> None:
    from modelwatch.schema import VERDICT_COLUMNS
    from modelwatch.verdict import verdicts_from_frame

    v = run_partial(*model_frames(100, lambda k: k == 50), warned("cpu", text="a, b; c"))["m"]
    frame = pd.read_parquet(io.BytesIO(frame_to_parquet(verdicts_frame([v]))))
    assert "evidence_partial" in VERDICT_COLUMNS and frame.loc[0, "evidence_partial"] == "cpu: a, b; c"
    (back,) = verdicts_from_frame(frame)
    assert back.evidence_partial == ["cpu: a, b; c"] and back.to_dict() == v.to_dict()
    assert _strict_json(v.to_dict())["evidence_partial"] == ["cpu: a, b; c"]


# -- a per-model query (a serving preset's model metric) --------------------------------------------------


def _scoped_config() -> ModelwatchConfig:
    """small_config plus ``queue``: a per-model saturation query read for model ``a-model`` only."""
    from config_helpers import small_raw

    raw = small_raw()
    raw["prometheus"]["queries"].append(
        {"name": "queue", "promql": "queue", "saturation": 5, "unit": "requests", "model": "a-model"}
    )
    return ModelwatchConfig.model_validate(raw)


def test_a_per_model_query_judges_its_own_model_only() -> None:
    """Two models slow in the same minutes on one instance whose per-model queue (``a-model``'s) is full
    then: ``a-model`` is degraded by the queue; ``b-model`` is not judged on another model's queue (no value,
    not listed missing, no correlation row) and stays slow_unexplained."""
    cfg = _scoped_config()
    pa, ra = model_frames(60, minutes_10_to_19, model="a-model")
    pb, _ = model_frames(60, minutes_10_to_19, model="b-model")
    queue = pd.DataFrame([{"timestamp": at(k), "query": "queue", "instance": "a", "labels": "",
                           "value": 9.0 if 10 <= k <= 19 else 1.0} for k in range(60)])  # fmt: skip
    pred, res = pd.concat([pa, pb], ignore_index=True), pd.concat([ra, queue], ignore_index=True)
    joined, corr = correlate(pred, res, cfg)
    verdicts = {v.model: v for v in evaluate(joined, corr, res, cfg, WINDOW)}
    assert verdicts["a-model"].verdict == "degraded"
    assert [e.resource for e in verdicts["a-model"].saturated_resources] == ["queue"]
    assert verdicts["b-model"].verdict == "slow_unexplained"
    assert "queue" not in verdicts["b-model"].reason
    b = joined[joined["model"] == "b-model"]
    assert b["res_queue"].isna().all() and not b["sat_queue"].any()
    assert not b["missing_resources"].str.contains("queue").any()
    assert set(corr.loc[corr["resource"] == "queue", "model"]) == {"a-model"}
    assert "queue" not in verdicts["b-model"].resources_without_data
