"""The top-level ``plugins/`` folder: one thin module that points at the installed package's plugin.

Its module is executed here as Airflow's plugins manager executes a folder module (a ``SourceFileLoader``
under its file's stem) and its namespace checked with Airflow's own ``is_valid_plugin``: what Airflow would
register from the folder. With the package's ``airflow.plugins`` entry point installed that is nothing (the
entry point registers the plugin, and a second plugin of the same name would be recorded as a plugin import
error); without the entry point it is :class:`modelwatch.plugin.ModelwatchPlugin`; without the package, an
ImportError that says to install it. ``airflow plugins`` and the API server on this folder:
tests/integration/test_plugins_folder.py.
"""

from __future__ import annotations

import importlib.machinery
import importlib.metadata
import importlib.util
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from airflow.plugins_manager import is_valid_plugin

REPO = Path(__file__).resolve().parents[2]
PLUGINS = REPO / "plugins"
MODULE = PLUGINS / "modelwatch_view.py"


def _load(name: str = "modelwatch_view_under_test") -> ModuleType:
    """The folder module, executed as Airflow's plugins manager does (not left in ``sys.modules``)."""
    loader = importlib.machinery.SourceFileLoader(name, str(MODULE))
    spec = importlib.util.spec_from_loader(name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def _registered(module: ModuleType) -> list[Any]:
    """What Airflow registers from a folder module: every AirflowPlugin subclass of its namespace."""
    return [value for value in module.__dict__.values() if is_valid_plugin(value)]


def test_the_folder_holds_one_thin_module_that_shadows_nothing() -> None:
    # Airflow puts the plugins folder on sys.path: a modelwatch.py or modelwatch/ here would shadow the package
    assert sorted(p.name for p in PLUGINS.iterdir() if p.name != "__pycache__") == ["modelwatch_view.py"]
    source = MODULE.read_text(encoding="utf-8")
    assert "from modelwatch.plugin import ModelwatchPlugin" in source
    assert len(source.splitlines()) < 80, "the plugins folder points at the package; the view lives in src/"


def test_the_module_names_the_class_the_entry_point_names() -> None:
    entry = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["entry-points"]
    module = _load()
    assert entry["airflow.plugins"] == {"modelwatch": f"{module.PLUGIN_MODULE}:{module.PLUGIN_CLASS}"}


def test_with_the_package_installed_the_entry_point_registers_the_plugin_and_the_folder_nothing() -> None:
    eps = importlib.metadata.entry_points(group="airflow.plugins")
    assert "modelwatch.plugin:ModelwatchPlugin" in [ep.value for ep in eps], (
        "make install installs the package"
    )
    module = _load()
    assert module.registered_by_entry_point()
    assert _registered(module) == []


def test_without_the_entry_point_the_folder_registers_the_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    from modelwatch.plugin import ModelwatchPlugin

    # the package importable but not installed as a distribution (e.g. from a PYTHONPATH): no entry point
    real = importlib.metadata.entry_points

    def without_modelwatch(**params: Any) -> Any:
        return [ep for ep in real(**params) if ep.module != "modelwatch.plugin"]

    monkeypatch.setattr(importlib.metadata, "entry_points", without_modelwatch)
    module = _load()
    assert not module.registered_by_entry_point()
    assert _registered(module) == [ModelwatchPlugin]


def test_without_the_package_loading_fails_saying_to_install_it(tmp_path: Path) -> None:
    # `python -S`: no site-packages, so neither the package nor its entry point (Airflow records the error
    # under the module's path and shows it among the plugin import errors)
    code = (
        "import importlib.machinery, importlib.util, sys\n"
        f"loader = importlib.machinery.SourceFileLoader('modelwatch_view', {str(MODULE)!r})\n"
        "spec = importlib.util.spec_from_loader('modelwatch_view', loader)\n"
        "try:\n"
        "    loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "except ImportError as e:\n"
        "    print(type(e).__name__, e)\n"
        "    sys.exit(3)\n"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"},
    )  # fmt: skip
    assert out.returncode == 3, out.stdout + out.stderr
    assert out.stdout.startswith("ImportError the modelwatch package is not installed"), out.stdout
    assert "pip install" in out.stdout
