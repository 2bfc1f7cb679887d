"""Bad configuration and awkward input.

- ``thresholds.yaml`` mistakes are DAG import errors that name the file, the key and the problem: the DAG
  folder is parsed by ``DagBag`` in a subprocess (as the DAG processor does) with ``MODELWATCH_CONFIG``
  pointing at each broken file, and ``import_errors`` is checked.
- Model names and label values with quotes, backslashes, spaces, unicode and PromQL/HTML special
  characters survive every place they go: Alertmanager filter matchers and labels (real Alertmanager and
  webhook receiver), Prometheus label values joined to MLflow tags (real Prometheus and MLflow), MLflow
  experiment names, lake paths, and the JSON/Parquet reports.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from config_helpers import delete_key, set_key
from polling import wait_until

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "include" / "thresholds.yaml"
FAST = {"backoff_base_seconds": 0.05, "backoff_max_seconds": 0.2}


# -- thresholds.yaml: a DAG import error naming file, key and problem --------------------------------------


def _raw() -> dict[str, Any]:
    return yaml.safe_load(CONFIG.read_text())


def _edit(mutate: Callable[[dict[str, Any]], None]) -> str:
    raw = _raw()
    mutate(raw)
    return yaml.safe_dump(raw, sort_keys=False)


def _rename(path: tuple[Any, ...], old: str, new: str) -> Callable[[dict[str, Any]], None]:
    def mutate(raw: dict[str, Any]) -> None:
        node = raw
        for k in path:
            node = node[k]
        node[new] = node.pop(old)

    return mutate


# id -> (file text, words the import error must contain besides the file name)
BROKEN: dict[str, tuple[str, list[str]]] = {
    "invalid yaml": (CONFIG.read_text().replace("  step: 15s", "  step: [15s"),
                     ["invalid YAML at line"]),
    "key given twice": (CONFIG.read_text() + "\nevaluation:\n  slow_prediction_seconds: 9\n",
                        ["invalid YAML", "key 'evaluation' is given twice"]),
    "unknown key": (_edit(_rename(("evaluation",), "min_slow_count", "min_slow_cuont")),
                    ["evaluation.min_slow_cuont", "unknown key"]),
    "wrong type": (_edit(set_key("evaluation", "min_slow_count", value="three")),
                   ["evaluation.min_slow_count", "integer", "'three'"]),
    "negative threshold": (_edit(set_key("prometheus", "queries", 0, "saturation", value=-0.9)),
                           ["prometheus.queries.0.saturation", "greater than or equal to 0", "-0.9"]),
    "missing threshold": (_edit(delete_key("evaluation", "slow_prediction_seconds")),
                          ["evaluation.slow_prediction_seconds", "required key is missing"]),
    "query name twice": (_edit(set_key("prometheus", "queries", 1, "name", value="cpu")),
                         ["prometheus.queries", "query name 'cpu' is used twice"]),
    "override of unknown field": (_edit(set_key("evaluation", "models", "recommender", "slow_seconds", value=2)),
                                  ["evaluation.models.recommender.slow_seconds", "unknown key"]),
    "threshold as text": (_edit(set_key("prometheus", "queries", 1, "saturation", value="90%")),
                          ["prometheus.queries.1.saturation", "'90%'"]),
    "empty file": ("", ["expected a mapping at the top level"]),
}  # fmt: skip

PARSE = textwrap.dedent(
    """
    import json, os, sys
    from airflow.dag_processing.dagbag import DagBag
    out = {}
    for name, path in json.loads(sys.argv[1]).items():
        os.environ["MODELWATCH_CONFIG"] = path
        bag = DagBag(dag_folder=sys.argv[2])
        out[name] = {"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": sorted(bag.dag_ids)}
    print("RESULT " + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def parsed(airflow_db: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every broken file (plus a missing one and the good one) parsed by DagBag in one subprocess."""
    folder = tmp_path_factory.mktemp("configs")
    files = {}
    for i, (name, (text, _)) in enumerate(BROKEN.items()):
        path = folder / f"thresholds-{i}.yaml"
        path.write_text(text)
        files[name] = str(path)
    files["missing file"] = str(folder / "no-such-thresholds.yaml")
    files["good"] = str(CONFIG)
    proc = subprocess.run(
        [sys.executable, "-c", PARSE, json.dumps(files), str(REPO / "dags")],
        capture_output=True, text=True, timeout=240, cwd=REPO,
    )  # fmt: skip
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = json.loads(line.removeprefix("RESULT "))
    return {name: {**result[name], "file": files[name]} for name in files}


def test_the_good_file_parses_both_dags(parsed: dict[str, Any]) -> None:
    assert parsed["good"]["errors"] == {}
    assert parsed["good"]["dags"] == ["model_performance_monitoring", "model_performance_monitoring_hourly",
                                      "modelwatch_threshold_replay"]


@pytest.mark.parametrize("case", list(BROKEN))
def test_bad_thresholds_is_an_import_error_naming_file_key_and_problem(parsed: dict[str, Any], case: str) -> None:
    got = parsed[case]
    assert got["dags"] == []  # nothing half-configured gets scheduled
    # every DAG file reads the configuration at parse time, and each says what is wrong with it
    assert sorted(got["errors"]) == sorted(str(path) for path in (REPO / "dags").glob("*.py"))
    for message in got["errors"].values():
        assert got["file"] in message, message
        for word in BROKEN[case][1]:
            assert word in message, f"{word!r} not in {message!r}"


def test_missing_config_file_is_an_import_error_naming_it(parsed: dict[str, Any]) -> None:
    message = next(iter(parsed["missing file"]["errors"].values()))
    assert parsed["missing file"]["file"] in message and "No such file or directory" in message


# -- names and label values with special characters -------------------------------------------------------

AWKWARD = [
    'fraud "detector"',
    "back\\slash\\",
    "spaces, and = commas }",
    "unicode ✓ модель 模型",
    'promql {job=~".*"} or vector(1)',
    "<script>alert('x')</script> & <b>",
]


def _verdict(model: str) -> Any:
    from modelwatch.verdict import ModelVerdict, ResourceEvidence

    evidence = ResourceEvidence(
        resource="cpu", threshold=0.9, unit="ratio", outcome="explains", n_slow_saturated=5, n_normal_saturated=0,
        n_slow_unsaturated=0, n_normal_unsaturated=5, n_slow_unsampled=0, n_normal_unsampled=0, coverage=1.0,
        slow_share_saturated=1.0, slow_share_unsaturated=0.0, relative_risk=11.0, p_value=0.004, p_adjusted=0.008,
        slow_saturated_share=1.0, normal_saturated_share=0.0, lift=None, spearman=0.8, slow_value_median=0.97,
        slow_value_max=0.99,
    )  # fmt: skip
    now = datetime.now(UTC)
    return ModelVerdict(
        model=model, verdict="degraded", reason=f"{model}: slow with cpu", window_start=(now - timedelta(hours=1)).isoformat(),
        window_end=now.isoformat(), model_versions=['v"1'], n_predictions=10, n_slow=5, slow_share=0.5,
        slow_threshold_seconds=1.0, slow_instances=["model-a"], saturated_resources=[evidence],
        incident_start=(now - timedelta(minutes=30)).isoformat(), incident_end=(now - timedelta(minutes=10)).isoformat(),
    )  # fmt: skip


def test_awkward_model_names_in_alert_labels_and_alertmanager_filters(
    seeded_stack: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelwatch.alerting import build_alerts, stamp_for_posting
    from modelwatch.config import load_config
    from modelwatch.hooks import AlertmanagerHook

    for name, value in seeded_stack.airflow_env().items():
        monkeypatch.setenv(name, value)
    tag = uuid.uuid4().hex[:8]
    models = [f"{m} {tag}" for m in AWKWARD]
    cfg = load_config().alerting.model_copy(update={"alertname": f"ModelwatchEscaping{tag}"})
    alerts = build_alerts([_verdict(m) for m in models], cfg, run_url="http://airflow/x", partition_url="file:///lake")
    hook = AlertmanagerHook(**FAST)
    hook.post_alerts(stamp_for_posting(alerts, datetime.now(UTC), timedelta(hours=1)))
    for model in models:
        got = hook.get_alerts({"alertname": cfg.alertname, "model": model})
        assert [a["labels"]["model"] for a in got] == [model]  # the matcher quoted it: exactly one, itself
        assert got[0]["annotations"]["summary"].startswith(model)
    # a value that would be a regex, or a prefix, matches nothing
    assert hook.get_alerts({"alertname": cfg.alertname, "model": ".*"}) == []
    assert hook.get_alerts({"alertname": cfg.alertname, "model": models[0][:-1]}) == []

    # the webhook receives the label values byte for byte
    def received() -> set[str]:
        return {a["labels"]["model"] for n in seeded_stack.webhook_notifications() for a in n["alerts"]
                if a["labels"].get("alertname") == cfg.alertname}  # fmt: skip

    wait_until(received, until=lambda got: got == set(models), timeout=20,
               what=f"the webhook receiver to get the {cfg.alertname} alerts of {models}")  # fmt: skip


def test_awkward_label_values_from_prometheus_join_the_same_mlflow_tag(
    seeded_stack: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    from modelwatch.config import QueryConfig, load_config
    from modelwatch.correlate import correlate
    from modelwatch.extract import extract_predictions, extract_resources
    from modelwatch.hooks import MlflowHook, PrometheusHook
    from modelwatch.storage import Lake
    from modelwatch.timegrid import epoch_ms
    from modelwatch.window import Window

    for name, value in seeded_stack.airflow_env().items():
        monkeypatch.setenv(name, value)
    instance = 'host "a" \\ ✓ {x=~".*"} <b>'
    # PromQL string literals take JSON's escapes; label_replace gives a real series that label value
    literal = json.dumps(f"{instance}:9100", ensure_ascii=False)
    promql = f'label_replace(vector(0.95), "instance", {literal}, "", "")'
    cfg = load_config()
    cfg = cfg.model_copy(update={"prometheus": cfg.prometheus.model_copy(update={
        "queries": [QueryConfig(name="cpu", promql=promql, saturation=0.9, unit="ratio")]})})  # fmt: skip
    start = datetime(2026, 3, 12, 6, tzinfo=UTC)
    window = Window(start, start + timedelta(hours=1))
    resources = extract_resources(PrometheusHook(**FAST), cfg.prometheus.queries, window.start, window.end, 15)
    assert set(resources["instance"]) == {instance}
    assert json.loads(resources["labels"].iloc[0]) == {"instance": f"{instance}:9100"}

    client = MlflowClient(seeded_stack.config.mlflow_url)
    experiment = f'faults "escaping" ✓ <i>{uuid.uuid4().hex[:6]}</i>'
    exp_id = client.create_experiment(experiment)
    model = AWKWARD[0]
    for minute in range(3):
        run = client.create_run(exp_id, start_time=epoch_ms(start + timedelta(minutes=minute)),
                                tags={"model": model, "model_version": "1", "instance": f"{instance}:8000"})  # fmt: skip
        client.log_metric(run.info.run_id, "prediction_time", 2.0, timestamp=epoch_ms(start))

    class Exp:
        name, layout = experiment, "run_per_prediction"

    predictions = extract_predictions(MlflowHook(), [Exp()], None, window.start, window.end)
    assert set(predictions["experiment"]) == {experiment} and set(predictions["instance"]) == {instance}
    joined, summary = correlate(predictions, resources, cfg)
    assert (joined["res_cpu"] == 0.95).all() and (joined["missing_resources"] == "").all()
    assert joined["sat_cpu"].all()

    # reports and paths: the lake round-trips them, and no name becomes part of a path
    lake = Lake(f"file://{tmp_path}/lake ✓ with spaces")
    ref = lake.write_frame("joined", window, joined, run_id='manual__"x"')
    back = lake.read_partition(ref.url)
    assert back["model"].tolist() == [model] * 3 and back["instance"].tolist() == [instance] * 3
    doc_url = lake.write_document("verdicts", window, "verdict", {"models": AWKWARD, "experiment": experiment})
    assert lake.read_document(doc_url) == {"models": AWKWARD, "experiment": experiment}
    files = [p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()]
    assert all(model not in str(f) and instance not in str(f) for f in files), files


def test_failure_email_escapes_html_in_the_error() -> None:
    import jinja2

    from modelwatch.notify import FAILURE_HTML

    class Ti:
        task_id, try_number, log_url = "extract_predictions", 1, "http://airflow/log?x=1&y=<2>"

    html = jinja2.Environment(autoescape=False).from_string(FAILURE_HTML).render(
        run_id="manual__x", dag={"dag_id": "d"}, ti=Ti(), dag_run={},
        exception=ValueError("MLflow experiment '<script>alert(1)</script>' on http://x: no such experiment"),
    )  # fmt: skip
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


# -- a PromQL mistake is found by Prometheus, at the first try ----------------------------------------------


def test_bad_promql_fails_the_task_at_once_without_retries_and_emails_prometheus_words(
    seeded_stack: Any, airflow_db: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """PromQL that parses but that this Prometheus cannot (a function it does not have: ``mad_over_time`` is
    unknown to Prometheus 2.x and experimental, off by default, in 3.x; the schema checks syntax, the server
    knows its own functions): Prometheus answers 400 bad_data, which no retry can change: the task fails on
    its first try (the DAG allows two retries) and the failure email carries Prometheus's words."""
    from faultdag import parse_dag, run_day, state, task_states, test_copy

    raw = _raw()
    raw["prometheus"]["queries"][0]["promql"] = "1 - avg by (instance) (mad_over_time(node_cpu_seconds_total[1m]))"
    config = tmp_path / "thresholds.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    for name, value in seeded_stack.airflow_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MODELWATCH_CONFIG", str(config))
    monkeypatch.setenv("MODELWATCH_STORAGE_URL", f"file://{tmp_path}/lake")
    mails_before = len(seeded_stack.mail())
    started = time.monotonic()
    run = run_day(test_copy(parse_dag(), retries=2, retry_delay=5), datetime(2026, 3, 2).date())
    assert state(run) == "failed"
    states = task_states(run)
    assert states["extract_resources"] == ("failed", 1)  # no second try
    assert states["extract_predictions"][0] == "success" and states["correlate"][0] == "upstream_failed"
    took = time.monotonic() - started
    # "at once": a bound with a wide margin for a busy machine (the first try's failure is asserted above)
    assert took < 60, f"the run took {took:.0f} s to fail"
    # the run is over (dag.test returned), so its failure email is sent: wait for it to reach the sink
    mails = wait_until(lambda: seeded_stack.mail()[mails_before:], timeout=20,
                       what="the failure email of extract_resources in the SMTP sink")  # fmt: skip
    assert len(mails) == 1 and "extract_resources" in mails[0]["subject"], [m["subject"] for m in mails]
    for words in ("Prometheus query", "cpu", "bad_data", "parse error"):
        assert words in mails[0]["body"], mails[0]["body"]
