"""Bi-tempered logistic loss (Amid et al. 2019; shu-adaptive-robust-loss Eq. 4), plain autograd.

Tempered logarithm and exponential: ``log_t(x) = (x^{1−t} − 1)/(1−t)``,
``exp_t(x) = [1 + (1−t)x]_+^{1/(1−t)}``. The tempered softmax is ``p̂_j = exp_{t2}(z_j − γ(z))`` with
``γ`` chosen so that ``Σ_j p̂_j = 1``, and for a label ``y`` (shu Eq. 4)

    ℓ = −log_{t1}(p̂_y) − (1 − Σ_j p̂_j^{2−t1}) / (2 − t1).

t1 = t2 = 1 is cross entropy. Every reference implementation uses a custom gradient that returns
nothing for t1, t2 (REFERENCE §2); here everything is ordinary autograd, so ∂ℓ/∂t1 and ∂ℓ/∂t2 exist
and the meta-learned trainers can learn the temperatures.

Normalisation (choice, measured): ``γ`` is found by an unrolled Newton iteration on
``F(w) = log Σ_j exp_{t2}(a_j − γ(w))`` with ``a = z − max z``, ``γ(w) = (e^{(t2−1)w} − 1)/(t2−1)``
(so ``w = γ`` at t2 = 1), starting at ``w = 0``. ``F`` is nearly linear in ``w`` (exactly at t2 = 1:
one step gives logsumexp), and 10 steps leave ``|Σ p̂ − 1| < 1e-14`` in float64 for C ∈ {2 … 1000},
logit scales 0.01 … 1e4 and t2 ∈ (1, 4]. Amid et al.'s fixed-point loop
``a ← a0 · (Σ exp_t(a))^{1−t}`` converges only linearly: on the same kind of grid 5 iterations leave
up to 7e-2, 10 up to 2e-2 and 50 up to 2e-7 (worst at C = 100, t2 = 2, logit scale 100), so we use
Newton (float32: ``|Σ p̂ − 1| ≤ 1.5e-6``). All values are computed in log space
(``log p̂_j = log1p((1−t2)x)/(1−t2)``), so nothing underflows; ``(e^{ux} − 1)/u`` and
``log1p(ux)/u`` switch to their series where ``|ux| < 1e-3``, so t = 1 is exact and differentiable.

Ranges (chosen): t1 ∈ [0, 1] (shu: 0 ≤ t1 < 1; t1 = 1 is the CE end), t2 ∈ [1, 4] (t2 < 1 needs a
bisection normaliser and is not a heavy tail; t2 > 4 makes the tail so heavy the loss barely
separates classes). Defaults t1 = 0.8, t2 = 1.2.
"""
from __future__ import annotations

import torch

from evoloss.losses.criterion import as_column, as_param
from evoloss.losses.registry import Param, register_family

BITEMPERED_PARAMS = [
    Param("t1", default=0.8, low=0.0, high=1.0, doc="temperature of the log (t1 < 1: bounded loss)"),
    Param("t2", default=1.2, low=1.0, high=4.0, doc="temperature of the exp (t2 > 1: heavy-tailed softmax)"),
]


def expm1_ratio(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``(exp(u·x) − 1)/u``, equal to ``x`` at ``u = 0``; series where ``|u·x| < 1e-3`` (error ~1e-16)."""
    ux = u * x
    small = torch.abs(ux) < 1e-3
    safe_u = torch.where(small, torch.ones_like(ux), u * torch.ones_like(ux))
    series = x * (1.0 + ux / 2.0 + ux * ux / 6.0 + ux * ux * ux / 24.0)
    return torch.where(small, series, torch.expm1(torch.where(small, torch.zeros_like(ux), ux)) / safe_u)


def log1p_ratio(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``log(1 + u·x)/u``, equal to ``x`` at ``u = 0``; series where ``|u·x| < 1e-3``."""
    ux = u * x
    small = torch.abs(ux) < 1e-3
    safe_u = torch.where(small, torch.ones_like(ux), u * torch.ones_like(ux))
    series = x * (1.0 - ux / 2.0 + ux * ux / 3.0 - ux * ux * ux / 4.0)
    return torch.where(small, series, torch.log1p(torch.where(small, torch.zeros_like(ux), ux)) / safe_u)


def tempered_log_softmax(logits: torch.Tensor, t2: torch.Tensor, num_iters: int = 10) -> torch.Tensor:
    """``log p̂`` of the tempered softmax with temperature ``t2 ≥ 1`` (``[B, 1]`` or 0-d), ``[B, C]``.

    Newton on ``w`` (module docstring) with the loop unrolled, so gradients reach ``logits`` and ``t2``.
    """
    shifted = logits - logits.amax(dim=1, keepdim=True)
    excess = t2 - 1.0  # t2 − 1 ≥ 0
    w = torch.zeros_like(shifted[:, :1])
    for _ in range(num_iters):
        gamma = expm1_ratio(w, excess)
        log_probs = log1p_ratio(shifted - gamma, -excess)  # log exp_t2(a − γ)
        log_total = torch.logsumexp(log_probs, dim=1, keepdim=True)
        weights = torch.exp(log_probs - log_total + excess * log_probs)  # p̃_j · exp_t2^{t2−1}
        slope = (1.0 + excess * gamma) * weights.sum(dim=1, keepdim=True)  # −dF/dw
        w = w + log_total / slope
    return log1p_ratio(shifted - expm1_ratio(w, excess), -excess)


def bitempered_label_table(
    logits: torch.Tensor, t1: float | torch.Tensor = 0.8, t2: float | torch.Tensor = 1.2
) -> torch.Tensor:
    """``[B, C]``: ``−log_t1(p̂_c) − (1 − Σ_j p̂_j^{2−t1})/(2 − t1)`` for every label c (shu Eq. 4)."""
    t1, t2 = as_column(as_param(t1, logits)), as_column(as_param(t2, logits))
    log_probs = tempered_log_softmax(logits, t2)
    power_sum = torch.exp((2.0 - t1) * log_probs).sum(dim=1, keepdim=True)
    return -expm1_ratio(log_probs, 1.0 - t1) - (1.0 - power_sum) / (2.0 - t1)


@register_family("bitempered", params=BITEMPERED_PARAMS,
                 helpers=(as_column, as_param, expm1_ratio, log1p_ratio, tempered_log_softmax),
                 label_table=bitempered_label_table)
def bitempered_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    t1: float | torch.Tensor = 0.8,
    t2: float | torch.Tensor = 1.2,
) -> torch.Tensor:
    """Bi-tempered logistic loss per sample (shu-adaptive-robust-loss Eq. 4; Amid et al. 2019).

    ``t1`` and ``t2`` may be floats, 0-d tensors or per-sample ``[B]`` tensors; gradients flow to both.
    """
    t1 = as_column(as_param(t1, logits))  # a float filled in on the device: no host-to-device copy
    t2 = as_column(as_param(t2, logits))
    log_probs = tempered_log_softmax(logits, t2)
    log_p_y = log_probs.gather(1, targets.unsqueeze(1))
    log_t1_p_y = expm1_ratio(log_p_y, 1.0 - t1)  # log_t1(p̂_y) = (p̂_y^{1−t1} − 1)/(1−t1)
    power_sum = torch.exp((2.0 - t1) * log_probs).sum(dim=1, keepdim=True)
    return (-log_t1_p_y - (1.0 - power_sum) / (2.0 - t1)).squeeze(1)
