"""The ``standard`` inner trainer: one network per candidate loss, trained one after another.

This is the reference semantics every other trainer reproduces (the population trainer member by
member). For each spec, with ``s = protocol.init_seed(task.seed)``:

1. the network is ``create_arch(task.arch, input_shape, num_classes, seed=s)``; the global RNG is
   then seeded with ``s`` for the run (dropout), inside a fork so the caller's RNG is untouched;
2. the optimiser is ``protocol.resolve_optimizer(arch, budget)``: SGD (momentum, weight decay) or
   Adam (weight decay, L2 form); at the start of epoch ``e`` every group's lr is set to
   ``protocol.lr_at(budget, lr, e)``;
3. a step on batch ``idx`` of ``protocol.batches(n, batch_size, seed=task.seed, epoch=e)`` is
   ``loss = create_loss(spec)(model(x[idx]), y_noisy[idx])`` (mean), zero grads, backward, clip the
   global gradient norm to ``budget.grad_clip`` if set, optimiser step; ``max_steps`` caps the
   total number of steps (the run ends after the epoch in which the cap is reached);
4. after each epoch: a non-finite summed loss or weight ends the run as ``diverged``; otherwise
   ``train_loss_last`` = the mean of the epoch's batch losses, and every ``eval_every`` epochs (and
   always the last one) clean val / test / noisy-val accuracy are recorded (`workers.evaluation`).

Any other exception inside a run gives a ``failed`` record; the next spec still trains. Bad input
(unknown architecture or loss, an input shape the architecture cannot take) raises ValueError
before anything trains.
"""
from __future__ import annotations

import contextlib
import os
import time
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from evoloss.losses import LossSpec, create_loss
from evoloss.losses.module import Loss
from evoloss.workers.archs import check_arch, create_arch, get_arch
from evoloss.workers.evaluation import (
    EVAL_BATCH_SIZE,
    EvalSplits,
    RunHistory,
    divergence_reason,
    evaluate_splits,
    failed_record,
)
from evoloss.workers.protocol import OptimSpec, batches, init_seed, lr_at, resolve_optimizer
from evoloss.workers.records import EvalRecord
from evoloss.workers.task import Budget, Task, TaskData
from evoloss.workers.trainer import register_trainer

BatchLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@register_trainer("standard")
class StandardTrainer:
    """Train one network per loss spec, sequentially (the reference trainer; see the module docstring).

    Args:
        eval_every: evaluate every this many epochs (the last epoch is always evaluated).
        deterministic: on CUDA, run ``fit`` under deterministic kernels (`deterministic_mode`; the
            previous global settings are restored afterwards). CPU runs are deterministic anyway.
        max_steps: optional cap on the number of optimiser steps of each run.
        eval_batch_size: rows per forward pass when evaluating.
    """

    name = "standard"

    def __init__(
        self, *, eval_every: int = 1, deterministic: bool = True, max_steps: int | None = None,
        eval_batch_size: int = EVAL_BATCH_SIZE,
    ) -> None:
        _check_positive_int("eval_every", eval_every, "evaluate every epoch with eval_every=1")
        _check_positive_int("eval_batch_size", eval_batch_size, "use e.g. 1024")
        if max_steps is not None:
            _check_positive_int("max_steps", max_steps, "use None for no cap")
        if not isinstance(deterministic, bool):
            raise TypeError(f"deterministic={deterministic!r} must be True or False")
        self.eval_every = eval_every
        self.deterministic = deterministic
        self.max_steps = max_steps
        self.eval_batch_size = eval_batch_size

    def fit(
        self, task: Task, specs: Sequence[LossSpec], device: str = "cpu", data: TaskData | None = None
    ) -> list[EvalRecord]:
        """Train one network per spec on ``task``; one `EvalRecord` per spec, in order.

        Raises:
            ValueError / TypeError: unknown architecture or loss family, bad loss parameters, a bad
                budget, or data whose input shape the architecture cannot take.
        """
        losses = validate_inputs(task, specs)
        optim = resolve_optimizer(task.arch, task.budget)
        if data is None:
            from evoloss.workers.materialize import materialize  # the data layer; imported only when needed

            data = materialize(task)
        check_arch(task.arch, tuple(data.input_shape), data.num_classes)
        check_data(data)
        dev = torch.device(device)
        x_train, y_train = data.x_train.to(dev), data.y_train.to(dev)
        splits = EvalSplits.from_task_data(data, dev)
        with deterministic_mode(self.deterministic, dev):
            return [
                self._run(task, spec, batch_loss(loss), optim, data, x_train, y_train, splits, dev)
                for spec, loss in zip(specs, losses)
            ]

    def _run(
        self, task: Task, spec: LossSpec, loss_fn: BatchLoss, optim: OptimSpec, data: TaskData,
        x_train: torch.Tensor, y_train: torch.Tensor, splits: EvalSplits, dev: torch.device,
    ) -> EvalRecord:
        """Train and evaluate one network; never raises for a bad run."""
        start = time.perf_counter()
        history = RunHistory()
        seed = init_seed(task.seed)
        try:
            with seeded_rng(seed, dev):
                model = create_arch(task.arch, tuple(data.input_shape), data.num_classes, seed=seed).to(dev)
                reason = self._train(task, model, loss_fn, optim, x_train, y_train, splits, history)
        except Exception as exc:  # a failed run is a record, never an exception (workers.trainer)
            record = failed_record(spec, exc, trainer=self.name, device=str(dev),
                                   wall_s=time.perf_counter() - start, history=history)
            return record
        status = "ok" if reason is None else "diverged"
        record = history.to_record(spec, trainer=self.name, device=str(dev), wall_s=time.perf_counter() - start,
                                   status=status, error=reason or "")
        return record

    def _train(
        self, task: Task, model: nn.Module, loss_fn: BatchLoss, optim: OptimSpec,
        x_train: torch.Tensor, y_train: torch.Tensor, splits: EvalSplits, history: RunHistory,
    ) -> str | None:
        """The epoch loop (steps 2-4 of the module docstring); returns the divergence reason or None."""
        budget = task.budget
        optimizer = make_optimizer(model, optim)
        params = [p for p in model.parameters() if p.requires_grad]
        for epoch in range(budget.epochs):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(budget, optim.lr, epoch)
            model.train()
            loss_sum = torch.zeros((), device=x_train.device)
            n_batches = 0
            for idx in batches(len(y_train), budget.batch_size, seed=task.seed, epoch=epoch):
                if self.max_steps is not None and history.steps >= self.max_steps:
                    break
                idx = idx.to(x_train.device, non_blocking=True)
                loss = loss_fn(model(x_train[idx]), y_train[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if budget.grad_clip is not None:
                    nn.utils.clip_grad_norm_(params, budget.grad_clip)
                optimizer.step()
                loss_sum += loss.detach()
                n_batches += 1
                history.steps += 1
            reason = divergence_reason(loss_sum, model, epoch)
            if reason is not None:
                return reason
            history.epochs_run = epoch + 1
            history.train_loss_last = float(loss_sum) / max(n_batches, 1)
            capped = self.max_steps is not None and history.steps >= self.max_steps
            if capped or (epoch + 1) % self.eval_every == 0 or epoch + 1 == budget.epochs:
                history.add_eval(epoch, evaluate_splits(model, splits, batch_size=self.eval_batch_size))
            if capped:
                break
        return None


def validate_inputs(task: Task, specs: Sequence[LossSpec]) -> list[Loss]:
    """Check the task's architecture name, budget and every spec; return the built loss modules.

    Raises ValueError/TypeError naming the bad field before any training starts.
    """
    if not isinstance(task, Task):
        raise TypeError(f"task must be a workers.task.Task; got {type(task).__name__}")
    get_arch(task.arch)
    check_budget(task.budget)
    if isinstance(specs, (LossSpec, str)) or not isinstance(specs, Sequence):
        raise TypeError(f"specs must be a sequence of LossSpec; got {type(specs).__name__}")
    for i, spec in enumerate(specs):
        if not isinstance(spec, LossSpec):
            raise TypeError(f"specs[{i}] must be a LossSpec; got {type(spec).__name__} {spec!r}")
    return [create_loss(spec) for spec in specs]


def batch_loss(loss: Loss) -> BatchLoss:
    """``(logits, targets) -> mean loss``: the same value as ``loss(logits, targets)`` without
    `Loss.forward`'s per-call input checks (two reductions and host syncs per step); `check_data`
    validates the labels once per fit instead."""
    fn, params = loss.family.fn, dict(loss.spec.params)
    return lambda logits, targets: fn(logits, targets, **params).mean()


def check_data(data: TaskData) -> None:
    """Reject tensors no trainer can use: empty training split, non-float inputs, labels outside
    ``[0, num_classes)`` or of a non-int64 dtype, or inputs whose rows do not match the labels."""
    splits = [("train", data.x_train, data.y_train), ("val", data.x_val, data.y_val),
              ("test", data.x_test, data.y_test)]
    if data.x_noisy_val is not None and data.y_noisy_val is not None:
        splits.append(("noisy_val", data.x_noisy_val, data.y_noisy_val))
    if len(data.y_train) == 0:
        raise ValueError("TaskData.y_train is empty: a task needs at least one training row")
    for name, x, y in splits:
        if not x.is_floating_point() or y.dtype != torch.int64:
            raise TypeError(f"TaskData.x_{name}/y_{name} must be float/int64 tensors; got {x.dtype}/{y.dtype}")
        if x.shape[0] != y.shape[0] or tuple(x.shape[1:]) != tuple(data.input_shape):
            raise ValueError(
                f"TaskData.x_{name} has shape {tuple(x.shape)} for {y.shape[0]} labels and input_shape "
                f"{tuple(data.input_shape)}; expected [{y.shape[0]}, *input_shape]"
            )
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= data.num_classes):
            raise ValueError(
                f"TaskData.y_{name} has labels in [{int(y.min())}, {int(y.max())}]; they must lie in "
                f"[0, {data.num_classes - 1}] for num_classes={data.num_classes}"
            )


def check_budget(budget: Budget) -> None:
    """Reject a budget no trainer can run (raises ValueError naming the field and the fix)."""
    _check_positive_int("budget.epochs", budget.epochs, "train for at least one epoch")
    _check_positive_int("budget.batch_size", budget.batch_size, "use e.g. 64")
    if budget.weight_decay < 0:
        raise ValueError(f"budget.weight_decay={budget.weight_decay!r} must be >= 0")
    if budget.grad_clip is not None and not budget.grad_clip > 0:
        raise ValueError(f"budget.grad_clip={budget.grad_clip!r} must be > 0 (or None for no clipping)")
    lr_at(budget, 1.0, 0)  # raises for an unknown schedule


def make_optimizer(model: nn.Module, optim: OptimSpec) -> torch.optim.Optimizer:
    """SGD(lr, momentum, weight_decay) or Adam(lr, weight_decay) over the model's parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if optim.name == "sgd":
        return torch.optim.SGD(params, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay)
    if optim.name == "adam":
        return torch.optim.Adam(params, lr=optim.lr, weight_decay=optim.weight_decay)
    raise ValueError(f"optimizer={optim.name!r} is not one of 'sgd', 'adam'")


@contextlib.contextmanager
def seeded_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Seed the CPU (and ``device``'s CUDA) RNG with ``seed`` inside a fork of the RNG state."""
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(cuda[0]):
                torch.cuda.manual_seed(seed)
        yield


@contextlib.contextmanager
def deterministic_mode(enabled: bool, device: torch.device) -> Iterator[None]:
    """Deterministic kernels on CUDA for the duration of the block; restores the previous settings.

    On a CUDA device: ``torch.use_deterministic_algorithms(True, warn_only=True)`` (warn, not raise,
    where an op has no deterministic variant), cuDNN deterministic without benchmarking, and the
    cuBLAS workspace setting. On CPU nothing changes: the CPU kernels the trainers use are already
    deterministic for a fixed thread count, and the global flag is not cheap there (its first call
    imports ``torch._inductor``: 3-4 s per fresh process, more than a whole digits run).
    """
    if not enabled or device.type != "cuda":
        yield
        return
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS workspaces
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = previous[2], previous[3]


def _check_positive_int(field_name: str, value: object, fix: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{field_name}={value!r} must be a positive integer ({fix})")
