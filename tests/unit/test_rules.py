"""Prometheus rules and the AMP alert manager definition from thresholds.yaml (modelwatch.rules).

What a user checks: every query with a saturation threshold is recorded with its PromQL exactly as
configured and alerts per instance at that threshold for ``rules.saturation_for``; the committed renders
are the renders of include/thresholds.yaml; Prometheus' own checker (promtool) accepts the rule file and
Alertmanager's (amtool) the definition's configuration, which routes every alert modelwatch sends to the
SNS topic. The publish path runs against moto's AMP in tests/integration/test_prometheus_rules.py.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from config_helpers import small_raw

from modelwatch.config import ConfigError, ModelwatchConfig, load_config
from modelwatch.rules import (
    ALERTING_GROUP,
    DEFINITION_FILE,
    NULL_RECEIVER,
    RECORDING_GROUP,
    RULES_FILE,
    SNS_RECEIVER,
    SOURCE,
    RulesError,
    alertmanager_definition,
    inner_config,
    main,
    modelwatch_alertnames,
    prometheus_duration,
    render,
    sns_region,
)

REPO = Path(__file__).resolve().parents[2]
THRESHOLDS = REPO / "include" / "thresholds.yaml"
COMMITTED = REPO / "compose" / "prometheus-rules"
#: the placeholder topic of the committed definition (a real deployment renders its own)
TOPIC = "arn:aws:sns:us-east-1:123456789012:modelwatch-alerts"
REGENERATE = (
    "python -m modelwatch.rules render --config include/thresholds.yaml --out compose/prometheus-rules/"
    f"{RULES_FILE} && python -m modelwatch.rules alertmanager --config include/thresholds.yaml "
    f"--sns-topic-arn {TOPIC} --out compose/prometheus-rules/{DEFINITION_FILE}"
)


@pytest.fixture(scope="module")
def cfg() -> ModelwatchConfig:
    return load_config(THRESHOLDS)


def groups(text: str) -> dict[str, list[dict[str, Any]]]:
    """Group name -> its rules, as Prometheus reads the file."""
    return {g["name"]: g["rules"] for g in yaml.safe_load(text)["groups"]}


def _tool(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        pytest.skip(f"`{name}` is not installed (Debian: apt-get install prometheus prometheus-alertmanager)")
    return exe


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


# -- the rules ---------------------------------------------------------------------------------------------


def test_one_recording_rule_per_saturation_query_with_exactly_its_promql(cfg: ModelwatchConfig) -> None:
    recorded = {r["record"]: r["expr"] for r in groups(render(cfg))[RECORDING_GROUP]}
    saturating = [q for q in cfg.prometheus.queries if q.saturation is not None]
    assert recorded == {f"instance:modelwatch_{q.name}:value": q.promql for q in saturating}
    # context-only queries (no threshold) are not recorded; a multi-line PromQL keeps its line breaks
    assert "instance:modelwatch_request_rate:value" not in recorded
    assert "\n" in recorded["instance:modelwatch_error_rate:value"]


def test_an_alert_per_saturation_query_at_its_threshold_for_the_configured_time(cfg: ModelwatchConfig) -> None:
    alerts = groups(render(cfg))[ALERTING_GROUP]
    assert [a["labels"]["resource"] for a in alerts] == list(cfg.saturation_thresholds)
    for alert in alerts:
        name = alert["labels"]["resource"]
        assert alert["alert"] == "ModelwatchResourceSaturated"
        assert alert["for"] == "5m"
        assert alert["labels"] == {"resource": name, "severity": "warning", "source": SOURCE}
        threshold = yaml.safe_load(alert["expr"].split(" >= ")[1])
        assert alert["expr"] == f"instance:modelwatch_{name}:value >= {alert['expr'].split(' >= ')[1]}"
        assert threshold == cfg.query(name).saturation
        text = alert["annotations"]["summary"] + alert["annotations"]["description"]
        assert "{{ $labels.instance }}" in text and "{{ $value }}" in text and str(threshold) in text
    # a large threshold stays a plain number
    assert any(a["expr"].endswith(">= 100000000") for a in alerts)


def test_rules_section_changes_the_alert_and_the_instance_label_the_names() -> None:
    raw = small_raw()
    raw["rules"] = {"saturation_for": "90s", "alertname": "HostSaturated", "severity": "critical"}
    raw["prometheus"]["instance_label"] = "host"
    alerts = groups(render(ModelwatchConfig.model_validate(raw)))[ALERTING_GROUP]
    assert {(a["alert"], a["for"], a["labels"]["severity"]) for a in alerts} == {("HostSaturated", "90s", "critical")}
    assert [a["expr"] for a in alerts] == ["host:modelwatch_cpu:value >= 0.9", "host:modelwatch_memory:value >= 0.9"]
    assert "{{ $labels.host }}" in alerts[0]["annotations"]["summary"]


@pytest.mark.parametrize(
    ("text", "expected"), [("5m", "5m"), ("90s", "90s"), ("2h", "2h"), ("1.5s", "1500ms"), (600, "10m")]
)
def test_durations_in_prometheus_syntax(text: Any, expected: str) -> None:
    raw = small_raw()
    raw["rules"] = {"saturation_for": text}
    assert prometheus_duration(ModelwatchConfig.model_validate(raw).rules.saturation_for) == expected


@pytest.mark.parametrize(
    ("rules", "words"),
    [
        ({"saturation_for": "0s"}, ["rules.saturation_for", "positive"]),
        ({"saturation_for": "soon"}, ["rules.saturation_for", "not a duration"]),
        ({"alertname": "ModelPredictionsDegraded"}, ["rules.alertname", "already an alertname"]),
        ({"alertname": "not a name"}, ["rules.alertname"]),
        ({"severity": "loud"}, ["rules.severity"]),
        ({"for": "5m"}, ["rules.for", "unknown key"]),
    ],
)
def test_a_wrong_rules_section_is_a_config_error_naming_the_key(tmp_path: Path, rules: dict[str, Any],
                                                                 words: list[str]) -> None:  # fmt: skip
    raw = yaml.safe_load(THRESHOLDS.read_text(encoding="utf-8"))
    raw["rules"] = rules
    path = tmp_path / "thresholds.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    for word in [str(path), *words]:
        assert word in str(err.value), str(err.value)


def test_render_is_deterministic(cfg: ModelwatchConfig) -> None:
    assert render(cfg) == render(load_config(THRESHOLDS))
    assert render(cfg).startswith("# Generated from thresholds.yaml")


# -- the committed renders --------------------------------------------------------------------------------


def test_committed_rules_are_the_render_of_thresholds_yaml(cfg: ModelwatchConfig) -> None:
    assert (COMMITTED / RULES_FILE).read_text(encoding="utf-8") == render(cfg), (
        f"compose/prometheus-rules/{RULES_FILE} is stale: run {REGENERATE}"
    )


def test_committed_definition_is_the_render_of_thresholds_yaml(cfg: ModelwatchConfig) -> None:
    assert (COMMITTED / DEFINITION_FILE).read_text(encoding="utf-8") == alertmanager_definition(cfg, TOPIC), (
        f"compose/prometheus-rules/{DEFINITION_FILE} is stale: run {REGENERATE}"
    )


# -- the real checkers ------------------------------------------------------------------------------------


def test_promtool_accepts_the_rules_and_rejects_broken_ones(cfg: ModelwatchConfig, tmp_path: Path) -> None:
    promtool = _tool("promtool")
    good = tmp_path / "good.yml"
    good.write_text(render(cfg), encoding="utf-8")
    proc = _run([promtool, "check", "rules", str(good)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {2 * len(cfg.saturation_thresholds)} rules found" in proc.stdout, proc.stdout
    # the check is known to work: an unbalanced parenthesis and a bad duration are refused
    for broken in (render(cfg).replace("[1m]))", "[1m])", 1), render(cfg).replace("for: 5m", "for: 5 minutes", 1)):
        bad = tmp_path / "bad.yml"
        bad.write_text(broken, encoding="utf-8")
        assert _run([promtool, "check", "rules", str(bad)]).returncode != 0, broken


def test_amtool_accepts_the_definitions_configuration(cfg: ModelwatchConfig, tmp_path: Path) -> None:
    path = tmp_path / "alertmanager.yml"
    path.write_text(inner_config(alertmanager_definition(cfg, TOPIC)), encoding="utf-8")
    proc = _run([_tool("amtool"), "check-config", str(path)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 inhibit rules" in proc.stdout and "2 receivers" in proc.stdout, proc.stdout
    bad = tmp_path / "bad.yml"
    bad.write_text(path.read_text(encoding="utf-8").replace(f"receiver: {SNS_RECEIVER}", "receiver: nobody", 1))
    assert _run([_tool("amtool"), "check-config", str(bad)]).returncode != 0


def _route(config: Path, labels: dict[str, str]) -> str:
    argv = [_tool("amtool"), "config", "routes", "test", f"--config.file={config}"]
    proc = _run(argv + [f"{k}={v}" for k, v in labels.items()])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.strip()


def test_every_modelwatch_alert_reaches_the_sns_topic_and_nothing_else_does(cfg: ModelwatchConfig,
                                                                            tmp_path: Path) -> None:  # fmt: skip
    path = tmp_path / "alertmanager.yml"
    path.write_text(inner_config(alertmanager_definition(cfg, TOPIC)), encoding="utf-8")
    names = modelwatch_alertnames(cfg)
    assert set(names) == {"ModelPredictionsDegraded", "ModelPredictionsMissing", "ModelPredictionsSlowUnexplained",
                          "ModelQualityRegressed", "ModelInputsDrifted", "ModelwatchResourceSaturated"}  # fmt: skip
    for name in names:
        source = SOURCE if name == cfg.rules.alertname else "modelwatch"
        labels = {"alertname": name, "source": source, "model": "fraud-detector", "resource": "cpu",
                  "instance": "node-1"}  # fmt: skip
        assert _route(path, labels) == SNS_RECEIVER, name
    assert _route(path, {"alertname": "SomeoneElsesAlert", "source": "other"}) == NULL_RECEIVER
    assert _route(path, {"alertname": "ModelPredictionsDegraded", "source": "other"}) == NULL_RECEIVER
    sns = yaml.safe_load(path.read_text())["receivers"][1]["sns_configs"][0]
    assert sns["topic_arn"] == TOPIC and sns["sigv4"] == {"region": "us-east-1"}


def test_the_topic_arn_is_checked_and_gives_the_region(cfg: ModelwatchConfig) -> None:
    assert sns_region("arn:aws:sns:eu-west-1:123456789012:alerts") == "eu-west-1"
    with pytest.raises(RulesError, match="not an SNS topic ARN"):
        alertmanager_definition(cfg, "arn:aws:sqs:us-east-1:123456789012:queue")
    doc = yaml.safe_load(inner_config(alertmanager_definition(cfg, TOPIC, region="us-west-2")))
    assert doc["receivers"][1]["sns_configs"][0]["sigv4"] == {"region": "us-west-2"}


# -- the command ------------------------------------------------------------------------------------------


def test_cli_writes_both_files(tmp_path: Path, cfg: ModelwatchConfig) -> None:
    rules, definition = tmp_path / "out" / RULES_FILE, tmp_path / "out" / DEFINITION_FILE
    assert main(["render", "--config", str(THRESHOLDS), "--out", str(rules)]) == 0
    assert main(["alertmanager", "--config", str(THRESHOLDS), "--sns-topic-arn", TOPIC, "--out", str(definition)]) == 0
    assert rules.read_text() == render(cfg) and definition.read_text() == alertmanager_definition(cfg, TOPIC)


def test_cli_errors_name_the_file_or_the_arn(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.yaml"
    assert main(["render", "--config", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err
    assert main(["alertmanager", "--config", str(THRESHOLDS), "--sns-topic-arn", "my-topic"]) == 2
    assert "'my-topic' is not an SNS topic ARN" in capsys.readouterr().err


def test_compose_prometheus_loads_the_committed_rules_and_only_them(cfg: ModelwatchConfig, tmp_path: Path) -> None:
    # docker-compose.yaml mounts compose/prometheus-rules into the container; compose/prometheus.yml's
    # rule_files glob must match the rule file there, not the alert manager definition beside it
    compose = yaml.safe_load((REPO / "docker-compose.yaml").read_text(encoding="utf-8"))
    mounts = dict(reversed(v.split(":")[:2]) for v in compose["services"]["prometheus"]["volumes"] if v.startswith("./"))
    prom = yaml.safe_load((REPO / "compose" / "prometheus.yml").read_text(encoding="utf-8"))
    (pattern,) = prom["rule_files"]
    folder, glob = pattern.rsplit("/", 1)
    assert mounts[folder] == "./compose/prometheus-rules"
    assert sorted(p.name for p in COMMITTED.glob(glob)) == [RULES_FILE]
    # promtool checks the configuration together with the rule files it names, as Prometheus loads them
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump({**prom, "rule_files": [str(COMMITTED / glob)]}), encoding="utf-8")
    proc = _run([_tool("promtool"), "check", "config", str(local)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = f"SUCCESS: {2 * len(cfg.saturation_thresholds)} rules found"
    assert found in proc.stdout + proc.stderr, proc.stdout + proc.stderr


@pytest.mark.parametrize("which", ["compose", "devstack"])
def test_local_alertmanagers_send_the_rules_alerts_to_the_webhook_only(which: str, tmp_path: Path) -> None:
    # the machine's own load can trip them in a test session: mail stays the channel of the DAG's verdicts
    from devstack.stack import StackConfig
    from devstack.stack import alertmanager_config as devstack_alertmanager

    path = REPO / "compose" / "alertmanager.yml"
    if which == "devstack":
        path = tmp_path / "alertmanager.yml"
        path.write_text(yaml.safe_dump(devstack_alertmanager(StackConfig()), sort_keys=False), encoding="utf-8")
    labels = {"alertname": "ModelwatchResourceSaturated", "source": SOURCE, "resource": "load", "instance": "h:9100"}
    assert _route(path, labels) == "modelwatch-webhook"
