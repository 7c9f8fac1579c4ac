"""Symmetric cross entropy, "SL" (Wang et al. 2019; shu-adaptive-robust-loss Eq. 3).

``ℓ = α·CE + β·RCE`` with the reverse cross entropy ``RCE = −Σ_k p_k log q_k`` of the one-hot label
``q`` whose ``log 0`` is clipped to ``A``: ``RCE = −A·(1 − p_y)``.

Choices (documented, tested):
- ``A`` defaults to ``log(1e-4) ≈ −9.2103`` (Wang et al.; one public copy uses ``log10`` and gets −4).
  Its range ``[−20, −1]`` covers both and keeps ``A < 0`` (RCE ≥ 0).
- ``alpha, beta ∈ [0, 20]``: covers the published settings (0.1/1.0 on CIFAR-10, 6.0/0.1 on
  CIFAR-100) and includes ``alpha = 1, beta = 0``, which is exactly CE.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from evoloss.losses.criterion import as_column
from evoloss.losses.registry import Param, register_family

SCE_PARAMS = [
    Param("alpha", default=0.1, low=0.0, high=20.0, doc="weight of cross entropy"),
    Param("beta", default=1.0, low=0.0, high=20.0, doc="weight of reverse cross entropy"),
    Param("A", default=math.log(1e-4), low=-20.0, high=-1.0, doc="log of the clipped zero in the one-hot label"),
]


def sce_label_table(
    logits: torch.Tensor,
    alpha: float | torch.Tensor = 0.1,
    beta: float | torch.Tensor = 1.0,
    A: float | torch.Tensor = -9.210340371976182,
) -> torch.Tensor:
    """``[B, C]``: ``α·(−log p_c) + β·(−A)(1 − p_c)`` for every label c."""
    alpha, beta, A = as_column(alpha), as_column(beta), as_column(A)
    log_probs = F.log_softmax(logits, dim=1)
    return alpha * (-log_probs) + beta * (-A * (1.0 - torch.exp(log_probs)))


@register_family("sce", params=SCE_PARAMS, helpers=(as_column,), label_table=sce_label_table)
def sce_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    alpha: float | torch.Tensor = 0.1,
    beta: float | torch.Tensor = 1.0,
    A: float | torch.Tensor = -9.210340371976182,
) -> torch.Tensor:
    """Symmetric cross entropy ``α·(−log p_y) + β·(−A)(1 − p_y)`` per sample (shu Eq. 3, Wang et al. 2019).

    Every parameter may be a float, a 0-d tensor or a per-sample ``[B]`` tensor.
    """
    log_p_y = F.log_softmax(logits, dim=1).gather(1, targets.unsqueeze(1)).squeeze(1)
    reverse_ce = -A * (1.0 - torch.exp(log_p_y))
    return alpha * (-log_p_y) + beta * reverse_ce
