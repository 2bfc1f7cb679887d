"""Prometheus rules and an AMP alert manager definition, rendered from the configuration the DAG judges with.

One source of truth: each query of ``prometheus.queries`` with a ``saturation`` threshold becomes

- a recording rule ``<instance label>:modelwatch_<name>:value`` (Prometheus' ``level:metric:operations``
  naming: the level is the label the pipeline joins on, the metric the query's name) whose expression is the
  query's PromQL unchanged, in the group :data:`RECORDING_GROUP`;
- an alerting rule :attr:`~modelwatch.config.RulesConfig.alertname` in the group :data:`ALERTING_GROUP`:
  the recorded value at or above the threshold for ``rules.saturation_for``, one alert per series (per
  instance), labelled ``resource=<name>``, ``severity`` and ``source=`` :data:`SOURCE`.

That is the real-time side of what the DAG judges once per window: a resource saturated right now, before
the window's verdict says whether it slowed a model down.

:func:`alertmanager_definition` is an Amazon Managed Service for Prometheus (AMP) alert manager definition
(``alertmanager_config: |`` around a plain Alertmanager configuration) that routes modelwatch's alerts, the
DAG's (names from ``alerting``) and the rules', to one SNS topic, the only receiver AMP supports.

``python -m modelwatch.rules render|alertmanager|publish`` (:func:`main`) writes them or publishes the rules
to an AMP workspace's rule groups namespace, created or updated in place. The committed copies for docker
compose and the Pulumi program are ``compose/prometheus-rules/`` :data:`RULES_FILE` and
:data:`DEFINITION_FILE` (docs/aws.md, "Prometheus and AMP rules from thresholds.yaml").

Pure functions on :mod:`modelwatch.config` and yaml; boto3 is imported by :func:`publish_rules` only. No DAG
imports this module.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any, Literal

import yaml

from modelwatch.config import ModelwatchConfig, QueryConfig, load_config
from modelwatch.promql import prometheus_duration

RECORDING_GROUP = "modelwatch_saturation"
ALERTING_GROUP = "modelwatch_saturation_alerts"
#: the ``source`` label of the rules' alerts (the DAG's alerts carry ``source="modelwatch"``)
SOURCE = "modelwatch-rules"
#: the rule groups namespace :func:`publish_rules` writes unless told otherwise
NAMESPACE = "modelwatch"
#: the committed renders of include/thresholds.yaml, under compose/prometheus-rules/
RULES_FILE = "modelwatch.rules.yml"
DEFINITION_FILE = "alertmanager-definition.yml"
#: the alert manager definition's receivers
SNS_RECEIVER = "modelwatch-sns"
#: an Alertmanager route needs a default receiver: other systems' alerts end here, notified nowhere
NULL_RECEIVER = "unrouted"
#: ``arn:<partition>:sns:<region>:<account>:<topic>``
_SNS_ARN = re.compile(r"^arn:aws[a-z-]*:sns:([a-z0-9-]+):\d{12}:[A-Za-z0-9_.-]{1,256}$")
_HEADER = (
    "# Generated from thresholds.yaml by `python -m modelwatch.rules {command}` (docs/aws.md): edit the\n"
    "# configuration and render again, not this file.\n"
)


class RulesError(ValueError):
    """A rule file cannot be rendered or published; the message names what and where."""


def _number(v: float) -> str:
    """A threshold as a PromQL literal: ``100000000`` rather than ``1e+08``."""
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def saturation_queries(cfg: ModelwatchConfig) -> list[QueryConfig]:
    """The Prometheus queries with a saturation threshold, in the configuration's order."""
    return [q for q in cfg.prometheus.queries if q.saturation is not None]


def _key_labels(cfg: ModelwatchConfig, query: QueryConfig) -> list[str]:
    key = query.instance_key(cfg.prometheus.instance_label)
    return [key] if isinstance(key, str) else list(key)


def record_name(cfg: ModelwatchConfig, query: QueryConfig) -> str:
    """The recording rule's series name of ``query``, e.g. ``instance:modelwatch_cpu:value`` (the level is the
    instance key: ``server_server_replica:modelwatch_seldon_memory:value`` for a Seldon Core 2 preset)."""
    return f"{'_'.join(_key_labels(cfg, query))}:modelwatch_{query.name}:value"


def _instance_text(cfg: ModelwatchConfig, query: QueryConfig) -> str:
    """The alert's instance as a template: ``{{ $labels.instance }}``, or the key's labels joined with ``-``."""
    return "-".join("{{ $labels." + label + " }}" for label in _key_labels(cfg, query))


def recording_rules(cfg: ModelwatchConfig) -> dict[str, Any]:
    """The rule group recording every saturation query's PromQL as it is configured."""
    return {
        "name": RECORDING_GROUP,
        "rules": [{"record": record_name(cfg, q), "expr": q.promql} for q in saturation_queries(cfg)],
    }


def alerting_rules(cfg: ModelwatchConfig) -> dict[str, Any]:
    """The rule group alerting on each saturation query's recorded value at or above its threshold for
    ``rules.saturation_for``, per series (one alert per instance)."""
    held = prometheus_duration(cfg.rules.saturation_for)
    rules = []
    for q in saturation_queries(cfg):
        instance = _instance_text(cfg, q)
        threshold = _number(q.saturation)  # type: ignore[arg-type]
        unit = f" {q.unit}" if q.unit else ""
        rules.append({
            "alert": cfg.rules.alertname,
            "expr": f"{record_name(cfg, q)} >= {threshold}",
            "for": held,
            "labels": {"resource": q.name, "severity": cfg.rules.severity, "source": SOURCE},
            "annotations": {
                "summary": f"{q.name} saturated on {instance}",
                "description": f"{q.name} on {instance} is {{{{ $value }}}}{unit}, at or above its saturation "
                               f"threshold {threshold}{unit} (thresholds.yaml) for {held}.",
            },
        })  # fmt: skip
    return {"name": ALERTING_GROUP, "rules": rules}


class _BlockDumper(yaml.SafeDumper):
    """Safe YAML, with a multi-line string (a folded PromQL) as a ``|`` block instead of an escaped line."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_BlockDumper.add_representer(str, _str)


def _dump(doc: dict[str, Any]) -> str:
    return yaml.dump(doc, Dumper=_BlockDumper, sort_keys=False, width=1 << 30, allow_unicode=True)


def render(cfg: ModelwatchConfig) -> str:
    """The rule file (Prometheus' format, which AMP's rule groups namespaces take as is): deterministic."""
    return _HEADER.format(command="render") + _dump({"groups": [recording_rules(cfg), alerting_rules(cfg)]})


def sns_region(topic_arn: str) -> str:
    """The region of an SNS topic ARN.

    :raises RulesError: when ``topic_arn`` is not an SNS topic ARN.
    """
    m = _SNS_ARN.match(topic_arn)
    if not m:
        raise RulesError(f"{topic_arn!r} is not an SNS topic ARN (arn:aws:sns:<region>:<account id>:<topic>)")
    return m.group(1)


def modelwatch_alertnames(cfg: ModelwatchConfig) -> list[str]:
    """Every alert name modelwatch sends: the DAG's (``alerting``) and the rules' (``rules.alertname``)."""
    a = cfg.alerting
    names = [a.alertname, a.no_data.alertname, a.slow_unexplained.alertname, a.quality.alertname,
             a.drift.alertname, cfg.rules.alertname]  # fmt: skip
    return list(dict.fromkeys(names))


def _any_of(label: str, values: list[str]) -> str:
    return f'{label}=~"{"|".join(re.escape(v) for v in values)}"'


def alertmanager_config(cfg: ModelwatchConfig, sns_topic_arn: str, region: str | None = None) -> dict[str, Any]:
    """The Alertmanager configuration inside the AMP definition: modelwatch's alerts to the SNS topic.

    The DAG's alerts group per alert name and model, its no-data alert per alert name only (one lost
    Prometheus silences every model at once: one incident), the rules' saturation alert per instance. A
    degraded model's unexplained-slowness alert is inhibited, as in the local stack. Other alerts reach the
    default receiver, which notifies no one.

    :param sns_topic_arn: the topic (AMP needs ``sns:Publish`` on it, docs/aws.md).
    :param region: SigV4 region of the topic; default the ARN's region.
    :raises RulesError: when ``sns_topic_arn`` is not an SNS topic ARN.
    """
    topic_region = sns_region(sns_topic_arn)
    a = cfg.alerting
    dag = 'source="modelwatch"'
    sns = {"topic_arn": sns_topic_arn, "sigv4": {"region": region or topic_region},
           # AMP's default subject lists every label and can outgrow what SNS accepts
           "subject": "[{{ .Status | toUpper }}] {{ .GroupLabels.alertname }}", "send_resolved": True}  # fmt: skip
    others = [n for n in modelwatch_alertnames(cfg) if n not in (a.no_data.alertname, cfg.rules.alertname)]
    return {
        "route": {
            "receiver": NULL_RECEIVER,
            "group_by": ["alertname"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "4h",
            "routes": [
                {"receiver": SNS_RECEIVER, "matchers": [f'alertname="{a.no_data.alertname}"', dag],
                 "group_by": ["alertname"]},
                {"receiver": SNS_RECEIVER, "matchers": [_any_of("alertname", others), dag],
                 "group_by": ["alertname", "model"]},
                {"receiver": SNS_RECEIVER, "matchers": [f'alertname="{cfg.rules.alertname}"', f'source="{SOURCE}"'],
                 "group_by": ["alertname", "resource", cfg.prometheus.instance_label]},
            ],
        },
        "inhibit_rules": [{
            "source_matchers": [f'alertname="{a.alertname}"', dag],
            "target_matchers": [f'alertname="{a.slow_unexplained.alertname}"', dag],
            "equal": ["model"],
        }],
        "receivers": [{"name": NULL_RECEIVER}, {"name": SNS_RECEIVER, "sns_configs": [sns]}],
    }  # fmt: skip


def alertmanager_definition(cfg: ModelwatchConfig, sns_topic_arn: str, region: str | None = None) -> str:
    """The AMP alert manager definition: ``alertmanager_config: |`` around :func:`alertmanager_config`."""
    inner = _dump(alertmanager_config(cfg, sns_topic_arn, region))
    return _HEADER.format(command="alertmanager") + _dump({"alertmanager_config": inner})


def inner_config(definition: str) -> str:
    """The plain Alertmanager configuration inside an AMP alert manager definition (what amtool checks)."""
    doc = yaml.safe_load(definition)
    if not isinstance(doc, dict) or not isinstance(doc.get("alertmanager_config"), str):
        raise RulesError("an AMP alert manager definition needs `alertmanager_config: |` holding the configuration")
    return doc["alertmanager_config"]


def publish_rules(client: Any, workspace_id: str, data: str, namespace: str = NAMESPACE) -> Literal[
    "created", "updated", "unchanged"
]:
    """Create the rule groups namespace, or replace its content in place (never a second namespace).

    :param client: a boto3 ``amp`` client.
    :returns: what was done; ``unchanged`` when the namespace already holds ``data``.
    :raises RulesError: naming the workspace, the namespace and AWS's error code and message.
    """
    from botocore.exceptions import ClientError

    where = f"rule groups namespace {namespace!r} of AMP workspace {workspace_id!r}"

    def fail(action: str, exc: ClientError) -> RulesError:
        err = exc.response.get("Error", {})
        return RulesError(f"cannot {action} {where}: {err.get('Code', '?')}: {err.get('Message', exc)}")

    try:
        current = client.describe_rule_groups_namespace(workspaceId=workspace_id, name=namespace)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
            raise fail("read", exc) from None
        try:
            client.create_rule_groups_namespace(workspaceId=workspace_id, name=namespace, data=data.encode())
        except ClientError as exc2:
            raise fail("create", exc2) from None
        return "created"
    if bytes(current["ruleGroupsNamespace"]["data"]) == data.encode():
        return "unchanged"
    try:
        client.put_rule_groups_namespace(workspaceId=workspace_id, name=namespace, data=data.encode())
    except ClientError as exc:
        raise fail("update", exc) from None
    return "updated"


def _write(text: str, out: str) -> None:
    if out == "-":
        sys.stdout.write(text)
        return
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(text, encoding="utf-8")
    print(f"wrote {out}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m modelwatch.rules",
        description="Prometheus rules and an AMP alert manager definition from a modelwatch configuration.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    config_help = "the configuration (default: $MODELWATCH_CONFIG, else include/thresholds.yaml)"
    r = sub.add_parser("render", help="write the rule file (recording and alerting rules)")
    a = sub.add_parser("alertmanager", help="write the AMP alert manager definition (an SNS receiver)")
    p = sub.add_parser("publish", help="create or update an AMP workspace's rule groups namespace")
    for s in (r, a, p):
        s.add_argument("--config", type=Path, default=None, help=config_help)
    for s in (r, a):
        s.add_argument("--out", default="-", help="file to write (default: standard output)")
    a.add_argument("--sns-topic-arn", required=True, help="the SNS topic AMP sends modelwatch's alerts to")
    a.add_argument("--region", default=None, help="SigV4 region of the topic (default: the ARN's region)")
    p.add_argument("--workspace-id", required=True, help="the AMP workspace (ws-...)")
    p.add_argument("--namespace", default=NAMESPACE, help=f"the rule groups namespace (default: {NAMESPACE})")
    p.add_argument("--region", default=None, help="the workspace's region (default: the AWS SDK's)")
    p.add_argument("--endpoint-url", default=None, help="another AMP API endpoint (a test server)")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config)
        if args.command == "render":
            _write(render(cfg), args.out)
        elif args.command == "alertmanager":
            _write(alertmanager_definition(cfg, args.sns_topic_arn, args.region), args.out)
        else:
            import boto3
            from botocore.exceptions import BotoCoreError

            try:
                client = boto3.client("amp", region_name=args.region, endpoint_url=args.endpoint_url)
                done = publish_rules(client, args.workspace_id, render(cfg), args.namespace)
            except BotoCoreError as exc:  # no region, no credentials, endpoint unreachable
                raise RulesError(f"cannot publish to AMP workspace {args.workspace_id!r}: {exc}") from None
            print(f"{done} rule groups namespace {args.namespace!r} of AMP workspace {args.workspace_id!r}")
    except (RulesError, ValueError) as exc:  # ConfigError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
