"""`create_loss(spec)`: a loss family with its parameters bound, as an ``nn.Module``."""
from __future__ import annotations

import torch
from torch import nn

from evoloss.losses.registry import LossSpec, get_family

_REDUCTIONS = ("mean", "sum", "none")


def check_inputs(logits: torch.Tensor, targets: torch.Tensor) -> None:
    """Raise a clear error for logits/targets that no loss can take."""
    if not isinstance(logits, torch.Tensor) or not isinstance(targets, torch.Tensor):
        raise TypeError(
            f"loss inputs must be tensors; got logits={type(logits).__name__}, targets={type(targets).__name__}"
        )
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape [B, C]; got {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor; got dtype {logits.dtype}")
    if logits.shape[1] < 2:
        raise ValueError(f"logits must have at least 2 classes (shape [B, C>=2]); got {tuple(logits.shape)}")
    if targets.dim() != 1 or targets.shape[0] != logits.shape[0]:
        raise ValueError(
            f"targets must have shape [B]={logits.shape[0]} matching logits {tuple(logits.shape)}; "
            f"got {tuple(targets.shape)}"
        )
    if targets.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"targets must be integer class indices (int64); got dtype {targets.dtype}")
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= logits.shape[1]):
        raise ValueError(
            f"targets must lie in [0, {logits.shape[1] - 1}] for {logits.shape[1]} classes; "
            f"got min {int(targets.min())}, max {int(targets.max())}"
        )


def reduce(per_sample: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    if reduction == "none":
        return per_sample
    raise ValueError(f"reduction={reduction!r} is not one of {_REDUCTIONS}")


class Loss(nn.Module):
    """A loss family with bound parameters: ``loss(logits[B, C], targets[B]) -> scalar``.

    ``reduction`` is ``"mean"`` (default, like ``nn.CrossEntropyLoss``), ``"sum"`` or ``"none"``
    (per-sample ``[B]``). Parameters may be floats, 0-d tensors or per-sample ``[B]`` tensors.
    """

    def __init__(self, spec: LossSpec, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction={reduction!r} is not one of {_REDUCTIONS}")
        self.family = get_family(spec.family)
        self.spec = LossSpec(spec.family, self.family.validate(spec.params))
        self.reduction = reduction

    def per_sample(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        check_inputs(logits, targets)
        targets = targets.long()
        for name, v in self.spec.params.items():
            if isinstance(v, torch.Tensor) and v.dim() == 1 and v.shape[0] != logits.shape[0]:
                raise ValueError(
                    f"per-sample parameter {name!r} has {v.shape[0]} entries for a batch of {logits.shape[0]}"
                )
        return self.family.fn(logits, targets, **self.spec.params)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, reduction: str | None = None) -> torch.Tensor:
        return reduce(self.per_sample(logits, targets), reduction or self.reduction)

    def extra_repr(self) -> str:
        ps = ", ".join(
            f"{k}={v:g}" if not isinstance(v, torch.Tensor) else f"{k}=tensor{tuple(v.shape)}"
            for k, v in self.spec.params.items()
        )
        return ", ".join(x for x in (f"family={self.spec.family!r}", ps, f"reduction={self.reduction!r}") if x)


def create_loss(spec: LossSpec | str, reduction: str = "mean", **params) -> Loss:
    """Build the loss module of ``spec`` (a `LossSpec`, or a family name plus keyword parameters)."""
    if isinstance(spec, str):
        spec = LossSpec(spec, params)
    elif params:
        raise TypeError("create_loss: pass parameters inside the LossSpec, not as keywords")
    if not isinstance(spec, LossSpec):
        raise TypeError(f"create_loss expects a LossSpec or a family name; got {type(spec).__name__}")
    return Loss(spec, reduction=reduction)
