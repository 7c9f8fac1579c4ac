"""Tiny trainers and a tiny materializer for the dispatch tests (imported by the Ray actors too).

Trainer names start with ``_test_``. None of them trains a network: each one exercises a path of
the dispatcher (normal results, NaN metrics, an exception, a worker that dies, a straggler).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Sequence

import torch

from evoloss.losses import LossSpec
from evoloss.workers.jobs import Job
from evoloss.workers.records import EvalRecord
from evoloss.workers.task import Budget, NoiseSpec, Task, TaskData
from evoloss.workers.trainer import register_trainer

MATERIALIZER = "tests.search.dispatch_test_trainers:tiny_materialize"
MODULES = ("tests.search.dispatch_test_trainers",)
MATERIALIZE_CALLS: list[str] = []  # task keys materialised in this process, in order


def make_task(seed: int = 0, arch: str = "mlp2", dataset: str = "digits") -> Task:
    """A small task description (never materialised for real: `tiny_materialize` stands in)."""
    return Task(dataset=dataset, arch=arch, noise=NoiseSpec("symmetric", 0.8, "exact"), budget=Budget(epochs=2),
                seed=seed)


def make_job(job_id: str, trainer: str = "_test_echo", k: int = 2, seed: int = 0, **options: object) -> Job:
    """A job of ``k`` candidates named ``<job_id>-c<i>`` for trainer ``trainer`` with ``options``."""
    specs = tuple(LossSpec("ce", {}) if i % 2 else LossSpec("_test_family", {"a": 0.1 * (i + 1)}) for i in range(k))
    return Job(job_id=job_id, task=make_task(seed), specs=specs, trainer=trainer, trainer_options=options,
               candidates=tuple(f"{job_id}-c{i}" for i in range(k)))


def tiny_materialize(task: Task) -> TaskData:
    """A seeded 12-sample, 3-class TaskData (no dataset files needed)."""
    MATERIALIZE_CALLS.append(task.key())
    g = torch.Generator().manual_seed(task.seed)
    x = torch.randn(12, 4, generator=g)
    y = torch.randint(0, 3, (12,), generator=g)
    return TaskData(x_train=x, y_train=y, y_train_clean=y, x_val=x[:4], y_val=y[:4], x_test=x[:4],
                    y_test=y[:4], num_classes=3, input_shape=(4,))


def expected_val_acc(spec: LossSpec, task: Task) -> float:
    """What `_test_echo` reports: a pure function of the spec and the task seed."""
    return round((float(spec.params.get("a", 0.5)) + 0.01 * task.seed) % 1.0, 6)


class _Base:
    name = "_test_base"

    def __init__(self, **options: object) -> None:
        self.options = options

    def fit(self, task: Task, specs: Sequence[LossSpec], device: str = "cpu",
            data: TaskData | None = None) -> list[EvalRecord]:
        self.before(task)
        return [self.record(s, task, device, data) for s in specs]

    def before(self, task: Task) -> None:
        """Hook run once per job before the records are built."""

    def record(self, spec: LossSpec, task: Task, device: str, data: TaskData | None) -> EvalRecord:
        acc = expected_val_acc(spec, task)
        return EvalRecord(family=spec.family, params=dict(spec.params), val_acc_last=acc, val_acc_best=acc,
                          epochs_run=1, device=device, trainer=self.name,
                          extra={"pid": os.getpid(), "n_train": 0 if data is None else int(data.x_train.shape[0])})


@register_trainer("_test_echo")
class EchoTrainer(_Base):
    name = "_test_echo"

    def before(self, task: Task) -> None:
        time.sleep(float(self.options.get("sleep_s", 0.0)))


@register_trainer("_test_nan")
class NanTrainer(_Base):
    name = "_test_nan"

    def record(self, spec: LossSpec, task: Task, device: str, data: TaskData | None) -> EvalRecord:
        return EvalRecord(family=spec.family, params=dict(spec.params), status="diverged",
                          error="loss became NaN at step 3", train_loss_last=float("nan"), trainer=self.name)


@register_trainer("_test_raise")
class RaisingTrainer(_Base):
    name = "_test_raise"

    def before(self, task: Task) -> None:
        raise RuntimeError(str(self.options.get("message", "boom")))


@register_trainer("_test_exit_once")
class ExitOnceTrainer(_Base):
    """Kills its own worker process the first time (a marker file remembers), then behaves like echo."""

    name = "_test_exit_once"

    def before(self, task: Task) -> None:
        marker = Path(str(self.options["marker"]))
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            os._exit(3)


@register_trainer("_test_exit_always")
class ExitAlwaysTrainer(_Base):
    name = "_test_exit_always"

    def before(self, task: Task) -> None:
        os._exit(4)


@register_trainer("_test_wrong_count")
class WrongCountTrainer(_Base):
    name = "_test_wrong_count"

    def fit(self, task: Task, specs: Sequence[LossSpec], device: str = "cpu",
            data: TaskData | None = None) -> list[EvalRecord]:
        return super().fit(task, specs, device, data)[:-1]
