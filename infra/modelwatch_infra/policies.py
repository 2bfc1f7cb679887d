"""IAM policy documents, as pure functions of ARNs and names (no Pulumi objects: tested directly).

Action names and resource types are those of AWS's Service Authorization Reference: for Amazon Managed
Service for Prometheus (prefix ``aps``) the query, alert and alert manager definition actions take the
``workspace`` resource, the rule groups namespace actions the ``rulegroupsnamespace`` resource
(``arn:<partition>:aps:<region>:<account>:rulegroupsnamespace/<workspace id>/<name>``);
``cloudwatch:GetMetricData`` has no resource-level permissions, so it must name ``*``.
"""

from __future__ import annotations

import json
from typing import Any

VERSION = "2012-10-17"

#: PromQL through the workspace's Prometheus-compatible API (query, query_range, series, labels, metadata).
APS_QUERY_ACTIONS = ("aps:QueryMetrics", "aps:GetSeries", "aps:GetLabels", "aps:GetMetricMetadata")
#: modelwatch posts alerts to the workspace's alert manager (POST .../alertmanager/api/v2/alerts) and reads
#: them back (GET .../alertmanager/api/v2/alerts).
APS_ALERT_ACTIONS = ("aps:CreateAlertManagerAlerts", "aps:ListAlertManagerAlerts")
#: Publishing the alert manager definition rendered from thresholds.yaml (create or update).
APS_ALERTMANAGER_DEFINITION_ACTIONS = (
    "aps:CreateAlertManagerDefinition",
    "aps:PutAlertManagerDefinition",
    "aps:DescribeAlertManagerDefinition",
)
#: Publishing the rules rendered from thresholds.yaml (create or update), on the named namespaces only.
APS_RULES_ACTIONS = (
    "aps:CreateRuleGroupsNamespace",
    "aps:PutRuleGroupsNamespace",
    "aps:DescribeRuleGroupsNamespace",
)
CLOUDWATCH_ACTIONS = ("cloudwatch:GetMetricData",)
S3_OBJECT_ACTIONS = ("s3:GetObject", "s3:PutObject", "s3:DeleteObject")
S3_LIST_ACTIONS = ("s3:ListBucket",)


def arn_fields(arn: str) -> tuple[str, str, str, str, str]:
    """``(partition, service, region, account, resource)`` of an ARN."""
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn":
        raise ValueError(f"not an ARN: {arn!r}")
    return parts[1], parts[2], parts[3], parts[4], parts[5]


def rules_namespace_arn(workspace_arn: str, namespace: str) -> str:
    """The ARN of the rule groups namespace ``namespace`` of the workspace ``workspace_arn``."""
    partition, service, region, account, resource = arn_fields(workspace_arn)
    kind, _, workspace_id = resource.partition("/")
    if service != "aps" or kind != "workspace" or not workspace_id:
        raise ValueError(f"not an AMP workspace ARN: {workspace_arn!r}")
    return f"arn:{partition}:aps:{region}:{account}:rulegroupsnamespace/{workspace_id}/{namespace}"


def policy_document(
    workspace_arn: str, bucket: str, prefix: str, rules_namespaces: tuple[str, ...] = ("modelwatch",)
) -> dict[str, Any]:
    """The least-privilege policy of modelwatch's role.

    AMP: query, post and read alerts, publish the alert manager definition on ``workspace_arn``; create,
    update and read the rule groups namespaces ``rules_namespaces`` of that workspace. CloudWatch:
    ``GetMetricData`` (``*``, AWS has no narrower resource for it). S3: read, write and delete objects under
    ``s3://bucket/prefix/``, and list the bucket only under that prefix.
    """
    partition = arn_fields(workspace_arn)[0]
    prefix = prefix.strip("/")
    if not prefix:
        raise ValueError("the lake prefix must not be empty: the role would reach the whole bucket")
    bucket_arn = f"arn:{partition}:s3:::{bucket}"
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Sid": "AmpQueryAndAlerts",
                "Effect": "Allow",
                "Action": [*APS_QUERY_ACTIONS, *APS_ALERT_ACTIONS, *APS_ALERTMANAGER_DEFINITION_ACTIONS],
                "Resource": workspace_arn,
            },
            {
                "Sid": "AmpRules",
                "Effect": "Allow",
                "Action": list(APS_RULES_ACTIONS),
                "Resource": [rules_namespace_arn(workspace_arn, ns) for ns in rules_namespaces],
            },
            {
                "Sid": "CloudWatchMetrics",
                "Effect": "Allow",
                "Action": list(CLOUDWATCH_ACTIONS),
                "Resource": "*",
            },
            {
                "Sid": "LakeObjects",
                "Effect": "Allow",
                "Action": list(S3_OBJECT_ACTIONS),
                "Resource": f"{bucket_arn}/{prefix}/*",
            },
            {
                "Sid": "LakeList",
                "Effect": "Allow",
                "Action": list(S3_LIST_ACTIONS),
                "Resource": bucket_arn,
                "Condition": {"StringLike": {"s3:prefix": [prefix, f"{prefix}/*"]}},
            },
        ],
    }


def assume_role_policy(principal_arn: str) -> dict[str, Any]:
    """Trust policy: only ``principal_arn`` may assume the role."""
    return {
        "Version": VERSION,
        "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": principal_arn}, "Action": "sts:AssumeRole"},
        ],
    }


def service_assume_role_policy(service: str) -> dict[str, Any]:
    """Trust policy for an AWS service principal (``apigateway.amazonaws.com``)."""
    return {
        "Version": VERSION,
        "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}],
    }


def sns_topic_policy(topic_arn: str, workspace_arn: str) -> dict[str, Any]:
    """The topic's access policy: the workspace's alert manager may publish to it, and nobody else through
    this policy (``aws:SourceArn``/``aws:SourceAccount`` against the confused deputy, as AMP documents)."""
    account = arn_fields(workspace_arn)[3]
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Sid": "AmpAlertManagerPublish",
                "Effect": "Allow",
                "Principal": {"Service": "aps.amazonaws.com"},
                "Action": ["sns:Publish", "sns:GetTopicAttributes"],
                "Resource": topic_arn,
                "Condition": {
                    "ArnEquals": {"aws:SourceArn": workspace_arn},
                    "StringEquals": {"aws:SourceAccount": account},
                },
            }
        ],
    }


#: One JSON line per request in the stage's access log (request id, time in epoch ms, caller, route, status,
#: latencies), ready for CloudWatch Logs Insights. API Gateway requires ``$context.requestId`` in it.
ACCESS_LOG_FORMAT = json.dumps(
    {
        "requestId": "$context.requestId",
        "requestTime": "$context.requestTimeEpoch",
        "ip": "$context.identity.sourceIp",
        "caller": "$context.identity.caller",
        "httpMethod": "$context.httpMethod",
        "resourcePath": "$context.resourcePath",
        "path": "$context.path",
        "status": "$context.status",
        "protocol": "$context.protocol",
        "responseLength": "$context.responseLength",
        "responseLatency": "$context.responseLatency",
        "integrationLatency": "$context.integration.latency",
        "integrationStatus": "$context.integration.status",
        "errorMessage": "$context.error.message",
    },
    separators=(",", ":"),
)
