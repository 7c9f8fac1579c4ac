"""The ``population`` inner trainer: K candidate losses trained at once, parameters stacked ``[K, ...]``.

A search scores thousands of candidates on the same task; training them one model at a time is bound
by per-step overhead, not arithmetic (REFERENCE §6). Here the K networks of one task are one stacked
network (`workers.population.stack`): one kernel per layer for all members, a hand-written backward
for MLPs, and stacked SGD/Adam (`workers.population.optim`).

Semantics: member k reproduces the ``standard`` trainer's run of ``specs[k]`` (workers/standard.py)
— same initial weights (``create_arch(..., seed=init_seed(task.seed, member_seeds[k]))``), the same
mini-batches for every member (``protocol.batches(..., seed=task.seed)``), the same lr schedule,
optimiser, gradient clipping (per member), ``max_steps`` and ``eval_every`` rules, the same
divergence check after each epoch (non-finite summed loss or weights) and the same records
(`workers.evaluation.RunHistory`), up to float rounding (one wide matmul sums in another order).

Per-member outcomes: a member whose epoch loss or weights go non-finite is recorded ``diverged`` and
leaves the stack at the end of that epoch; one whose loss function raises is recorded ``failed``
and leaves at once; the others go on unaffected (no computation mixes members).
An error not attributable to one member fails every member still training.

Choices: ``wall_s`` of each record is the population's wall time divided by K (the amortised cost of
one candidate); ``extra`` adds ``population_size``, ``population_wall_s``, ``population_backend`` and
``member_seed``. Architectures that cannot be stacked (custom ``forward``, dropout) are trained one
by one through the ``standard`` trainer (``population_backend = "standard"``); non-default
``member_seeds`` then raise ValueError, since ``standard`` seeds every run with the task seed.
"""
from __future__ import annotations

import math
import time
from typing import Sequence

import torch
from torch import nn

from evoloss.losses import LossSpec
from evoloss.workers.archs import check_arch, create_arch
from evoloss.workers.evaluation import EVAL_BATCH_SIZE, EpochMetrics, EvalSplits, RunHistory, failed_record
from evoloss.workers.population.loss import MemberLosses
from evoloss.workers.population.optim import clip_member_grad_norms, create_stacked_optimizer
from evoloss.workers.population.stack import StackedNet, UnsupportedArchitecture
from evoloss.workers.protocol import OptimSpec, batches, init_seed, lr_at, resolve_optimizer
from evoloss.workers.records import EvalRecord
from evoloss.workers.standard import StandardTrainer, deterministic_mode, validate_inputs
from evoloss.workers.task import Task, TaskData
from evoloss.workers.trainer import register_trainer

BACKWARDS = ("auto", "manual", "autograd")
PROBE_ROWS = 8  # training rows used to check the stacked forward against each member's own
EVAL_ROW_BUDGET, EVAL_MIN_ROWS = 2048, 128  # rows per stacked eval forward: max(min, budget // K), capped


@register_trainer("population")
class PopulationTrainer:
    """Train K networks (one per loss spec) together with stacked parameters.

    Args:
        member_seeds: one init seed per spec (``protocol.init_seed(task.seed, s)``); None = every member
            starts from ``init_seed(task.seed)``, as in ``standard`` (common random numbers).
        eval_every, deterministic, max_steps, eval_batch_size: as in ``standard``.
        loss_grouping: ``"family"`` (one loss call per family with per-sample parameter tensors) or
            ``"member"`` (one call per member); see `workers.population.loss`.
        backward: ``"auto"`` (hand-written for MLP chains, else autograd), ``"manual"`` (raise if the
            architecture has none) or ``"autograd"``.
    """

    name = "population"

    def __init__(
        self, *, member_seeds: Sequence[int] | None = None, eval_every: int = 1, deterministic: bool = True,
        max_steps: int | None = None, eval_batch_size: int = EVAL_BATCH_SIZE, loss_grouping: str = "family",
        backward: str = "auto",
    ) -> None:
        self.standard = StandardTrainer(eval_every=eval_every, deterministic=deterministic, max_steps=max_steps,
                                        eval_batch_size=eval_batch_size)
        if backward not in BACKWARDS:
            raise ValueError(f"backward={backward!r} is not one of {BACKWARDS}")
        MemberLosses([], grouping=loss_grouping)  # validates the name
        if member_seeds is not None:
            member_seeds = list(member_seeds)
            for s in member_seeds:
                if isinstance(s, bool) or not isinstance(s, int):
                    raise TypeError(f"member_seeds must hold ints; got {s!r} in {member_seeds!r}")
                if s < 0:
                    raise ValueError(f"member_seeds must hold non-negative ints; got {s!r} in {member_seeds!r}")
        self.member_seeds = member_seeds
        self.eval_every, self.max_steps, self.eval_batch_size = eval_every, max_steps, eval_batch_size
        self.deterministic, self.loss_grouping, self.backward = deterministic, loss_grouping, backward

    def fit(
        self, task: Task, specs: Sequence[LossSpec], device: str = "cpu", data: TaskData | None = None
    ) -> list[EvalRecord]:
        """Train one network per spec on ``task``, all at once; one `EvalRecord` per spec, in order.

        Raises:
            ValueError / TypeError: as ``standard`` (unknown architecture or loss, bad parameters or
                budget, incompatible data), ``member_seeds`` of the wrong length, or a tensor-valued loss
                parameter (candidates have float parameters; tensors belong to the meta-learned trainers).
        """
        validate_inputs(task, specs)
        specs = list(specs)
        member_losses = MemberLosses(specs, grouping=self.loss_grouping)  # float parameters only
        seeds = self._seeds(task, len(specs))
        optim = resolve_optimizer(task.arch, task.budget)
        if not specs:
            return []
        if data is None:
            from evoloss.workers.materialize import materialize  # the data layer; imported only when needed

            data = materialize(task)
        check_arch(task.arch, tuple(data.input_shape), data.num_classes)
        dev = torch.device(device)
        members = build_members(task.arch, data, seeds, dev)
        try:
            net = StackedNet(members)
            net.check_against(members, data.x_train[:PROBE_ROWS].to(dev))
            net.use_backward(self.backward)
        except UnsupportedArchitecture as exc:
            return self._one_by_one(task, specs, seeds, device, data, reason=str(exc))
        with deterministic_mode(self.deterministic, dev):
            run = _StackedRun(self, task, specs, seeds, optim, net, member_losses, data, dev)
            return run.train()

    def _seeds(self, task: Task, k: int) -> list[int]:
        if self.member_seeds is None:
            return [init_seed(task.seed)] * k
        if len(self.member_seeds) != k:
            raise ValueError(
                f"member_seeds has {len(self.member_seeds)} entries for {k} specs; give one seed per spec "
                "(or None for the task seed)"
            )
        return [init_seed(task.seed, s) for s in self.member_seeds]

    def _one_by_one(
        self, task: Task, specs: list[LossSpec], seeds: list[int], device: str, data: TaskData, reason: str
    ) -> list[EvalRecord]:
        """Fallback for architectures that cannot be stacked: the ``standard`` trainer, member by member."""
        if any(s != init_seed(task.seed) for s in seeds):
            raise ValueError(
                f"member_seeds={self.member_seeds!r}: architecture {task.arch!r} cannot be stacked ({reason}) "
                "and the one-by-one fallback seeds every member with the task seed; drop member_seeds"
            )
        records = self.standard.fit(task, specs, device, data)
        for record, seed in zip(records, seeds):
            record.trainer = self.name
            record.extra.update(population_backend="standard", population_size=len(specs), member_seed=seed,
                                population_fallback_reason=reason)
        return records


def build_members(arch: str, data: TaskData, seeds: Sequence[int], device: torch.device) -> list[nn.Module]:
    """The initial networks: ``create_arch(arch, ..., seed=s)`` per member (built once per distinct seed)."""
    built: dict[int, nn.Module] = {}
    for s in seeds:
        if s not in built:
            built[s] = create_arch(arch, tuple(data.input_shape), data.num_classes, seed=s).to(device)
    return [built[s] for s in seeds]


class _StackedRun:
    """The state of one population run: the stack, who is still in it, and each member's history."""

    def __init__(
        self, trainer: PopulationTrainer, task: Task, specs: list[LossSpec], seeds: list[int], optim: OptimSpec,
        net: StackedNet, losses: MemberLosses, data: TaskData, dev: torch.device,
    ) -> None:
        self.trainer, self.task, self.specs, self.seeds, self.optim = trainer, task, specs, seeds, optim
        self.net, self.dev = net, dev
        self.losses = losses
        self.optimizer = create_stacked_optimizer(optim, net.params)
        self.x_train, self.y_train = data.x_train.to(dev), data.y_train.to(dev)
        self.splits = EvalSplits.from_task_data(data, dev)
        self.alive = list(range(len(specs)))  # original indices of the members in the stack, in stack order
        self.histories = [RunHistory() for _ in specs]
        self.outcomes: dict[int, tuple[str, str]] = {}  # original index -> (status, error)
        self.steps = 0
        self.start = time.perf_counter()

    def train(self) -> list[EvalRecord]:
        """Run every epoch; return the records in spec order (never raises for a bad run)."""
        try:
            for epoch in range(self.task.budget.epochs):
                capped = self._epoch(epoch)
                if capped or not self.alive:
                    break
        except Exception as exc:  # not attributable to one member: every member still training fails
            for pos in range(len(self.alive)):
                self._finish(pos, "failed", f"{type(exc).__name__}: {exc}", steps=self.steps)
        return self._records()

    def _epoch(self, epoch: int) -> bool:
        """One epoch of every member; returns True when ``max_steps`` ended training."""
        budget, trainer = self.task.budget, self.trainer
        lr = lr_at(budget, self.optim.lr, epoch)
        loss_sum = torch.zeros(len(self.alive), dtype=torch.get_default_dtype(), device=self.dev)
        n_batches = 0
        for idx in batches(len(self.y_train), budget.batch_size, seed=self.task.seed, epoch=epoch):
            if trainer.max_steps is not None and self.steps >= trainer.max_steps:
                break
            idx = idx.to(self.dev, non_blocking=True)
            x, y = self.x_train[idx], self.y_train[idx]
            values, grads = self.net.train_step_grads(x, lambda logits: self.losses.value_and_grad(logits, y))
            if budget.grad_clip is not None:
                clip_member_grad_norms(grads, budget.grad_clip)
            self.optimizer.step(self.net.params, grads, lr)
            loss_sum += values.to(loss_sum.dtype)
            n_batches += 1
            failures = self.losses.pop_failures()
            for pos, text in failures.items():
                self._finish(pos, "failed", text, steps=self.steps)
            self.steps += 1
            if failures:
                loss_sum = self._drop_finished(loss_sum)
        self._check_divergence(loss_sum, epoch)
        loss_sum = self._drop_finished(loss_sum)
        capped = trainer.max_steps is not None and self.steps >= trainer.max_steps
        evaluate = capped or (epoch + 1) % trainer.eval_every == 0 or epoch + 1 == budget.epochs
        metrics = self._evaluate() if evaluate and self.alive else None
        for pos, i in enumerate(self.alive):
            history = self.histories[i]
            history.epochs_run, history.steps = epoch + 1, self.steps
            history.train_loss_last = float(loss_sum[pos]) / max(n_batches, 1)
            if metrics is not None:
                history.add_eval(epoch, metrics[pos])
        return capped

    def _check_divergence(self, loss_sum: torch.Tensor, epoch: int) -> None:
        """`workers.evaluation.divergence_reason` for every member at once (same reasons, same order)."""
        finite_loss = torch.isfinite(loss_sum)
        finite_state = self.net.finite_members()
        for pos in (~(finite_loss & finite_state)).nonzero().flatten().tolist():
            if not bool(finite_loss[pos]):
                reason = f"non-finite training loss ({float(loss_sum[pos])}) in epoch {epoch}"
            else:
                reason = f"non-finite weights ({self.net.first_nonfinite(pos)}) after epoch {epoch}"
            self._finish(pos, "diverged", reason, steps=self.steps)

    def _finish(self, pos: int, status: str, error: str, steps: int) -> None:
        i = self.alive[pos]
        if i not in self.outcomes:
            self.outcomes[i] = (status, error)
            self.histories[i].steps = steps

    def _drop_finished(self, loss_sum: torch.Tensor) -> torch.Tensor:
        """Remove members with an outcome from the stack; returns ``loss_sum`` of those that remain."""
        keep = [pos for pos, i in enumerate(self.alive) if i not in self.outcomes]
        if len(keep) == len(self.alive):
            return loss_sum
        index = torch.tensor(keep, dtype=torch.long, device=self.dev)
        self.alive = [self.alive[pos] for pos in keep]
        if self.alive:
            self.net.select(index)
            self.optimizer.select(index)
            self.losses.select(keep)
        return loss_sum[index]

    def _evaluate(self) -> list[EpochMetrics]:
        """Clean val / test / noisy-val accuracy of every member still training (eval mode)."""
        s = self.splits
        # rows per stacked forward: K members widen every activation K-fold, so fewer rows keep it in
        # cache (measured ~3x faster at K=8 and K=32 than eval_batch_size rows); predictions are per row.
        rows = min(self.trainer.eval_batch_size, max(EVAL_MIN_ROWS, EVAL_ROW_BUDGET // len(self.alive)))

        def accuracies(x: torch.Tensor | None, y: torch.Tensor | None) -> list[float]:
            if x is None or y is None or len(y) == 0:
                return [math.nan] * len(self.alive)
            correct = (self.net.predict(x, rows) == y).sum(dim=1)
            return [int(c) / len(y) for c in correct.tolist()]

        val, test, noisy = accuracies(s.x_val, s.y_val), accuracies(s.x_test, s.y_test), \
            accuracies(s.x_noisy_val, s.y_noisy_val)
        return [EpochMetrics(val=v, test=t, noisy_val=n) for v, t, n in zip(val, test, noisy)]

    def _records(self) -> list[EvalRecord]:
        wall = time.perf_counter() - self.start
        backend = "stacked-manual" if self.net.manual else "stacked-autograd"
        records = []
        for i, spec in enumerate(self.specs):
            status, error = self.outcomes.get(i, ("ok", ""))
            extra = {"population_size": len(self.specs), "population_wall_s": wall,
                     "population_backend": backend, "member_seed": self.seeds[i]}
            share = wall / len(self.specs)
            if status == "failed":
                record = failed_record(spec, error, trainer=self.trainer.name, device=str(self.dev), wall_s=share,
                                       history=self.histories[i])
                record.extra.update(extra)
            else:
                record = self.histories[i].to_record(spec, trainer=self.trainer.name, device=str(self.dev),
                                                     wall_s=share, status=status, error=error, extra=extra)
            records.append(record)
        return records
