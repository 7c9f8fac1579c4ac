"""``relative_gce``, the batch-relative GCE, against its formula (float64, written independently in numpy),
and the batch-family contract (`losses.registry`): leading batch dimensions, ``mask``, ``ignore_index``,
the refused probability targets, the plug-in and the loss-shape curves."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evoloss.losses import LossSpec, create_loss, export_plugin, get_family, load_loss
from evoloss.losses.registry import register_family, unregister_family
from evoloss.results.loss_shapes import loss_shape_curves


def _case(seed: int = 0, batch: int = 9, classes: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, classes, generator=g, dtype=torch.float64) * 2.0, torch.randint(0, classes, (batch,),
                                                                                               generator=g)


def _formula(z: np.ndarray, y: np.ndarray, q: float, a: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-row values and the gradient of their mean in the logits: w_i = p_i^q / mean(p^q)^a,
    ℓ_i = w_i·(−log p_i), ∂mean/∂z_i = w_i·(softmax(z_i) − e_{y_i}) / B (w held constant)."""
    e = np.exp(z - z.max(axis=1, keepdims=True))
    soft = e / e.sum(axis=1, keepdims=True)
    p = soft[np.arange(len(y)), y]
    w = p ** q / np.mean(p ** q) ** a
    onehot = np.eye(z.shape[1])[y]
    return w * -np.log(p), w[:, None] * (soft - onehot) / len(y)


@pytest.mark.parametrize(("q", "a"), [(0.5, 1.0), (1.3, 0.4), (0.0, 0.7), (0.8, 0.0)])
def test_value_and_gradient_follow_the_formula(q: float, a: float) -> None:
    z, y = _case()
    want_rows, want_grad = _formula(z.numpy(), y.numpy(), q, a)
    leaf = z.clone().requires_grad_(True)
    loss = create_loss("relative_gce", q=q, a=a)(leaf, y)
    loss.backward()
    np.testing.assert_allclose(create_loss("relative_gce", "none", q=q, a=a)(z, y).numpy(), want_rows, rtol=1e-12)
    np.testing.assert_allclose(float(loss.detach()), want_rows.mean(), rtol=1e-12)
    np.testing.assert_allclose(leaf.grad.numpy(), want_grad, rtol=1e-10, atol=1e-15)


def test_q_zero_is_ce_and_a_zero_has_gce_gradient() -> None:
    z, y = _case(1)
    for reduction in ("mean", "none"):
        torch.testing.assert_close(create_loss("relative_gce", reduction, q=0.0, a=0.6)(z, y),
                                   F.cross_entropy(z, y, reduction=reduction), rtol=1e-13, atol=1e-14)
    grads = []
    for spec in (LossSpec("relative_gce", {"q": 0.7, "a": 0.0}), LossSpec("gce", {"q": 0.7})):
        leaf = z.clone().requires_grad_(True)
        create_loss(spec)(leaf, y).backward()
        grads.append(leaf.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-15)


def test_a_one_keeps_the_batch_mean_weight_at_one() -> None:
    z, y = _case(2)
    p = torch.softmax(z, dim=1).gather(1, y[:, None])[:, 0]
    rows = create_loss("relative_gce", "none", q=0.9, a=1.0)(z, y)
    torch.testing.assert_close((rows / -torch.log(p)).mean(), torch.tensor(1.0, dtype=torch.float64))


def test_each_leading_index_is_its_own_batch_and_the_mask_leaves_rows_out() -> None:
    fn = get_family("relative_gce").fn
    z, y = _case(3, batch=12)
    stacked = fn(z.reshape(3, 4, 5), y.reshape(3, 4), q=0.6, a=0.8)
    separate = torch.stack([fn(z[i * 4:(i + 1) * 4], y[i * 4:(i + 1) * 4], q=0.6, a=0.8) for i in range(3)])
    torch.testing.assert_close(stacked, separate, rtol=1e-13, atol=1e-15)
    mask = torch.tensor([1.0] * 8 + [0.0] * 4, dtype=torch.float64)
    torch.testing.assert_close(fn(z, y, mask=mask, q=0.6, a=0.8)[:8], fn(z[:8], y[:8], q=0.6, a=0.8), rtol=1e-13,
                               atol=1e-15)
    per_row_q = torch.full((3, 4), 0.6, dtype=torch.float64)
    torch.testing.assert_close(fn(z.reshape(3, 4, 5), y.reshape(3, 4), q=per_row_q, a=0.8), stacked)


def test_ignored_rows_stay_out_of_the_statistic_as_in_ce() -> None:
    z, y = _case(4, batch=10)
    ignored = y.clone()
    ignored[[1, 6]] = -100
    kept = ignored != -100
    for q in (0.0, 0.7):
        loss = create_loss("relative_gce", q=q, a=1.0)
        torch.testing.assert_close(loss(z, ignored), loss(z[kept], y[kept]), rtol=1e-13, atol=1e-15)
        rows = create_loss("relative_gce", "none", q=q, a=1.0)(z, ignored)
        assert bool((rows[~kept] == 0).all())
    torch.testing.assert_close(create_loss("relative_gce", q=0.0)(z, ignored), F.cross_entropy(z, ignored))
    weight = torch.linspace(0.5, 2.0, 5, dtype=torch.float64)  # class weights weight the terms, as in CE
    torch.testing.assert_close(create_loss("relative_gce", q=0.0, weight=weight)(z, ignored),
                               F.cross_entropy(z, ignored, weight=weight), rtol=1e-13, atol=1e-15)
    nothing = torch.full_like(y, -100)
    assert float(create_loss("relative_gce", "sum", q=0.7)(z, nothing)) == 0.0


def test_extreme_logits_stay_finite() -> None:
    z = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float32,
                     requires_grad=True)
    y = torch.tensor([1, 0, 2])  # two rows with p_y underflowing to 0
    for q in (0.0, 0.5, 2.0):
        loss = create_loss("relative_gce", q=q, a=1.0)(z, y)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(z.grad).all(), q
        z.grad = None


def test_probability_targets_and_smoothing_are_refused() -> None:
    z, y = _case(5)
    with pytest.raises(ValueError, match="class-probability targets are not supported"):
        create_loss("relative_gce")(z, torch.softmax(z, dim=1))
    with pytest.raises(ValueError, match="label_smoothing=0.1"):
        create_loss("relative_gce", label_smoothing=0.1)


def test_a_batch_family_cannot_have_a_label_table() -> None:
    def table(logits: torch.Tensor) -> torch.Tensor:
        return -F.log_softmax(logits, dim=1)

    def fn(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return -F.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)

    with pytest.raises(ValueError, match="batch family has no label_table"):
        register_family("_test_batch_table", batch=True, label_table=table)(fn)
    register_family("_test_batch_plain", batch=True)(fn)
    try:
        assert get_family("_test_batch_plain").soft_targets is False
    finally:
        unregister_family("_test_batch_plain")


def test_plugin_round_trip_keeps_the_batch_statistic_per_batch(tmp_path: Path) -> None:
    spec = LossSpec("relative_gce", {"q": 0.45, "a": 0.9})
    loaded = load_loss(export_plugin(spec, tmp_path / "p", name="rel") / "loss.json")
    z, y = _case(6, batch=12)
    ignored = y.clone()
    ignored[3] = -100
    for target in (y, ignored):
        for reduction in ("mean", "none"):
            torch.testing.assert_close(loaded(z, target, reduction=reduction),
                                       create_loss(spec, reduction)(z, target), rtol=0, atol=0)
    source = (tmp_path / "p" / "rel.py").read_text()
    assert "batch=True" in source and "def relative_gce_loss" in source


def test_loss_shape_is_the_loss_of_a_batch_at_that_point() -> None:
    """Every point a one-row batch: w = p^q / (p^q)^a, so the labelled sweep is p^{q(1−a)}·(−log p)."""
    curves = loss_shape_curves(LossSpec("relative_gce", {"q": 0.8, "a": 0.5}), num_classes=4, points=9)
    p = curves["p"]
    np.testing.assert_allclose(curves["label"], p ** 0.4 * -np.log(p), rtol=1e-12)
    other = (1 - p) / 3  # the labelled class's share on the other sweep
    np.testing.assert_allclose(curves["other"], other ** 0.4 * -np.log(other), rtol=1e-12)
