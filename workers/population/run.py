"""One population run (`workers.population.trainer`): the stack, which member each slot holds, the epochs.

The epoch loop reproduces ``standard``'s (workers/standard.py) for every member at once: the same
batches, lr schedule, divergence check after each epoch and evaluation rule. A step is either the
eager stacked step (`StackedNet.train_step_grads` + the stacked optimiser; members that leave are
removed with ``select``) or the compiled one (`workers.population.compiled.CompiledSteps`; fixed
shapes, so members that leave are retired in place and the last batch is padded with weight-0 rows).
"""
from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import torch
from torch import nn

from evoloss.losses import LossSpec
from evoloss.workers.evaluation import EpochMetrics, EvalSplits, RunHistory, failed_record
from evoloss.workers.population.compiled import CompiledSteps, bucket_size, configure_cache
from evoloss.workers.population.loss import MemberLosses
from evoloss.workers.population.optim import clip_member_grad_norms, create_stacked_optimizer
from evoloss.workers.population.stack import StackedNet
from evoloss.workers.protocol import OptimSpec, batches, lr_at
from evoloss.workers.records import EvalRecord
from evoloss.workers.task import Task, TaskData

if TYPE_CHECKING:
    from evoloss.workers.population.trainer import PopulationTrainer

EVAL_ROW_BUDGET, EVAL_MIN_ROWS = 2048, 128  # rows per stacked eval forward: max(min, budget // K), capped


class StackedRun:
    """The state of one population run: the stack, which member each slot holds, and each member's history.

    ``slots[pos]`` is the original index of the member at stack position ``pos`` (None: a padding slot
    or a member that left the compiled stack). The eager stack shrinks when members leave (``select``);
    the compiled one keeps its shape and retires the slot.
    """

    def __init__(
        self, trainer: PopulationTrainer, task: Task, specs: list[LossSpec], seeds: list[int], optim: OptimSpec,
        data: TaskData, dev: torch.device,
    ) -> None:
        self.trainer, self.task, self.specs, self.seeds, self.optim = trainer, task, specs, seeds, optim
        self.dev, self.note = dev, ""
        self.x_train, self.y_train = data.x_train.to(dev), data.y_train.to(dev)
        self.splits = EvalSplits.from_task_data(data, dev)
        self.eval_x, self.eval_parts = _joined_splits(self.splits)
        self.slots: list[int | None] = list(range(len(specs)))
        self.histories = [RunHistory() for _ in specs]
        self.outcomes: dict[int, tuple[str, str]] = {}  # original index -> (status, error)
        self.steps = 0
        self.compiled: CompiledSteps | None = None
        self.compile_s = 0.0
        self._row_weights: dict[int, torch.Tensor] = {}
        self._epoch_row_ws: torch.Tensor | None = None  # `_epoch_stack`'s row weights (the same every epoch)
        self.start = time.perf_counter()

    def start_eager(self, net: StackedNet, losses: MemberLosses) -> None:
        """Train with the eager stacked step (members leave the stack by ``select``)."""
        self.net, self.losses = net, losses
        self.optimizer = create_stacked_optimizer(self.optim, net.params)

    def start_compiled(self, members: list[nn.Module]) -> str:
        """Build and warm up the compiled step over ``bucket_size(K)`` slots; "" or why it failed."""
        k = len(self.specs)
        slots = bucket_size(k)
        padded_specs = self.specs + [self.specs[0]] * (slots - k)
        losses = MemberLosses(padded_specs)
        configure_cache(self.task.data_dir)
        began = time.perf_counter()
        try:
            net = StackedNet(members + [members[0]] * (slots - k))
            first = batches(len(self.y_train), self.task.budget.batch_size, seed=self.task.seed, epoch=0)[0]
            x, y, row_w = self._padded_batch(first)
            self.compiled = CompiledSteps(net, losses.families, losses.params, k, self.optim,
                                          self.task.budget.grad_clip, x, self.trainer.compile_backend,
                                          chunk=self.trainer.steps_per_call)
            self.compiled.warm_up(x, y, row_w, self.eval_x, self._eval_rows(slots))
        except Exception as exc:  # noqa: BLE001 — any compile problem: the eager step trains instead
            self.compiled = None
            text = " ".join(f"{type(exc).__name__}: {exc}".split())
            return f"compile failed: {text[:500]}"
        self.compile_s = time.perf_counter() - began
        self.net = net
        self.slots = list(range(k)) + [None] * (slots - k)
        return ""

    def _padded_batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``idx``'s rows padded to the batch size with copies of its own rows, and the row weights."""
        idx, w = self._padded_index(idx)
        idx = idx.to(self.dev, non_blocking=True)
        return self.x_train[idx], self.y_train[idx], w

    def _padded_index(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``idx`` padded to the batch size with copies of its own rows, and the row weights (0 = padding)."""
        size, batch = len(idx), min(self.task.budget.batch_size, len(self.y_train))
        if size < batch:
            idx = torch.cat([idx, idx[torch.arange(batch - size) % size]])
        if size not in self._row_weights:
            w = torch.zeros(batch, dtype=self.x_train.dtype, device=self.dev)
            w[:size] = 1
            self._row_weights[size] = w
        return idx, self._row_weights[size]

    def _epoch_batches(self, epoch: int) -> list[tuple[torch.Tensor, ...]]:
        """The epoch's mini-batches as ``(x, y)`` views of one gather of the epoch's rows, instead of one
        gather per step (same rows, same order; eager path)."""
        parts = batches(len(self.y_train), self.task.budget.batch_size, seed=self.task.seed, epoch=epoch)
        order = torch.cat(parts).to(self.dev, non_blocking=True)
        sizes = [len(p) for p in parts]
        return list(zip(self.x_train[order].split(sizes), self.y_train[order].split(sizes)))

    def _epoch_stack(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The epoch's mini-batches stacked ``[batches, B, ...]`` with their row weights ``[batches, B]``
        (compiled path: the last batch padded with weight-0 copies of its own rows), from one gather.
        Every epoch has the same batch sizes, so the row weights are built once per run."""
        parts = batches(len(self.y_train), self.task.budget.batch_size, seed=self.task.seed, epoch=epoch)
        parts[-1], last_w = self._padded_index(parts[-1])
        order = torch.cat(parts).to(self.dev, non_blocking=True)
        n = len(parts)
        if self._epoch_row_ws is None or len(self._epoch_row_ws) != n:
            full = self._padded_index(parts[0])[1] if n > 1 else last_w
            self._epoch_row_ws = torch.stack([full] * (n - 1) + [last_w])
        xs = self.x_train[order].reshape(n, -1, *self.x_train.shape[1:])
        return xs, self.y_train[order].reshape(n, -1), self._epoch_row_ws

    def live(self) -> list[tuple[int, int]]:
        """``(stack position, original index)`` of every member still training."""
        return [(pos, i) for pos, i in enumerate(self.slots) if i is not None and i not in self.outcomes]

    def train(self) -> list[EvalRecord]:
        """Run every epoch; return the records in spec order (never raises for a bad run)."""
        try:
            for epoch in range(self.task.budget.epochs):
                capped = self._epoch(epoch)
                if capped or not self.live():
                    break
        except Exception as exc:  # not attributable to one member: every member still training fails
            for pos, _ in self.live():
                self._finish(pos, "failed", f"{type(exc).__name__}: {exc}", steps=self.steps)
        return self._records()

    def _epoch(self, epoch: int) -> bool:
        """One epoch of every member; returns True when ``max_steps`` ended training."""
        budget, trainer = self.task.budget, self.trainer
        lr = lr_at(budget, self.optim.lr, epoch)
        loss_sum = torch.zeros(len(self.slots), dtype=torch.get_default_dtype() if self.compiled is None
                               else self.compiled.member_w.dtype, device=self.dev)
        n_batches = 0
        if self.compiled is not None:
            xs, ys, row_ws = self._epoch_stack(epoch)
            n_batches = len(xs) if trainer.max_steps is None else max(min(len(xs), trainer.max_steps - self.steps), 0)
            self.compiled.steps(xs[:n_batches], ys[:n_batches], row_ws[:n_batches], lr, loss_sum)
            self.steps += n_batches
        else:
            for batch in self._epoch_batches(epoch):
                if trainer.max_steps is not None and self.steps >= trainer.max_steps:
                    break
                loss_sum = self._eager_step(*batch, lr, loss_sum)
                n_batches += 1
                self.steps += 1
        self._check_divergence(loss_sum, epoch)
        loss_sum = self._drop_finished(loss_sum)
        capped = trainer.max_steps is not None and self.steps >= trainer.max_steps
        evaluate = capped or (epoch + 1) % trainer.eval_every == 0 or epoch + 1 == budget.epochs
        metrics = self._evaluate() if evaluate and self.live() else None
        for pos, i in self.live():
            history = self.histories[i]
            history.epochs_run, history.steps = epoch + 1, self.steps
            history.train_loss_last = float(loss_sum[pos]) / max(n_batches, 1)
            if metrics is not None:
                history.add_eval(epoch, metrics[pos])
        return capped

    def _eager_step(self, x: torch.Tensor, y: torch.Tensor, lr: float, loss_sum: torch.Tensor) -> torch.Tensor:
        """One eager stacked step; a member whose loss raised leaves the stack at once."""
        values, grads = self.net.train_step_grads(x, lambda logits: self.losses.value_and_grad(logits, y))
        if self.task.budget.grad_clip is not None:
            clip_member_grad_norms(grads, self.task.budget.grad_clip)
        self.optimizer.step(self.net.params, grads, lr)
        loss_sum = loss_sum + values.to(loss_sum.dtype)
        failures = self.losses.pop_failures()
        for pos, text in failures.items():
            self._finish(pos, "failed", text, steps=self.steps)
        return self._drop_finished(loss_sum) if failures else loss_sum

    def _check_divergence(self, loss_sum: torch.Tensor, epoch: int) -> None:
        """`workers.evaluation.divergence_reason` for every member at once (same reasons, same order)."""
        finite_loss = torch.isfinite(loss_sum)
        finite_state = self.net.finite_members()
        bad = set((~(finite_loss & finite_state)).nonzero().flatten().tolist())
        for pos, _ in self.live():
            if pos not in bad:
                continue
            if not bool(finite_loss[pos]):
                reason = f"non-finite training loss ({float(loss_sum[pos])}) in epoch {epoch}"
            else:
                reason = f"non-finite weights ({self.net.first_nonfinite(pos)}) after epoch {epoch}"
            self._finish(pos, "diverged", reason, steps=self.steps)

    def _finish(self, pos: int, status: str, error: str, steps: int) -> None:
        i = self.slots[pos]
        if i is not None and i not in self.outcomes:
            self.outcomes[i] = (status, error)
            self.histories[i].steps = steps

    def _drop_finished(self, loss_sum: torch.Tensor) -> torch.Tensor:
        """Take members with an outcome out of training; returns ``loss_sum`` of the stack that remains."""
        gone = [pos for pos, i in enumerate(self.slots) if i is not None and i in self.outcomes]
        if not gone:
            return loss_sum
        if self.compiled is not None:  # fixed shapes: retire the slots
            for pos in gone:
                self.compiled.retire(pos)
                self.slots[pos] = None
            return loss_sum
        keep = [pos for pos in range(len(self.slots)) if pos not in gone]
        index = torch.tensor(keep, dtype=torch.long, device=self.dev)
        self.slots = [self.slots[pos] for pos in keep]
        if self.slots:
            self.net.select(index)
            self.optimizer.select(index)
            self.losses.select(keep)
        return loss_sum[index]

    def _evaluate(self) -> list[EpochMetrics]:
        """Clean val / test / noisy-val accuracy of every stack position (eval mode), from one prediction
        pass over the splits joined end to end (`_joined_splits`)."""
        size = self.net.size
        if len(self.eval_x):
            rows = self._eval_rows(size)
            predicted = self.net.predict(self.eval_x, rows) if self.compiled is None else \
                self.compiled.predict(self.eval_x, rows)
        accuracies = {}
        for name, (start, y) in self.eval_parts.items():
            if y is None or len(y) == 0:
                accuracies[name] = [math.nan] * size
                continue
            correct = (predicted[:, start:start + len(y)] == y).sum(dim=1)
            accuracies[name] = [int(c) / len(y) for c in correct.tolist()]
        return [EpochMetrics(val=v, test=t, noisy_val=n)
                for v, t, n in zip(accuracies["val"], accuracies["test"], accuracies["noisy_val"])]

    def _eval_rows(self, size: int) -> int:
        return eval_chunk_rows(size, len(self.eval_x), self.trainer.eval_batch_size)

    def _records(self) -> list[EvalRecord]:
        wall = time.perf_counter() - self.start
        if self.compiled is not None:
            backend, execution = "stacked-compiled", "stacked-compiled"
        else:
            backend, execution = ("stacked-manual" if self.net.manual else "stacked-autograd"), "stacked"
        records = []
        for i, spec in enumerate(self.specs):
            status, error = self.outcomes.get(i, ("ok", ""))
            extra = {"population_size": len(self.specs), "population_wall_s": wall,
                     "population_backend": backend, "member_seed": self.seeds[i]}
            if self.compiled is not None:
                extra.update(compile_s=self.compile_s, population_slots=self.net.size)
            share = wall / len(self.specs)
            if status == "failed":
                record = failed_record(spec, error, trainer=self.trainer.name, device=str(self.dev), wall_s=share,
                                       history=self.histories[i])
                record.extra.update(extra)
            else:
                record = self.histories[i].to_record(spec, trainer=self.trainer.name, device=str(self.dev),
                                                     wall_s=share, status=status, error=error, extra=extra)
            record.execution, record.execution_note = execution, self.note
            records.append(record)
        return records


def eval_chunk_rows(size: int, rows: int, eval_batch_size: int) -> int:
    """Rows per stacked eval forward of ``size`` stack slots over ``rows`` joined eval rows: K members widen
    every activation K-fold, so fewer rows keep it in cache (measured ~3x faster at K=8 and K=32 than
    eval_batch_size rows); predictions are per row. The rows are cut into equal chunks of at most that
    many, so the compiled path's padding of its last chunk is under one row per chunk."""
    cap = min(eval_batch_size, max(EVAL_MIN_ROWS, EVAL_ROW_BUDGET // size))
    n = max(rows, 1)
    return math.ceil(n / math.ceil(n / cap))


def _joined_splits(splits: EvalSplits) -> tuple[torch.Tensor, dict[str, tuple[int, torch.Tensor | None]]]:
    """The val, test and noisy-val inputs joined end to end (one prediction pass per evaluation), and each
    split's ``(first row, labels)`` in the joined rows (labels None: the split is absent)."""
    named = {"val": (splits.x_val, splits.y_val), "test": (splits.x_test, splits.y_test),
             "noisy_val": (splits.x_noisy_val, splits.y_noisy_val)}
    xs, parts, start = [], {}, 0
    for name, (x, y) in named.items():
        if x is None or y is None or len(y) == 0:
            parts[name] = (start, None)
            continue
        xs.append(x)
        parts[name] = (start, y)
        start += len(y)
    if not xs:
        return splits.x_val[:0], parts
    return (torch.cat(xs) if len(xs) > 1 else xs[0]), parts
