"""The shared look-ahead: meta-gradients against central finite differences of an oracle that
takes the virtual step with torch.optim.SGD on a deep copy; the real model left untouched."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.workers.meta.conftest import BATCH, central_difference, tiny_batches, tiny_mlp
from evoloss.workers.meta.lookahead import LookaheadConfig, apply_meta_gradient, meta_gradient


def weighted_ce(logits: torch.Tensor, y: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """L_train(θ; Λ) = mean_i softplus(Λ_i) · CE_i — any smooth dependence on Λ will do."""
    return (F.softplus(lam) * F.cross_entropy(logits, y, reduction="none")).mean()


def live_optimizer(model: nn.Module, *, nesterov: bool = False) -> torch.optim.SGD:
    """An SGD with momentum and weight decay that has taken one real step (so buffers exist)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-2, nesterov=nesterov)
    x, y, _, _ = tiny_batches(7)
    F.cross_entropy(model(x), y).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return opt


def oracle_meta_loss(model, live, lam, x, y, xm, ym, lr, mode, head_only, meta_loss=None) -> float:
    """Take the real step on a deep copy with torch.optim.SGD, then the meta-loss there."""
    twin = copy.deepcopy(model)
    pairs = list(zip(model.parameters(), twin.parameters()))
    head = [m for m in twin.modules() if isinstance(m, nn.Linear)][-1]
    head_ids = {id(p) for p in head.parameters()}
    chosen = [(a, b) for a, b in pairs if not head_only or id(b) in head_ids]
    for _, b in pairs:
        b.requires_grad_(not head_only or id(b) in head_ids)
    if mode == "sgd":
        opt = torch.optim.SGD([b for _, b in chosen], lr=lr)
    else:
        g = live.param_groups[0]
        opt = torch.optim.SGD([b for _, b in chosen], lr=lr, momentum=g["momentum"],
                              weight_decay=g["weight_decay"], nesterov=g["nesterov"])
        for a, b in chosen:
            opt.state[b] = {"momentum_buffer": live.state[a]["momentum_buffer"].clone()}
    weighted_ce(twin(x), y, lam).backward()
    opt.step()
    out = twin(xm)
    return float((meta_loss or F.cross_entropy)(out, ym).detach())


CASES = [
    ("sgd", False, False, False),
    ("sgd", True, False, False),
    ("optimizer", False, False, False),
    ("optimizer", False, False, True),
    ("optimizer", True, False, False),
    ("sgd", False, True, False),
    ("optimizer", False, True, False),
    ("optimizer", True, True, False),
]


@pytest.mark.parametrize("mode,head_only,batchnorm,nesterov", CASES)
def test_meta_gradient_matches_central_difference(mode, head_only, batchnorm, nesterov):
    model = tiny_mlp(1, batchnorm=batchnorm)
    live = live_optimizer(model, nesterov=nesterov)
    x, y, xm, ym = tiny_batches(2)
    lam = torch.linspace(-1.0, 1.0, BATCH, dtype=torch.float64).requires_grad_(True)
    lr = 0.3
    got = meta_gradient(
        model, [lam], lambda logits: weighted_ce(logits, y, lam), x, xm, ym, lr,
        config=LookaheadConfig(mode=mode, head_only=head_only), optimizer=live,
    )
    fd = central_difference(lambda l: oracle_meta_loss(model, live, l, x, y, xm, ym, lr, mode, head_only), lam)
    torch.testing.assert_close(got.grads[0], fd, rtol=1e-6, atol=1e-9)
    expected = oracle_meta_loss(model, live, lam.detach(), x, y, xm, ym, lr, mode, head_only)
    assert got.meta_loss == pytest.approx(expected)
    assert abs(float(got.grads[0].abs().max())) > 1e-6  # the check is not vacuous


def test_caller_given_meta_loss_matches_central_difference():
    model = tiny_mlp(3)
    x, y, xm, ym = tiny_batches(4)
    lam = torch.zeros(BATCH, dtype=torch.float64, requires_grad=True)

    def smooth_meta(logits, targets):  # a non-CE meta-loss: 1 − p_y, mean
        return (1 - logits.softmax(1).gather(1, targets[:, None])).mean()

    got = meta_gradient(model, [lam], lambda lo: weighted_ce(lo, y, lam), x, xm, ym, 0.5, meta_loss=smooth_meta)
    fd = central_difference(
        lambda l: oracle_meta_loss(model, None, l, x, y, xm, ym, 0.5, "sgd", False, smooth_meta), lam
    )
    torch.testing.assert_close(got.grads[0], fd, rtol=1e-6, atol=1e-9)


def snapshot(model: nn.Module, opt: torch.optim.Optimizer) -> tuple[dict, dict, list]:
    model_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt_state = copy.deepcopy(opt.state_dict())
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    return model_state, opt_state, grads


@pytest.mark.parametrize("mode", ["sgd", "optimizer"])
@pytest.mark.parametrize("head_only", [False, True])
def test_lookahead_leaves_model_buffers_and_optimizer_unchanged(mode, head_only):
    model = tiny_mlp(5, batchnorm=True)
    opt = live_optimizer(model)
    model.train()
    x, y, xm, ym = tiny_batches(6)
    before = snapshot(model, opt)
    lam = torch.ones(BATCH, dtype=torch.float64, requires_grad=True)
    meta_gradient(model, [lam], lambda lo: weighted_ce(lo, y, lam), x, xm, ym, 0.1,
                  config=LookaheadConfig(mode=mode, head_only=head_only), optimizer=opt)
    after = snapshot(model, opt)
    for k in before[0]:
        assert torch.equal(before[0][k], after[0][k]), k
    assert before[0]["1.num_batches_tracked"].item() == 1  # one real step only, none virtual
    for k, state in before[1]["state"].items():
        assert torch.equal(state["momentum_buffer"], after[1]["state"][k]["momentum_buffer"])
    assert before[1]["param_groups"] == after[1]["param_groups"]
    assert all(a is None and b is None for a, b in zip(before[2], after[2]))


def test_unused_meta_parameter_gets_zero_gradient(batches):
    model = tiny_mlp(0)
    x, y, xm, ym = batches
    lam = torch.zeros(BATCH, dtype=torch.float64, requires_grad=True)
    unused = torch.ones(2, dtype=torch.float64, requires_grad=True)
    got = meta_gradient(model, [lam, unused], lambda lo: weighted_ce(lo, y, lam), x, xm, ym, 0.1)
    assert torch.equal(got.grads[1], torch.zeros(2, dtype=torch.float64))
    assert got.train_loss == pytest.approx(float(weighted_ce(model(x), y, lam).detach()))


def test_apply_meta_gradient_is_one_sgd_step():
    lam = torch.tensor([0.5, -1.0], requires_grad=True)
    opt = torch.optim.SGD([lam], lr=0.1)
    apply_meta_gradient(opt, [lam], [torch.tensor([1.0, 2.0])])
    torch.testing.assert_close(lam.detach(), torch.tensor([0.4, -1.2]))
    assert lam.grad is None


def test_due_every_t_meta_steps():
    assert [t for t in range(25) if LookaheadConfig(every=10).due(t)] == [0, 10, 20]
    assert all(LookaheadConfig().due(t) for t in range(3))


@pytest.mark.parametrize("kwargs,match", [
    ({"mode": "adam"}, "mode"),
    ({"every": 0}, "every"),
    ({"every": 2.5}, "every"),
])
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LookaheadConfig(**kwargs)


def test_bad_inputs_raise_clear_errors(batches):
    model = tiny_mlp(0)
    x, y, xm, ym = batches
    lam = torch.zeros(BATCH, dtype=torch.float64, requires_grad=True)
    objective = lambda lo: weighted_ce(lo, y, lam)  # noqa: E731
    with pytest.raises(ValueError, match="torch.optim.SGD"):
        meta_gradient(model, [lam], objective, x, xm, ym, 0.1, config=LookaheadConfig(mode="optimizer"),
                      optimizer=torch.optim.Adam(model.parameters()))
    with pytest.raises(ValueError, match="lr"):
        meta_gradient(model, [lam], objective, x, xm, ym, 0.0)
    with pytest.raises(ValueError, match="requires_grad"):
        meta_gradient(model, [lam.detach()], objective, x, xm, ym, 0.1)
    softmax_out = nn.Sequential(tiny_mlp(0), nn.Softmax(dim=1))
    with pytest.raises(ValueError, match="head_only"):
        meta_gradient(softmax_out, [lam], objective, x, xm, ym, 0.1, config=LookaheadConfig(head_only=True))
