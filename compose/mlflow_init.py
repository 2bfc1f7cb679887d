"""One-shot init of docker-compose.yaml: create the MLflow experiments include/thresholds.yaml names.

The DAG refuses an experiment that does not exist (a misspelt name must not read as "no predictions"), so
on a fresh stack its first run would fail. This creates each missing experiment once; existing ones are
left alone. Runs in the MLflow image (mlflow and PyYAML are there):

    python mlflow_init.py --tracking-uri http://mlflow:5000 --config /opt/modelwatch/include/thresholds.yaml
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml


def experiment_names(config_path: Path) -> list[str]:
    """The ``mlflow.experiments[].name`` values of a modelwatch configuration file."""
    doc = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    return [str(e["name"]) for e in (doc.get("mlflow") or {}).get("experiments") or []]


def ensure_experiments(client: Any, names: list[str]) -> dict[str, str]:
    """Create the experiments that do not exist yet and restore deleted ones.

    :param client: an ``mlflow.tracking.MlflowClient`` (or anything with the same three methods).
    :param names: experiment names.
    :returns: name -> ``"created"``, ``"restored"`` or ``"exists"``.
    """
    done: dict[str, str] = {}
    for name in names:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            client.create_experiment(name)
            done[name] = "created"
        elif experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
            done[name] = "restored"
        else:
            done[name] = "exists"
    return done


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", default="http://mlflow:5000")
    parser.add_argument("--config", type=Path, default=Path("/opt/modelwatch/include/thresholds.yaml"))
    args = parser.parse_args(argv)

    from mlflow.tracking import MlflowClient

    for name, state in ensure_experiments(
        MlflowClient(args.tracking_uri), experiment_names(args.config)
    ).items():
        print(f"experiment {name!r}: {state}", flush=True)


if __name__ == "__main__":
    main()
