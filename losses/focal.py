"""Focal loss (Lin et al. 2017): ``ℓ = −(1 − p_y)^γ · log p_y``; γ = 0 is cross entropy.

Numerics: ``(1 − p_y)^γ = exp(γ·log(1 − p_y))`` with ``log(1 − p_y) = logsumexp_{k≠y} z_k −
logsumexp_k z_k``, finite even when ``p_y`` rounds to 1 — ``(1 − p)**γ`` there gives a NaN gradient in
γ and (for γ < 1) an infinite one in the logits.

Range (chosen): γ ∈ [0, 10]; default 2, Lin et al.'s setting.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from evoloss.losses.apl import log_one_minus_softmax
from evoloss.losses.criterion import as_column
from evoloss.losses.registry import Param, register_family

FOCAL_PARAMS = [
    Param("gamma", default=2.0, low=0.0, high=10.0, doc="focusing exponent; 0 is CE"),
]


def focal_label_table(logits: torch.Tensor, gamma: float | torch.Tensor = 2.0) -> torch.Tensor:
    """``[B, C]``: ``−(1 − p_c)^γ log p_c`` for every label c (``log(1 − p_c)`` without cancellation)."""
    gamma = as_column(gamma)
    return -torch.exp(gamma * log_one_minus_softmax(logits)) * F.log_softmax(logits, dim=1)


@register_family("focal", params=FOCAL_PARAMS, helpers=(as_column, log_one_minus_softmax),
                 label_table=focal_label_table)
def focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float | torch.Tensor = 2.0) -> torch.Tensor:
    """Focal loss ``−(1 − p_y)^γ log p_y`` per sample (Lin et al. 2017, Eq. 4).

    ``gamma`` may be a float, a 0-d tensor or a per-sample ``[B]`` tensor.
    """
    label = targets.unsqueeze(1)
    log_norm = torch.logsumexp(logits, dim=1)
    log_p_y = logits.gather(1, label).squeeze(1) - log_norm
    log_rest = torch.logsumexp(logits.scatter(1, label, float("-inf")), dim=1) - log_norm  # log(1 − p_y)
    return -torch.exp(gamma * log_rest) * log_p_y
