"""The one schema of ``include/thresholds.yaml``.

The file is validated when the DAG is parsed, so a mistake shows as a DAG import error in the UI that
names the file, the key and the problem, instead of as a failed task hours later: that includes what would
only fail when a task runs (PromQL Prometheus cannot parse, a step under Prometheus's millisecond, a label name
Prometheus refuses). This module imports only pydantic, yaml and modelwatch's own pure-Python PromQL checker:
it runs at every parse. Its messages stay short whatever was pasted (an echoed value is cut at
:data:`ECHO_CHARS`, a YAML alias bomb is refused before it expands).
"""

from __future__ import annotations

import math
import os
import re
import reprlib
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from modelwatch.promql import PromqlSyntaxError, check_range_query, is_label_name, prometheus_duration
from modelwatch.schema import logged_column
from modelwatch.serving import STACK_INFO, metrics_of
from modelwatch.serving import render as render_preset
from modelwatch.timegrid import PROMETHEUS_MAX_POINTS

#: Where the DAG looks for its configuration unless ``MODELWATCH_CONFIG`` says otherwise.
DEFAULT_CONFIG_PATH = Path(__file__).resolve().parents[2] / "include" / "thresholds.yaml"
CONFIG_ENV = "MODELWATCH_CONFIG"
#: Overrides ``storage.base_url`` (tests and the demo point one config at a throwaway lake).
STORAGE_URL_ENV = "MODELWATCH_STORAGE_URL"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
#: Prometheus and the task clocks count whole milliseconds: a shorter duration would round to 0
_MIN_SECONDS = 0.001
#: longer than any schedule, retry or window needs, and short enough that no arithmetic on it overflows
_MAX_SECONDS = 3650 * 86400


class ConfigError(ValueError):
    """The configuration file is invalid; the message names the file, the key and the problem."""


def parse_duration(value: Any) -> timedelta:
    """Parse ``15s``, ``1m``, ``2h`` or a number of seconds into a timedelta.

    :raises ValueError: for anything else, or a duration that is not positive.
    """
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    else:
        raise ValueError(f"{_short(value)} is not a duration (use e.g. 15s, 1m, 2h or a number of seconds)")
    if not math.isfinite(seconds):
        raise ValueError(f"{_short(value)} is not a duration (use e.g. 15s, 1m, 2h or a number of seconds)")
    if seconds <= 0:
        raise ValueError(f"{_short(value)} must be a positive duration")
    if seconds < _MIN_SECONDS:
        raise ValueError(f"{_short(value)} must be at least 1ms (Prometheus and the task clocks count whole "
                         "milliseconds: it would round to 0)")  # fmt: skip
    if seconds > _MAX_SECONDS:
        raise ValueError(f"{_short(value)} must be at most 3650d")
    return timedelta(seconds=seconds)


Duration = Annotated[timedelta, Field(json_schema_extra={"format": "duration"})]


class _Strict(BaseModel):
    # extra="forbid" is what turns a typo ("saturaton:") into an error instead of a silently ignored key.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class StorageConfig(_Strict):
    base_url: str = "file:///tmp/modelwatch-lake"
    aws_conn_id: str = "aws_default"

    @field_validator("base_url")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if not re.match(r"^(file:///|s3://[^/]+)", v):
            raise ValueError(f"{_short(v)} must start with file:/// (absolute path) or s3://bucket")
        return v.rstrip("/")


def _label_name(v: str) -> str:
    if not is_label_name(v):
        raise ValueError(f"{_short(v)} is not a Prometheus label name (letters, digits and _, not starting with a "
                         "digit: e.g. pod_name, not pod-name)")  # fmt: skip
    return v


#: a Prometheus label name, as a query's ``by (...)`` and the rules' ``$labels`` need it
LabelName = Annotated[str, AfterValidator(_label_name)]


def _model_name(v: str) -> str:
    if not v.strip():
        raise ValueError("a model name must not be empty or only spaces")
    return v


#: a model's name as MLflow tags it: data (any Unicode, ``/``, ``$``), only never empty and never a pasted page
ModelName = Annotated[str, Field(max_length=1000), AfterValidator(_model_name)]


class QueryConfig(_Strict):
    name: str
    promql: str = Field(min_length=1)
    description: str = ""
    #: value at or above which the resource counts as saturated; no threshold = context only
    saturation: float | None = Field(default=None, ge=0)
    unit: str = ""
    #: the labels whose values (joined with ``-`` when there are several) name the predictions' instance, for
    #: this query's values and the sample times behind them (default: ``prometheus.instance_label``). Seldon
    #: Core 2 names a replica by ``server`` and ``server_replica``: ``mlserver`` and ``0`` are pod ``mlserver-0``.
    instance_labels: list[LabelName] = []
    #: a per-model metric read for one model (its PromQL selects that model's series): its values join that
    #: model's predictions only, and no other model is judged on it (default: every model of the instance)
    model: ModelName | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"{_short(v)} must be lower_snake_case (it becomes a column and a label value)")
        return v

    @field_validator("promql")
    @classmethod
    def _parses(cls, v: str, info: ValidationInfo) -> str:
        # Prometheus would answer 400 bad_data at the first task try: say so now, at DAG parse time
        try:
            check_range_query(v)
        except PromqlSyntaxError as exc:
            name = info.data.get("name")
            query = f"query {name!r}: " if name else ""
            raise ValueError(f"{query}Prometheus would refuse this PromQL {exc}") from None
        return v

    def instance_key(self, instance_label: str) -> str | tuple[str, ...]:
        """The label (or labels, joined with ``-``) naming the instance of this query's series."""
        if len(self.instance_labels) > 1:
            return tuple(self.instance_labels)
        return self.instance_labels[0] if self.instance_labels else instance_label


class PrometheusPreset(_Strict):
    """A serving stack's metrics by name instead of their queries (:mod:`modelwatch.serving`): each becomes a
    query named ``<name>_<metric>`` (e.g. ``seldon_memory``) in ``prometheus.queries``."""

    preset: Literal["fastapi_instrumentator", "seldon_v1", "seldon_v2", "mlserver", "kserve", "knative"]
    name: str
    #: the predictions' model the per-model metrics are read for (default: every model of the instance)
    model: ModelName | None = None
    #: the name the serving stack gives that model, when it is not the one MLflow tags
    serving_model: ModelName | None = None
    #: Seldon Core 2: the server; Seldon Core v1: the SeldonDeployment and predictor; Knative: the service
    #: and revision; the instrumentator: the handler (``/predict``)
    server: str | None = None
    deployment: str | None = None
    predictor: str | None = None
    service: str | None = None
    revision: str | None = None
    handler: str | None = None
    #: more label matchers of every selector (e.g. ``namespace: models``)
    selector: dict[LabelName, str] = {}
    #: the labels naming the predictions' instance, when not the stack's own (``pod``, ``pod_name``, ...)
    instance_labels: list[LabelName] = []
    #: the range of every rate: at least four scrape intervals
    rate_window: Duration = timedelta(minutes=1)
    #: metric suffix -> saturation threshold, in the normalised unit (e.g. ``memory: 0.9``)
    saturation: dict[str, float] = {}
    #: only these metric suffixes (default: all of the preset's)
    metrics: list[str] = []

    _name = field_validator("name")(lambda v: QueryConfig._name(v))  # type: ignore[operator]
    _window = field_validator("rate_window", mode="before")(lambda v: parse_duration(v))

    @model_validator(mode="after")
    def _known(self) -> PrometheusPreset:
        known = metrics_of(self.preset)
        if unknown := sorted({*self.saturation, *self.metrics} - set(known)):
            raise ValueError(f"{self.name}: {', '.join(unknown)} not among the {self.preset} metrics ({', '.join(known)})")
        info = STACK_INFO[self.preset]
        given = [k for k in ("server", "deployment", "predictor", "service", "revision", "handler") if getattr(self, k)]
        if wrong := [k for k in given if k not in info.options]:
            takes = ", ".join(info.options) or "none"
            raise ValueError(f"{self.name}: {self.preset} takes no {', '.join(wrong)} (its options: {takes})")
        if (self.model or self.serving_model) and info.model_label is None:
            raise ValueError(f"{self.name}: {self.preset} metrics have no model label: leave model out (they apply "
                             "to every model of the instance)")  # fmt: skip
        if self.serving_model and not self.model:
            raise ValueError(f"{self.name}: serving_model needs model (the predictions' model it is)")
        return self

    def queries(self, instance_label: str) -> list[QueryConfig]:
        """The preset's metrics as queries."""
        options = {k: getattr(self, k) for k in STACK_INFO[self.preset].options if getattr(self, k)}
        rendered = render_preset(
            self.preset, name=self.name, instance_label=instance_label, window=prometheus_duration(self.rate_window),
            options=options, selector=self.selector, instance_labels=self.instance_labels, model=self.model,
            serving_model=self.serving_model, saturation=self.saturation, metrics=self.metrics,
        )  # fmt: skip
        return [QueryConfig(**q) for q in rendered]


class PrometheusConfig(_Strict):
    conn_id: str = "prometheus_default"
    step: Duration = timedelta(seconds=15)
    max_points_per_request: int = Field(default=PROMETHEUS_MAX_POINTS, gt=0, le=PROMETHEUS_MAX_POINTS)
    instance_label: LabelName = "instance"
    #: series one query's answer may hold, and bytes one answer may hold (the read stops past it)
    max_series_per_query: int = Field(default=10_000, gt=0)
    max_response_bytes: int = Field(default=256 * 1024 * 1024, gt=0)
    #: the queries; each preset's are appended to them when the file is read (``presets`` stays as written)
    queries: list[QueryConfig] = []
    presets: list[PrometheusPreset] = []

    _step = field_validator("step", mode="before")(lambda v: parse_duration(v))

    @model_validator(mode="after")
    def _expand_presets(self) -> PrometheusConfig:
        expanded = [q for p in self.presets for q in p.queries(self.instance_label)]
        if not self.queries and not expanded:
            raise ValueError("prometheus needs queries or presets (at least one query)")
        if expanded:
            # the model is frozen for its readers; this is its construction, so write the field directly
            object.__setattr__(self, "queries", [*self.queries, *expanded])
            self._unique(self.queries)
        return self

    @field_validator("queries")
    @classmethod
    def _unique(cls, v: list[QueryConfig]) -> list[QueryConfig]:
        seen: set[str] = set()
        for q in v:
            if q.name in seen:
                raise ValueError(f"query name {_short(q.name)} is used twice")
            seen.add(q.name)
        return v


#: CloudWatch statistics GetMetricData takes: the five plain ones, or a percentile such as p95 or p99.9
_STAT = re.compile(r"^(Average|Sum|Minimum|Maximum|SampleCount|p\d{1,2}(\.\d+)?)$")
#: shortest period by CloudWatch's retention: 1-minute data is kept 15 days, 5-minute 63 days, 1-hour 455
CLOUDWATCH_PERIODS = (60, 300, 3600)


class CloudWatchQuery(_Strict):
    """One CloudWatch metric read into the ``resources`` partition beside the Prometheus queries: one series
    per value of ``instance_dimension`` listed in ``instances`` (or one series for ``instance``).

    The value of a period is stored at the period's end with ``window_seconds`` = the period, as a
    Prometheus range is: the join centres it on the middle of the period.
    """

    name: str
    namespace: str = Field(min_length=1)
    metric: str = Field(min_length=1)
    #: the dimensions every series of the query has (e.g. ``ApiName``, ``Stage``, ``EndpointName``)
    dimensions: dict[str, str] = {}
    stat: str = "Average"
    #: the dimension whose value tells the predictions' instance apart (e.g. ``VariantName``) ...
    instance_dimension: str | None = None
    #: ... and its values -> the predictions' instance they serve (the join key)
    instances: dict[str, str] = {}
    #: without ``instance_dimension``: the instance every value applies to ("" = every prediction)
    instance: str = ""
    #: multiplies every value (CloudWatch's milliseconds to seconds: 0.001; percent to a ratio: 0.01)
    scale: float = 1.0
    saturation: float | None = Field(default=None, ge=0)
    unit: str = ""
    description: str = ""

    _name = field_validator("name")(lambda v: QueryConfig._name(v))  # type: ignore[operator]

    @field_validator("stat")
    @classmethod
    def _stat(cls, v: str) -> str:
        if not _STAT.match(v):
            raise ValueError(f"{_short(v)} is not a CloudWatch statistic (Average, Sum, Minimum, Maximum, SampleCount, "
                             "or a percentile such as p95)")  # fmt: skip
        return v

    @model_validator(mode="after")
    def _one_join_key(self) -> CloudWatchQuery:
        if self.instance_dimension and not self.instances:
            raise ValueError(f"{self.name}: instance_dimension {self.instance_dimension!r} needs instances "
                             "(its values -> the predictions' instance)")  # fmt: skip
        if self.instances and not self.instance_dimension:
            raise ValueError(
                f"{self.name}: instances need instance_dimension (the dimension they are values of)"
            )
        return self

    def series(self) -> list[tuple[str, dict[str, str]]]:
        """(the predictions' instance, the series' full dimensions) per series of this query."""
        if self.instance_dimension:
            return [
                (inst, {**self.dimensions, self.instance_dimension: value})
                for value, inst in self.instances.items()
            ]
        return [(self.instance, dict(self.dimensions))]


#: preset -> metric suffix -> (namespace, metric, stat, scale, unit, which dimension keys), the metrics the
#: seeds name for API Gateway (``AWS/ApiGateway``) and SageMaker endpoints (``AWS/SageMaker`` and the
#: endpoint instances' ``/aws/sagemaker/Endpoints``)
PRESETS: dict[str, dict[str, tuple[str, str, str, float, str]]] = {
    "apigateway": {
        "latency_p95": ("AWS/ApiGateway", "Latency", "p95", 0.001, "s"),
        "integration_latency_p95": ("AWS/ApiGateway", "IntegrationLatency", "p95", 0.001, "s"),
        "errors_4xx": ("AWS/ApiGateway", "4XXError", "Sum", 1.0, "requests"),
        "errors_5xx": ("AWS/ApiGateway", "5XXError", "Sum", 1.0, "requests"),
        "requests": ("AWS/ApiGateway", "Count", "Sum", 1.0, "requests"),
    },
    "sagemaker_endpoint": {
        "model_latency_p95": ("AWS/SageMaker", "ModelLatency", "p95", 1e-6, "s"),
        "overhead_latency_p95": ("AWS/SageMaker", "OverheadLatency", "p95", 1e-6, "s"),
        "invocations": ("AWS/SageMaker", "Invocations", "Sum", 1.0, "requests"),
        "errors_5xx": ("AWS/SageMaker", "Invocation5XXErrors", "Sum", 1.0, "requests"),
        # percent of one core (CPU: up to 100 x cores) or of the instance (memory, GPU): 0.01 gives ratios
        "cpu": ("/aws/sagemaker/Endpoints", "CPUUtilization", "Average", 0.01, "cores"),
        "memory": ("/aws/sagemaker/Endpoints", "MemoryUtilization", "Average", 0.01, "ratio"),
        "gpu": ("/aws/sagemaker/Endpoints", "GPUUtilization", "Average", 0.01, "ratio"),
    },
}  # fmt: skip


class CloudWatchPreset(_Strict):
    """The metrics of one API stage or SageMaker endpoint by name, instead of their queries: each becomes a
    :class:`CloudWatchQuery` named ``<name>_<metric>`` (e.g. ``endpoint_cpu``)."""

    preset: Literal["apigateway", "sagemaker_endpoint"]
    name: str
    #: API Gateway: the API and the stage
    api_name: str = ""
    stage: str = ""
    #: SageMaker: the endpoint and its variants -> the predictions' instance each serves
    endpoint: str = ""
    variants: dict[str, str] = {}
    #: without variants (API Gateway): the instance the values apply to ("" = every prediction)
    instance: str = ""
    #: metric suffix -> saturation threshold, after scaling (e.g. ``cpu: 0.9`` for 90 % of a core)
    saturation: dict[str, float] = {}
    #: only these metric suffixes (default: all of the preset's)
    metrics: list[str] = []

    _name = field_validator("name")(lambda v: QueryConfig._name(v))  # type: ignore[operator]

    @model_validator(mode="after")
    def _known(self) -> CloudWatchPreset:
        table = PRESETS[self.preset]
        unknown = sorted({*self.saturation, *self.metrics} - set(table))
        if unknown:
            raise ValueError(f"{self.name}: {', '.join(unknown)} not among the {self.preset} metrics "
                             f"({', '.join(table)})")  # fmt: skip
        needs = ("api_name", "stage") if self.preset == "apigateway" else ("endpoint",)
        if missing := [k for k in needs if not getattr(self, k)]:
            raise ValueError(f"{self.name}: preset {self.preset} needs {', '.join(missing)}")
        return self

    def queries(self) -> list[CloudWatchQuery]:
        """The preset's metrics as queries."""
        out = []
        for suffix, (namespace, metric, stat, scale, unit) in PRESETS[self.preset].items():
            if self.metrics and suffix not in self.metrics:
                continue
            if self.preset == "apigateway":
                dims, join = {"ApiName": self.api_name, "Stage": self.stage}, {"instance": self.instance}
            else:
                dims = {"EndpointName": self.endpoint}
                join = ({"instance_dimension": "VariantName", "instances": self.variants} if self.variants
                        else {"instance": self.instance})  # fmt: skip
            out.append(CloudWatchQuery(name=f"{self.name}_{suffix}", namespace=namespace, metric=metric, stat=stat,
                                       dimensions=dims, scale=scale, unit=unit, saturation=self.saturation.get(suffix),
                                       description=f"{self.preset} {metric} ({stat})", **join))  # fmt: skip
        return out


class CloudWatchConfig(_Strict):
    """CloudWatch as a source beside Prometheus (README "CloudWatch and API Gateway"): GetMetricData through
    the Airflow AWS connection, into the same ``resources`` partition."""

    conn_id: str = "aws_default"
    #: the region of the metrics (default: the connection's)
    region: str | None = None
    #: the period of every value; longer where CloudWatch keeps only coarser data for the window's age
    period: Duration = timedelta(seconds=60)
    queries: list[CloudWatchQuery] = []
    presets: list[CloudWatchPreset] = []

    _period = field_validator("period", mode="before")(lambda v: parse_duration(v))

    @field_validator("period")
    @classmethod
    def _whole_minutes(cls, v: timedelta) -> timedelta:
        if v.total_seconds() % 60:
            raise ValueError(f"{v} is not a multiple of 60 s (CloudWatch's standard resolution)")
        return v

    def all_queries(self) -> list[CloudWatchQuery]:
        """The queries, then the presets' queries."""
        return [*self.queries, *(q for p in self.presets for q in p.queries())]


class ExperimentConfig(_Strict):
    name: str = Field(min_length=1)
    layout: Literal["run_per_prediction", "metric_history", "batch_table"] = "run_per_prediction"


class TagKeys(_Strict):
    model: str = "model"
    model_version: str = "model_version"
    instance: str = "instance"


#: an MLflow metric or param key (MLflow allows letters, digits, ``_ - . /`` and spaces; a space would make a
#: column name some engines refuse)
LoggedKey = Annotated[str, Field(min_length=1, max_length=250, pattern=r"^[A-Za-z0-9_.\-/]+$")]


class LoggedValues(_Strict):
    """Values a team logs with each prediction, read beside ``prediction_time`` so drift can judge them
    (``drift.values``). Each becomes a column of the ``predictions`` dataset (``modelwatch.schema.logged_column``);
    drift judges it as an input, or as an output with ``role: output`` under ``drift.values``.
    """

    #: MLflow metric keys (numbers: a model output such as a score, or a numeric input feature) -> ``metric_<key>``.
    #: ``run_per_prediction``: the run's metric; ``metric_history``: the point at the prediction's timestamp
    #: and step; ``batch_table``: the artifact's column of that name.
    metrics: list[LoggedKey] = []
    #: MLflow param keys of the run (text: an input category, a feature flag) -> ``param_<key>``; in the
    #: ``metric_history`` and ``batch_table`` layouts every prediction of a run shares its run's params.
    params: list[LoggedKey] = []

    def columns(self) -> dict[str, tuple[Literal["metric", "param"], str]]:
        """Column name -> (source, key)."""
        pairs = [("metric", k) for k in self.metrics] + [("param", k) for k in self.params]
        out: dict[str, tuple[Literal["metric", "param"], str]] = {}
        for source, key in pairs:
            column = logged_column(source, key)
            if column in out:
                raise ValueError(f"mlflow.logged: {source} {key!r} and {out[column][0]} {out[column][1]!r} "
                                 f"would both be column {column!r}")  # fmt: skip
            out[column] = (source, key)  # type: ignore[assignment]
        return out

    @model_validator(mode="after")
    def _distinct_columns(self) -> LoggedValues:
        self.columns()
        return self


class MlflowConfig(_Strict):
    conn_id: str = "mlflow_default"
    max_results_per_page: int = Field(default=1000, gt=0, le=50000)
    experiments: list[ExperimentConfig] = Field(min_length=1)
    tags: TagKeys = TagKeys()
    logged: LoggedValues = LoggedValues()


class CorrelationConfig(_Strict):
    tolerance: Duration = timedelta(seconds=60)
    #: models judged by one mapped ``correlate`` task (modelwatch.fanout): fewer means more tasks to spread
    #: over workers, each paying a task's start-up (a few seconds)
    models_per_task: int = Field(default=10, ge=1, le=10000)

    _tol = field_validator("tolerance", mode="before")(lambda v: parse_duration(v))


class ModelOverride(_Strict):
    slow_prediction_seconds: float | None = Field(default=None, gt=0)
    min_slow_count: int | None = Field(default=None, ge=1)
    min_slow_share: float | None = Field(default=None, gt=0, le=1)
    min_coverage: float | None = Field(default=None, gt=0, le=1)
    significance: float | None = Field(default=None, gt=0, lt=1)
    min_relative_risk: float | None = Field(default=None, ge=1)


class ModelThresholds(_Strict):
    """The thresholds in force for one model, after its override is applied."""

    slow_prediction_seconds: float
    min_slow_count: int
    min_slow_share: float
    min_coverage: float
    significance: float
    min_relative_risk: float


class EvaluationConfig(_Strict):
    """When a model is slow, and when a resource's saturation explains it (README: "The verdict rule")."""

    slow_prediction_seconds: float = Field(gt=0)
    #: slow enough to judge needs at least this many slow predictions AND this share of all judged ones
    #: (the share is the SLO's budget: 1 % slow is what "99 % under slow_prediction_seconds" allows)
    min_slow_count: int = Field(default=5, ge=1)
    min_slow_share: float = Field(default=0.01, gt=0, le=1)
    #: a resource is evidence only if at least this share of the slow predictions had a real sample of it
    min_coverage: float = Field(default=0.5, gt=0, le=1)
    #: largest p-value (Fisher's exact test, one-sided, Holm-adjusted over the model's resources)
    significance: float = Field(default=0.01, gt=0, lt=1)
    #: smallest relative risk P(slow | saturated) / P(slow | not saturated) that counts as an explanation
    min_relative_risk: float = Field(default=2.0, ge=1)
    #: models that must have predictions in every window; one without any gets ``no_data``
    expected_models: list[ModelName] = Field(default_factory=list)
    models: dict[ModelName, ModelOverride] = Field(default_factory=dict)

    def for_model(self, model: str) -> ModelThresholds:
        """Thresholds for ``model``: the defaults with its override (if any) on top."""
        base = {k: getattr(self, k) for k in ModelThresholds.model_fields}
        override = self.models.get(model)
        if override is not None:
            base.update({k: v for k, v in override.model_dump().items() if v is not None})
        return ModelThresholds(**base)


class MetricRule(_Strict):
    """How one prediction-quality metric is judged (``accuracy``: lower is worse; ``loss``: higher is worse)."""

    #: an absolute bound on the window's mean: accuracy below it, or loss above it, is a regression
    #: whatever the reference says (empty: no bound)
    limit: float | None = None
    #: the smallest worsening of the mean against the reference that counts (absolute, in the metric's
    #: unit): a difference smaller than this is not a regression, however significant with many predictions
    min_change: float = Field(default=0.02, ge=0)


class QualityRules(_Strict):
    """The quality rules of one model (see :class:`QualityConfig` for the defaults and overrides)."""

    accuracy: MetricRule = MetricRule()
    loss: MetricRule = MetricRule()
    #: fewer labelled predictions than this in the window: ``no_labels``, never ``ok``; the reference needs
    #: as many to be compared with
    min_labels: int = Field(default=30, ge=2)
    #: largest p-value (Mann-Whitney U, one-sided, Holm-adjusted over the model's metrics)
    significance: float = Field(default=0.01, gt=0, lt=1)


class QualityOverride(_Strict):
    accuracy: MetricRule | None = None
    loss: MetricRule | None = None
    min_labels: int | None = Field(default=None, ge=2)
    significance: float | None = Field(default=None, gt=0, lt=1)


class QualityConfig(QualityRules):
    """Is the model still right: accuracy and loss of the window against bounds and against the same model's
    canonical daily partitions of the ``reference_days`` days before the window (README: "Quality")."""

    reference_days: int = Field(default=7, ge=1, le=90)
    #: ground truth often arrives days later: each scheduled or manual daily run also triggers a quality-only
    #: re-judging of each of this many days before its own (0: off)
    rejudge_days: int = Field(default=0, ge=0, le=30)
    models: dict[ModelName, QualityOverride] = Field(default_factory=dict)

    def for_model(self, model: str) -> QualityRules:
        """Rules for ``model``: the defaults with its override (if any) on top."""
        base = {k: getattr(self, k) for k in QualityRules.model_fields}
        override = self.models.get(model)
        if override is not None:
            base.update({k: v for k, v in override if v is not None})
        return QualityRules(**base)


#: The per-prediction values drift can be judged on: columns of the ``predictions`` dataset
#: (``modelwatch.schema.PREDICTION_COLUMNS``; a unit test keeps the two in step), and the columns of the
#: values in ``mlflow.logged`` (``metric_<key>``, ``param_<key>``).
DriftColumn = Literal["prediction_time", "accuracy", "loss", "model_version", "instance"]


class DriftValue(_Strict):
    """How one value's distribution is compared with the reference's."""

    #: ``number``: population stability index over the reference's quantile bins and the two-sample
    #: Kolmogorov-Smirnov test; ``category``: the index over categories and the chi-square test
    kind: Literal["number", "category"] = "number"
    #: drifted needs an index at least this large (0.1-0.25 is a moderate shift, above 0.25 a large one) ...
    psi: float = Field(default=0.25, gt=0)
    #: ... and the test's p-value at most this (Holm-adjusted over the model's values)
    significance: float = Field(default=0.01, gt=0, lt=1)
    #: what a value a team logs (``mlflow.logged``) is to the model: ``input`` (a feature, the default) or
    #: ``output`` (what it answered: a score, a predicted label), named so in the reason, the ``drift``
    #: dataset and the report. The service's own columns (``prediction_time``, ...) take none.
    role: Literal["input", "output"] | None = None


class DriftConfig(_Strict):
    """Has what the model sees or answers shifted: each value's distribution in the window against the
    same reference days as quality (README: "Drift")."""

    #: column -> its rule: one of :data:`DriftColumn` or a logged value's column (checked against
    #: ``mlflow.logged`` by :class:`ModelwatchConfig`)
    values: dict[str, DriftValue] = Field(default_factory=lambda: {"prediction_time": DriftValue()})
    #: quantile bins of the reference for a number's index
    bins: int = Field(default=10, ge=2, le=50)
    #: fewer values than this in the window or the reference: not compared (``no_reference``)
    min_count: int = Field(default=100, ge=10)


Severity = Literal["info", "warning", "critical", "page"]


class PageRule(_Strict):
    """Whether a verdict other than ``degraded`` pages, and as which alert (its own name and severity, so
    routes, inhibition rules and silences can tell it apart)."""

    page: bool
    alertname: str = Field(min_length=1)
    severity: Severity


class AlertingConfig(_Strict):
    conn_id: str = "alertmanager_default"
    #: the alert of a ``degraded`` verdict (slow predictions that saturated resources explain)
    alertname: str = "ModelPredictionsDegraded"
    severity: Severity = "warning"
    #: an expected model without predictions or without resource samples: silence is an incident
    no_data: PageRule = PageRule(page=True, alertname="ModelPredictionsMissing", severity="warning")
    #: slow predictions no resource explains: off by default (nothing for infrastructure to act on)
    slow_unexplained: PageRule = PageRule(
        page=False, alertname="ModelPredictionsSlowUnexplained", severity="info"
    )
    #: the model's quality regressed (accuracy or loss, README "Quality"), whatever its latency verdict
    quality: PageRule = PageRule(page=True, alertname="ModelQualityRegressed", severity="warning")
    #: a drifted distribution: a leading indicator rather than an incident, so off by default
    drift: PageRule = PageRule(page=False, alertname="ModelInputsDrifted", severity="info")
    #: an incident that ends less than this before the next window's incident starts (the same alert) is one
    #: incident: its alert keeps the first start and lists both windows (an incident across midnight)
    incident_gap: Duration = timedelta(minutes=30)
    page_on_backfill: bool = False
    #: An alert whose endsAt has passed is resolved on arrival and pages no one, so a posted alert stays
    #: active this long after it is posted; the incident's own times are in its annotations.
    active_for: Duration = timedelta(hours=4)

    #: who gets the email when a task fails for good, or a run misses its deadline
    failure_email: list[str] = Field(default_factory=lambda: ["ml-oncall@localhost"], min_length=1)
    smtp_conn_id: str = "smtp_default"
    #: a run not finished this long after it was queued (its interval's end, for a scheduled run) emails
    run_deadline: Duration = timedelta(hours=3)

    _active = field_validator("active_for", "run_deadline", "incident_gap", mode="before")(
        lambda v: parse_duration(v)
    )

    @model_validator(mode="after")
    def _distinct_alertnames(self) -> AlertingConfig:
        names = [self.alertname, self.no_data.alertname, self.slow_unexplained.alertname, self.quality.alertname,
                 self.drift.alertname]  # fmt: skip
        if len(set(names)) != len(names):
            raise ValueError(
                f"alertname and the alertname of no_data, slow_unexplained, quality and drift must differ, got {names}"
            )
        return self

    def paging_rules(self) -> dict[str, tuple[str, str]]:
        """verdict -> (alertname, severity) of every verdict that pages."""
        rules = {"degraded": (self.alertname, self.severity)}
        for verdict, rule in (("no_data", self.no_data), ("slow_unexplained", self.slow_unexplained)):
            if rule.page:
                rules[verdict] = (rule.alertname, rule.severity)
        return rules


class PublishConfig(_Strict):
    """Verdicts as Prometheus series (docs/metrics-and-dashboards.md, "Verdicts as metrics"): each canonical
    run replaces its DAG's group in a Pushgateway, which Prometheus scrapes (``honor_labels: true``)."""

    enabled: bool = True
    #: the Airflow connection of the Pushgateway (connection type ``pushgateway``)
    conn_id: str = Field(default="pushgateway_default", min_length=1)
    #: the ``job`` label of every group; the grouping label ``dag`` tells the DAG variants apart
    job: str = Field(default="modelwatch", min_length=1)


class RulesConfig(_Strict):
    """Prometheus rules rendered from this file (``python -m modelwatch.rules``, docs/aws.md): a recording rule per
    query with a saturation threshold, and an alert per instance whose resource stays at or above it."""

    #: a resource at or above its saturation threshold this long, on one instance, fires the alert
    saturation_for: Duration = timedelta(minutes=5)
    #: the alert's name: one name for every resource (its ``resource`` label tells them apart)
    alertname: str = Field(default="ModelwatchResourceSaturated", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    severity: Severity = "warning"

    _for = field_validator("saturation_for", mode="before")(lambda v: parse_duration(v))


class TasksConfig(_Strict):
    """How long a task may take and how often Airflow tries it again: the outer bound of every retry below
    it (a hook's own retries happen inside one try, and a try is killed at ``execution_timeout``)."""

    #: each try of each task; a source that hangs holds a worker at most this long
    execution_timeout: Duration = timedelta(minutes=30)
    #: Airflow's retries after the first try (a refusal, such as bad PromQL, fails without them)
    retries: int = Field(default=2, ge=0, le=10)
    #: delay before the first retry, doubled per retry up to ``max_retry_delay``
    retry_delay: Duration = timedelta(seconds=30)
    max_retry_delay: Duration = timedelta(minutes=10)

    _durations = field_validator("execution_timeout", "retry_delay", "max_retry_delay", mode="before")(
        lambda v: parse_duration(v)
    )

    def retry_delays(self) -> list[timedelta]:
        """The waits between tries, as Airflow's exponential backoff gives them (at most ``max_retry_delay``;
        Airflow adds a little jitter below these)."""
        return [min(self.retry_delay * 2**k, self.max_retry_delay) for k in range(self.retries)]

    @property
    def worst_case(self) -> timedelta:
        """The longest a task can take before it fails for good: every try at its timeout, every wait."""
        return self.execution_timeout * (self.retries + 1) + sum(self.retry_delays(), timedelta())


class ModelwatchConfig(_Strict):
    storage: StorageConfig = StorageConfig()
    prometheus: PrometheusConfig
    cloudwatch: CloudWatchConfig = CloudWatchConfig()
    mlflow: MlflowConfig
    correlation: CorrelationConfig = CorrelationConfig()
    evaluation: EvaluationConfig
    quality: QualityConfig = QualityConfig()
    drift: DriftConfig = DriftConfig()
    alerting: AlertingConfig = AlertingConfig()
    publish: PublishConfig = PublishConfig()
    tasks: TasksConfig = TasksConfig()
    rules: RulesConfig = RulesConfig()

    @model_validator(mode="after")
    def _saturation_somewhere(self) -> ModelwatchConfig:
        if not self.saturation_thresholds:
            raise ValueError("no query has a saturation threshold, so no model could ever be degraded")
        return self

    @model_validator(mode="after")
    def _names_once(self) -> ModelwatchConfig:
        names = [q.name for q in self.resource_queries]
        if twice := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"resource name(s) {', '.join(twice)} used by more than one query (prometheus.queries "
                             "and cloudwatch): each becomes a column of the joined predictions")  # fmt: skip
        return self

    @model_validator(mode="after")
    def _drift_values_are_read(self) -> ModelwatchConfig:
        known = [*get_args(DriftColumn), *self.mlflow.logged.columns()]
        unknown = [v for v in self.drift.values if v not in known]
        if unknown:
            raise ValueError(
                f"drift.values: {', '.join(map(repr, unknown))} is not a column the predictions have; expected "
                f"one of {', '.join(known)} (a value a team logs is named in mlflow.logged: metrics -> "
                "metric_<key>, params -> param_<key>)"
            )
        if roled := [v for v, rule in self.drift.values.items() if rule.role and v in get_args(DriftColumn)]:
            raise ValueError(
                f"drift.values: {', '.join(map(repr, roled))} take(s) no role: input and output name the values a "
                f"team logs (mlflow.logged: {', '.join(self.mlflow.logged.columns()) or 'none yet'}); e.g. a "
                "score the model answers, logged as metric score: metric_score: {kind: number, role: output}"
            )
        return self

    @model_validator(mode="after")
    def _a_try_fits_the_deadline(self) -> ModelwatchConfig:
        if self.tasks.execution_timeout >= self.alerting.run_deadline:
            raise ValueError(
                f"tasks.execution_timeout ({self.tasks.execution_timeout}) must be shorter than "
                f"alerting.run_deadline ({self.alerting.run_deadline}): one try alone would outlast the deadline"
            )
        return self

    @property
    def resource_queries(self) -> list[QueryConfig | CloudWatchQuery]:
        """Every resource the evidence can use: the Prometheus queries, then the CloudWatch ones."""
        return [*self.prometheus.queries, *self.cloudwatch.all_queries()]

    @model_validator(mode="after")
    def _rules_alert_is_its_own(self) -> ModelwatchConfig:
        a = self.alerting
        taken = [
            a.alertname,
            a.no_data.alertname,
            a.slow_unexplained.alertname,
            a.quality.alertname,
            a.drift.alertname,
        ]
        if self.rules.alertname in taken:
            raise ValueError(f"rules.alertname {self.rules.alertname!r} is already an alertname of `alerting`: "
                             "the saturation alert of the rules needs a name of its own")  # fmt: skip
        return self

    def query(self, name: str) -> QueryConfig | CloudWatchQuery:
        """The resource query called ``name`` (Prometheus or CloudWatch)."""
        for q in self.resource_queries:
            if q.name == name:
                return q
        raise KeyError(name)

    @property
    def saturation_thresholds(self) -> dict[str, float]:
        """Query name -> saturation threshold, for the queries that have one."""
        return {q.name: q.saturation for q in self.resource_queries if q.saturation is not None}


#: characters of a value a message echoes, and problems one message lists: a pasted page, or a value that
#: aliases expand, must never become a message of millions of characters (an Airflow import error, a log line)
ECHO_CHARS = 200
MAX_PROBLEMS = 20
#: characters one YAML document may have: the shipped file has about 12,000, and PyYAML reads some 100 kB a second
MAX_YAML_CHARS = 1_000_000
#: values one YAML document may stand for once its aliases are expanded, and how deep it may nest; the shipped
#: file has a few hundred values, 5 levels. A "billion laughs" paste (nine nested lists of nine aliases:
#: 400 bytes) stands for 10^9 and is refused while it is read, before anything is built or validated.
MAX_YAML_VALUES = 100_000
MAX_YAML_DEPTH = 50

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = ECHO_CHARS
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict, _REPR.maxset = 3, 8, 8, 8, 8


def _short(value: Any, limit: int = ECHO_CHARS) -> str:
    """``repr(value)`` in at most ``limit`` characters, without building the repr of a huge value first."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error, and that a document
    whose aliases expand to more than :data:`MAX_YAML_VALUES` values, or that nests deeper than
    :data:`MAX_YAML_DEPTH`, is refused while it is read.

    Plain YAML keeps the last value silently: a second ``evaluation:`` section pasted below the first
    would replace it without a word. And an alias costs nothing to read but is a full copy to everything
    after the loader (validation walks it, an error message echoes it): ``*b`` of a ``b`` made of nine ``*a``
    is 81 values, and nine such levels are a billion.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._values: dict[int, int] = {}  # id(node) -> how many values the node stands for, aliases expanded
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        self._aliases += isinstance(event, yaml.AliasEvent)
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_YAML_DEPTH} levels deep",
                                              event.start_mark)  # fmt: skip
        node = super().compose_node(parent, index)
        self._depth -= 1
        size = self._values.get(id(node))
        if size is None:
            if isinstance(event, yaml.AliasEvent):  # its anchor is still being read: it contains itself
                raise yaml.composer.ComposerError(None, None, f"alias *{_cut(str(event.anchor), 80)} refers to a "
                                                  "value that contains it", event.start_mark)  # fmt: skip
            children = [c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode) else (
                node.value if isinstance(node, yaml.SequenceNode) else [])  # fmt: skip
            size = 1 + sum(self._values[id(c)] for c in children)
            self._values[id(node)] = size
        if size > MAX_YAML_VALUES:
            raise yaml.composer.ComposerError(None, None, self._too_many(event), event.start_mark)
        return node

    def _too_many(self, event: yaml.Event) -> str:
        if not self._aliases:
            return f"the document holds more than {MAX_YAML_VALUES:,} values: too many for a configuration"
        alias = f" (here *{_cut(str(event.anchor), 80)})" if isinstance(event, yaml.AliasEvent) else ""
        return (f"its {self._aliases} alias(es){alias} expand to more than {MAX_YAML_VALUES:,} values: too many for a "
                "configuration (a YAML alias bomb?); write the values out or use fewer aliases")  # fmt: skip

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            try:
                key = self.construct_object(key_node, deep=deep)
                hash(key)
            except (TypeError, yaml.YAMLError):
                continue  # left to the base class, which reports it
            if key in first and key != "<<":
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {_short(key)} is given twice (first at line {first[key] + 1})",
                    key_node.start_mark,
                )
            first[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


#: keys of earlier versions and what replaced them, so an old file fails with a way forward
REMOVED_KEYS = {
    "min_lift": "removed: the lift collapses when saturation holds much of the traffic; use min_relative_risk "
                "(README, 'The verdict rule')",
    "min_coincidence_share": "removed: a resource now explains slowness by relative risk and Fisher's exact test; "
                             "use min_relative_risk and significance (README, 'The verdict rule')",
}  # fmt: skip


def _dotted(loc: tuple[int | str, ...]) -> str:
    """``evaluation.models.recommender.significance``; a mapping's key itself as ``evaluation.models[''] (the key)``."""
    parts = [_cut(str(p), 80) for p in loc]
    if len(parts) >= 2 and parts[-1] == "[key]":
        parts = [*parts[:-3], f"{parts[-3] if len(parts) > 2 else ''}[{_short(loc[-2], 80)}] (the key)"]
    return _cut(".".join(parts), 400) or "(top level)"


def _format_errors(path: Path, exc: ValidationError) -> str:
    """One line per problem, naming the dotted key; at most :data:`MAX_PROBLEMS` lines, each echoing at most
    :data:`ECHO_CHARS` of the value it refuses (every message stays a few kilobytes whatever was pasted)."""
    errors = exc.errors(include_url=False)
    lines = [f"{path}: {len(errors)} problem(s) in the modelwatch configuration"]
    for err in errors[:MAX_PROBLEMS]:
        key = _dotted(err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden" and str(err["loc"][-1]) in REMOVED_KEYS:
            msg = REMOVED_KEYS[str(err["loc"][-1])]
        elif err["type"] == "extra_forbidden":
            msg = "unknown key (not part of the schema; check the spelling)"
        elif err["type"] == "missing":
            msg = "required key is missing"
        got = "" if err["type"] == "missing" else f" (got {_short(err.get('input'))})"
        lines.append(f"  {key}: {_cut(msg, 800)}{got}")
    if len(errors) > MAX_PROBLEMS:
        lines.append(f"  ... and {len(errors) - MAX_PROBLEMS} more problem(s)")
    return "\n".join(lines)


def config_path() -> Path:
    """The configuration file in force: ``$MODELWATCH_CONFIG`` or ``include/thresholds.yaml``."""
    return Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)


def _parse_yaml(text: str, where: str) -> dict[str, Any]:
    if len(text) > MAX_YAML_CHARS:
        raise ConfigError(f"{where}: {len(text):,} characters is too long for a modelwatch configuration (at most "
                          f"{MAX_YAML_CHARS:,}; the shipped one has about 12,000): was something else pasted?")  # fmt: skip
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            f"{where}: invalid YAML{at}: {_cut(str(getattr(exc, 'problem', exc)), 400)}"
        ) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level, got {type(raw).__name__}")
    return raw


def _read_raw(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the modelwatch configuration: {exc.strerror}") from None
    raw = _parse_yaml(text, str(path))
    if os.environ.get(STORAGE_URL_ENV):
        raw.setdefault("storage", {})
        if isinstance(raw["storage"], dict):
            raw["storage"] = {**raw["storage"], "base_url": os.environ[STORAGE_URL_ENV]}
    return raw


def _validate(raw: dict[str, Any], where: str | Path) -> ModelwatchConfig:
    try:
        return ModelwatchConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(Path(where), exc)) from None


def load_config(path: str | Path | None = None) -> ModelwatchConfig:
    """Read and validate the configuration.

    :param path: the YAML file; default :func:`config_path`.
    :raises ConfigError: naming the file, the key and the problem.
    """
    path = Path(path) if path is not None else config_path()
    return _validate(_read_raw(path), path)


def merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` on top: mappings merge key by key; anything else (a list, a number) replaces,
    and so does an empty mapping (``models: {}`` clears the per-model overrides)."""
    out = dict(base)
    for key, value in changes.items():
        deeper = isinstance(value, dict) and value and isinstance(out.get(key), dict)
        out[key] = merged(out[key], value) if deeper else value
    return out


def load_changed_config(changes: str, where: str, path: str | Path | None = None) -> ModelwatchConfig:
    """The configuration in force with ``changes`` on top (:func:`merged`): a whole ``thresholds.yaml`` or only
    the keys to change, e.g. ``drift: {values: {prediction_time: {psi: 0.1}}}``.

    :param changes: YAML text. :param where: names it in errors (a trigger-form field).
    :raises ConfigError: naming ``where``, the key and the problem.
    """
    path = Path(path) if path is not None else config_path()
    raw = merged(_read_raw(path), _parse_yaml(changes, where) if changes.strip() else {})
    return _validate(raw, f"{where} (on top of {path})")
