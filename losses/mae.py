"""Mean absolute error on the softmax output, reduced form ℓ = 1 − p_y.

Ghosh et al. (2017) showed MAE is noise-tolerant under symmetric label noise; gao-arl §4 and
shu-adaptive-robust-loss §3.2 use it as the q = 1 end of GCE. The textbook form
``Σ_k |p_k − y_k| = 2 − 2·p_y`` is twice ours; we use the reduced form ``1 − p_y`` (as the APL code
does), so that GCE with q = 1 equals MAE exactly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from evoloss.losses.registry import register_family


def mae_label_table(logits: torch.Tensor) -> torch.Tensor:
    """``[B, C]``: 1 − softmax(logits)_c, the loss of each row under each label."""
    return 1.0 - torch.exp(F.log_softmax(logits, dim=1))


@register_family("mae", label_table=mae_label_table)
def mae_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Reduced mean absolute error ``1 − softmax(logits)_y`` per sample (Ghosh et al. 2017)."""
    log_p_y = F.log_softmax(logits, dim=1).gather(1, targets.unsqueeze(1)).squeeze(1)
    return 1.0 - torch.exp(log_p_y)
