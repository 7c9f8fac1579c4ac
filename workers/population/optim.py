"""Optimisers over K members' stacked parameters, with `torch.optim` semantics member by member.

Each parameter is one tensor ``[K, ...]`` holding the same parameter of K networks. `StackedSGD` and
`StackedAdam` apply exactly the element-wise update of ``torch.optim.SGD`` (dampening 0, no Nesterov)
and ``torch.optim.Adam`` (betas (0.9, 0.999), eps 1e-8, L2 weight decay added to the gradient, not
AdamW) in their single-tensor (CPU default) form, in the same operation order, so that a member's
slice follows the trajectory a ``torch.optim`` optimiser gives its own network.
`clip_member_grad_norms` is ``torch.nn.utils.clip_grad_norm_`` (2-norm over all of a network's
gradients) computed per member. Members leave the stack (diverged or failed) through ``select``.
"""
from __future__ import annotations

from typing import Sequence

import torch

from evoloss.workers.protocol import OptimSpec

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
CLIP_EPS = 1e-6  # the epsilon clip_grad_norm_ adds to the total norm


def clip_member_grad_norms(grads: Sequence[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale each member's gradients so that their joint 2-norm is at most ``max_norm`` (in place).

    Per member k: ``total_k = ‖(‖g_1[k]‖, …, ‖g_P[k]‖)‖``; ``coef_k = min(max_norm / (total_k + 1e-6), 1)``;
    ``g_p[k] *= coef_k`` — the rule of ``torch.nn.utils.clip_grad_norm_``. Returns ``total`` [K].
    """
    if not max_norm > 0:
        raise ValueError(f"grad_clip={max_norm!r} must be a positive number (or None for no clipping)")
    k = grads[0].shape[0]
    norms = torch.stack([torch.linalg.vector_norm(g.reshape(k, -1), 2, dim=1) for g in grads], dim=1)
    total = torch.linalg.vector_norm(norms, 2, dim=1)
    coef = torch.clamp(max_norm / (total + CLIP_EPS), max=1.0)
    for g in grads:
        g.mul_(coef.view(k, *([1] * (g.dim() - 1))))
    return total


class StackedSGD:
    """``torch.optim.SGD(lr, momentum, weight_decay)`` on stacked parameters ``[K, ...]``.

    Update (single-tensor SGD): ``g ← g + wd·θ``; ``b ← g`` on the first step, else ``b ← μ·b + g``;
    ``θ ← θ − lr·b`` (``θ ← θ − lr·g`` when μ = 0).
    """

    def __init__(self, spec: OptimSpec, params: Sequence[torch.Tensor]) -> None:
        if spec.momentum < 0:
            raise ValueError(f"momentum={spec.momentum!r} must be >= 0")
        self.momentum = float(spec.momentum)
        self.weight_decay = float(spec.weight_decay)
        self.buffers: list[torch.Tensor | None] = [None] * len(params)

    @torch.no_grad()
    def step(self, params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], lr: float) -> None:
        """One update of every member with learning rate ``lr`` (in place on ``params``; ``grads`` may be
        overwritten). ``torch._foreach_*`` runs the same element-wise kernels over the list in one call."""
        params, grads = list(params), list(grads)
        if self.weight_decay != 0:
            grads = torch._foreach_add(grads, params, alpha=self.weight_decay)
        if self.momentum != 0:
            if self.buffers[0] is None:
                self.buffers = [g.detach().clone() for g in grads]
            else:
                torch._foreach_mul_(self.buffers, self.momentum)
                torch._foreach_add_(self.buffers, grads)
            grads = self.buffers
        torch._foreach_add_(params, grads, alpha=-lr)

    def select(self, keep: torch.Tensor) -> None:
        """Keep only the members at indices ``keep`` (their state, in that order)."""
        self.buffers = [None if b is None else b[keep] for b in self.buffers]


class StackedAdam:
    """``torch.optim.Adam(lr, weight_decay)`` (L2 in the gradient) on stacked parameters ``[K, ...]``.

    Adam (Kingma & Ba 2015, Alg. 1) as torch's single-tensor code orders it: ``g ← g + wd·θ``;
    ``m ← lerp(m, g, 1−β1)``; ``v ← β2·v + (1−β2)·g²``; ``θ ← θ − (lr/(1−β1^t))·m / (√v/√(1−β2^t) + ε)``.
    Every member steps together, so one step counter ``t`` serves the stack.
    """

    def __init__(self, spec: OptimSpec, params: Sequence[torch.Tensor]) -> None:
        self.weight_decay = float(spec.weight_decay)
        self.beta1, self.beta2 = ADAM_BETAS
        self.eps = ADAM_EPS
        self.steps = 0
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def step(self, params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], lr: float) -> None:
        """One update of every member with learning rate ``lr`` (in place on ``params``)."""
        self.steps += 1
        bias_correction1 = 1 - self.beta1**self.steps
        bias_correction2_sqrt = (1 - self.beta2**self.steps) ** 0.5
        step_size = lr / bias_correction1
        params, grads = list(params), list(grads)
        if self.weight_decay != 0:
            grads = torch._foreach_add(grads, params, alpha=self.weight_decay)
        torch._foreach_lerp_(self.exp_avg, grads, 1 - self.beta1)
        torch._foreach_mul_(self.exp_avg_sq, self.beta2)
        torch._foreach_addcmul_(self.exp_avg_sq, grads, grads, value=1 - self.beta2)
        denom = torch._foreach_sqrt(self.exp_avg_sq)
        torch._foreach_div_(denom, bias_correction2_sqrt)
        torch._foreach_add_(denom, self.eps)
        torch._foreach_addcdiv_(params, self.exp_avg, denom, value=-step_size)

    def select(self, keep: torch.Tensor) -> None:
        """Keep only the members at indices ``keep`` (their state, in that order)."""
        self.exp_avg = [m[keep] for m in self.exp_avg]
        self.exp_avg_sq = [v[keep] for v in self.exp_avg_sq]


def create_stacked_optimizer(spec: OptimSpec, params: Sequence[torch.Tensor]) -> StackedSGD | StackedAdam:
    """The stacked optimiser named by ``spec.name`` (``"sgd"`` or ``"adam"``)."""
    if spec.name == "sgd":
        return StackedSGD(spec, params)
    if spec.name == "adam":
        return StackedAdam(spec, params)
    raise ValueError(f"optimizer {spec.name!r} is not one of 'sgd', 'adam'")
