"""Query presets of the serving stacks: the PromQL of each stack's own metric families, by name.

``prometheus.presets`` in ``include/thresholds.yaml`` names a serving stack instead of writing its queries
(as ``cloudwatch.presets`` does for API Gateway and SageMaker); :func:`render` expands one entry into
queries named ``<name>_<metric>``. Every value comes out in the unit the rest of the configuration uses
(seconds, requests per second, ratios, bytes), whatever the stack exports (Knative counts milliseconds).

The metric families, their labels and their types are those of the projects' own code (read again before
changing one):

- ``fastapi_instrumentator`` (prometheus-fastapi-instrumentator's default metrics): ``http_requests_total``
  (``handler, method, status`` with status grouped as ``2xx``..``5xx``), ``http_request_duration_seconds``
  (histogram), ``http_request_size_bytes`` and ``http_response_size_bytes`` (summaries: ``_sum``, ``_count``).
  Instance: the scrape target's label (``prometheus.instance_label``).
- ``seldon_v1`` (the Seldon Core v1 executor, ``executor/api/metric``): ``seldon_api_executor_server_requests_seconds``
  (histogram; ``deployment_name, predictor_name, predictor_version, service, method, code``) and
  ``seldon_api_executor_client_requests_seconds`` (the same plus ``model_name, model_image, model_version``:
  the per-model one). Instance: ``pod``, as Kubernetes service discovery relabels it.
- ``seldon_v2`` (the Seldon Core 2 agent, ``scheduler/pkg/metrics/agent.go``): ``seldon_model_infer_total``
  and ``seldon_model_infer_seconds_total`` (counters; ``server, server_replica, model, model_internal,
  method_type, code``), ``seldon_model_infer_api_seconds`` (histogram; ``server, server_replica, method,
  code``: no model label), ``seldon_loaded_model_memory_bytes_gauge`` (``server, server_replica,
  model_internal``) and ``seldon_server_replica_memory_capacity_bytes_gauge`` (``server, server_replica``).
  Instance: ``<server>-<server_replica>``, the name of the server's StatefulSet pod (``mlserver-0``).
- ``mlserver`` (MLServer's ``handlers/dataplane.py`` and ``parallel/dispatcher.py``): ``model_infer_request_success``
  and ``model_infer_request_failure`` (``prometheus_client`` counters, so exposed with ``_total``; ``model,
  version``), ``model_infer_request_duration`` (summary, seconds; ``model, version``), ``parallel_request_queue``
  (histogram of the worker queue sizes observed; ``workerpid``) and ``batch_request_queue`` (the adaptive
  batching queue's). Instance: ``pod``.
- ``kserve`` (the KServe Python model server, ``kserve/metrics.py``): ``request_predict_seconds``,
  ``request_preprocess_seconds``, ``request_postprocess_seconds`` (histograms; ``model_name``). Instance: ``pod``.
- ``knative`` (the Knative Serving queue-proxy beside every KServe serverless pod): ``revision_request_count``
  (counter; ``namespace_name, service_name, configuration_name, revision_name, pod_name, container_name,
  response_code, response_code_class``), ``revision_request_latencies`` (histogram, **milliseconds**) and
  ``revision_queue_depth`` (gauge). Instance: ``pod_name``.

The join keys: each query declares the labels that name the predictions' instance (``instance_labels``,
joined with ``-`` when there are several), so a pod's values meet the predictions MLflow tagged with that
pod, and the sample times behind them are read per the same key. A per-model metric (one with a model
label) is read for the entry's ``model`` only and joins that model's predictions only (``QueryConfig.model``);
without ``model`` it sums every model of the instance. Instance-level metrics (memory, queues, a server's
latency) apply to every model the instance serves.

Pure: imported by :mod:`modelwatch.config` at every DAG parse.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

#: the stacks a preset can name, in the order the README lists them
STACKS = ("fastapi_instrumentator", "seldon_v1", "seldon_v2", "mlserver", "kserve", "knative")


def promql_string(value: str) -> str:
    """``value`` as a PromQL double-quoted string: backslashes, quotes and control characters escaped (a
    model name is data: ``a"b`` must select the model ``a"b``, never end the string)."""
    return json.dumps(value, ensure_ascii=False)


@dataclass(frozen=True)
class Metric:
    """One query of a preset: its PromQL (from a :class:`Render`), unit and what it is."""

    promql: str
    unit: str
    description: str
    #: the metric has a model label: with the entry's ``model`` it is read and joined for that model only
    per_model: bool = False


@dataclass(frozen=True)
class Render:
    """Builds a preset's PromQL: the entry's label matchers, its rate window and its instance key."""

    #: label -> value every selector matches (the entry's ``selector`` and the stack's own, e.g. ``server``)
    matchers: Mapping[str, str]
    #: the rate window, a Prometheus duration (``1m``)
    window: str
    #: the labels the values are grouped by: the instance key
    by: tuple[str, ...]
    #: label and value of the model, for per-model selectors (None: every model)
    model: tuple[str, str] | None = None

    def sel(self, metric: str, per_model: bool = False, **extra: str) -> str:
        """``metric{...}`` with the entry's matchers, the model's when ``per_model``, and ``extra`` (a value
        starting ``~`` or ``!~`` is a regular expression match, ``!`` a negative one)."""
        parts = [f"{k}={promql_string(v)}" for k, v in self.matchers.items()]
        if per_model and self.model is not None:
            parts.append(f"{self.model[0]}={promql_string(self.model[1])}")
        for label, spec in extra.items():
            op, value = ("!~", spec[2:]) if spec.startswith("!~") else ("=~", spec[1:]) if spec.startswith("~") else (
                ("!=", spec[1:]) if spec.startswith("!") else ("=", spec))  # fmt: skip
            parts.append(f"{label}{op}{promql_string(value)}")
        return f"{metric}{{{', '.join(parts)}}}" if parts else metric

    def rate(self, metric: str, per_model: bool = False, **extra: str) -> str:
        return f"rate({self.sel(metric, per_model, **extra)}[{self.window}])"

    def sum(self, expr: str, *extra_by: str) -> str:
        return f"sum by ({', '.join((*self.by, *extra_by))}) ({expr})"

    def per_second(self, counter: str, per_model: bool = False, **extra: str) -> str:
        """Events per second per instance."""
        return self.sum(self.rate(counter, per_model, **extra))

    def p95(self, histogram: str, per_model: bool = False, scale: float = 1.0) -> str:
        """The 95th percentile of a histogram per instance, times ``scale`` (0.001: milliseconds to seconds)."""
        q = f"histogram_quantile(0.95, {self.sum(self.rate(f'{histogram}_bucket', per_model), 'le')})"
        return q if scale == 1.0 else f"{q} * {scale:g}"

    def mean(self, summary: str, per_model: bool = False) -> str:
        """The mean observation per instance of a summary or histogram: rate of ``_sum`` over rate of ``_count``."""
        return f"{self.per_second(f'{summary}_sum', per_model)} / {self.per_second(f'{summary}_count', per_model)}"

    def share(self, counter: str, per_model: bool = False, **bad: str) -> str:
        """The share of ``counter``'s events matching ``bad``: zero, not a gap, before the first such event."""
        total = self.per_second(counter, per_model)
        return f"({self.per_second(counter, per_model, **bad)} or {total} * 0) / {total}"


def _fastapi(r: Render) -> dict[str, Metric]:
    return {
        "request_rate": Metric(r.per_second("http_requests_total"), "req/s", "requests per second served"),
        "error_share": Metric(r.share("http_requests_total", status="5xx"), "ratio", "share of requests answered 5xx"),
        "latency_p95": Metric(r.p95("http_request_duration_seconds"), "s", "95th percentile request latency"),
        "request_bytes": Metric(r.mean("http_request_size_bytes"), "bytes", "mean request body size"),
        "response_bytes": Metric(r.mean("http_response_size_bytes"), "bytes", "mean response body size"),
    }


def _seldon_v1(r: Render) -> dict[str, Metric]:
    server = "seldon_api_executor_server_requests_seconds"
    client = "seldon_api_executor_client_requests_seconds"
    return {
        "request_rate": Metric(r.per_second(f"{server}_count"), "req/s", "requests per second the executor served"),
        "error_share": Metric(r.share(f"{server}_count", code="~5.."), "ratio", "share of requests answered 5xx"),
        "latency_p95": Metric(r.p95(server), "s", "95th percentile latency of the executor's requests"),
        "model_latency_p95": Metric(r.p95(client, per_model=True), "s",
                                    "95th percentile latency of the executor's calls to the model", per_model=True),
    }  # fmt: skip


def _seldon_v2(r: Render) -> dict[str, Metric]:
    infer, seconds = "seldon_model_infer_total", "seldon_model_infer_seconds_total"
    per_model_seconds = f"{r.per_second(seconds, True)} / {r.per_second(infer, True)}"
    memory = (f"{r.sum(r.sel('seldon_loaded_model_memory_bytes_gauge'))} / "
              f"{r.sum(r.sel('seldon_server_replica_memory_capacity_bytes_gauge'))}")  # fmt: skip
    return {
        "request_rate": Metric(r.per_second(infer, True), "req/s", "inference calls per second", per_model=True),
        "error_share": Metric(r.share(infer, True, code="!~2..|OK"), "ratio",
                              "share of inference calls not answered 2xx/OK", per_model=True),
        "mean_latency": Metric(per_model_seconds, "s", "mean inference latency", per_model=True),
        "latency_p95": Metric(r.p95("seldon_model_infer_api_seconds"), "s",
                              "95th percentile latency of the server replica (all its models)"),
        "memory": Metric(memory, "ratio", "memory of the loaded models against the replica's capacity"),
    }  # fmt: skip


def _mlserver(r: Render) -> dict[str, Metric]:
    ok = r.per_second("model_infer_request_success_total", True)
    failed = r.per_second("model_infer_request_failure_total", True)
    # no failure series exists before the first failure: "or ... * 0" makes that zero failures, not a gap
    total = f"({ok} + ({failed} or {ok} * 0))"
    return {
        "request_rate": Metric(total, "req/s", "inference requests per second", per_model=True),
        "error_share": Metric(f"({failed} or {ok} * 0) / {total}", "ratio", "share of failed inference requests",
                              per_model=True),
        "mean_latency": Metric(r.mean("model_infer_request_duration", True), "s", "mean inference latency",
                               per_model=True),
        "parallel_queue": Metric(r.mean("parallel_request_queue"), "requests",
                                 "mean size of the inference workers' queue"),
        "batch_queue": Metric(r.mean("batch_request_queue"), "requests", "mean size of the adaptive batching queue"),
    }  # fmt: skip


def _kserve(r: Render) -> dict[str, Metric]:
    out = {"request_rate": Metric(r.per_second("request_predict_seconds_count", True), "req/s",
                                  "predict calls per second", per_model=True)}  # fmt: skip
    for step in ("predict", "preprocess", "postprocess"):
        out[f"{step}_p95"] = Metric(r.p95(f"request_{step}_seconds", True), "s",
                                    f"95th percentile {step} latency", per_model=True)  # fmt: skip
    return out


def _knative(r: Render) -> dict[str, Metric]:
    return {
        "request_rate": Metric(r.per_second("revision_request_count"), "req/s", "requests per second the pod served"),
        "error_share": Metric(r.share("revision_request_count", response_code_class="5xx"), "ratio",
                              "share of requests answered 5xx"),
        # the queue-proxy counts milliseconds
        "latency_p95": Metric(r.p95("revision_request_latencies", scale=0.001), "s",
                              "95th percentile request latency through the queue-proxy"),
        "queue_depth": Metric(f"max by ({', '.join(r.by)}) ({r.sel('revision_queue_depth')})", "requests",
                              "requests queued in the queue-proxy"),
    }  # fmt: skip


@dataclass(frozen=True)
class Stack:
    """What a preset knows of one serving stack."""

    build: Callable[[Render], dict[str, Metric]]
    #: the labels that name the predictions' instance by default (None: ``prometheus.instance_label``)
    instance_labels: tuple[str, ...] | None
    #: the label a per-model metric names its model by
    model_label: str | None
    #: entry option -> the label it matches (e.g. ``server: mlserver`` -> ``server="mlserver"``)
    options: Mapping[str, str]


STACK_INFO: dict[str, Stack] = {
    "fastapi_instrumentator": Stack(_fastapi, None, None, {"handler": "handler"}),
    "seldon_v1": Stack(_seldon_v1, ("pod",), "model_name", {"deployment": "deployment_name", "predictor": "predictor_name"}),
    "seldon_v2": Stack(_seldon_v2, ("server", "server_replica"), "model", {"server": "server"}),
    "mlserver": Stack(_mlserver, ("pod",), "model", {}),
    "kserve": Stack(_kserve, ("pod",), "model_name", {}),
    "knative": Stack(_knative, ("pod_name",), None, {"service": "service_name", "revision": "revision_name"}),
}  # fmt: skip


def metrics_of(stack: str) -> list[str]:
    """The metric suffixes of ``stack``'s preset, in order."""
    return list(STACK_INFO[stack].build(Render({}, "1m", ("instance",))))


def render(
    stack: str,
    *,
    name: str,
    instance_label: str,
    window: str,
    options: Mapping[str, str],
    selector: Mapping[str, str],
    instance_labels: list[str] | None,
    model: str | None,
    serving_model: str | None,
    saturation: Mapping[str, float],
    metrics: list[str],
) -> list[dict[str, Any]]:
    """The queries (``QueryConfig`` fields) of one preset entry; see the module docstring.

    :param stack: one of :data:`STACKS`. :param name: the prefix of the query names.
    :param instance_label: ``prometheus.instance_label`` (the key of stacks without their own).
    :param window: the rate window. :param options: the stack's options (``server``...) -> value.
    :param selector: more label matchers. :param instance_labels: the entry's own instance key, if any.
    :param model: the predictions' model the per-model queries are for; :param serving_model: the name the
        stack gives it, if not the same.
    :param saturation: metric suffix -> threshold. :param metrics: only these suffixes (default: all).
    """
    info = STACK_INFO[stack]
    by = tuple(instance_labels or info.instance_labels or (instance_label,))
    matchers = {**{info.options[k]: v for k, v in options.items()}, **selector}
    model_match = (info.model_label, serving_model or model) if model and info.model_label else None
    out = []
    for suffix, m in info.build(Render(matchers, window, by, model_match)).items():
        if metrics and suffix not in metrics:
            continue
        out.append({
            "name": f"{name}_{suffix}", "promql": m.promql, "unit": m.unit,
            "description": f"{stack} preset: {m.description}" + (f" of {model}" if m.per_model and model_match else ""),
            "saturation": saturation.get(suffix),
            "instance_labels": [] if by == (instance_label,) else list(by),
            "model": model if m.per_model and model_match else None,
        })  # fmt: skip
    return out
