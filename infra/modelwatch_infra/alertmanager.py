"""The alert manager definition AMP receives: the rendered file with its SNS receivers pointed at the topic
this program creates.

AMP's definition is a YAML document whose ``alertmanager_config`` key holds an Alertmanager configuration as
a string (and optionally ``template_files``). AMP delivers only to Amazon SNS topics of the same account, with
``sigv4.region`` set. The rendered file cannot know the topic's ARN before the topic exists, so every
``sns_configs`` entry gets this stack's topic here; a definition without any SNS receiver gets one on its
route's receiver.
"""

from __future__ import annotations

from typing import Any

import yaml

#: Receiver integrations AMP does not deliver to (it rejects a definition that names them).
UNSUPPORTED_CONFIGS = (
    "webhook_configs", "email_configs", "pagerduty_configs", "slack_configs", "opsgenie_configs",
    "victorops_configs", "wechat_configs", "pushover_configs", "telegram_configs", "discord_configs",
    "webex_configs", "msteams_configs",
)  # fmt: skip


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks (``|``), so the embedded configuration stays readable."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _dump(doc: Any) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)


def parse_definition(text: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(other top-level keys, Alertmanager configuration)`` of a definition in AMP's form or a bare
    Alertmanager configuration.

    Raises ValueError for a document that is not an alert manager configuration, or that names a receiver
    integration AMP does not support.
    """
    doc = yaml.safe_load(text)
    if not isinstance(doc, dict):
        raise ValueError("the alert manager definition is not a YAML mapping")
    if "alertmanager_config" in doc:
        raw = doc.pop("alertmanager_config")
        config = yaml.safe_load(raw) if isinstance(raw, str) else raw
    elif "route" in doc:  # a bare Alertmanager configuration
        config, doc = doc, {}
    else:
        raise ValueError("the alert manager definition has neither 'alertmanager_config' nor 'route'")
    if not isinstance(config, dict) or not isinstance(config.get("route"), dict):
        raise ValueError("the alert manager configuration has no 'route'")
    receivers = config.setdefault("receivers", [])
    unsupported = sorted({f"{r.get('name')}: {key}" for r in receivers for key in UNSUPPORTED_CONFIGS if r.get(key)})
    if unsupported:
        raise ValueError(f"AMP delivers only to SNS; the definition names {', '.join(unsupported)}")
    return doc, config


def definition_with_topic(text: str, topic_arn: str, region: str) -> str:
    """``text`` (see :func:`parse_definition`) with every SNS receiver sending to ``topic_arn`` in
    ``region``, in AMP's form."""
    doc, config = parse_definition(text)
    receivers = config["receivers"]
    sns = [c for r in receivers for c in r.get("sns_configs") or []]
    if not sns:
        name = config["route"].get("receiver")
        receiver = next((r for r in receivers if r.get("name") == name), None)
        if receiver is None:
            receiver = {"name": name or "sns"}
            config["route"]["receiver"] = receiver["name"]
            receivers.append(receiver)
        receiver["sns_configs"] = sns = [{}]
    for entry in sns:
        entry["topic_arn"] = topic_arn
        entry["sigv4"] = {**(entry.get("sigv4") or {}), "region": region}
    return _dump({"alertmanager_config": _dump(config), **doc})
