"""Soft bootstrapping (Reed et al. 2015; gao-arl §4 baseline).

The target is ``β·y + (1 − β)·p`` with the model's own prediction ``p``:

    ℓ = −Σ_k (β·y_k + (1 − β)·p_k)·log p_k = β·CE + (1 − β)·H(p).

Choice: the prediction in the target is *not* detached — that is Reed et al.'s soft objective, which
they show equals CE plus a minimum-entropy regulariser; some public copies detach it, which turns the
second term into a constant-target CE and changes the gradient. ``p·log p`` uses ``log_softmax``, so
an underflowed ``p_k = 0`` contributes ``0·finite = 0``.

Range (chosen): β ∈ [0, 1] (β = 1 is CE); default 0.95, Reed et al.'s soft setting.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from evoloss.losses.criterion import as_column
from evoloss.losses.registry import Param, register_family

BOOTSTRAP_PARAMS = [
    Param("beta", default=0.95, low=0.0, high=1.0, doc="weight of the given label in the target"),
]


def bootstrap_label_table(logits: torch.Tensor, beta: float | torch.Tensor = 0.95) -> torch.Tensor:
    """``[B, C]``: ``β·(−log p_c) + (1 − β)·H(p)`` for every label c."""
    beta = as_column(beta)
    log_probs = F.log_softmax(logits, dim=1)
    entropy = -(torch.exp(log_probs) * log_probs).sum(dim=1, keepdim=True)
    return beta * (-log_probs) + (1.0 - beta) * entropy


@register_family("bootstrap", params=BOOTSTRAP_PARAMS, helpers=(as_column,), label_table=bootstrap_label_table)
def bootstrap_loss(logits: torch.Tensor, targets: torch.Tensor, beta: float | torch.Tensor = 0.95) -> torch.Tensor:
    """Soft bootstrapping loss ``β·CE + (1 − β)·H(p)`` per sample (Reed et al. 2015, soft version).

    ``beta`` may be a float, a 0-d tensor or a per-sample ``[B]`` tensor.
    """
    log_probs = F.log_softmax(logits, dim=1)
    ce = -log_probs.gather(1, targets.unsqueeze(1)).squeeze(1)
    entropy = -(torch.exp(log_probs) * log_probs).sum(dim=1)
    return beta * ce + (1.0 - beta) * entropy
