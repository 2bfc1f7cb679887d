"""A stand-in for the serving stacks of the seeds, for the real Prometheus to scrape: Seldon Core v1, Seldon
Core 2 (with the MLServer it runs) and KServe behind the Knative queue-proxy, three pods in one process.

Each pod's families have the exact names, labels, types and units of the projects' own code (listed in
:mod:`modelwatch.serving`), written by ``prometheus_client``'s own Histogram, Counter and Gauge, so the
exposition Prometheus reads is what the real servers give it. What is synthetic is the traffic: each pod
serves :data:`RPS` requests a second, answered in about 60 ms, and during the incident the two incident pods
slow down the way a starved server does:

- ``mlserver-0`` (Seldon Core 2 server ``mlserver``, replica ``0``; model ``iris``, MLServer's ``iris_1``): the
  loaded models fill :data:`INCIDENT_MEMORY` of the replica's memory capacity and MLServer's worker queue
  grows to about ten requests;
- the KServe predictor pod of ``sklearn-iris`` (:data:`KSERVE_POD`): the queue-proxy queues about twenty
  requests;
- the Seldon Core v1 pod of SeldonDeployment ``iris`` (:data:`SELDON_V1_POD`, model ``classifier``) stays quiet.

Layout: ``GET /pods/<pod>/metrics`` is one pod's exposition (each pod a scrape target of its own, as
Kubernetes service discovery makes them: the target's labels give ``pod``); ``GET /timeline`` is the phases
as JSON. :func:`targets` is the file_sd targets file that points the stack's Prometheus at it
(``serving-stand-in`` job, :func:`devstack.stack.prometheus_config`).

``python -m devstack.serving_exporter --port P --incident-start T1 --incident-end T2 --until T3`` (epoch
seconds) serves on 127.0.0.1 only and exits by itself at ``--until``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parents[1]
#: requests per second each pod serves
RPS = 20
#: the seconds a request takes when quiet, and during the incident on an incident pod
QUIET_SECONDS, INCIDENT_SECONDS = 0.06, 1.8
#: Seldon Core 2's replica memory capacity, and the share of it the loaded models take (quiet, incident)
CAPACITY_BYTES = 8 * 2**30
QUIET_MEMORY, INCIDENT_MEMORY = 0.45, 0.96

SELDON_V1_POD = "iris-default-0-classifier-7d9f8c6b5-x2k4p"
SELDON_V2_SERVER, SELDON_V2_REPLICA = "mlserver", "0"
#: the Seldon Core 2 server's StatefulSet pod: ``<server>-<replica>``
SELDON_V2_POD = f"{SELDON_V2_SERVER}-{SELDON_V2_REPLICA}"
KSERVE_POD = "sklearn-iris-predictor-00001-deployment-6f8d9c7b4-qzv5m"
KNATIVE_SERVICE = "sklearn-iris-predictor"
#: the predictions' model of each pod, as MLflow tags it, and whether the pod has the incident
PODS: dict[str, tuple[str, bool]] = {SELDON_V1_POD: ("iris-v1", False), SELDON_V2_POD: ("iris", True),
                                     KSERVE_POD: ("sklearn-iris", True)}  # fmt: skip
#: Seldon Core 2's default histogram buckets (scheduler/pkg/metrics/agent.go)
SELDON_V2_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
#: the Knative queue-proxy's latency buckets, in milliseconds
KNATIVE_BUCKETS_MS = (5, 10, 20, 40, 60, 80, 100, 150, 200, 250, 300, 350, 400, 450, 500, 600, 700, 800, 900,
                      1000, 2000, 5000, 10000)  # fmt: skip


@dataclass(frozen=True)
class Timeline:
    """The phases, in epoch seconds: quiet until ``incident_start``, the incident until ``incident_end``,
    quiet again until ``until``, when the server exits."""

    incident_start: float
    incident_end: float
    until: float

    def incident(self, t: float) -> bool:
        return self.incident_start <= t < self.incident_end


class _Pod:
    """One pod's registry and what one served request does to it."""

    def __init__(self, name: str) -> None:
        from prometheus_client import CollectorRegistry

        self.name = name
        self.registry = CollectorRegistry(auto_describe=True)
        self.serve: Callable[[float, bool], None] = lambda seconds, incident: None
        self.tick: Callable[[bool], None] = lambda incident: None


def _seldon_v1(pod: _Pod) -> None:
    from prometheus_client import Histogram

    base = {"deployment_name": "iris", "predictor_name": "default", "predictor_version": "", "service": "predictions",
            "method": "post", "code": "200"}  # fmt: skip
    server = Histogram("seldon_api_executor_server_requests_seconds", "A histogram of latencies for executor server",
                       list(base), registry=pod.registry)  # fmt: skip
    client_labels = {**base, "model_name": "classifier", "model_image": "seldonio/sklearnserver", "model_version": "1.17"}
    client = Histogram("seldon_api_executor_client_requests_seconds", "A histogram of latencies for client calls "
                       "from the executor", list(client_labels), registry=pod.registry)  # fmt: skip

    def serve(seconds: float, _incident: bool) -> None:
        server.labels(**base).observe(seconds)
        client.labels(**client_labels).observe(seconds * 0.9)

    pod.serve = serve


def _seldon_v2(pod: _Pod) -> None:
    from prometheus_client import Counter, Gauge, Histogram, Summary

    replica = {"server": SELDON_V2_SERVER, "server_replica": SELDON_V2_REPLICA}
    model = {**replica, "model": "iris", "model_internal": "iris_1", "method_type": "rest", "code": "200"}
    # prometheus_client writes a Counter named x as x_total: the agent's names already end in _total
    infer = Counter("seldon_model_infer", "A count of server inference calls", list(model), registry=pod.registry)
    latency = Counter("seldon_model_infer_seconds", "A sum of server inference call latencies", list(model),
                      registry=pod.registry)  # fmt: skip
    histogram = Histogram("seldon_model_infer_api_seconds", "A histogram of latencies for inference server",
                          [*replica, "method", "code"], buckets=SELDON_V2_BUCKETS, registry=pod.registry)  # fmt: skip
    loaded = Gauge("seldon_loaded_model_memory_bytes_gauge", "A gauge of models loaded memory in the system",
                   [*replica, "model_internal"], registry=pod.registry)  # fmt: skip
    capacity = Gauge("seldon_server_replica_memory_capacity_bytes_gauge", "A gauge of server replica memory capacity",
                     list(replica), registry=pod.registry)  # fmt: skip
    # MLServer, which the Seldon Core 2 server runs, in the same pod
    success = Counter("model_infer_request_success", "Model infer request success count", ["model", "version"],
                      registry=pod.registry)  # fmt: skip
    duration = Summary("model_infer_request_duration", "Model infer request duration", ["model", "version"],
                       registry=pod.registry)  # fmt: skip
    queue = Histogram("parallel_request_queue", "counter of request queue size for workers", ["workerpid"],
                      buckets=(1, 2, 5, 10, 20, 50), registry=pod.registry)  # fmt: skip
    batch = Histogram("batch_request_queue", "counter of request queue batch size", ["model", "version"],
                      buckets=(1, 2, 5, 10, 20, 50), registry=pod.registry)  # fmt: skip
    capacity.labels(**replica).set(CAPACITY_BYTES)

    def serve(seconds: float, incident: bool) -> None:
        infer.labels(**model).inc()
        latency.labels(**model).inc(seconds)
        histogram.labels(**replica, method="rest", code="200").observe(seconds)
        success.labels(model="iris_1", version="1").inc()
        duration.labels(model="iris_1", version="1").observe(seconds * 0.9)
        queue.labels(workerpid="4242").observe(random.randint(8, 12) if incident else random.randint(0, 1))
        batch.labels(model="iris_1", version="1").observe(1)

    def tick(incident: bool) -> None:
        share = INCIDENT_MEMORY if incident else QUIET_MEMORY
        loaded.labels(**replica, model_internal="iris_1").set(round(CAPACITY_BYTES * share))

    pod.serve, pod.tick = serve, tick


def _kserve(pod: _Pod) -> None:
    from prometheus_client import Gauge, Histogram

    steps = {step: Histogram(f"request_{step}_seconds", f"{step} request latency", ["model_name"], registry=pod.registry)
             for step in ("preprocess", "predict", "postprocess")}  # fmt: skip
    revision = {"namespace_name": "default", "service_name": KNATIVE_SERVICE, "configuration_name": KNATIVE_SERVICE,
                "revision_name": f"{KNATIVE_SERVICE}-00001", "pod_name": pod.name, "container_name": "queue-proxy"}  # fmt: skip
    # Knative's exporter writes this counter without _total, which prometheus_client's Counter always appends:
    # a Gauge that only goes up keeps the exact name (its TYPE line says gauge; rate() reads it the same)
    count = Gauge("revision_request_count", "The number of requests that are routed to queue-proxy",
                  [*revision, "response_code", "response_code_class"], registry=pod.registry)  # fmt: skip
    latencies = Histogram("revision_request_latencies", "The response time in millisecond",
                          [*revision, "response_code", "response_code_class"], buckets=KNATIVE_BUCKETS_MS,
                          registry=pod.registry)  # fmt: skip
    depth = Gauge("revision_queue_depth", "The current number of items in the serving and waiting queue",
                  list(revision), registry=pod.registry)  # fmt: skip

    def serve(seconds: float, _incident: bool) -> None:
        steps["preprocess"].labels(model_name="sklearn-iris").observe(seconds * 0.05)
        steps["predict"].labels(model_name="sklearn-iris").observe(seconds * 0.9)
        steps["postprocess"].labels(model_name="sklearn-iris").observe(seconds * 0.05)
        code = {"response_code": "200", "response_code_class": "2xx"}
        count.labels(**revision, **code).inc()
        latencies.labels(**revision, **code).observe(seconds * 1000 + 2)  # the proxy adds a little

    def tick(incident: bool) -> None:
        depth.labels(**revision).set(random.randint(18, 24) if incident else random.randint(0, 1))

    pod.serve, pod.tick = serve, tick


def build_pods() -> dict[str, _Pod]:
    """The three pods with their families registered."""
    pods = {name: _Pod(name) for name in PODS}
    _seldon_v1(pods[SELDON_V1_POD])
    _seldon_v2(pods[SELDON_V2_POD])
    _kserve(pods[KSERVE_POD])
    return pods


def drive(pods: dict[str, _Pod], timeline: Timeline, stop: threading.Event, clock: Callable[[], float] = time.time,
          tick_s: float = 0.25) -> None:  # fmt: skip
    """Serve :data:`RPS` requests a second on every pod until ``timeline.until`` (or ``stop``)."""
    per_tick = RPS * tick_s
    owed = 0.0
    while not stop.is_set() and (now := clock()) < timeline.until:
        owed += per_tick
        n, owed = int(owed), owed - int(owed)
        for pod in pods.values():
            incident = PODS[pod.name][1] and timeline.incident(now)
            pod.tick(incident)
            for _ in range(n):
                base = INCIDENT_SECONDS if incident else QUIET_SECONDS
                pod.serve(base * random.uniform(0.8, 1.25), incident)
        stop.wait(tick_s)


def app(pods: dict[str, _Pod], timeline: Timeline) -> Callable[..., Iterable[bytes]]:
    """The WSGI app: ``/pods/<pod>/metrics`` and ``/timeline``."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        parts = path.strip("/").split("/")
        if len(parts) == 3 and parts[0] == "pods" and parts[2] == "metrics" and parts[1] in pods:
            body = generate_latest(pods[parts[1]].registry)
            start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
            return [body]
        if path == "/timeline":
            start_response("200 OK", [("Content-Type", "application/json")])
            return [json.dumps(timeline.__dict__ | {"pods": {p: m for p, (m, _) in PODS.items()}}).encode()]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]

    return serve


def targets(port: int) -> list[dict[str, Any]]:
    """The file_sd targets of the three pods (each its own target and ``pod`` label, as Kubernetes discovery
    relabels it)."""
    return [{"targets": [f"{HOST}:{port}"], "labels": {"pod": pod, "__metrics_path__": f"/pods/{pod}/metrics"}}
            for pod in PODS]  # fmt: skip


def write_targets(targets_dir: Path, port: int) -> Path:
    """Point the stack's ``serving-stand-in`` job at a stand-in on ``port``: its file_sd file, written whole
    (a temporary file renamed), so Prometheus never reads half of it."""
    targets_dir.mkdir(parents=True, exist_ok=True)
    path = targets_dir / f"stand-in-{port}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(targets(port)))
    tmp.replace(path)
    return path


@contextmanager
def running(targets_dir: Path, timeline: Timeline, port: int | None = None) -> Generator[dict[str, Any]]:
    """A stand-in in a child process (a session of its own, 127.0.0.1 only) scraped through its targets
    file; at the end the file is removed and the process stopped by its PID (it also exits by itself at
    ``timeline.until``). Yields ``{"port", "pid", "url", "targets"}``."""
    from devstack.airflow_services import free_port
    from devstack.processes import stop_session_leader

    port = port or free_port()
    argv = [sys.executable, "-m", "devstack.serving_exporter", "--port", str(port),
            "--incident-start", repr(timeline.incident_start), "--incident-end", repr(timeline.incident_end),
            "--until", repr(timeline.until)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)  # fmt: skip
    path = None
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("{"):
            raise RuntimeError(f"the serving stand-in did not start on {HOST}:{port}: {line}{proc.communicate(timeout=10)[0]}")
        path = write_targets(targets_dir, port)
        yield {"port": port, "pid": proc.pid, "url": f"http://{HOST}:{port}", "targets": path}
    finally:
        if path is not None:
            path.unlink(missing_ok=True)
        stop_session_leader(proc, grace=10)
        if proc.stdout:
            proc.stdout.close()


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve(port: int, timeline: Timeline) -> None:
    """Serve on 127.0.0.1:``port`` until ``timeline.until``."""
    pods = build_pods()
    stop = threading.Event()
    server: WSGIServer = make_server(HOST, port, app(pods, timeline), handler_class=_Quiet)
    worker = threading.Thread(target=drive, args=(pods, timeline, stop), daemon=True)
    worker.start()
    server.timeout = 0.5
    print(json.dumps({"serving": f"http://{HOST}:{port}", **timeline.__dict__}), flush=True)
    try:
        while time.time() < timeline.until:
            server.handle_request()
    finally:
        stop.set()
        server.server_close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.serving_exporter", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--incident-start", type=float, required=True, help="epoch seconds")
    parser.add_argument("--incident-end", type=float, required=True, help="epoch seconds")
    parser.add_argument("--until", type=float, required=True, help="epoch seconds: the server exits then")
    args = parser.parse_args(argv)
    if not args.incident_start <= args.incident_end <= args.until:
        parser.error("need --incident-start <= --incident-end <= --until")
    if args.until - time.time() > 3600:
        parser.error("--until is more than an hour away: a stand-in stops by itself within the hour")
    serve(args.port, Timeline(args.incident_start, args.incident_end, args.until))
    return 0


if __name__ == "__main__":
    sys.exit(main())
