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

A dataset × architecture pair that cannot work (``cnn1d`` takes sequences, ``digits`` are images) is
known from the registries before anything trains (`incompatible_pairs`: the dataset's input shape
from its loader, the architecture's accepted inputs from `workers.archs.check_arch`): the config
refuses it, listing the pairs that fit, or (``grid.incompatible = "leave-out"``) the product skips
it and the search says so in one line (`left_out_line`). ``grid.exclude`` leaves out pairs that can
work but are not wanted (a pair the search named near chance, or a deep network only on the data it
learns within the budget), in the same way and the same line.

Fitness (`fitness_from_rows`, the default rule of `search.fitness`): per candidate, the mean over its tasks of the metric chosen by
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
from evoloss.search.fitness import METRIC_COLUMNS, metric_column, row_score
from evoloss.workers.task import Budget, NoiseSpec, Splits, Task

MODES = ("ar", "dr", "ardr")
__all__ = ["METRIC_COLUMNS", "MODES", "TaskGrid", "fitness_from_rows", "grid_from_config", "incompatible_pairs",
           "left_out_line", "metric_column"]


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
    grid size) evaluates every task each generation. ``left_out`` lists ``(dataset, arch)`` pairs the
    product skips (``grid.exclude``'s, and pairs that cannot work, `incompatible_pairs`).
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
    left_out: tuple[tuple[str, str], ...] = ()
    stratify: str = "none"

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
        set_(self, "left_out", tuple((str(d), str(a)) for d, a in self.left_out))
        unknown = [p for p in self.left_out if p[0] not in self.datasets or p[1] not in self.archs]
        if unknown:
            raise ValueError(f"TaskGrid.left_out names pairs outside the grid: {unknown}")
        n = len(self)
        if n == 0:
            raise ValueError(f"TaskGrid.left_out={list(self.left_out)} leaves no dataset x architecture pair")
        k = self.subset_size
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n):
            raise ValueError(f"TaskGrid.subset_size must be None or an int in [1, {n}] (the grid size), got {k!r}")
        if self.stratify not in STRATA:
            raise ValueError(f"TaskGrid.stratify={self.stratify!r} is not one of {STRATA}")
        if self.stratify == "arch" and k is not None:
            short = stratum_shortfall(self.arch_task_counts(), k)
            if short:
                raise ValueError(f"TaskGrid.stratify='arch': subset_size={k} takes up to {short[1]} tasks of each "
                                 f"architecture, but {short[0]!r} has {self.arch_task_counts()[short[0]]}")
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
        pairs = len(self.archs) * len(self.datasets) - len(set(self.left_out))
        return pairs * len(self.noises) * len(self.seeds)

    def tasks(self) -> list[Task]:
        """Every task of the grid, ordered by architecture, dataset, noise, seed (left-out pairs skipped)."""
        skip = set(self.left_out)
        return [
            Task(dataset=d, arch=a, noise=n, budget=self.budget, splits=self.splits, seed=s, data_dir=self.data_dir)
            for a, d, n, s in itertools.product(self.archs, self.datasets, self.noises, self.seeds)
            if (d, a) not in skip
        ]

    def arch_task_counts(self) -> dict[str, int]:
        """Tasks of each architecture (left-out pairs skipped), in grid order."""
        return arch_task_counts(self.datasets, self.archs, self.left_out, len(self.noises) * len(self.seeds))

    def tasks_for_generation(self, generation: int) -> list[Task]:
        """The tasks every candidate of ``generation`` is trained on (the seeded subset, in grid order).

        ``stratify = "arch"``: every architecture gets ``subset_size // len(archs)`` of the subset, and
        the remainder goes to as many architectures drawn at random (each then drawn from its own
        tasks). Every generation then sees every architecture, so the fitness of one generation's
        best is not raised by a subset that happened to leave out the hardest architecture (the best
        candidate across generations is picked from fitness values of different subsets)."""
        if isinstance(generation, bool) or not isinstance(generation, int) or generation < 0:
            raise ValueError(f"generation must be a non-negative int, got {generation!r}")
        tasks = self.tasks()
        if self.subset_size is None or self.subset_size == len(tasks):
            return tasks
        rng = np.random.default_rng([self.subset_seed, generation])
        if self.stratify == "none":
            chosen = rng.choice(len(tasks), size=self.subset_size, replace=False)
        else:
            base, extra = divmod(self.subset_size, len(self.archs))
            bonus = set(rng.permutation(len(self.archs))[:extra].tolist())
            chosen = []
            for i, arch in enumerate(self.archs):
                index = [j for j, t in enumerate(tasks) if t.arch == arch]
                chosen += [index[j] for j in rng.choice(len(index), size=base + (i in bonus), replace=False)]
        return [tasks[i] for i in np.sort(np.asarray(chosen))]

    def subset_keys(self, generation: int) -> list[str]:
        """`Task.key()` of each task of ``generation`` (recorded in the generation row)."""
        return [t.key() for t in self.tasks_for_generation(generation)]


def fitness_from_rows(
    rows: Iterable[Mapping[str, Any]] | Any, metric_rule: str, candidates: Iterable[int] | None = None
) -> dict[int, float]:
    """Fitness per candidate: the mean of its counted rows' metric (gao-arl Eq. 2; `search.fitness`
    has the counting rules and the other fitness rules).

    Args:
        rows: evaluation rows (dicts with ``candidate``, ``status`` and the metric column), or a
            pandas DataFrame of them (e.g. ``store.read()`` filtered to one generation).
        metric_rule: "last" → ``val_acc_last``; "best" → ``val_acc_best``.
        candidates: every candidate of the generation; those without any row get NaN too.

    Returns:
        ``{candidate: fitness}``, NaN where nothing counted, sorted by candidate.
    """
    column = metric_column(metric_rule)
    records = rows.to_dict("records") if hasattr(rows, "to_dict") and not isinstance(rows, Mapping) else rows
    scores: dict[int, list[float]] = {int(c): [] for c in (() if candidates is None else candidates)}
    for i, row in enumerate(records):
        missing = [k for k in ("candidate", "status", column) if k not in row]
        if missing:
            raise ValueError(f"rows[{i}] lacks {missing}; pass evaluation rows (results.schema)")
        score = row_score(row, column, i)
        bucket = scores.setdefault(int(row["candidate"]), [])
        if score is not None:
            bucket.append(score)
    return {c: (float(np.mean(v)) if v else math.nan) for c, v in sorted(scores.items())}


# --- which dataset × architecture pairs can work, known before anything trains -----------------------
def dataset_input(dataset: str, data_dir: str | None) -> tuple[tuple[int, ...], int] | None:
    """(input shape, classes) of ``dataset`` from its loader (cached per process), or None when its
    files are absent here (a file-backed dataset on another machine: checked when tasks materialise)."""
    from evoloss.workers.datasets import load_dataset

    try:
        raw = load_dataset(dataset, data_dir)
    except FileNotFoundError:
        return None
    return tuple(raw.input_shape), int(raw.num_classes)


STRATA = ("none", "arch")
"""How a generation's task subset is drawn: from the whole grid, or the same share from each architecture."""


def arch_task_counts(datasets: Iterable[str], archs: Iterable[str], left_out: Iterable[tuple[str, str]],
                     per_pair: int) -> dict[str, int]:
    """Tasks of each architecture: ``per_pair`` (noise settings × seeds) for each of its datasets whose
    ``(dataset, arch)`` pair is not left out."""
    skip, datasets = set(left_out), list(datasets)
    return {a: per_pair * sum((d, a) not in skip for d in datasets) for a in archs}


def stratum_shortfall(counts: Mapping[str, int], subset_size: int) -> tuple[str, int] | None:
    """``(arch, share)`` for the first architecture with fewer tasks than the largest share
    ``ceil(subset_size / len(counts))`` of a stratified subset (1 when the subset is smaller than the
    number of architectures), else None."""
    share = -(-subset_size // len(counts))
    for arch, n in counts.items():
        if n < share:
            return arch, share
    return None


def incompatible_pairs(datasets: Iterable[str], archs: Iterable[str],
                       data_dir: str | None = None) -> list[tuple[str, str, str]]:
    """``(dataset, arch, reason)`` for every pair whose architecture cannot take the dataset's inputs
    (`workers.archs.check_arch`, e.g. ``cnn1d`` on ``digits`` images), in grid order."""
    from evoloss.workers.archs import check_arch

    shapes = {d: dataset_input(d, data_dir) for d in datasets}
    bad = []
    for a in archs:
        for d in shapes:
            if shapes[d] is None:
                continue
            try:
                check_arch(a, shapes[d][0], shapes[d][1])
            except ValueError as exc:
                bad.append((d, a, str(exc)))
    return bad


def left_out_line(left_out: Iterable[tuple[str, str]], excluded: Iterable[tuple[str, str]] = ()) -> str:
    """The one line a search prints about the pairs it leaves out of its product ("" when none): those
    ``grid.exclude`` names, then those that cannot work."""
    chosen = set(excluded)
    parts = []
    for label, pairs in (("excluded by grid.exclude", [p for p in left_out if p in chosen]),
                         ("that cannot work", [p for p in left_out if p not in chosen])):
        if pairs:
            parts.append(f"{len(pairs)} dataset x architecture pair(s) {label}: "
                         + ", ".join(f"{a} on {d}" for d, a in pairs))
    return f"grid: left out {'; '.join(parts)}\n" if parts else ""


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
    splits = Splits(val=_split_size(train.val), test=_split_size(train.test), noisy_val=_split_size(train.noisy_val),
                    max_train=train.max_train)
    noises = tuple(n.to_spec() for n in grid.noise)
    excluded = tuple((p.dataset, p.arch) for p in grid.exclude)
    left_out: tuple[tuple[str, str], ...] = excluded
    if grid.incompatible == "leave-out":
        left_out += tuple((d, a) for d, a, _ in incompatible_pairs(grid.datasets, grid.archs, grid.data_dir)
                          if (d, a) not in excluded)
    return TaskGrid(
        datasets=grid.datasets, archs=grid.archs, noises=noises, seeds=grid.seeds, mode=grid.mode,
        subset_size=grid.subset_size, subset_seed=config.search.seed, metric_rule=grid.metric_rule,
        budget=budget, splits=splits, data_dir=grid.data_dir, left_out=left_out, stratify=grid.stratify,
    )
