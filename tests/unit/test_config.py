"""include/thresholds.yaml: the shipped file loads, and every mistake a user can make is reported with the
file, the dotted key and the problem, instead of failing a task hours later."""

from __future__ import annotations

import copy
import re
import time
import tracemalloc
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from config_helpers import delete_key, set_key

from modelwatch import config
from modelwatch.config import (
    CONFIG_ENV,
    DEFAULT_CONFIG_PATH,
    ECHO_CHARS,
    MAX_PROBLEMS,
    STORAGE_URL_ENV,
    ConfigError,
    ModelwatchConfig,
    load_changed_config,
    load_config,
    parse_duration,
)
from modelwatch.timegrid import step_to_ms

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "include" / "thresholds.yaml"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(STORAGE_URL_ENV, raising=False)
    monkeypatch.delenv(CONFIG_ENV, raising=False)


def shipped_raw() -> dict[str, Any]:
    return yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))


def write(tmp_path: Path, raw: Any, name: str = "thresholds.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def broken(tmp_path: Path, mutate: Callable[[dict[str, Any]], None]) -> tuple[Path, str]:
    """The shipped configuration with one mistake; returns the file and the error message."""
    raw = copy.deepcopy(shipped_raw())
    mutate(raw)
    path = write(tmp_path, raw)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return path, str(info.value)


def problem_line(message: str, key: str) -> str:
    """The line of the message about ``key`` (the message lists one problem per line)."""
    lines = [line.strip() for line in message.splitlines() if line.strip().startswith(f"{key}:")]
    assert lines, f"no problem reported for key {key!r} in:\n{message}"
    return lines[0]


# -- the shipped file --------------------------------------------------------------------------------------


def test_shipped_file_loads_and_is_the_default() -> None:
    cfg = load_config(SHIPPED)
    assert DEFAULT_CONFIG_PATH == SHIPPED
    assert load_config() == cfg  # no MODELWATCH_CONFIG: the shipped file is the one in force

    raw = shipped_raw()
    assert [q.name for q in cfg.prometheus.queries] == [q["name"] for q in raw["prometheus"]["queries"]]
    # durations written as text become timedeltas
    assert cfg.prometheus.step == timedelta(seconds=15)
    assert cfg.correlation.tolerance == timedelta(seconds=60)
    # queries without a threshold are context only, the others can explain a slow prediction
    with_threshold = {q["name"] for q in raw["prometheus"]["queries"] if "saturation" in q}
    assert set(cfg.saturation_thresholds) == with_threshold
    assert "request_rate" not in cfg.saturation_thresholds
    assert cfg.saturation_thresholds["network_io"] == 100_000_000
    assert set(cfg.evaluation.expected_models) == {"fraud-detector", "recommender"}


def test_config_path_comes_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = shipped_raw()
    raw["evaluation"]["slow_prediction_seconds"] = 7.5
    monkeypatch.setenv(CONFIG_ENV, str(write(tmp_path, raw)))
    assert load_config().evaluation.slow_prediction_seconds == 7.5


# -- errors name the file, the key and the problem ---------------------------------------------------------


def test_invalid_yaml_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "thresholds.yaml"
    # line 4: "  step: 15s: oops" -> the second ':' (1-based column 12) is not allowed in a plain scalar
    path.write_text("storage:\n  base_url: file:///tmp/x\nprometheus:\n  step: 15s: oops\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    assert "invalid YAML" in message
    assert "line 4, column 12" in message


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="cannot read") as info:
        load_config(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", ""])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    path = tmp_path / "thresholds.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="mapping at the top level") as info:
        load_config(path)
    assert str(path) in str(info.value)


def _rename_saturation(raw: dict[str, Any]) -> None:
    q = raw["prometheus"]["queries"][0]
    q["saturaton"] = q.pop("saturation")


CASES = [
    # (id, mutation, dotted key, words of the problem)
    ("unknown key", _rename_saturation, "prometheus.queries.0.saturaton", ["unknown key"]),
    ("unknown top-level key", set_key("evaluaton", value={}), "evaluaton", ["unknown key"]),
    ("wrong type int", set_key("evaluation", "min_slow_count", value="lots"), "evaluation.min_slow_count",
     ["integer", "'lots'"]),
    ("wrong type float", set_key("evaluation", "slow_prediction_seconds", value="fast"),
     "evaluation.slow_prediction_seconds", ["number", "'fast'"]),
    ("wrong type list", set_key("prometheus", "queries", value={"name": "cpu"}), "prometheus.queries", ["list"]),
    ("wrong literal", set_key("alerting", "severity", value="urgent"), "alerting.severity", ["'urgent'"]),
    ("negative saturation", set_key("prometheus", "queries", 2, "saturation", value=-0.5),
     "prometheus.queries.2.saturation", ["greater than or equal to 0", "-0.5"]),
    ("negative slow seconds", set_key("evaluation", "slow_prediction_seconds", value=-1),
     "evaluation.slow_prediction_seconds", ["greater than 0"]),
    ("share above 1", set_key("evaluation", "min_coverage", value=1.5), "evaluation.min_coverage",
     ["less than or equal to 1"]),
    ("significance of 1", set_key("evaluation", "significance", value=1), "evaluation.significance",
     ["less than 1"]),
    ("relative risk below 1", set_key("evaluation", "min_relative_risk", value=0.5), "evaluation.min_relative_risk",
     ["greater than or equal to 1"]),
    ("removed lift key", set_key("evaluation", "min_lift", value=2.0), "evaluation.min_lift",
     ["removed", "min_relative_risk"]),
    ("removed coincidence key", set_key("evaluation", "models", value={"m": {"min_coincidence_share": 0.5}}),
     "evaluation.models.m.min_coincidence_share", ["removed", "significance"]),
    ("too many points", set_key("prometheus", "max_points_per_request", value=20000),
     "prometheus.max_points_per_request", ["11000"]),
    ("missing slow seconds", delete_key("evaluation", "slow_prediction_seconds"), "evaluation.slow_prediction_seconds",
     ["required key is missing"]),
    ("missing section", delete_key("mlflow"), "mlflow", ["required key is missing"]),
    ("missing promql", delete_key("prometheus", "queries", 0, "promql"), "prometheus.queries.0.promql",
     ["required key is missing"]),
    ("query name twice", set_key("prometheus", "queries", 1, "name", value="cpu"), "prometheus.queries",
     ["'cpu'", "used twice"]),
    ("query name not snake", set_key("prometheus", "queries", 0, "name", value="CPU Busy"), "prometheus.queries.0.name",
     ["lower_snake_case"]),
    ("override unknown field", set_key("evaluation", "models", "x", value={"foo": 1}), "evaluation.models.x.foo",
     ["unknown key"]),
    ("override bad value", set_key("evaluation", "models", "recommender", "slow_prediction_seconds", value=0),
     "evaluation.models.recommender.slow_prediction_seconds", ["greater than 0"]),
    ("bad step", set_key("prometheus", "step", value="15 parsecs"), "prometheus.step", ["'15 parsecs'", "not a duration"]),
    ("zero tolerance", set_key("correlation", "tolerance", value="0s"), "correlation.tolerance", ["positive duration"]),
    ("bool duration", set_key("alerting", "active_for", value=True), "alerting.active_for", ["not a duration"]),
    ("http storage", set_key("storage", "base_url", value="http://lake.example/x"), "storage.base_url",
     ["http://lake.example/x", "file:///", "s3://"]),
    ("relative file url", set_key("storage", "base_url", value="file://relative/lake"), "storage.base_url",
     ["file://relative/lake"]),
    ("bare path", set_key("storage", "base_url", value="/tmp/lake"), "storage.base_url", ["/tmp/lake"]),
    ("s3 without bucket", set_key("storage", "base_url", value="s3:///prefix"), "storage.base_url", ["s3:///prefix"]),
    # what would only fail when a task runs (issue 20, 4b)
    ("step under 1ms", set_key("prometheus", "step", value="0.4ms"), "prometheus.step", ["'0.4ms'", "at least 1ms"]),
    ("tolerance under 1ms", set_key("correlation", "tolerance", value=0.0005), "correlation.tolerance",
     ["at least 1ms"]),
    ("retry delay under 1ms", set_key("tasks", "retry_delay", value="0.9ms"), "tasks.retry_delay", ["at least 1ms"]),
    ("saturation_for under 1ms", set_key("rules", "saturation_for", value="0.1ms"), "rules.saturation_for",
     ["at least 1ms"]),
    ("endless duration", set_key("alerting", "active_for", value="99999999999d"), "alerting.active_for",
     ["at most 3650d"]),
    ("infinite duration", set_key("alerting", "incident_gap", value=float("inf")), "alerting.incident_gap",
     ["not a duration"]),
    ("promql unclosed brace", set_key("prometheus", "queries", 2, "promql", value='rate(x{mode="idle"[5m])'),
     "prometheus.queries.2.promql", ["query 'disk_io'", "Prometheus would refuse", "at character 19", "expected",
                                     "'rate(x{mode=\"idle\"[5m])'"]),
    ("promql bad duration unit", set_key("prometheus", "queries", 0, "promql", value="rate(x[5q])"),
     "prometheus.queries.0.promql", ["query 'cpu'", "at character 8", "'5q'", "not a duration"]),
    ("promql unbalanced parenthesis", set_key("prometheus", "queries", 0, "promql",
                                              value="1 - avg by (instance) (rate(node_cpu_seconds_total[1m])"),
     "prometheus.queries.0.promql", ["at character 23", "unclosed '('", "expected ')'"]),
    ("promql unterminated string", set_key("prometheus", "queries", 1, "promql", value='x{a="b} + 1'),
     "prometheus.queries.1.promql", ["query 'memory'", "unterminated string"]),
    ("promql trailing operator", set_key("prometheus", "queries", 1, "promql", value="node_load1 /"),
     "prometheus.queries.1.promql", ["right-hand side"]),
    ("promql empty selector", set_key("prometheus", "queries", 1, "promql", value='{} or {job=~".*"}'),
     "prometheus.queries.1.promql", ["at character 1", "at least one matcher"]),
    ("promql range vector result", set_key("prometheus", "queries", 1, "promql", value="node_load1[5m]"),
     "prometheus.queries.1.promql", ["range vector", "instant vector or a scalar"]),
    ("promql unknown function", set_key("prometheus", "queries", 1, "promql", value="rat(x[5m])"),
     "prometheus.queries.1.promql", ["unknown function 'rat'"]),
    ("instance label with a dash", set_key("prometheus", "instance_label", value="pod-name"),
     "prometheus.instance_label", ["'pod-name'", "not a Prometheus label name"]),
    ("instance label with a digit first", set_key("prometheus", "instance_label", value="2pod"),
     "prometheus.instance_label", ["not a Prometheus label name"]),
    ("empty expected model", set_key("evaluation", "expected_models", value=[""]), "evaluation.expected_models.0",
     ["must not be empty"]),
    ("blank expected model", set_key("evaluation", "expected_models", value=["fraud-detector", " \t"]),
     "evaluation.expected_models.1", ["must not be empty or only spaces"]),
    ("pasted page as a model", set_key("evaluation", "expected_models", value=["m" * 1001]),
     "evaluation.expected_models.0", ["at most 1000 characters"]),
    ("empty model override", set_key("evaluation", "models", value={"": {"min_slow_count": 2}}),
     "evaluation.models[''] (the key)", ["must not be empty"]),
]  # fmt: skip


@pytest.mark.parametrize(("mutate", "key", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_error_names_file_key_and_problem(
    tmp_path: Path, mutate: Callable[[dict[str, Any]], None], key: str, words: list[str]
) -> None:
    path, message = broken(tmp_path, mutate)
    assert message.startswith(f"{path}:"), message
    line = problem_line(message, key)
    for word in words:
        assert word in line, f"{word!r} not in {line!r}"


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    def two_mistakes(raw: dict[str, Any]) -> None:
        _rename_saturation(raw)
        raw["evaluation"]["min_slow_count"] = "lots"

    _, message = broken(tmp_path, two_mistakes)
    assert "2 problem(s)" in message
    problem_line(message, "prometheus.queries.0.saturaton")
    problem_line(message, "evaluation.min_slow_count")


def test_no_saturation_threshold_at_all_is_an_error(tmp_path: Path) -> None:
    def drop_all(raw: dict[str, Any]) -> None:
        for q in raw["prometheus"]["queries"]:
            q.pop("saturation", None)

    path, message = broken(tmp_path, drop_all)
    assert str(path) in message
    assert "no query has a saturation threshold" in message


# -- durations ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("15s", 15), ("1m", 60), ("2h", 7200), ("1d", 86400), ("250ms", 0.25), ("1.5m", 90), (" 30 s ", 30), (45, 45),
     (0.5, 0.5)],
)  # fmt: skip
def test_parse_duration(text: Any, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "text", ["15 parsecs", "15", "s", "-5s", "0", 0, -1, True, None, "1h30m", "0.4ms", 0.0009, "0.5ms",
             float("inf"), float("nan"), "99999999999d", 1e300],
)  # fmt: skip
def test_parse_duration_rejects(text: Any) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(text))):
        parse_duration(text)


@pytest.mark.parametrize("text", ["0.4ms", "0.999ms", 0.0004, 0.0009])
def test_a_duration_under_a_millisecond_is_refused_before_it_rounds_to_zero(text: Any) -> None:
    # what the task would do with it hours later: Prometheus's step is whole milliseconds, this one is 0
    with pytest.raises(ValueError, match="1 ms resolution"):
        step_to_ms(timedelta(seconds=0.0004))
    with pytest.raises(ValueError, match="at least 1ms"):
        parse_duration(text)
    assert step_to_ms(parse_duration("1ms")) == 1 and parse_duration(0.001) == timedelta(milliseconds=1)


def test_durations_in_the_file(tmp_path: Path) -> None:
    raw = shipped_raw()
    raw["prometheus"]["step"] = "1m"
    raw["correlation"]["tolerance"] = 90
    raw["alerting"]["active_for"] = "2h"
    cfg = load_config(write(tmp_path, raw))
    assert cfg.prometheus.step == timedelta(minutes=1)
    assert cfg.correlation.tolerance == timedelta(seconds=90)
    assert cfg.alerting.active_for == timedelta(hours=2)


# -- MODELWATCH_STORAGE_URL --------------------------------------------------------------------------------


def test_storage_url_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = shipped_raw()
    raw["storage"] = {"base_url": "s3://prod-bucket/lake", "aws_conn_id": "aws_lake"}
    path = write(tmp_path, raw)
    assert load_config(path).storage.base_url == "s3://prod-bucket/lake"

    monkeypatch.setenv(STORAGE_URL_ENV, "file:///tmp/throwaway-lake/")
    cfg = load_config(path)
    assert cfg.storage.base_url == "file:///tmp/throwaway-lake"  # trailing slash dropped
    assert cfg.storage.aws_conn_id == "aws_lake"  # the rest of the section is kept


def test_storage_url_override_without_storage_section(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = shipped_raw()
    del raw["storage"]
    monkeypatch.setenv(STORAGE_URL_ENV, "s3://other-bucket")
    assert load_config(write(tmp_path, raw)).storage.base_url == "s3://other-bucket"


def test_storage_url_override_is_validated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(STORAGE_URL_ENV, "ftp://lake")
    path = write(tmp_path, shipped_raw())
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "ftp://lake" in problem_line(str(info.value), "storage.base_url")


# -- per-model overrides -----------------------------------------------------------------------------------


def _config(evaluation: dict[str, Any]) -> ModelwatchConfig:
    return ModelwatchConfig.model_validate({
        "prometheus": {"queries": [{"name": "cpu", "promql": "up", "saturation": 0.9}]},
        "mlflow": {"experiments": [{"name": "e"}]},
        "evaluation": evaluation,
    })  # fmt: skip


def test_for_model_applies_only_the_fields_it_overrides() -> None:
    ev = _config({
        "slow_prediction_seconds": 1.0, "min_slow_count": 5, "min_slow_share": 0.1, "min_coverage": 0.6,
        "min_relative_risk": 3.0, "significance": 0.05,
        "models": {"recommender": {"slow_prediction_seconds": 1.5},
                   "ranker": {"min_relative_risk": 1.2, "min_slow_count": 1}},
    }).evaluation  # fmt: skip

    rec = ev.for_model("recommender")
    assert rec.slow_prediction_seconds == 1.5
    assert (rec.min_slow_count, rec.min_slow_share, rec.min_coverage, rec.min_relative_risk, rec.significance) == (
        5, 0.1, 0.6, 3.0, 0.05,
    )  # fmt: skip

    ranker = ev.for_model("ranker")
    assert (ranker.slow_prediction_seconds, ranker.min_relative_risk, ranker.min_slow_count) == (1.0, 1.2, 1)
    assert ranker.min_coverage == 0.6

    other = ev.for_model("not-configured")
    assert (other.slow_prediction_seconds, other.min_slow_count, other.min_relative_risk) == (1.0, 5, 3.0)


def test_shipped_override_for_recommender() -> None:
    ev = load_config(SHIPPED).evaluation
    assert ev.for_model("recommender").slow_prediction_seconds == 1.5
    assert ev.for_model("fraud-detector").slow_prediction_seconds == ev.slow_prediction_seconds == 1.0


# -- the retry budget --------------------------------------------------------------------------------------------


def test_the_shipped_retry_budget_and_its_ceiling() -> None:
    tasks = load_config(SHIPPED).tasks
    assert tasks.execution_timeout == timedelta(minutes=30) and tasks.retries == 2
    assert tasks.retry_delays() == [timedelta(seconds=30), timedelta(minutes=1)]
    # what include/thresholds.yaml and docs/operating.md promise: three tries of 30 min and two waits
    assert tasks.worst_case == timedelta(minutes=91, seconds=30)


def test_retry_waits_stop_growing_at_max_retry_delay(tmp_path: Path) -> None:
    raw = copy.deepcopy(shipped_raw())
    raw["tasks"] = {"execution_timeout": "1m", "retries": 6, "retry_delay": "1m", "max_retry_delay": "5m"}
    tasks = load_config(write(tmp_path, raw)).tasks
    assert [d.total_seconds() / 60 for d in tasks.retry_delays()] == [1, 2, 4, 5, 5, 5]
    assert tasks.worst_case == timedelta(minutes=7 + 22)


def test_a_try_longer_than_the_run_deadline_is_refused(tmp_path: Path) -> None:
    path, message = broken(tmp_path, set_key("tasks", "execution_timeout", value="4h"))
    assert str(path) in message
    assert "tasks.execution_timeout" in message and "alerting.run_deadline" in message


# -- model names are data -------------------------------------------------------------------------------------


def test_model_names_are_data_not_identifiers(tmp_path: Path) -> None:
    """Anything MLflow can tag a model with is a model name (Unicode, ``/``, ``$``, spaces inside): only an empty
    or blank name, or one longer than a pasted page, is refused."""
    from hostile_names import HOSTILE_NAMES

    raw = shipped_raw()
    raw["evaluation"]["expected_models"] = list(HOSTILE_NAMES)
    raw["evaluation"]["models"] = {name: {"min_slow_count": 2} for name in HOSTILE_NAMES[:10]}
    raw["quality"] = {"models": {"team/ä $x": {"min_labels": 5}}}
    cfg = load_config(write(tmp_path, raw))
    assert cfg.evaluation.expected_models == list(HOSTILE_NAMES)
    assert cfg.evaluation.for_model(HOSTILE_NAMES[0]).min_slow_count == 2
    assert cfg.quality.for_model("team/ä $x").min_labels == 5


def test_every_label_name_prometheus_takes_is_taken(tmp_path: Path) -> None:
    for label in ("instance", "pod", "_private", "kubernetes_pod_name", "Host2", "__address__"):
        raw = shipped_raw()
        raw["prometheus"]["instance_label"] = label
        assert load_config(write(tmp_path, raw)).prometheus.instance_label == label


# -- bounded messages for pasted configuration (issue 20, 6) ----------------------------------------------------


def billion_laughs(levels: int = 9) -> str:
    """Nine lists of nine aliases of the list before: about 400 bytes that stand for 9^9 values."""
    letters = "abcdefghijklmnop"[:levels]
    lines = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]" for a, b in zip(letters, letters[1:], strict=False)]
    return "\n".join(lines) + "\n"


def _refusal(load: Callable[[], Any]) -> tuple[str, float, int]:
    """The message ``load`` fails with, the seconds it took, and the peak bytes it allocated."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(ConfigError) as info:
            load()
        took = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return str(info.value), took, peak


@pytest.mark.parametrize(
    "text",
    [
        billion_laughs(),
        # the bomb under a key the schema knows: validation, not the loader, would walk it
        billion_laughs().replace("i: &i", "evaluation:\n  slow_prediction_seconds: 1\n  expected_models: &i"),
        # a mapping that merges itself
        "prometheus: &p {queries: [{name: cpu, promql: up}], <<: *p}\n",
    ],
    ids=["billion laughs", "under a known key", "alias inside itself"],
)
def test_an_alias_bomb_is_refused_quickly_and_briefly(tmp_path: Path, text: str) -> None:
    assert len(text) < 600
    path = tmp_path / "thresholds.yaml"
    path.write_text(text, encoding="utf-8")
    message, took, peak = _refusal(lambda: load_config(path))
    assert message.startswith(f"{path}: invalid YAML at line "), message
    assert "alias" in message and len(message) < 2000, message[:3000]
    assert took < 1 and peak < 50_000_000, (took, peak)


def test_a_pasted_candidate_goes_through_the_same_bounded_loader() -> None:
    """The replay form's candidate thresholds (``load_changed_config``): the same refusal, naming the field."""
    message, took, _ = _refusal(
        lambda: load_changed_config(billion_laughs(), "trigger-form field 'candidate'")
    )
    assert message.startswith("trigger-form field 'candidate': invalid YAML at line 6"), message
    assert "expand to more than 100,000 values" in message and len(message) < 2000 and took < 1
    assert "alias" in message


def test_aliases_a_person_writes_still_work(tmp_path: Path) -> None:
    text = SHIPPED.read_text(encoding="utf-8").replace(
        "\n  models: {}\n",
        "\n  models:\n    fraud-detector: &strict {min_labels: 50}\n    recommender: *strict\n",
        1,
    )
    assert "*strict" in text
    path = tmp_path / "thresholds.yaml"
    path.write_text(text, encoding="utf-8")
    cfg = load_config(path)
    assert (
        cfg.quality.for_model("recommender").min_labels
        == cfg.quality.for_model("fraud-detector").min_labels
        == 50
    )


def test_deep_nesting_is_refused_not_a_recursion_error(tmp_path: Path) -> None:
    path = tmp_path / "thresholds.yaml"
    path.write_text("evaluation: " + "[" * 300 + "]" * 300 + "\n", encoding="utf-8")
    message, took, _ = _refusal(lambda: load_config(path))
    assert "levels deep" in message and len(message) < 500 and took < 1, message


def test_a_document_too_large_without_aliases_is_not_blamed_on_aliases(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        config, "MAX_YAML_VALUES", 1000
    )  # the real bound needs 300 kB, which PyYAML reads slowly
    message, _, _ = _refusal(lambda: load_changed_config("x: [" + ", ".join(["1"] * 1001) + "]\n", "form"))
    assert "holds more than 1,000 values" in message and "alias" not in message, message


def test_a_pasted_page_is_refused_before_yaml_reads_it() -> None:
    text = "evaluation: {slow_prediction_seconds: 1}\n#" + "x" * config.MAX_YAML_CHARS
    message, took, _ = _refusal(lambda: load_changed_config(text, "trigger-form field 'candidate'"))
    assert message.startswith("trigger-form field 'candidate': 1,000,042 characters is too long"), message
    assert len(message) < 300 and took < 1


def test_every_problem_message_is_bounded_whatever_was_pasted(tmp_path: Path) -> None:
    """Huge values in many wrong places: each echoed value is cut, the list stops at MAX_PROBLEMS lines."""
    raw = shipped_raw()
    page = "<p>" + "pasted text " * 1_000 + "</p>"
    raw["evaluation"].update({f"pasted_{i}": page for i in range(30)})  # 30 unknown keys
    raw["evaluation"]["slow_prediction_seconds"] = page
    raw["prometheus"]["queries"][0]["name"] = page  # a validator that quotes the value
    raw["prometheus"]["queries"][1]["promql"] = page
    raw["prometheus"]["step"] = page
    raw["storage"]["base_url"] = {"nested": [page] * 3}
    path, message = broken(tmp_path, lambda r: r.update(raw))
    lines = message.splitlines()
    assert (
        lines[0]
        == f"{path}: {int(lines[0].split(': ')[1].split()[0])} problem(s) in the modelwatch configuration"
    )
    assert (
        len(lines) == MAX_PROBLEMS + 2
        and lines[-1].startswith("  ... and ")
        and "more problem(s)" in lines[-1]
    )
    assert all(len(line) < 1500 for line in lines), max(map(len, lines))
    assert len(message) < (MAX_PROBLEMS + 2) * 1500
    for line in lines[1:-1]:  # the echoed value of each is at most ECHO_CHARS long
        if " (got " in line:
            assert len(line.rsplit(" (got ", 1)[1]) <= ECHO_CHARS + 1, line
    assert "prometheus.step" in message and "storage.base_url" in message and "pasted text" in message
