"""The Grafana dashboard: generated from thresholds.yaml, the pipeline's own PromQL, the published verdict
series, valid PromQL, and valid against Grafana's dashboard schema.

The schema: Grafana's dashboard kind and the panel and Prometheus query schemas, as the Python models that
``grafana-foundation-sdk`` (PyPI, Apache-2.0, requirements.txt) generates from Grafana's CUE kinds with its
code generator ``cog``; version ``1769699379!11.6.0`` is generated for Grafana 11.6 (classic dashboard
model, schemaVersion 41), https://github.com/grafana/grafana-foundation-sdk. Chosen over a JSON schema
file vendored into the repository because Grafana publishes no standalone JSON schema of the classic model
(the kinds are CUE in grafana/grafana, AGPL-licensed), and the SDK's models are Grafana's own schema, kept
current by Grafana, installed like every other dependency. A check is two-fold (:func:`schema_problems`):
every key survives decoding into the models and encoding back (a key the schema does not know is dropped,
so it is reported), and every decoded value has the type the model declares (enums and literals by
value, numbers, strings, lists, nested objects). The SDK is imported here only, never by a DAG.
"""

from __future__ import annotations

import copy
import enum
import json
import re
import shutil
import subprocess
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelwatch import publish
from modelwatch.config import ModelwatchConfig, load_config
from modelwatch.dashboard import (
    DATASOURCE_UID,
    RESOURCES_ROW,
    VERDICTS_ROW,
    dashboard,
    grafana_unit,
    main,
    render,
)
from modelwatch.promql import analyse

REPO = Path(__file__).resolve().parents[2]
THRESHOLDS = REPO / "include" / "thresholds.yaml"
LIVE_THRESHOLDS = REPO / "include" / "thresholds.live.yaml"
COMMITTED = REPO / "compose" / "grafana" / "dashboards" / "modelwatch.json"
PROVISIONING = REPO / "compose" / "grafana" / "provisioning"
REGENERATE = (
    "python -m modelwatch.dashboard --config include/thresholds.yaml "
    "--out compose/grafana/dashboards/modelwatch.json"
)
#: every series name modelwatch.publish defines (its constants; never retyped here)
PUBLISHED = frozenset(
    v for k, v in vars(publish).items() if k.isupper() and isinstance(v, str) and v.startswith("modelwatch_")
)


@pytest.fixture(scope="module")
def cfg() -> ModelwatchConfig:
    return load_config(THRESHOLDS)


@pytest.fixture(scope="module")
def board(cfg: ModelwatchConfig) -> dict[str, Any]:
    return dashboard(cfg)


def rows(board: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Row title -> its panels (the classic model lists a row, then the panels under it)."""
    out: dict[str, list[dict[str, Any]]] = {}
    current: list[dict[str, Any]] | None = None
    for panel in board["panels"]:
        if panel["type"] == "row":
            current = out.setdefault(panel["title"], [])
            current.extend(panel.get("panels", []))  # a collapsed row holds its panels
        else:
            assert current is not None, f"panel {panel.get('title')!r} is above every row"
            current.append(panel)
    return out


def exprs(board: dict[str, Any]) -> list[str]:
    return [t["expr"] for panels in rows(board).values() for p in panels for t in p.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    """The metric names of an expression's vector selectors; a selector without one is reported as is."""
    selectors, _ = analyse(expr)
    return {(m.group(0) if (m := re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", s)) else s) for s in selectors}


# -- one source of truth ---------------------------------------------------------------------------------


def test_committed_dashboard_is_generated_from_thresholds_yaml(cfg: ModelwatchConfig) -> None:
    assert COMMITTED.is_file(), f"{COMMITTED.relative_to(REPO)} is missing: run `{REGENERATE}`"
    committed = COMMITTED.read_text(encoding="utf-8")
    assert json.loads(committed) == dashboard(cfg), (
        f"{COMMITTED.relative_to(REPO)} differs from what include/thresholds.yaml gives: "
        f"run `{REGENERATE}` and commit the file"
    )
    assert committed == render(cfg), f"same content, other formatting: run `{REGENERATE}`"


@pytest.mark.parametrize("config", [THRESHOLDS, LIVE_THRESHOLDS], ids=["thresholds", "live"])
def test_every_configured_query_is_one_panel_with_its_promql_unit_and_threshold(config: Path) -> None:
    cfg = load_config(config)
    panels = rows(dashboard(cfg))[RESOURCES_ROW]
    queries = {q.promql: q for q in cfg.prometheus.queries}
    shown = [t["expr"] for p in panels for t in p["targets"]]
    assert sorted(shown) == sorted(queries), "the resource panels are not exactly the configured queries"
    for panel in panels:
        (target,) = panel["targets"]
        query = queries[target["expr"]]  # exactly its PromQL, byte for byte
        assert panel["title"] == query.name
        assert panel["type"] == "timeseries"
        defaults = panel["fieldConfig"]["defaults"]
        assert defaults["unit"] == grafana_unit(query.unit)
        steps = defaults["thresholds"]["steps"]
        style = defaults["custom"]["thresholdsStyle"]["mode"]
        if query.saturation is None:
            assert len(steps) == 1 and style == "off", query.name
        else:
            assert steps[-1] == {"color": "red", "value": query.saturation}, query.name
            assert style == "line", query.name
        # The queries aggregate by the instance label: one legend entry per instance.
        assert cfg.prometheus.instance_label in target["legendFormat"]


def test_the_body_sizes_are_panels_in_bytes(board: dict[str, Any]) -> None:
    panels = {p["title"]: p for p in rows(board)[RESOURCES_ROW]}
    for name, family in (("request_bytes", "http_request_size_bytes"), ("response_bytes", "http_response_size_bytes")):
        assert panels[name]["fieldConfig"]["defaults"]["unit"] == "bytes"
        assert metric_names(panels[name]["targets"][0]["expr"]) == {f"{family}_sum", f"{family}_count"}


def test_a_preset_panel_names_its_series_by_the_presets_instance_key() -> None:
    raw = yaml.safe_load(THRESHOLDS.read_text())
    raw["prometheus"]["presets"] = [{"preset": "seldon_v2", "name": "sv2", "metrics": ["memory"]}]
    panels = {p["title"]: p for p in rows(dashboard(ModelwatchConfig.model_validate(raw)))[RESOURCES_ROW]}
    assert panels["sv2_memory"]["targets"][0]["legendFormat"] == "{{server}}-{{server_replica}}"


def test_units_map_to_grafana_units() -> None:
    assert grafana_unit("ratio") == "percentunit"
    assert grafana_unit("s") == "s"
    assert grafana_unit("bytes/s") == "Bps"
    assert grafana_unit("req/s") == "reqps"
    assert grafana_unit("per cpu") == "suffix: per cpu"


def test_verdict_panels_read_only_the_published_series(board: dict[str, Any]) -> None:
    assert {publish.VERDICT_INFO, publish.DEGRADED, publish.SLOW_SHARE, publish.DRIFT_PSI} <= PUBLISHED
    verdicts = rows(board)[VERDICTS_ROW]
    assert verdicts
    used: set[str] = set()
    for panel in verdicts:
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names and names <= PUBLISHED, (
                f"panel {panel['title']!r} reads {sorted(names - PUBLISHED)}, not series of modelwatch.publish"
            )
            used |= names
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["query"])
            assert m, variable["query"]
            assert metric_names(m.group(1)) <= PUBLISHED, variable["query"]
    missing = {publish.VERDICT_INFO, publish.DEGRADED, publish.QUALITY_REGRESSED, publish.SLOW_SHARE} - used
    assert not missing, f"no panel shows {sorted(missing)}"


def test_every_expr_parses_as_promql(board: dict[str, Any], tmp_path: Path) -> None:
    # A real parser: promtool (Prometheus 2.42) checks a rules file with one recording rule per expression.
    exe = shutil.which("promtool")
    if exe is None:
        pytest.skip("`promtool` is not installed (Debian: apt-get install prometheus)")
    live = dashboard(load_config(LIVE_THRESHOLDS))
    variable_selectors = [
        re.fullmatch(r"label_values\((.+),\s*\w+\)", v["query"]).group(1)  # type: ignore[union-attr]
        for v in board["templating"]["list"]
        if v["type"] == "query"
    ]
    all_exprs = sorted({*exprs(board), *exprs(live), *variable_selectors})
    rules = {
        "groups": [
            {
                "name": "modelwatch-dashboard",
                "rules": [{"record": f"modelwatch_dashboard:expr_{i}", "expr": e} for i, e in enumerate(all_exprs)],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False), encoding="utf-8")
    proc = subprocess.run([exe, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(all_exprs)} rules found" in proc.stdout, proc.stdout

    path.write_text(yaml.safe_dump({"groups": [{"name": "x", "rules": [{"record": "x", "expr": "sum by (("}]}]}))
    bad = subprocess.run([exe, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0, "promtool accepted broken PromQL: the check proves nothing"


# -- Grafana's schema ------------------------------------------------------------------------------------


def _sdk() -> tuple[Any, Any, Any]:
    from grafana_foundation_sdk.cog import encoder, plugins, runtime
    from grafana_foundation_sdk.models.dashboard import Dashboard

    plugins.register_default_plugins()  # panel options and queries decode into their own models
    return Dashboard, encoder.JSONEncoder, runtime.UnknownDataquery


def _encode(model: Any) -> Any:
    return json.loads(json.dumps(model, cls=_sdk()[1]))


def _lost(original: Any, encoded: Any, path: str) -> Iterator[str]:
    """What of ``original`` did not survive the models (keys the schema does not know, changed values)."""
    if isinstance(original, dict):
        if not isinstance(encoded, dict):
            yield f"{path}: an object became {encoded!r}"
            return
        for key, value in original.items():
            if key not in encoded:
                yield f"{path}.{key}: not a field of Grafana's schema here"
            else:
                yield from _lost(value, encoded[key], f"{path}.{key}")
    elif isinstance(original, list):
        if not isinstance(encoded, list) or len(encoded) != len(original):
            yield f"{path}: a list became {encoded!r}"
            return
        for i, (a, b) in enumerate(zip(original, encoded, strict=True)):
            yield from _lost(a, b, f"{path}[{i}]")
    elif original != encoded or type(original) is bool and type(encoded) is not bool:
        yield f"{path}: {original!r} became {encoded!r}"


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and callable(getattr(tp, "from_json", None))


def _type_problems(value: Any, tp: Any, path: str) -> Iterator[str]:
    """Where ``value`` (decoded by the models) does not have the type ``tp`` the schema declares."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is object:
        if _is_model(type(value)):
            yield from _model_problems(value, path)
    elif origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return
        branches = [list(_type_problems(value, a, path)) for a in args if a is not type(None)]
        if all(branches):
            yield f"{path}: {value!r} is none of {tp}: " + "; ".join(b[0] for b in branches)
    elif value is None:
        yield f"{path}: null where the schema wants {tp}"
    elif origin is typing.Literal:
        if value not in args:
            yield f"{path}: {value!r} is not one of {args}"
    elif origin is list:
        if not isinstance(value, list):
            yield f"{path}: {value!r} is not a list"
        else:
            for i, item in enumerate(value):
                yield from _type_problems(item, args[0], f"{path}[{i}]")
    elif origin is dict:
        if not isinstance(value, dict):
            yield f"{path}: {value!r} is not an object"
        else:
            for key, item in value.items():
                yield from _type_problems(item, args[1], f"{path}.{key}")
    elif tp is bool:
        if not isinstance(value, bool):
            yield f"{path}: {value!r} is not a boolean"
    elif tp in (int, float):
        if isinstance(value, bool) or not isinstance(value, int | float) or tp is int and not float(value).is_integer():
            yield f"{path}: {value!r} is not {'an integer' if tp is int else 'a number'}"
    elif tp is str:
        if not isinstance(value, str):
            yield f"{path}: {value!r} is not a string"
    elif isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            tp(value)
        except ValueError:
            yield f"{path}: {value!r} is not one of {[m.value for m in tp]}"
    elif _is_model(tp) or (isinstance(tp, type) and tp.__name__ == "Dataquery"):
        if isinstance(value, _sdk()[2]):
            yield f"{path}: a query of no known datasource type (set the panel's datasource type)"
        elif isinstance(value, dict) and _is_model(tp):
            # fields the models keep as raw JSON (a panel's transformations): decode them here
            decoded = tp.from_json(value)
            yield from _lost(value, _encode(decoded), path)
            yield from _model_problems(decoded, path)
        elif isinstance(value, tp):
            yield from _model_problems(value, path)
        else:
            yield f"{path}: {value!r} is not a {tp.__name__}"
    elif isinstance(tp, type) and not isinstance(value, tp):
        yield f"{path}: {value!r} is not a {tp.__name__}"


def _model_problems(model: Any, path: str) -> Iterator[str]:
    for name, tp in typing.get_type_hints(type(model)).items():
        yield from _type_problems(getattr(model, name), tp, f"{path}.{name}")


def schema_problems(board: dict[str, Any]) -> list[str]:
    """Where ``board`` departs from Grafana's dashboard schema (empty: it conforms)."""
    dashboard_model = _sdk()[0]
    decoded = dashboard_model.from_json(copy.deepcopy(board))
    return [*_lost(board, _encode(decoded), "dashboard"), *_model_problems(decoded, "dashboard")]


@pytest.mark.parametrize("config", [THRESHOLDS, LIVE_THRESHOLDS], ids=["thresholds", "live"])
def test_dashboard_conforms_to_grafanas_schema(config: Path) -> None:
    problems = schema_problems(dashboard(load_config(config)))
    assert not problems, "\n".join(problems)


def test_committed_file_conforms_to_grafanas_schema() -> None:
    problems = schema_problems(json.loads(COMMITTED.read_text(encoding="utf-8")))
    assert not problems, "\n".join(problems)


def test_schema_check_finds_what_grafana_would_not_read(board: dict[str, Any]) -> None:
    def problems_after(change: Any) -> list[str]:
        bad = copy.deepcopy(board)
        change(bad)
        return schema_problems(bad)

    resource = next(i for i, p in enumerate(board["panels"]) if p["type"] == "timeseries")

    def unknown_key(b: dict[str, Any]) -> None:
        b["panels"][resource]["fieldConfig"]["defaults"]["custom"]["thresholdStyle"] = {"mode": "line"}

    def bad_enum(b: dict[str, Any]) -> None:
        b["panels"][resource]["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] = "dashed-line"

    def bad_type(b: dict[str, Any]) -> None:
        b["panels"][resource]["gridPos"]["w"] = "12"

    def bad_query_field(b: dict[str, Any]) -> None:
        b["panels"][resource]["targets"][0]["query"] = b["panels"][resource]["targets"][0].pop("expr")

    def bad_variable(b: dict[str, Any]) -> None:
        b["templating"]["list"][0]["type"] = "prometheus"

    for change, where in [
        (unknown_key, "custom.thresholdStyle"),
        (bad_enum, "dashed-line"),
        (bad_type, "'12'"),
        (bad_query_field, "query"),
        (bad_variable, "'prometheus'"),
    ]:
        found = problems_after(change)
        assert any(where in p for p in found), (change.__name__, found)
    assert not schema_problems(board)


# -- provisioning and the command line -------------------------------------------------------------------


def test_datasource_variable_selects_the_provisioned_datasource(board: dict[str, Any]) -> None:
    provisioned = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text(encoding="utf-8"))
    (source,) = provisioned["datasources"]
    assert (source["type"], source["uid"]) == ("prometheus", DATASOURCE_UID)
    variable = next(v for v in board["templating"]["list"] if v["type"] == "datasource")
    assert variable["query"] == "prometheus"
    assert variable["current"]["value"] == DATASOURCE_UID
    for panels in rows(board).values():
        for panel in panels:
            refs = [panel["datasource"], *(t["datasource"] for t in panel["targets"])]
            assert all(r == {"type": "prometheus", "uid": "${" + variable["name"] + "}"} for r in refs), panel["title"]


def test_panel_ids_and_grid_positions(board: dict[str, Any]) -> None:
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    boxes = set()
    for p in board["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        for dy in range(g["h"]):
            for dx in range(g["w"]):
                cell = (g["x"] + dx, g["y"] + dy)
                assert cell not in boxes, f"panel {p['title']!r} overlaps another at {cell}"
                boxes.add(cell)
    assert board["uid"] == "modelwatch" and board["title"] == "modelwatch"
    assert board["schemaVersion"] == 41


def test_cli_writes_the_committed_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sub" / "modelwatch.json"
    assert main(["--config", str(THRESHOLDS), "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == COMMITTED.read_text(encoding="utf-8")
    assert main(["--config", str(THRESHOLDS)]) == 0
    assert capsys.readouterr().out == COMMITTED.read_text(encoding="utf-8")
