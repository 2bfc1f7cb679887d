"""The stack's settings: Pulumi config keys (namespace ``modelwatch``), their defaults and their checks.

Checked before any resource is declared, so a wrong value fails ``pulumi preview`` with the key's name
instead of an AWS error halfway through ``pulumi up``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

#: The repository root (infra/..): relative rules/definition paths are read from here.
REPO = Path(__file__).resolve().parents[2]

#: The files ``modelwatch.rules`` renders from include/thresholds.yaml (relative to the repository root).
DEFAULT_RULES_FILE = "compose/prometheus-rules/modelwatch.rules.yml"
DEFAULT_ALERTMANAGER_FILE = "compose/prometheus-rules/alertmanager-definition.yml"

#: The retention values CloudWatch Logs accepts (days; 0 = never expire).
LOG_RETENTION_DAYS = frozenset(
    {0, 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653}
)
LOGGING_LEVELS = ("OFF", "ERROR", "INFO")
AUTHORIZATIONS = ("AWS_IAM", "NONE")

_PRINCIPAL = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:(root|role/[\w+=,.@/-]+|user/[\w+=,.@/-]+)$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PREFIX = re.compile(r"^[\w!.*'()=-]+(/[\w!.*'()=-]+)*$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,39}$")
_NAMESPACE = re.compile(r"^[0-9A-Za-z][-.0-9A-Z_a-z]{0,127}$")
_STAGE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


class ConfigSource(Protocol):
    """What :meth:`Settings.from_config` reads: a ``pulumi.Config`` (get, get_int, get_bool, require)."""

    def get(self, key: str) -> str | None: ...
    def get_int(self, key: str) -> int | None: ...
    def get_bool(self, key: str) -> bool | None: ...
    def require(self, key: str) -> str: ...


@dataclass(frozen=True)
class Settings:
    """One stack's settings. The config key of each field is its camelCase name (``principal_arn`` is
    ``modelwatch:principalArn``)."""

    #: IAM principal allowed to assume modelwatch's role (the identity Airflow's AWS connection runs as):
    #: ``arn:aws:iam::<account>:role/<name>``, ``...:user/<name>`` or ``...:root``.
    principal_arn: str
    #: The lake's bucket and prefix (``storage.base_url: s3://<lake_bucket>/<lake_prefix>``).
    lake_bucket: str
    #: The model endpoint API Gateway forwards to (HTTP_PROXY), e.g. ``https://model.internal.example.com``.
    model_endpoint_url: str
    lake_prefix: str = "modelwatch"
    #: Prefix of resource names (workspace alias, topic, log groups, API name).
    name: str = "modelwatch"
    rules_file: Path = field(default=REPO / DEFAULT_RULES_FILE)
    alertmanager_file: Path = field(default=REPO / DEFAULT_ALERTMANAGER_FILE)
    #: Name of the rule groups namespace in the workspace (the role may update only this one).
    rules_namespace: str = "modelwatch"
    stage_name: str = "prod"
    log_retention_days: int = 30
    #: Execution logging level of every method of the stage (``OFF``, ``ERROR``, ``INFO``).
    logging_level: str = "INFO"
    #: Authorization of the proxy method: ``AWS_IAM`` (SigV4-signed callers) or ``NONE``.
    api_authorization: str = "AWS_IAM"
    #: Declare the region-wide ``aws.apigateway.Account`` (the CloudWatch Logs role API Gateway uses for
    #: access and execution logs). False when another stack of the account and region already sets it:
    #: deleting the setting (``pulumi destroy``) resets the role, and logging stops for every REST API there.
    manage_apigateway_account: bool = True

    def __post_init__(self) -> None:
        problems = []
        if not _PRINCIPAL.match(self.principal_arn):
            problems.append(f"principalArn {self.principal_arn!r}: expected arn:aws:iam::<12 digits>:role/<name>, "
                            "user/<name> or root")
        if not _BUCKET.match(self.lake_bucket):
            problems.append(f"lakeBucket {self.lake_bucket!r}: not an S3 bucket name")
        if not _PREFIX.match(self.lake_prefix):
            problems.append(f"lakePrefix {self.lake_prefix!r}: a key prefix without leading or trailing '/'")
        if not re.match(r"^https?://[^/\s]+(/\S*)?$", self.model_endpoint_url):
            problems.append(f"modelEndpointUrl {self.model_endpoint_url!r}: expected http(s)://host[/path]")
        if not _NAME.match(self.name):
            problems.append(f"name {self.name!r}: letters, digits and '-', at most 40")
        if not _NAMESPACE.match(self.rules_namespace):
            problems.append(f"rulesNamespace {self.rules_namespace!r}: letters, digits, '-', '.', '_'")
        if not _STAGE.match(self.stage_name):
            problems.append(f"stageName {self.stage_name!r}: letters, digits, '-', '_'")
        if self.log_retention_days not in LOG_RETENTION_DAYS:
            problems.append(f"logRetentionDays {self.log_retention_days}: one of {sorted(LOG_RETENTION_DAYS)}")
        if self.logging_level not in LOGGING_LEVELS:
            problems.append(f"loggingLevel {self.logging_level!r}: one of {', '.join(LOGGING_LEVELS)}")
        if self.api_authorization not in AUTHORIZATIONS:
            problems.append(f"apiAuthorization {self.api_authorization!r}: one of {', '.join(AUTHORIZATIONS)}")
        if problems:
            raise ValueError("modelwatch stack config: " + "; ".join(problems))

    @classmethod
    def from_config(cls, config: ConfigSource, repo: Path = REPO) -> Settings:
        """The settings from a stack's config (``pulumi.Config()``, namespace ``modelwatch``). Relative
        ``rulesFile``/``alertmanagerFile`` paths are read from the repository root."""
        kwargs: dict[str, Any] = {
            "principal_arn": config.require("principalArn"),
            "lake_bucket": config.require("lakeBucket"),
            "model_endpoint_url": config.require("modelEndpointUrl"),
        }
        for key, attr in (("lakePrefix", "lake_prefix"), ("name", "name"), ("rulesNamespace", "rules_namespace"),
                          ("stageName", "stage_name"), ("loggingLevel", "logging_level"),
                          ("apiAuthorization", "api_authorization")):  # fmt: skip
            value = config.get(key)
            if value is not None:
                kwargs[attr] = value.strip("/") if attr == "lake_prefix" else value
        for key, attr, default in (("rulesFile", "rules_file", DEFAULT_RULES_FILE),
                                   ("alertmanagerFile", "alertmanager_file", DEFAULT_ALERTMANAGER_FILE)):  # fmt: skip
            kwargs[attr] = repo / (config.get(key) or default)  # an absolute path stays as it is
        if (days := config.get_int("logRetentionDays")) is not None:
            kwargs["log_retention_days"] = days
        if (manage := config.get_bool("manageApiGatewayAccount")) is not None:
            kwargs["manage_apigateway_account"] = manage
        return cls(**kwargs)

    def read_rules(self) -> str:
        return _read(self.rules_file, "rulesFile", "the rules file")

    def read_alertmanager_definition(self) -> str:
        return _read(self.alertmanager_file, "alertmanagerFile", "the alert manager definition")


def _read(path: Path, key: str, what: str) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{what} {path} does not exist: render it from include/thresholds.yaml first (docs/aws.md, "
            f"'Prometheus and AMP rules from thresholds.yaml'), or point modelwatch:{key} at it"
        ) from None
    if not text.strip():
        raise ValueError(f"{what} {path} is empty")
    return text
