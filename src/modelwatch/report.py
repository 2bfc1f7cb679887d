"""A page per model and window, for the person paged: what happened on one time axis, the evidence, the
verdict and what was sent.

One self-contained HTML file (its charts embedded as PNG, also written beside it) per model that needs a
look: a ``degraded`` or ``slow_unexplained`` verdict, a regressed quality or a drift. The run writes them
into its place in the lake (``<lake>/reports/dt=D/``; an ad-hoc run under ``adhoc/reports/.../run=<key>/``),
replacing what an earlier run of the window left. The model-health view (:mod:`modelwatch.plugin`)
renders any other model and day on demand with the same :func:`build_report`.

The charts are downsampled for display (:func:`downsample`: the lowest and highest value of each slice of
time, so a spike is never smoothed away); the verdict never reads them. Every text from the data (model
names, labels, reasons) is escaped.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from modelwatch.text import chart_text, fmt_pct, fmt_value, html_text, safe_name

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from modelwatch.config import ModelwatchConfig
    from modelwatch.storage import Lake
    from modelwatch.verdict import ModelVerdict
    from modelwatch.window import Window

#: the lake's document-only dataset of the reports
REPORTS = "reports"
#: where the API server serves the model-health view and the reports (:mod:`modelwatch.plugin`)
VIEW_PREFIX = "/modelwatch"
#: the most points drawn per series: a day of 20 instances stays a page a browser opens at once
DISPLAY_POINTS = 1500
_COLORS = {"healthy": "#2e7d32", "degraded": "#c62828", "slow_unexplained": "#ef6c00", "no_data": "#616161"}


def file_stem(model: str) -> str:
    """The report's file name for ``model`` (without extension): the name itself when it is plain, else a
    readable prefix and a hash (:func:`modelwatch.text.safe_name`), so any model name is one bounded,
    unique file or object name."""
    return safe_name(model)


def worth_a_page(v: ModelVerdict) -> bool:
    """Whether the run writes a report for this verdict: someone will look (an alert, a regression, a drift)."""
    return v.verdict in ("degraded", "slow_unexplained") or v.quality == "regressed" or v.drift == "drifted"


def downsample(times: np.ndarray, values: np.ndarray, max_points: int = DISPLAY_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` points that keep the shape: the series cut into ``max_points / 2`` slices of
    consecutive points, each drawn as its lowest and its highest value, in time order."""
    import numpy as np

    n = len(times)
    if n <= max_points:
        return times, values
    buckets = max(1, max_points // 2)
    edges = np.linspace(0, n, buckets + 1).astype(int)
    keep: list[int] = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        if hi <= lo:
            continue
        chunk = values[lo:hi]
        finite = np.isfinite(chunk)
        if not finite.any():
            continue
        idx = np.flatnonzero(finite)
        a, b = lo + idx[np.argmin(chunk[idx])], lo + idx[np.argmax(chunk[idx])]
        keep.extend(sorted({int(a), int(b)}))
    index = np.asarray(keep, dtype=int)
    return times[index], values[index]


def saturated_spans(times: np.ndarray, saturated: np.ndarray) -> list[tuple[Any, Any]]:
    """``(start, end)`` of each run of consecutive saturated samples (``times`` sorted)."""
    spans, start = [], None
    for t, s in zip(times, saturated, strict=True):
        if s and start is None:
            start = t
        elif not s and start is not None:
            spans.append((start, t))
            start = None
    if start is not None:
        spans.append((start, times[-1]))
    return spans


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buffer.getvalue()


def timeline_chart(v: ModelVerdict, rows: pd.DataFrame, resources: pd.DataFrame, cfg: ModelwatchConfig,
                   start: Any, end: Any) -> bytes:  # fmt: skip
    """prediction_time with the slow ones marked, then each resource the evidence used, with its threshold
    line and its saturated spans shaded, on one time axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    used = [e.resource for e in (*v.saturated_resources, *v.rejected_resources)]
    fig, axes = plt.subplots(1 + len(used), 1, sharex=True, figsize=(11, 2.2 * (1 + len(used))), squeeze=False)
    ax = axes[0][0]
    if len(rows):
        t = rows["timestamp"].to_numpy(dtype="datetime64[ms]")
        y = rows["prediction_time"].to_numpy(dtype=float, na_value=np.nan)
        slow = rows["slow"].to_numpy(dtype=bool) if "slow" in rows else np.zeros(len(rows), dtype=bool)
        tn, yn = downsample(t[~slow], y[~slow])
        ts, ys = downsample(t[slow], y[slow])
        ax.scatter(tn, yn, s=4, color="#90a4ae", label=f"normal ({int((~slow).sum())})")
        ax.scatter(ts, ys, s=6, color="#c62828", label=f"slow ({int(slow.sum())})")
    ax.axhline(v.slow_threshold_seconds, color="#c62828", linestyle="--", linewidth=1,
               label=chart_text(f"slow above {fmt_value(v.slow_threshold_seconds)} s"))  # fmt: skip
    ax.set_ylabel("prediction_time (s)")
    ax.set_title(chart_text(f"{v.model}: {v.verdict}", 120), loc="left", fontsize=10)
    ax.legend(loc="upper right", fontsize=7)
    instances = sorted({*rows["instance"].astype(str)}) if len(rows) else []
    for i, name in enumerate(used, start=1):
        ax = axes[i][0]
        threshold = cfg.saturation_thresholds.get(name)
        series = resources[(resources["query"] == name) & resources["instance"].isin([*instances, ""])]
        shaded = np.zeros(0, dtype="datetime64[ms]")
        for instance, frame in series.groupby("instance", sort=True):
            frame = frame.sort_values("timestamp")
            t = frame["timestamp"].to_numpy(dtype="datetime64[ms]")
            y = frame["value"].to_numpy(dtype=float)
            td, yd = downsample(t, y)
            ax.plot(td, yd, linewidth=0.8, label=chart_text(instance) or "(all)")
            if threshold is not None:
                for a, b in saturated_spans(t, y >= threshold):
                    ax.axvspan(a, b, color="#ffcdd2", alpha=0.5, linewidth=0)
                shaded = np.concatenate([shaded, t[y >= threshold]])
        if threshold is not None:
            ax.axhline(threshold, color="#c62828", linestyle="--", linewidth=1, label=f"threshold {fmt_value(threshold)}")
        ax.set_ylabel(chart_text(f"{name} ({cfg.query(name).unit})" if cfg.query(name).unit else name), fontsize=8)
        if series["instance"].nunique() <= 8:
            ax.legend(loc="upper right", fontsize=7)
    axes[-1][0].set_xlim(np.datetime64(start.replace(tzinfo=None), "ms"), np.datetime64(end.replace(tzinfo=None), "ms"))
    axes[-1][0].set_xlabel("UTC")
    fig.autofmt_xdate()
    return _png(fig)


def quality_chart(v: ModelVerdict, rows: pd.DataFrame, start: Any, end: Any) -> bytes | None:
    """Hourly mean accuracy and loss in the window beside the reference's means; ``None`` without labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    metrics = [q for q in v.quality_metrics if q.n_window > 0]
    if not metrics or not len(rows):
        return None
    fig, axes = plt.subplots(1, len(metrics), figsize=(11, 2.4), squeeze=False)
    hourly = rows.set_index("timestamp")[[q.metric for q in metrics]].resample("1h").mean()
    for ax, q in zip(axes[0], metrics, strict=True):
        ax.plot(hourly.index.to_numpy(dtype="datetime64[ms]"), hourly[q.metric].to_numpy(dtype=float), marker=".",
                label=f"window, hourly mean ({q.n_window} labelled)")  # fmt: skip
        if q.reference_mean is not None and math.isfinite(q.reference_mean):
            ax.axhline(q.reference_mean, color="#1565c0", linestyle="--", linewidth=1,
                       label=f"reference mean ({q.n_reference})")  # fmt: skip
        ax.set_title(chart_text(f"{q.metric}: {q.outcome}"), loc="left", fontsize=10)
        ax.set_xlim(np.datetime64(start.replace(tzinfo=None), "ms"), np.datetime64(end.replace(tzinfo=None), "ms"))
        ax.legend(loc="lower left", fontsize=7)
    fig.autofmt_xdate()
    return _png(fig)


@dataclass
class Report:
    """A model's page and its charts (PNG), by file name."""

    model: str
    html: str
    images: dict[str, bytes] = field(default_factory=dict)

    def files(self) -> dict[str, bytes]:
        """The files the lake holds for this report."""
        return {f"{file_stem(self.model)}.html": self.html.encode(), **self.images}


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html_text(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html_text(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_STYLE = """body{font-family:system-ui,sans-serif;margin:1.5rem;color:#212121;max-width:1100px}
h1{font-size:1.3rem}h2{font-size:1.05rem;margin-top:1.6rem}.badge{color:#fff;padding:.1rem .5rem;border-radius:.3rem}
table{border-collapse:collapse;font-size:.8rem}td,th{border:1px solid #ddd;padding:.2rem .4rem;text-align:left}
img{max-width:100%}.muted{color:#616161;font-size:.85rem}"""


def context_rows(v: ModelVerdict, rows: pd.DataFrame, cfg: ModelwatchConfig) -> list[list[str]]:
    """The serving context of the model's predictions: per query without a saturation threshold (request
    rate, errors, latency, request and response body sizes), its median at the slow and at the normal
    predictions and the share of predictions it was sampled at. A payload that grew shows here."""
    import numpy as np

    from modelwatch.correlate import model_scopes
    from modelwatch.schema import value_column

    scopes = model_scopes(cfg)
    out = []
    slow = rows["slow"].to_numpy(dtype=bool) if "slow" in rows else np.zeros(len(rows), dtype=bool)
    for q in cfg.resource_queries:
        column = value_column(q.name)
        if q.saturation is not None or column not in rows or scopes.get(q.name, v.model) != v.model:
            continue
        values = rows[column].to_numpy(dtype=float, na_value=np.nan)
        sampled = ~np.isnan(values)
        if not sampled.any():
            continue
        unit = f" {q.unit}" if q.unit else ""
        medians = [fmt_value(float(np.median(values[m & sampled]))) + unit if (m & sampled).any() else "-"
                   for m in (slow, ~slow)]  # fmt: skip
        out.append([q.name, *medians, fmt_pct(float(sampled.mean()))])
    return out


def render_html(v: ModelVerdict, images: dict[str, bytes], *, alert: str, links: dict[str, str],
                context: list[list[str]] | None = None) -> str:  # fmt: skip
    """The page: verdict and reason, the charts, the evidence, the serving context, quality, drift,
    versions, what was sent."""
    color = _COLORS.get(v.verdict, "#616161")
    parts = [
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>modelwatch: {html_text(v.model)} {html_text(v.verdict)}"
        f"</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html_text(v.model)} <span class=badge style='background:{color}'>{html_text(v.verdict)}</span></h1>",
        f"<p class=muted>window {html_text(v.window_start)} to {html_text(v.window_end)}; versions "
        f"{html_text(', '.join(v.model_versions) or '-')}; {v.n_slow} of {v.n_predictions} predictions slower than "
        f"{html_text(fmt_value(v.slow_threshold_seconds))} s</p>",
        f"<p id=reason>{html_text(v.reason)}</p>",
        f"<p id=alert><b>Alert:</b> {html_text(alert)}</p>",
    ]
    for name, png in images.items():
        if name.endswith(".png"):
            data = base64.b64encode(png).decode()
            parts.append(f"<img alt='{html_text(name)}' src='data:image/png;base64,{data}'>")
    evidence = [*v.saturated_resources, *v.rejected_resources]
    if evidence:
        parts.append("<h2>Evidence per resource</h2>")
        parts.append(_table(
            ["resource", "outcome", "threshold", "slow at saturation", "normal at saturation", "slow below",
             "normal below", "slow unsampled", "coverage", "relative risk", "p (Holm)", "test"],
            [[e.resource, e.outcome, f"{fmt_value(e.threshold)} {e.unit}", e.n_slow_saturated, e.n_normal_saturated,
              e.n_slow_unsaturated, e.n_normal_unsaturated, e.n_slow_unsampled, fmt_pct(e.coverage),
              fmt_value(e.relative_risk), fmt_value(e.p_adjusted), e.test] for e in evidence],
        ))  # fmt: skip
    if context:
        parts.append("<h2>Serving context</h2><p class=muted>queries without a saturation threshold, at this "
                     "model's predictions: evidence for a person, not for the verdict</p>")
        parts.append(_table(["query", "median at slow predictions", "median at normal predictions", "sampled"],
                            context))  # fmt: skip
    if v.quality_metrics:
        parts.append(f"<h2>Quality: {html_text(v.quality)}</h2><p>{html_text(v.quality_reason)}</p>")
        parts.append(_table(
            ["metric", "outcome", "window mean", "reference mean", "labelled (window / reference)", "p (Holm)", "test"],
            [[q.metric, q.outcome, fmt_value(q.window_mean), fmt_value(q.reference_mean),
              f"{q.n_window} / {q.n_reference}", fmt_value(q.p_adjusted), q.test] for q in v.quality_metrics],
        ))  # fmt: skip
    if v.drift_values:
        headline = v.drift_headline()
        parts.append(f"<h2>Drift: {html_text(v.drift)}</h2>"
                     + (f"<p id=drift><b>{html_text(headline)}</b>: {html_text(v.drift_reason)}</p>" if headline else ""))
        parts.append(_table(
            ["value", "role", "outcome", "PSI", "PSI threshold", "p (Holm)", "values (window / reference)", "test"],
            [[d.value, d.role or "-", d.outcome, fmt_value(d.psi), fmt_value(d.psi_threshold),
              fmt_value(d.p_adjusted), f"{d.n_window} / {d.n_reference}", d.test] for d in v.drift_values],
        ))  # fmt: skip
    if v.versions:
        keys = list(v.versions[0])
        parts.append("<h2>Per version</h2>" + _table(keys, [[r.get(k) for k in keys] for r in v.versions]))
    if links:
        parts.append("<h2>Where</h2><ul>" + "".join(
            f"<li>{html_text(k)}: <a href='{html_text(url)}'>{html_text(url)}</a></li>" for k, url in links.items()) + "</ul>")  # fmt: skip
    parts.append("</body></html>")
    return "".join(parts)


def build_report(v: ModelVerdict, joined: pd.DataFrame, resources: pd.DataFrame, cfg: ModelwatchConfig,
                 window: Window, *, alert: str, links: dict[str, str] | None = None) -> Report:  # fmt: skip
    """The report of one verdict from the window's joined predictions and resource samples (any rows;
    only the model's and its instances' are drawn)."""
    rows = joined[joined["model"] == v.model]
    stem = file_stem(v.model)
    images = {f"{stem}-timeline.png": timeline_chart(v, rows, resources, cfg, window.start, window.end)}
    quality = quality_chart(v, rows, window.start, window.end)
    if quality is not None:
        images[f"{stem}-quality.png"] = quality
    page = render_html(v, images, alert=alert, links=links or {}, context=context_rows(v, rows, cfg))
    return Report(v.model, page, images)


def alert_text(v: ModelVerdict, sent: dict[str, list[str]], reason: str) -> str:
    """What this run does about the model's alerts, for the page (written before ``post_alert`` posts: its
    delivery record, ``alerts/.../_delivery.json``, says when they went out)."""
    names = sent.get(v.model)
    if names:
        return f"pages as {', '.join(names)} ({reason}; post_alert posts them)"
    return f"no alert for this model from this run ({reason})"


def relative_path(lake: Lake, window: Window, model: str) -> str:
    """The path of ``model``'s report page under the lake's base URL (``reports/dt=D/<stem>.html``)."""
    return f"{lake.partition_url(REPORTS, window)}/{file_stem(model)}.html".removeprefix(f"{lake.base_url}/")


def view_links(lake: Lake, window: Window, verdicts: list[ModelVerdict], base_url: str) -> dict[str, str]:
    """model -> the address of its report in the model-health view, for the verdicts :func:`worth_a_page`."""
    return {v.model: f"{base_url.rstrip('/')}{VIEW_PREFIX}/lake/{quote(relative_path(lake, window, v.model), safe='/=')}"
            for v in verdicts if worth_a_page(v)}  # fmt: skip


@dataclass
class Written:
    """What :func:`write_reports` made: model -> the URL of its HTML page, and what it could not make
    (``{"output": "report", "model": ..., "error": ...}``), which the verdict document and the log say."""

    urls: dict[str, str] = field(default_factory=dict)
    failed: list[dict[str, str]] = field(default_factory=list)


def write_reports(lake: Lake, window: Window, verdicts: list[ModelVerdict], joined_ref: dict[str, Any],
                  resources_ref: dict[str, Any], cfg: ModelwatchConfig, *, sent: dict[str, list[str]], reason: str,
                  links: dict[str, str]) -> Written:  # fmt: skip
    """Write the reports of the verdicts :func:`worth_a_page` as the window's ``reports`` folder (removing an
    earlier run's).

    A report is an optional output: the page is the product. Whatever fails here (reading the rows back, a
    chart, the store) is recorded per model in :class:`Written` and never raised, so ``evaluate`` still
    stores the verdicts and ``post_alert`` still pages.
    """
    chosen = [v for v in verdicts if worth_a_page(v)]
    out = Written()
    if not chosen:
        files: dict[str, bytes] = {}
    else:
        try:
            models = [v.model for v in chosen]
            joined = lake.read_ref(joined_ref, filters=[("model", "in", models)])
            instances = sorted({*joined["instance"].astype(str), ""})
            resources = lake.read_ref(resources_ref, filters=[("instance", "in", instances)])
        except Exception as exc:
            out.failed = [_failure(v.model, exc) for v in chosen]
            return out
        files = {}
        for v in chosen:
            try:
                files |= build_report(v, joined, resources, cfg, window, alert=alert_text(v, sent, reason),
                                      links=links).files()  # fmt: skip
            except Exception as exc:  # one model's page never costs the others theirs
                out.failed.append(_failure(v.model, exc))
    made = [v for v in chosen if f"{file_stem(v.model)}.html" in files]
    try:
        urls = lake.replace_files(REPORTS, window, files)
    except Exception as exc:
        out.failed += [_failure(v.model, exc) for v in made]
        return out
    out.urls = {v.model: urls[f"{file_stem(v.model)}.html"] for v in made}
    return out


def _failure(model: str, exc: BaseException) -> dict[str, str]:
    # bounded: an exception's text may repeat a hostile name or a whole frame
    text = f"{type(exc).__name__}: {exc}"
    return {"output": "report", "model": model, "error": text if len(text) <= 500 else text[:499] + "…"}
