"""Airflow's plugins folder: the modelwatch model-health view (:class:`modelwatch.plugin.ModelwatchPlugin`).

The view itself (its FastAPI app at ``/modelwatch/``, the "Model health" entry of the UI's navigation, the
"Model report" button) lives in the installed ``modelwatch`` package, like the rest of the library; this
module only points at it. Set ``[core] plugins_folder`` (``AIRFLOW__CORE__PLUGINS_FOLDER``) to this folder,
or mount it at ``/opt/airflow/plugins`` as docker-compose.yaml does, and install the package.

Why it does not simply import the class. Airflow 3's plugins manager (``airflow.plugins_manager._get_plugins``)
loads the plugins folder first, then the ``airflow.plugins`` entry points, and keeps the first plugin of each
``name``: a second ``modelwatch`` is skipped, and the skip is recorded as a *plugin import error* ("Plugin
'modelwatch' already registered, skipping"), which the UI shows every user and ``/api/v2/plugins/importErrors``
lists. Every installed copy of the package (``pip install``, the compose image, ``make install``) already
registers the plugin through its entry point (pyproject.toml, ``[project.entry-points."airflow.plugins"]``),
so this module then binds nothing: Airflow registers every ``AirflowPlugin`` subclass a folder module holds,
and this one holds it only when no entry point names it (the package importable without being installed as
a distribution, e.g. from a ``PYTHONPATH``). Either way ``airflow plugins`` lists ``modelwatch`` once.

Without the package at all, loading this module fails with an ImportError that says so: Airflow shows it
among the plugin import errors instead of silently serving no view.

Named ``modelwatch_view``, not ``modelwatch``: Airflow puts the plugins folder on ``sys.path``, and a
``modelwatch.py`` here would shadow the package in every Airflow process.
"""

from __future__ import annotations

from importlib.metadata import entry_points

#: the plugin class, as the package's entry point names it
PLUGIN_MODULE, PLUGIN_CLASS = "modelwatch.plugin", "ModelwatchPlugin"


def registered_by_entry_point() -> bool:
    """Whether an installed distribution registers the plugin through an ``airflow.plugins`` entry point
    (then Airflow loads it from there, right after this folder)."""
    return any(
        (ep.module, ep.attr) == (PLUGIN_MODULE, PLUGIN_CLASS) for ep in entry_points(group="airflow.plugins")
    )


if not registered_by_entry_point():
    try:
        # Airflow registers the AirflowPlugin subclasses this module's namespace holds: this one.
        from modelwatch.plugin import ModelwatchPlugin  # noqa: F401
    except ModuleNotFoundError as missing:
        if missing.name != "modelwatch":
            raise  # the package is there, one of its dependencies is not: Airflow shows that error
        raise ImportError(
            "the modelwatch package is not installed: the plugins folder only points at it. Install it into "
            "Airflow's environment (`pip install modelwatch`, or `pip install .` from the repository)"
        ) from missing
