"""The ``population`` inner trainer: K candidate losses trained at once, parameters stacked ``[K, ...]``.

Importing this package registers the ``population`` trainer (it is one of
`workers.jobs.DEFAULT_TRAINER_MODULES`). The parts:

- `workers.population.trainer`: `PopulationTrainer`, the per-member semantics and records;
- `workers.population.run`: `StackedRun`, one run's epoch loop (eager or compiled steps);
- `workers.population.compiled`: the training step under `torch.compile` (fixed shapes, no recompiles);
- `workers.population.stack`: `StackedNet`, K networks of one architecture as one stacked network;
- `workers.population.layers`: the stacked layers `StackedNet` is built from;
- `workers.population.loss`: `MemberLosses`, the K members' losses on stacked logits;
- `workers.population.optim`: stacked SGD / Adam and per-member gradient clipping.
"""
from __future__ import annotations

from evoloss.workers.population.trainer import PopulationTrainer, build_members

__all__ = ["PopulationTrainer", "build_members"]
