"""The population trainer's parts against their references: stacked optimisers against their update
formulas (float64) and `torch.optim`, per-member gradient clipping against `clip_grad_norm_`, grouped
per-member losses against `create_loss`, and the stacked network (hand-written and autograd backward)
against each member's own forward/backward."""
from __future__ import annotations

import math
from typing import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import evoloss.losses.gce  # noqa: F401  (registers "gce" whether or not losses/__init__ imports it yet)
import evoloss.losses.sce  # noqa: F401
from evoloss.losses import LossSpec, create_loss
from evoloss.workers.archs import create_arch
from evoloss.workers.population.loss import MemberLosses
from evoloss.workers.population.optim import StackedAdam, StackedSGD, clip_member_grad_norms, create_stacked_optimizer
from evoloss.workers.population.stack import StackedNet, UnsupportedArchitecture
from evoloss.workers.protocol import OptimSpec

K = 3


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """One intra-op thread: the tiny kernels here only slow down when cores are shared."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)



def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _param_shapes() -> list[tuple[int, ...]]:
    return [(4, 5), (4,), (2, 3, 3)]


def _random_params(seed: int) -> list[torch.Tensor]:
    g = _gen(seed)
    return [torch.randn((K, *s), generator=g, dtype=torch.float64) for s in _param_shapes()]


def _random_grads(seed: int, steps: int) -> list[list[torch.Tensor]]:
    g = _gen(seed)
    return [[torch.randn((K, *s), generator=g, dtype=torch.float64) for s in _param_shapes()] for _ in range(steps)]


# --- optimisers --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("momentum", "wd"), [(0.9, 0.0), (0.9, 1e-3), (0.0, 5e-4)])
def test_stacked_sgd_matches_formula_and_torch_optim(momentum: float, wd: float) -> None:
    lr, steps = 0.05, 4
    params, grads = _random_params(0), _random_grads(1, steps)
    stacked = [p.clone() for p in params]
    opt = StackedSGD(OptimSpec("sgd", lr, momentum, wd), stacked)
    # the formula, written out: g <- g + wd θ; b <- g (first step) else μ b + g; θ <- θ - lr b
    expected = [p.clone() for p in params]
    bufs: list[torch.Tensor | None] = [None] * len(params)
    for step_grads in grads:
        opt.step(stacked, [g.clone() for g in step_grads], lr)
        for i, g in enumerate(step_grads):
            d = g + wd * expected[i]
            if momentum:
                bufs[i] = d.clone() if bufs[i] is None else momentum * bufs[i] + d
                d = bufs[i]
            expected[i] = expected[i] - lr * d
    for a, b in zip(stacked, expected):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    for k in range(K):  # member by member, torch.optim.SGD on that member's own tensors
        own = [p[k].clone().requires_grad_(True) for p in params]
        ref = torch.optim.SGD(own, lr=lr, momentum=momentum, weight_decay=wd)
        for step_grads in grads:
            for p, g in zip(own, step_grads):
                p.grad = g[k].clone()
            ref.step()
        for p, s in zip(own, stacked):
            torch.testing.assert_close(p.detach(), s[k], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("wd", [0.0, 1e-2])
def test_stacked_adam_matches_formula_and_torch_optim(wd: float) -> None:
    lr, steps, (b1, b2), eps = 1e-2, 5, (0.9, 0.999), 1e-8
    params, grads = _random_params(2), _random_grads(3, steps)
    stacked = [p.clone() for p in params]
    opt = StackedAdam(OptimSpec("adam", lr, 0.0, wd), stacked)
    expected = [p.clone() for p in params]
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    for t, step_grads in enumerate(grads, start=1):  # Kingma & Ba Alg. 1 with L2 added to the gradient
        opt.step(stacked, [g.clone() for g in step_grads], lr)
        for i, g in enumerate(step_grads):
            d = g + wd * expected[i]
            m[i] = b1 * m[i] + (1 - b1) * d
            v[i] = b2 * v[i] + (1 - b2) * d * d
            m_hat, v_hat = m[i] / (1 - b1**t), v[i] / (1 - b2**t)
            expected[i] = expected[i] - lr * m_hat / (v_hat.sqrt() + eps * 1.0)
    for a, b in zip(stacked, expected):
        # torch folds sqrt(1-b2^t) into eps differently from the textbook m̂/(√v̂+ε): equal up to ε-scale terms
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)
    for k in range(K):
        own = [p[k].clone().requires_grad_(True) for p in params]
        ref = torch.optim.Adam(own, lr=lr, weight_decay=wd)
        for step_grads in grads:
            for p, g in zip(own, step_grads):
                p.grad = g[k].clone()
            ref.step()
        for p, s in zip(own, stacked):
            torch.testing.assert_close(p.detach(), s[k], rtol=1e-12, atol=1e-12)


def test_optimizer_select_keeps_members_state() -> None:
    params, grads = _random_params(4), _random_grads(5, 3)
    full = [p.clone() for p in params]
    opt_full = create_stacked_optimizer(OptimSpec("sgd", 0.1, 0.9, 0.0), full)
    part = [p.clone() for p in params]
    opt_part = create_stacked_optimizer(OptimSpec("sgd", 0.1, 0.9, 0.0), part)
    keep = torch.tensor([2, 0])
    for step, step_grads in enumerate(grads):
        opt_full.step(full, [g.clone() for g in step_grads], 0.1)
        if step == 1:  # members leave the stack after two steps
            opt_part.step(part, [g.clone() for g in step_grads], 0.1)
            part = [p[keep].clone() for p in part]
            opt_part.select(keep)
        elif step < 1:
            opt_part.step(part, [g.clone() for g in step_grads], 0.1)
        else:
            opt_part.step(part, [g[keep].clone() for g in step_grads], 0.1)
    for a, b in zip(part, full):
        torch.testing.assert_close(a, b[keep], rtol=0, atol=0)
    with pytest.raises(ValueError, match="optimizer 'rmsprop'"):
        create_stacked_optimizer(OptimSpec("rmsprop", 0.1, 0.0, 0.0), full)


def test_clip_member_grad_norms_matches_clip_grad_norm() -> None:
    grads = _random_grads(6, 1)[0]
    grads[0][1] *= 1e-3  # member 1 below the threshold: left alone
    stacked = [g.clone() for g in grads]
    totals = clip_member_grad_norms(stacked, max_norm=1.5)
    for k in range(K):
        own = [torch.zeros_like(g[k], requires_grad=True) for g in grads]
        for p, g in zip(own, grads):
            p.grad = g[k].clone()
        total = nn.utils.clip_grad_norm_(own, 1.5)
        assert math.isclose(float(total), float(totals[k]), rel_tol=1e-12)
        expected_total = math.sqrt(sum(float(g[k].square().sum()) for g in grads))
        assert math.isclose(float(totals[k]), expected_total, rel_tol=1e-12)
        for p, s in zip(own, stacked):
            torch.testing.assert_close(p.grad, s[k], rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="grad_clip"):
        clip_member_grad_norms(stacked, max_norm=0.0)


# --- per-member losses -------------------------------------------------------------------------------
MIXED = [
    LossSpec("ce"),
    LossSpec("gce", {"q": 0.3}),
    LossSpec("sce", {"alpha": 0.5, "beta": 2.0}),
    LossSpec("gce", {"q": 0.9}),
]


@pytest.mark.parametrize("grouping", ["family", "member"])
def test_member_losses_equal_create_loss(grouping: str) -> None:
    g = _gen(7)
    logits = torch.randn(len(MIXED), 6, 5, generator=g, dtype=torch.float64)
    targets = torch.randint(0, 5, (6,), generator=g)
    member = MemberLosses(MIXED, grouping=grouping)
    values, grad = member.value_and_grad(logits, targets)
    for k, spec in enumerate(MIXED):
        leaf = logits[k].clone().requires_grad_(True)
        own = create_loss(spec)(leaf, targets)
        (own_grad,) = torch.autograd.grad(own, leaf)
        torch.testing.assert_close(values[k], own.detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad[k], own_grad, rtol=1e-12, atol=1e-12)
    # GCE by its formula (1 - p_y^q)/q, independently of the family code
    p_y = torch.softmax(logits[1], dim=1)[torch.arange(6), targets]
    torch.testing.assert_close(values[1], ((1 - p_y**0.3) / 0.3).mean(), rtol=1e-12, atol=1e-12)


def test_member_losses_isolate_a_raising_member() -> None:
    member = MemberLosses([LossSpec("ce"), LossSpec("gce", {"q": 0.5})])
    member.params[1]["q"] = "bad"  # a value the family function cannot use (validation bypassed)
    logits = torch.randn(2, 4, 3, generator=_gen(8))
    values, grad = member.value_and_grad(logits, torch.tensor([0, 1, 2, 0]))
    assert math.isfinite(float(values[0])) and math.isnan(float(values[1]))
    assert torch.equal(grad[1], torch.zeros_like(grad[1]))
    failures = member.pop_failures()
    assert list(failures) == [1] and "TypeError" in failures[1]
    assert member.pop_failures() == {}


def test_member_losses_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="loss_grouping"):
        MemberLosses([LossSpec("ce")], grouping="batch")
    with pytest.raises(ValueError, match="'q'=1.5 is outside"):
        MemberLosses([LossSpec("gce", {"q": 1.5})])
    with pytest.raises(TypeError, match="float parameters only"):
        MemberLosses([LossSpec("gce", {"q": torch.tensor(0.5)})])
    with pytest.raises(ValueError, match="shape"):
        MemberLosses([LossSpec("ce")])(torch.zeros(2, 3, 4), torch.zeros(3, dtype=torch.long))


# --- the stacked network -----------------------------------------------------------------------------
def _bn_cnn(seed: int) -> nn.Module:
    """A small VGG-like block: conv, BatchNorm2d, ReLU, ceil-mode max-pool, adaptive pool, linear."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
        nn.Conv2d(4, 4, 3, padding=1, groups=2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5),
    ).double()


def _members(arch: str, shape: tuple[int, ...], dtype: torch.dtype = torch.float64) -> list[nn.Module]:
    return [create_arch(arch, shape, 5, seed=s).to(dtype) for s in (11, 12, 13)]


def _ce_grad(targets: torch.Tensor):
    def loss_grad(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        leaf = logits.detach().requires_grad_(True)
        per = F.cross_entropy(leaf.flatten(0, 1), targets.repeat(leaf.shape[0]), reduction="none")
        values = per.view(leaf.shape[0], -1).mean(dim=1)
        (grad,) = torch.autograd.grad(values.sum(), leaf)
        return values.detach(), grad

    return loss_grad


@pytest.mark.parametrize(
    ("conv", "patches"),
    [
        (dict(in_channels=1, out_channels=4, kernel_size=3, padding=1), True),  # CNN-4's first layer
        (dict(in_channels=3, out_channels=6, kernel_size=(2, 3), stride=(2, 1), padding=(0, 1)), True),
        (dict(in_channels=2, out_channels=6, kernel_size=3, dilation=2, bias=False), True),
        (dict(in_channels=3, out_channels=2, kernel_size=3), False),  # 27 patch values > 3·2 outputs
        (dict(in_channels=1, out_channels=4, kernel_size=3, padding="same"), False),
    ],
)
def test_a_first_convolution_as_a_gemm_on_shared_patches_equals_each_members(conv: dict, patches: bool) -> None:
    """The stacked first Conv2d (on the input all members share) is each member's own convolution, output
    and gradients, whether it runs as one GEMM on the input's patches or as a K·C_out-filter conv."""
    from evoloss.workers.population.layers import uses_shared_patches

    def member(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return nn.Sequential(nn.Conv2d(**conv), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3)).double()

    g = _gen(4)
    x = torch.randn(5, conv["in_channels"], 7, 9, generator=g, dtype=torch.float64)
    members = [member(s) for s in (1, 2, 3)]
    for m in members:
        m(x)  # materialise the lazy linear
    net = StackedNet(members)
    assert uses_shared_patches(members[0][0], x, 3) is patches
    y = torch.randint(0, 3, (5,), generator=g)
    values, grads = net.train_step_grads(x, _ce_grad(y))
    for k, m in enumerate(members):
        own = F.cross_entropy(m(x), y)
        torch.testing.assert_close(values[k], own.detach(), rtol=1e-12, atol=1e-12)
        for a, b in zip(grads, torch.autograd.grad(own, list(m.parameters()))):
            torch.testing.assert_close(a[k], b, rtol=1e-10, atol=1e-12)
    out, layout = net.layers[0].forward(x, "shared", 3, training=False)
    assert layout == "chan" and out.is_contiguous(memory_format=torch.channels_last)  # as the conv path gives
    for k, m in enumerate(members):
        c = conv["out_channels"]
        torch.testing.assert_close(out[:, k * c:(k + 1) * c], m[0](x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("arch", "shape"),
    [("mlp2", (1, 8, 8)), ("mlp3", (12,)), ("cnn4", (1, 8, 8)), ("cnn1d", (1, 24)), ("cnn1d", (24,)), ("bn_cnn", (2, 6, 6))],
)
def test_stacked_gradients_equal_each_members_autograd(arch: str, shape: tuple[int, ...]) -> None:
    members = [_bn_cnn(s) for s in (1, 2, 3)] if arch == "bn_cnn" else _members(arch, shape)
    net = StackedNet(members)
    g = _gen(9)
    x = torch.randn(6, *shape, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (6,), generator=g)
    net.check_against(members, x)
    values, grads = net.train_step_grads(x, _ce_grad(y))
    assert len(grads) == len(list(members[0].parameters()))
    for k, m in enumerate(members):
        m.train()
        own = F.cross_entropy(m(x), y)
        own_grads = torch.autograd.grad(own, list(m.parameters()))
        torch.testing.assert_close(values[k], own.detach(), rtol=1e-12, atol=1e-12)
        for a, b in zip(grads, own_grads):
            torch.testing.assert_close(a[k], b, rtol=1e-10, atol=1e-12)
    if any(isinstance(m, nn.BatchNorm2d) for m in members[0].modules()):  # running stats moved like the members'
        bn_buffers = [b for layer in net.layers for b in layer.buffers]
        own_buffers = [b for mod in members[0].modules() if isinstance(mod, nn.BatchNorm2d)
                       for b in (mod.running_mean, mod.running_var)]
        for a, b in zip(bn_buffers, own_buffers):
            torch.testing.assert_close(a[0], b, rtol=1e-12, atol=1e-12)
    assert net.manual == arch.startswith("mlp")


@pytest.mark.parametrize("arch", ["mlp2", "mlp3"])
def test_hand_written_backward_equals_autograd(arch: str) -> None:
    members = _members(arch, (7,))
    manual, auto = StackedNet(members), StackedNet(members)
    auto.use_backward("autograd")
    assert manual.manual and not auto.manual
    g = _gen(10)
    x = torch.randn(9, 7, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (9,), generator=g)
    values_m, grads_m = manual.train_step_grads(x, _ce_grad(y))
    values_a, grads_a = auto.train_step_grads(x, _ce_grad(y))
    torch.testing.assert_close(values_m, values_a, rtol=1e-13, atol=1e-13)
    for a, b in zip(grads_m, grads_a):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)


def test_leaky_relu_and_batchnorm1d_chain() -> None:
    def build(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.LeakyReLU(0.2), nn.Linear(8, 4)).double()

    members = [build(s) for s in (1, 2)]
    net = StackedNet(members)
    assert not net.manual  # BatchNorm has no hand-written backward: autograd path
    x = torch.randn(5, 6, generator=_gen(11), dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 0])
    values, grads = net.train_step_grads(x, _ce_grad(y))
    for k, m in enumerate(members):
        own = F.cross_entropy(m(x), y)
        for a, b in zip(grads, torch.autograd.grad(own, list(m.parameters()))):
            torch.testing.assert_close(a[k], b, rtol=1e-10, atol=1e-12)
    net.check_against(members, x)


def test_unsupported_networks_raise() -> None:
    with pytest.raises(UnsupportedArchitecture, match="own forward"):
        StackedNet([create_arch("resnet32", (3, 8, 8), 5, seed=0)])
    with pytest.raises(UnsupportedArchitecture, match="Dropout"):
        StackedNet([nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 2))])
    with pytest.raises(UnsupportedArchitecture, match="last layout"):
        StackedNet([nn.Sequential(nn.Conv1d(1, 2, 3))])
    with pytest.raises(ValueError, match="same layer structure|one layer structure"):
        StackedNet([nn.Sequential(nn.Linear(3, 2)), nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))])
    with pytest.raises(ValueError, match="at least one"):
        StackedNet([])


def test_select_and_finite_members() -> None:
    members = _members("mlp2", (4,))
    net = StackedNet(members)
    with torch.no_grad():
        net.params[0][1, 0, 0] = float("nan")
    assert net.finite_members().tolist() == [True, False, True]
    net.select(torch.tensor([2, 0]))
    assert net.size == 2 and net.finite_members().all()
    for a, b in zip(net.member_state(0), members[2].parameters()):
        assert torch.equal(a, b.detach())
    x = torch.randn(3, 4, generator=_gen(12), dtype=torch.float64)
    assert net.predict(x).shape == (2, 3)


def test_finite_members_reads_elements_when_a_sum_is_not_finite() -> None:
    """A member is finite iff every element is: a +inf / -inf pair (whose sum is NaN), a lone inf, and
    finite values whose sum overflows (the fast path's sum is inf) are each told apart right."""
    net = StackedNet(_members("mlp2", (4,)))
    big = torch.finfo(net.params[0].dtype).max
    with torch.no_grad():
        net.params[0][0, 0, :2] = torch.tensor([float("inf"), -float("inf")])
        net.params[0][1].fill_(big)  # finite, but its sum overflows
    assert net.finite_members().tolist() == [False, True, True]
    with torch.no_grad():
        net.params[1][2, 0] = -float("inf")
    assert net.finite_members().tolist() == [False, True, False]
