"""The Pulumi program (infra/): its resources, their links and the IAM policy, under Pulumi's mocks.

``pulumi.runtime.set_mocks`` replaces the engine: every resource the program declares reaches
:meth:`Recorder.new_resource` with its resolved inputs (provider property names, camelCase), which returns
an id and the outputs a real provider would (ARNs, endpoint, invoke URL); data sources reach
:meth:`Recorder.call`. No Pulumi CLI, no AWS account, no network.
"""

from __future__ import annotations

import json
import runpy
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

from modelwatch_infra.alertmanager import definition_with_topic, parse_definition
from modelwatch_infra.policies import (
    APS_ALERT_ACTIONS,
    APS_ALERTMANAGER_DEFINITION_ACTIONS,
    APS_QUERY_ACTIONS,
    APS_RULES_ACTIONS,
    policy_document,
    rules_namespace_arn,
)
from modelwatch_infra.program import build
from modelwatch_infra.settings import DEFAULT_ALERTMANAGER_FILE, DEFAULT_RULES_FILE, REPO, Settings

ACCOUNT = "111122223333"
REGION = "eu-west-1"
PRINCIPAL = f"arn:aws:iam::{ACCOUNT}:role/airflow-workers"
BUCKET = "acme-ml-lake"
PREFIX = "modelwatch/lake"
ENDPOINT = "https://models.internal.example.com/v1"
WORKSPACE_ID = "ws-0123abcd-4567-89ef"
WORKSPACE_ARN = f"arn:aws:aps:{REGION}:{ACCOUNT}:workspace/{WORKSPACE_ID}"
API_ID = "a1b2c3d4e5"

SETTINGS = Settings(principal_arn=PRINCIPAL, lake_bucket=BUCKET, model_endpoint_url=ENDPOINT, lake_prefix=PREFIX)

#: the least-privilege set, written out once more by hand: a change to the policy must change this test
EXPECTED_ACTIONS = {
    "aps:QueryMetrics", "aps:GetSeries", "aps:GetLabels", "aps:GetMetricMetadata",
    "aps:CreateAlertManagerAlerts", "aps:ListAlertManagerAlerts",
    "aps:CreateAlertManagerDefinition", "aps:PutAlertManagerDefinition", "aps:DescribeAlertManagerDefinition",
    "aps:CreateRuleGroupsNamespace", "aps:PutRuleGroupsNamespace", "aps:DescribeRuleGroupsNamespace",
    "cloudwatch:GetMetricData",
    "s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket",
}  # fmt: skip


@dataclass
class Registered:
    typ: str
    name: str
    id: str
    inputs: dict[str, Any]
    state: dict[str, Any]


@dataclass
class Recorder(pulumi.runtime.Mocks):
    """Answers like the AWS provider would for the resources the program declares, and records them."""

    resources: list[Registered] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        inputs = dict(args.inputs)
        state = dict(inputs)
        rid = f"{args.name}-id"
        typ = args.typ
        if typ == "aws:amp/workspace:Workspace":
            rid = WORKSPACE_ID
            state["arn"] = WORKSPACE_ARN
            state["prometheusEndpoint"] = f"https://aps-workspaces.{REGION}.amazonaws.com/workspaces/{rid}/"
        elif typ == "aws:amp/ruleGroupNamespace:RuleGroupNamespace":
            state["arn"] = rules_namespace_arn(WORKSPACE_ARN, inputs["name"])
        elif typ == "aws:sns/topic:Topic":
            state["arn"] = f"arn:aws:sns:{REGION}:{ACCOUNT}:{inputs['name']}"
        elif typ == "aws:iam/role:Role":
            rid = f"{args.name}-role"
            state["name"] = rid
            state["arn"] = f"arn:aws:iam::{ACCOUNT}:role/{rid}"
        elif typ == "aws:cloudwatch/logGroup:LogGroup":
            state["arn"] = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{inputs['name']}"
        elif typ == "aws:apigateway/restApi:RestApi":
            rid = API_ID
            state["rootResourceId"] = "rootres"
        elif typ == "aws:apigateway/stage:Stage":
            state["invokeUrl"] = f"https://{inputs['restApi']}.execute-api.{REGION}.amazonaws.com/{inputs['stageName']}"
        self.resources.append(Registered(typ, args.name, rid, inputs, state))
        return rid, state

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict:
        self.calls.append(args.token)
        if args.token == "aws:index/getPartition:getPartition":
            return {"partition": "aws", "dnsSuffix": "amazonaws.com", "id": "aws", "reverseDnsPrefix": "com.amazonaws"}
        raise AssertionError(f"unexpected data source call {args.token}")

    def all(self, typ: str) -> list[Registered]:
        return [r for r in self.resources if r.typ == f"aws:{typ}"]

    def one(self, typ: str) -> Registered:
        found = self.all(typ)
        assert len(found) == 1, f"{len(found)} resources of type {typ}: {[r.name for r in found]}"
        return found[0]


@dataclass
class Run:
    mocks: Recorder
    outputs: dict[str, Any]


def _own_event_loop() -> None:
    # Pulumi's mocks run the program on the thread's current event loop (asyncio.get_event_loop()). Earlier
    # tests of the same session (Airflow's, anything that ran asyncio.run) leave the main thread without one.
    import asyncio

    asyncio.set_event_loop(asyncio.new_event_loop())


def run_program(settings: Settings) -> Run:
    """Run :func:`build` under fresh mocks; every registration has happened when this returns."""
    _own_event_loop()
    mocks = Recorder()
    pulumi.runtime.set_mocks(mocks, project="modelwatch", stack="test", preview=False)
    outputs: dict[str, Any] = {}

    @pulumi.runtime.test
    def program():
        return pulumi.Output.all(**build(settings)).apply(outputs.update)

    program()
    return Run(mocks, outputs)


@pytest.fixture(scope="module")
def run() -> Run:
    return run_program(SETTINGS)


# --- the resources and their links ---------------------------------------------------------------------


def test_the_resources(run: Run) -> None:
    kinds = sorted({r.typ for r in run.mocks.resources})
    assert kinds == sorted(
        f"aws:{t}"
        for t in (
            "amp/workspace:Workspace", "amp/ruleGroupNamespace:RuleGroupNamespace",
            "amp/alertManagerDefinition:AlertManagerDefinition", "sns/topic:Topic", "sns/topicPolicy:TopicPolicy",
            "apigateway/restApi:RestApi", "apigateway/resource:Resource", "apigateway/method:Method",
            "apigateway/integration:Integration", "apigateway/deployment:Deployment", "apigateway/stage:Stage",
            "apigateway/methodSettings:MethodSettings", "apigateway/account:Account", "cloudwatch/logGroup:LogGroup",
            "iam/role:Role", "iam/rolePolicy:RolePolicy", "iam/rolePolicyAttachment:RolePolicyAttachment",
        )
    )  # fmt: skip
    assert run.mocks.calls == ["aws:index/getPartition:getPartition"]


def test_the_rules_namespace_holds_the_rendered_rules_file(run: Run) -> None:
    rules = run.mocks.one("amp/ruleGroupNamespace:RuleGroupNamespace")
    assert rules.inputs["workspaceId"] == WORKSPACE_ID
    assert rules.inputs["name"] == "modelwatch"  # modelwatch.rules.NAMESPACE: its publish finds the same one
    assert rules.inputs["data"] == (REPO / DEFAULT_RULES_FILE).read_text(encoding="utf-8")
    assert yaml.safe_load(rules.inputs["data"])["groups"], "the rendered rules file has no groups"
    assert run.mocks.one("amp/workspace:Workspace").inputs["alias"] == "modelwatch"


def test_the_alert_manager_definition_sends_to_the_topic(run: Run) -> None:
    topic = run.mocks.one("sns/topic:Topic")
    definition = run.mocks.one("amp/alertManagerDefinition:AlertManagerDefinition")
    assert definition.inputs["workspaceId"] == WORKSPACE_ID
    _, config = parse_definition(definition.inputs["definition"])
    sns = [c for r in config["receivers"] for c in r.get("sns_configs") or []]
    assert sns and all(c["topic_arn"] == topic.state["arn"] for c in sns)
    assert all(c["sigv4"]["region"] == REGION for c in sns)
    # the rest of the rendered configuration is kept
    _, rendered = parse_definition((REPO / DEFAULT_ALERTMANAGER_FILE).read_text(encoding="utf-8"))
    assert config["route"] == rendered["route"]
    assert config.get("inhibit_rules") == rendered.get("inhibit_rules")
    assert [r["name"] for r in config["receivers"]] == [r["name"] for r in rendered["receivers"]]


def test_the_topic_policy_lets_only_this_workspace_publish(run: Run) -> None:
    topic = run.mocks.one("sns/topic:Topic")
    policy = run.mocks.one("sns/topicPolicy:TopicPolicy")
    assert policy.inputs["arn"] == topic.state["arn"]
    (statement,) = json.loads(policy.inputs["policy"])["Statement"]
    assert statement["Principal"] == {"Service": "aps.amazonaws.com"}
    assert set(statement["Action"]) == {"sns:Publish", "sns:GetTopicAttributes"}
    assert statement["Resource"] == topic.state["arn"]
    assert statement["Condition"] == {
        "ArnEquals": {"aws:SourceArn": WORKSPACE_ARN},
        "StringEquals": {"aws:SourceAccount": ACCOUNT},
    }


def test_the_stage_logs_and_measures(run: Run) -> None:
    api = run.mocks.one("apigateway/restApi:RestApi")
    stage = run.mocks.one("apigateway/stage:Stage")
    groups = {g.name: g for g in run.mocks.all("cloudwatch/logGroup:LogGroup")}
    access = groups["modelwatch-access-logs"]
    assert stage.inputs["restApi"] == API_ID
    assert stage.inputs["stageName"] == "prod"
    assert stage.inputs["accessLogSettings"]["destinationArn"] == access.state["arn"]
    fmt = json.loads(stage.inputs["accessLogSettings"]["format"])
    assert fmt["requestId"] == "$context.requestId"  # API Gateway refuses a format without it
    assert {"status", "responseLatency", "integrationLatency"} <= fmt.keys()
    assert access.inputs["retentionInDays"] == 30
    assert groups["modelwatch-execution-logs"].inputs["name"] == f"API-Gateway-Execution-Logs_{API_ID}/prod"
    settings = run.mocks.one("apigateway/methodSettings:MethodSettings")
    assert settings.inputs["restApi"] == API_ID
    assert settings.inputs["stageName"] == stage.inputs["stageName"]
    assert settings.inputs["methodPath"] == "*/*"
    assert settings.inputs["settings"]["metricsEnabled"] is True
    assert settings.inputs["settings"]["loggingLevel"] == "INFO"
    assert settings.inputs["settings"]["dataTraceEnabled"] is False
    deployment = run.mocks.one("apigateway/deployment:Deployment")
    assert stage.inputs["deployment"] == deployment.id
    assert deployment.inputs["restApi"] == api.id


def test_the_api_proxies_to_the_model_endpoint(run: Run) -> None:
    proxy = run.mocks.one("apigateway/resource:Resource")
    method = run.mocks.one("apigateway/method:Method")
    integration = run.mocks.one("apigateway/integration:Integration")
    assert proxy.inputs == {"restApi": API_ID, "parentId": "rootres", "pathPart": "{proxy+}"}
    assert method.inputs["resourceId"] == proxy.id
    assert method.inputs["authorization"] == "AWS_IAM"
    assert integration.inputs["resourceId"] == proxy.id
    assert integration.inputs["type"] == "HTTP_PROXY"
    assert integration.inputs["uri"] == ENDPOINT + "/{proxy}"
    assert integration.inputs["requestParameters"] == {"integration.request.path.proxy": "method.request.path.proxy"}


def test_api_gateway_gets_its_cloudwatch_logs_role(run: Run) -> None:
    account = run.mocks.one("apigateway/account:Account")
    roles = {r.name: r for r in run.mocks.all("iam/role:Role")}
    role = roles["modelwatch-apigateway-cloudwatch"]
    assert account.inputs["cloudwatchRoleArn"] == role.state["arn"]
    trust = json.loads(role.inputs["assumeRolePolicy"])
    assert [s["Principal"] for s in trust["Statement"]] == [{"Service": "apigateway.amazonaws.com"}]
    attachment = run.mocks.one("iam/rolePolicyAttachment:RolePolicyAttachment")
    assert attachment.inputs == {
        "role": role.state["name"],
        "policyArn": "arn:aws:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs",
    }


def test_modelwatchs_role_and_its_least_privilege_policy(run: Run) -> None:
    role = {r.name: r for r in run.mocks.all("iam/role:Role")}["modelwatch-airflow"]
    trust = json.loads(role.inputs["assumeRolePolicy"])
    assert trust["Statement"] == [{"Effect": "Allow", "Principal": {"AWS": PRINCIPAL}, "Action": "sts:AssumeRole"}]
    policy = run.mocks.one("iam/rolePolicy:RolePolicy")
    assert policy.inputs["role"] == role.id
    statements = json.loads(policy.inputs["policy"])["Statement"]
    assert {a for s in statements for a in s["Action"]} == EXPECTED_ACTIONS
    assert all(s["Effect"] == "Allow" for s in statements)
    by_action = {a: s for s in statements for a in s["Action"]}
    for action in (*APS_QUERY_ACTIONS, *APS_ALERT_ACTIONS, *APS_ALERTMANAGER_DEFINITION_ACTIONS):
        assert by_action[action]["Resource"] == WORKSPACE_ARN, action
    for action in APS_RULES_ACTIONS:
        assert by_action[action]["Resource"] == [
            f"arn:aws:aps:{REGION}:{ACCOUNT}:rulegroupsnamespace/{WORKSPACE_ID}/modelwatch"
        ], action
    assert by_action["cloudwatch:GetMetricData"]["Resource"] == "*"  # AWS has no resource-level permission
    for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"):
        assert by_action[action]["Resource"] == f"arn:aws:s3:::{BUCKET}/{PREFIX}/*", action
    listing = by_action["s3:ListBucket"]
    assert listing["Resource"] == f"arn:aws:s3:::{BUCKET}"
    assert listing["Condition"] == {"StringLike": {"s3:prefix": [PREFIX, f"{PREFIX}/*"]}}
    # no wildcard anywhere else, in actions or resources
    assert not [a for a in EXPECTED_ACTIONS if "*" in a]
    wild = [s["Sid"] for s in statements for r in _list(s["Resource"]) if "*" in r]
    assert sorted(wild) == ["CloudWatchMetrics", "LakeObjects"]


def test_the_stack_outputs(run: Run) -> None:
    roles = {r.name: r for r in run.mocks.all("iam/role:Role")}
    assert run.outputs == {
        "workspace_id": WORKSPACE_ID,
        "workspace_arn": WORKSPACE_ARN,
        "prometheus_endpoint": f"https://aps-workspaces.{REGION}.amazonaws.com/workspaces/{WORKSPACE_ID}/",
        "rules_namespace": "modelwatch",
        "role_arn": roles["modelwatch-airflow"].state["arn"],
        "stage_invoke_url": f"https://{API_ID}.execute-api.{REGION}.amazonaws.com/prod",
        "access_log_group": "/aws/apigateway/modelwatch-models/prod/access",
        "sns_topic_arn": f"arn:aws:sns:{REGION}:{ACCOUNT}:modelwatch-alerts",
    }


def test_without_the_account_setting_no_account_wide_resource() -> None:
    run = run_program(replace(SETTINGS, manage_apigateway_account=False, api_authorization="NONE"))
    assert not run.mocks.all("apigateway/account:Account")
    assert [r.name for r in run.mocks.all("iam/role:Role")] == ["modelwatch-airflow"]
    assert not run.mocks.calls
    assert run.mocks.one("apigateway/method:Method").inputs["authorization"] == "NONE"
    assert run.mocks.all("apigateway/stage:Stage")


def test_main_reads_the_stack_config(tmp_path: Path) -> None:
    """infra/__main__.py as `pulumi up` runs it: config keys of namespace modelwatch, the outputs exported."""
    rules = tmp_path / "rules.yml"
    rules.write_text("groups:\n- name: g\n  rules:\n  - record: r\n    expr: vector(1)\n", encoding="utf-8")
    definition = tmp_path / "am.yml"
    definition.write_text("route:\n  receiver: sns\nreceivers:\n- name: sns\n", encoding="utf-8")
    _own_event_loop()
    mocks = Recorder()
    pulumi.runtime.set_mocks(mocks, project="modelwatch", stack="test", preview=False)
    pulumi.runtime.set_all_config({
        "modelwatch:principalArn": PRINCIPAL, "modelwatch:lakeBucket": BUCKET, "modelwatch:lakePrefix": "/lake/",
        "modelwatch:modelEndpointUrl": ENDPOINT, "modelwatch:rulesFile": str(rules),
        "modelwatch:alertmanagerFile": str(definition), "modelwatch:stageName": "v1",
        "modelwatch:logRetentionDays": "14", "modelwatch:manageApiGatewayAccount": "false",
    })  # fmt: skip
    try:
        pulumi.runtime.test(lambda: runpy.run_path(str(REPO / "infra" / "__main__.py")) and None)()
    finally:
        pulumi.runtime.set_all_config({})
    assert mocks.one("amp/ruleGroupNamespace:RuleGroupNamespace").inputs["data"] == rules.read_text()
    assert mocks.one("apigateway/stage:Stage").inputs["stageName"] == "v1"
    assert not mocks.all("apigateway/account:Account")
    policy = json.loads(mocks.one("iam/rolePolicy:RolePolicy").inputs["policy"])
    assert {s["Sid"]: s["Resource"] for s in policy["Statement"]}["LakeObjects"] == f"arn:aws:s3:::{BUCKET}/lake/*"
    _, config = parse_definition(mocks.one("amp/alertManagerDefinition:AlertManagerDefinition").inputs["definition"])
    assert config["receivers"][0]["sns_configs"][0]["topic_arn"].endswith(":modelwatch-alerts")


# --- the pure parts -----------------------------------------------------------------------------------


def _list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def test_policy_document_follows_the_workspace_partition_and_prefix() -> None:
    arn = "arn:aws-us-gov:aps:us-gov-west-1:111122223333:workspace/ws-1"
    doc = policy_document(arn, "lake", "/a/b/", ("ns1", "ns2"))
    by_sid = {s["Sid"]: s for s in doc["Statement"]}
    assert by_sid["AmpRules"]["Resource"] == [
        "arn:aws-us-gov:aps:us-gov-west-1:111122223333:rulegroupsnamespace/ws-1/ns1",
        "arn:aws-us-gov:aps:us-gov-west-1:111122223333:rulegroupsnamespace/ws-1/ns2",
    ]
    assert by_sid["LakeObjects"]["Resource"] == "arn:aws-us-gov:s3:::lake/a/b/*"
    with pytest.raises(ValueError, match="prefix must not be empty"):
        policy_document(arn, "lake", "/")
    with pytest.raises(ValueError, match="not an AMP workspace ARN"):
        policy_document("arn:aws:sns:us-east-1:111122223333:topic", "lake", "p")


def test_definition_with_topic_keeps_amp_form_and_replaces_every_topic() -> None:
    text = (REPO / DEFAULT_ALERTMANAGER_FILE).read_text(encoding="utf-8")
    topic = f"arn:aws:sns:{REGION}:{ACCOUNT}:mine"
    out = definition_with_topic(text, topic, REGION)
    doc = yaml.safe_load(out)
    assert set(doc) == {"alertmanager_config"} and isinstance(doc["alertmanager_config"], str)
    assert "alertmanager_config: |" in out  # the embedded configuration stays a readable block
    config = yaml.safe_load(doc["alertmanager_config"])
    sns = [c for r in config["receivers"] for c in r.get("sns_configs") or []]
    assert sns and {c["topic_arn"] for c in sns} == {topic}
    assert definition_with_topic(out, topic, REGION) == out  # idempotent: a second `pulumi up` changes nothing


def test_definition_without_sns_receiver_gets_one_on_its_route() -> None:
    out = definition_with_topic("route:\n  receiver: team\nreceivers:\n- name: team\n", "arn:aws:sns:r:1:t", "r")
    config = yaml.safe_load(yaml.safe_load(out)["alertmanager_config"])
    assert config["receivers"] == [{"name": "team", "sns_configs": [{"topic_arn": "arn:aws:sns:r:1:t",
                                                                     "sigv4": {"region": "r"}}]}]  # fmt: skip
    out = definition_with_topic("alertmanager_config: |\n  route: {}\ntemplate_files: {}\n", "arn:aws:sns:r:1:t", "r")
    doc = yaml.safe_load(out)
    assert doc["template_files"] == {}
    assert yaml.safe_load(doc["alertmanager_config"])["route"] == {"receiver": "sns"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a list", "not a YAML mapping"),
        ("groups: []", "neither 'alertmanager_config' nor 'route'"),
        ("alertmanager_config: |\n  receivers: []\n", "no 'route'"),
        ("route: {receiver: w}\nreceivers:\n- name: w\n  webhook_configs: [{url: 'http://x'}]\n",
         "only to SNS; the definition names w: webhook_configs"),
    ],
)  # fmt: skip
def test_definitions_amp_would_refuse_fail_early(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_definition(text)


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError) as err:
        Settings(principal_arn="arn:aws:sts::111122223333:assumed-role/x/y", lake_bucket="Bad_Bucket",
                 model_endpoint_url="models.example.com", logging_level="DEBUG", log_retention_days=2)  # fmt: skip
    for key in ("principalArn", "lakeBucket", "modelEndpointUrl", "loggingLevel", "logRetentionDays"):
        assert key in str(err.value)


def test_a_missing_rendered_file_names_the_key(tmp_path: Path) -> None:
    settings = replace(SETTINGS, rules_file=tmp_path / "absent.yml")
    with pytest.raises(FileNotFoundError, match="modelwatch:rulesFile"):
        settings.read_rules()
