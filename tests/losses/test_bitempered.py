"""Bi-tempered loss against an independent reference: the tempered softmax by bisection (NumPy float64)
and Amid et al.'s Bregman form of the loss; plus the temperatures' gradients and the normaliser."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from evoloss.losses import LossSpec, create_loss, get_family
from evoloss.losses.bitempered import tempered_log_softmax


def _exp_t(x: np.ndarray, t: float) -> np.ndarray:
    if t == 1.0:
        return np.exp(x)
    return np.maximum(1.0 + (1.0 - t) * x, 0.0) ** (1.0 / (1.0 - t))


def _log_t(x: np.ndarray, t: float) -> np.ndarray:
    return np.log(x) if t == 1.0 else (x ** (1.0 - t) - 1.0) / (1.0 - t)


def _tempered_softmax(z: np.ndarray, t: float) -> np.ndarray:
    """Bisection on γ with Σ_j exp_t(z_j − γ) = 1, bracketed by [max z, max z + (C^{t−1} − 1)/(t − 1)]."""
    out = np.empty_like(z)
    classes = z.shape[1]
    for row, zr in enumerate(z):
        lo = zr.max()
        hi = lo + (np.log(classes) if t == 1.0 else (classes ** (t - 1.0) - 1.0) / (t - 1.0))
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if _exp_t(zr - mid, t).sum() > 1.0 else (lo, mid)
        out[row] = _exp_t(zr - 0.5 * (lo + hi), t)
    return out


def _reference(z: np.ndarray, y: np.ndarray, t1: float, t2: float) -> np.ndarray:
    """Σ_j [y_j(log_t1 y_j − log_t1 p_j) − (y_j^{2−t1} − p_j^{2−t1})/(2−t1)] (Amid et al. 2019, Eq. 3)."""
    p = _tempered_softmax(z, t2)
    label = np.eye(z.shape[1])[y]
    log_t1_label = np.where(label > 0, _log_t(np.where(label > 0, label, 1.0), t1), 0.0)
    terms = label * (log_t1_label - _log_t(p, t1)) - (label ** (2 - t1) - p ** (2 - t1)) / (2 - t1)
    return terms.sum(axis=1)


@pytest.mark.parametrize("t1,t2", [(0.8, 1.2), (0.5, 2.0), (0.0, 4.0), (1.0, 1.5), (0.9, 1.0), (0.2, 3.3)])
def test_matches_bisection_reference(t1, t2):
    rng = np.random.default_rng(7)
    z, y = rng.normal(0, 3, size=(8, 6)), rng.integers(0, 6, size=8)
    ours = create_loss(LossSpec("bitempered", {"t1": t1, "t2": t2}), reduction="none")
    np.testing.assert_allclose(ours(torch.tensor(z), torch.tensor(y)).numpy(), _reference(z, y, t1, t2), rtol=1e-10)


@pytest.mark.parametrize("classes,scale,t2", [(100, 100.0, 2.0), (100, 3.0, 1.5), (10, 10.0, 3.0), (1000, 1.0, 4.0),
                                             (100, 1e4, 4.0), (2, 1e4, 4.0)])
def test_normaliser_converges_on_hard_cases(classes, scale, t2):
    """Cases where Amid et al.'s 5-step fixed point leaves up to 7e-2 (losses/bitempered.py docstring)."""
    rng = np.random.default_rng(classes)
    z = rng.normal(0, scale, size=(4, classes))
    log_p = tempered_log_softmax(torch.tensor(z), torch.tensor(t2))
    np.testing.assert_allclose(torch.exp(log_p).sum(1).numpy(), 1.0, atol=1e-12)
    if scale <= 100:
        np.testing.assert_allclose(torch.exp(log_p).numpy(), _tempered_softmax(z, t2), atol=1e-12)


def test_t2_one_is_softmax_and_t1_t2_continuous_at_one():
    z = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 3
    torch.testing.assert_close(tempered_log_softmax(z, torch.tensor(1.0, dtype=torch.float64)),
                               torch.log_softmax(z, 1), rtol=1e-13, atol=1e-13)
    y = torch.tensor([0, 1, 2, 3, 0])
    fn = get_family("bitempered").fn
    at_one = fn(z, y, t1=1.0, t2=1.0)
    torch.testing.assert_close(fn(z, y, t1=1.0 - 1e-7, t2=1.0 + 1e-7), at_one, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("t1,t2", [(0.8, 1.2), (1.0, 1.0), (0.3, 3.5), (1.0, 2.0)])
def test_gradcheck_temperatures_including_the_ce_point(t1, t2):
    """∂ℓ/∂t1 and ∂ℓ/∂t2 exist (no custom gradient), also on the series branch at t = 1."""
    z = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(4)) * 2
    y = torch.tensor([0, 1, 2, 4])
    fn = get_family("bitempered").fn
    temps = (torch.tensor(t1, dtype=torch.float64, requires_grad=True),
             torch.tensor(t2, dtype=torch.float64, requires_grad=True))
    assert torch.autograd.gradcheck(lambda a, b: fn(z, y, t1=a, t2=b), temps, eps=1e-6, atol=1e-7)


def test_float32_agrees_with_float64():
    z = torch.randn(16, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(9)) * 4
    y = torch.arange(16) % 10
    for t1, t2 in [(0.8, 1.2), (0.5, 4.0), (1.0, 1.0 + 1e-4)]:
        fn = create_loss(LossSpec("bitempered", {"t1": t1, "t2": t2}), reduction="none")
        torch.testing.assert_close(fn(z.float(), y).double(), fn(z, y), rtol=2e-5, atol=2e-5)
