"""Stacked layers for `workers.population.stack.StackedNet`: K members' copies of one layer as one.

Each `Layer` holds its K members' parameters stacked member-major (``[K, ...]``), runs them as one
kernel in the activation layouts described in `workers.population.stack` (``feat`` is feature-major,
``[K, F, B]``), and — for the layers of an MLP — has a hand-written backward pass whose gradients
arrive in that layout too. ``layer_from_modules`` picks the class for a module type.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class UnsupportedArchitecture(ValueError):
    """The networks cannot be stacked (a layer kind or layout we do not express); train one by one."""


def _stack(tensors: Sequence[torch.Tensor | None]) -> torch.Tensor | None:
    if tensors[0] is None:
        return None
    return torch.stack([t.detach() for t in tensors]).contiguous()


class Layer:
    """One layer of a stacked network. Subclasses override the layouts they accept."""

    manual = False  # has a hand-written backward

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        if any(repr(m) != repr(modules[0]) for m in modules):
            raise ValueError(f"members disagree on layer {modules[0]!r}; stack networks of one architecture")
        self.module = modules[0]
        self.params: list[torch.Tensor] = []
        self.buffers: list[torch.Tensor] = []

    def out_layout(self, layout: str) -> str:
        """The layout this layer produces from ``layout``; raise `UnsupportedArchitecture` if it cannot."""
        raise UnsupportedArchitecture(f"{type(self.module).__name__} cannot take the {layout!r} layout")

    def forward(self, h: torch.Tensor, layout: str, k: int, training: bool) -> tuple[torch.Tensor, str]:
        """``apply`` with this layer's own parameters and buffers."""
        return self.apply(self.params, self.buffers, h, layout, k, training)

    def apply(
        self, params: Sequence[torch.Tensor], buffers: Sequence[torch.Tensor], h: torch.Tensor, layout: str, k: int,
        training: bool,
    ) -> tuple[torch.Tensor, str]:
        """The stacked forward with ``params``/``buffers`` given (shaped like ``self.params``/``self.buffers``):
        the functional form `workers.population.compiled` traces. Reads nothing else of the members."""
        raise UnsupportedArchitecture(f"{type(self.module).__name__} has no stacked forward")

    def forward_saving(self, h: torch.Tensor, layout: str, k: int) -> tuple[torch.Tensor, str, object]:
        """Training forward that also returns what `backward` needs."""
        out, out_layout = self.forward(h, layout, k, training=True)
        return out, out_layout, (layout, None)

    def backward(self, grad: torch.Tensor, saved: object, k: int) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        """``(∂L/∂input or None when the input is shared, [∂L/∂param for each of self.params])``."""
        raise UnsupportedArchitecture(f"{type(self.module).__name__} has no hand-written backward")

    def select(self, keep: torch.Tensor) -> None:
        """Keep only the members at indices ``keep``."""
        self.params = [p.detach()[keep].contiguous() for p in self.params]
        self.buffers = [b[keep].contiguous() for b in self.buffers]


class Linear(Layer):
    """``yᵀ = W xᵀ + b`` per member, activations feature-major ``[K, F, B]``: one ``addmm`` with ``K·F_out``
    rows on the shared input, one ``baddbmm`` otherwise (measured 1.3-1.5x faster than batch-major
    ``x Wᵀ`` here, and the next layer reads its input contiguously)."""

    manual = True

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        super().__init__(modules)
        weight, bias = _stack([m.weight for m in modules]), _stack([m.bias for m in modules])
        self.params = [weight] + ([bias] if bias is not None else [])

    def out_layout(self, layout: str) -> str:
        if layout in ("shared", "feat"):
            return "feat"
        return super().out_layout(layout)

    def apply(
        self, params: Sequence[torch.Tensor], buffers: Sequence[torch.Tensor], h: torch.Tensor, layout: str, k: int,
        training: bool,
    ) -> tuple[torch.Tensor, str]:
        weight, bias = params[0], (params[1] if len(params) > 1 else None)
        out_features = weight.shape[1]
        if layout == "shared":
            if h.dim() != 2:
                raise UnsupportedArchitecture(f"Linear on a shared input of shape {tuple(h.shape)}; flatten first")
            flat_w = weight.reshape(k * out_features, -1)
            out = torch.mm(flat_w, h.t()) if bias is None else torch.addmm(bias.reshape(-1, 1), flat_w, h.t())
            return out.view(k, out_features, h.shape[0]), "feat"
        if layout == "feat":
            if bias is None:
                return torch.bmm(weight, h), "feat"
            return torch.baddbmm(bias.unsqueeze(2), weight, h), "feat"
        raise UnsupportedArchitecture(f"Linear cannot take the {layout!r} layout")

    def forward_saving(self, h: torch.Tensor, layout: str, k: int) -> tuple[torch.Tensor, str, object]:
        out, out_layout = self.forward(h, layout, k, training=True)
        return out, out_layout, (layout, h)

    def backward(self, grad: torch.Tensor, saved: object, k: int) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        layout, h = saved  # type: ignore[misc]
        weight = self.params[0]
        if layout == "shared":  # dW_k = G_k x for every k at once: [K·out, B] @ [B, in]
            grad_w = torch.mm(grad.reshape(k * weight.shape[1], -1), h).view_as(weight)
            grad_in = None
        else:  # dW_k = G_k h_k (h stored feature-major: hᵀ), d(hᵀ)_k = W_kᵀ G_k
            grad_w = torch.bmm(grad, h.transpose(1, 2))
            grad_in = torch.bmm(weight.transpose(1, 2), grad)
        grads = [grad_w] + ([grad.sum(dim=2)] if len(self.params) > 1 else [])
        return grad_in, grads


class Conv(Layer):
    """Conv1d/Conv2d per member: ``K·C_out`` filters on the shared input, ``groups = K·g`` on ``chan``.

    A 2-D convolution of the shared input (a network's first layer) runs as one GEMM on the input's
    patches, which all members share (`_shared_patches_conv2d`), instead of a ``K·C_out``-filter
    convolution: on CNN-4's 1-channel 8×8 digits, K = 8, forward 0.2-0.35 ms against 3.5-4.3 ms, and
    forward + weight gradient 1.5 ms against 4.5 ms compiled (BENCHMARKS.md "Page faults, shared-input
    convolutions").
    """

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        super().__init__(modules)
        m = modules[0]
        if m.padding_mode != "zeros":
            raise UnsupportedArchitecture(f"{type(m).__name__} with padding_mode={m.padding_mode!r}")
        self.conv = F.conv1d if isinstance(m, nn.Conv1d) else F.conv2d
        weight, bias = _stack([mm.weight for mm in modules]), _stack([mm.bias for mm in modules])
        self.params = [weight] + ([bias] if bias is not None else [])

    def out_layout(self, layout: str) -> str:
        if layout == "chan" or (layout == "shared" and self.module.groups == 1):
            return "chan"
        return super().out_layout(layout)

    def apply(
        self, params: Sequence[torch.Tensor], buffers: Sequence[torch.Tensor], h: torch.Tensor, layout: str, k: int,
        training: bool,
    ) -> tuple[torch.Tensor, str]:
        m, weight = self.module, params[0]
        bias = params[1].reshape(-1) if len(params) > 1 else None
        if layout == "shared" and uses_shared_patches(m, h, k):
            return _shared_patches_conv2d(m, weight, bias, h), "chan"
        groups = m.groups if layout == "shared" else k * m.groups
        if h.dim() == 4:  # channels-last: the pools after it run ~10x faster on [B, K·C, H, W] (BENCHMARKS.md)
            h = h.contiguous(memory_format=torch.channels_last)
        out = self.conv(h, weight.reshape(-1, *weight.shape[2:]), bias, m.stride, m.padding, m.dilation, groups)
        if out.dim() == 4:  # a 1-channel input gives an NCHW output: make it channels-last too
            out = out.contiguous(memory_format=torch.channels_last)
        return out, "chan"


def uses_shared_patches(m: nn.Module, h: torch.Tensor, k: int) -> bool:
    """Whether `_shared_patches_conv2d` computes ``m`` on the shared input ``h``: a 2-D, ungrouped convolution
    with numeric padding whose patch matrix (``C_in·kh·kw`` values a position) is no larger than its
    output (``K·C_out`` a position), so it never needs more memory than the output itself."""
    return (isinstance(m, nn.Conv2d) and m.groups == 1 and h.dim() == 4 and not isinstance(m.padding, str)
            and m.in_channels * m.kernel_size[0] * m.kernel_size[1] <= k * m.out_channels)


def _shared_patches_conv2d(m: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None,
                           h: torch.Tensor) -> torch.Tensor:
    """Every member's ``m`` on one shared input ``h`` ``[B, C, H, W]`` as ``patches @ W_allᵀ``: the patches
    ``[B·H_out·W_out, C·kh·kw]`` (`F.unfold`, the order of ``Conv2d.weight.reshape(C_out, -1)``'s columns)
    times all members' filters ``[K·C_out, C·kh·kw]``, plus the bias; the result ``[B, H_out, W_out,
    K·C_out]`` is the channels-last ``[B, K·C_out, H_out, W_out]`` output, as the grouped path's."""
    b, _, height, width = h.shape
    cols = F.unfold(h, m.kernel_size, m.dilation, m.padding, m.stride)  # [B, C·kh·kw, L]
    out_h, out_w = (
        (size + 2 * pad - dil * (kernel - 1) - 1) // stride + 1
        for size, pad, dil, kernel, stride in zip((height, width), m.padding, m.dilation, m.kernel_size, m.stride)
    )
    cols = cols.transpose(1, 2).reshape(b * out_h * out_w, cols.shape[1])
    flat_w = weight.reshape(-1, cols.shape[1])  # [K·C_out, C·kh·kw]
    out = torch.mm(cols, flat_w.t()) if bias is None else torch.addmm(bias, cols, flat_w.t())
    return out.view(b, out_h, out_w, flat_w.shape[0]).permute(0, 3, 1, 2)


class BatchNorm(Layer):
    """BatchNorm1d/2d per member: per-channel statistics of ``[B, K·C, …]`` are per-member statistics."""

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        super().__init__(modules)
        m = modules[0]
        if m.momentum is None:
            raise UnsupportedArchitecture("BatchNorm with momentum=None (cumulative averages)")
        if m.affine:
            self.params = [_stack([mm.weight for mm in modules]), _stack([mm.bias for mm in modules])]
        if m.track_running_stats:
            self.buffers = [_stack([mm.running_mean for mm in modules]), _stack([mm.running_var for mm in modules])]

    def out_layout(self, layout: str) -> str:
        if layout in ("chan", "feat"):
            return layout
        return super().out_layout(layout)

    def apply(
        self, params: Sequence[torch.Tensor], buffers: Sequence[torch.Tensor], h: torch.Tensor, layout: str, k: int,
        training: bool,
    ) -> tuple[torch.Tensor, str]:
        m = self.module
        weight, bias = (p.reshape(-1) for p in params) if params else (None, None)
        mean, var = (b.view(-1) for b in buffers) if buffers else (None, None)
        use_batch = training or mean is None
        x = h if layout == "chan" else h.permute(2, 0, 1).reshape(h.shape[2], -1)  # [K, F, B] -> [B, K·F]
        out = F.batch_norm(x, mean, var, weight, bias, use_batch, m.momentum, m.eps)
        if layout == "feat":
            out = out.view(h.shape[2], k, -1).permute(1, 2, 0)
        return out, layout


class Elementwise(Layer):
    """A parameter-free element-wise module (activations, Identity, inactive Dropout): any layout."""

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        super().__init__(modules)
        m = modules[0]
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
            raise UnsupportedArchitecture(f"{m!r}: random masks cannot match one-by-one training")
        self.manual = isinstance(m, (nn.ReLU, nn.LeakyReLU, nn.Identity, nn.modules.dropout._DropoutNd))

    def out_layout(self, layout: str) -> str:
        return layout

    def apply(
        self, params: Sequence[torch.Tensor], buffers: Sequence[torch.Tensor], h: torch.Tensor, layout: str, k: int,
        training: bool,
    ) -> tuple[torch.Tensor, str]:
        return self.module(h), layout

    def forward_saving(self, h: torch.Tensor, layout: str, k: int) -> tuple[torch.Tensor, str, object]:
        out = self.module(h)
        return out, layout, (h if isinstance(self.module, nn.LeakyReLU) else out)

    def backward(self, grad: torch.Tensor, saved: object, k: int) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        # the kernels autograd itself uses for these two (masked_fill / where are 10-20x slower here)
        if isinstance(self.module, nn.ReLU):  # ∂relu: 1 where the output is positive
            return torch.ops.aten.threshold_backward(grad, saved, 0), []
        if isinstance(self.module, nn.LeakyReLU):
            return torch.ops.aten.leaky_relu_backward(grad, saved, self.module.negative_slope, False), []
        return grad, []


class Reshape(Layer):
    """Flatten / Unflatten: per-sample reshapes of the shared input; Flatten turns ``chan`` into ``feat``."""

    manual = True

    def out_layout(self, layout: str) -> str:
        m = self.module
        if layout == "shared":
            return layout
        if isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1:
            return "feat"
        return super().out_layout(layout)

    def apply(
        self, params: Sequence[torch.Tensor], buffers: Sequence[torch.Tensor], h: torch.Tensor, layout: str, k: int,
        training: bool,
    ) -> tuple[torch.Tensor, str]:
        if layout == "shared":
            return self.module(h), layout
        if layout == "chan":  # member k's [C, *S] flattened channel-major, as nn.Flatten does: [K, F, B]
            return h.reshape(h.shape[0], k, -1).permute(1, 2, 0), "feat"
        return h, "feat"  # already [K, F, B]

    def backward(self, grad: torch.Tensor, saved: object, k: int) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        layout, _ = saved  # type: ignore[misc]
        if layout != "feat":
            raise UnsupportedArchitecture("hand-written backward through a Flatten of a convolutional layout")
        return grad, []


class Pool(Layer):
    """Pooling (max, average, adaptive; 1D/2D): per channel, so per member on ``chan``."""

    def out_layout(self, layout: str) -> str:
        if layout in ("shared", "chan"):
            return layout
        return super().out_layout(layout)

    def apply(
        self, params: Sequence[torch.Tensor], buffers: Sequence[torch.Tensor], h: torch.Tensor, layout: str, k: int,
        training: bool,
    ) -> tuple[torch.Tensor, str]:
        m = self.module
        if isinstance(m, _ADAPTIVE) and tuple(h.shape[2:]) == _sizes(m.output_size, h.dim() - 2):
            return h, layout  # pooling each position to itself (8×8 digits in CNN-4): the identity, exactly
        if h.dim() == 3 and isinstance(m, nn.AdaptiveAvgPool1d):
            out = _sizes(m.output_size, 1)[0]
            if out is not None and h.shape[2] % out == 0:  # equal windows: sum / count, the same bits as
                window = h.shape[2] // out  # adaptive_avg_pool1d, ~1.6x faster forward + backward here
                return h.unflatten(2, (out, window)).sum(dim=3) / window, layout
        if h.dim() == 3 and isinstance(m, _POOLS_1D):  # as 2D channels-last: ~10x faster here
            wide = h.unsqueeze(2).contiguous(memory_format=torch.channels_last)
            return self._pool_2d(wide).squeeze(2), layout
        return self.module(h), layout

    def _pool_2d(self, h: torch.Tensor) -> torch.Tensor:
        """This 1D pool on ``[B, C, 1, L]``: the same windows along L."""
        m = self.module
        if isinstance(m, nn.AdaptiveAvgPool1d):
            return F.adaptive_avg_pool2d(h, (1, m.output_size if isinstance(m.output_size, int) else m.output_size[0]))
        if isinstance(m, nn.AdaptiveMaxPool1d):
            return F.adaptive_max_pool2d(h, (1, m.output_size if isinstance(m.output_size, int) else m.output_size[0]))
        kernel, stride, padding = (_one(v) for v in (m.kernel_size, m.stride, m.padding))
        if isinstance(m, nn.MaxPool1d):
            return F.max_pool2d(h, (1, kernel), (1, stride), (0, padding), (1, _one(m.dilation)), m.ceil_mode)
        return F.avg_pool2d(h, (1, kernel), (1, stride), (0, padding), m.ceil_mode, m.count_include_pad)


def _sizes(output_size: int | tuple[int | None, ...], dims: int) -> tuple[int | None, ...]:
    """An adaptive pool's output size as a tuple of ``dims`` entries (None: keep that input size)."""
    return (output_size,) * dims if isinstance(output_size, int) else tuple(output_size)


def _one(value: int | tuple[int, ...]) -> int:
    return value if isinstance(value, int) else value[0]


_POOLS_1D = (nn.MaxPool1d, nn.AvgPool1d, nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool1d)
_ADAPTIVE = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)
_ELEMENTWISE = (
    nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.ELU, nn.Softplus,
    nn.ReLU6, nn.Hardtanh, nn.modules.dropout._DropoutNd,
)
_POOLS = (
    nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
)
_LAYERS: tuple[tuple[tuple[type, ...], type[Layer]], ...] = (
    ((nn.Linear,), Linear),
    ((nn.Conv1d, nn.Conv2d), Conv),
    ((nn.BatchNorm1d, nn.BatchNorm2d), BatchNorm),
    ((nn.Flatten, nn.Unflatten), Reshape),
    (_POOLS, Pool),
    (_ELEMENTWISE, Elementwise),
)


def layer_from_modules(modules: Sequence[nn.Module]) -> Layer:
    """The stacked `Layer` for K members' copies of one module; unsupported kinds raise."""
    kind = type(modules[0])
    for types, layer_cls in _LAYERS:
        if kind in types or (layer_cls is Elementwise and issubclass(kind, nn.modules.dropout._DropoutNd)):
            if getattr(modules[0], "return_indices", False):
                raise UnsupportedArchitecture(f"{kind.__name__} with return_indices=True")
            return layer_cls(modules)
    raise UnsupportedArchitecture(f"layer {kind.__name__} has no stacked form")
