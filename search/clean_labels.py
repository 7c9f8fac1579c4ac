"""How many clean labels a compare row consumed (``clean_labels_used``, results.schema).

A method that reads clean labels — a meta set, a clean validation split used to pick a grid point,
an epoch or a search's fitness — is not comparable to one that reads none unless the report says
so. The rules (our accounting, per row; a search row counts its task's validation rows, which its
fitness reads, `fitness_clean_labels`):

- a fixed loss (``kind = "loss"`` / ``"plugin"``): 0, or the task's validation rows when the
  metric rule is ``best`` (the epoch is chosen on the clean validation split);
- ``tuned``: the task's validation rows (the grid point is chosen on them; ``best`` picks the epoch
  on the same rows, so they count once); 0 under ``noisy``, which selects on the noisy validation split;
- ``search`` (an evolved loss): the distinct clean validation rows its search's fitness read, over
  all its tasks (`search_clean_labels`), plus this task's validation rows under ``best``;
- ``trainer`` (meta-learned): the run's meta set (the trainer's ``clean_labels_used``; 0 for the
  Dynamic Loss, which builds its meta set from the noisy data), plus the validation rows under
  ``best`` unless the meta set *is* the validation split (``compare.clean_budget``).

With ``compare.clean_budget = N`` every task's clean validation split has N rows and the
meta-learned methods use that split as their meta set, so selection and meta-learning read the
same N labels; an evolved loss is at the same budget when its search's fitness read N labels.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from evoloss.workers.task import Task


@functools.lru_cache(maxsize=32)
def _pool(dataset: str, data_dir: str | None) -> tuple[np.ndarray, int, int | None]:
    """(pool labels, classes, official test size) of a dataset, loaded once per process."""
    from evoloss.workers.datasets import load_dataset

    raw = load_dataset(dataset, data_dir)
    return raw.y_train.numpy(), raw.num_classes, None if raw.x_test is None else len(raw.x_test)


def val_indices(task: Task) -> np.ndarray:
    """The pool rows of ``task``'s clean validation split (the split `workers.materialize` draws)."""
    from evoloss.workers.splits import make_splits

    labels, classes, official = _pool(task.dataset, task.data_dir)
    imbalance = float(task.noise.imbalance) if task.noise.kind == "longtail" else 1.0
    return make_splits(labels, classes, task.splits, seed=task.seed, official_test_size=official,
                       imbalance=imbalance).val


@functools.lru_cache(maxsize=4096)
def val_rows(task: Task) -> int:
    """Size of ``task``'s clean validation split."""
    return int(len(val_indices(task)))


def fitness_clean_labels(task: Task, metric_rule: str = "last") -> int:
    """Clean labels a search row's fitness read: ``task``'s validation rows — none under the ``noisy``
    rule (gao-arl Table 3 reads a noisy validation split); 0 when the driver cannot load the dataset
    (a dataset that exists only on the workers), so a search never fails on the count."""
    if metric_rule == "noisy":
        return 0
    try:
        return val_rows(task)
    except (ValueError, OSError, KeyError):
        return 0


def search_clean_labels(run_dir: str | Path) -> int:
    """Distinct clean validation rows the fitness of the search in ``run_dir`` read (all its tasks)."""
    from evoloss.search.grid import grid_from_config
    from evoloss.search.run_dir import load_run_config

    rows: dict[tuple[str, str | None], set[int]] = {}
    grid = grid_from_config(load_run_config(Path(run_dir)))
    if grid.metric_rule == "noisy":
        return 0
    for task in grid.tasks():
        rows.setdefault((task.dataset, task.data_dir), set()).update(int(i) for i in val_indices(task))
    return sum(len(v) for v in rows.values())


def row_clean_labels(kind: str, record: Mapping[str, Any], task: Task, *, metric_rule: str,
                     meta_is_val: bool, search_labels: int = 0) -> int:
    """``clean_labels_used`` of one compare row (the rules of the module docstring)."""
    selecting = metric_rule == "best"
    if kind in ("loss", "plugin"):
        return val_rows(task) if selecting else 0
    if kind == "tuned":
        return 0 if metric_rule == "noisy" else val_rows(task)
    if kind == "search":
        return search_labels + (val_rows(task) if selecting else 0)
    meta = int(record.get("clean_labels_used") or 0)
    if meta_is_val:
        return max(meta, val_rows(task) if selecting else 0)
    return meta + (val_rows(task) if selecting else 0)
