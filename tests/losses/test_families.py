"""Each loss family against its formula written out independently here (NumPy, float64), plus the
limit identities of REFERENCE §2. Registry-wide properties are in test_family_contract.py."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evoloss.losses import LossSpec, create_loss

RNG_SEED = 20240611


def _batch(seed: int = RNG_SEED, batch: int = 9, classes: int = 5, scale: float = 2.5):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, scale, size=(batch, classes))
    targets = rng.integers(0, classes, size=batch)
    return logits, targets


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _onehot(targets: np.ndarray, classes: int) -> np.ndarray:
    return np.eye(classes)[targets]


def _ours(family: str, logits: np.ndarray, targets: np.ndarray, **params) -> np.ndarray:
    loss = create_loss(LossSpec(family, params), reduction="none")
    return loss(torch.tensor(logits, dtype=torch.float64), torch.tensor(targets)).numpy()


def _p_y(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    return _softmax(logits)[np.arange(len(targets)), targets]


# --- formulas ---------------------------------------------------------------------------------


def test_mae_is_one_minus_p_y():
    z, y = _batch()
    np.testing.assert_allclose(_ours("mae", z, y), 1.0 - _p_y(z, y), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("q", [0.05, 0.3, 0.7, 1.0])
def test_gce_formula(q):
    z, y = _batch()
    np.testing.assert_allclose(_ours("gce", z, y, q=q), (1.0 - _p_y(z, y) ** q) / q, rtol=1e-11)


@pytest.mark.parametrize("alpha,beta,A", [(0.1, 1.0, math.log(1e-4)), (6.0, 0.1, -4.0), (1.3, 2.2, -15.0)])
def test_sce_formula_reverse_ce_of_clipped_label(alpha, beta, A):
    z, y = _batch()
    p = _softmax(z)
    clipped_label = np.clip(_onehot(y, z.shape[1]), math.exp(A), 1.0)
    reverse_ce = -(p * np.log(clipped_label)).sum(axis=1)
    ce = -np.log(p[np.arange(len(y)), y])
    np.testing.assert_allclose(_ours("sce", z, y, alpha=alpha, beta=beta, A=A), alpha * ce + beta * reverse_ce,
                               rtol=1e-11)


@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (10.0, 0.1), (0.0, 3.0)])
def test_nce_mae_formula(alpha, beta):
    z, y = _batch()
    p = _softmax(z)
    nce = -np.log(p[np.arange(len(y)), y]) / -np.log(p).sum(axis=1)
    expected = alpha * nce + beta * (1.0 - p[np.arange(len(y)), y])
    np.testing.assert_allclose(_ours("nce_mae", z, y, alpha=alpha, beta=beta), expected, rtol=1e-11)


@pytest.mark.parametrize("alpha,beta,gamma", [(1.0, 1.0, 0.5), (2.0, 0.5, 2.0), (1.0, 0.0, 0.0)])
def test_nfl_mae_formula(alpha, beta, gamma):
    z, y = _batch()
    p = _softmax(z)
    focal = -((1.0 - p) ** gamma) * np.log(p)
    nfl = focal[np.arange(len(y)), y] / focal.sum(axis=1)
    expected = alpha * nfl + beta * (1.0 - p[np.arange(len(y)), y])
    np.testing.assert_allclose(_ours("nfl_mae", z, y, alpha=alpha, beta=beta, gamma=gamma), expected, rtol=1e-10)


@pytest.mark.parametrize("lam,d", [(2.3, 2.0), (1.0, 1.5), (5.0, 4.0), (0.5, 1.01)])
def test_polysoft_piecewise_formula(lam, d):
    z, y = _batch(scale=4.0)
    ce = -np.log(_p_y(z, y))
    expected = np.array([
        (d - 1) * lam / d * (1 - (1 - c / lam) ** (d / (d - 1))) if c < lam else (d - 1) * lam / d for c in ce
    ])
    assert (ce < lam).any() or lam < 1.0, "the batch should exercise the polynomial branch"
    np.testing.assert_allclose(_ours("polysoft", z, y, lam=lam, d=d), expected, rtol=1e-11)


@pytest.mark.parametrize("pi1", [0.05, 0.3, 0.5, 0.7, 0.95])
def test_js_formula_with_full_distributions(pi1):
    z, y = _batch()
    p = _softmax(z)
    label = _onehot(y, z.shape[1])
    m = pi1 * label + (1 - pi1) * p
    kl_label = np.where(label > 0, label * np.log(np.where(label > 0, label, 1.0) / m), 0.0).sum(axis=1)
    kl_pred = (p * np.log(p / m)).sum(axis=1)
    expected = (pi1 * kl_label + (1 - pi1) * kl_pred) / (-(1 - pi1) * math.log(1 - pi1))
    np.testing.assert_allclose(_ours("js", z, y, pi1=pi1), expected, rtol=1e-10)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.5, 0.9])
def test_label_smoothing_formula_and_torch(eps):
    z, y = _batch()
    target = (1 - eps) * _onehot(y, z.shape[1]) + eps / z.shape[1]
    expected = -(target * np.log(_softmax(z))).sum(axis=1)
    ours = _ours("label_smoothing", z, y, eps=eps)
    np.testing.assert_allclose(ours, expected, rtol=1e-11)
    torch_ls = F.cross_entropy(torch.tensor(z), torch.tensor(y), label_smoothing=eps, reduction="none")
    np.testing.assert_allclose(ours, torch_ls.numpy(), rtol=1e-11)


@pytest.mark.parametrize("beta", [0.0, 0.8, 0.95, 1.0])
def test_bootstrap_soft_formula(beta):
    z, y = _batch()
    p = _softmax(z)
    target = beta * _onehot(y, z.shape[1]) + (1 - beta) * p
    np.testing.assert_allclose(_ours("bootstrap", z, y, beta=beta), -(target * np.log(p)).sum(axis=1), rtol=1e-11)


def test_bootstrap_gradient_flows_through_prediction_target():
    """Reed et al.'s soft objective: the prediction in the target is not detached (module docstring)."""
    z = torch.tensor([[0.3, -0.2, 1.1]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0])
    create_loss("bootstrap", beta=0.0)(z, y).backward()
    p = torch.softmax(z.detach(), 1)[0]
    log_p = torch.log(p)
    entropy = -(p * log_p).sum()
    expected = -p * (log_p + entropy)  # ∂H/∂z_k = −p_k (log p_k + H)
    torch.testing.assert_close(z.grad[0], expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 5.0])
def test_focal_formula(gamma):
    z, y = _batch()
    p_y = _p_y(z, y)
    np.testing.assert_allclose(_ours("focal", z, y, gamma=gamma), -((1 - p_y) ** gamma) * np.log(p_y), rtol=1e-10)


# --- limit identities ---------------------------------------------------------------------------


def _ce(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    return -np.log(_p_y(z, y))


def test_gce_q_to_zero_approaches_ce_linearly_and_q_one_is_mae():
    z, y = _batch()
    ce = _ce(z, y)
    errors = [np.abs(_ours("gce", z, y, q=q) - ce).max() for q in (1e-2, 1e-3, 1e-4)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-4 * (ce**2).max()  # first-order term q·CE²/2
    np.testing.assert_allclose(_ours("gce", z, y, q=1.0), _ours("mae", z, y), rtol=1e-13, atol=1e-15)


def test_sce_alpha_one_beta_zero_is_ce():
    z, y = _batch()
    np.testing.assert_allclose(_ours("sce", z, y, alpha=1.0, beta=0.0), _ce(z, y), rtol=1e-13)


def test_bitempered_t1_t2_one_is_ce():
    z, y = _batch(scale=6.0)
    np.testing.assert_allclose(_ours("bitempered", z, y, t1=1.0, t2=1.0), _ce(z, y), rtol=1e-12)


def test_other_ce_ends():
    z, y = _batch()
    ce = _ce(z, y)
    for family, params in [("focal", {"gamma": 0.0}), ("label_smoothing", {"eps": 0.0}), ("bootstrap", {"beta": 1.0})]:
        np.testing.assert_allclose(_ours(family, z, y, **params), ce, rtol=1e-12, err_msg=family)


def test_js_pi1_to_zero_ratio_to_ce_approaches_one():
    """ℓ_JS/CE → 1 as π1 → 0. The valid range stops at π1 = 0.05 (losses/js.py); there the ratio is
    within 4% of 1 where p_y ≥ 0.2 (JS is bounded, so it falls short where p_y ≪ π1). Below the range
    (calling the function directly) the ratio keeps converging for every sample."""
    from evoloss.losses import get_family

    fn = get_family("js").fn
    p_y = np.array([0.9, 0.5, 0.2, 0.1, 0.01, 1e-3])
    z = np.stack([np.log(p_y), np.log1p(-p_y)], axis=1)  # two classes, label 0 has probability p_y
    y = np.zeros(len(p_y), dtype=np.int64)
    ce = -np.log(p_y)
    at_boundary = _ours("js", z, y, pi1=0.05) / ce
    assert np.all(np.abs(at_boundary[p_y >= 0.2] - 1.0) < 0.04), at_boundary
    zr, yr = _batch()
    zt, yt = torch.tensor(zr), torch.tensor(yr)
    gaps = [np.abs(fn(zt, yt, pi1=pi1).numpy() / _ce(zr, yr) - 1.0).max() for pi1 in (0.05, 1e-2, 1e-3, 1e-5)]
    assert all(a > b for a, b in zip(gaps, gaps[1:])), gaps
    assert gaps[-1] < 1e-3, gaps


def test_js_pi1_to_one_approaches_reduced_mae():
    from evoloss.losses import get_family

    z, y = _batch()
    out = get_family("js").fn(torch.tensor(z), torch.tensor(y), pi1=1 - 1e-9).numpy()
    np.testing.assert_allclose(out, 1.0 - _p_y(z, y), atol=0.06)
