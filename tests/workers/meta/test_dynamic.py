"""Dynamic Loss (jiang Eqs. 2–9): rank bins, hierarchical sampling, the loss against its formula,
meta-gradient vs central differences, end-to-end without clean data."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from evoloss.losses import LossSpec, Param, register_family
from tests.workers.meta.conftest import (
    CLASSES, central_difference, directional_difference, oracle_step_meta_loss, tiny_batches, tiny_mlp, tiny_task,
    tiny_task_data,
)
from evoloss.workers.meta.dynamic import DynamicLoss, DynamicMetaNet
from evoloss.workers.meta.dynamic_sampling import hierarchical_meta_set, rank_bins
from evoloss.workers.meta.method import Batch
from evoloss.workers.trainer import create_trainer

BINS, HIDDEN = 4, 100


@register_family("_test_dynamic_nan", [Param("scale", 1.0, low=0.0, high=2.0)])
def _nan_loss(logits, targets, scale):
    return F.cross_entropy(logits, targets, reduction="none") * float("nan") * scale


def test_rank_bins_are_classwise_loss_quantiles():
    losses = torch.tensor([0.9, 0.1, 0.5, 0.3, 2.0, 1.0, 0.2, 0.4])
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    # class 0 sorted: rows 1, 3, 2, 0 -> positions 0..3 -> bins 0, 0, 1, 1 (2 bins)
    assert rank_bins(losses, labels, 2, 2).tolist() == [1, 0, 1, 0, 1, 1, 0, 0]
    assert rank_bins(losses, labels, 2, 4).tolist() == [3, 0, 2, 1, 3, 2, 0, 1]


def test_hierarchical_sampling_with_full_primary_takes_lowest_losses_per_class():
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 1, 2] * 6)[torch.randperm(18, generator=g)]
    losses = torch.rand(len(labels), generator=g)
    meta, rest = hierarchical_meta_set(losses, labels, 3, primary_fraction=1.0, meta_fraction=0.5,
                                       generator=torch.Generator().manual_seed(1))
    expected = []
    for c in range(3):  # primary = the whole class (M0 = 1), meta = its 3 (= 0.5 · 6) lowest losses
        rows = (labels == c).nonzero()[:, 0]
        expected += rows[losses[rows].argsort()[:3]].tolist()
    assert meta.tolist() == sorted(expected)
    assert sorted(meta.tolist() + rest.tolist()) == list(range(len(labels)))
    uneven = torch.tensor([0] * 8 + [1] * 4)  # sizes are fractions of the smallest class (4)
    meta, _ = hierarchical_meta_set(torch.rand(12, generator=g), uneven, 2, primary_fraction=1.0,
                                    meta_fraction=0.5, generator=torch.Generator().manual_seed(1))
    assert torch.bincount(uneven[meta]).tolist() == [2, 2]


def test_hierarchical_sampling_is_balanced_seeded_and_varies_by_seed():
    labels = torch.arange(60) % 3
    losses = torch.rand(60, generator=torch.Generator().manual_seed(2))
    draw = lambda s: hierarchical_meta_set(losses, labels, 3, primary_fraction=0.5, meta_fraction=0.25,  # noqa: E731
                                           generator=torch.Generator().manual_seed(s))[0]
    meta = draw(0)
    assert torch.bincount(labels[meta]).tolist() == [5, 5, 5]  # 0.25 · 20 per class
    assert torch.equal(meta, draw(0)) and not torch.equal(meta, draw(1))
    with pytest.raises(ValueError, match="M1"):
        hierarchical_meta_set(losses, labels, 3, primary_fraction=0.2, meta_fraction=0.5,
                              generator=torch.Generator())


def test_dynamic_loss_with_ce_is_ce_against_the_corrected_soft_label():
    method = DynamicLoss(LossSpec("ce"), rank_bins=BINS)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(8, CLASSES, generator=g, dtype=torch.float64)
    y = torch.randint(0, CLASSES, (8,), generator=g)
    ranks = torch.randint(0, BINS, (8,), generator=g)
    weights = torch.rand(CLASSES, BINS, generator=g, dtype=torch.float64)
    q = torch.randn(CLASSES, generator=g, dtype=torch.float64)
    g_i = weights[y, ranks]
    y_star = g_i[:, None] * F.one_hot(y, CLASSES) + (1 - g_i[:, None]) * F.one_hot(logits.argmax(1), CLASSES)
    expected = -(y_star * (logits + q).log_softmax(1)).sum(1).mean()
    torch.testing.assert_close(method.dynamic_loss(logits, y, ranks, weights, q), expected)


def test_meta_net_starts_trusting_labels_with_zero_margins():
    net = DynamicMetaNet(CLASSES, BINS, seed=0)
    assert bool((net.label_weights() > 0.95).all()) and torch.equal(net.margins(), torch.zeros(CLASSES))


def unflatten(flat):
    sizes = [(HIDDEN, CLASSES), (HIDDEN,), (BINS, HIDDEN), (BINS,),  # corrector: one-hot -> hidden -> R
             (HIDDEN, CLASSES), (HIDDEN,), (CLASSES, HIDDEN), (CLASSES,)]  # margins: ones -> hidden -> C
    out, at = [], 0
    for shape in sizes:
        n = torch.Size(shape).numel()
        out.append(flat[at:at + n].reshape(shape))
        at += n
    return out


def test_meta_gradient_matches_central_difference():
    model = tiny_mlp(0)
    x, y, xm, ym = tiny_batches(1)
    ranks = torch.tensor([0, 3, 1, 2, 0, 1, 3, 2])
    method = DynamicLoss(LossSpec("ce"), rank_bins=BINS)
    method.init_meta_parameters(CLASSES, 4, torch.float64, "cpu")
    with torch.no_grad():  # move off the saturated start so every parameter matters
        method.net.corrector_out.bias.sub_(4.0)
        method.net.margin_out.weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
    got = method.meta_gradient(model, Batch(x, y, torch.arange(8)), ranks, xm, ym, 0.5)
    got_flat = torch.cat([g.reshape(-1) for g in got.grads])
    theta = torch.cat([p.detach().reshape(-1) for p in method.net.parameters()])

    def meta_loss(flat):
        a1, c1, a2, c2, b1, d1, b2, d2 = unflatten(flat)
        table = torch.sigmoid(torch.relu(torch.eye(CLASSES, dtype=flat.dtype) @ a1.T + c1) @ a2.T + c2)
        q = torch.relu(torch.ones(CLASSES, dtype=flat.dtype) @ b1.T + d1) @ b2.T + d2

        def train_loss(twin):
            logits = twin(x)
            g_i = table[y, ranks]
            log_p = (logits + q).log_softmax(1)
            pred = logits.detach().argmax(1)
            rows = torch.arange(8)
            return (-(g_i * log_p[rows, y] + (1 - g_i) * log_p[rows, pred])).mean()

        return oracle_step_meta_loss(model, train_loss, xm, ym, 0.5)

    gen = torch.Generator().manual_seed(3)
    for _ in range(3):
        v = torch.randn(theta.shape, generator=gen, dtype=torch.float64)
        assert float(got_flat @ v) == pytest.approx(directional_difference(meta_loss, theta, v), rel=1e-6, abs=1e-10)
    tail = slice(len(theta) - CLASSES, len(theta))  # the margins' output bias, coordinate by coordinate
    fd = central_difference(lambda part: meta_loss(torch.cat([theta[:tail.start], part])), theta[tail])
    torch.testing.assert_close(got_flat[tail], fd, rtol=1e-6, atol=1e-10)
    assert float(got_flat.abs().max()) > 1e-8


def test_end_to_end_without_clean_data_records_learned_quantities():
    data = tiny_task_data(n_train=60, n_meta=0)
    (record,) = create_trainer("dynamic", rank_bins=BINS, meta_lr=1e-2).fit(tiny_task(epochs=3), [], data=data)
    assert record.status == "ok", record.error
    assert record.trainer == "dynamic" and record.family == "ce"
    per_epoch = record.extra["per_epoch"]
    meta_size = CLASSES * round(0.25 * int(torch.bincount(data.y_train).min()))  # M1 · smallest noisy class
    assert per_epoch["meta_set_size"] == [0, meta_size, meta_size]  # warm-up first
    assert per_epoch["corrected_label_accuracy"][0] is None and 0 <= per_epoch["corrected_label_accuracy"][2] <= 1
    assert len(record.extra["label_weights"]) == CLASSES and len(record.extra["label_weights"][0]) == BINS
    assert record.extra["margins_final"] != [0.0] * CLASSES  # the margin generator learned
    assert record.extra["meta_steps"] == 2 * -(-(60 - meta_size) // 16)  # 2 robust epochs of D_n batches


def test_same_seed_same_record():
    data = tiny_task_data(n_meta=0)
    a, b = (create_trainer("dynamic").fit(tiny_task(seed=4, epochs=2), [], data=data)[0] for _ in range(2))
    assert {**a.to_dict(), "wall_s": 0} == {**b.to_dict(), "wall_s": 0}


def test_nan_base_loss_is_diverged_and_bad_options_raise():
    (record,) = create_trainer("dynamic").fit(tiny_task(), [LossSpec("_test_dynamic_nan")], data=tiny_task_data())
    assert record.status == "diverged" and "non-finite" in record.error
    with pytest.raises(ValueError, match="rank_bins"):
        create_trainer("dynamic", rank_bins=0)
    with pytest.raises(ValueError, match="warmup_epochs"):
        create_trainer("dynamic", warmup_epochs=-1)
    with pytest.raises(ValueError, match="M0"):
        create_trainer("dynamic", primary_fraction=1.5)
