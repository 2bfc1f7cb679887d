"""The Grafana dashboard of modelwatch, built from the configuration it judges with.

One source of truth: every resource and serving panel shows exactly one query of ``prometheus.queries``
(its PromQL unchanged, its unit, its saturation threshold as a red line), so the dashboard shows what the
pipeline read; the verdict panels show the series :mod:`modelwatch.publish` names (the Pushgateway
publisher's series), filtered by the ``dag`` and ``model`` template variables.

There is no ``instance`` variable: filtering a panel by instance would change its PromQL, and the panels
must run the pipeline's queries as they are (each answers one series per instance, in the legend).

:func:`dashboard` is pure (a dict in Grafana's classic dashboard JSON model, schemaVersion 41: Grafana 11.6
and 12 read it as is); ``python -m modelwatch.dashboard --out FILE`` writes it with sorted keys, so the
file changes only when the configuration does. The committed copy for docker compose is
``compose/grafana/dashboards/modelwatch.json`` (docs/metrics-and-dashboards.md, "The Grafana dashboard").
Standard library and :mod:`modelwatch.config` only; no DAG imports this module.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from modelwatch import publish
from modelwatch.config import ModelwatchConfig, QueryConfig, load_config

#: the dashboard's uid: its URL (/d/modelwatch) and what a re-import replaces
UID = "modelwatch"
TITLE = "modelwatch"
#: the classic dashboard model's version in Grafana 11.6 and 12 (Grafana migrates older ones on load)
SCHEMA_VERSION = 41
#: uid of the Prometheus datasource that compose/grafana/provisioning/datasources/prometheus.yml creates;
#: the ``datasource`` variable selects it by default (another Grafana offers its own Prometheus sources)
DATASOURCE_UID = "modelwatch-prometheus"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
#: row titles
RESOURCES_ROW = "Resources and serving"
VERDICTS_ROW = "Verdicts"

#: thresholds.yaml ``unit`` -> Grafana unit id; any other unit is shown as a suffix ("1.2 per cpu")
UNITS = {
    "": "none",
    "ratio": "percentunit",
    "percent": "percent",
    "s": "s",
    "ms": "ms",
    "bytes": "bytes",
    "bytes/s": "Bps",
    "req/s": "reqps",
    "ops/s": "ops",
}
_FILTER = '{dag=~"$dag", model=~"$model"}'
_GRID_WIDTH = 24


def grafana_unit(unit: str) -> str:
    """Grafana's unit id for a ``unit`` of thresholds.yaml (``suffix: <unit>`` when it has none)."""
    return UNITS.get(unit.strip(), f"suffix: {unit.strip()}")


def _thresholds(line: float | None) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    if line is not None:
        steps.append({"color": "red", "value": line})
    return {"mode": "absolute", "steps": steps}


def _target(expr: str, legend: str, ref_id: str = "A", **extra: Any) -> dict[str, Any]:
    return {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": ref_id, **extra}


def _timeseries(
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    unit: str,
    line: float | None,
    *,
    min_val: float | None = None,
) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "custom": {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 0,
            "showPoints": "never",
            "spanNulls": False,
            "thresholdsStyle": {"mode": "off" if line is None else "line"},
        },
        "unit": unit,
        "thresholds": _thresholds(line),
        "color": {"mode": "palette-classic"},
    }
    if min_val is not None:
        defaults["min"] = min_val
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True, "calcs": []},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def _legend(key: str | tuple[str, ...]) -> str:
    """The legend of a query's series: its instance, as the labels of its instance key name it."""
    labels = [key] if isinstance(key, str) else list(key)
    return "-".join("{{" + label + "}}" for label in labels)


def resource_panel(query: QueryConfig, instance_label: str = "instance") -> dict[str, Any]:
    """The timeseries panel of one configured query: its PromQL as is, one series per instance."""
    about = query.description or query.name
    if query.saturation is not None:
        about += f". Red line: the saturation threshold ({query.saturation:g} {query.unit}) of thresholds.yaml."
    panel = _timeseries(
        query.name,
        about,
        [_target(query.promql, _legend(query.instance_key(instance_label)))],
        grafana_unit(query.unit),
        query.saturation,
    )
    return panel


def _state_panel(title: str, description: str, exprs: list[tuple[str, str]]) -> dict[str, Any]:
    """A state-timeline of 0/1 series: 0 green ``no``, 1 red ``yes``."""
    return {
        "type": "state-timeline",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": [_target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(exprs)],
        "fieldConfig": {
            "defaults": {
                "custom": {"fillOpacity": 80, "lineWidth": 0},
                "mappings": [
                    {
                        "type": "value",
                        "options": {
                            "0": {"color": "green", "index": 0, "text": "no"},
                            "1": {"color": "red", "index": 1, "text": "yes"},
                        },
                    }
                ],
                "thresholds": _thresholds(None),
                "color": {"mode": "thresholds"},
            },
            "overrides": [],
        },
        "options": {
            "showValue": "never",
            "rowHeight": 0.8,
            "mergeValues": True,
            "alignValue": "left",
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": False, "calcs": []},
            "tooltip": {"mode": "single", "sort": "none"},
        },
    }


def verdict_panels(cfg: ModelwatchConfig) -> list[dict[str, Any]]:
    """Panels of the series :mod:`modelwatch.publish` names."""
    verdicts = {
        "type": "table",
        "title": "Verdict per model (newest window)",
        "description": (
            f"{publish.VERDICT_INFO}: one row per model and DAG, its labels say the verdict, the quality "
            "and the drift of the newest window published."
        ),
        "datasource": DATASOURCE,
        "targets": [
            _target(
                f"{publish.VERDICT_INFO}{_FILTER} == 1", "", format="table", instant=True, range=False
            )
        ],
        "fieldConfig": {
            "defaults": {"thresholds": _thresholds(None), "color": {"mode": "thresholds"}},
            "overrides": [],
        },
        "options": {"showHeader": True, "cellHeight": "sm", "frameIndex": 0},
        "transformations": [
            {
                "id": "organize",
                "options": {
                    "excludeByName": {"Time": True, "Value": True, "__name__": True, "instance": True, "job": True},
                    "indexByName": {"dag": 1, "model": 0, "verdict": 2, "quality": 3, "drift": 4},
                    "renameByName": {},
                },
            }
        ],
    }
    states = _state_panel(
        "Degraded and quality regressed",
        f"{publish.DEGRADED} (slow predictions that saturated resources explain) and "
        f"{publish.QUALITY_REGRESSED} per model over time: red while 1.",
        [
            (f"{publish.DEGRADED}{_FILTER}", "{{model}} degraded ({{dag}})"),
            (f"{publish.QUALITY_REGRESSED}{_FILTER}", "{{model}} quality regressed ({{dag}})"),
        ],
    )
    slow_line = cfg.evaluation.min_slow_share
    slow = _timeseries(
        "Slow share",
        f"{publish.SLOW_SHARE}: share of the model's judged predictions in the window that were slow. "
        f"Red line: evaluation.min_slow_share ({slow_line:g}), the least share judged.",
        [_target(f"{publish.SLOW_SHARE}{_FILTER}", "{{model}} ({{dag}})")],
        "percentunit",
        slow_line,
        min_val=0,
    )
    predictions = _timeseries(
        "Predictions per window",
        f"{publish.PREDICTIONS}: predictions of the model in the window.",
        [_target(f"{publish.PREDICTIONS}{_FILTER}", "{{model}} ({{dag}})")],
        "short",
        None,
        min_val=0,
    )
    psis = sorted({v.psi for v in cfg.drift.values.values()})
    psi_line = psis[0] if len(psis) == 1 else None
    psi_about = (
        f"Red line: drift PSI threshold ({psi_line:g}) of thresholds.yaml."
        if psi_line is not None
        else "Thresholds per value (drift.values): " + ", ".join(f"{k} {v.psi:g}" for k, v in cfg.drift.values.items())
    )
    drift = _timeseries(
        "Drift PSI by value",
        f"{publish.DRIFT_PSI}: population stability index of each drift value against the reference days. "
        + psi_about,
        [_target(f"{publish.DRIFT_PSI}{_FILTER}", "{{model}} {{value}} ({{dag}})")],
        "none",
        psi_line,
        min_val=0,
    )
    age = {
        "type": "stat",
        "title": "Age of the newest published window",
        "description": f"time() - {publish.WINDOW_END}: how long ago the newest window published ended, per DAG.",
        "datasource": DATASOURCE,
        "targets": [_target(f'time() - {publish.WINDOW_END}{{dag=~"$dag"}}', "{{dag}}")],
        "fieldConfig": {
            "defaults": {"unit": "s", "thresholds": _thresholds(None), "color": {"mode": "thresholds"}},
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "none",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": "auto",
        },
    }
    return [verdicts, states, slow, predictions, drift, age]


def _variables() -> list[dict[str, Any]]:
    def query_variable(name: str, label: str, query: str) -> dict[str, Any]:
        return {
            "type": "query",
            "name": name,
            "label": label,
            "datasource": DATASOURCE,
            "query": query,
            "refresh": 2,
            "sort": 1,
            "multi": True,
            "includeAll": True,
            "allValue": ".*",
            "current": {"text": "All", "value": "$__all"},
            "options": [],
            "regex": "",
            "hide": 0,
        }

    return [
        {
            "type": "datasource",
            "name": "datasource",
            "label": "Prometheus",
            "query": "prometheus",
            "current": {"text": "Prometheus", "value": DATASOURCE_UID},
            "options": [],
            "regex": "",
            "refresh": 1,
            "hide": 0,
        },
        query_variable("dag", "DAG", f"label_values({publish.WINDOW_END}, dag)"),
        query_variable("model", "Model", f'label_values({publish.VERDICT_INFO}{{dag=~"$dag"}}, model)'),
    ]


def _layout(rows: list[tuple[str, list[dict[str, Any]], int]]) -> list[dict[str, Any]]:
    """Rows (title, panels, panels per line) on Grafana's 24-column grid, ids from 1 in order."""
    out: list[dict[str, Any]] = []
    y = 0
    for title, panels, per_line in rows:
        out.append({
            "type": "row",
            "title": title,
            "collapsed": False,
            "panels": [],
            "gridPos": {"h": 1, "w": _GRID_WIDTH, "x": 0, "y": y},
        })  # fmt: skip
        y += 1
        width, height = _GRID_WIDTH // per_line, 8
        for i, panel in enumerate(panels):
            panel["gridPos"] = {"h": height, "w": width, "x": (i % per_line) * width, "y": y + (i // per_line) * height}
        y += -(-len(panels) // per_line) * height
        out.extend(panels)
    for n, panel in enumerate(out, start=1):
        panel["id"] = n
    return out


def dashboard(cfg: ModelwatchConfig) -> dict[str, Any]:
    """The dashboard model (Grafana's classic JSON, schemaVersion 41) for ``cfg``."""
    label = cfg.prometheus.instance_label
    resources = [resource_panel(q, label) for q in cfg.prometheus.queries]
    return {
        "uid": UID,
        "title": TITLE,
        "description": (
            "The series modelwatch judges (prometheus.queries of its thresholds.yaml) and the verdicts it "
            "publishes. Generated by `python -m modelwatch.dashboard`: edit the configuration, not this dashboard."
        ),
        "tags": ["modelwatch"],
        "schemaVersion": SCHEMA_VERSION,
        "editable": True,
        "graphTooltip": 1,
        "timezone": "browser",
        "time": {"from": "now-24h", "to": "now"},
        "refresh": "1m",
        "templating": {"list": _variables()},
        "annotations": {"list": []},
        "links": [],
        "panels": _layout([(RESOURCES_ROW, resources, 2), (VERDICTS_ROW, verdict_panels(cfg), 2)]),
    }


def render(cfg: ModelwatchConfig) -> str:
    """The dashboard as the committed file holds it: indented JSON, keys sorted, a final newline."""
    return json.dumps(dashboard(cfg), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m modelwatch.dashboard",
        description="Write the Grafana dashboard of a modelwatch configuration (its queries and verdict series).",
    )
    parser.add_argument(
        "--config", type=Path, default=None, help="the configuration (default: $MODELWATCH_CONFIG, else include/thresholds.yaml)"
    )
    parser.add_argument("--out", default="-", help="file to write (default: standard output)")
    args = parser.parse_args(argv)
    text = render(load_config(args.config))
    if args.out == "-":
        sys.stdout.write(text)
    else:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
