"""Tiny float64 models, batches and a central finite difference shared by the meta-trainer tests."""
from __future__ import annotations

from typing import Callable

import pytest
import torch
from torch import nn

FEATURES, CLASSES, BATCH, META_BATCH = 4, 3, 8, 6


def tiny_mlp(seed: int, *, batchnorm: bool = False) -> nn.Module:
    """4 -> 6 -> 3 MLP in float64 (tanh: smooth, so finite differences are clean)."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(FEATURES, 6)]
    if batchnorm:
        layers.append(nn.BatchNorm1d(6))
    layers += [nn.Tanh(), nn.Linear(6, CLASSES)]
    return nn.Sequential(*layers).double()


def tiny_batches(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train [8,4], y_train [8], x_meta [6,4], y_meta [6]), float64 inputs, seeded."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCH, FEATURES, generator=g, dtype=torch.float64)
    y = torch.randint(0, CLASSES, (BATCH,), generator=g)
    xm = torch.randn(META_BATCH, FEATURES, generator=g, dtype=torch.float64)
    ym = torch.randint(0, CLASSES, (META_BATCH,), generator=g)
    return x, y, xm, ym


def central_difference(fn: Callable[[torch.Tensor], float], at: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
    """d fn / d at by central differences, one coordinate at a time (float64)."""
    at = at.detach().clone()
    out = torch.zeros_like(at)
    flat, grad = at.view(-1), out.view(-1)
    for i in range(flat.numel()):
        old = flat[i].item()
        flat[i] = old + h
        up = fn(at.clone())
        flat[i] = old - h
        down = fn(at.clone())
        flat[i] = old
        grad[i] = (up - down) / (2 * h)
    return out


@pytest.fixture
def batches() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return tiny_batches(0)


def tiny_task_data(seed: int = 0, *, n_train: int = 48, n_meta: int = 12, n_eval: int = 24,
                   noise: float = 0.3) -> "TaskData":
    """A 3-class Gaussian-blob task (4 features) with noisy training labels and a clean meta set."""
    from evoloss.workers.task import TaskData

    g = torch.Generator().manual_seed(seed)
    centres = 2.0 * torch.randn(CLASSES, FEATURES, generator=g)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % CLASSES
        return centres[y] + torch.randn(n, FEATURES, generator=g), y

    x, y_clean = draw(n_train)
    flip = torch.rand(n_train, generator=g) < noise
    other = (y_clean + 1 + torch.randint(0, CLASSES - 1, (n_train,), generator=g)) % CLASSES
    y_noisy = torch.where(flip, other, y_clean)
    xv, yv = draw(n_eval)
    xt, yt = draw(n_eval)
    xm, ym = draw(n_meta)
    return TaskData(x_train=x, y_train=y_noisy, y_train_clean=y_clean, x_val=xv, y_val=yv, x_test=xt, y_test=yt,
                    num_classes=CLASSES, input_shape=(FEATURES,), x_meta=xm if n_meta else None,
                    y_meta=ym if n_meta else None, noise_rate=float((y_noisy != y_clean).float().mean()))


def tiny_task(seed: int = 0, *, epochs: int = 2, batch_size: int = 16, arch: str = "mlp2") -> "Task":
    """A task record matching `tiny_task_data` (the data is passed to fit directly)."""
    from evoloss.workers.task import Budget, NoiseSpec, Splits, Task

    return Task(dataset="tiny-blobs", arch=arch, noise=NoiseSpec("symmetric", 0.3, "exact"),
                budget=Budget(epochs=epochs, batch_size=batch_size), splits=Splits(meta_total=12), seed=seed)


def directional_difference(fn: Callable[[torch.Tensor], float], at: torch.Tensor, direction: torch.Tensor,
                           h: float = 1e-6) -> float:
    """(fn(at + h·v) − fn(at − h·v)) / 2h: the central difference along ``direction`` (float64)."""
    at = at.detach()
    return (fn(at + h * direction) - fn(at - h * direction)) / (2 * h)


def oracle_step_meta_loss(model: nn.Module, train_loss: Callable[[nn.Module], torch.Tensor], x_meta: torch.Tensor,
                          y_meta: torch.Tensor, lr: float) -> float:
    """The meta CE after one real torch.optim.SGD step on a deep copy of ``model`` (the FD oracle)."""
    import copy

    import torch.nn.functional as F

    twin = copy.deepcopy(model)
    opt = torch.optim.SGD(twin.parameters(), lr=lr)
    train_loss(twin).backward()
    opt.step()
    return float(F.cross_entropy(twin(x_meta), y_meta).detach())
