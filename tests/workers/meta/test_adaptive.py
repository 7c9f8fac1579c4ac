"""Adaptive robust loss (shu Alg. 1): meta-gradient vs central differences, end-to-end runs."""
from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from evoloss.losses import LossSpec, Param, list_losses, register_family
from tests.workers.meta.conftest import central_difference, tiny_batches, tiny_mlp, tiny_task, tiny_task_data
from evoloss.workers.meta.adaptive import ADAPTIVE_TRAINERS, AdaptiveLoss, AdaptiveTrainer
from evoloss.workers.meta.lookahead import LookaheadConfig
from evoloss.workers.meta.method import Batch
from evoloss.workers.trainer import create_trainer, list_trainers


@register_family("_test_adaptive_gce", [Param("q", 0.7, low=0.0, high=1.0, low_open=True)])
def _gce(logits, targets, q):
    return (1 - torch.exp(q * F.log_softmax(logits, 1).gather(1, targets[:, None])[:, 0])) / q


@register_family("_test_adaptive_poly",
                 [Param("lam", 2.0, low=0.0, low_open=True), Param("d", 2.0, low=1.0, low_open=True)])
def _poly(logits, targets, lam, d):
    ce = F.cross_entropy(logits, targets, reduction="none")
    base = torch.clamp(1 - ce / lam, min=0.0)
    return (d - 1) * lam / d * (1 - base ** (d / (d - 1)))


@register_family("_test_adaptive_nan", [Param("q", 0.5, low=0.0, high=1.0)])
def _nan_loss(logits, targets, q):
    return F.cross_entropy(logits, targets, reduction="none") * float("nan") * q


def gce_formula(logits, y, q):
    p_y = logits.softmax(1)[torch.arange(len(y)), y]
    return ((1 - p_y**q) / q).mean()


def poly_formula(logits, y, lam, d):
    ce = -logits.log_softmax(1)[torch.arange(len(y)), y]
    inner = torch.where(ce < lam, 1 - ce / lam, torch.zeros_like(ce))
    return ((d - 1) * lam / d * (1 - inner ** (d / (d - 1)))).mean()


def oracle(model, x, y, xm, ym, lr, loss_of_logits) -> float:
    twin = copy.deepcopy(model)
    opt = torch.optim.SGD(twin.parameters(), lr=lr)
    loss_of_logits(twin(x)).backward()
    opt.step()
    return float(F.cross_entropy(twin(xm), ym).detach())


def test_gce_q_meta_gradient_matches_central_difference():
    model = tiny_mlp(0)
    x, y, xm, ym = tiny_batches(1)
    method = AdaptiveLoss("_test_adaptive_gce", ["q"], {"q": 0.6})
    method.init_meta_parameters(torch.float64, "cpu")
    assert float(method.values()["q"].detach()) == pytest.approx(0.6)
    got = method.meta_gradient(model, Batch(x, y, torch.arange(len(y))), xm, ym, 0.5)

    def meta_loss(q: torch.Tensor) -> float:  # ∂/∂q directly: Eq. 8 steps Λ itself
        return oracle(model, x, y, xm, ym, 0.5, lambda lo: gce_formula(lo, y, q))

    fd = central_difference(meta_loss, torch.tensor(0.6, dtype=torch.float64))
    torch.testing.assert_close(got.grads[0], fd, rtol=1e-6, atol=1e-10)
    assert abs(float(fd)) > 1e-7


@pytest.mark.parametrize("head_only", [False, True])
def test_polysoft_lambda_d_meta_gradient_matches_central_difference(head_only):
    model = tiny_mlp(2)
    x, y, xm, ym = tiny_batches(3)
    method = AdaptiveLoss("_test_adaptive_poly", ["lam", "d"], {"lam": 1.2, "d": 2.5},
                          lookahead=LookaheadConfig(head_only=head_only))
    method.init_meta_parameters(torch.float64, "cpu")
    got = method.meta_gradient(model, Batch(x, y, torch.arange(len(y))), xm, ym, 0.5)
    head_ids = {id(p) for p in model[-1].parameters()}
    at = {"lam": torch.tensor(1.2, dtype=torch.float64), "d": torch.tensor(2.5, dtype=torch.float64)}

    def meta_loss(v: torch.Tensor, which: str) -> float:
        lam = v if which == "lam" else at["lam"]
        d = v if which == "d" else at["d"]
        twin = copy.deepcopy(model)
        params = [p for p in twin.parameters() if not head_only or id(p) in {id(q) for q in twin[-1].parameters()}]
        for p in twin.parameters():
            p.requires_grad_(any(p is q for q in params))
        opt = torch.optim.SGD(params, lr=0.5)
        poly_formula(twin(x), y, lam, d).backward()
        opt.step()
        return float(F.cross_entropy(twin(xm), ym).detach())

    assert head_ids
    for i, which in enumerate(["lam", "d"]):
        fd = central_difference(lambda v: meta_loss(v, which), at[which])
        torch.testing.assert_close(got.grads[i], fd, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("beta", [0.1, 0.01])
def test_one_meta_step_changes_lambda_by_minus_beta_times_meta_gradient(beta):
    """shu Eq. 8, float64: Λ_new − Λ = −β ∇Λ L_meta, ∇ from central differences of the look-ahead
    (Eq. 9) written here, β the classifier's lr (run through the trainer hook, so the wiring is tested)."""
    model = tiny_mlp(4)
    x, y, xm, ym = tiny_batches(5)
    method = AdaptiveLoss("_test_adaptive_gce", ["q"], {"q": 0.5})
    method.init_meta_parameters(torch.float64, "cpu")

    def meta_loss(q: torch.Tensor) -> float:
        return oracle(model, x, y, xm, ym, beta, lambda lo: gce_formula(lo, y, q))

    grad = float(central_difference(meta_loss, torch.tensor(0.5, dtype=torch.float64)))
    run = SimpleNamespace(model=model, optimizer=None)
    method.meta_step(run, Batch(x, y, torch.arange(len(y))), xm, ym, beta)
    moved = float(method.values()["q"].detach()) - 0.5
    assert abs(grad) > 1e-4
    assert moved == pytest.approx(-beta * grad, rel=1e-6)


def test_meta_step_uses_meta_lr_when_given_and_projects_onto_the_bounds():
    model = tiny_mlp(4)
    x, y, xm, ym = tiny_batches(5)
    batch = Batch(x, y, torch.arange(len(y)))
    run = SimpleNamespace(model=model, optimizer=None)
    method = AdaptiveLoss("_test_adaptive_gce", ["q"], {"q": 0.5}, meta_lr=2.0)
    method.init_meta_parameters(torch.float64, "cpu")
    grad = float(method.meta_gradient(model, batch, xm, ym, 0.1).grads[0])
    method.meta_step(run, batch, xm, ym, 0.1)
    assert float(method.values()["q"].detach()) - 0.5 == pytest.approx(-2.0 * grad, rel=1e-9)
    huge = AdaptiveLoss("_test_adaptive_gce", ["q"], {"q": 0.5}, meta_lr=1e9)
    huge.init_meta_parameters(torch.float64, "cpu")
    huge.meta_step(run, batch, xm, ym, 0.1)
    q = float(huge.values()["q"].detach())
    assert q == (1.0 if grad < 0 else 1e-4)  # projected onto [1e-4, 1]: the open end pulled in by the margin


def test_initial_value_outside_the_learnable_range_raises():
    with pytest.raises(ValueError, match="outside the learnable range"):
        AdaptiveLoss("_test_adaptive_poly", ["d"], {"d": 1.00001})


def test_end_to_end_records_lambda_trajectory_and_moves_it():
    task, data = tiny_task(epochs=3), tiny_task_data()
    trainer = AdaptiveTrainer(name="adaptive-test", family="_test_adaptive_gce", learned=("q",), meta_lr=5.0)
    (record,) = trainer.fit(task, [], data=data)
    assert record.status == "ok", record.error
    assert record.trainer == "adaptive-test" and record.family == "_test_adaptive_gce"
    assert record.epochs_run == 3 and len(record.curve_val) == 3 and 0 <= record.val_acc_best <= 1
    q = record.extra["per_epoch"]["q"]
    assert len(q) == 3 and all(0 < v <= 1 for v in q)
    assert record.extra["lambda_init"] == {"q": 0.7}
    assert record.extra["lambda_final"]["q"] != pytest.approx(0.7, abs=1e-6)  # Λ was learned
    assert record.extra["meta_steps"] == record.extra["steps"] == 9


def test_same_seed_same_record_and_spec_sets_initial_lambda():
    task, data = tiny_task(epochs=2), tiny_task_data()
    trainer = AdaptiveTrainer(name="adaptive-test", family="_test_adaptive_gce", learned=("q",), meta_lr=5.0)
    specs = [LossSpec("_test_adaptive_gce", {"q": 0.3})]
    a, b = trainer.fit(task, specs, data=data)[0], trainer.fit(task, specs, data=data)[0]
    assert a.extra["lambda_init"] == {"q": 0.3}
    assert {**a.to_dict(), "wall_s": 0} == {**b.to_dict(), "wall_s": 0}


def test_nan_loss_gives_diverged_record_without_raising():
    trainer = AdaptiveTrainer(name="adaptive-test", family="_test_adaptive_nan", learned=("q",))
    (record,) = trainer.fit(tiny_task(), [], data=tiny_task_data())
    assert record.status == "diverged" and "non-finite" in record.error


def test_bad_input_raises_before_training():
    trainer = AdaptiveTrainer(name="adaptive-test", family="_test_adaptive_gce", learned=("q",))
    with pytest.raises(ValueError, match="learns the '_test_adaptive_gce' loss"):
        trainer.fit(tiny_task(), [LossSpec("ce")], data=tiny_task_data())
    with pytest.raises(ValueError, match="meta set"):
        trainer.fit(tiny_task(), [], data=tiny_task_data(n_meta=0))
    with pytest.raises(ValueError, match="meta_lr"):
        AdaptiveLoss("_test_adaptive_gce", ["q"], {}, meta_lr=-1.0)


def test_every_adaptive_trainer_is_registered():
    assert set(ADAPTIVE_TRAINERS) <= set(list_trainers())


@pytest.mark.parametrize("name", sorted(ADAPTIVE_TRAINERS))
def test_registered_trainer_runs_on_its_real_family(name):
    family, learned = ADAPTIVE_TRAINERS[name]
    if family not in list_losses():
        pytest.skip(f"loss family {family!r} is not registered yet")
    (record,) = create_trainer(name, max_steps=4).fit(tiny_task(), [], data=tiny_task_data())
    assert record.status == "ok", record.error
    assert set(record.extra["lambda_final"]) == set(learned)
    assert all(math.isfinite(v) for v in record.extra["lambda_final"].values())
