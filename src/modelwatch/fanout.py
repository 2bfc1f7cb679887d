"""Which models a run judges, and how they are spread over the mapped ``correlate`` tasks.

A model's verdict depends only on its own predictions and on the resource samples of its instances, so
models can be judged apart: the run maps ``correlate`` over groups of ``correlation.models_per_task``
models, and the Celery or Kubernetes executor spreads the groups over workers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def models_to_judge(seen: Iterable[str], expected: Iterable[str], selected: Iterable[str] = ()) -> list[str]:
    """The models a run gives a verdict: those with predictions in the window and those that are expected
    (which get ``no_data`` when they have none), sorted; only the ``selected`` ones when a run asks for some.

    A prediction without a model tag (``""``) has no one to give a verdict to and is not judged.
    """
    models = (set(seen) - {""}) | set(expected)
    chosen = set(selected)
    return sorted(models & chosen if chosen else models)


def model_groups(models: list[str], per_task: int, rows: Mapping[str, int] | None = None) -> list[list[str]]:
    """Split ``models`` into as few groups of at most ``per_task`` models as possible, balanced by rows.

    Groups are as equal in total prediction count (``rows``, 0 for a model without) as a greedy
    largest-first assignment makes them, so one busy model does not leave the other workers idle; each group
    lists its models sorted. The result only depends on the inputs (ties go to the lower group), so a re-run
    maps the same groups. There is always at least one group, empty when there is no model: the run still
    writes its (empty) partitions and verdict document.

    :raises ValueError: ``per_task`` below 1.
    """
    if per_task < 1:
        raise ValueError(f"models_per_task must be at least 1, got {per_task}")
    if not models:
        return [[]]
    n_groups = -(-len(models) // per_task)
    counts = rows or {}
    load = [0] * n_groups
    groups: list[list[str]] = [[] for _ in range(n_groups)]
    for model in sorted(models, key=lambda m: (-counts.get(m, 0), m)):
        open_groups = [g for g in range(n_groups) if len(groups[g]) < per_task]
        g = min(open_groups, key=lambda i: (load[i], i))
        groups[g].append(model)
        load[g] += counts.get(model, 0)
    return [sorted(g) for g in groups]
