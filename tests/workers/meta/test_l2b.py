"""Learning to Bootstrap (zhou Alg. 1): meta-gradient at ε = 0 vs central differences, the
weight rules of Eqs. 8–9 and the ablations, end-to-end runs."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from evoloss.losses import LossSpec, Param, register_family
from tests.workers.meta.conftest import (
    central_difference, oracle_step_meta_loss, tiny_batches, tiny_mlp, tiny_task, tiny_task_data,
)
from evoloss.workers.meta.l2b import LearningToBootstrap, bootstrap_weights
from evoloss.workers.meta.lookahead import LookaheadConfig
from evoloss.workers.meta.method import Batch
from evoloss.workers.trainer import create_trainer


@register_family("_test_l2b_nan", [Param("scale", 1.0, low=0.0, high=2.0)])
def _nan_loss(logits, targets, scale):
    return F.cross_entropy(logits, targets, reduction="none") * float("nan") * scale


@pytest.mark.parametrize("head_only", [False, True])
def test_meta_gradient_at_zero_matches_central_difference(head_only):
    model = tiny_mlp(0)
    x, y, xm, ym = tiny_batches(1)
    method = LearningToBootstrap(LossSpec("ce"), lookahead=LookaheadConfig(head_only=head_only))
    got = method.meta_gradient(model, Batch(x, y, torch.arange(len(y))), xm, ym, 0.5)
    pseudo = model(x).argmax(1)
    assert not torch.equal(pseudo, y)  # both terms of Eq. 3 matter on this batch

    def meta_loss(eps: torch.Tensor) -> float:
        ea, eb = eps[: len(y)], eps[len(y):]

        def train_loss(twin):
            if head_only:
                for p in list(twin.parameters())[:-2]:
                    p.requires_grad_(False)
            logits = twin(x)
            f = -logits.log_softmax(1)[torch.arange(len(y)), y]
            g = -logits.log_softmax(1)[torch.arange(len(y)), pseudo]
            return (ea * f + eb * g).sum()

        return oracle_step_meta_loss(model, train_loss, xm, ym, 0.5)

    fd = central_difference(meta_loss, torch.zeros(2 * len(y), dtype=torch.float64))
    torch.testing.assert_close(torch.cat(got.grads), fd, rtol=1e-6, atol=1e-10)
    assert float(fd.abs().max()) > 1e-6


def test_weights_rectify_and_normalise_over_the_batch():
    ga = torch.tensor([-2.0, 1.0, -1.0, 0.5], dtype=torch.float64)
    gb = torch.tensor([-1.0, -3.0, 2.0, 0.0], dtype=torch.float64)
    alpha, beta = bootstrap_weights(ga, gb)
    torch.testing.assert_close(alpha, torch.tensor([2.0, 0.0, 1.0, 0.0], dtype=torch.float64) / 7)
    torch.testing.assert_close(beta, torch.tensor([1.0, 3.0, 0.0, 0.0], dtype=torch.float64) / 7)
    assert float(alpha.sum() + beta.sum()) == pytest.approx(1.0)


def test_ablation_variants():
    ga = torch.tensor([-2.0, 1.0, -1.0, 0.5], dtype=torch.float64)
    gb = torch.tensor([-1.0, -3.0, 2.0, 0.0], dtype=torch.float64)
    a0, b0 = bootstrap_weights(ga, gb, "alpha0")
    assert torch.equal(a0, torch.zeros(4, dtype=torch.float64))
    torch.testing.assert_close(b0, torch.tensor([0.25, 0.75, 0.0, 0.0], dtype=torch.float64))
    a1, b1 = bootstrap_weights(ga, gb, "beta0")
    torch.testing.assert_close(a1, torch.tensor([2 / 3, 0.0, 1 / 3, 0.0], dtype=torch.float64))
    assert torch.equal(b1, torch.zeros(4, dtype=torch.float64))
    a2, b2 = bootstrap_weights(ga, gb, "sum1")
    torch.testing.assert_close(a2, torch.tensor([2 / 3, 0.0, 1.0, 0.5], dtype=torch.float64))
    torch.testing.assert_close(a2 + b2, torch.ones(4, dtype=torch.float64))


def test_all_zero_weights_stay_zero_without_nan():
    positive = torch.tensor([0.5, 1.0, 0.0], dtype=torch.float64)
    alpha, beta = bootstrap_weights(positive, positive)
    assert torch.equal(alpha, torch.zeros(3, dtype=torch.float64)) and torch.equal(beta, alpha)


@pytest.mark.parametrize("variant", ["free", "alpha0", "beta0", "sum1"])
def test_end_to_end_every_variant(variant):
    (record,) = create_trainer("l2b", variant=variant).fit(tiny_task(epochs=2), [], data=tiny_task_data())
    assert record.status == "ok", record.error
    assert record.trainer == "l2b" and record.family == "ce" and record.extra["variant"] == variant
    share = record.extra["per_epoch"]["alpha_share"]
    assert len(share) == 2
    if variant == "alpha0":
        assert all(s == 0 for s in share if s == s)
    if variant == "beta0":
        assert all(s == 1 for s in share if s == s)
    assert record.extra["meta_steps"] == record.extra["steps"] == 6


def test_same_seed_same_record():
    data = tiny_task_data()
    a = create_trainer("l2b").fit(tiny_task(seed=3), [], data=data)[0]
    b = create_trainer("l2b").fit(tiny_task(seed=3), [], data=data)[0]
    assert {**a.to_dict(), "wall_s": 0} == {**b.to_dict(), "wall_s": 0}


def test_nan_base_loss_is_diverged():
    (record,) = create_trainer("l2b").fit(tiny_task(), [LossSpec("_test_l2b_nan")], data=tiny_task_data())
    assert record.status == "diverged" and "non-finite" in record.error


def test_bad_options_raise():
    with pytest.raises(ValueError, match="variant"):
        create_trainer("l2b", variant="both")
    with pytest.raises(ValueError, match="meta_every must be 1"):
        create_trainer("l2b", meta_every=10)
