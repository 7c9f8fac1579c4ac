"""The architecture registry: ``create_arch(name, input_shape, num_classes, seed=...) -> nn.Module``.

Every model maps ``x[N, *input_shape]`` to logits ``[N, num_classes]``. Three kinds of input:
``flat`` (any shape, flattened: the MLPs), ``image`` (``[C, H, W]``, any channel count and any
size >= 1×1: max-pools use ``ceil_mode`` and every head pools adaptively, so 8×8 digits work) and
``sequence`` (``[C, L]`` or ``[L]`` read as one channel: mnist1d's ``[1, 40]``).

Users' models: a name ``MODULE:FUNCTION`` (e.g. ``my_models:make_net``) is a factory
``FUNCTION(input_shape, num_classes) -> nn.Module`` in an importable module or in the working
directory (`workers.user_code`); it is registered on first use with input kind ``any`` (the factory
decides what it accepts) and initialised under the seed like every built-in architecture.

Initialisation is PyTorch's default under ``seed``: ``create_arch(..., seed=s)`` equals
``torch.manual_seed(s)`` followed by building the module, and leaves the global RNG untouched, so a
network's initial weights depend on the seed alone (the population trainer relies on this).

Choices where the papers are silent (gao-arl §4 names MLP-2, MLP-3 and a 4-layer CNN only):
hidden width 256 for the MLPs (MLP-4, three hidden layers, is ours); CNN-4 = two 3×3 conv layers
(32, 64; ReLU, 2×2 max-pool) and two linear layers (128 hidden) after an adaptive average pool to at
most 4×4. CIFAR-style networks follow
He et al. (2016): a 3×3 stem without max-pool; ResNet-32 uses parameter-free "option A" shortcuts.
"""
from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

Shape = tuple[int, ...]
Builder = Callable[[Shape, int], nn.Module]
INPUT_KINDS = {
    "flat": "any shape (flattened)",
    "image": "images [C, H, W]",
    "sequence": "sequences [C, L] or [L]",
    "any": "whatever the user's factory accepts",
}


@dataclass(frozen=True)
class ArchInfo:
    """A registered architecture: its builder and the kind of input it takes."""

    name: str
    build: Builder
    inputs: str
    doc: str = ""


_ARCHS: dict[str, ArchInfo] = {}


def register_arch(name: str, *, inputs: str) -> Callable[[Builder], Builder]:
    """Decorator: register ``build(input_shape, num_classes) -> nn.Module`` as architecture ``name``.

    Raises:
        ValueError: ``name`` is already registered, or ``inputs`` is not one of `INPUT_KINDS`.
    """

    def deco(build: Builder) -> Builder:
        if inputs not in INPUT_KINDS:
            raise ValueError(f"register_arch({name!r}): inputs={inputs!r} is not one of {sorted(INPUT_KINDS)}")
        if name in _ARCHS:
            raise ValueError(f"architecture {name!r} is already registered (by {_ARCHS[name].build.__module__})")
        _ARCHS[name] = ArchInfo(name, build, inputs, (build.__doc__ or "").strip())
        return build

    return deco


def list_archs(pattern: str = "*") -> list[str]:
    """Registered architecture names matching the glob ``pattern``, sorted (users' factories left out)."""
    return sorted(n for n in _ARCHS if fnmatch.fnmatch(n, pattern) and ":" not in n)


def get_arch(name: str) -> ArchInfo:
    """The registered architecture ``name``; an unknown name raises ValueError with close matches.

    ``MODULE:FUNCTION`` names a user's factory: imported and registered here on first use.
    """
    if isinstance(name, str) and ":" in name:
        from evoloss.workers.user_code import resolve_factory  # (re)records the module for shipping to Ray

        factory = resolve_factory(name)
        if name not in _ARCHS:
            _ARCHS[name] = ArchInfo(name, _checked_factory(name, factory), "any", "a user's model factory")
    if not isinstance(name, str) or name not in _ARCHS:
        close = difflib.get_close_matches(str(name), list(_ARCHS), n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"unknown architecture {name!r}.{hint} Valid: {', '.join(list_archs())}")
    return _ARCHS[name]


def arch_input_kind(name: str) -> str:
    """``flat``, ``image`` or ``sequence``: the kind of input architecture ``name`` takes."""
    return get_arch(name).inputs


def check_arch(name: str, input_shape: Shape, num_classes: int) -> Shape:
    """Validate ``name``, ``input_shape`` and ``num_classes`` without building; return the shape as ints.

    Raises:
        ValueError / TypeError: unknown name, a non-positive or non-integer shape, fewer than 2
        classes, or a shape of the wrong rank for the architecture (the message lists those that fit).
    """
    info = get_arch(name)
    shape = _normalise_shape(input_shape)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes={num_classes!r} must be an integer >= 2")
    if not _accepts(info.inputs, shape):
        fitting = [a for a in list_archs() if _accepts(_ARCHS[a].inputs, shape)]
        raise ValueError(
            f"architecture {name!r} takes {INPUT_KINDS[info.inputs]}; got input_shape={shape}. "
            f"Architectures that take this shape: {', '.join(fitting)}"
        )
    return shape


def create_arch(name: str, input_shape: Shape, num_classes: int, *, seed: int | None = None) -> nn.Module:
    """Build architecture ``name`` for inputs ``[N, *input_shape]`` and ``num_classes`` outputs.

    Args:
        seed: initialise under ``torch.manual_seed(seed)`` (PyTorch default init) without touching the
            global RNG; ``None`` draws from the global RNG as ``nn.Module`` constructors do.
    """
    shape = check_arch(name, input_shape, num_classes)
    build = _ARCHS[name].build
    if seed is None:
        return build(shape, num_classes)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed={seed!r} must be an int (or None for the global RNG)")
    if not 0 <= seed < 2**63:
        raise ValueError(f"seed={seed} must lie in [0, 2**63)")
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        return build(shape, num_classes)


def _checked_factory(name: str, factory: Callable[..., object]) -> Builder:
    """A builder that calls the user's factory and checks that it returned an ``nn.Module``."""

    def build(shape: Shape, num_classes: int) -> nn.Module:
        model = factory(tuple(shape), int(num_classes))
        if not isinstance(model, nn.Module):
            raise TypeError(f"architecture {name!r} returned {type(model).__name__}, not a torch.nn.Module")
        return model

    build.__name__ = build.__qualname__ = name.replace(":", "_").replace(".", "_")
    return build


def check_user_model(name: str, input_shape: Shape, num_classes: int) -> None:
    """Build a user's factory (seed 0) and run two zero rows through it in eval mode: the logits must be
    ``[2, num_classes]``. Raises ValueError naming the factory and what came out."""
    try:
        model = create_arch(name, input_shape, num_classes, seed=0).eval()
        with torch.no_grad():
            out = model(torch.zeros(2, *input_shape))
    except Exception as exc:
        raise ValueError(f"architecture {name!r} fails on inputs [N, {', '.join(map(str, input_shape))}] with "
                         f"{num_classes} classes: {type(exc).__name__}: {exc}") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"architecture {name!r} must map [N, *input_shape] to logits [N, {num_classes}]; "
                         f"got {got} for N=2")


def _normalise_shape(input_shape: Shape) -> Shape:
    if not isinstance(input_shape, (tuple, list, torch.Size)) or len(input_shape) == 0:
        raise ValueError(f"input_shape={input_shape!r} must be a tuple with at least one dimension, e.g. (1, 28, 28)")
    if not all(isinstance(d, int) and not isinstance(d, bool) for d in input_shape):
        raise TypeError(f"input_shape={tuple(input_shape)!r} must hold integers (sizes per sample, no batch axis)")
    if min(input_shape) < 1:
        raise ValueError(f"input_shape={tuple(input_shape)} must have positive sizes")
    return tuple(int(d) for d in input_shape)


def _accepts(kind: str, shape: Shape) -> bool:
    return {"flat": True, "image": len(shape) == 3, "sequence": len(shape) in (1, 2), "any": True}[kind]


def _flat_size(shape: Shape) -> int:
    size = 1
    for d in shape:
        size *= d
    return size


def _pooled(size: int, times: int) -> int:
    """Spatial size after ``times`` 2×2 max-pools with ``ceil_mode=True``."""
    for _ in range(times):
        size = (size + 1) // 2
    return size


def _head(width: int, num_classes: int) -> list[nn.Module]:
    return [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes)]


# --- the registered architectures -----------------------------------------------------------------
def _mlp(shape: Shape, num_classes: int, hidden_layers: int) -> nn.Module:
    """flatten -> (256 -> ReLU) × hidden_layers -> C, the modules built in order (same init per seed)."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = _flat_size(shape)
    for _ in range(hidden_layers):
        layers += [nn.Linear(width, 256), nn.ReLU()]
        width = 256
    return nn.Sequential(*layers, nn.Linear(width, num_classes))


@register_arch("mlp2", inputs="flat")
def mlp2(shape: Shape, num_classes: int) -> nn.Module:
    """2-layer MLP (gao-arl §4): flatten -> 256 -> ReLU -> C."""
    return _mlp(shape, num_classes, 1)


@register_arch("mlp3", inputs="flat")
def mlp3(shape: Shape, num_classes: int) -> nn.Module:
    """3-layer MLP (gao-arl §4): flatten -> 256 -> ReLU -> 256 -> ReLU -> C."""
    return _mlp(shape, num_classes, 2)


@register_arch("mlp4", inputs="flat")
def mlp4(shape: Shape, num_classes: int) -> nn.Module:
    """4-layer MLP (ours, not in gao-arl): flatten -> 256 -> ReLU -> 256 -> ReLU -> 256 -> ReLU -> C.
    As deep as CNN-4, and like it slow to train under bounded losses at the protocol's lr: a search
    that sees it learns a loss's pace (BENCHMARKS.md, "A deep MLP as the CNN's proxy")."""
    return _mlp(shape, num_classes, 3)


@register_arch("cnn4", inputs="image")
def cnn4(shape: Shape, num_classes: int) -> nn.Module:
    """4-layer CNN (gao-arl §4): conv3×3(32)-ReLU-pool, conv3×3(64)-ReLU-pool, avg-pool to <=4×4,
    linear 128-ReLU, linear C. 28×28 -> 7×7 -> 4×4; 32×32 -> 8×8 -> 4×4; 8×8 -> 2×2."""
    grid = min(_pooled(shape[1], 2), _pooled(shape[2], 2), 4)
    return nn.Sequential(
        nn.Conv2d(shape[0], 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2, ceil_mode=True),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2, ceil_mode=True),
        nn.AdaptiveAvgPool2d(grid),
        nn.Flatten(),
        nn.Linear(64 * grid * grid, 128),
        nn.ReLU(),
        nn.Linear(128, num_classes),
    )


def _conv_bn_lrelu(cin: int, cout: int, padding: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=padding), nn.BatchNorm2d(cout), nn.LeakyReLU(0.01)]


@register_arch("jocor_cnn", inputs="image")
def jocor_cnn(shape: Shape, num_classes: int) -> nn.Module:
    """The Co-teaching / JoCoR 9-layer CNN: 3×conv128, pool, dropout2d 0.25, 3×conv256, pool, dropout2d
    0.25, conv512-conv256-conv128 (3×3, BatchNorm, LeakyReLU 0.01), global average pool, linear C.

    The last three convolutions are "valid" (padding 0) as in the original while the feature map is at
    least 3 wide; on smaller maps (8×8 inputs give 2×2) they pad by 1 instead.
    """
    layers: list[nn.Module] = []
    widths = [shape[0], 128, 128, 128, 256, 256, 256]
    for i, (cin, cout) in enumerate(zip(widths[:-1], widths[1:])):
        layers += _conv_bn_lrelu(cin, cout, padding=1)
        if i % 3 == 2:
            layers += [nn.MaxPool2d(2, ceil_mode=True), nn.Dropout2d(0.25)]
    size = min(_pooled(shape[1], 2), _pooled(shape[2], 2))
    for cin, cout in [(256, 512), (512, 256), (256, 128)]:
        padding = 0 if size >= 3 else 1
        layers += _conv_bn_lrelu(cin, cout, padding)
        size -= 2 * (1 - padding)
    return nn.Sequential(*layers, *_head(128, num_classes))


@register_arch("vgg11", inputs="image")
def vgg11(shape: Shape, num_classes: int) -> nn.Module:
    """VGG-11 (Simonyan & Zisserman 2015, configuration A) in its CIFAR form: 3×3 convs with BatchNorm
    and ReLU, five ceil-mode max-pools, global average pool, one linear layer 512 -> C."""
    layers: list[nn.Module] = []
    cin = shape[0]
    for width in [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]:
        if width == "M":
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
            continue
        layers += [nn.Conv2d(cin, int(width), 3, padding=1), nn.BatchNorm2d(int(width)), nn.ReLU()]
        cin = int(width)
    return nn.Sequential(*layers, *_head(512, num_classes))


class _BasicBlock(nn.Module):
    """He et al. (2016) basic block: conv3×3-BN-ReLU-conv3×3-BN, plus the shortcut, then ReLU.

    ``shortcut="conv"``: a 1×1 conv + BN projection when the shape changes (ResNet-18);
    ``shortcut="pad"``: "option A", stride-2 subsampling and zero channels (CIFAR ResNet-32).
    """

    def __init__(self, cin: int, cout: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.stride, self.extra_channels = stride, cout - cin
        changes = stride != 1 or cin != cout
        self.project = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if changes and shortcut == "conv"
            else None
        )

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.project is not None:
            return self.project(x)
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra_channels:
            x = nn.functional.pad(x, (0, 0, 0, 0, 0, self.extra_channels))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class _PreActBlock(nn.Module):
    """He et al. (2016b) pre-activation block: BN-ReLU-conv3×3-BN-ReLU-conv3×3 plus the shortcut
    (a 1×1 conv of the pre-activated input when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        changes = stride != 1 or cin != cout
        self.project = nn.Conv2d(cin, cout, 1, stride, bias=False) if changes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = torch.relu(self.bn1(x))
        skip = self.project(pre) if self.project is not None else x
        out = self.conv1(pre)
        return self.conv2(torch.relu(self.bn2(out))) + skip


def _stages(cin: int, plan: list[tuple[int, int, int]], block: Callable[[int, int, int], nn.Module]) -> list[nn.Module]:
    """Residual stages from ``plan`` = [(width, blocks, first stride)]."""
    layers: list[nn.Module] = []
    for width, count, stride in plan:
        for i in range(count):
            layers.append(block(cin, width, stride if i == 0 else 1))
            cin = width
    return layers


@register_arch("resnet18", inputs="image")
def resnet18(shape: Shape, num_classes: int) -> nn.Module:
    """CIFAR-style ResNet-18 (He et al. 2016): 3×3 stem (64, no max-pool), stages of 2 basic blocks at
    64/128/256/512 with strides 1/2/2/2, projection shortcuts, global average pool, linear C."""
    plan = [(64, 2, 1), (128, 2, 2), (256, 2, 2), (512, 2, 2)]
    blocks = _stages(64, plan, lambda a, b, s: _BasicBlock(a, b, s, shortcut="conv"))
    stem = [nn.Conv2d(shape[0], 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU()]
    return nn.Sequential(*stem, *blocks, *_head(512, num_classes))


@register_arch("preact_resnet18", inputs="image")
def preact_resnet18(shape: Shape, num_classes: int) -> nn.Module:
    """Pre-activation ResNet-18 (He et al. 2016b), CIFAR form: 3×3 stem conv (64), the ResNet-18 stage
    plan with pre-activation blocks, a final BN-ReLU, global average pool, linear C."""
    plan = [(64, 2, 1), (128, 2, 2), (256, 2, 2), (512, 2, 2)]
    blocks = _stages(64, plan, _PreActBlock)
    stem = [nn.Conv2d(shape[0], 64, 3, 1, 1, bias=False)]
    return nn.Sequential(*stem, *blocks, nn.BatchNorm2d(512), nn.ReLU(), *_head(512, num_classes))


@register_arch("resnet32", inputs="image")
def resnet32(shape: Shape, num_classes: int) -> nn.Module:
    """CIFAR ResNet-32 (He et al. 2016, §4.2, n=5): 3×3 stem (16), three stages of 5 basic blocks at
    16/32/64 with strides 1/2/2, parameter-free option-A shortcuts, global average pool, linear C."""
    plan = [(16, 5, 1), (32, 5, 2), (64, 5, 2)]
    blocks = _stages(16, plan, lambda a, b, s: _BasicBlock(a, b, s, shortcut="pad"))
    stem = [nn.Conv2d(shape[0], 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
    return nn.Sequential(*stem, *blocks, *_head(64, num_classes))


@register_arch("cnn1d", inputs="sequence")
def cnn1d(shape: Shape, num_classes: int) -> nn.Module:
    """A small 1D CNN for mnist1d: conv5(32), conv3/2(64), conv3/2(64) with ReLU, average pool to <=5
    positions, linear 128-ReLU, linear C. ``[L]`` inputs are read as one channel."""
    channels, length = (1, shape[0]) if len(shape) == 1 else shape
    out_len = (((length + 1) // 2) + 1) // 2  # two stride-2 convolutions with padding 1
    grid = min(out_len, 5)
    layers: list[nn.Module] = [nn.Unflatten(1, (1, length))] if len(shape) == 1 else []
    layers += [
        nn.Conv1d(channels, 32, 5, padding=2),
        nn.ReLU(),
        nn.Conv1d(32, 64, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv1d(64, 64, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool1d(grid),
        nn.Flatten(),
        nn.Linear(64 * grid, 128),
        nn.ReLU(),
        nn.Linear(128, num_classes),
    ]
    return nn.Sequential(*layers)
