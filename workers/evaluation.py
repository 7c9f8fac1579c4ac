"""Accuracy evaluation, divergence checks and `EvalRecord` assembly shared by every inner trainer.

A trainer (standard, population, meta-learned) uses these pieces the same way, so its records mean
the same thing:

1. ``splits = EvalSplits.from_task_data(data, device)`` once per task (moves the tensors once);
2. after each training epoch, ``divergence_reason(loss_sum, model, epoch)``: a non-None reason ends
   the run with status ``diverged`` (never an exception);
3. on evaluated epochs ``history.add_eval(epoch, evaluate_splits(model, splits))``;
4. at the end ``history.to_record(spec, ...)``, or ``failed_record(spec, exc, ...)``.

Metric conventions (written once, here): accuracies are fractions in [0, 1] of rows whose argmax
logit equals the label (clean labels for val/test, the kept noisy labels for noisy val), NaN for an
empty split. Epochs are 0-based. The best epoch is the evaluated epoch with the highest clean val
accuracy (the earliest on ties); ``test_acc_best`` is the test accuracy at that epoch.
``noisy_val_acc_best`` is the highest noisy-val accuracy; ``extra`` then holds its epoch and the test
accuracy there (early stopping on a noisy validation split, gao-arl Table 3), plus ``steps`` and,
when not every epoch was evaluated, ``eval_epochs`` (the epochs behind ``curve_val``). A diverged or
failed run keeps the metrics of the epochs it completed before.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from evoloss.losses import LossSpec, get_family
from evoloss.workers.records import EvalRecord
from evoloss.workers.task import TaskData

EVAL_BATCH_SIZE = 1024


@dataclass(frozen=True)
class EvalSplits:
    """The labelled splits evaluated every epoch, on the training device (noisy val may be None)."""

    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    x_noisy_val: torch.Tensor | None = None
    y_noisy_val: torch.Tensor | None = None

    @classmethod
    def from_task_data(cls, data: TaskData, device: torch.device | str) -> "EvalSplits":
        """Move ``data``'s val, test and noisy-val splits to ``device`` (a no-op when already there)."""
        has_noisy = data.x_noisy_val is not None and data.y_noisy_val is not None and len(data.y_noisy_val) > 0
        return cls(
            x_val=data.x_val.to(device),
            y_val=data.y_val.to(device),
            x_test=data.x_test.to(device),
            y_test=data.y_test.to(device),
            x_noisy_val=data.x_noisy_val.to(device) if has_noisy else None,
            y_noisy_val=data.y_noisy_val.to(device) if has_noisy else None,
        )


@dataclass(frozen=True)
class EpochMetrics:
    """Accuracies of one evaluated epoch (NaN where the split is empty or absent)."""

    val: float
    test: float
    noisy_val: float = math.nan


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = EVAL_BATCH_SIZE) -> float:
    """Fraction of rows of ``x`` whose argmax logit equals ``y``; NaN when ``x`` has no rows.

    Runs in batches under ``torch.no_grad()`` with ``model.train(False)`` (eval mode) (BatchNorm uses its running
    statistics, dropout is off) and restores the module's previous training mode.
    """
    if len(y) == 0:
        return math.nan
    was_training = model.training
    model.train(False)  # eval mode
    correct = torch.zeros((), dtype=torch.int64, device=y.device)
    with torch.no_grad():
        for start in range(0, len(y), batch_size):
            logits = model(x[start : start + batch_size])
            correct += (logits.argmax(dim=1) == y[start : start + batch_size]).sum()
    model.train(was_training)
    return int(correct.item()) / len(y)


def evaluate_splits(model: nn.Module, splits: EvalSplits, *, batch_size: int = EVAL_BATCH_SIZE) -> EpochMetrics:
    """Clean val, clean test and (when present) noisy-val accuracy of ``model``."""
    noisy = math.nan
    if splits.x_noisy_val is not None and splits.y_noisy_val is not None:
        noisy = accuracy(model, splits.x_noisy_val, splits.y_noisy_val, batch_size=batch_size)
    return EpochMetrics(
        val=accuracy(model, splits.x_val, splits.y_val, batch_size=batch_size),
        test=accuracy(model, splits.x_test, splits.y_test, batch_size=batch_size),
        noisy_val=noisy,
    )


def nonfinite_state(model: nn.Module) -> str | None:
    """Name of the first parameter or floating-point buffer holding NaN/inf, or None if all are finite."""
    tensors = [(n, t) for n, t in model.named_parameters()]
    tensors += [(n, b) for n, b in model.named_buffers() if b.is_floating_point()]
    if not tensors:
        return None
    flags = torch.stack([torch.isfinite(t.detach()).all() for _, t in tensors])
    if bool(flags.all()):
        return None
    return tensors[int((~flags).nonzero()[0, 0])][0]


def divergence_reason(loss_sum: torch.Tensor | float, model: nn.Module, epoch: int) -> str | None:
    """Why the run diverged in ``epoch`` (non-finite summed training loss or weights), or None.

    ``loss_sum`` is the sum of the epoch's batch losses: one NaN/inf batch makes it non-finite, so a
    single check per epoch catches every bad step without a device sync per step.
    """
    total = float(loss_sum)
    if not math.isfinite(total):
        return f"non-finite training loss ({total}) in epoch {epoch}"
    bad = nonfinite_state(model)
    if bad is not None:
        return f"non-finite weights ({bad}) after epoch {epoch}"
    return None


def record_params(spec: LossSpec) -> dict:
    """The spec's parameters with defaults filled in, as JSON-able values (tensors become lists)."""
    full = get_family(spec.family).validate(spec.params)
    return {
        k: (v.detach().cpu().tolist() if isinstance(v, torch.Tensor) else float(v)) for k, v in full.items()
    }


@dataclass
class RunHistory:
    """What one training run produced, epoch by epoch; `to_record` turns it into an `EvalRecord`."""

    eval_epochs: list[int] = field(default_factory=list)
    val: list[float] = field(default_factory=list)
    test: list[float] = field(default_factory=list)
    noisy_val: list[float] = field(default_factory=list)
    epochs_run: int = 0
    steps: int = 0
    train_loss_last: float = math.nan

    def add_eval(self, epoch: int, metrics: EpochMetrics) -> None:
        """Append the metrics of evaluated ``epoch`` (0-based)."""
        self.eval_epochs.append(int(epoch))
        self.val.append(float(metrics.val))
        self.test.append(float(metrics.test))
        self.noisy_val.append(float(metrics.noisy_val))

    def best_index(self, values: list[float] | None = None) -> int | None:
        """Index of the highest finite value of ``values`` (default: clean val), earliest on ties."""
        values = self.val if values is None else values
        best: int | None = None
        for i, v in enumerate(values):
            if math.isfinite(v) and (best is None or v > values[best]):
                best = i
        return best

    def to_record(
        self, spec: LossSpec, *, trainer: str, device: str, wall_s: float,
        status: str = "ok", error: str = "", extra: dict | None = None,
    ) -> EvalRecord:
        """The `EvalRecord` of this run (conventions in the module docstring)."""
        best = self.best_index()
        extra = {"steps": self.steps, **(extra or {})}
        if self.eval_epochs and self.eval_epochs != list(range(len(self.eval_epochs))):
            extra["eval_epochs"] = list(self.eval_epochs)
        noisy_best = self.best_index(self.noisy_val)
        if noisy_best is not None:  # early stopping on the noisy val split (gao-arl Table 3)
            extra["noisy_val_best_epoch"] = self.eval_epochs[noisy_best]
            extra["test_acc_at_noisy_val_best"] = self.test[noisy_best]
        return EvalRecord(
            family=spec.family,
            params=record_params(spec),
            status=status,
            error=error,
            val_acc_last=self.val[-1] if self.val else math.nan,
            val_acc_best=self.val[best] if best is not None else math.nan,
            test_acc_last=self.test[-1] if self.test else math.nan,
            test_acc_best=self.test[best] if best is not None else math.nan,
            noisy_val_acc_best=self.noisy_val[noisy_best] if noisy_best is not None else math.nan,
            test_acc_noisy=self.test[noisy_best] if noisy_best is not None else math.nan,
            best_epoch=self.eval_epochs[best] if best is not None else -1,
            epochs_run=self.epochs_run,
            curve_val=list(self.val),
            train_loss_last=self.train_loss_last,
            wall_s=float(wall_s),
            device=str(device),
            trainer=trainer,
            extra=extra,
            execution="single",  # one model; the population trainer overrides it for its members
        )


def failed_record(
    spec: LossSpec, error: BaseException | str, *, trainer: str, device: str, wall_s: float,
    history: RunHistory | None = None,
) -> EvalRecord:
    """A ``failed`` record for a run that raised: the error text, plus the epochs completed before."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return (history or RunHistory()).to_record(
        spec, trainer=trainer, device=device, wall_s=wall_s, status="failed", error=text
    )
