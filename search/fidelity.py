"""What runs inside one generation besides "every candidate on every task": successive halving and
the CE reference runs of the ``relative-ce`` fitness.

**Successive halving** (Jamieson & Talwalkar 2016, one halving step; Li et al. 2018 "Hyperband"
Alg. 1 with one bracket). With ``search.low_fidelity = f`` and ``search.finish_share = s``:

1. every candidate trains on every task of the generation for ``max(1, round(f · epochs))`` epochs
   (rows with ``fidelity`` = that share of the budget);
2. the best ``ceil(s · popsize)`` of them by the generation's fitness rule at that fidelity (ties to
   the lower candidate index) train again from scratch with the full budget (``fidelity`` = 1.0);
3. CMA-ES is told a **complete ranking** (`complete_ranking`): the finished candidates keep their
   full-budget fitness, the stopped ones are placed strictly below every finished one, in the order
   of their low-fidelity fitness, one ``failure_margin`` apart. A candidate that counted nothing at
   low fidelity stays NaN, so the strategy's one failure policy ranks it last. CMA-ES uses only the
   ranks of a generation (Hansen 2016, "The CMA Evolution Strategy: A Tutorial", Eqs. 39-40 weight
   the sorted offspring), so it sees a whole generation, never a partial one.

A generation then costs ``f + s`` of a full one (plus the finishers' smaller stacks). Both steps are
pure functions of the generation's results, so a resumed search forms the same jobs and tells the
same values (`search.coordinator` stores the generation only after step 3).

**CE references** (`reference_jobs`): ``relative-ce`` divides by CE's accuracy on each task; a task
is trained with CE once, the first time a generation draws it, with the full budget, and the value is
kept in the search state, so later generations and a resumed run reuse it.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

from evoloss.losses import LossSpec
from evoloss.workers.jobs import Job
from evoloss.workers.task import Task

REFERENCE_FAMILY = "ce"


@dataclass(frozen=True)
class HalvingSchedule:
    """One halving step: ``low_fidelity`` of the epochs for all, the best ``finish_share`` finish."""

    low_fidelity: float
    finish_share: float

    def __post_init__(self) -> None:
        if not 0.0 < self.low_fidelity < 1.0:
            raise ValueError(f"low_fidelity={self.low_fidelity!r} must lie in (0, 1), e.g. 0.33")
        if not 0.0 < self.finish_share <= 1.0:
            raise ValueError(f"finish_share={self.finish_share!r} must lie in (0, 1], e.g. 0.34")

    def low_epochs(self, epochs: int) -> int:
        """Epochs of the low-fidelity rung: ``max(1, round(low_fidelity · epochs))``."""
        return max(1, int(round(self.low_fidelity * epochs)))

    def fidelity(self, epochs: int) -> float:
        """The share of the budget the low rung actually trains (what its rows record)."""
        return self.low_epochs(epochs) / epochs

    def finishers(self, popsize: int) -> int:
        """How many candidates finish: ``ceil(finish_share · popsize)``, at least 1."""
        return max(1, min(popsize, math.ceil(self.finish_share * popsize - 1e-9)))


def with_epochs(task: Task, epochs: int) -> Task:
    """``task`` with its budget cut to ``epochs`` (same data, noise draw, split and initialisation)."""
    return dataclasses.replace(task, budget=dataclasses.replace(task.budget, epochs=int(epochs)))


def choose_finishers(low_fitness: Mapping[int, float], count: int) -> list[int]:
    """The ``count`` best candidates by low-fidelity fitness (NaN last, ties to the lower index), sorted."""
    def key(c: int) -> tuple[int, float, int]:
        f = low_fitness[c]
        return (0, -f, c) if math.isfinite(f) else (1, 0.0, c)

    return sorted(sorted(low_fitness, key=key)[:count])


def complete_ranking(full: Mapping[int, float], low: Mapping[int, float], finishers: Sequence[int],
                     margin: float) -> dict[int, float]:
    """The fitness CMA-ES is told for every candidate (module docstring, step 3).

    Args:
        full: full-budget fitness of the finished candidates (others ignored).
        low: low-fidelity fitness of every candidate.
        finishers: the candidates that trained the full budget.
        margin: the gap between consecutive stopped candidates and below the worst finished one.

    Returns:
        ``{candidate: told fitness}`` for every candidate of ``low``; NaN only where nothing counted.
    """
    done = set(finishers)
    told = {c: (float(full.get(c, math.nan)) if c in done else math.nan) for c in low}
    finished = [told[c] for c in done if math.isfinite(told[c])]
    stopped = [c for c in low if c not in done and math.isfinite(low[c])]
    stopped.sort(key=lambda c: (-low[c], c))
    top = min(finished) if finished else max((low[c] for c in stopped), default=0.0) + margin
    for i, c in enumerate(stopped):
        told[c] = top - margin * (1 + i)
    return dict(sorted(told.items()))


def reference_jobs(generation: int, tasks: Sequence[Task], references: Mapping[str, float],
                   trainer: str, options: Mapping | None = None) -> list[Job]:
    """One CE job per task of the generation that has no reference yet (full budget, candidate 0)."""
    spec = LossSpec(REFERENCE_FAMILY, {})
    return [Job(job_id=f"g{generation}-ref-t{t}", task=task, specs=(spec,), trainer=trainer, candidates=(0,),
                trainer_options=dict(options or {}))
            for t, task in enumerate(tasks) if task.key() not in references]
