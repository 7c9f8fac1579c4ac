"""`create_loss(spec)`: a loss family with its parameters bound, as an ``nn.CrossEntropyLoss`` drop-in.

`Loss` is `losses.criterion.FamilyLoss` (the one implementation of the CE contract, also copied into
every standalone plug-in) plus the validated `LossSpec` it was built from.
"""
from __future__ import annotations

import torch

from evoloss.losses.criterion import FamilyLoss
from evoloss.losses.registry import LossSpec, get_family

__all__ = ["Loss", "create_loss"]


class Loss(FamilyLoss):
    """A loss family with bound parameters: ``loss(input, target) -> scalar`` like ``nn.CrossEntropyLoss``.

    ``Loss(spec, reduction="mean", *, weight=None, ignore_index=-100, label_smoothing=0.0, validate=None)``;
    the options, shapes and target forms are `losses.criterion`'s. Parameters may be floats, 0-d
    tensors or per-row ``[M]`` tensors (one entry per flattened row of the input).
    """

    def __init__(self, spec: LossSpec, reduction: str = "mean", *, weight: torch.Tensor | None = None,
                 ignore_index: int = -100, label_smoothing: float = 0.0, validate: bool | None = None) -> None:
        family = get_family(spec.family)
        spec = LossSpec(spec.family, family.validate(spec.params))
        super().__init__(family.fn, dict(spec.params), weight, None, ignore_index, None, reduction, label_smoothing,
                         label_table=family.label_table, native=family.native, soft_targets=family.soft_targets,
                         validate=validate, family=family.name, batch=family.batch)
        self.family, self.spec = family, spec

    def forward(self, input: torch.Tensor, target: torch.Tensor, reduction: str | None = None) -> torch.Tensor:
        if isinstance(input, torch.Tensor) and input.dim() >= 1:
            rows = input.numel() // input.shape[0 if input.dim() == 1 else 1]
            for name, v in self.params.items():
                if isinstance(v, torch.Tensor) and v.dim() == 1 and v.shape[0] != rows:
                    raise ValueError(f"per-sample parameter {name!r} has {v.shape[0]} entries for {rows} rows")
        return super().forward(input, target, reduction)

    def per_sample(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The unreduced loss (``reduction="none"``)."""
        return self.forward(logits, targets, reduction="none")


def create_loss(spec: LossSpec | str, reduction: str = "mean", *, weight: torch.Tensor | None = None,
                ignore_index: int = -100, label_smoothing: float = 0.0, validate: bool | None = None,
                **params) -> Loss:
    """Build the loss module of ``spec`` (a `LossSpec`, or a family name plus keyword parameters).

    ``weight``, ``ignore_index``, ``label_smoothing`` and ``reduction`` are ``nn.CrossEntropyLoss``'s;
    ``validate`` as in `losses.criterion.family_criterion` (trainers pass False: no per-step checks).
    """
    if isinstance(spec, str):
        spec = LossSpec(spec, params)
    elif params:
        raise TypeError("create_loss: pass parameters inside the LossSpec, not as keywords")
    if not isinstance(spec, LossSpec):
        raise TypeError(f"create_loss expects a LossSpec or a family name; got {type(spec).__name__}")
    return Loss(spec, reduction=reduction, weight=weight, ignore_index=ignore_index,
                label_smoothing=label_smoothing, validate=validate)
