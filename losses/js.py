"""Jensen–Shannon divergence loss (Englesson & Azizpour 2021; ding-narl-adjuster Eq. 5).

With ``m = π1·y + (1−π1)·p`` and ``Z = −(1−π1)·log(1−π1)``:

    ℓ = [π1·KL(y‖m) + (1−π1)·KL(p‖m)] / Z.

For a one-hot ``y`` with label ``c`` the KL terms reduce to scalars of ``p_c`` (``m_k = (1−π1)p_k``
for ``k ≠ c``):

    KL(y‖m) = −log m_c,
    KL(p‖m) = −(1 − p_c)·log(1−π1) + p_c·log p_c − p_c·log m_c,
    log m_c = logaddexp(log π1, log(1−π1) + log p_c),

all from ``log_softmax``, so logits of ±1e4 stay finite (``p_c·log p_c`` is ``0·finite``).

Limits: π1 → 0 gives CE (the ratio ℓ/CE → 1, because ``KL(p‖m) = O(π1²)``); π1 → 1 gives the
reduced MAE ``1 − p_y`` (half the textbook MAE, as ding-narl-adjuster states).

Range (chosen): π1 ∈ [0.05, 0.95]. ``1/Z`` runs from 100.5 at π1 = 0.01 to 2.77 at 0.7 and 21.7 at
0.99 (REFERENCE §2); a per-sample π1 over that span gives loss scales 36× apart. On [0.05, 0.95] the
span of ``1/Z`` is 7.5× (20.5 at 0.05, its minimum e ≈ 2.72 at 1 − 1/e, 6.7 at 0.95). At π1 = 0.05
the ratio ℓ/CE is within 4% of 1 wherever p_y ≥ 0.2 (JS is bounded, so it stays below CE where
p_y ≪ π1; tests/losses/test_families.py measures it). Default 0.5.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from evoloss.losses.criterion import as_column, as_param
from evoloss.losses.registry import Param, register_family

JS_PARAMS = [
    Param("pi1", default=0.5, low=0.05, high=0.95, doc="weight of the label distribution in the mixture m"),
]


def js_label_table(logits: torch.Tensor, pi1: float | torch.Tensor = 0.5) -> torch.Tensor:
    """``[B, C]``: the normalised JS loss of every row under every label c (the module docstring's terms)."""
    pi1 = as_column(as_param(pi1, logits))
    log_probs = F.log_softmax(logits, dim=1)
    probs = torch.exp(log_probs)
    log_keep = torch.log1p(-pi1)
    log_m = torch.logaddexp(torch.log(pi1), log_keep + log_probs)
    kl_prediction = -(1.0 - probs) * log_keep + probs * log_probs - probs * log_m
    return (pi1 * -log_m + (1.0 - pi1) * kl_prediction) / (-(1.0 - pi1) * log_keep)


@register_family("js", params=JS_PARAMS, helpers=(as_column, as_param), label_table=js_label_table)
def js_loss(logits: torch.Tensor, targets: torch.Tensor, pi1: float | torch.Tensor = 0.5) -> torch.Tensor:
    """Normalised Jensen–Shannon loss per sample (ding-narl-adjuster Eq. 5, Englesson & Azizpour 2021).

    ``pi1`` may be a float, a 0-d tensor or a per-sample ``[B]`` tensor.
    """
    pi1 = as_param(pi1, logits)  # a float filled in on the device: no host-to-device copy
    log_p_y = F.log_softmax(logits, dim=1).gather(1, targets.unsqueeze(1)).squeeze(1)
    p_y = torch.exp(log_p_y)
    log_keep = torch.log1p(-pi1)  # log(1 − π1)
    log_m_y = torch.logaddexp(torch.log(pi1), log_keep + log_p_y)
    kl_label = -log_m_y
    kl_prediction = -(1.0 - p_y) * log_keep + p_y * log_p_y - p_y * log_m_y
    normaliser = -(1.0 - pi1) * log_keep
    return (pi1 * kl_label + (1.0 - pi1) * kl_prediction) / normaliser
