"""Drift: a value's distribution in the window against the reference days, by the population stability
index (how large) and a two-sample test (how real), both needed; and what it says with too few values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import get_args

import numpy as np
import pandas as pd
import pytest
from config_helpers import small_raw

from modelwatch.alerting import build_alerts, judged_models, resolutions
from modelwatch.config import AlertingConfig, DriftColumn, DriftConfig, DriftValue, ModelwatchConfig
from modelwatch.drift import compare_value, judge_drift
from modelwatch.schema import PREDICTION_COLUMNS
from modelwatch.stats import psi
from modelwatch.verdict import ModelVerdict, drift_frame, verdicts_frame, verdicts_from_frame

CFG = DriftConfig()
DAYS = ["2026-03-02"]


def times(n: int, median: float = 0.2, *, seed: int = 0, versions: tuple[str, ...] = ("3",)) -> pd.DataFrame:
    """``n`` predictions whose ``prediction_time`` is log-normal around ``median`` seconds."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"model": "m", "prediction_time": median * np.exp(rng.normal(0, 0.3, n)),
                         "model_version": rng.choice(versions, n), "instance": "model-a"})  # fmt: skip


def test_psi_of_identical_shares_is_zero_and_grows_with_the_shift() -> None:
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0
    assert psi([0.6, 0.4], [0.5, 0.5]) == pytest.approx(0.1 * np.log(1.2) + 0.1 * np.log(1.25))
    assert psi([0.0, 1.0], [0.5, 0.5]) > 3  # an empty bin is floored, not infinite


def test_the_same_distribution_is_stable() -> None:
    drift, reason, (d,) = judge_drift(times(500, seed=1), times(3000, seed=2), CFG, DAYS)
    assert drift == "stable" and d.outcome == "stable"
    assert d.psi is not None and d.psi < 0.05 and d.test == "two-sample Kolmogorov-Smirnov"
    assert "prediction_time: PSI" in reason and "(Holm over 1; 500 vs 3000 values over 1 reference day(s))" in reason


def test_a_slower_distribution_drifts_and_says_by_how_much() -> None:
    drift, reason, (d,) = judge_drift(times(500, median=0.5, seed=1), times(3000, seed=2), CFG, DAYS)
    assert drift == "drifted" and d.psi is not None and d.psi > 1 and d.p_adjusted is not None and d.p_adjusted < 1e-10
    assert reason.startswith("prediction_time: PSI")


def test_a_large_index_from_few_values_is_not_drift_without_the_test() -> None:
    # a psi threshold the shift reaches, but a significance the test cannot reach with these counts
    cfg = DriftConfig(values={"prediction_time": DriftValue(psi=0.05, significance=1e-12)}, min_count=10)
    drift, _, (d,) = judge_drift(times(12, median=0.26, seed=3), times(12, seed=4), cfg, DAYS)
    assert d.psi is not None and d.psi >= 0.05 and drift == "stable"


def test_a_significant_but_small_shift_is_not_drift() -> None:
    drift, _, (d,) = judge_drift(times(20000, median=0.206, seed=5), times(20000, seed=6), CFG, DAYS)
    assert d.p_adjusted is not None and d.p_adjusted < 0.01 and d.psi is not None and d.psi < 0.25
    assert drift == "stable"


def test_too_few_values_are_not_compared() -> None:
    drift, reason, (d,) = judge_drift(times(50, seed=1), times(3000, seed=2), CFG, DAYS)
    assert drift == "no_reference" and d.outcome == "too_few"
    assert "50 values in the window and 3000 in the reference, fewer than min_count 100" in reason
    assert judge_drift(times(500), times(0), CFG, [])[0] == "no_reference"


def test_a_category_is_compared_by_chi_square() -> None:
    cfg = DriftConfig(values={"model_version": DriftValue(kind="category")})
    rollout = judge_drift(times(500, seed=1, versions=("3", "4")), times(3000, seed=2), cfg, DAYS)
    assert rollout[0] == "drifted" and rollout[2][0].test == "chi-square test of homogeneity"
    assert judge_drift(times(500, seed=1), times(3000, seed=2), cfg, DAYS)[0] == "stable"


def test_several_values_are_holm_adjusted() -> None:
    cfg = DriftConfig(values={"prediction_time": DriftValue(), "instance": DriftValue(kind="category")})
    _, _, values = judge_drift(times(500, seed=1), times(3000, seed=2), cfg, DAYS)
    assert {d.value for d in values} == {"prediction_time", "instance"}
    assert all(d.p_adjusted is None or d.p_value is None or d.p_adjusted >= d.p_value for d in values)


def test_drift_values_are_columns_of_the_predictions_dataset() -> None:
    assert set(get_args(DriftColumn)) <= set(PREDICTION_COLUMNS)
    with pytest.raises(ValueError, match=r"drift.values: 'feature_x' is not a column .* mlflow.logged"):
        ModelwatchConfig.model_validate(small_raw() | dict(drift={"values": {"feature_x": {}}}))
    logged = small_raw() | dict(drift={"values": {"metric_amount": {}, "param_region": {"kind": "category"}}})
    logged["mlflow"]["logged"] = {"metrics": ["amount"], "params": ["region"]}
    assert list(ModelwatchConfig.model_validate(logged).drift.values) == ["metric_amount", "param_region"]


def test_a_logged_param_that_reads_as_a_number_is_compared_as_one() -> None:
    rng = np.random.default_rng(3)
    window = pd.Series([f"{x:.3f}" for x in rng.normal(5, 1, 400)] + ["n/a"] * 20, dtype=object)
    reference = pd.Series([f"{x:.3f}" for x in rng.normal(3, 1, 2000)], dtype=object)
    d = compare_value("param_threshold", DriftValue(), window, reference, bins=10, min_count=100)
    assert (d.n_window, d.n_reference) == (400, 2000)  # the 20 values that are not numbers are left out
    assert d.psi is not None and d.psi > 1 and d.p_value is not None and d.p_value < 1e-6


def test_the_drift_dataset_has_a_row_per_model_and_value_and_the_verdict_round_trips() -> None:
    drift, reason, values = judge_drift(times(500, median=0.5, seed=1), times(3000, seed=2), CFG, DAYS)
    v = ModelVerdict(model="m", verdict="healthy", reason="fine", window_start="a", window_end="b",
                     drift=drift, drift_reason=reason, drift_values=values)  # fmt: skip
    rows = drift_frame([v, ModelVerdict(model="quiet", verdict="no_data", reason="-", window_start="a",
                                        window_end="b")])  # fmt: skip
    assert rows[["model", "value", "outcome"]].to_dict("records") == [
        {"model": "m", "value": "prediction_time", "outcome": "drifted"}]  # fmt: skip
    (back,) = verdicts_from_frame(verdicts_frame([v]))
    assert back == v


def test_drift_pages_only_when_asked_and_is_resolved_by_a_stable_window() -> None:
    _, reason, values = judge_drift(times(500, median=0.5, seed=1), times(3000, seed=2), CFG, DAYS)
    start = datetime(2026, 3, 3, tzinfo=UTC)
    v = ModelVerdict(model="m", verdict="healthy", reason="fine", window_start=start.isoformat(),
                     window_end=(start + timedelta(days=1)).isoformat(), drift="drifted", drift_reason=reason,
                     drift_values=values, reference_days=DAYS)  # fmt: skip
    assert build_alerts([v], AlertingConfig(), run_url="u", partition_url="p") == []  # off by default
    on = AlertingConfig(drift={"page": True, "alertname": "ModelInputsDrifted", "severity": "info"})
    (alert,) = build_alerts([v], on, run_url="u", partition_url="p")
    assert alert["labels"]["alertname"] == "ModelInputsDrifted" and alert["annotations"]["verdict"] == "drifted"
    assert alert["annotations"]["description"].startswith("drifted: prediction_time: PSI")
    held = [{**alert, "endsAt": (start + timedelta(days=2)).isoformat()}]
    later = start + timedelta(days=1, minutes=5)
    for state, n in (("stable", 1), ("no_reference", 0)):
        judged = judged_models([ModelVerdict(model="m", verdict="healthy", reason="", window_start="",
                                             window_end="", drift=state)], on)  # fmt: skip
        assert len(resolutions([], held, judged=judged, window_end=v.window_end, resolved_at=later)) == n, state


def test_compare_value_ignores_missing_values() -> None:
    window = times(300, seed=1)
    window.loc[:99, "prediction_time"] = np.nan
    d = compare_value("prediction_time", DriftValue(), window["prediction_time"], times(300)["prediction_time"],
                      bins=10, min_count=100)  # fmt: skip
    assert d.n_window == 200


# -- the model's outputs: a logged value with role output ----------------------------------------------------


def logged_frame(n: int, *, score_shift: float = 0.0, amount: float = 50.0, seed: int = 0) -> pd.DataFrame:
    """``n`` predictions logging an input (``metric_amount``), a channel (``param_channel``) and the model's
    output (``metric_score``, a probability whose log-odds are moved by ``score_shift``)."""
    rng = np.random.default_rng(seed)
    score = rng.beta(2, 6, n)
    score = 1 / (1 + (1 / score - 1) * np.exp(-score_shift))
    return times(n, seed=seed).assign(metric_amount=amount * np.exp(rng.normal(0, 0.4, n)), metric_score=score,
                                      param_channel=rng.choice(["web", "app"], n))  # fmt: skip


OUTPUTS = DriftConfig(values={"prediction_time": DriftValue(), "metric_amount": DriftValue(),
                              "param_channel": DriftValue(kind="category"),
                              "metric_score": DriftValue(role="output")})  # fmt: skip


def test_a_shifted_output_drifts_as_an_output_while_the_inputs_hold() -> None:
    drift, reason, values = judge_drift(logged_frame(600, score_shift=1.5, seed=1), logged_frame(3000, seed=2),
                                        OUTPUTS, DAYS)  # fmt: skip
    by = {d.value: d for d in values}
    assert drift == "drifted" and by["metric_score"].outcome == "drifted"
    assert {v: d.role for v, d in by.items()} == {"prediction_time": "", "metric_amount": "input",
                                                  "param_channel": "input", "metric_score": "output"}  # fmt: skip
    assert by["metric_amount"].outcome == by["param_channel"].outcome == "stable"
    # the reason names only what drifted, as what it is to the model
    assert reason.startswith("output metric_score: PSI") and "input" not in reason, reason
    v = ModelVerdict(model="m", verdict="healthy", reason="", window_start="a", window_end="b", drift=drift,
                     drift_reason=reason, drift_values=values)  # fmt: skip
    assert v.drift_headline() == "output metric_score drifted"


def test_shifted_inputs_drift_as_inputs_while_the_output_holds() -> None:
    drift, reason, values = judge_drift(logged_frame(600, amount=150, seed=1), logged_frame(3000, seed=2),
                                        OUTPUTS, DAYS)  # fmt: skip
    by = {d.value: d for d in values}
    assert drift == "drifted" and by["metric_amount"].outcome == "drifted" and by["metric_score"].outcome == "stable"
    assert reason.startswith("input metric_amount: PSI") and "output" not in reason, reason
    # every value compared names its role, the stable ones too
    assert by["metric_score"].explanation.startswith("output metric_score: PSI")
    assert by["prediction_time"].explanation.startswith("prediction_time: PSI")


def test_too_few_outputs_say_so_as_outputs() -> None:
    _, reason, values = judge_drift(logged_frame(50, seed=1), logged_frame(3000, seed=2), OUTPUTS, DAYS)
    assert "output metric_score: 50 values in the window" in reason
    assert {d.role for d in values if d.value == "metric_score"} == {"output"}


@pytest.mark.parametrize(("drifted", "headline"), [
    ([], ""),
    ([("metric_score", "output")], "output metric_score drifted"),
    ([("metric_score", "output"), ("metric_label", "output")], "outputs metric_score, metric_label drifted"),
    ([("metric_amount", "input"), ("param_channel", "input"), ("metric_score", "output")],
     "output metric_score and inputs metric_amount, param_channel drifted"),
    ([("prediction_time", ""), ("metric_score", "output")], "output metric_score and prediction_time drifted"),
    ([("prediction_time", "")], "prediction_time drifted"),
])  # fmt: skip
def test_the_drift_headline_names_outputs_then_inputs(drifted: list[tuple[str, str]], headline: str) -> None:
    from modelwatch.verdict import DriftEvidence

    def evidence(value: str, role: str, outcome: str) -> DriftEvidence:
        return DriftEvidence(value=value, kind="number", outcome=outcome, n_window=500, n_reference=3000, psi=0.5,
                             statistic=0.2, p_value=1e-9, p_adjusted=1e-9, psi_threshold=0.25, role=role)  # type: ignore[arg-type]  # fmt: skip

    values = [evidence(value, role, "drifted") for value, role in drifted] + [evidence("instance", "", "stable")]
    v = ModelVerdict(model="m", verdict="healthy", reason="", window_start="a", window_end="b", drift_values=values)
    assert v.drift_headline() == headline


def test_a_role_is_read_from_the_file_and_only_for_a_value_a_team_logs() -> None:
    raw = small_raw() | dict(drift={"values": {"prediction_time": {}, "metric_score": {"role": "output"},
                                               "metric_amount": {"role": "input"}}})  # fmt: skip
    raw["mlflow"]["logged"] = {"metrics": ["amount", "score"]}
    cfg = ModelwatchConfig.model_validate(raw)
    assert {k: v.role for k, v in cfg.drift.values.items()} == {"prediction_time": None, "metric_score": "output",
                                                                "metric_amount": "input"}  # fmt: skip
    # prediction_time is the service's own measurement, neither what the model sees nor what it answers
    raw["drift"]["values"]["prediction_time"] = {"role": "output"}
    with pytest.raises(ValueError, match=r"drift.values: 'prediction_time' take\(s\) no role: .* metric_amount, "
                                         r"metric_score\).*metric_score: \{kind: number, role: output\}"):
        ModelwatchConfig.model_validate(raw)
    raw["drift"]["values"]["prediction_time"] = {}
    raw["drift"]["values"]["metric_score"] = {"role": "prediction"}
    with pytest.raises(ValueError, match=r"drift.values.metric_score.role\n  Input should be 'input' or 'output'"):
        ModelwatchConfig.model_validate(raw)


def test_the_default_files_judge_the_models_outputs() -> None:
    from modelwatch.config import load_config

    include = Path(__file__).resolve().parents[2] / "include"
    seeded = load_config(include / "thresholds.yaml")
    assert seeded.drift.values["metric_score"].role == "output"
    assert seeded.mlflow.logged.columns()["metric_score"] == ("metric", "score")
    assert {k for k, v in seeded.drift.values.items() if v.role is None and k.startswith(("metric_", "param_"))} == {
        "metric_amount", "param_channel"}  # inputs  # fmt: skip
    live = load_config(include / "thresholds.live.yaml")
    assert {k: v.role for k, v in live.drift.values.items() if v.role} == {
        "metric_score": "output", "metric_predicted_label": "output"}  # fmt: skip
    assert live.drift.values["metric_predicted_label"].kind == "category"


def test_the_role_goes_to_the_drift_dataset_the_alert_and_the_report() -> None:
    from modelwatch.report import render_html

    drift, reason, values = judge_drift(logged_frame(600, score_shift=1.5, seed=1), logged_frame(3000, seed=2),
                                        OUTPUTS, DAYS)  # fmt: skip
    start = datetime(2026, 3, 3, tzinfo=UTC)
    v = ModelVerdict(model="m", verdict="healthy", reason="fine", window_start=start.isoformat(),
                     window_end=(start + timedelta(days=1)).isoformat(), drift=drift, drift_reason=reason,
                     drift_values=values, reference_days=DAYS)  # fmt: skip
    rows = drift_frame([v])
    assert list(rows.columns[:5]) == ["model", "window_start", "window_end", "value", "role"]
    assert dict(zip(rows["value"], rows["role"], strict=True)) == {
        "prediction_time": "", "metric_amount": "input", "param_channel": "input", "metric_score": "output"}  # fmt: skip
    (back,) = verdicts_from_frame(verdicts_frame([v]))
    assert back == v and {d.role for d in back.drift_values} == {"", "input", "output"}
    # the alert keeps its name (routes and silences match it) and says that the output drifted
    on = AlertingConfig(drift={"page": True, "alertname": "ModelInputsDrifted", "severity": "info"})
    (alert,) = build_alerts([v], on, run_url="u", partition_url="p")
    assert alert["labels"]["alertname"] == "ModelInputsDrifted"
    assert alert["annotations"]["summary"] == "m: output metric_score drifted"
    assert alert["annotations"]["description"].startswith("drifted: output metric_score: PSI")
    page = render_html(v, {}, alert="-", links={})
    assert "<p id=drift><b>output metric_score drifted</b>: output metric_score: PSI" in page
    assert "<th>role</th>" in page and "<td>metric_score</td><td>output</td><td>drifted</td>" in page
    assert "<td>prediction_time</td><td>-</td><td>stable</td>" in page


def test_a_drift_partition_stored_before_roles_reads_them_as_not_recorded(tmp_path: Path) -> None:
    import hashlib
    import io
    import json

    from modelwatch.storage import Lake
    from modelwatch.window import Window

    _, _, values = judge_drift(logged_frame(600, score_shift=1.5, seed=1), logged_frame(3000, seed=2), OUTPUTS, DAYS)
    v = ModelVerdict(model="m", verdict="healthy", reason="", window_start="a", window_end="b", drift_values=values)
    lake = Lake(tmp_path.as_uri())
    day = Window(datetime(2026, 3, 3, tzinfo=UTC), datetime(2026, 3, 4, tzinfo=UTC))
    ref = lake.write_frame("drift", day, drift_frame([v]), run_id="r")
    part = tmp_path / "drift" / "dt=2026-03-03"
    (data_file,) = [p for p in part.iterdir() if p.suffix == ".parquet"]
    old = io.BytesIO()
    drift_frame([v]).drop(columns=["role"]).to_parquet(old, index=False)
    data_file.write_bytes(old.getvalue())
    manifest = json.loads((part / "_manifest.json").read_text())
    manifest["files"][0]["sha256"] = hashlib.sha256(old.getvalue()).hexdigest()
    (part / "_manifest.json").write_text(json.dumps(manifest))
    frame = lake.read_partition(ref.url)
    assert list(frame["role"]) == [""] * 4 and list(frame["value"]) == [d.value for d in values]
