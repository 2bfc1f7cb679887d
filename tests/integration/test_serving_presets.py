"""The serving presets against a real Prometheus scraping the serving stacks' metric families.

devstack/serving_exporter.py stands in for three pods: a Seldon Core v1 deployment (quiet), a Seldon Core 2
server replica running MLServer, and a KServe predictor behind the Knative queue-proxy. Their families have
the exact names, labels, types and units of the projects' code; the session stack's Prometheus scrapes
each pod every 5 s through the ``serving-stand-in`` file_sd job, with the pod label Kubernetes discovery
would give. After a quiet phase the Seldon Core 2 replica's loaded models fill 96 % of its memory and the
Knative queue fills, and those two pods' models answer slowly; predictions of the three models (one a
second each, tagged with their pods) go to MLflow. The DAG then judges the windows with a configuration of
presets only (``prometheus.presets``, nothing written by hand):

- the whole run: ``iris`` (Seldon Core 2) is degraded naming the replica's memory, ``sklearn-iris`` (KServe)
  degraded naming the queue-proxy's queue, ``iris-v1`` (Seldon Core v1) healthy;
- the quiet phase: all three healthy;
- the values are in the units the configuration says (Knative's milliseconds read as seconds, memory as a
  ratio, rates per second), joined to the predictions of their own pod;
- the ``fastapi_instrumentator`` preset over the session's real sample service (prometheus-fastapi-instrumentator
  itself), which the module sends requests of a known body size meanwhile: its rate, latency and body sizes.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from config_helpers import own_alertnames
from polling import wait_until

from devstack import serving_exporter as standin
from devstack.runner import load_dag, run_window, task_states, xcom

DAG_ID = "model_performance_monitoring"
LIVE_CONFIG = Path(__file__).resolve().parents[2] / "include" / "thresholds.live.yaml"
EXPERIMENT = f"serving-presets-{uuid.uuid4().hex[:6]}"
#: seconds of each phase: four 5 s scrapes and more on each side of the incident
QUIET_S, INCIDENT_S, AFTER_S = 20.0, 25.0, 10.0
#: the presets of the configuration under test: every stack the stand-in serves, rates over 20 s (4 scrapes)
PRESETS: list[dict[str, Any]] = [
    # the v1 executor has no resource metric: its error share is the saturation that covers its pod (as the
    # default configuration's error_rate), or its model would be no_data for want of evidence
    {"preset": "seldon_v1", "name": "sv1", "deployment": "iris", "model": "iris-v1", "serving_model": "classifier",
     "rate_window": "20s", "saturation": {"error_share": 0.05}},
    {"preset": "seldon_v2", "name": "sv2", "server": "mlserver", "model": "iris", "rate_window": "20s",
     "saturation": {"memory": 0.9}},
    {"preset": "mlserver", "name": "mls", "model": "iris", "serving_model": "iris_1", "rate_window": "20s"},
    {"preset": "kserve", "name": "ks", "model": "sklearn-iris", "rate_window": "20s"},
    {"preset": "knative", "name": "kn", "service": standin.KNATIVE_SERVICE, "rate_window": "20s",
     "saturation": {"queue_depth": 10}},
]  # fmt: skip
MODELS = {model: pod for pod, (model, _) in standin.PODS.items()}
#: the instrumentator preset, read over the sample service (not joined: its predictions are not in this test)
API_PRESET = {"preset": "fastapi_instrumentator", "name": "api", "handler": "/predict", "rate_window": "20s"}


@pytest.fixture(scope="module")
def presets_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = yaml.safe_load(LIVE_CONFIG.read_text())
    raw["prometheus"]["queries"] = []
    raw["prometheus"]["presets"] = [*PRESETS, API_PRESET]
    raw["mlflow"]["experiments"] = [{"name": EXPERIMENT, "layout": "batch_table"}]
    raw["mlflow"].pop("logged", None)
    raw["evaluation"]["expected_models"] = sorted(MODELS)
    raw.pop("drift", None)
    own_alertnames(raw, f"ModelPredictionsDegradedPresets{uuid.uuid4().hex[:6]}")
    path = tmp_path_factory.mktemp("presets-config") / "thresholds.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _log_predictions(stack: Any, timeline: standin.Timeline, start: float) -> int:
    """One prediction a second per model from ``start`` to the end, slow during the incident on the incident
    pods (what the stand-in's served latencies say), as ``batch_table`` runs: one per model."""
    import mlflow
    import pyarrow as pa

    from devstack.model_service import log_batch_run

    client = mlflow.MlflowClient(stack.config.mlflow_url)
    exp = client.get_experiment_by_name(EXPERIMENT)
    exp_id = exp.experiment_id if exp else client.create_experiment(EXPERIMENT)
    t = np.arange(np.ceil(start), timeline.until, 1.0)
    rng = np.random.default_rng(7)
    n = 0
    for pod, (model, incident_pod) in standin.PODS.items():
        slow = incident_pod & (t >= timeline.incident_start) & (t < timeline.incident_end)
        took = np.where(slow, standin.INCIDENT_SECONDS, standin.QUIET_SECONDS) * rng.uniform(0.8, 1.25, len(t))
        table = pa.table({"timestamp": pa.array((t * 1000).astype("int64"), type=pa.timestamp("ms", tz="UTC")),
                          "prediction_time": took})  # fmt: skip
        log_batch_run(client, exp_id, table, {"model": model, "model_version": "1", "instance": pod})
        n += len(t)
    return n


def _query(stack: Any, promql: str, at: float | None = None) -> list[dict[str, Any]]:
    import json
    import urllib.parse
    import urllib.request

    params = {"query": promql, **({"time": f"{at:.3f}"} if at is not None else {})}
    url = f"{stack.config.prometheus_url}/api/v1/query?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())["data"]["result"]


def _prometheus_has(stack: Any, promql: str) -> bool:
    return bool(_query(stack, promql))


def _call_sample_service(stack: Any, until: float) -> dict[str, Any]:
    """POST /predict to the session's sample service about five times a second until ``until`` (or 40 s),
    every body the same size: {"sent", "request_bytes", "end"}."""
    import json
    import urllib.request

    from devstack.model_service import N_FEATURES

    body = json.dumps({"features": [0.5] * N_FEATURES}).encode()
    sent, deadline = 0, min(until, time.time() + 40)
    while time.time() < deadline:
        req = urllib.request.Request(f"{stack.config.model_service_url}/predict", data=body,
                                     headers={"Content-Type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()
        sent += 1
        time.sleep(0.2)
    return {"sent": sent, "request_bytes": len(body), "end": time.time()}


@pytest.fixture(scope="module")
def judged(stack: Any, airflow_db: Any, presets_config: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The stand-in through its phases, then the DAG over the whole run and over the quiet phase:
    {"whole" and "quiet": (task states, verdict document, joined partition), "sent": what the sample service
    was sent, "timeline": the phases}."""
    from modelwatch.storage import Lake

    start = time.time() + 2
    timeline = standin.Timeline(start + QUIET_S, start + QUIET_S + INCIDENT_S, start + QUIET_S + INCIDENT_S + AFTER_S)
    with standin.running(stack.config.serving_targets_dir, timeline) as info:
        # Prometheus reads the targets file within its refresh and scrapes every pod
        wait_until(lambda: _prometheus_has(stack, 'up{job="serving-stand-in"} == 1'), timeout=30,
                   what="Prometheus scraping the serving stand-in")  # fmt: skip
        logged = _log_predictions(stack, timeline, start)
        sent = _call_sample_service(stack, timeline.until)
        time.sleep(max(0.0, timeline.until - time.time()) + 6)  # the last phase and its last scrape
        print(f"stand-in {info['url']} (pid {info['pid']}): {logged} predictions logged", flush=True)
    mp = pytest.MonkeyPatch()
    for key, value in stack.config.airflow_env().items():
        mp.setenv(key, value)
    mp.setenv("MODELWATCH_CONFIG", str(presets_config))
    lake_url = f"file://{tmp_path_factory.mktemp('presets-lake')}"
    mp.setenv("MODELWATCH_STORAGE_URL", lake_url)
    when = {"whole": (start, timeline.until), "quiet": (start, timeline.incident_start)}
    out: dict[str, Any] = {"sent": sent, "timeline": timeline}
    try:
        for name, (a, b) in when.items():
            run = run_window(datetime.fromtimestamp(int(a), UTC), datetime.fromtimestamp(int(b), UTC),
                             params={"dry_run": True}, dag=load_dag(DAG_ID))  # fmt: skip
            evaluation = xcom(run, "evaluate")
            document = Lake(lake_url).read_document(evaluation["verdict_document"]) if evaluation else None
            joined = Lake(lake_url).read_partition(evaluation["joined"]["url"]) if evaluation else None
            out[name] = (task_states(run), document, joined)
    finally:
        mp.undo()
    return out


def _verdicts(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["model"]: v for v in document["verdicts"]}


def test_the_run_succeeds_on_presets_alone(judged: dict[str, Any]) -> None:
    for name in ("whole", "quiet"):
        states, document, _ = judged[name]
        assert states["evaluate"] == "success", (name, states)
        assert set(_verdicts(document)) == set(MODELS), name


def test_memory_and_queue_saturation_explain_their_models_slowness(judged: dict[str, Any]) -> None:
    verdicts = _verdicts(judged["whole"][1])
    iris, kserve, v1 = verdicts["iris"], verdicts["sklearn-iris"], verdicts["iris-v1"]
    assert iris["verdict"] == "degraded", iris["reason"]
    assert [r["resource"] for r in iris["saturated_resources"]] == ["sv2_memory"], iris["reason"]
    assert kserve["verdict"] == "degraded", kserve["reason"]
    assert [r["resource"] for r in kserve["saturated_resources"]] == ["kn_queue_depth"], kserve["reason"]
    # the Seldon Core v1 pod was quiet; and another pod's memory or queue is not its evidence
    assert v1["verdict"] == "healthy", v1["reason"]
    assert v1["n_predictions"] > 0 and v1["n_slow"] == 0


def test_the_quiet_phase_is_healthy(judged: dict[str, Any]) -> None:
    verdicts = _verdicts(judged["quiet"][1])
    assert {m: v["verdict"] for m, v in verdicts.items()} == dict.fromkeys(MODELS, "healthy")


def test_the_values_are_in_the_configured_units_and_on_their_own_pod(judged: dict[str, Any]) -> None:
    joined = judged["whole"][2]
    quiet_end = judged["quiet"][2]["timestamp"].max()

    def values(model: str, column: str, quiet: bool) -> Any:
        rows = joined[(joined["model"] == model) & ((joined["timestamp"] <= quiet_end) == quiet)]
        return rows[column].dropna()

    # memory as a ratio of the replica's capacity: 0.45 quiet, 0.96 during the incident
    assert values("iris", "res_sv2_memory", True).median() == pytest.approx(standin.QUIET_MEMORY, abs=0.01)
    assert values("iris", "res_sv2_memory", False).max() == pytest.approx(standin.INCIDENT_MEMORY, abs=0.01)
    # rates per second: each pod serves RPS requests a second
    for model, column in (("iris", "res_sv2_request_rate"), ("iris", "res_mls_request_rate"),
                          ("iris-v1", "res_sv1_request_rate"), ("sklearn-iris", "res_kn_request_rate"),
                          ("sklearn-iris", "res_ks_request_rate")):  # fmt: skip
        assert values(model, column, True).median() == pytest.approx(standin.RPS, rel=0.3), column
    # latencies in seconds, Knative's milliseconds included: about 60 ms quiet, 1.8 s in the incident
    for model, column in (("sklearn-iris", "res_kn_latency_p95"), ("sklearn-iris", "res_ks_predict_p95"),
                          ("iris", "res_sv2_mean_latency"), ("iris", "res_mls_mean_latency"),
                          ("iris-v1", "res_sv1_model_latency_p95")):  # fmt: skip
        assert 0.01 < values(model, column, True).median() < 0.25, column
    assert 1.0 < values("sklearn-iris", "res_kn_latency_p95", False).max() < 5.0
    # each pod's values join its own model's predictions only: KServe's on sklearn-iris, Seldon's on iris
    assert values("iris", "res_ks_predict_p95", True).empty and values("iris", "res_kn_queue_depth", True).empty
    assert values("sklearn-iris", "res_sv2_memory", True).empty
    assert values("iris-v1", "res_sv2_memory", True).empty


def test_the_instrumentator_preset_reads_the_real_service(stack: Any, judged: dict[str, Any],
                                                          presets_config: Path) -> None:  # fmt: skip
    """The fastapi_instrumentator preset's PromQL over prometheus-fastapi-instrumentator's own series: the
    requests this module sent, their body size in bytes, the latency in seconds."""
    from modelwatch.config import load_config

    cfg = load_config(presets_config)
    sent = judged["sent"]
    at = sent["end"]  # the 20 s rate windows end with the last request
    assert sent["sent"] > 50

    def value(name: str) -> float:
        (series,) = _query(stack, cfg.query(name).promql, at)
        return float(series["value"][1])

    assert value("api_request_bytes") == pytest.approx(sent["request_bytes"])
    assert 30 < value("api_response_bytes") < 500  # label, probability, model and version as JSON
    assert 1.0 < value("api_request_rate") < 10.0  # about five a second
    assert 0 < value("api_latency_p95") < 1.0
    assert value("api_error_share") == 0
