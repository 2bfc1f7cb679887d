"""modelwatch's AWS resources, declared by small functions; :func:`build` wires them and returns the
stack's outputs.

- an Amazon Managed Service for Prometheus workspace, its rule groups namespace (the rendered rules file as
  it is) and its alert manager definition (the rendered definition, SNS receivers pointed at the topic);
- the SNS topic AMP's alert manager publishes to, with the access policy AMP needs;
- a REST API in front of the model endpoint (HTTP_PROXY), a stage with access logs to a log group of its
  own, CloudWatch metrics and execution logging on every method; and, unless
  ``manageApiGatewayAccount: false``, the region-wide API Gateway account setting with the CloudWatch Logs
  role that API Gateway needs to write any of those logs;
- the IAM role modelwatch's Airflow AWS connection assumes, with :func:`~modelwatch_infra.policies.policy_document`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from modelwatch_infra.alertmanager import definition_with_topic, parse_definition
from modelwatch_infra.policies import (
    ACCESS_LOG_FORMAT,
    arn_fields,
    assume_role_policy,
    policy_document,
    service_assume_role_policy,
    sns_topic_policy,
)
from modelwatch_infra.settings import Settings

#: AWS managed policy with what API Gateway needs to create log groups/streams and put events.
APIGATEWAY_LOGS_POLICY = "iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs"


def _tags(settings: Settings) -> dict[str, str]:
    return {"app": "modelwatch", "stack": pulumi.get_stack(), "name": settings.name}


@dataclass
class Prometheus:
    workspace: aws.amp.Workspace
    rules: aws.amp.RuleGroupNamespace


def prometheus(settings: Settings) -> Prometheus:
    """The AMP workspace and the rule groups namespace holding the rendered rules file verbatim."""
    workspace = aws.amp.Workspace(f"{settings.name}-workspace", alias=settings.name, tags=_tags(settings))
    rules = aws.amp.RuleGroupNamespace(
        f"{settings.name}-rules",
        name=settings.rules_namespace,
        workspace_id=workspace.id,
        data=settings.read_rules(),
        tags=_tags(settings),
    )
    return Prometheus(workspace, rules)


@dataclass
class Alerting:
    topic: aws.sns.Topic
    topic_policy: aws.sns.TopicPolicy
    definition: aws.amp.AlertManagerDefinition


def alerting(settings: Settings, workspace: aws.amp.Workspace) -> Alerting:
    """The SNS topic, its access policy for AMP, and the workspace's alert manager definition."""
    text = settings.read_alertmanager_definition()
    parse_definition(text)  # a definition AMP would refuse fails the preview, not halfway through `up`
    topic = aws.sns.Topic(f"{settings.name}-alerts", name=f"{settings.name}-alerts", tags=_tags(settings))
    policy = aws.sns.TopicPolicy(
        f"{settings.name}-alerts",
        arn=topic.arn,
        policy=pulumi.Output.all(topic.arn, workspace.arn).apply(
            lambda a: json.dumps(sns_topic_policy(a[0], a[1]))
        ),
    )
    definition = aws.amp.AlertManagerDefinition(
        f"{settings.name}-alertmanager",
        workspace_id=workspace.id,
        definition=topic.arn.apply(lambda arn: definition_with_topic(text, arn, arn_fields(arn)[2])),
        # AMP checks that it may publish to the topic when the definition arrives
        opts=pulumi.ResourceOptions(depends_on=[policy]),
    )
    return Alerting(topic, policy, definition)


@dataclass
class Api:
    rest_api: aws.apigateway.RestApi
    stage: aws.apigateway.Stage
    access_logs: aws.cloudwatch.LogGroup
    method_settings: aws.apigateway.MethodSettings
    account: aws.apigateway.Account | None


def apigateway_account(settings: Settings) -> aws.apigateway.Account:
    """The region-wide CloudWatch Logs role of API Gateway (one per account and region: it replaces any
    role set before)."""
    role = aws.iam.Role(
        f"{settings.name}-apigateway-cloudwatch",
        assume_role_policy=json.dumps(service_assume_role_policy("apigateway.amazonaws.com")),
        tags=_tags(settings),
    )
    partition = aws.get_partition_output().partition
    attachment = aws.iam.RolePolicyAttachment(
        f"{settings.name}-apigateway-cloudwatch",
        role=role.name,
        policy_arn=partition.apply(lambda p: f"arn:{p}:{APIGATEWAY_LOGS_POLICY}"),
    )
    return aws.apigateway.Account(
        f"{settings.name}-apigateway-account",
        cloudwatch_role_arn=role.arn,
        opts=pulumi.ResourceOptions(depends_on=[attachment]),
    )


def api(settings: Settings) -> Api:
    """A REST API proxying every path and method to the model endpoint, and its stage with access logs,
    CloudWatch metrics and execution logs."""
    account = apigateway_account(settings) if settings.manage_apigateway_account else None
    rest_api = aws.apigateway.RestApi(
        f"{settings.name}-models",
        name=f"{settings.name}-models",
        description=f"modelwatch: proxy to {settings.model_endpoint_url}",
        endpoint_configuration={"types": "REGIONAL"},
        tags=_tags(settings),
    )
    proxy = aws.apigateway.Resource(
        f"{settings.name}-proxy", rest_api=rest_api.id, parent_id=rest_api.root_resource_id, path_part="{proxy+}"
    )
    method = aws.apigateway.Method(
        f"{settings.name}-proxy-any",
        rest_api=rest_api.id,
        resource_id=proxy.id,
        http_method="ANY",
        authorization=settings.api_authorization,
        request_parameters={"method.request.path.proxy": True},
    )
    integration = aws.apigateway.Integration(
        f"{settings.name}-proxy-any",
        rest_api=rest_api.id,
        resource_id=proxy.id,
        http_method=method.http_method,
        type="HTTP_PROXY",
        integration_http_method="ANY",
        uri=settings.model_endpoint_url.rstrip("/") + "/{proxy}",
        request_parameters={"integration.request.path.proxy": "method.request.path.proxy"},
    )
    fingerprint = hashlib.sha256(
        json.dumps([settings.model_endpoint_url, settings.api_authorization]).encode()
    ).hexdigest()
    deployment = aws.apigateway.Deployment(
        f"{settings.name}-models",
        rest_api=rest_api.id,
        triggers={"redeployment": fingerprint},
        opts=pulumi.ResourceOptions(depends_on=[method, integration]),
    )
    access_logs = aws.cloudwatch.LogGroup(
        f"{settings.name}-access-logs",
        name=f"/aws/apigateway/{settings.name}-models/{settings.stage_name}/access",
        retention_in_days=settings.log_retention_days,
        tags=_tags(settings),
    )
    # API Gateway writes execution logs to this group; declared here so that it gets a retention
    execution_logs = aws.cloudwatch.LogGroup(
        f"{settings.name}-execution-logs",
        name=pulumi.Output.concat("API-Gateway-Execution-Logs_", rest_api.id, "/", settings.stage_name),
        retention_in_days=settings.log_retention_days,
        tags=_tags(settings),
    )
    stage = aws.apigateway.Stage(
        f"{settings.name}-stage",
        rest_api=rest_api.id,
        deployment=deployment.id,
        stage_name=settings.stage_name,
        access_log_settings={"destination_arn": access_logs.arn, "format": ACCESS_LOG_FORMAT},
        tags=_tags(settings),
        # access logs need the account's CloudWatch Logs role to be in place first
        opts=pulumi.ResourceOptions(depends_on=[r for r in (account, execution_logs) if r is not None]),
    )
    method_settings = aws.apigateway.MethodSettings(
        f"{settings.name}-stage-all-methods",
        rest_api=rest_api.id,
        stage_name=stage.stage_name,
        method_path="*/*",
        settings={
            "metrics_enabled": True,
            "logging_level": settings.logging_level,
            "data_trace_enabled": False,  # full request/response bodies stay out of the logs
        },
    )
    return Api(rest_api, stage, access_logs, method_settings, account)


@dataclass
class Access:
    role: aws.iam.Role
    policy: aws.iam.RolePolicy


def modelwatch_role(settings: Settings, workspace: aws.amp.Workspace) -> Access:
    """The role modelwatch's Airflow AWS connection assumes, and its least-privilege inline policy."""
    role = aws.iam.Role(
        f"{settings.name}-airflow",
        description="assumed by modelwatch's Airflow AWS connection",
        assume_role_policy=json.dumps(assume_role_policy(settings.principal_arn)),
        max_session_duration=3600,
        tags=_tags(settings),
    )
    policy = aws.iam.RolePolicy(
        f"{settings.name}-airflow",
        role=role.id,
        policy=workspace.arn.apply(
            lambda arn: json.dumps(
                policy_document(arn, settings.lake_bucket, settings.lake_prefix, (settings.rules_namespace,))
            )
        ),
    )
    return Access(role, policy)


def build(settings: Settings) -> dict[str, pulumi.Output]:
    """Declare everything; return the stack outputs (name -> Output)."""
    prom = prometheus(settings)
    alerts = alerting(settings, prom.workspace)
    gateway = api(settings)
    access = modelwatch_role(settings, prom.workspace)
    return {
        "workspace_id": prom.workspace.id,
        "workspace_arn": prom.workspace.arn,
        "prometheus_endpoint": prom.workspace.prometheus_endpoint,
        "rules_namespace": prom.rules.name,
        "role_arn": access.role.arn,
        "stage_invoke_url": gateway.stage.invoke_url,
        "access_log_group": gateway.access_logs.name,
        "sns_topic_arn": alerts.topic.arn,
    }
