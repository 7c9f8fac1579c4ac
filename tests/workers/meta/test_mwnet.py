"""Meta-Weight-Net: meta-gradient vs central differences, end-to-end runs, divergence."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from evoloss.losses import LossSpec, Param, register_family
from tests.workers.meta.conftest import (
    central_difference, directional_difference, oracle_step_meta_loss, tiny_batches, tiny_mlp, tiny_task,
    tiny_task_data,
)
from evoloss.workers.meta.method import Batch
from evoloss.workers.meta.mwnet import MetaWeightNet, WeightNet
from evoloss.workers.trainer import create_trainer


@register_family("_test_mwnet_nan", [Param("scale", 1.0, low=0.0, high=2.0)])
def _nan_loss(logits, targets, scale):
    return F.cross_entropy(logits, targets, reduction="none") * float("nan") * scale


def weight_formula(loss, w1, b1, w2, b2):
    """w = σ(W2 · ReLU(W1 ℓ + b1) + b2), written out."""
    hidden = torch.relu(loss[:, None] * w1[None, :] + b1[None, :])
    return torch.sigmoid(hidden @ w2 + b2)


def unflatten(flat):
    return flat[:100], flat[100:200], flat[200:300], flat[300]


def test_weight_net_matches_its_formula_and_is_seeded():
    net = WeightNet(seed=3).double()
    loss = torch.linspace(0, 4, 7, dtype=torch.float64)
    flat = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    torch.testing.assert_close(net(loss), weight_formula(loss, *unflatten(flat)))
    same = torch.cat([p.detach().reshape(-1) for p in WeightNet(seed=3).double().parameters()])
    other = torch.cat([p.detach().reshape(-1) for p in WeightNet(seed=4).double().parameters()])
    assert torch.equal(flat, same) and not torch.equal(flat, other)


@pytest.mark.parametrize("normalize", [False, True])
def test_meta_gradient_matches_central_difference(normalize):
    model = tiny_mlp(0)
    x, y, xm, ym = tiny_batches(1)
    method = MetaWeightNet(LossSpec("ce"), seed=5, normalize=normalize)
    method.init_meta_parameters(torch.float64, "cpu")
    got = method.meta_gradient(model, Batch(x, y, torch.arange(len(y))), xm, ym, 0.5)
    got_flat = torch.cat([g.reshape(-1) for g in got.grads])
    theta = torch.cat([p.detach().reshape(-1) for p in method.net.parameters()])

    def meta_loss(flat: torch.Tensor) -> float:
        def train_loss(twin):
            ce = F.cross_entropy(twin(x), y, reduction="none")
            w = weight_formula(ce.detach(), *unflatten(flat))
            return (w * ce).sum() / w.sum() if normalize else (w * ce).mean()
        return oracle_step_meta_loss(model, train_loss, xm, ym, 0.5)

    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        v = torch.randn(theta.shape, generator=g, dtype=torch.float64)
        assert float(got_flat @ v) == pytest.approx(directional_difference(meta_loss, theta, v), rel=1e-6, abs=1e-10)
    tail = slice(295, 301)  # the last W2 entries and b2, coordinate by coordinate
    fd = central_difference(lambda part: meta_loss(torch.cat([theta[:295], part])), theta[tail])
    torch.testing.assert_close(got_flat[tail], fd, rtol=1e-6, atol=1e-10)
    assert float(got_flat.abs().max()) > 1e-8


def test_end_to_end_records_weights_and_learns():
    trainer = create_trainer("mwnet", meta_lr=1e-2)
    (record,) = trainer.fit(tiny_task(epochs=2), [], data=tiny_task_data())
    assert record.status == "ok", record.error
    assert record.trainer == "mwnet" and record.family == "ce" and record.epochs_run == 2
    per_epoch = record.extra["per_epoch"]
    assert len(per_epoch["mean_weight"]) == 2 and all(0 < w < 1 for w in per_epoch["mean_weight"])
    assert len(record.extra["weight_curve_final"]) == len(record.extra["loss_grid"]) == 11
    assert per_epoch["weight_curve"][0] != per_epoch["weight_curve"][1]  # the net was updated
    assert record.extra["meta_steps"] == record.extra["steps"] == 6


def test_same_seed_same_records_different_seed_different():
    data = tiny_task_data()
    a = create_trainer("mwnet").fit(tiny_task(seed=1), [LossSpec("ce")], data=data)[0]
    b = create_trainer("mwnet").fit(tiny_task(seed=1), [LossSpec("ce")], data=data)[0]
    c = create_trainer("mwnet").fit(tiny_task(seed=2), [LossSpec("ce")], data=data)[0]
    assert {**a.to_dict(), "wall_s": 0} == {**b.to_dict(), "wall_s": 0}
    assert a.extra["weight_curve_final"] != c.extra["weight_curve_final"]


def test_nan_base_loss_is_diverged_and_next_spec_still_trains():
    records = create_trainer("mwnet").fit(tiny_task(), [LossSpec("_test_mwnet_nan"), LossSpec("ce")],
                                         data=tiny_task_data())
    assert [r.status for r in records] == ["diverged", "ok"]
    assert "non-finite" in records[0].error


def test_bad_options_and_missing_meta_set_raise():
    with pytest.raises(ValueError, match="meta_lr"):
        create_trainer("mwnet", meta_lr=0.0)
    with pytest.raises(ValueError, match="meta set"):
        create_trainer("mwnet").fit(tiny_task(), [], data=tiny_task_data(n_meta=0))
    with pytest.raises(ValueError, match="mode"):
        create_trainer("mwnet", lookahead="adam")
