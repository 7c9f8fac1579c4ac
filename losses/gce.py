"""Generalized cross entropy (Zhang & Sabuncu 2018; shu-adaptive-robust-loss Eq. 2).

``ℓ = (1 − p_y^q) / q``: q → 0 gives cross entropy, q = 1 gives the reduced MAE ``1 − p_y``.

Numerics: ``p_y^q`` is computed as ``exp(q · log_softmax(logits)_y)`` and the whole loss as
``−expm1(q · log p_y) / q``. ``p.pow(q)`` of an underflowed ``p_y = 0`` gives a NaN logit-gradient
(REFERENCE §2); the log-space form stays finite for logits of ±1e4 and is accurate for small q.

Valid range: q ∈ (0, 1] (the paper's range). q = 0 itself would divide by zero; the codec keeps decoded
values 1e-4 inside the open end.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from evoloss.losses.criterion import as_column
from evoloss.losses.registry import Param, register_family

GCE_PARAMS = [
    Param("q", default=0.7, low=0.0, high=1.0, low_open=True,
          doc="exponent; q → 0 is CE, q = 1 is MAE (0.7 in Zhang & Sabuncu 2018)"),
]


def gce_label_table(logits: torch.Tensor, q: float | torch.Tensor = 0.7) -> torch.Tensor:
    """``[B, C]``: ``(1 − p_c^q)/q`` for every label c (per-row ``q`` as a column)."""
    q = as_column(q)
    return -torch.expm1(q * F.log_softmax(logits, dim=1)) / q


@register_family("gce", params=GCE_PARAMS, helpers=(as_column,), label_table=gce_label_table)
def gce_loss(logits: torch.Tensor, targets: torch.Tensor, q: float | torch.Tensor = 0.7) -> torch.Tensor:
    """Generalized cross entropy ``(1 − p_y^q)/q`` per sample (shu-adaptive-robust-loss Eq. 2).

    ``q`` may be a float, a 0-d tensor or a per-sample ``[B]`` tensor; gradients flow to tensor ``q``.
    """
    log_p_y = F.log_softmax(logits, dim=1).gather(1, targets.unsqueeze(1)).squeeze(1)
    return -torch.expm1(q * log_p_y) / q
