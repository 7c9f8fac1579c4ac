"""The task grid a candidate loss is scored on, and fitness from its evaluation rows (gao-arl §3).

gao-arl Eq. 2 scores a candidate loss by the mean clean-validation performance of networks trained
with it over a set of tasks: architectures F (architecture randomisation, AR) or datasets D (dataset
randomisation, DR). `TaskGrid` is the product architectures × datasets × noise settings × seeds
with three modes:

- ``ar``: one dataset × several architectures (gao-arl "AR");
- ``dr``: one architecture × several datasets (gao-arl "DR");
- ``ardr``: the full product, which the paper calls computationally infeasible; ``subset_size = k``
  makes it affordable by scoring each generation on a seeded random subset of k tasks (the same k
  tasks for every candidate of a generation, so candidates stay comparable; a fresh subset each
  generation, a pure function of (subset_seed, generation), so a resumed run draws the same ones).

Fitness (`fitness_from_rows`): per candidate, the mean over its tasks of the metric chosen by
``metric_rule`` (``last`` → ``val_acc_last``, gao-arl's "at convergence"; ``best`` →
``val_acc_best``). Which rows count (our choice, the paper has no failures):

- ``ok`` rows count with their metric;
- ``diverged`` rows count too: the loss broke training, which is the candidate's fault; their metric
  is the trainer's record, or 0.0 (the accuracy of nothing) when the run recorded none;
- ``failed`` and ``timeout`` rows (infrastructure: a crashed worker, a straggler) are left out, so
  the candidate is scored on its other tasks;
- a candidate with no counted row gets NaN, which `search.strategy` turns into "ranked last".
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

from evoloss.search.config import SearchConfig
from evoloss.workers.task import Budget, NoiseSpec, Splits, Task

MODES = ("ar", "dr", "ardr")
METRIC_COLUMNS = {"last": "val_acc_last", "best": "val_acc_best"}
_COUNTED = ("ok", "diverged")
_LEFT_OUT = ("failed", "timeout")


def metric_column(metric_rule: str) -> str:
    """The evaluation column a fitness reads for ``metric_rule`` ("last" | "best")."""
    if metric_rule not in METRIC_COLUMNS:
        raise ValueError(f"metric_rule={metric_rule!r} is not one of {tuple(METRIC_COLUMNS)}")
    return METRIC_COLUMNS[metric_rule]


def _names(field_name: str, values: Any) -> tuple[str, ...]:
    if isinstance(values, str) or not isinstance(values, (list, tuple)) or not values:
        raise ValueError(f"TaskGrid.{field_name} must be a non-empty list of names, got {values!r}")
    if not all(isinstance(v, str) and v for v in values):
        raise TypeError(f"TaskGrid.{field_name} must hold non-empty strings, got {values!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"TaskGrid.{field_name} lists a name twice: {values!r}")
    return tuple(values)


@dataclass(frozen=True, kw_only=True)
class TaskGrid:
    """architectures × datasets × noise settings × seeds, each a `workers.task.Task`.

    Every task shares ``budget``, ``splits`` and ``data_dir``. ``subset_size`` None (or equal to the
    grid size) evaluates every task each generation.
    """

    datasets: tuple[str, ...]
    archs: tuple[str, ...]
    noises: tuple[NoiseSpec, ...] = (NoiseSpec(),)
    seeds: tuple[int, ...] = (0,)
    mode: str = "ardr"
    subset_size: int | None = None
    subset_seed: int = 0
    metric_rule: str = "last"
    budget: Budget = field(default_factory=Budget)
    splits: Splits = field(default_factory=Splits)
    data_dir: str | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "datasets", _names("datasets", self.datasets))
        set_(self, "archs", _names("archs", self.archs))
        if not isinstance(self.noises, (list, tuple)) or not self.noises:
            raise ValueError(f"TaskGrid.noises must be a non-empty list of NoiseSpec, got {self.noises!r}")
        if not all(isinstance(n, NoiseSpec) for n in self.noises):
            raise TypeError(f"TaskGrid.noises must hold NoiseSpec objects, got {self.noises!r}")
        set_(self, "noises", tuple(self.noises))
        if not isinstance(self.seeds, (list, tuple)) or not self.seeds or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in self.seeds
        ) or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"TaskGrid.seeds must be distinct non-negative ints, got {self.seeds!r}")
        set_(self, "seeds", tuple(self.seeds))
        self._check_mode()
        n = len(self.archs) * len(self.datasets) * len(self.noises) * len(self.seeds)
        k = self.subset_size
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n):
            raise ValueError(f"TaskGrid.subset_size must be None or an int in [1, {n}] (the grid size), got {k!r}")
        metric_column(self.metric_rule)

    def _check_mode(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"TaskGrid.mode={self.mode!r} is not one of {MODES}")
        if self.mode == "ar" and len(self.datasets) != 1:
            raise ValueError(
                f"TaskGrid.mode='ar' (architecture randomisation) takes one dataset, got {list(self.datasets)}; "
                "use mode='ardr' for several"
            )
        if self.mode == "dr" and len(self.archs) != 1:
            raise ValueError(
                f"TaskGrid.mode='dr' (dataset randomisation) takes one architecture, got {list(self.archs)}; "
                "use mode='ardr' for several"
            )

    def __len__(self) -> int:
        return len(self.archs) * len(self.datasets) * len(self.noises) * len(self.seeds)

    def tasks(self) -> list[Task]:
        """Every task of the grid, ordered by architecture, dataset, noise, seed."""
        return [
            Task(dataset=d, arch=a, noise=n, budget=self.budget, splits=self.splits, seed=s, data_dir=self.data_dir)
            for a, d, n, s in itertools.product(self.archs, self.datasets, self.noises, self.seeds)
        ]

    def tasks_for_generation(self, generation: int) -> list[Task]:
        """The tasks every candidate of ``generation`` is trained on (the seeded subset, in grid order)."""
        if isinstance(generation, bool) or not isinstance(generation, int) or generation < 0:
            raise ValueError(f"generation must be a non-negative int, got {generation!r}")
        tasks = self.tasks()
        if self.subset_size is None or self.subset_size == len(tasks):
            return tasks
        rng = np.random.default_rng([self.subset_seed, generation])
        chosen = np.sort(rng.choice(len(tasks), size=self.subset_size, replace=False))
        return [tasks[i] for i in chosen]

    def subset_keys(self, generation: int) -> list[str]:
        """`Task.key()` of each task of ``generation`` (recorded in the generation row)."""
        return [t.key() for t in self.tasks_for_generation(generation)]


def _row_score(row: Mapping[str, Any], column: str, index: int) -> float | None:
    """The row's contribution to its candidate's fitness, or None when it is left out."""
    status = row["status"]
    if status in _LEFT_OUT:
        return None
    if status not in _COUNTED:
        raise ValueError(f"rows[{index}]['status']={status!r} is not one of {_COUNTED + _LEFT_OUT}")
    value = row[column]
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"rows[{index}][{column!r}]={value!r} must be a number (NaN allowed)")
    value = float(value)
    if math.isfinite(value):
        return value
    return 0.0 if status == "diverged" else None


def fitness_from_rows(
    rows: Iterable[Mapping[str, Any]] | Any, metric_rule: str, candidates: Iterable[int] | None = None
) -> dict[int, float]:
    """Fitness per candidate: the mean of its counted rows' metric (rules in the module docstring).

    Args:
        rows: evaluation rows (dicts with ``candidate``, ``status`` and the metric column), or a
            pandas DataFrame of them (e.g. ``store.read()`` filtered to one generation).
        metric_rule: "last" → ``val_acc_last``; "best" → ``val_acc_best``.
        candidates: every candidate of the generation; those without any row get NaN too.

    Returns:
        ``{candidate: fitness}``, NaN where nothing counted, sorted by candidate.
    """
    column = metric_column(metric_rule)
    if hasattr(rows, "to_dict") and not isinstance(rows, Mapping):
        rows = rows.to_dict("records")
    scores: dict[int, list[float]] = {int(c): [] for c in (() if candidates is None else candidates)}
    for i, row in enumerate(rows):
        missing = [k for k in ("candidate", "status", column) if k not in row]
        if missing:
            raise ValueError(f"rows[{i}] lacks {missing}; pass evaluation rows (results.schema)")
        score = _row_score(row, column, i)
        bucket = scores.setdefault(int(row["candidate"]), [])
        if score is not None:
            bucket.append(score)
    return {c: (float(np.mean(v)) if v else math.nan) for c, v in sorted(scores.items())}


def _split_size(value: float) -> float | int:
    """Config split sizes are floats; counts (>= 1) become ints as `workers.task.Splits` expects."""
    return int(value) if value >= 1 else float(value)


def grid_from_config(config: SearchConfig) -> TaskGrid:
    """The `TaskGrid` a validated `SearchConfig` describes (subset seed = ``search.seed``)."""
    grid, train = config.grid, config.train
    budget = Budget(
        epochs=train.epochs, batch_size=train.batch_size, optimizer=train.optimizer, lr=train.lr,
        momentum=train.momentum, weight_decay=train.weight_decay, schedule=train.schedule, grad_clip=train.grad_clip,
    )
    splits = Splits(val=_split_size(train.val), test=_split_size(train.test), max_train=train.max_train)
    noises = tuple(n.to_spec() for n in grid.noise)
    return TaskGrid(
        datasets=grid.datasets, archs=grid.archs, noises=noises, seeds=grid.seeds, mode=grid.mode,
        subset_size=grid.subset_size, subset_seed=config.search.seed, metric_rule=grid.metric_rule,
        budget=budget, splits=splits, data_dir=grid.data_dir,
    )
