"""A verdict that comes from CloudWatch evidence, through ``dag.test()`` against the real stack.

A model served by a SageMaker endpoint logs its predictions to MLflow (its own experiment); the endpoint's
instances publish ``CPUUtilization`` to CloudWatch (moto's server, written with PutMetricData), and variant-a's
CPU saturates for 20 minutes of the last hour while the model's predictions there are slow. Prometheus has
nothing to say about those instances. The DAG, with the ``sagemaker_endpoint`` preset mapping variant-a to the
predictions' instance model-a, reads CloudWatch with GetMetricData through the Airflow AWS connection into the
same ``resources`` partition as the Prometheus samples, and finds the model degraded on ``endpoint_cpu``.

The window is the last hour (a trigger-form window): CloudWatch serves 1-minute data for 15 days only, so a
day from the seeded March history would come back at a 1-hour period (``modelwatch.cloudwatch.effective_period``).
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from config_helpers import own_alertnames
from polling import wait_until

from devstack.cloudwatch import ENDPOINT_NAMESPACE, endpoint_cpu, put_metric_data
from devstack.runner import run_window, task_states, xcom
from devstack.stack import S3_ACCESS_KEY, S3_REGION, S3_SECRET_KEY

REPO = Path(__file__).resolve().parents[2]
MODEL = "endpoint-classifier"
ENDPOINT = "endpoint-classifier-prod"


def _instant(prometheus_url: str, query: str, at: datetime) -> list[dict[str, Any]]:
    import json
    import urllib.parse
    import urllib.request

    url = f"{prometheus_url}/api/v1/query?{urllib.parse.urlencode({'query': query, 'time': at.timestamp()})}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return json.loads(opener.open(url, timeout=10).read())["data"]["result"]


def _log_predictions(tracking_uri: str, experiment: str, start: datetime, incident: tuple[datetime, datetime]) -> int:
    """A prediction a minute on each instance over the hour; slow (2.5 s) on model-a during the incident."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(tracking_uri)
    exp = client.create_experiment(experiment)

    def log(instance: str, t: datetime) -> None:
        ms = int(t.timestamp() * 1000)
        slow = instance == "model-a" and incident[0] <= t < incident[1]
        run = client.create_run(exp, start_time=ms, tags={"model": MODEL, "model_version": "1", "instance": instance})
        client.log_batch(run.info.run_id, metrics=[Metric("prediction_time", 2.5 if slow else 0.2, ms, 0)],
                         synchronous=True)  # fmt: skip
        client.set_terminated(run.info.run_id, "FINISHED", end_time=ms + (2500 if slow else 200))

    jobs = [(i, start + timedelta(minutes=m, seconds=15)) for m in range(60) for i in ("model-a", "model-b")]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda job: log(*job), jobs))
    return len(jobs)


@pytest.fixture(scope="module")
def cloudwatch_run(stack: Any, airflow_db: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import boto3

    # up to now: the live stack's own Prometheus samples (its node-exporter) fall into the window even when
    # the stack started a minute ago
    def window_end() -> datetime | None:
        end = datetime.now(UTC).replace(second=0, microsecond=0)
        live = _instant(stack.config.prometheus_url, "node_memory_MemAvailable_bytes", end - timedelta(seconds=10))
        return end if live else None

    end = wait_until(window_end, timeout=90, interval=2,
                     what="a live node-exporter sample in Prometheus before a window's end")  # fmt: skip
    start = end - timedelta(hours=1)
    incident = (start + timedelta(minutes=20), start + timedelta(minutes=40))
    experiment = f"cloudwatch-scenario-{uuid.uuid4().hex[:8]}"
    _log_predictions(stack.config.mlflow_url, experiment, start, incident)
    client = boto3.client("cloudwatch", endpoint_url=stack.config.s3_url, region_name=S3_REGION,
                          aws_access_key_id=S3_ACCESS_KEY, aws_secret_access_key=S3_SECRET_KEY)  # fmt: skip
    put_metric_data(client, ENDPOINT_NAMESPACE, endpoint_cpu(
        ENDPOINT, {"variant-a": incident, "variant-b": None}, start - timedelta(minutes=5), end + timedelta(minutes=1)))
    tmp = tmp_path_factory.mktemp("cloudwatch")
    raw = own_alertnames(yaml.safe_load((REPO / "include" / "thresholds.yaml").read_text()),
                         f"ModelPredictionsDegradedCW{uuid.uuid4().hex[:8]}")  # fmt: skip
    raw["mlflow"]["experiments"] = [{"name": experiment, "layout": "run_per_prediction"}]
    raw["evaluation"]["expected_models"] = []
    raw["cloudwatch"] = {"conn_id": "aws_default", "period": "60s", "presets": [{
        "preset": "sagemaker_endpoint", "name": "endpoint", "endpoint": ENDPOINT, "metrics": ["cpu"],
        "variants": {"variant-a": "model-a", "variant-b": "model-b"}, "saturation": {"cpu": 0.9}}]}  # fmt: skip
    (config := tmp / "thresholds.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    mp = pytest.MonkeyPatch()
    for key, value in stack.config.airflow_env().items():
        mp.setenv(key, value)
    mp.setenv("MODELWATCH_CONFIG", str(config))
    mp.setenv("MODELWATCH_STORAGE_URL", (tmp / "lake").as_uri())
    try:
        run = run_window(start, end)
        from modelwatch.storage import Lake

        lake = Lake((tmp / "lake").as_uri())
        evaluation = xcom(run, "evaluate")
        yield {"run": run, "evaluation": evaluation, "document": lake.read_document(evaluation["verdict_document"]),
               "resources": lake.read_ref(evaluation["resources"]), "incident": incident}  # fmt: skip
    finally:
        mp.undo()


def test_a_verdict_from_cloudwatch_evidence(cloudwatch_run: dict[str, Any]) -> None:
    assert task_states(cloudwatch_run["run"])["evaluate"] == "success"
    (v,) = cloudwatch_run["document"]["verdicts"]
    assert (v["model"], v["verdict"]) == (MODEL, "degraded"), v["reason"]
    evidence = {e["resource"]: e for e in v["saturated_resources"]}
    assert set(evidence) == {"endpoint_cpu"}, v["reason"]
    cpu = evidence["endpoint_cpu"]
    # the 20 slow predictions on model-a happened while its variant's CPU was saturated, and only then
    assert cpu["n_slow_saturated"] == 20 and cpu["n_slow_unsaturated"] == 0 and cpu["coverage"] == 1.0, cpu
    assert v["slow_instances"] == ["model-a"]


def test_the_cloudwatch_samples_are_in_the_resources_partition_beside_prometheus(cloudwatch_run: dict[str, Any]) -> None:
    resources = cloudwatch_run["resources"]
    cw = resources[resources["query"] == "endpoint_cpu"]
    assert set(cw["instance"]) == {"model-a", "model-b"}
    assert set(cw["window_seconds"]) == {60.0} and len(cw) == 2 * 60
    hot = cw[(cw["instance"] == "model-a") & (cw["value"] >= 0.9)]
    # stored at each period's end: the 20 saturated minutes end 1 to 20 minutes after the incident began
    start, end = cloudwatch_run["incident"]
    assert hot["timestamp"].min() == start + timedelta(minutes=1) and hot["timestamp"].max() == end
    assert 'VariantName="variant-a"' in cw[cw["instance"] == "model-a"]["labels"].iloc[0]
    # the Prometheus queries were read into the same partition (the live stack's own series)
    assert set(resources["query"]) - {"endpoint_cpu"}, "no Prometheus sample beside the CloudWatch ones"
