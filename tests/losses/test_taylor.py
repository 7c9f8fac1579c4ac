"""The Taylor loss (gao-arl Eq. 4–5) against its symbolic expansion, term by term, and its scale rule."""
from __future__ import annotations

import math

import numpy as np
import pytest
import sympy
import torch

from evoloss.losses import LossSpec, create_loss, get_family
from evoloss.losses import taylor

P, Y = sympy.symbols("p y")
THETA = sympy.symbols("theta0:12")
# Eq. 5 as Taylor terms θ_k · a^i b^j / (i! j!), a = p − θ0, b = y − θ1: k -> (i, j).
EXPONENTS = {2: (1, 0), 3: (2, 0), 4: (3, 0), 5: (4, 0), 6: (1, 1), 7: (1, 2), 8: (2, 1), 9: (3, 1), 10: (1, 3),
             11: (2, 2)}


def _symbolic_term(k: int) -> sympy.Expr:
    i, j = EXPONENTS[k]
    return sympy.expand(THETA[k] * (P - THETA[0]) ** i * (Y - THETA[1]) ** j / (math.factorial(i) * math.factorial(j)))


def _symbolic_loss() -> sympy.Expr:
    return sympy.expand(sum(_symbolic_term(k) for k in EXPONENTS))


def _numeric(expr: sympy.Expr):
    return sympy.lambdify((P, Y, *THETA), expr, modules="numpy")


def test_eq5_coefficients_are_the_papers():
    a, b = P - THETA[0], Y - THETA[1]
    t = THETA
    paper = (t[2] * a + t[3] * a**2 / 2 + t[4] * a**3 / 6 + t[5] * a**4 / 24 + t[6] * a * b + t[7] * a * b**2 / 2
             + t[8] * a**2 * b / 2 + t[9] * a**3 * b / 6 + t[10] * a * b**3 / 6 + t[11] * a**2 * b**2 / 4)
    assert sympy.expand(paper - _symbolic_loss()) == 0


@pytest.mark.parametrize("k", sorted(EXPONENTS))
def test_each_term_matches_its_symbolic_expansion(k):
    """Only θ0, θ1 and θk non-zero: catches a term centred on the wrong θ (the EvoMAL tp.py bug)."""
    rng = np.random.default_rng(1000 + k)
    theta = np.zeros(12)
    theta[0], theta[1] = rng.uniform(-1, 2, size=2)
    theta[k] = rng.uniform(-10, 10)
    p, y = rng.uniform(0, 1, size=50), rng.integers(0, 2, size=50).astype(float)
    expected = _numeric(_symbolic_term(k))(p, y, *theta)
    ours = taylor.taylor_polynomial(torch.tensor(p), torch.tensor(y), [torch.tensor(v) for v in theta])
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-12, atol=1e-12)


def _reference_loss(logits: np.ndarray, targets: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Mean over classes of the expanded polynomial, divided by max |ℓ| on the 101 × {0, 1} grid."""
    ell = _numeric(_symbolic_loss())
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = e / e.sum(axis=1, keepdims=True)
    onehot = np.eye(logits.shape[1])[targets]
    grid_p, grid_y = np.meshgrid(np.linspace(0, 1, 101), [0.0, 1.0])
    scale = max(np.abs(ell(grid_p, grid_y, *theta)).max(), 1e-8)
    return ell(probs, onehot, *theta).sum(axis=1) / scale


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loss_matches_normalised_symbolic_reference(seed):
    rng = np.random.default_rng(seed)
    theta = np.concatenate([rng.uniform(-1, 2, 2), rng.uniform(-10, 10, 10)])
    logits, targets = rng.normal(0, 3, size=(7, 6)), rng.integers(0, 6, size=7)
    params = {f"theta{i}": float(v) for i, v in enumerate(theta)}
    ours = create_loss(LossSpec("taylor", params), reduction="none")(torch.tensor(logits), torch.tensor(targets))
    np.testing.assert_allclose(ours.numpy(), _reference_loss(logits, targets, theta), rtol=1e-11, atol=1e-13)


def test_scale_normalisation_removes_positive_coefficient_scale():
    rng = np.random.default_rng(5)
    theta = np.concatenate([rng.uniform(-1, 2, 2), rng.uniform(-3, 3, 10)])
    logits, targets = torch.tensor(rng.normal(size=(5, 4))), torch.tensor(rng.integers(0, 4, size=5))

    def loss(th: np.ndarray) -> torch.Tensor:
        return get_family("taylor").fn(logits, targets, **{f"theta{i}": float(v) for i, v in enumerate(th)})

    scaled = theta.copy()
    scaled[2:] *= 3.0
    torch.testing.assert_close(loss(scaled), loss(theta), rtol=1e-12, atol=1e-14)
    flipped = theta.copy()
    flipped[2:] *= -1.0
    torch.testing.assert_close(loss(flipped), -loss(theta), rtol=1e-12, atol=1e-14)


def test_scale_is_the_grid_max_and_has_a_floor():
    theta = [torch.tensor(v) for v in (0.0, 0.0, 1.0) + (0.0,) * 9]  # ℓ = p: max |ℓ| = 1 at p = 1
    assert taylor.taylor_grid_max_abs(theta).item() == pytest.approx(1.0)
    zeros = [torch.tensor(0.0, requires_grad=True) for _ in range(12)]
    logits = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    out = get_family("taylor").fn(logits, torch.tensor([0, 1, 2]), **{f"theta{i}": z for i, z in enumerate(zeros)})
    assert torch.equal(out, torch.zeros(3, dtype=out.dtype))
    out.sum().backward()
    assert torch.isfinite(logits.grad).all() and all(torch.isfinite(z.grad) for z in zeros)


def test_per_sample_scale_is_per_sample():
    theta = [torch.tensor(v) for v in taylor.TAYLOR_DEFAULTS]
    per_sample = [t.repeat(3) for t in theta]
    per_sample[6] = torch.tensor([-2.0, -4.0, 1.0])
    scales = taylor.taylor_grid_max_abs(per_sample)
    assert scales.shape == (3,)
    for i in range(3):
        single = [t[i] if t.dim() else t for t in per_sample]
        assert scales[i].item() == pytest.approx(taylor.taylor_grid_max_abs(single).item())


def test_default_is_brier_minus_constant_and_decreases_in_p_y():
    fam = get_family("taylor")
    assert fam.defaults() == {f"theta{i}": v for i, v in enumerate(taylor.TAYLOR_DEFAULTS)}
    logits = torch.randn(8, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    targets = torch.arange(8) % 5
    probs = torch.softmax(logits, 1)
    brier = ((probs - torch.nn.functional.one_hot(targets, 5)) ** 2).sum(1)
    torch.testing.assert_close(fam.fn(logits, targets), brier - 1.0)
    p_y = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)
    two_class = torch.stack([torch.log(p_y), torch.log1p(-p_y)], 1)
    values = fam.fn(two_class, torch.zeros(50, dtype=torch.long))
    assert bool((values[1:] < values[:-1]).all())


def test_normalisation_name_is_exposed_for_the_exporter():
    fam = get_family("taylor")
    assert taylor.NORMALISATION == "taylor_classsum_grid_max_abs"
    assert fam.fn.normalisation == taylor.NORMALISATION
    assert taylor.taylor_grid_max_abs in fam.helpers and taylor.taylor_polynomial in fam.helpers


def test_ranges_bound_every_coefficient():
    fam = get_family("taylor")
    for i, p in enumerate(fam.params):
        assert (p.low, p.high) == ((-1.0, 2.0) if i < 2 else (-10.0, 10.0))


def test_grid_scale_with_repeated_rows_equals_brute_force_and_separate_gradients():
    """A population passes each member's θ repeated; the scale and its gradient must stay per sample."""
    rng = np.random.default_rng(21)
    members = np.concatenate([rng.uniform(-1, 2, (3, 2)), rng.uniform(-10, 10, (3, 10))], axis=1)
    rows = members[[0, 1, 0, 2, 1, 0]]
    theta = [torch.tensor(rows[:, k], requires_grad=True) for k in range(12)]
    scales = taylor.taylor_grid_max_abs(theta)
    ell = _numeric(_symbolic_loss())
    grid_p, grid_y = np.meshgrid(np.linspace(0, 1, 101), [0.0, 1.0])
    brute = [np.abs(ell(grid_p, grid_y, *row)).max() for row in rows]
    np.testing.assert_allclose(scales.detach().numpy(), brute, rtol=1e-12)
    weights = torch.arange(1.0, 7.0, dtype=torch.float64)
    (scales * weights).sum().backward()
    for i, row in enumerate(rows):
        single = [torch.tensor(v, requires_grad=True) for v in row]
        taylor.taylor_grid_max_abs(single).sum().mul(weights[i]).backward()
        got = torch.stack([t.grad[i] for t in theta])
        torch.testing.assert_close(got, torch.stack([s.grad for s in single]), rtol=1e-12, atol=1e-12)
