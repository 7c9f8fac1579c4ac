"""Active-passive losses NCE+MAE and NFL+MAE (Ma et al. 2020, "Normalized loss functions for deep
learning with noisy labels"; gao-arl §4 baselines, REFERENCE §2).

- ``NCE = (−log p_y) / (−Σ_k log p_k)`` (normalised cross entropy, active),
- ``NFL = −(1 − p_y)^γ log p_y / Σ_k −(1 − p_k)^γ log p_k`` (normalised focal loss, active),
- ``MAE = 1 − p_y`` (reduced form, passive; see losses/mae.py),
- ``ℓ = α·(NCE or NFL) + β·MAE``.

Numerics: ``log p`` comes from ``log_softmax``; ``(1 − p_k)^γ`` is ``exp(γ·log(1 − p_k))`` with
``log(1 − p_k)`` computed without cancellation (`log_one_minus_softmax`), so ``p_k → 1`` (logits of
±1e4) gives finite values and gradients, also with respect to γ. Both denominators are bounded away
from zero: ``Σ_k −log p_k ≥ C·log C`` (Jensen) and the NFL one is at least its largest term.

Ranges (chosen): ``alpha, beta ∈ [0, 20]`` (the APL paper uses 1/1 on CIFAR-10 and 10/1 on
CIFAR-100); ``gamma ∈ [0, 10]``, default 0.5 as the APL paper's NFL.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from evoloss.losses.criterion import as_column, as_param
from evoloss.losses.registry import Param, register_family

NCE_MAE_PARAMS = [
    Param("alpha", default=1.0, low=0.0, high=20.0, doc="weight of normalised cross entropy"),
    Param("beta", default=1.0, low=0.0, high=20.0, doc="weight of MAE"),
]
NFL_MAE_PARAMS = [
    Param("alpha", default=1.0, low=0.0, high=20.0, doc="weight of normalised focal loss"),
    Param("beta", default=1.0, low=0.0, high=20.0, doc="weight of MAE"),
    Param("gamma", default=0.5, low=0.0, high=10.0, doc="focusing exponent of the focal part"),
]


def log_one_minus_softmax(logits: torch.Tensor) -> torch.Tensor:
    """``log(1 − softmax(logits))`` per entry ``[B, C]``, finite even where ``p_k`` rounds to 1.

    For the arg-max class it is ``logsumexp_{j≠k} z_j − logsumexp_j z_j``; for every other class
    ``p_k ≤ 1/2`` and ``log1p(−p_k)`` is accurate. The arg-max entries feed ``log1p`` a harmless 0, so
    the unused branch cannot put a NaN into the gradient.
    """
    log_norm = torch.logsumexp(logits, dim=1, keepdim=True)
    top = logits.argmax(dim=1, keepdim=True)
    is_top = torch.zeros_like(logits, dtype=torch.bool).scatter(1, top, True)
    others = logits.masked_fill(is_top, float("-inf"))
    log_rest_of_top = torch.logsumexp(others, dim=1, keepdim=True) - log_norm
    probs = torch.exp(logits - log_norm)
    safe_probs = torch.where(is_top, torch.zeros_like(probs), probs)
    return torch.where(is_top, log_rest_of_top.expand_as(logits), torch.log1p(-safe_probs))


def nce_mae_label_table(
    logits: torch.Tensor, alpha: float | torch.Tensor = 1.0, beta: float | torch.Tensor = 1.0
) -> torch.Tensor:
    """``[B, C]``: ``α·log p_c / Σ_k log p_k + β·(1 − p_c)`` for every label c."""
    alpha, beta = as_column(alpha), as_column(beta)
    log_probs = F.log_softmax(logits, dim=1)
    return alpha * (log_probs / log_probs.sum(dim=1, keepdim=True)) + beta * (1.0 - torch.exp(log_probs))


def nfl_mae_label_table(
    logits: torch.Tensor,
    alpha: float | torch.Tensor = 1.0,
    beta: float | torch.Tensor = 1.0,
    gamma: float | torch.Tensor = 0.5,
) -> torch.Tensor:
    """``[B, C]``: ``α·NFL_c + β·(1 − p_c)`` for every label c."""
    alpha, beta, gamma = as_column(alpha), as_column(beta), as_column(as_param(gamma, logits))
    log_probs = F.log_softmax(logits, dim=1)
    focal_all = -torch.exp(gamma * log_one_minus_softmax(logits)) * log_probs
    return alpha * (focal_all / focal_all.sum(dim=1, keepdim=True)) + beta * (1.0 - torch.exp(log_probs))


@register_family("nce_mae", params=NCE_MAE_PARAMS, helpers=(as_column,), label_table=nce_mae_label_table)
def nce_mae_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    alpha: float | torch.Tensor = 1.0,
    beta: float | torch.Tensor = 1.0,
) -> torch.Tensor:
    """``α·NCE + β·MAE`` per sample (Ma et al. 2020, Eq. for NCE and the APL combination).

    Parameters may be floats, 0-d tensors or per-sample ``[B]`` tensors.
    """
    log_probs = F.log_softmax(logits, dim=1)
    log_p_y = log_probs.gather(1, targets.unsqueeze(1)).squeeze(1)
    normalised_ce = log_p_y / log_probs.sum(dim=1)
    return alpha * normalised_ce + beta * (1.0 - torch.exp(log_p_y))


@register_family("nfl_mae", params=NFL_MAE_PARAMS, helpers=(as_column, as_param, log_one_minus_softmax),
                 label_table=nfl_mae_label_table)
def nfl_mae_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    alpha: float | torch.Tensor = 1.0,
    beta: float | torch.Tensor = 1.0,
    gamma: float | torch.Tensor = 0.5,
) -> torch.Tensor:
    """``α·NFL + β·MAE`` per sample (Ma et al. 2020; NFL normalises the focal loss over all labels).

    Parameters may be floats, 0-d tensors or per-sample ``[B]`` tensors (``gamma`` is broadcast over
    the classes as ``[B, 1]``).
    """
    gamma_col = as_column(as_param(gamma, logits))  # a float filled in on the device: no host-to-device copy
    log_probs = F.log_softmax(logits, dim=1)
    focal_all = -torch.exp(gamma_col * log_one_minus_softmax(logits)) * log_probs  # [B, C]
    focal_y = focal_all.gather(1, targets.unsqueeze(1)).squeeze(1)
    p_y = torch.exp(log_probs.gather(1, targets.unsqueeze(1)).squeeze(1))
    return alpha * focal_y / focal_all.sum(dim=1) + beta * (1.0 - p_y)
