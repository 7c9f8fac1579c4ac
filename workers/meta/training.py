"""The training loop every meta-learned trainer shares: `MetaMethod` hooks driven by `MetaRun`.

A run follows the shared protocol exactly as the standard trainer does (``workers.protocol``:
optimiser of the architecture, mini-batch order of each epoch, learning-rate schedule, init seed;
``workers.archs.create_arch``), and adds, before the real step of a batch, the method's meta step
when it is due (``method.lookahead.every`` = T_meta) on a meta batch; the hooks are listed in
`workers.meta.method`.

Meta batches cycle through seeded permutations of the meta set. `MetaRun.steps()` is a generator
(one yield per optimiser step) so that NARL's multi-task meta-training can interleave runs.
Divergence (non-finite training loss, meta-gradient or weights) ends a run with status
``diverged``; any other exception inside a run gives ``failed``; neither raises.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Iterator

import torch

from evoloss.losses import LossSpec
from evoloss.workers.archs import check_arch, create_arch
from evoloss.workers.evaluation import EvalSplits, RunHistory, divergence_reason, evaluate_splits, failed_record
from evoloss.workers.meta.lookahead import MetaGradient, check_head_only
from evoloss.workers.meta.method import Batch, EpochPlan, MetaMethod, derived_seed
from evoloss.workers.meta.paper_protocols import step_factor
from evoloss.workers.protocol import batches, init_seed, lr_at, resolve_optimizer
from evoloss.workers.records import EvalRecord
from evoloss.workers.standard import deterministic_mode, make_optimizer, seeded_rng, validate_inputs
from evoloss.workers.task import Task, TaskData


class MetaBatches:
    """Meta batches cycling through seeded permutations of a meta set (no replacement within a pass)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int) -> None:
        if x is None or y is None or len(y) == 0:
            raise ValueError("the meta set is empty: this trainer needs meta samples")
        self.x, self.y = x, y
        self.batch_size = max(1, min(int(batch_size), len(y)))
        self._generator = torch.Generator().manual_seed(seed)
        self._order = torch.empty(0, dtype=torch.long)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next meta batch (x, y); a new seeded permutation starts when the current one runs out."""
        if len(self._order) < self.batch_size:
            self._order = torch.randperm(len(self.y), generator=self._generator)
        idx, self._order = self._order[: self.batch_size], self._order[self.batch_size :]
        idx = idx.to(self.y.device)
        return self.x[idx], self.y[idx]


META_SOURCES = ("meta", "val")


@dataclass
class RunOptions:
    """Options every meta trainer takes: meta batch size (None: the budget's batch size), a cap on
    optimiser steps, how often to evaluate (epochs), deterministic kernels (as the standard trainer);
    ``meta_source`` "meta" (the task's clean meta split) or "val" (the clean validation split is the
    meta set: an equal-clean-budget compare, where selection and meta-learning read the same labels);
    ``protocol`` "default" | "paper" with the paper's step milestones (fractions of the run) and gamma."""

    meta_batch_size: int | None = None
    max_steps: int | None = None
    eval_every: int = 1
    deterministic: bool = True
    meta_source: str = "meta"
    protocol: str = "default"
    lr_milestones: tuple[float, ...] = ()
    lr_gamma: float = 1.0

    def __post_init__(self) -> None:
        if self.protocol not in ("default", "paper"):
            raise ValueError(f"protocol={self.protocol!r} is not one of ('default', 'paper')")
        if not all(isinstance(f, float) and 0 < f < 1 for f in self.lr_milestones) or not self.lr_gamma > 0:
            raise ValueError(f"lr_milestones={self.lr_milestones!r} must be fractions in (0, 1) and "
                             f"lr_gamma={self.lr_gamma!r} > 0")
        if self.meta_source not in META_SOURCES:
            raise ValueError(f"meta_source={self.meta_source!r} is not one of {META_SOURCES} "
                             "('val': the clean validation split is the meta set)")
        for name in ("meta_batch_size", "max_steps"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{name}={v!r} must be a positive integer or None")
        if isinstance(self.eval_every, bool) or not isinstance(self.eval_every, int) or self.eval_every < 1:
            raise ValueError(f"eval_every={self.eval_every!r} must be a positive integer (epochs)")
        if not isinstance(self.deterministic, bool):
            raise TypeError(f"deterministic={self.deterministic!r} must be True or False")


def data_on(data: TaskData, device: str) -> TaskData:
    """``data`` with its training and meta splits on ``device`` (val/test move through `EvalSplits`)."""
    moved = {k: getattr(data, k).to(device) for k in ("x_train", "y_train", "y_train_clean")}
    for k in ("x_meta", "y_meta"):
        v = getattr(data, k)
        moved[k] = None if v is None else v.to(device)
    return dataclasses.replace(data, **moved)


@dataclass
class MetaRun:
    """One network trained on one task by one meta-learned method; `steps()` drives it.

    ``data`` must already be on ``device`` (see `data_on`); building the run validates the task
    (architecture, optimiser, meta set) and raises ValueError for bad input before any training.
    """

    trainer: str
    task: Task
    data: TaskData
    method: MetaMethod
    spec: LossSpec
    device: str = "cpu"
    options: RunOptions = field(default_factory=RunOptions)

    def __post_init__(self) -> None:
        self.optim_spec = resolve_optimizer(self.task.arch, self.task.budget)
        self.model = create_arch(
            self.task.arch, tuple(self.data.input_shape), self.data.num_classes, seed=init_seed(self.task.seed)
        ).to(self.device)
        self.optimizer = make_optimizer(self.model, self.optim_spec)
        self.splits = EvalSplits.from_task_data(self.data, self.device)
        self.history = RunHistory()
        self.step = self.meta_steps = 0
        self.epoch = -1
        self.status, self.error = "ok", ""
        self.per_epoch: dict[str, list] = {}
        self.last_meta: MetaGradient | None = None
        self._clean_meta: MetaBatches | None = None
        self._wall = 0.0
        check_meta_set(self.trainer, self.task, self.data, self.method)
        self._check_lookahead()

    def _check_lookahead(self) -> None:
        """Raise ValueError (before training) for a look-ahead this task's model or optimiser cannot take."""
        config = self.method.lookahead
        if config.mode == "optimizer" and self.optim_spec.name != "sgd":
            raise ValueError(
                f"trainer {self.trainer!r}: lookahead='optimizer' follows a live SGD, but task {self.task.key()} "
                f"trains with {self.optim_spec.name!r}; use lookahead='sgd' or budget.optimizer='sgd'"
            )
        if config.head_only:  # eval mode: no dropout draw from the caller's RNG, any batch size for BatchNorm
            self.model.train(False)  # eval mode
            check_head_only(self.model, self.data.x_train[:2])
            self.model.train()

    def generator(self, label: str) -> torch.Generator:
        """A fresh CPU generator for the random stream ``label`` of this run."""
        return torch.Generator().manual_seed(derived_seed(self.task.seed, label))

    @property
    def planned_steps(self) -> int:
        """Optimiser steps a full run takes: epochs × batches per epoch, capped by ``max_steps``."""
        per_epoch = -(-len(self.data.y_train) // self.task.budget.batch_size)
        total = self.task.budget.epochs * per_epoch
        return total if self.options.max_steps is None else min(total, self.options.max_steps)

    def steps(self) -> Iterator[int]:
        """Train; yield the step count after every optimiser step. Never raises for a bad run.

        ``wall_s`` counts only the time spent inside this run (interleaved runs do not add up).
        """
        inner = self._train()
        while True:
            start = time.perf_counter()
            try:
                step = next(inner)
            except StopIteration:
                return
            except Exception as exc:  # a crash inside a run is a failed record, not an exception
                self.status, self.error = "failed", f"{type(exc).__name__}: {exc}"
                return
            finally:
                self._wall += time.perf_counter() - start
            yield step

    def run(self) -> EvalRecord:
        """Train to the end (global RNG seeded with the init seed, as the standard trainer) and return the record."""
        with seeded_rng(init_seed(self.task.seed), torch.device(self.device)):
            for _ in self.steps():
                pass
        return self.record()

    def record(self) -> EvalRecord:
        """The run's `EvalRecord`: the standard fields plus the learned quantities in ``extra``."""
        if self.status == "failed":
            record = failed_record(self.spec, self.error, trainer=self.trainer, device=self.device,
                                   wall_s=self._wall, history=self.history)
            record.protocol, record.clean_labels_used = self.options.protocol, self.clean_labels_used
            return record
        extra: dict[str, object] = {"per_epoch": self.per_epoch, "meta_steps": self.meta_steps,
                                    "lookahead": dataclasses.asdict(self.method.lookahead)}
        if self.last_meta is not None:
            extra["meta_loss_last"] = self.last_meta.meta_loss
        extra.update(self.method.final_extra(self))
        record = self.history.to_record(self.spec, trainer=self.trainer, device=self.device, wall_s=self._wall,
                                        status=self.status, error=self.error, extra=extra)
        record.protocol, record.clean_labels_used = self.options.protocol, self.clean_labels_used
        return record

    @property
    def clean_labels_used(self) -> int:
        """Clean labels this run consumed: the meta set's size (0 for a method that builds its own)."""
        if not self.method.needs_clean_meta or self.data.y_meta is None:
            return 0
        return int(len(self.data.y_meta))

    def _train(self) -> Iterator[int]:
        budget = self.task.budget
        self.method.prepare(self)
        for epoch in range(budget.epochs):
            self.epoch = epoch
            lr = lr_at(budget, self.optim_spec.lr, epoch) * step_factor(
                self.options.lr_milestones, self.options.lr_gamma, epoch, budget.epochs)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            plan = self.method.begin_epoch(self, epoch)
            meta_batches = self._meta_batches(plan, epoch)
            loss_sum, batches_run = 0.0, 0
            for batch in self._epoch_batches(plan, epoch):
                if self._max_steps_reached():
                    break
                loss = self._one_step(batch, meta_batches, lr)
                if loss is None:
                    return
                loss_sum, batches_run = loss_sum + loss, batches_run + 1
                yield self.step
            reason = divergence_reason(loss_sum, self.model, epoch)
            if reason is not None:
                self._diverge(reason)
                return
            self._end_epoch(epoch, loss_sum / max(batches_run, 1))
            if self._max_steps_reached():
                return

    def _max_steps_reached(self) -> bool:
        return self.options.max_steps is not None and self.step >= self.options.max_steps

    def _epoch_batches(self, plan: EpochPlan, epoch: int) -> Iterator[Batch]:
        rows = plan.train_index
        n = len(self.data.y_train) if rows is None else len(rows)
        for idx in batches(n, self.task.budget.batch_size, self.task.seed, epoch):
            index = (idx if rows is None else rows[idx]).to(self.data.y_train.device)
            yield Batch(self.data.x_train[index], self.data.y_train[index], index)

    def _meta_batches(self, plan: EpochPlan, epoch: int) -> MetaBatches | None:
        size = self.options.meta_batch_size or self.task.budget.batch_size
        if not plan.meta:
            return None
        if plan.x_meta is not None:
            return MetaBatches(plan.x_meta, plan.y_meta, size, derived_seed(self.task.seed, f"meta-batches/{epoch}"))
        if not self.method.needs_clean_meta:
            return None
        if self._clean_meta is None:
            self._clean_meta = MetaBatches(self.data.x_meta, self.data.y_meta, size,
                                           derived_seed(self.task.seed, "meta-batches"))
        return self._clean_meta

    def _one_step(self, batch: Batch, meta_batches: MetaBatches | None, lr: float) -> float | None:
        """Meta step (when due) then the real step; the batch loss, or None when the run diverged."""
        self.model.train()  # the look-ahead runs in the same mode as the real step (BatchNorm batch statistics)
        if meta_batches is not None and self.method.lookahead.due(self.step):
            x_meta, y_meta = meta_batches.next()
            result = self.method.meta_step(self, batch, x_meta, y_meta, lr)
            if result is not None:
                self.meta_steps += 1
                self.last_meta = result
                if not math.isfinite(result.meta_loss) or not all(bool(torch.isfinite(g).all()) for g in result.grads):
                    return self._diverge(f"non-finite meta-gradient at step {self.step} in epoch {self.epoch}")
        loss = self.method.train_loss(self, self.model(batch.x), batch)
        value = float(loss.detach())
        if not math.isfinite(value):  # stop at once: a NaN loss would also poison the meta-parameters
            return self._diverge(f"non-finite training loss ({value}) at step {self.step} in epoch {self.epoch}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.task.budget.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.task.budget.grad_clip)
        self.optimizer.step()
        self.step += 1
        self.history.steps = self.step
        return value

    def _diverge(self, reason: str) -> None:
        self.status, self.error = "diverged", reason
        return None

    def _end_epoch(self, epoch: int, train_loss: float) -> None:
        self.history.epochs_run = epoch + 1
        self.history.train_loss_last = train_loss
        last = epoch == self.task.budget.epochs - 1 or self._max_steps_reached()
        if (epoch + 1) % self.options.eval_every and not last:
            return
        self.history.add_eval(epoch, evaluate_splits(self.model, self.splits))
        for key, value in self.method.epoch_quantities(self).items():
            self.per_epoch.setdefault(key, []).append(value)


def check_meta_set(trainer: str, task: Task, data: TaskData, method: MetaMethod) -> None:
    """Raise ValueError when ``method`` needs a clean meta set and ``data`` has none."""
    if method.needs_clean_meta and (data.y_meta is None or len(data.y_meta) == 0):
        raise ValueError(
            f"trainer {trainer!r} needs a clean meta set, but task {task.key()} has none: "
            "set task.splits.meta_per_class or task.splits.meta_total > 0"
        )


def prepare_data(task: Task, specs: list[LossSpec], data: TaskData | None, device: str,
                 meta_source: str = "meta") -> TaskData:
    """Validate the task and specs like the standard trainer, materialise when needed, move to ``device``.

    ``meta_source="val"`` makes the clean validation split the meta set (`RunOptions`)."""
    validate_inputs(task, specs)
    resolve_optimizer(task.arch, task.budget)
    if data is None:
        from evoloss.workers.materialize import materialize  # the data layer; imported when first needed

        data = materialize(task)
    check_arch(task.arch, tuple(data.input_shape), data.num_classes)
    if meta_source == "val":
        data = dataclasses.replace(data, x_meta=data.x_val, y_meta=data.y_val)
    return data_on(data, device)


def fit_runs(
    trainer: str,
    task: Task,
    specs: list[LossSpec],
    methods: list[MetaMethod],
    *,
    device: str = "cpu",
    data: TaskData | None = None,
    options: RunOptions | None = None,
) -> list[EvalRecord]:
    """Train one run per (spec, method) pair on ``task`` one after another; one record each.

    ``data`` is the task's materialised tensors (materialised here when None). Bad input (task,
    specs, architecture, a missing meta set) raises ValueError before any training starts.
    """
    options = options or RunOptions()
    data = prepare_data(task, specs, data, device, options.meta_source)
    for method in methods:
        check_meta_set(trainer, task, data, method)
    with deterministic_mode(options.deterministic, torch.device(device)):
        return [MetaRun(trainer, task, data, method, spec, device, options).run()
                for spec, method in zip(specs, methods)]
