"""Cross entropy against a smoothed label (Szegedy et al. 2016; gao-arl §4 "LSR" baseline).

The target is ``(1 − ε)·onehot(y) + ε/C`` (PyTorch's ``label_smoothing`` convention), so

    ℓ = (1 − ε)·(−log p_y) + ε·mean_k(−log p_k).

Range (chosen): ε ∈ [0, 0.9]; ε = 0 is CE, ε = 1 would ignore the label entirely. Default 0.1.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from evoloss.losses.criterion import as_column
from evoloss.losses.registry import Param, register_family

LABEL_SMOOTHING_PARAMS = [
    Param("eps", default=0.1, low=0.0, high=0.9, doc="mass moved from the label to the uniform distribution"),
]


def label_smoothing_label_table(logits: torch.Tensor, eps: float | torch.Tensor = 0.1) -> torch.Tensor:
    """``[B, C]``: ``(1−ε)·(−log p_c) + ε·mean_k(−log p_k)`` for every label c."""
    eps = as_column(eps)
    log_probs = F.log_softmax(logits, dim=1)
    return (1.0 - eps) * (-log_probs) + eps * (-log_probs.mean(dim=1, keepdim=True))


@register_family("label_smoothing", params=LABEL_SMOOTHING_PARAMS, helpers=(as_column,),
                 label_table=label_smoothing_label_table)
def label_smoothing_loss(
    logits: torch.Tensor, targets: torch.Tensor, eps: float | torch.Tensor = 0.1
) -> torch.Tensor:
    """Label-smoothed cross entropy ``(1−ε)·CE + ε·mean_k(−log p_k)`` per sample (Szegedy et al. 2016).

    ``eps`` may be a float, a 0-d tensor or a per-sample ``[B]`` tensor.
    """
    log_probs = F.log_softmax(logits, dim=1)
    ce = -log_probs.gather(1, targets.unsqueeze(1)).squeeze(1)
    uniform_ce = -log_probs.mean(dim=1)
    return (1.0 - eps) * ce + eps * uniform_ce
