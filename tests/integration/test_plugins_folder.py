"""Airflow's plugins folder (``plugins/``) beside the installed package, as a user and docker-compose.yaml run it.

The package registers the model-health view through its ``airflow.plugins`` entry point, and the folder holds
a thin module that points at it (plugins/modelwatch_view.py, whose docstring says why it binds nothing while
the entry point is there). With both, Airflow must list the plugin once, from one source, with no plugin
import error (a second plugin of the same name would be one, shown to every UI user):

- the real ``airflow plugins --output json`` of the venv, AIRFLOW_HOME in ``tmp_path``, ``[core] plugins_folder``
  the repository's ``plugins/``, nothing of the repository on ``PYTHONPATH`` (modelwatch from its installed,
  editable distribution);
- Airflow's plugins manager in a fresh interpreter: the folder module was loaded, one FastAPI app (the
  view's) and one external view registered, no import error; also without the entry point (the folder alone
  registers it), and, for contrast, a folder module that imports the class unconditionally (the import error
  that design would cost, which is why the module does not);
- the real API server on a compose-like layout: AIRFLOW_HOME with the repository's ``plugins/`` at
  ``$AIRFLOW_HOME/plugins`` (the image's default plugins folder, where compose mounts it; a symlink here) and
  no ``plugins_folder`` setting; ``/modelwatch/`` answers 401 without a login and the calendar with one, and
  ``/api/v2/plugins`` lists ``modelwatch`` once. About 20 s on two cores (migrate, the server's start).

The folder module's branches one by one, in this interpreter: tests/unit/test_plugins_folder_module.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from http_helpers import http_get
from polling import wait_until

from devstack.airflow_services import ADMIN_USER, AirflowApi, AirflowConfig, airflow_binary, free_port
from devstack.processes import stop_session_leader
from devstack.stack import DEFAULT_PORTS

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PLUGINS = REPO / "plugins"
MODULE = PLUGINS / "modelwatch_view.py"
ENTRY_POINT = "modelwatch.plugin:ModelwatchPlugin"
FASTAPI_APP = {
    "app": "fastapi.applications.FastAPI",
    "url_prefix": "/modelwatch",
    "name": "modelwatch model health",
}
EXTERNAL_VIEW = {
    "name": "Model health",
    "href": "modelwatch/",
    "destination": "nav",
    "url_route": "model-health",
}
START_TIMEOUT = 180.0

# Airflow's plugins manager in a fresh interpreter: what every Airflow process loads. argv[1] "hide" hides
# the package's entry point from both Airflow's and the folder module's view of the installed distributions
# (the package importable without being installed as one, e.g. from a PYTHONPATH).
_PROBE = """
import json, sys
if sys.argv[1] == "hide":
    import importlib.metadata as md
    from airflow._shared import module_loading
    every = md.entry_points
    md.entry_points = lambda **kw: [ep for ep in every(**kw) if ep.module != "modelwatch.plugin"]
    grouped = module_loading._get_grouped_entry_points()  # cached: Airflow reads this very mapping
    grouped["airflow.plugins"] = [(ep, d) for ep, d in grouped["airflow.plugins"] if ep.module != "modelwatch.plugin"]
from airflow import plugins_manager
import modelwatch.plugin
info = plugins_manager.get_plugin_info()
apps, _ = plugins_manager.get_fastapi_plugins()
views, _ = plugins_manager._get_ui_plugins()
folder = {name: getattr(m, "__file__", None) for name, m in sys.modules.items() if "." not in name and name.endswith("_view")}
print(json.dumps({
    "plugins": [[p["name"], str(p["source"])] for p in info],
    "import_errors": plugins_manager.get_import_errors(),
    "apps": [[a["url_prefix"], a["app"] is modelwatch.plugin.app] for a in apps],
    "routes": sorted(r.path for r in modelwatch.plugin.app.routes),
    "views": [v["url_route"] for v in views],
    "folder_modules": folder,
}))
"""


def _user_env(home: Path, plugins_folder: Path = PLUGINS) -> dict[str, str]:
    """A user's environment: a fresh AIRFLOW_HOME, the plugins folder set, nothing of the repo on the path."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("AIRFLOW__")}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PYTHONDONTWRITEBYTECODE": "1",  # no __pycache__ in the repository's plugins/ (compose mounts it :ro)
    })  # fmt: skip
    return env


def _run(argv: list[str], env: dict[str, str], cwd: Path) -> str:
    out = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, f"{' '.join(argv)}:\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}"
    return out.stdout


def _probe(tmp_path: Path, mode: str = "installed", plugins_folder: Path = PLUGINS) -> dict[str, Any]:
    out = _run([sys.executable, "-c", _PROBE, mode], _user_env(tmp_path / "home", plugins_folder), tmp_path)
    return json.loads(out.strip().splitlines()[-1])


def test_airflow_plugins_lists_the_view_once(tmp_path: Path) -> None:
    out = _run([airflow_binary(), "plugins", "--output", "json"], _user_env(tmp_path / "home"), tmp_path)
    plugins = json.loads(out[out.index("[") :])
    assert [p["name"] for p in plugins] == ["modelwatch"], [p["name"] for p in plugins]
    (view,) = plugins
    # registered by the installed package's entry point; the folder module bound nothing (no second source)
    assert view["source"].startswith("modelwatch==") and ENTRY_POINT in view["source"], view["source"]
    assert view["fastapi_apps"] == [FASTAPI_APP]
    assert view["external_views"] == [EXTERNAL_VIEW]
    assert view["global_operator_extra_links"] == ["<modelwatch.plugin.ReportLink object>"]


def test_the_plugins_manager_loads_the_folder_and_registers_the_view_once(tmp_path: Path) -> None:
    got = _probe(tmp_path)
    assert got["folder_modules"] == {"modelwatch_view": str(MODULE)}, "the plugins folder was not loaded"
    assert [name for name, _ in got["plugins"]] == ["modelwatch"]
    assert got["plugins"][0][1].startswith("modelwatch=="), got["plugins"]
    assert got["import_errors"] == {}
    assert got["apps"] == [["/modelwatch", True]], "the view's FastAPI app, once"
    assert "/" in got["routes"] and "/day/{day}" in got["routes"], got["routes"]
    assert got["views"] == ["model-health"]


def test_without_the_entry_point_the_folder_registers_the_view_once(tmp_path: Path) -> None:
    got = _probe(tmp_path, "hide")
    assert got["plugins"] == [["modelwatch", "$PLUGINS_FOLDER/modelwatch_view.py"]]
    assert got["import_errors"] == {}
    assert got["apps"] == [["/modelwatch", True]]
    assert got["views"] == ["model-health"]


def test_a_folder_module_importing_the_class_unconditionally_would_cost_an_import_error(
    tmp_path: Path,
) -> None:
    # Why plugins/modelwatch_view.py checks for the entry point: Airflow loads the folder first and keeps the
    # first plugin of a name; the entry point's is then skipped and the skip recorded as an import error.
    naive = tmp_path / "naive-plugins"
    naive.mkdir()
    (naive / "naive_view.py").write_text("from modelwatch.plugin import ModelwatchPlugin  # noqa: F401\n")
    got = _probe(tmp_path, plugins_folder=naive)
    assert got["plugins"] == [["modelwatch", "$PLUGINS_FOLDER/naive_view.py"]]
    assert list(got["import_errors"].values()) == ["Plugin 'modelwatch' already registered, skipping"]


# -- the API server on a compose-like layout -------------------------------------------------------------


def _healthy(base_url: str, proc: subprocess.Popen[bytes], log: Path) -> bool:
    assert proc.poll() is None, f"the API server exited:\n{log.read_text(errors='replace')[-3000:]}"
    try:
        AirflowApi.get_health(base_url, timeout=2)
    except (OSError, ValueError):
        return False
    return True


def test_the_api_server_serves_the_view_once_from_the_compose_layout(tmp_path: Path) -> None:
    cfg = AirflowConfig(state_dir=tmp_path, port=free_port(avoid=DEFAULT_PORTS.values()), extra_env={
        "AIRFLOW__API_AUTH__JWT_SECRET": os.urandom(32).hex(),
        "MODELWATCH_CONFIG": str(REPO / "include" / "thresholds.yaml"),
        "PYTHONDONTWRITEBYTECODE": "1",
    })  # fmt: skip
    # compose: AIRFLOW_HOME=/opt/airflow, ./plugins mounted at /opt/airflow/plugins, no plugins_folder setting
    cfg.home.mkdir(parents=True)
    (cfg.home / "plugins").symlink_to(PLUGINS, target_is_directory=True)
    assert cfg.lake_path is not None
    cfg.lake_path.mkdir(parents=True)
    password = os.urandom(12).hex()
    cfg.passwords_file.write_text(json.dumps({ADMIN_USER: password}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
    env.update(cfg.env())
    assert "AIRFLOW__CORE__PLUGINS_FOLDER" not in env
    # what the server's process loads: the folder module from $AIRFLOW_HOME/plugins, the view once
    loaded = json.loads(
        _run([sys.executable, "-c", _PROBE, "installed"], env, cfg.home).strip().splitlines()[-1]
    )
    assert loaded["folder_modules"] == {"modelwatch_view": str(cfg.home / "plugins" / "modelwatch_view.py")}
    assert loaded["apps"] == [["/modelwatch", True]] and loaded["import_errors"] == {}
    exe = airflow_binary()
    _run([exe, "db", "migrate"], env, cfg.home)
    log = tmp_path / "api-server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [exe, "api-server", "--host", "127.0.0.1", "--port", str(cfg.port), "--workers", "1"],
            env=env, cwd=cfg.home, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        wait_until(lambda: _healthy(cfg.base_url, proc, log), timeout=START_TIMEOUT, interval=0.5,
                   what="the API server's health endpoint")  # fmt: skip
        assert http_get(f"{cfg.base_url}/modelwatch/")[0] == 401, "the view answers only a logged-in user"
        api = AirflowApi(cfg.base_url, ADMIN_USER, password)
        plugins = api.request("GET", "/api/v2/plugins")["plugins"]
        assert [p["name"] for p in plugins] == ["modelwatch"]
        assert plugins[0]["source"].startswith("modelwatch==") and ENTRY_POINT in plugins[0]["source"]
        assert [v["href"] for v in plugins[0]["external_views"]] == ["modelwatch/"]
        assert api.request("GET", "/api/v2/plugins/importErrors")["total_entries"] == 0
        status, page = http_get(f"{cfg.base_url}/modelwatch/", api.token())
        assert status == 200 and "<h1>Model health</h1>" in page, (status, page[:500])
        assert "0 model(s), 0 day(s)" in page, page[:2000]  # an empty lake
    finally:
        stop_session_leader(proc)
