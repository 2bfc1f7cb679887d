"""modelwatch installs like any library: a fresh virtual environment with the locked dependencies and the
built wheel (no editable install, no source tree on the path) registers the provider and parses the DAGs.

This is what a user's Airflow image does (``pip install .``; compose/airflow.Dockerfile), checked here on
the real wheel so that a module left out of the package, or a DAG that only imports thanks to the
repository's own layout, fails before a user sees it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def _uv() -> list[str]:
    # the Makefile installs uv into the interpreter that created the venv (python3 -m uv)
    if exe := shutil.which("uv"):
        return [exe]
    for python in (shutil.which("python3"), sys.executable):
        if python and subprocess.run([python, "-m", "uv", "--version"], capture_output=True).returncode == 0:
            return [python, "-m", "uv"]
    pytest.fail("uv not found: `make install` installs it (python3 -m pip install uv)")


def _run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600, **kw)  # type: ignore[call-overload]
    assert out.returncode == 0, f"{' '.join(map(str, argv))} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv holding requirements.lock and the modelwatch wheel built from this tree."""
    uv, root = _uv(), tmp_path_factory.mktemp("package")
    _run([*uv, "build", "--wheel", "--out-dir", str(root / "dist"), str(REPO)])
    (wheel,) = (root / "dist").glob("modelwatch-*.whl")
    venv = root / "venv"
    _run([*uv, "venv", "--quiet", "--python", sys.executable, str(venv)])
    python = venv / "bin" / "python"
    _run([*uv, "pip", "sync", "--quiet", "--python", str(python), str(REPO / "requirements.lock")])
    _run([*uv, "pip", "install", "--quiet", "--no-deps", "--python", str(python), str(wheel)])
    return venv


def test_the_wheel_holds_every_module_of_the_package(fresh_venv: Path) -> None:
    site = next((fresh_venv / "lib").glob("python*/site-packages"))
    installed = {p.relative_to(site / "modelwatch").as_posix() for p in (site / "modelwatch").rglob("*.py")}
    source = {p.relative_to(REPO / "src" / "modelwatch").as_posix() for p in (REPO / "src" / "modelwatch").rglob("*.py")}
    assert installed == source
    assert not list(site.glob("*modelwatch*.pth")), "a .pth file would mean the source tree is on the path"


def test_a_fresh_environment_registers_the_provider_and_parses_the_dags(fresh_venv: Path, tmp_path: Path) -> None:
    code = f"DAGS = {str(REPO / 'dags')!r}\n" + (
        "import json, modelwatch\n"
        "from airflow.providers_manager import ProvidersManager\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        "pm = ProvidersManager()\n"
        "bag = DagBag(dag_folder=DAGS)\n"
        "print(json.dumps({'file': modelwatch.__file__, 'errors': {k: str(v) for k, v in bag.import_errors.items()},\n"
        "  'dags': sorted(bag.dags), 'types': sorted(t for t in ('prometheus', 'mlflow', 'alertmanager')\n"
        "  if t in pm.hooks)}))\n"
    )
    # nothing of the repository on the path: run from elsewhere, with a clean PYTHONPATH
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update({"AIRFLOW_HOME": str(tmp_path / "home"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "MODELWATCH_CONFIG": str(REPO / "include" / "thresholds.yaml")})  # fmt: skip
    out = _run([str(fresh_venv / "bin" / "python"), "-c", code], cwd=tmp_path, env=env)
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["file"].startswith(str(fresh_venv)), f"modelwatch imported from {info['file']}, not the wheel"
    assert info["errors"] == {}
    assert info["dags"] == ["model_performance_monitoring", "model_performance_monitoring_hourly",
                            "modelwatch_threshold_replay"]
    assert info["types"] == ["alertmanager", "mlflow", "prometheus"]
