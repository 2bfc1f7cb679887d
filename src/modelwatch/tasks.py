"""The monitoring DAG's tasks. The DAG files only wire these.

Each task takes its window from its own DAG run (never from the clock), reads its inputs from the lake
at the URLs it gets through XCom, writes its outputs to the lake and returns their URLs. Nothing else is
shared, so the tasks run unchanged on the Local, Celery or Kubernetes executor. Heavy libraries are
imported inside the tasks: this module is imported when the DAG is parsed.
"""

from __future__ import annotations

import logging
from datetime import UTC, timedelta
from typing import Any

from airflow.sdk import Asset, get_current_context, task

from modelwatch.config import ModelwatchConfig, load_config
from modelwatch.storage import DATASETS, dataset_url
from modelwatch.window import INTRADAY

log = logging.getLogger(__name__)

POST_ALERT_TASK = "post_alert"
NO_ALERT_TASK = "no_alert"


def assets(cfg: ModelwatchConfig, *, intraday: bool = False) -> dict[str, Asset]:
    """One Airflow Asset per dataset, named by its table location.

    The location is the name (not ``modelwatch_<dataset>``): Airflow deactivates an asset whose name
    comes back with another URI, so moving the lake (``file://`` to ``s3://``) must give new assets.
    """
    return {
        d: Asset(uri=dataset_url(cfg.storage.base_url, d, INTRADAY if intraday else ""), group="modelwatch")
        for d in DATASETS
    }


def _run(interval: timedelta) -> tuple[ModelwatchConfig, Any, Any, dict[str, Any]]:
    from airflow.sdk.exceptions import AirflowFailException

    from modelwatch.config import ConfigError
    from modelwatch.storage import Lake
    from modelwatch.window import window_from_context

    context = get_current_context()
    # Bad configuration or run parameters do not fix themselves: fail now, without retries.
    try:
        cfg = load_config()
        window = window_from_context(context, interval)
    except ConfigError as exc:
        raise AirflowFailException(str(exc)) from None
    except ValueError as exc:
        raise AirflowFailException(
            f"invalid window for this run (params window_start/window_end): {exc}"
        ) from None
    if not window.canonical:
        log.info("ad-hoc run (a trigger-form window or a model subset): results go to %s, canonical partitions "
                 "stay as they are", window.partition_path)  # fmt: skip
    return cfg, window, Lake(cfg.storage.base_url, cfg.storage.aws_conn_id), context


@task(multiple_outputs=False)
def extract_resources(interval: timedelta) -> dict[str, Any]:
    """Run every configured PromQL query as query_range over the window into the ``resources`` partition."""
    from modelwatch.extract import extract_resources as extract
    from modelwatch.hooks.prometheus import PrometheusHook

    cfg, window, lake, context = _run(interval)
    stored = (
        lake.stored_ref("resources", window) if (context.get("params") or {}).get("quality_only") else None
    )
    if stored is not None:
        # a quality re-judging is about labels that arrived late; the samples are what the window's own run
        # read (Prometheus may no longer keep them)
        log.info("quality only: judging on the stored resources %s (%d samples, run %s)", stored.url, stored.rows,
                 stored.run_id)  # fmt: skip
        return stored.to_dict()
    p = cfg.prometheus
    log.info("window %s: %d queries at step %s", window, len(p.queries), p.step)
    hook = PrometheusHook(prometheus_conn_id=p.conn_id, max_series_per_query=p.max_series_per_query,
                          max_response_bytes=p.max_response_bytes)  # fmt: skip
    notes: list[dict[str, Any]] = []
    frame = extract(
        hook, p.queries, window.start, window.end, p.step.total_seconds(), p.max_points_per_request, p.instance_label,
        notes=notes,
    )  # fmt: skip
    # Prometheus's warnings (a partial answer) per query: correlate reads them here and marks the verdicts
    extra: dict[str, Any] = {"requests": hook.requests_made, "bytes_received": hook.bytes_received,
                             "prometheus_warnings": notes}  # fmt: skip
    if cfg.cloudwatch.all_queries():
        frame, extra["cloudwatch"] = _cloudwatch(cfg, window, frame)
    ref = _store_evidence(lake, "resources", window, frame, context["run_id"], extra)
    log.info(
        "resources: %d samples of %d series from %d requests -> %s",
        ref.rows, frame.groupby(["query", "labels"]).ngroups if len(frame) else 0, hook.requests_made, ref.url,
    )  # fmt: skip
    return ref.to_dict()


def _store_evidence(lake: Any, dataset: str, window: Any, frame: Any, run_id: str,
                    extra: dict[str, Any] | None = None) -> Any:  # fmt: skip
    """Write the window's ``resources`` or ``predictions``, unless the source answered with nothing where the
    lake already holds evidence of the window: then the stored partition stays and is this run's input.

    A re-judging of an old day after Prometheus' retention, or after MLflow runs were deleted, must never
    replace what was seen with an empty partition (the window would turn ``no_data`` and its pages end).
    """
    if not len(frame):
        stored = lake.stored_ref(dataset, window)
        if stored is not None and stored.rows:
            log.warning("%s: the source has no data for window %s, but %s holds %d rows (run %s): keeping them; a "
                        "source that no longer has a window never replaces stored evidence with nothing",
                        dataset, window, stored.url, stored.rows, stored.run_id)  # fmt: skip
            return stored
    return lake.write_frame(dataset, window, frame, run_id=run_id, extra=extra)


def _cloudwatch(cfg: ModelwatchConfig, window: Any, frame: Any) -> tuple[Any, dict[str, Any]]:
    """The CloudWatch queries' rows appended to the Prometheus ones (the same ``resources`` partition)."""
    from datetime import datetime

    import pandas as pd

    from modelwatch.cloudwatch import extract_cloudwatch
    from modelwatch.hooks.cloudwatch import CloudWatchHook

    c = cfg.cloudwatch
    hook = CloudWatchHook(c.conn_id, c.region)
    try:
        rows, stats = extract_cloudwatch(hook, c.all_queries(), window.start, window.end, int(c.period.total_seconds()),
                                         datetime.now(UTC))  # fmt: skip
    except ValueError as exc:  # a window CloudWatch no longer keeps: no retry brings it back
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(f"cloudwatch, window {window}: {exc}") from None
    log.info("cloudwatch (%s): %d series of %d queries at a %d s period: %d values from %d request(s)",
             hook.where, stats["series"], len(c.all_queries()), stats["period"], stats["datapoints"], stats["requests"])  # fmt: skip
    return pd.concat([frame, rows], ignore_index=True) if len(rows) else frame, stats


@task(multiple_outputs=False)
def extract_predictions(interval: timedelta) -> list[dict[str, Any]]:
    """Read the prediction records of the configured MLflow experiments in the window, and plan the groups
    of models the mapped ``correlate`` tasks judge: one item per group, each with the partition's reference
    (Airflow maps over a task's whole return value, never over one key of it)."""
    from modelwatch.extract import extract_predictions as extract
    from modelwatch.fanout import model_groups, models_to_judge
    from modelwatch.hooks.mlflow import MlflowHook
    from modelwatch.window import selected_models

    cfg, window, lake, context = _run(interval)
    m = cfg.mlflow
    log.info("window %s: experiments %s", window, ", ".join(e.name for e in m.experiments))
    hook = MlflowHook(mlflow_conn_id=m.conn_id)
    frame = extract(
        hook,
        m.experiments,
        m.tags.model_dump(),
        window.start,
        window.end,
        m.max_results_per_page,
        logged=m.logged.columns(),
    )
    selected = selected_models(context.get("params"))
    if selected:
        frame = frame[frame["model"].isin(selected)].reset_index(drop=True)
        log.info("keeping only models %s (run parameter)", ", ".join(sorted(selected)))
    ref = _store_evidence(lake, "predictions", window, frame, context["run_id"])
    per_model = frame.groupby("model").size().to_dict() if len(frame) else {}
    log.info("predictions: %d rows %s -> %s", ref.rows, per_model, ref.url)
    models = models_to_judge(per_model, cfg.evaluation.expected_models, selected)
    groups = model_groups(models, cfg.correlation.models_per_task, per_model)
    log.info(
        "%d model(s) in %d group(s) of at most %d (correlation.models_per_task)",
        len(models), len(groups), cfg.correlation.models_per_task,
    )  # fmt: skip
    return [{"index": i, "models": g, "predictions": ref.to_dict()} for i, g in enumerate(groups)]


@task(multiple_outputs=False)
def correlate(resources: dict[str, Any], group: dict[str, Any], interval: timedelta) -> dict[str, Any]:
    """Mapped over groups of models: join the group's predictions to the samples of its instances, summarise
    saturation against slowness, give each model its verdict, and stage the three parts for ``evaluate``."""
    from modelwatch.correlate import correlate as run_correlation
    from modelwatch.evaluate import evaluate as run_evaluation
    from modelwatch.evaluate import history_columns
    from modelwatch.verdict import drift_frame, verdicts_frame
    from modelwatch.window import reference_windows

    cfg, window, lake, context = _run(interval)
    models: list[str] = list(group["models"])
    pred = lake.read_ref(group["predictions"], filters=[("model", "in", models)] if models else None)
    if not models:
        pred = pred.iloc[0:0]
    # Only the instances this group's predictions ran on, and the global series ("").
    instances = sorted({*pred["instance"].astype(str), ""})
    res = lake.read_ref(resources, filters=[("instance", "in", instances)])
    # the queries whose answers carried Prometheus warnings (partial data), as extract_resources recorded them
    partial = lake.read_manifest(resources["url"]).get("prometheus_warnings") or []
    joined, summary = run_correlation(pred, res, cfg)
    reference, found = lake.read_history(
        "predictions", reference_windows(window, cfg.quality.reference_days), history_columns(cfg),
        filters=[("model", "in", models)] if models else None,
    )  # fmt: skip
    days = [dict(w.partition)["dt"] for w in found]
    verdicts = run_evaluation(joined, summary, res, cfg, window, models=models, reference=reference,
                              reference_days=days, partial=partial)  # fmt: skip
    name, run_id = f"group-{int(group['index']):05d}", context["run_id"]
    staged = {
        "joined": lake.stage_frame(window, run_id, f"joined-{name}", joined),
        "correlation": lake.stage_frame(window, run_id, f"correlation-{name}", summary),
        "verdicts": lake.stage_frame(window, run_id, f"verdicts-{name}", verdicts_frame(verdicts)),
        "drift": lake.stage_frame(window, run_id, f"drift-{name}", drift_frame(verdicts)),
    }
    no_sample = int((joined["missing_resources"] != "").sum()) if len(joined) else 0
    log.info(
        "window %s, group %s (%d models, %d instances, %d resource samples): %d predictions (%d slow), "
        "%d without a sample of some resource within %s",
        window, group["index"], len(models), len(instances) - 1, len(res), len(joined),
        int(joined["slow"].sum()) if len(joined) else 0, no_sample, cfg.correlation.tolerance,
    )  # fmt: skip
    for v in verdicts:
        log.info("verdict %s: %s (%s)", v.model, v.verdict, v.reason)
    return {**group, "rows": len(joined), **staged}


@task(multiple_outputs=False)
def evaluate(resources: dict[str, Any], groups: list[dict[str, Any]], interval: timedelta) -> dict[str, Any]:
    """Commit the groups' parts as the run's partitions, decide whether to page, and store the verdict
    document and the alert payload (replacing or removing the documents an earlier run of the window left).

    The verdict document is written after the four partitions and names the version of each: it is the
    window's commit, and readers that want one run's window whole read through it
    (:meth:`modelwatch.storage.Lake.read_committed`). The reports are optional: what cannot be made is said
    in the document and the log, and the verdicts and the page go on.
    """
    from airflow.configuration import conf

    from modelwatch.alerting import (
        ADHOC,
        CANONICAL,
        build_alerts,
        continue_incidents,
        judged_models,
        paging_decision,  # fmt: skip
        run_url,
    )
    from modelwatch.report import view_links, write_reports
    from modelwatch.storage import COMMITTED
    from modelwatch.verdict import verdicts_from_frame

    cfg, window, lake, context = _run(interval)
    run_id, dag_id = context["run_id"], context["dag"].dag_id
    params = context.get("params") or {}
    quality_only = bool(params.get("quality_only", False))
    groups = sorted(groups, key=lambda g: g["index"])
    # parts that an earlier run of this window staged and never committed (it failed for good); a run still
    # under way is younger than the longest a run may take
    lake.drop_stale_staging(window, run_id, older_than=cfg.tasks.worst_case.total_seconds())
    # every group's parts, in group order: the partitions do not depend on which task finished first
    j = lake.commit_parts("joined", window, [g["joined"] for g in groups], run_id=run_id)
    c = lake.commit_parts("correlation", window, [g["correlation"] for g in groups], run_id=run_id)
    ref = lake.commit_parts(
        "verdicts", window, [g["verdicts"] for g in groups], run_id=run_id, sort_by="model"
    )
    d = lake.commit_parts("drift", window, [g["drift"] for g in groups], run_id=run_id)
    # the verdicts as the lake holds them (one serialisation, restored to the typed object)
    verdicts = verdicts_from_frame(lake.read_ref(ref.to_dict()))
    dag_run = context["dag_run"]
    decision = paging_decision(
        verdicts,
        cfg.alerting,
        run_type=str(getattr(dag_run.run_type, "value", dag_run.run_type)),
        dry_run=bool(params.get("dry_run", False)),
        page_on_backfill=bool(params.get("page_on_backfill", cfg.alerting.page_on_backfill)),
        quality_only=quality_only,
    )
    base_url = conf.get("api", "base_url", fallback="http://localhost:8080")
    url_of_run = run_url(base_url, dag_id, run_id)
    # the reports' addresses in the model-health view, for the alerts that link to them
    views = view_links(lake, window, verdicts, base_url)
    alerts = build_alerts(verdicts, cfg.alerting, run_url=url_of_run, partition_url=ref.url, reports=views,
                          dag_id=dag_id, scope=CANONICAL if window.canonical else ADHOC)  # fmt: skip
    if alerts and window.canonical:
        # an incident that carries on from the previous window stays one alert (across midnight)
        previous = lake.read_document(lake.document_url("alerts", window.previous, "payload")) or []
        alerts = continue_incidents(alerts, previous, cfg.alerting.incident_gap)
    alert = _alert_documents(lake, window, alerts, decision, quality_only)
    sent: dict[str, list[str]] = {}
    for a in alerts if decision.post else []:
        sent.setdefault(a["labels"]["model"], []).append(a["labels"]["alertname"])
    verdict_url = lake.document_url("verdicts", window, "verdict")
    written = write_reports(lake, window, verdicts, j.to_dict(), resources, cfg, sent=sent, reason=decision.reason,
                            links={"Airflow run": url_of_run, "verdict document": verdict_url, "partition": ref.url})  # fmt: skip
    reports = {m: {"file": url, "view": views[m]} for m, url in written.urls.items()}
    partitions = {"resources": resources, "predictions": groups[0]["predictions"], "joined": j.to_dict(),
                  "correlation": c.to_dict(), "verdicts": ref.to_dict(), "drift": d.to_dict()}  # fmt: skip
    document = {
        "window": window.to_dict(), "canonical": window.canonical, "dag_id": dag_id, "run_id": run_id,
        "run_url": url_of_run, "verdicts": [v.to_dict() for v in verdicts], "alert": alert, "reports": reports,
        "not_made": written.failed, COMMITTED: partitions,
    }  # fmt: skip
    lake.write_document("verdicts", window, "verdict", document)
    check_commit(lake, window, partitions, run_id)
    lake.drop_staging(window, run_id)
    for v in verdicts:
        log.info("verdict %s: %s (%s)", v.model, v.verdict, v.reason)
    for model, where in reports.items():
        log.info("report of %s: %s (file %s)", model, where["view"], where["file"])
    for failure in written.failed:
        log.warning("not made: the %s of %s (%s); the verdicts and the page go on", failure["output"],
                    failure["model"], failure["error"])  # fmt: skip
    log.info(
        "window %s: %d models from %d group(s); %d predictions joined -> %s; alerting: %s; verdict document %s",
        window, len(verdicts), len(groups), j.rows, j.url, decision.reason, verdict_url,
    )  # fmt: skip
    return {
        **partitions, "verdict_document": verdict_url, "alert_payload": alert["payload"],
        "alert_payload_sha256": alert.get("payload_sha256"), "reports": reports, "not_made": written.failed,
        "post": decision.post, "reason": decision.reason, "window_end": window.end.isoformat(),
        "summary": {v.model: v.verdict for v in verdicts}, "quality": {v.model: v.quality for v in verdicts},
        "judged": judged_models(verdicts, cfg.alerting), "quality_only": quality_only,
        "dag_id": dag_id, "scope": CANONICAL if window.canonical else ADHOC,
    }  # fmt: skip


#: the partitions ``evaluate`` commits for a window (resources and predictions are the extract tasks')
COMMITTED_BY_EVALUATE = ("joined", "correlation", "verdicts", "drift")


def check_commit(lake: Any, window: Any, partitions: dict[str, dict[str, Any]], run_id: str) -> None:
    """Fail unless the partitions ``evaluate`` committed are still this run's once its verdict document is
    written: another run of the window that committed in between fails one of the two, and the retry of
    the failed one commits the window again from its staged parts (kept until the commit holds).

    :raises StorageError: naming the window, the partitions another run replaced and this run's staging.
    """
    from modelwatch.storage import StorageError

    replaced = [n for n in COMMITTED_BY_EVALUATE
                if getattr(lake.stored_ref(n, window), "sha256", None) != partitions[n]["sha256"]]  # fmt: skip
    if replaced:
        raise StorageError(f"window {window}: another run of it committed {', '.join(replaced)} while this run "
                           f"({run_id}) committed its own; this try fails and its retry commits the window again "
                           f"from its staged parts ({lake.staging_url(window, run_id)})")  # fmt: skip


def payload_to_post(lake: Any, url: str, expected_sha256: str | None, window: Any) -> list[dict[str, Any]]:
    """The alert payload at ``url``, exactly the version this run's ``evaluate`` wrote.

    :raises ValueError: when the payload is missing or empty (a retry may find it again).
    :raises AirflowFailException: when another run of the window rewrote it: posting it would page that
        run's verdicts under this run's name; the failure says to clear the whole run.
    """
    import json

    from airflow.sdk.exceptions import AirflowFailException

    from modelwatch.storage import sha256_of

    raw = lake.read_bytes(url)
    if not raw:
        raise ValueError(f"alert payload {url} is missing or empty")
    if expected_sha256 and sha256_of(raw) != expected_sha256:
        raise AirflowFailException(
            f"alert payload {url} is no longer the one this run's evaluate wrote (sha256 {expected_sha256[:12]}, "
            f"now {sha256_of(raw)[:12]}): another run of window {window} rewrote it and posts its own alerts. "
            "Clear this whole run to judge the window again"
        )
    return json.loads(raw)


def alert_document_names(quality_only: bool) -> tuple[str, str]:
    """The names of the payload and delivery documents a run writes beside the window's ``alerts``: a
    quality-only re-judging has its own pair, so the record of what the window's own run paged stays."""
    return ("quality_payload", "quality_delivery") if quality_only else ("payload", "delivery")


def _alert_documents(lake: Any, window: Any, alerts: list[dict[str, Any]], decision: Any,
                     quality_only: bool) -> dict[str, Any]:  # fmt: skip
    """Store this run's alert payload (or remove an earlier run's), and say what the verdict document records.

    Kept before posting, so an alert that cannot be delivered now is never lost: a retry of ``post_alert``,
    or clearing it once Alertmanager is back, posts it from here. A run that does not page (a backfill
    without ``page_on_backfill``) over a window whose page was delivered keeps that payload and its delivery
    record: the alert it recorded may still fire.
    """
    from modelwatch.storage import sha256_of

    payload_name, delivery_name = alert_document_names(quality_only)
    out: dict[str, Any] = {"post": decision.post, "reason": decision.reason, "payload": None}
    delivered = lake.document_url("alerts", window, delivery_name)
    if not decision.post and lake.read_bytes(delivered) is not None:
        out["kept"] = {"payload": lake.document_url("alerts", window, payload_name), "delivery": delivered}
        log.info(
            "not paging, and %s records what a run of this window paged: keeping it and its payload",
            delivered,
        )
        return out
    lake.remove_document("alerts", window, delivery_name)
    if alerts:
        out["payload"] = lake.write_document("alerts", window, payload_name, alerts)
        out["payload_sha256"] = sha256_of(lake.read_bytes(out["payload"]) or b"")
    else:
        lake.remove_document("alerts", window, payload_name)
    return out


@task(multiple_outputs=False)
def publish_verdicts(evaluation: dict[str, Any], interval: timedelta) -> dict[str, Any]:
    """Publish the run's verdicts as Prometheus series to the Pushgateway (``publish`` in thresholds.yaml):
    canonical runs only, and never an older window over a newer one (:func:`modelwatch.publish.publish_verdicts`)."""
    from modelwatch.hooks.pushgateway import PushgatewayHook
    from modelwatch.publish import publish_verdicts as publish
    from modelwatch.verdict import verdicts_from_frame

    cfg, window, lake, context = _run(interval)
    if not cfg.publish.enabled:
        result = {"action": "skipped", "reason": "publish.enabled is false"}
    elif not window.canonical:
        result = {"action": "skipped", "reason": "an ad-hoc run (a trigger-form window or a model subset) publishes "
                  "nothing: the series say what the scheduled windows found"}  # fmt: skip
    else:
        verdicts = verdicts_from_frame(lake.read_ref(evaluation["verdicts"]))
        dag_id = context["dag"].dag_id
        result = publish(
            PushgatewayHook(cfg.publish.conn_id), verdicts, window.end, dag_id, job=cfg.publish.job
        )
    log.info("window %s: verdict series %s: %s", window, result["action"], result["reason"])
    return result


REJUDGE_TASK = "rejudge_quality"


@task(multiple_outputs=False)
def rejudge_windows(evaluation: dict[str, Any], interval: timedelta) -> list[dict[str, Any]]:
    """The quality-only re-judgings this run asks for (``quality.rejudge_days``), as keyword arguments of the
    mapped ``rejudge_quality`` trigger: one run per earlier day, its window in the trigger form's params
    (exactly the day: canonical), ``quality_only`` set. None from a backfill, a dry run, an ad-hoc or a
    quality-only run (a re-judging never asks for more)."""
    from modelwatch.window import reference_windows

    cfg, window, _, context = _run(interval)
    params = context.get("params") or {}
    run_type = str(getattr(context["dag_run"].run_type, "value", context["dag_run"].run_type))
    if (not cfg.quality.rejudge_days or run_type == "backfill" or not window.canonical
            or params.get("dry_run") or params.get("quality_only")):  # fmt: skip
        return []
    asks = []
    for day in reference_windows(window, cfg.quality.rejudge_days):
        dt = dict(day.partition)["dt"]
        asks.append({
            "trigger_run_id": f"{REJUDGE_TASK}__{dt}__{context['run_id']}",
            "conf": {"window_start": day.start.isoformat(), "window_end": day.end.isoformat(), "quality_only": True},
            "note": f"quality re-judged for {dt} (labels arrive late), asked by {context['run_id']}",
        })  # fmt: skip
    log.info(
        "asking for %d quality-only re-judging(s): %s",
        len(asks),
        ", ".join(a["trigger_run_id"] for a in asks),
    )
    return asks


@task.branch
def choose_alert_path(evaluation: dict[str, Any]) -> str:
    """Branch to ``post_alert`` when this run may page (not a dry run, not a backfill that was not asked
    to page): it posts the run's alerts and resolves the ones that ended."""
    log.info("%s -> %s", evaluation["reason"], POST_ALERT_TASK if evaluation["post"] else NO_ALERT_TASK)
    return POST_ALERT_TASK if evaluation["post"] else NO_ALERT_TASK


@task(task_id=POST_ALERT_TASK, multiple_outputs=False)
def post_alert(evaluation: dict[str, Any], interval: timedelta) -> dict[str, Any]:
    """Bring Alertmanager (API v2) in line with this run: post the alert payload its ``evaluate`` stored
    (exactly that version), resolve the modelwatch alerts of this DAG and scope for the judged models that
    this run no longer raises, and record the delivery."""
    from datetime import datetime

    from modelwatch.alerting import (
        CANONICAL,
        SOURCE_LABEL,
        quality_alerts_only,
        resolutions,
        stamp_for_posting,
    )
    from modelwatch.hooks.alertmanager import AlertmanagerHook

    cfg, window, lake, context = _run(interval)
    alerts = []
    if evaluation["alert_payload"]:
        alerts = payload_to_post(
            lake, evaluation["alert_payload"], evaluation.get("alert_payload_sha256"), window
        )
    judged = evaluation["judged"]
    quality_only = bool(evaluation.get("quality_only"))
    if quality_only:
        alerts, judged = quality_alerts_only(alerts, judged, cfg.alerting)
        log.info("quality only (a re-judging once labels arrived): posting and resolving quality alerts only")
    hook = AlertmanagerHook(alertmanager_conn_id=cfg.alerting.conn_id)
    # The posting time only sets how long the alert stays active; which data is judged never depends on it.
    posted_at = datetime.now(UTC)
    # The run's own alerts first: when Alertmanager struggles, a page matters more than a resolution.
    firing = stamp_for_posting(alerts, posted_at, cfg.alerting.active_for)
    hook.post_alerts(firing)
    url = None
    if firing:
        delivery = {"posted_at": posted_at.isoformat(), "alerts": firing, "run_id": context["run_id"]}
        url = lake.write_document("alerts", window, alert_document_names(quality_only)[1], delivery)
    for a in firing:
        log.info(
            "posted %s for %s (%s)",
            a["labels"]["alertname"],
            a["labels"]["model"],
            a["annotations"]["summary"],
        )
    dag_id = evaluation.get("dag_id") or context["dag"].dag_id
    ended = resolutions(
        alerts, hook.get_alerts({"source": SOURCE_LABEL, "dag": dag_id}),
        judged=judged, window_end=evaluation["window_end"], resolved_at=posted_at,
        dag_id=dag_id, scope=evaluation.get("scope", CANONICAL),
    )  # fmt: skip
    hook.post_alerts(ended)
    for a in ended:
        model = a["labels"]["model"]
        log.info("resolved %s for %s (raised for %s): judged %s, quality %s now", a["labels"]["alertname"], model,
                 a["annotations"].get("window", "an earlier window"), evaluation["summary"][model],
                 evaluation["quality"][model])  # fmt: skip
    log.info(
        "window %s: %d alert(s) posted, %d resolved; verdicts %s; delivery record %s",
        window, len(firing), len(ended), evaluation["verdicts"]["url"], url,
    )  # fmt: skip
    return {"posted": len(firing), "resolved": [a["labels"] for a in ended], "delivery": url}


@task(task_id=NO_ALERT_TASK)
def no_alert(evaluation: dict[str, Any]) -> str:
    """Record why nothing was posted."""
    log.info("not posting: %s; verdicts %s", evaluation["reason"], evaluation["verdict_document"])
    return evaluation["reason"]


@task(multiple_outputs=False)
def replay_thresholds() -> dict[str, Any]:
    """Judge stored days again under the trigger form's candidate thresholds beside the ones in force, and
    say how many pages each verdict kind would have sent on which days. Posts nothing, writes nothing: the
    table is in this task's log and XCom."""
    from airflow.sdk.exceptions import AirflowFailException

    from modelwatch.config import ConfigError, load_changed_config
    from modelwatch.replay import compare, form_days, table
    from modelwatch.storage import Lake

    context = get_current_context()
    params = context.get("params") or {}
    try:
        current = load_config()
        candidate = load_changed_config(str(params.get("candidate") or ""), "trigger-form field 'candidate'")
        # a manual run from the form has no logical date; the day it was triggered for is its run_after's
        days = form_days(str(params.get("from") or ""), str(params.get("to") or ""),
                         context["dag_run"].run_after.date())  # fmt: skip
    except (ConfigError, ValueError) as exc:  # a form that is wrong stays wrong: no retries
        raise AirflowFailException(str(exc)) from None
    lake = Lake(current.storage.base_url, current.storage.aws_conn_id)
    if not set(lake.list_days("predictions")) & {d.isoformat() for d in days}:
        raise AirflowFailException(f"no stored day between {days[0]} and {days[-1]} in {current.storage.base_url}: "
                                   "nothing to replay (params from/to choose the days)")  # fmt: skip
    log.info("replaying %d day(s) %s..%s of %s under the current and the candidate thresholds; nothing is posted "
             "or written", len(days), days[0], days[-1], current.storage.base_url)  # fmt: skip
    rows = compare(lake, days, current, candidate, log.info)
    log.info("pages per verdict kind, current vs candidate:\n%s", table(rows))
    return {"days": [d.isoformat() for d in days], "table": rows}
