"""Architecture registry: every architecture on every compatible input shape, init by seed only,
parameter counts against the published layer formulas, and clear errors for bad input."""
from __future__ import annotations


import pytest
import torch
from torch import nn

from evoloss.workers.archs import arch_input_kind, check_arch, create_arch, list_archs, register_arch

# The input shapes every trainer meets: digits 8×8, MNIST-like 28×28, CIFAR 32×32, mnist1d, flat vectors.
SHAPES: dict[str, tuple[int, ...]] = {
    "digits": (1, 8, 8),
    "mnist": (1, 28, 28),
    "cifar": (3, 32, 32),
    "mnist1d": (1, 40),
    "flat": (17,),
}
_COMPATIBLE = {
    "flat": ("digits", "mnist", "cifar", "mnist1d", "flat"),
    "image": ("digits", "mnist", "cifar"),
    "sequence": ("mnist1d", "flat"),
}
_CASES = [(a, s) for a in list_archs() for s in _COMPATIBLE[arch_input_kind(a)]]
_INCOMPATIBLE = [
    (a, s) for a in list_archs() for s in SHAPES if s not in _COMPATIBLE[arch_input_kind(a)]
]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_all_required_architectures_are_registered() -> None:
    required = {"mlp2", "mlp3", "mlp4", "cnn4", "jocor_cnn", "vgg11", "resnet18", "preact_resnet18", "resnet32", "cnn1d"}
    assert required <= set(list_archs())
    assert list_archs("resnet*") == ["resnet18", "resnet32"]


@pytest.mark.parametrize(("arch", "shape_name"), _CASES)
def test_forward_backward_on_compatible_shape(arch: str, shape_name: str) -> None:
    shape = SHAPES[shape_name]
    model = create_arch(arch, shape, num_classes=7, seed=0)
    x = torch.randn((2, *shape), generator=torch.Generator().manual_seed(1))
    logits = model(x)
    assert logits.shape == (2, 7)
    assert torch.isfinite(logits).all()
    logits.square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    model.eval()
    with torch.no_grad():
        assert model(x[:1]).shape == (1, 7)


@pytest.mark.parametrize(("arch", "shape_name"), _INCOMPATIBLE)
def test_incompatible_shape_raises_clear_error(arch: str, shape_name: str) -> None:
    with pytest.raises(ValueError, match=rf"architecture {arch!r}.*input_shape=.*Architectures that take"):
        create_arch(arch, SHAPES[shape_name], num_classes=10)


def test_unknown_name_lists_close_matches() -> None:
    with pytest.raises(ValueError, match=r"unknown architecture 'resnet19'.*Did you mean 'resnet18'.*Valid:"):
        create_arch("resnet19", (3, 32, 32), 10)
    with pytest.raises(ValueError, match="unknown architecture"):
        check_arch("MLP2", (64,), 10)


@pytest.mark.parametrize(
    ("shape", "classes", "match"),
    [
        ((0, 8, 8), 10, "positive"),
        ((1, 8, -8), 10, "positive"),
        ((), 10, "at least one"),
        ([1.5, 8], 10, "integers"),
        ((1, 8, 8), 1, "num_classes"),
        ((1, 8, 8), True, "num_classes"),
    ],
)
def test_bad_shape_or_class_count(shape: tuple, classes: int, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        create_arch("mlp2", shape, classes)


def test_bad_seed() -> None:
    with pytest.raises(ValueError, match="seed"):
        create_arch("mlp2", (4,), 3, seed=-1)
    with pytest.raises(TypeError, match="seed"):
        create_arch("mlp2", (4,), 3, seed=1.0)  # type: ignore[arg-type]


def test_duplicate_registration_raises() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_arch("mlp2", inputs="flat")(lambda shape, classes: nn.Linear(1, 1))
    with pytest.raises(ValueError, match="inputs"):
        register_arch("_test_bad_kind", inputs="volume")(lambda shape, classes: nn.Linear(1, 1))


def _params(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("arch", ["mlp2", "cnn4", "jocor_cnn", "resnet32", "cnn1d"])
def test_init_depends_only_on_seed(arch: str) -> None:
    shape = SHAPES["mnist1d"] if arch_input_kind(arch) == "sequence" else SHAPES["digits"]
    torch.manual_seed(123)
    a = _params(create_arch(arch, shape, 10, seed=5))
    torch.rand(1000)  # move the global RNG: must not matter
    state_before = torch.get_rng_state()
    b = _params(create_arch(arch, shape, 10, seed=5))
    assert torch.equal(torch.get_rng_state(), state_before), "create_arch(seed=...) must not touch the global RNG"
    c = _params(create_arch(arch, shape, 10, seed=6))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    # "PyTorch defaults under torch.manual_seed(seed)": the same as seeding the global RNG by hand.
    torch.manual_seed(5)
    d = _params(create_arch(arch, shape, 10))
    assert all(torch.equal(x, y) for x, y in zip(a, d))


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _conv(cin: int, cout: int, k: int) -> int:  # weight + bias
    return cin * cout * k + cout


def _bn(c: int) -> int:
    return 2 * c


def test_mlp_parameter_counts() -> None:
    d, h, c = 64, 256, 10
    assert _count(create_arch("mlp2", (1, 8, 8), c)) == d * h + h + h * c + c
    assert _count(create_arch("mlp3", (1, 8, 8), c)) == d * h + h + h * h + h + h * c + c
    assert _count(create_arch("mlp4", (1, 8, 8), c)) == d * h + h + 2 * (h * h + h) + h * c + c


def test_jocor_cnn_parameter_count() -> None:
    # Co-teaching / JoCoR 9-layer CNN: 3×128, 3×256, 512, 256, 128 (3×3 convs with bias) + BN, then a
    # linear 128 -> C.
    widths = [3, 128, 128, 128, 256, 256, 256, 512, 256, 128]
    expected = sum(_conv(a, b, 9) + _bn(b) for a, b in zip(widths[:-1], widths[1:])) + 128 * 10 + 10
    assert _count(create_arch("jocor_cnn", (3, 32, 32), 10)) == expected  # 4,438,154


def test_cifar_resnet_parameter_counts() -> None:
    # He et al. (2016) CIFAR ResNet-32 with parameter-free (option A) shortcuts: 0.46M.
    def basic(cin: int, cout: int) -> int:
        return cin * cout * 9 + _bn(cout) + cout * cout * 9 + _bn(cout)

    r32 = 3 * 16 * 9 + _bn(16)
    for cin, cout in [(16, 16), (16, 32), (32, 64)]:
        r32 += basic(cin, cout) + 4 * basic(cout, cout)
    r32 += 64 * 10 + 10
    assert _count(create_arch("resnet32", (3, 32, 32), 10)) == r32 == 464_154
    # CIFAR-style ResNet-18 (3×3 stem, 1×1 conv+BN projection shortcuts): 11,173,962 for C=10.
    r18 = 3 * 64 * 9 + _bn(64)
    for cin, cout in [(64, 64), (64, 128), (128, 256), (256, 512)]:
        proj = 0 if cin == cout else cin * cout + _bn(cout)
        r18 += basic(cin, cout) + proj + basic(cout, cout)
    r18 += 512 * 10 + 10
    assert _count(create_arch("resnet18", (3, 32, 32), 10)) == r18 == 11_173_962
    # Pre-activation ResNet-18: no BN in the stem, projections without BN, a final BN before pooling.
    pre = 3 * 64 * 9
    for cin, cout in [(64, 64), (64, 128), (128, 256), (256, 512)]:
        proj = 0 if cin == cout else cin * cout
        pre += _bn(cin) + cin * cout * 9 + _bn(cout) + cout * cout * 9 + proj
        pre += 2 * (_bn(cout) + cout * cout * 9)
    pre += _bn(512) + 512 * 10 + 10
    assert _count(create_arch("preact_resnet18", (3, 32, 32), 10)) == pre


def test_vgg11_parameter_count() -> None:
    cfg = [64, 128, 256, 256, 512, 512, 512, 512]
    cin, total = 3, 0
    for w in cfg:
        total += _conv(cin, w, 9) + _bn(w)
        cin = w
    total += 512 * 10 + 10
    assert _count(create_arch("vgg11", (3, 32, 32), 10)) == total


def test_jocor_cnn_has_leaky_relu_and_batchnorm() -> None:
    model = create_arch("jocor_cnn", (1, 28, 28), 10)
    kinds = [type(m) for m in model.modules()]
    assert kinds.count(nn.Conv2d) == 9 and kinds.count(nn.BatchNorm2d) == 9
    slopes = {m.negative_slope for m in model.modules() if isinstance(m, nn.LeakyReLU)}
    assert slopes == {0.01}


def test_cnn4_has_four_weight_layers() -> None:
    for shape in (SHAPES["digits"], SHAPES["mnist"], SHAPES["cifar"], (5, 16, 16)):
        model = create_arch("cnn4", shape, 10)
        layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        assert len(layers) == 4
        assert layers[0].in_channels == shape[0]


def test_sequence_model_accepts_flat_vector_as_one_channel() -> None:
    model = create_arch("cnn1d", (40,), 10, seed=0)
    twin = create_arch("cnn1d", (1, 40), 10, seed=0)
    x = torch.randn(4, 40, generator=torch.Generator().manual_seed(0))
    assert torch.equal(model(x), twin(x.unsqueeze(1)))
