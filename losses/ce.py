"""Cross entropy, the baseline every robust loss is compared with: ℓ = −log p_y."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from evoloss.losses.registry import register_family


def ce_label_table(logits: torch.Tensor) -> torch.Tensor:
    """``[B, C]``: −log softmax(logits)_c, the cross entropy of each row under each label."""
    return -F.log_softmax(logits, dim=1)


def ce_native(input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None, ignore_index: int = -100,
              reduction: str = "mean", label_smoothing: float = 0.0) -> torch.Tensor:
    """``F.cross_entropy`` itself: every option of ``nn.CrossEntropyLoss``, bit for bit."""
    return F.cross_entropy(input, target, weight=weight, ignore_index=ignore_index, reduction=reduction,
                           label_smoothing=label_smoothing)


@register_family("ce", label_table=ce_label_table, native=ce_native)
def ce_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross entropy −log softmax(logits)_y, per sample."""
    return F.cross_entropy(logits, targets, reduction="none")
