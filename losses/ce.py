"""Cross entropy, the baseline every robust loss is compared with: ℓ = −log p_y."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from evoloss.losses.registry import register_family


@register_family("ce")
def ce_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross entropy −log softmax(logits)_y, per sample."""
    return F.cross_entropy(logits, targets, reduction="none")
