"""Trainers for the Tune engine tests (imported by the trial actors too). Names start with ``_tune_test_``.

They use the grid's ``data_dir`` (unused by the tiny materializer of dispatch_test_trainers) as a
scratch folder shared by the test and its actors.
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Sequence

from evoloss.losses import LossSpec
from evoloss.workers.records import EvalRecord
from evoloss.workers.task import Task, TaskData
from evoloss.workers.trainer import register_trainer


def _scores(specs: Sequence[LossSpec]) -> list[EvalRecord]:
    """Deterministic records: accuracy from the first parameter (so CMA-ES sees distinct fitness)."""
    out = []
    for spec in specs:
        acc = 1.0 / (1.0 + abs(float(next(iter(spec.params.values()), 0.0))))
        out.append(EvalRecord(family=spec.family, params=dict(spec.params), val_acc_last=acc, val_acc_best=acc,
                              epochs_run=1, trainer="_tune_test"))
    return out


@register_trainer("_tune_test_exit_once")
class ExitOnceTrainer:
    """Kills its worker the first time it sees a job's task+candidates (a marker file in data_dir), then scores."""

    def __init__(self, **options: object) -> None:
        self.options = options

    def fit(self, task: Task, specs: Sequence[LossSpec], device: str = "cpu",
            data: TaskData | None = None) -> list[EvalRecord]:
        key = hashlib.sha1(repr([sorted(s.params.items()) for s in specs]).encode()).hexdigest()[:16]
        marker = Path(str(task.data_dir)) / f"died-{key}"
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            os._exit(3)
        return _scores(specs)


@register_trainer("_tune_test_sleep")
class SleepTrainer:
    """Sleeps far past any test timeout (a straggler)."""

    def __init__(self, **options: object) -> None:
        self.options = options

    def fit(self, task: Task, specs: Sequence[LossSpec], device: str = "cpu",
            data: TaskData | None = None) -> list[EvalRecord]:
        Path(str(task.data_dir), f"sleeping-{os.getpid()}").write_text(str(os.getpid()))
        time.sleep(120.0)
        return _scores(specs)
