"""K networks of one architecture as one stacked network: parameters ``[K, ...]``, logits ``[K, B, C]``.

`StackedNet(members)` reads the layers of K ``nn.Sequential`` networks (nested Sequentials are
flattened) and stacks each parameter and BatchNorm buffer member-major. Activations travel in one of
three layouts, chosen so that every layer is one batched kernel:

- ``shared``  ``[B, ...]``: the input, the same for every member (nothing member-specific yet);
- ``chan``    ``[B, K·C, *spatial]``: member k owns channels ``k·C … k·C+C−1``; convolutions run
  grouped (``groups = K·g``; on the shared input, ungrouped with ``K·C_out`` filters), BatchNorm and
  pooling are per channel, hence per member;
- ``feat``    ``[K, F, B]`` (feature-major: each member's activations transposed): linear layers run
  as ``Wᵀ``-free ``baddbmm(b, W, hᵀ)`` (on the shared input as one ``addmm`` with ``K·F_out`` rows);
  the logits are returned as the view ``[K, B, C]``.

Two backward passes: autograd through these kernels (any supported layer), and a hand-written one
for chains of Linear / ReLU / LeakyReLU / Identity after shared-input reshapes (the MLPs), which
skips autograd's bookkeeping — the per-step overhead dominates small networks. Both give each member
the gradient of its own loss: members never mix. A net that these layers cannot express raises
`UnsupportedArchitecture`; the population trainer then trains those members one by one.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from evoloss.workers.population.layers import (
    Layer,
    UnsupportedArchitecture,
    layer_from_modules,
)

__all__ = ["StackedNet", "UnsupportedArchitecture", "sequential_leaves"]

# logits [K, B, C] -> (per-member losses [K], ∂Σ_k loss_k / ∂logits [K, B, C])
LossGrad = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def sequential_leaves(model: nn.Module) -> list[nn.Module]:
    """The layers of ``model`` in call order, if it is a plain (possibly nested) ``nn.Sequential``.

    Raises:
        UnsupportedArchitecture: a container whose ``forward`` is not ``nn.Sequential.forward``.
    """
    if isinstance(model, nn.Sequential) and type(model).forward is nn.Sequential.forward:
        out: list[nn.Module] = []
        for child in model:
            out.extend(sequential_leaves(child))
        return out
    if any(True for _ in model.children()):
        raise UnsupportedArchitecture(
            f"{type(model).__name__} has its own forward(); only nn.Sequential chains of layers are stacked"
        )
    return [model]


class StackedNet:
    """The K member networks as one network with stacked parameters.

    Args:
        members: K networks of the same architecture (identical layer structure), already initialised.

    Raises:
        UnsupportedArchitecture: a layer kind or layout this module cannot stack.
        ValueError: ``members`` is empty or the members' structures differ.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        if len(members) == 0:
            raise ValueError("StackedNet needs at least one member network; got 0")
        chains = [sequential_leaves(m) for m in members]
        if any(len(c) != len(chains[0]) or any(type(a) is not type(b) for a, b in zip(c, chains[0])) for c in chains):
            raise ValueError("StackedNet members must share one layer structure (same architecture and shapes)")
        self.layers: list[Layer] = [layer_from_modules([c[i] for c in chains]) for i in range(len(chains[0]))]
        self.size = len(members)
        self.state_names = [n for n, _ in members[0].named_parameters()]
        self.state_names += [n for n, b in members[0].named_buffers() if b.is_floating_point()]
        if len(self.state_names) != len(self._state()):
            raise UnsupportedArchitecture("the network holds parameters or buffers outside its stacked layers")
        self._check_layouts()
        self.manual = self._manual_backward_possible()
        self._saved: list[object] = []
        self.set_requires_grad(not self.manual)

    # --- structure ------------------------------------------------------------------------------
    def _check_layouts(self) -> None:
        layout = "shared"
        for layer in self.layers:
            layout = layer.out_layout(layout)
        if layout != "feat":
            raise UnsupportedArchitecture(f"the network must end in a linear layer; its last layout is {layout!r}")

    def _manual_backward_possible(self) -> bool:
        """True when every layer from the first parameterised one on has a hand-written backward."""
        started = False
        for layer in self.layers:
            started = started or bool(layer.params)
            if started and not layer.manual:
                return False
        return True

    @property
    def params(self) -> list[torch.Tensor]:
        """All stacked parameters ``[K, ...]``, in layer order (the optimiser's order)."""
        return [p for layer in self.layers for p in layer.params]

    def set_requires_grad(self, flag: bool) -> None:
        """Mark the stacked parameters as autograd leaves (autograd backward) or not (hand-written)."""
        for p in self.params:
            p.requires_grad_(flag)

    def use_backward(self, kind: str) -> None:
        """``"manual"`` (hand-written; raises if the network has none), ``"autograd"``, or ``"auto"``."""
        if kind == "autograd":
            self.manual = False
        elif kind == "manual" and not self._manual_backward_possible():
            raise ValueError("backward='manual': this network has no hand-written backward (MLP chains only); "
                             "use backward='auto' or 'autograd'")
        elif kind in ("manual", "auto"):
            self.manual = self._manual_backward_possible()
        else:
            raise ValueError(f"backward={kind!r} is not one of 'auto', 'manual', 'autograd'")
        self.set_requires_grad(not self.manual)

    def select(self, keep: torch.Tensor) -> None:
        """Keep only the members at indices ``keep`` (parameters and buffers), in that order."""
        for layer in self.layers:
            layer.select(keep)
        self.size = int(keep.numel())
        self.set_requires_grad(not self.manual)

    def member_state(self, k: int) -> list[torch.Tensor]:
        """Member ``k``'s parameters (copies), in the order of ``nn.Module.parameters()``."""
        return [p[k].detach().clone() for p in self.params]

    # --- forward / backward ---------------------------------------------------------------------
    def forward(self, x: torch.Tensor, training: bool) -> torch.Tensor:
        """Logits ``[K, B, C]`` of every member on the shared batch ``x`` (autograd-capable)."""
        h, layout = x, "shared"
        for layer in self.layers:
            h, layout = layer.forward(h, layout, self.size, training)
        return h.transpose(1, 2)

    def forward_saving(self, x: torch.Tensor) -> torch.Tensor:
        """Training-mode logits ``[K, B, C]`` with what `backward_manual` needs saved (no autograd graph)."""
        if not self.manual:
            raise UnsupportedArchitecture("this network has no hand-written backward; use forward + autograd")
        h, layout = x, "shared"
        self._saved = []
        with torch.no_grad():
            for layer in self.layers:
                h, layout, saved = layer.forward_saving(h, layout, self.size)
                self._saved.append(saved)
        return h.transpose(1, 2)

    def backward_manual(self, grad_logits: torch.Tensor) -> list[torch.Tensor]:
        """Parameter gradients from ``∂L/∂logits`` ``[K, B, C]`` by the hand-written backward pass."""
        grads_per_layer: list[list[torch.Tensor]] = []
        grad: torch.Tensor | None = grad_logits.transpose(1, 2)  # feature-major, like the activations
        with torch.no_grad():
            for layer, saved in zip(reversed(self.layers), reversed(self._saved)):
                if not layer.params and grad is None:
                    break
                grad, pgrads = layer.backward(grad, saved, self.size)
                grads_per_layer.append(pgrads)
        self._saved = []
        return [g for pgrads in reversed(grads_per_layer) for g in pgrads]

    def train_step_grads(self, x: torch.Tensor, loss_grad: LossGrad) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run one training forward/backward: returns (per-member losses ``[K]``, parameter gradients).

        ``loss_grad(logits) -> (losses [K], ∂Σloss/∂logits [K, B, C])`` computes the members' losses.
        """
        if self.manual:
            logits = self.forward_saving(x)
            losses, grad_logits = loss_grad(logits)
            return losses, self.backward_manual(grad_logits)
        with torch.enable_grad():
            logits = self.forward(x, training=True)
            losses, grad_logits = loss_grad(logits.detach())
            grads = torch.autograd.grad(logits, self.params, grad_logits, allow_unused=True)
        return losses, [torch.zeros_like(p) if g is None else g for p, g in zip(self.params, grads)]

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """Eval-mode predicted classes ``[K, N]`` of every member on ``x`` (in chunks of ``batch_size``)."""
        out = [self.forward(chunk, training=False).argmax(dim=-1) for chunk in x.split(batch_size)]
        return torch.cat(out, dim=1) if out else torch.empty(self.size, 0, dtype=torch.long)

    def _state(self) -> list[torch.Tensor]:
        """Parameters then floating-point buffers, in ``named_parameters`` / ``named_buffers`` order."""
        return self.params + [b for layer in self.layers for b in layer.buffers]

    @torch.no_grad()
    def finite_members(self) -> torch.Tensor:
        """``[K]`` bool: the members whose parameters and buffers are all finite.

        Fast path: a member's sum over a tensor is finite only if every element is (a NaN or an inf makes
        it NaN or inf), so finite sums everywhere settle it from ``K`` values per tensor; any non-finite
        sum — a bad element, or finite values whose sum overflowed — falls back to the element check."""
        state = self._state()
        if not state:
            return torch.ones(self.size, dtype=torch.bool)
        sums = torch.stack([t.reshape(self.size, -1).sum(dim=1) for t in state])
        ok = torch.isfinite(sums).all(dim=0)
        if bool(ok.all()):
            return ok
        ok = torch.ones(self.size, dtype=torch.bool, device=state[0].device)
        for t in state:
            ok &= torch.isfinite(t.reshape(self.size, -1)).all(dim=1)
        return ok

    @torch.no_grad()
    def first_nonfinite(self, k: int) -> str | None:
        """Name of member ``k``'s first parameter or buffer holding NaN/inf (as `nonfinite_state` names it)."""
        for name, t in zip(self.state_names, self._state()):
            if not bool(torch.isfinite(t[k]).all()):
                return name
        return None

    @torch.no_grad()
    def check_against(self, members: Sequence[nn.Module], x: torch.Tensor, rtol: float = 1e-4) -> None:
        """Raise `UnsupportedArchitecture` unless the stacked eval-mode logits equal each member's own.

        Any error on the probe batch also raises it: the one-by-one path then reports real errors.
        """
        try:
            stacked = self.forward(x, training=False)
            for k, member in enumerate(members):
                was_training = member.training
                member.train(False)  # eval mode
                own = member(x)
                member.train(was_training)
                scale = float(own.abs().max()) + 1.0
                if own.shape != stacked[k].shape or float((own - stacked[k]).abs().max()) > rtol * scale:
                    raise UnsupportedArchitecture(f"stacked forward differs from member {k}'s own forward")
        except UnsupportedArchitecture:
            raise
        except Exception as exc:  # noqa: BLE001 — a chain we misread, or input the networks cannot take
            raise UnsupportedArchitecture(f"stacked forward failed on a probe batch: {type(exc).__name__}: {exc}") from exc
