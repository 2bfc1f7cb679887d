"""The rules from thresholds.yaml on the real servers of the session stack.

- The stack's Prometheus (2.42) loads the rule file the stack renders from include/thresholds.yaml, and records
  each saturation query.
- A saturation alert fires on a live incident: the shipped memory query, unchanged, under a name of the test's
  own and with a threshold below the host's memory in use right now, rendered into the stack's rules folder;
  Prometheus reloads, the alert fires per instance and reaches the stack's Alertmanager.
- ``python -m modelwatch.rules publish`` against moto's AMP (the stack's moto server): twice leaves one rule
  groups namespace holding the second render; a third publish changes nothing; a missing workspace is an
  error naming it.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from polling import wait_until

from devstack.stack import RULES_FILE_NAME, S3_ACCESS_KEY, S3_REGION, S3_SECRET_KEY
from modelwatch.config import DEFAULT_CONFIG_PATH, ModelwatchConfig, load_config
from modelwatch.rules import ALERTING_GROUP, RECORDING_GROUP, SOURCE, main, record_name, render

#: the resource name of the test's incident (its own: the shipped rules record `memory` beside it)
DRILL = "memory_drill"


def _get(url: str) -> Any:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as resp:
        return json.loads(resp.read())


def _query(stack: Any, promql: str) -> list[dict[str, Any]]:
    url = f"{stack.config.prometheus_url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    return _get(url)["data"]["result"]


def _groups(stack: Any) -> dict[tuple[str, str], dict[str, Any]]:
    """(file name, group name) -> the group as Prometheus holds it."""
    doc = _get(f"{stack.config.prometheus_url}/api/v1/rules")["data"]["groups"]
    return {(Path(g["file"]).name, g["name"]): g for g in doc}


def _reload(stack: Any) -> None:
    req = urllib.request.Request(f"{stack.config.prometheus_url}/-/reload", method="POST")
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=30) as resp:
        assert resp.status == 200


@pytest.fixture(scope="module")
def shipped() -> ModelwatchConfig:
    return load_config(DEFAULT_CONFIG_PATH)


def test_prometheus_loads_and_evaluates_the_rules_of_thresholds_yaml(stack: Any, shipped: ModelwatchConfig) -> None:
    path = stack.config.prometheus_rules_dir / RULES_FILE_NAME
    assert path.read_text(encoding="utf-8") == render(shipped)
    groups = _groups(stack)
    expected = {g["name"]: g for g in yaml.safe_load(render(shipped))["groups"]}
    for name in (RECORDING_GROUP, ALERTING_GROUP):
        held = groups[(RULES_FILE_NAME, name)]
        assert [r.get("name") for r in held["rules"]] == [r.get("record", r.get("alert")) for r in expected[name]["rules"]]
    alerts = groups[(RULES_FILE_NAME, ALERTING_GROUP)]["rules"]
    assert {a["labels"]["resource"] for a in alerts} == set(shipped.saturation_thresholds)
    assert {a["duration"] for a in alerts} == {300}
    # the recording rules run: the host's memory in use, recorded per instance from the configured PromQL
    memory = record_name(shipped, shipped.query("memory"))
    recorded = wait_until(lambda: _query(stack, memory), timeout=30, what=f"{memory} recorded by Prometheus")
    assert {r["metric"]["instance"] for r in recorded} == {f"127.0.0.1:{stack.config.node_exporter_port}"}
    assert 0 < float(recorded[0]["value"][1]) < 1


def test_a_saturation_alert_fires_per_instance_and_reaches_alertmanager(stack: Any, shipped: ModelwatchConfig) -> None:
    memory = shipped.query("memory")
    now = wait_until(lambda: _query(stack, memory.promql), timeout=30, what="the host's memory in use")
    in_use = float(now[0]["value"][1])
    raw = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text(encoding="utf-8"))
    # the incident: the shipped PromQL unchanged, saturated at half of what the host uses now, held for 5 s
    raw["prometheus"]["queries"] = [{"name": DRILL, "promql": memory.promql, "saturation": round(in_use / 2, 4),
                                     "unit": "ratio"}]  # fmt: skip
    raw["rules"] = {**raw.get("rules", {}), "saturation_for": "5s"}
    drill_file = stack.config.prometheus_rules_dir / "test-drill.rules.yml"
    drill_file.write_text(render(ModelwatchConfig.model_validate(raw)), encoding="utf-8")
    instance = f"127.0.0.1:{stack.config.node_exporter_port}"
    try:
        _reload(stack)

        def firing() -> list[dict[str, Any]]:
            alerts = _get(f"{stack.config.prometheus_url}/api/v1/alerts")["data"]["alerts"]
            return [a for a in alerts if a["labels"].get("resource") == DRILL and a["state"] == "firing"]

        (alert,) = wait_until(firing, timeout=60, interval=1, what=f"{shipped.rules.alertname} firing for {DRILL}")
        assert alert["labels"] == {
            "alertname": shipped.rules.alertname, "resource": DRILL, "severity": "warning", "source": SOURCE,
            "instance": instance, "job": "node-local",
        }  # fmt: skip
        assert alert["annotations"]["summary"] == f"{DRILL} saturated on {instance}"
        assert f"at or above its saturation threshold {round(in_use / 2, 4)} ratio" in alert["annotations"]["description"]

        query = urllib.parse.urlencode(
            [("filter", f'alertname="{shipped.rules.alertname}"'), ("filter", f'resource="{DRILL}"')]
        )
        held = wait_until(lambda: _get(f"{stack.config.alertmanager_url}/api/v2/alerts?{query}"), timeout=30,
                          interval=0.5, what="the saturation alert in Alertmanager")  # fmt: skip
        assert held[0]["labels"]["instance"] == instance and held[0]["status"]["state"] == "active"
        # the stack's Alertmanager notifies the webhook receiver of it (its route for source="modelwatch-rules")
        wait_until(lambda: [a for n in stack.webhook_notifications() for a in n.get("alerts", [])
                            if a["labels"].get("resource") == DRILL], timeout=30, interval=0.5,
                   what="the saturation alert at the webhook receiver")  # fmt: skip
    finally:
        drill_file.unlink(missing_ok=True)
        _reload(stack)
    assert not any(f == drill_file.name for f, _ in _groups(stack))


# -- publishing to AMP (moto) ---------------------------------------------------------------------------------


@pytest.fixture
def amp(stack: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A boto3 ``amp`` client on the stack's moto server, credentials in the environment as the CLI reads them."""
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return boto3.client("amp", region_name=S3_REGION, endpoint_url=stack.config.s3_url)


def _publish(stack: Any, workspace: str, config: Path) -> list[str]:
    return ["publish", "--config", str(config), "--workspace-id", workspace, "--region", S3_REGION,
            "--endpoint-url", stack.config.s3_url]  # fmt: skip


def test_publishing_twice_leaves_one_namespace_with_the_new_rules(
    stack: Any, amp: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    workspace = amp.create_workspace(alias="modelwatch-rules-test")["workspaceId"]
    raw = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text(encoding="utf-8"))
    raw["rules"] = {**raw.get("rules", {}), "saturation_for": "10m"}
    changed = tmp_path / "thresholds.yaml"
    changed.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")

    assert main(_publish(stack, workspace, DEFAULT_CONFIG_PATH)) == 0
    assert main(_publish(stack, workspace, changed)) == 0
    assert main(_publish(stack, workspace, changed)) == 0
    said = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in said] == ["created", "updated", "unchanged"], said
    assert workspace in said[0] and "'modelwatch'" in said[0]

    listed = amp.list_rule_groups_namespaces(workspaceId=workspace)["ruleGroupsNamespaces"]
    assert [ns["name"] for ns in listed] == ["modelwatch"]
    held = amp.describe_rule_groups_namespace(workspaceId=workspace, name="modelwatch")["ruleGroupsNamespace"]
    assert held["data"].decode() == render(load_config(changed))
    assert "for: 10m" in held["data"].decode()


def test_publishing_to_a_missing_workspace_names_it(stack: Any, amp: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_publish(stack, "ws-does-not-exist", DEFAULT_CONFIG_PATH)) == 2
    err = capsys.readouterr().err
    assert "AMP workspace 'ws-does-not-exist'" in err and "ResourceNotFoundException" in err, err
