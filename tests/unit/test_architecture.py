"""The package's structure, drawn from its imports: one direction, no cycle.

Every import in src/modelwatch (module level, inside functions, and under TYPE_CHECKING alike: each is an
arrow a reader follows) must point to a module of a lower rank:

    tasks (DAG wiring, provider)  ->  logic (extract, correlate, evaluate, alerting)  ->  transport (hooks)
    ->  storage and configuration  ->  foundations (errors, time grid, schemas, text)

and along the data path (extract -> correlate -> evaluate -> alerting) a stage never reaches forward.
A strict order has no cycle by construction; the test also names any cycle it finds, for the message.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "modelwatch"

#: rank of each module: an import must go to a strictly lower rank
RANKS = {
    # foundations: no modelwatch import but each other's below them
    "modelwatch.errors": 0, "modelwatch.connections": 0, "modelwatch.timegrid": 0, "modelwatch.text": 0,
    "modelwatch.stats": 0, "modelwatch.promql": 0, "modelwatch.publish": 0, "modelwatch.serving": 0,
    "modelwatch.schema": 1, "modelwatch.window": 1,
    # storage
    "modelwatch.storage": 2, "modelwatch.config": 2,  # config names the logged columns by schema's rule
    # transport
    "modelwatch.hooks.base": 3,
    "modelwatch.hooks.prometheus": 4, "modelwatch.hooks.alertmanager": 4, "modelwatch.hooks.mlflow": 4,
    "modelwatch.hooks.pushgateway": 4, "modelwatch.hooks.cloudwatch": 4,
    "modelwatch.hooks": 5,
    # logic, in data-flow order
    "modelwatch.extract": 6, "modelwatch.fanout": 6, "modelwatch.verdict": 6, "modelwatch.correlate": 6,
    "modelwatch.cloudwatch": 6,
    "modelwatch.quality": 7, "modelwatch.drift": 7,
    "modelwatch.evaluate": 8,
    "modelwatch.alerting": 9, "modelwatch.report": 9,
    # tasks: what Airflow calls
    "modelwatch.notify": 10, "modelwatch.provider": 10, "modelwatch.monitoring_dag": 11,
    "modelwatch.replay": 11, "modelwatch.tasks": 12, "modelwatch.plugin": 12,
    # the Grafana dashboard from the configuration and the published series' names (no DAG imports it)
    "modelwatch.dashboard": 11,
    # Prometheus rules and the AMP alert manager definition from the configuration (no DAG imports it)
    "modelwatch.rules": 11,
    "modelwatch": 13,
}  # fmt: skip
LAYERS = {0: "foundation", 1: "foundation", 2: "storage", 3: "transport", 4: "transport", 5: "transport",
          6: "logic", 7: "logic", 8: "logic", 9: "logic", 10: "tasks", 11: "tasks", 12: "tasks", 13: "package"}  # fmt: skip


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every modelwatch module ``path`` imports, wherever the import statement sits."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("modelwatch"):
            found.add(node.module)
            for alias in node.names:  # "from modelwatch import connections" imports a module
                if f"{node.module}.{alias.name}" in RANKS:
                    found.add(f"{node.module}.{alias.name}")
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("modelwatch")}
    return found


GRAPH = {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_has_a_place_in_the_structure() -> None:
    assert set(GRAPH) == set(RANKS), (
        f"modules without a rank: {sorted(set(GRAPH) - set(RANKS))}; ranks of missing modules: "
        f"{sorted(set(RANKS) - set(GRAPH))}. Give a new module its rank in tests/unit/test_architecture.py"
    )


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_down(module: str) -> None:
    wrong = sorted(
        f"{module} ({LAYERS[RANKS[module]]}, rank {RANKS[module]}) imports {target} "
        f"({LAYERS[RANKS.get(target, 99)] if target in RANKS else 'unknown'}, rank {RANKS.get(target)})"
        for target in GRAPH[module] - {module}
        if target != "modelwatch" and RANKS.get(target, 99) >= RANKS[module]
    )
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle() -> None:
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(GRAPH.get(m, set()) - {m, "modelwatch"}):
            if state.get(n) == 1:
                return [*path[path.index(n):], n]
            if n not in state and (cycle := visit(n)):
                return cycle
        path.pop()
        state[m] = 2
        return None

    for m in sorted(GRAPH):
        if m not in state:
            cycle = visit(m)
            assert cycle is None, " -> ".join(cycle or [])


def test_transport_never_imports_parsing_or_logic() -> None:
    # the hooks send requests and turn error answers into exceptions; frames are built by extract
    for module in (m for m in GRAPH if m.startswith("modelwatch.hooks")):
        assert all(LAYERS[RANKS[t]] in ("foundation", "transport") for t in GRAPH[module] - {"modelwatch"}), (
            module, sorted(GRAPH[module])
        )
