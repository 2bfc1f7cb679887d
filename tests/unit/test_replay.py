"""Threshold replay's inputs from a trigger form: which days, and the candidate as the keys to change."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from modelwatch.config import ConfigError, load_changed_config, load_config, merged
from modelwatch.replay import MAX_FORM_DAYS, form_days

SHIPPED = Path(__file__).resolve().parents[2] / "include" / "thresholds.yaml"


def test_the_days_default_to_the_week_before_the_run_and_follow_the_form() -> None:
    week = form_days("", "", date(2026, 4, 8))
    assert (week[0], week[-1], len(week)) == (date(2026, 4, 1), date(2026, 4, 7), 7)
    assert form_days("2026-03-02", "2026-03-04", date(2026, 4, 8)) == [date(2026, 3, k) for k in (2, 3, 4)]
    assert form_days("", "2026-03-10", date(2026, 4, 8))[0] == date(2026, 3, 4)


@pytest.mark.parametrize(("first", "last", "message"), [
    ("2026-03-05", "2026-03-04", "2026-03-05 is after 2026-03-04"),
    ("03/04/2026", "", "expected YYYY-MM-DD"),
    ("2026-01-01", "2026-03-01", f"at most {MAX_FORM_DAYS}"),
])  # fmt: skip
def test_a_wrong_range_says_what_is_wrong(first: str, last: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        form_days(first, last, date(2026, 4, 8))


def test_the_candidate_is_the_thresholds_in_force_with_the_pasted_keys_on_top() -> None:
    current = load_config(SHIPPED)
    candidate = load_changed_config("drift:\n  values:\n    prediction_time: {psi: 0.1}\n", "form", SHIPPED)
    assert candidate.drift.values["prediction_time"].psi == 0.1
    # the keys not pasted keep their values, a mapping beside the changed one included
    assert candidate.drift.values["metric_amount"] == current.drift.values["metric_amount"]
    assert candidate.evaluation == current.evaluation
    assert load_changed_config("  ", "form", SHIPPED) == current
    assert merged({"a": {"b": 1, "c": [1]}}, {"a": {"c": [2]}}) == {"a": {"b": 1, "c": [2]}}
    # an empty mapping clears what it names: no per-model override left
    cleared = load_changed_config("evaluation:\n  models: {}\n", "form", SHIPPED)
    assert current.evaluation.models and cleared.evaluation.models == {}


def test_a_candidate_with_a_mistake_names_the_form_field_and_the_key() -> None:
    with pytest.raises(ConfigError, match=r"(?s)trigger-form field 'candidate'.*evaluation\.slow: unknown key"):
        load_changed_config("evaluation: {slow: 1}", "trigger-form field 'candidate'", SHIPPED)
    with pytest.raises(ConfigError, match=r"field 'candidate'.*invalid YAML at line 1"):
        load_changed_config("evaluation: {", "field 'candidate'", SHIPPED)


def test_a_day_stored_before_a_value_was_logged_replays_with_it_as_not_logged(tmp_path: Path) -> None:
    import pandas as pd
    from config_helpers import small_raw

    from modelwatch.config import ModelwatchConfig
    from modelwatch.replay import read_day
    from modelwatch.schema import arrow_schema
    from modelwatch.storage import Lake
    from modelwatch.window import Window

    day = date(2026, 3, 3)
    lake, window = Lake(tmp_path.as_uri()), Window.of_day(day)
    old = pd.DataFrame({"timestamp": pd.date_range(window.start, periods=2, freq="1min"), "model": "m",
                        "model_version": "1", "instance": "a", "prediction_time": 0.2, "accuracy": 1.0, "loss": 0.1,
                        "run_id": "r", "experiment": "e"})  # fmt: skip
    lake.write_frame("predictions", window, old, run_id="old")
    lake.write_frame("resources", window, arrow_schema("resources").empty_table().to_pandas(), run_id="old")
    raw = small_raw()
    raw["mlflow"]["logged"] = {"metrics": ["amount"], "params": ["channel"]}
    predictions, resources = read_day(lake, day, [ModelwatchConfig.model_validate(raw)])
    assert predictions[["metric_amount", "param_channel"]].isna().all().all() and len(predictions) == 2
    assert resources.empty
