"""The serving presets (``prometheus.presets``, modelwatch.serving): what each expands to, that Prometheus'
own checker parses every query, that units are normalised, that the join keys are declared, and that a
model name is data in the PromQL. The presets against a real Prometheus: tests/integration/test_serving_presets.py.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelwatch.config import ConfigError, ModelwatchConfig, load_config
from modelwatch.promql import analyse
from modelwatch.serving import STACKS, metrics_of

THRESHOLDS = Path(__file__).resolve().parents[2] / "include" / "thresholds.yaml"
#: the queries include/thresholds.yaml writes out; a preset's come after them
WRITTEN = len(yaml.safe_load(THRESHOLDS.read_text())["prometheus"]["queries"])

#: one entry of each stack, with every option it takes and a model where it has a model label
ENTRIES: list[dict[str, Any]] = [
    {"preset": "fastapi_instrumentator", "name": "api", "handler": "/predict", "rate_window": "20s"},
    {"preset": "seldon_v1", "name": "sv1", "deployment": "iris", "predictor": "default", "model": "iris"},
    {"preset": "seldon_v2", "name": "sv2", "server": "mlserver", "model": "iris", "saturation": {"memory": 0.9}},
    {"preset": "mlserver", "name": "mls", "model": "iris", "saturation": {"parallel_queue": 5}},
    {"preset": "kserve", "name": "ks", "model": "iris"},
    {"preset": "knative", "name": "kn", "service": "iris-predictor", "saturation": {"queue_depth": 10}},
]


def _config(*entries: dict[str, Any], **prometheus: Any) -> ModelwatchConfig:
    raw = yaml.safe_load(THRESHOLDS.read_text())
    raw["prometheus"]["presets"] = list(entries)
    raw["prometheus"].update(prometheus)
    return ModelwatchConfig.model_validate(raw)


def _preset_queries(cfg: ModelwatchConfig, prefix: str) -> dict[str, Any]:
    return {q.name: q for q in cfg.prometheus.queries if q.name.startswith(f"{prefix}_")}


def test_every_stack_has_an_entry_here() -> None:
    assert sorted(e["preset"] for e in ENTRIES) == sorted(STACKS)


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["preset"] for e in ENTRIES])
def test_a_preset_expands_to_its_metrics_after_the_written_queries(entry: dict[str, Any]) -> None:
    cfg = _config(entry)
    written = [q["name"] for q in yaml.safe_load(THRESHOLDS.read_text())["prometheus"]["queries"]]
    names = [q.name for q in cfg.prometheus.queries]
    assert names[: len(written)] == written
    assert names[len(written) :] == [f"{entry['name']}_{m}" for m in metrics_of(entry["preset"])]
    # each is a resource of the evidence, with its threshold where the entry set one
    for suffix, threshold in entry.get("saturation", {}).items():
        assert cfg.saturation_thresholds[f"{entry['name']}_{suffix}"] == threshold


def test_promtool_parses_every_preset_query(tmp_path: Path) -> None:
    """Prometheus' own parser (promtool check rules) accepts every query of every preset."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    cfg = _config(*ENTRIES)
    queries = [q for e in ENTRIES for q in _preset_queries(cfg, e["name"]).values()]
    rules = {"groups": [{"name": "presets", "rules": [{"record": f"check:{q.name}", "expr": q.promql} for q in queries]}]}
    path = tmp_path / "presets.rules.yml"
    path.write_text(yaml.safe_dump(rules))
    proc = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(queries)} rules found" in proc.stdout
    # and promtool refuses a broken one, so the check above can fail
    path.write_text(yaml.safe_dump({"groups": [{"name": "x", "rules": [{"record": "a:b", "expr": "sum by (pod ("}]}]}))
    assert subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, timeout=60).returncode != 0


def test_units_are_normalised_whatever_the_source_unit() -> None:
    cfg = _config(*ENTRIES)
    units = {q.name: q.unit for q in cfg.prometheus.queries[WRITTEN:]}
    assert {n: u for n, u in units.items() if n.endswith("_p95") or n.endswith("_latency")} == dict.fromkeys(
        ["api_latency_p95", "sv1_latency_p95", "sv1_model_latency_p95", "sv2_mean_latency", "sv2_latency_p95", "mls_mean_latency",
         "ks_predict_p95", "ks_preprocess_p95", "ks_postprocess_p95", "kn_latency_p95"], "s")  # fmt: skip
    # Knative's queue-proxy counts milliseconds: its p95 is turned into seconds
    assert cfg.query("kn_latency_p95").promql.endswith("* 0.001")
    assert cfg.query("sv2_memory").unit == "ratio"
    assert {units["api_request_bytes"], units["api_response_bytes"]} == {"bytes"}
    assert all(units[f"{p}_request_rate"] == "req/s" for p in ("api", "sv1", "sv2", "mls", "ks", "kn"))


def test_the_join_keys_are_declared_per_stack() -> None:
    cfg = _config(*ENTRIES)
    keys = {e["name"]: {q.instance_key(cfg.prometheus.instance_label) for q in _preset_queries(cfg, e["name"]).values()}
            for e in ENTRIES}  # fmt: skip
    assert keys == {"api": {"instance"}, "sv1": {"pod"}, "sv2": {("server", "server_replica")}, "mls": {"pod"},
                    "ks": {"pod"}, "kn": {"pod_name"}}  # fmt: skip
    # every query groups by its key, so the series it answers carry it
    for q in cfg.prometheus.queries[WRITTEN:]:
        key = q.instance_key("instance")
        labels = [key] if isinstance(key, str) else list(key)
        assert f"by ({', '.join(labels)}" in q.promql, q.name
    # an entry may name its own key (a scrape relabelled to kubernetes_pod_name)
    own = _config({"preset": "kserve", "name": "ks", "instance_labels": ["kubernetes_pod_name"]})
    assert {q.instance_key("instance") for q in _preset_queries(own, "ks").values()} == {"kubernetes_pod_name"}


def test_per_model_metrics_are_read_for_the_entrys_model_only() -> None:
    cfg = _config(*ENTRIES)
    scoped = {q.name: q.model for q in cfg.prometheus.queries if q.model}
    assert scoped == dict.fromkeys(
        ["sv1_model_latency_p95", "sv2_request_rate", "sv2_error_share", "sv2_mean_latency", "mls_request_rate", "mls_mean_latency",
         "mls_error_share", "ks_request_rate", "ks_predict_p95", "ks_preprocess_p95", "ks_postprocess_p95"], "iris")  # fmt: skip
    assert 'model="iris"' in cfg.query("sv2_request_rate").promql
    assert 'model_name="iris"' in cfg.query("ks_predict_p95").promql
    # instance-level metrics apply to every model the instance serves: no model filter, no scope
    assert cfg.query("sv2_memory").model is None and "iris" not in cfg.query("sv2_memory").promql
    # without a model a per-model metric sums every model of the instance
    every = _config({"preset": "kserve", "name": "ks"})
    assert all(q.model is None and "model_name" not in q.promql for q in _preset_queries(every, "ks").values())


def test_a_serving_model_name_other_than_mlflows() -> None:
    cfg = _config({"preset": "seldon_v2", "name": "sv2", "model": "fraud-detector", "serving_model": "fraud-v3"})
    q = cfg.query("sv2_request_rate")
    assert q.model == "fraud-detector" and 'model="fraud-v3"' in q.promql


@pytest.mark.parametrize("name", ['a"b', "a\\b", "a\nb", "x\"} or vector(1) #", "модель/v2"])
def test_a_model_name_is_data_in_the_promql(name: str) -> None:
    """A quote, a backslash, a newline or a pasted PromQL fragment in a model name selects that model: it
    cannot end the string or add a selector."""
    cfg = _config({"preset": "kserve", "name": "ks", "model": name})
    q = cfg.query("ks_request_rate")
    selectors, _ = analyse(q.promql)
    assert selectors == [q.promql[q.promql.index("request_predict_seconds_count") : q.promql.index("[")]]
    assert "vector(1)" not in q.promql.replace(selectors[0], "")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"preset": "kserve", "name": "ks", "saturation": {"cpu": 0.9}}, "cpu not among the kserve metrics"),
        ({"preset": "knative", "name": "kn", "model": "iris"}, "knative metrics have no model label"),
        ({"preset": "kserve", "name": "ks", "server": "x"}, "kserve takes no server"),
        ({"preset": "seldon_v2", "name": "sv2", "serving_model": "x"}, "serving_model needs model"),
        ({"preset": "seldon", "name": "s"}, "preset"),
        ({"preset": "kserve", "name": "Bad-Name"}, "lower_snake_case"),
        ({"preset": "kserve", "name": "ks", "instance_labels": ["pod-name"]}, "not a Prometheus label name"),
        ({"preset": "kserve", "name": "cpu", "metrics": ["request_rate"]}, None),
    ],
)
def test_a_wrong_entry_is_a_config_error_naming_the_key(tmp_path: Path, entry: dict[str, Any], message: str | None) -> None:
    raw = yaml.safe_load(THRESHOLDS.read_text())
    raw["prometheus"]["presets"] = [entry]
    path = tmp_path / "thresholds.yaml"
    path.write_text(yaml.safe_dump(raw))
    if message is None:  # cpu_request_rate beside cpu: distinct names, accepted
        assert load_config(path).query("cpu_request_rate")
        return
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "prometheus.presets.0" in str(err.value) and message in str(err.value)


def test_a_preset_query_named_like_a_written_one_is_refused(tmp_path: Path) -> None:
    raw = yaml.safe_load(THRESHOLDS.read_text())
    raw["prometheus"]["queries"].append({"name": "ks_request_rate", "promql": "up"})
    raw["prometheus"]["presets"] = [{"preset": "kserve", "name": "ks"}]
    path = tmp_path / "thresholds.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="ks_request_rate"):
        load_config(path)


def test_presets_alone_are_a_configuration() -> None:
    cfg = _config({"preset": "seldon_v2", "name": "sv2", "saturation": {"memory": 0.9}}, queries=[])
    assert [q.name for q in cfg.prometheus.queries] == [f"sv2_{m}" for m in metrics_of("seldon_v2")]
