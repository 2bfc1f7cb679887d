"""True sample times against a real Prometheus: a host that stops being scraped is not evidence.

A Prometheus of its own (2.42, Debian package) holds two hours of backfilled node-exporter history of one
host, ``gap-host``: normal from 10:00, CPU, load and memory saturated 10:40-10:50, then NO sample at all
from 10:50 to 11:30 (a restarted Prometheus, an agent or remote-write gap), normal again until 12:00.
Prometheus answers ``query_range`` through the gap's first minutes anyway: it repeats the last value of a
gauge for up to 5 minutes (lookback) and a ``rate(...[1m])`` for about a minute. These tests show that the
repeated values are there, that ``extract_resources`` marks them with the real sample time, and that no
prediction is joined to a value whose sample is older than the tolerance.

``extract_resources`` computes sample times from presence queries and raw samples (``timestamp()`` is too
slow on 2.42); the same Prometheus checks it against ``timestamp()`` itself, the definition, on history with
series that appear and disappear mid-window, several selectors and several ports of one instance, and on
live scrapes of a small exporter whose series vanish and whose target goes down (real staleness markers).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest
from polling import wait_until

from devstack.stack import HOST, find_binary
from modelwatch.config import ModelwatchConfig
from modelwatch.correlate import correlate
from modelwatch.errors import PrometheusQueryRefused
from modelwatch.evaluate import evaluate
from modelwatch.extract import extract_resources, matrix_to_frame, query_range_chunked
from modelwatch.hooks import PrometheusHook
from modelwatch.promql import sample_time_promql
from modelwatch.timegrid import last_step_before
from modelwatch.window import Window

START = datetime(2026, 3, 10, 10, 0, tzinfo=UTC)
END = START + timedelta(hours=2)
INCIDENT = (START + timedelta(minutes=40), START + timedelta(minutes=50))
GAP = (START + timedelta(minutes=50), START + timedelta(minutes=90))
LAST_BEFORE_GAP = GAP[0] - timedelta(seconds=15)
INSTANCE = "gap-host"
CONN_ID = "prometheus_gap"

CONFIG = ModelwatchConfig.model_validate({
    "prometheus": {"conn_id": CONN_ID, "step": "15s", "queries": [
        {"name": "cpu", "promql": '1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"}[1m]))',
         "saturation": 0.9, "unit": "ratio"},
        {"name": "memory", "promql": "1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes",
         "saturation": 0.9, "unit": "ratio"},
        {"name": "load", "promql": 'max by (instance) (node_load1) / count by (instance) '
                                   '(node_cpu_seconds_total{mode="idle"})', "saturation": 1.5, "unit": "per cpu"},
    ]},
    "mlflow": {"experiments": [{"name": "unused"}]},
    "correlation": {"tolerance": "60s"},
    "evaluation": {"slow_prediction_seconds": 1.0},
})  # fmt: skip
TOLERANCE = CONFIG.correlation.tolerance.total_seconds()


def _history() -> str:
    """OpenMetrics text (Unix-second timestamps, one family after the other) of the host's two hours."""
    t = np.arange(int(START.timestamp()), int(END.timestamp()), 15)
    scraped = (t < GAP[0].timestamp()) | (t >= GAP[1].timestamp())
    t = t[scraped]
    hot = (t >= INCIDENT[0].timestamp()) & (t < INCIDENT[1].timestamp())
    labels = f'instance="{INSTANCE}:9100",job="node"'
    idle_per_step = np.where(hot, 15 * 0.02, 15 * 0.75)  # seconds idle per CPU per 15 s
    # a counter keeps counting through the gap (the host ran; only scraping stopped)
    steps = np.diff(np.concatenate([[t[0] - 15], t])) / 15
    idle = np.cumsum(idle_per_step * steps)
    lines = ["# TYPE node_cpu_seconds counter"]
    for cpu in ("0", "1"):
        lines += [
            f'node_cpu_seconds_total{{cpu="{cpu}",mode="idle",{labels}}} {v:.3f} {ts}'
            for ts, v in zip(t, idle, strict=True)
        ]
    total = 8 * 2**30
    lines.append("# TYPE node_memory_MemTotal_bytes gauge")
    lines += [f"node_memory_MemTotal_bytes{{{labels}}} {total} {ts}" for ts in t]
    lines.append("# TYPE node_memory_MemAvailable_bytes gauge")
    lines += [f"node_memory_MemAvailable_bytes{{{labels}}} {int(total * (0.04 if h else 0.55))} {ts}"
              for ts, h in zip(t, hot, strict=True)]  # fmt: skip
    lines.append("# TYPE node_load1 gauge")
    lines += [f"node_load1{{{labels}}} {3.6 if h else 0.4} {ts}" for ts, h in zip(t, hot, strict=True)]
    return "\n".join(lines + _edge_history()) + "\n# EOF\n"


def _edge_history() -> list[str]:
    """Series for the comparison with ``timestamp()``: ``edge-a`` scraped like gap-host (same gap), a second
    port of it 4 s later for the first 20 minutes only, ``edge-b`` appearing at 10:30 and vanishing at 11:40,
    and ``mw_edge_slow`` scraped every 60 s, 7 s after the others."""
    t = np.arange(int(START.timestamp()), int(END.timestamp()), 15)
    scraped = t[(t < GAP[0].timestamp()) | (t >= GAP[1].timestamp())]
    a, a2, b = 'instance="edge-a:9100"', 'instance="edge-a:9200"', 'instance="edge-b:9100"'
    late = t[(t >= START.timestamp() + 1800) & (t < START.timestamp() + 6000)]
    lines = ["# TYPE mw_edge_gauge gauge"]
    lines += [f"mw_edge_gauge{{{a}}} 1 {ts}" for ts in scraped]
    lines += [f"mw_edge_gauge{{{a2}}} 2 {ts + 4}" for ts in t[t < START.timestamp() + 1200]]
    lines += [f"mw_edge_gauge{{{b}}} 3 {ts}" for ts in late]
    lines.append("# TYPE mw_edge_slow gauge")
    lines += [f"mw_edge_slow{{{a}}} 4 {ts + 7}" for ts in scraped[::4]]
    return lines


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class LiveExporter:
    """A tiny exporter whose answers change scrape by scrape (Prometheus writes staleness markers when a
    series vanishes from a scrape and when a scrape fails):

    - scrapes 1-4: ``mw_live_gauge{kind="x"}``, ``mw_live_gauge{kind="y"}``, ``mw_live_other``, ``mw_live_total``
    - 5-8: without ``kind="y"``; 9-12: without any ``mw_live_gauge``;
    - 13-16: HTTP 503 (the target is down); from 17: everything again.
    """

    url: str
    served: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def body(self, n: int) -> str | None:
        if 13 <= n <= 16:
            return None
        lines = ["# TYPE mw_live_gauge gauge"]
        if n <= 8 or n >= 17:
            lines.append('mw_live_gauge{kind="x"} 1')
        if n <= 4 or n >= 17:
            lines.append('mw_live_gauge{kind="y"} 2')
        lines += ["# TYPE mw_live_other gauge", "mw_live_other 3", "# TYPE mw_live_total counter",
                  f"mw_live_total {5 * n}"]  # fmt: skip
        return "\n".join(lines) + "\n"


def _start_exporter() -> tuple[LiveExporter, ThreadingHTTPServer]:
    exporter = LiveExporter(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with exporter.lock:
                exporter.served += 1
                body = exporter.body(exporter.served)
            if body is None:
                self.send_response(503)
                self.end_headers()
                return
            data = body.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((HOST, 0), Handler)
    exporter.url = f"{HOST}:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return exporter, server


@pytest.fixture(scope="module")
def live_exporter() -> Iterator[LiveExporter]:
    exporter, server = _start_exporter()
    try:
        yield exporter
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def gap_prometheus(tmp_path_factory: pytest.TempPathFactory, live_exporter: LiveExporter) -> Iterator[str]:
    """A Prometheus holding the gap history and scraping the live exporter every half second, on a free loopback
    port; stopped by PID at the end."""
    work = tmp_path_factory.mktemp("gap-prometheus")
    om, data = work / "history.om", work / "data"
    om.write_text(_history())
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not on PATH: it comes with the Debian package prometheus"
    subprocess.run([promtool, "tsdb", "create-blocks-from",
                    "openmetrics", "--quiet", str(om), str(data)], check=True, capture_output=True, timeout=120)  # fmt: skip
    (work / "prometheus.yml").write_text(
        "global: {scrape_interval: 15s}\nscrape_configs:\n"
        "  - {job_name: live, scrape_interval: 500ms, scrape_timeout: 500ms, static_configs: "
        f"[{{targets: ['{live_exporter.url}']}}]}}\n"
    )
    port = _free_port()
    log = (work / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [find_binary("prometheus"), f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={data}",
         "--storage.tsdb.retention.time=3650d", f"--web.listen-address={HOST}:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://{HOST}:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"Prometheus exited: {(work / 'prometheus.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        try:
            wait_until(ready, timeout=30, interval=0.2, what=f"the gap Prometheus to answer {url}/-/ready")
        except AssertionError as exc:
            raise RuntimeError(f"{exc}; its log: {(work / 'prometheus.log').read_text()[-2000:]}") from None
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


@pytest.fixture(scope="module")
def gap_conn(gap_prometheus: str) -> Iterator[str]:
    """The Airflow connection id of the gap Prometheus (an ``AIRFLOW_CONN_`` variable while the module runs)."""
    host, port = gap_prometheus.removeprefix("http://").split(":")
    env = f"AIRFLOW_CONN_{CONN_ID.upper()}"
    old = os.environ.get(env)
    os.environ[env] = f'{{"conn_type": "prometheus", "host": "{host}", "port": {port}, "schema": "http"}}'
    try:
        yield CONN_ID
    finally:
        if old is None:
            os.environ.pop(env, None)
        else:
            os.environ[env] = old


@pytest.fixture(scope="module")
def resources(gap_conn: str) -> pd.DataFrame:
    hook = PrometheusHook(prometheus_conn_id=gap_conn)
    p = CONFIG.prometheus
    return extract_resources(hook, p.queries, START, END, p.step, p.max_points_per_request, p.instance_label)


def _predictions(slow_between: list[tuple[datetime, datetime]]) -> pd.DataFrame:
    """One prediction every 10 s on gap-host over the two hours, slow inside the given spans."""
    ts = pd.date_range(START, END, freq="10s", inclusive="left")
    slow = np.zeros(len(ts), dtype=bool)
    for a, b in slow_between:
        slow |= (ts >= a) & (ts < b)
    return pd.DataFrame({
        "timestamp": ts.as_unit("ms"), "model": "m", "model_version": "1", "instance": INSTANCE,
        "prediction_time": np.where(slow, 2.5, 0.2), "accuracy": 1.0, "loss": 0.1,
        "run_id": [f"r{i}" for i in range(len(ts))], "experiment": "e",
    })  # fmt: skip


def test_prometheus_repeats_values_into_the_gap(resources: pd.DataFrame) -> None:
    """The hazard is real: evaluation steps inside the gap carry values, minutes after the last scrape."""
    for query, lasts in (("memory", 300), ("load", 300), ("cpu", 60)):
        rows = resources[(resources["query"] == query) & (resources["timestamp"] >= pd.Timestamp(GAP[0]))
                         & (resources["timestamp"] < pd.Timestamp(GAP[1]))]  # fmt: skip
        assert len(rows), f"{query}: Prometheus gave no value inside the gap"
        reach = (rows["timestamp"].max() - pd.Timestamp(LAST_BEFORE_GAP)).total_seconds()
        assert lasts - 60 <= reach <= lasts, f"{query}: values went on {reach} s after the last scrape"
        # ... and every one of them says when its real sample was taken
        assert (rows["sample_time"] == pd.Timestamp(LAST_BEFORE_GAP)).all(), query
        if query == "memory":
            assert (rows["value"] > 0.9).all()  # the saturated value, repeated


def test_sample_times_match_the_scrapes_outside_the_gap(resources: pd.DataFrame) -> None:
    outside = resources[(resources["timestamp"] < pd.Timestamp(GAP[0])) & (resources["query"] != "cpu")]
    assert (outside["sample_time"] == outside["timestamp"]).all()  # backfilled on the same 15 s grid
    assert set(resources.loc[resources["query"] == "cpu", "window_seconds"]) == {60.0}
    assert set(resources.loc[resources["query"] == "memory", "window_seconds"]) == {0.0}


def test_no_prediction_is_joined_to_a_value_older_than_the_tolerance(resources: pd.DataFrame) -> None:
    joined, _ = correlate(_predictions([]), resources, CONFIG)
    for query in ("cpu", "memory", "load"):
        assert joined[f"age_{query}"].max() <= TOLERANCE, query
    t = joined["timestamp"]
    # Deep in the gap: more than the tolerance after the last scrape, and before the first value after the
    # gap comes within reach (a rate over [1m] stands for the middle of its range, 30 s before it).
    deep = (t > pd.Timestamp(LAST_BEFORE_GAP) + pd.Timedelta(seconds=TOLERANCE)) & (
        t < pd.Timestamp(GAP[1]) - pd.Timedelta(seconds=TOLERANCE + 30)
    )
    assert deep.sum() > 200
    assert (joined.loc[deep, "missing_resources"] == "cpu,memory,load").all()
    # before the gap every prediction has all three
    assert (joined.loc[t < pd.Timestamp(GAP[0]) - pd.Timedelta(minutes=2), "missing_resources"] == "").all()


def test_slow_predictions_in_the_gap_do_not_page(resources: pd.DataFrame) -> None:
    # Slow from a minute into the gap to 11:25: an evaluation-step join would put the first four minutes of
    # them on the repeated saturated memory and load values and call the model degraded.
    pred = _predictions([(GAP[0] + timedelta(minutes=1), GAP[0] + timedelta(minutes=35))])
    joined, corr = correlate(pred, resources, CONFIG)
    (verdict,) = evaluate(joined, corr, resources, CONFIG, Window(START, END))
    assert verdict.verdict == "slow_unexplained", verdict.reason
    assert verdict.n_slow_unsampled == verdict.n_slow
    assert "had no real resource sample" in verdict.reason


def test_an_incident_before_a_gap_is_degraded_with_its_coverage(resources: pd.DataFrame) -> None:
    # Slow during the saturation and on into the gap's first 10 minutes: degraded on cpu (and memory,
    # load), with the predictions in the gap counted as unsampled.
    pred = _predictions([(INCIDENT[0] + timedelta(minutes=1), GAP[0] + timedelta(minutes=10))])
    joined, corr = correlate(pred, resources, CONFIG)
    (verdict,) = evaluate(joined, corr, resources, CONFIG, Window(START, END))
    assert verdict.verdict == "degraded", verdict.reason
    assert "cpu" in [e.resource for e in verdict.saturated_resources]
    cpu = next(e for e in verdict.saturated_resources if e.resource == "cpu")
    assert 0.5 <= cpu.coverage < 1
    assert cpu.n_slow_unsampled >= 50  # 10 minutes of the gap at one prediction per 10 s, less the tolerance
    assert pd.Timestamp(verdict.incident_end) <= pd.Timestamp(GAP[0]) + pd.Timedelta(seconds=TOLERANCE)


# -- the same answer as timestamp() ----------------------------------------------------------------------


@dataclass
class Q:
    name: str
    promql: str


def _compare_with_timestamp(hook: PrometheusHook, promql: str, start: datetime, end: datetime, step: float,
                            **kwargs: object) -> pd.DataFrame:  # fmt: skip
    """``extract_resources``' sample times against ``timestamp()`` (the companion of
    :func:`sample_time_promql`, ports stripped, newest kept) on every row; returns the compared rows."""
    got = extract_resources(hook, [Q("q", promql)], start, end, step, **kwargs)  # type: ignore[arg-type]
    companion = sample_time_promql(promql)
    assert companion is not None
    ref = matrix_to_frame(query_range_chunked(hook, companion, start, last_step_before(start, end, step), step,
                                                   query_name="reference"), "")  # fmt: skip
    ref = ref.assign(
        ref=pd.to_datetime(np.round(ref["value"].to_numpy() * 1000), unit="ms", utc=True).as_unit("ms")
    )
    ref = ref.groupby(["instance", "timestamp"], as_index=False)["ref"].max()
    both = got.merge(ref, on=["instance", "timestamp"], how="left", validate="many_to_one")
    same = (both["sample_time"] == both["ref"]) | (both["sample_time"].isna() & both["ref"].isna())
    assert len(both) and same.all(), (
        promql,
        step,
        both.loc[~same, ["instance", "timestamp", "sample_time", "ref"]].head(10),
    )
    return both


EDGE_QUERIES = [
    "mw_edge_gauge",
    "max by (instance) (mw_edge_gauge) / max by (instance) (mw_edge_slow)",
    "rate(mw_edge_gauge[1m])",
    "(max by (instance) (mw_edge_slow) or max by (instance) (mw_edge_gauge) * 0)",
    *(q.promql for q in CONFIG.prometheus.queries),
]


@pytest.mark.parametrize("promql", EDGE_QUERIES)
def test_sample_times_equal_timestamp_on_history(gap_conn: str, promql: str) -> None:
    hook = PrometheusHook(prometheus_conn_id=gap_conn)
    both = _compare_with_timestamp(hook, promql, START, END, 15)
    # off the scrape grid, and with raw reads of a few hundred samples each (many spans)
    _compare_with_timestamp(hook, promql, START + timedelta(seconds=2), END, 7, max_raw_samples=300)
    if promql == "mw_edge_gauge":
        # the cases are there: a second port, an instance appearing and vanishing, the gap
        assert set(both["instance"]) == {"edge-a", "edge-b"}
        b = both[both["instance"] == "edge-b"]
        assert b["timestamp"].min() == pd.Timestamp(START + timedelta(minutes=30))
        # repeated for the whole lookback after its last sample, the step 300 s after it included (2.42)
        assert (b["timestamp"] - b["sample_time"]).max() == pd.Timedelta(seconds=300)


def test_sample_times_equal_timestamp_with_staleness_markers(
    gap_conn: str, live_exporter: LiveExporter
) -> None:
    wait_until(lambda: live_exporter.served, until=lambda served: served >= 21, timeout=60, interval=0.5,
               what="Prometheus to scrape the live target 21 times (4 more after it was down)")  # fmt: skip
    hook = PrometheusHook(prometheus_conn_id=gap_conn)
    end = datetime.now(UTC)
    start = end - timedelta(seconds=60)
    gauge = query_range_chunked(hook, "mw_live_gauge", start, end, 0.5, query_name="gauge")
    y = next(s for s in gauge if s["metric"].get("kind") == "y")
    times = np.diff([float(v[0]) for v in y["values"]])
    assert times.max() > 4, "kind=y should have vanished at once (a staleness marker), not after 5 minutes"
    for promql in ("mw_live_gauge", "max by (instance) (mw_live_gauge) + max by (instance) (mw_live_other)",
                   "(max by (instance) (mw_live_gauge) or max by (instance) (mw_live_other) * 0)",
                   "rate(mw_live_total[3s])", "mw_live_other"):  # fmt: skip
        for step in (1.0, 0.25):
            both = _compare_with_timestamp(hook, promql, start, end, step)
            if promql.startswith("rate") and step == 0.25:
                # a rate goes on for a moment after the target went down, but its series is stale: no sample time
                assert both["sample_time"].isna().any()


def test_raw_sample_errors_name_the_query_and_the_server(gap_prometheus: str, gap_conn: str) -> None:
    hook = PrometheusHook(prometheus_conn_id=gap_conn)
    with pytest.raises(PrometheusQueryRefused) as info:
        hook.raw_samples("rate(", START, END, query_name="cpu (sample times)")
    text = str(info.value)
    assert "'cpu (sample times)'" in text and gap_prometheus in text and "rate([" in text
