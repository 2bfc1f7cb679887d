"""What a fresh interpreter loads: run by the ``fresh_imports`` fixture (tests/conftest.py), never by pytest.

Usage: ``python tests/fresh_imports.py DAG_FILE...`` (from cwd ``/``, so ``modelwatch`` comes from its
installed distribution). Airflow's import costs about 2 s per interpreter, so one interpreter answers for
three checks, in this order:

1. each DAG file is imported as the DAG processor does: the heavy libraries loaded so far, after each;
2. then ``modelwatch.hooks`` and ``modelwatch.extract``: the heavy libraries loaded so far;
3. then Airflow's ProvidersManager: what it knows of the modelwatch provider.

The lists are cumulative. A check that finds nothing heavy leaves the next one exact: modules that are
not heavy cannot add a heavy one to the next step's list. Prints one JSON object on its last line.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import json
import sys

HEAVY = ("pandas", "mlflow", "boto3", "botocore", "pyarrow", "numpy")


def heavy() -> list[str]:
    return sorted(m for m in HEAVY if m in sys.modules)


def main(dag_files: list[str]) -> dict:
    report: dict = {"dag_files": {}}
    for i, path in enumerate(dag_files):
        spec = importlib.util.spec_from_file_location(f"dagfile{i}", path)
        assert spec and spec.loader, path
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
        report["dag_files"][path] = heavy()

    import modelwatch.extract  # noqa: F401
    import modelwatch.hooks  # noqa: F401

    report["hook_modules"] = heavy()

    from airflow.providers_manager import ProvidersManager

    pm = ProvidersManager()
    dist = md.distribution("modelwatch")
    hooks = {t: pm.hooks.get(t) for t in ("prometheus", "mlflow", "alertmanager", "pushgateway")}
    report["provider"] = {
        "provider": "modelwatch" in pm.providers,
        "version": dist.version,
        "entry": [e.value for e in dist.entry_points if e.group == "apache_airflow_provider"],
        "hooks": {t: [h.hook_class_name, h.connection_testable] for t, h in hooks.items() if h},
        "fields": sorted(k for k in pm.connection_form_widgets if k.startswith("extra__prometheus__")),
    }
    return report


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
