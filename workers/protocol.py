"""The training protocol shared by every inner trainer (standard, population, meta-learned).

One place decides the optimiser of an architecture (gao-arl §4: SGD lr 0.01, momentum 0.9 for
MLP/CNN-4; Adam 1e-3 for JoCoR-Net), the mini-batch order of an epoch, the learning-rate schedule
and the initialisation seed of a candidate, so that trainers that share it produce the same runs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from evoloss.workers.task import Budget

# architecture -> (optimizer, lr, momentum); anything not listed uses the default
_ARCH_PROTOCOL: dict[str, tuple[str, float, float]] = {
    "jocor_cnn": ("adam", 1e-3, 0.0),
}
_DEFAULT_PROTOCOL = ("sgd", 0.01, 0.9)
# an optimiser chosen in the budget without an lr gets the paper's setting for it (gao-arl §4)
_OPTIMIZER_DEFAULTS: dict[str, tuple[str, float, float]] = {"sgd": ("sgd", 0.01, 0.9), "adam": ("adam", 1e-3, 0.0)}


@dataclass(frozen=True)
class OptimSpec:
    name: str  # "sgd" | "adam"
    lr: float
    momentum: float
    weight_decay: float


def resolve_optimizer(arch: str, budget: Budget) -> OptimSpec:
    """The optimiser for ``arch`` with the budget's overrides applied (None = protocol default)."""
    name, lr, momentum = _ARCH_PROTOCOL.get(arch, _DEFAULT_PROTOCOL)
    if budget.optimizer and budget.optimizer != name:
        # another optimiser than the architecture's: its own protocol defaults, not the other's lr
        name, lr, momentum = _OPTIMIZER_DEFAULTS.get(budget.optimizer, (budget.optimizer, lr, momentum))
    if name not in ("sgd", "adam"):
        raise ValueError(f"budget.optimizer={name!r} is not one of 'sgd', 'adam'")
    if budget.lr is not None:
        lr = budget.lr
    if budget.momentum is not None:
        momentum = budget.momentum
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"budget.lr={lr!r} must be a positive finite number")
    return OptimSpec(name=name, lr=float(lr), momentum=float(momentum), weight_decay=float(budget.weight_decay))


def lr_at(budget: Budget, base_lr: float, epoch: int) -> float:
    """Learning rate for ``epoch`` (0-based): constant, or cosine from base_lr to 0 over the budget."""
    if budget.schedule == "constant":
        return base_lr
    if budget.schedule == "cosine":
        return 0.5 * base_lr * (1.0 + math.cos(math.pi * epoch / max(budget.epochs, 1)))
    raise ValueError(f"budget.schedule={budget.schedule!r} is not one of 'constant', 'cosine'")


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of training indices for ``epoch``, a pure function of (seed, epoch)."""
    g = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(epoch)) % (2**63 - 1))
    return torch.randperm(n, generator=g)


def batches(n: int, batch_size: int, seed: int, epoch: int) -> list[torch.Tensor]:
    """Mini-batch index tensors of one epoch (the last batch may be smaller; none is dropped)."""
    order = epoch_order(n, seed, epoch)
    return list(order.split(batch_size))


def init_seed(task_seed: int, member_seed: int | None = None) -> int:
    """The seed that initialises a candidate's network.

    By default every candidate of a task starts from the same weights (common random numbers:
    candidates are then ranked on the loss alone, not on initialisation luck); trainers may pass
    a per-member seed instead.
    """
    return int(task_seed if member_seed is None else member_seed)
