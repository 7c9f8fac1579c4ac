"""The one-step look-ahead shared by every meta-learned trainer
(the online one-step look-ahead of shu Alg. 1, ding Algs. 1–2, zhou Alg. 1, jiang and Meta-Weight-Net).

All five methods (shu-adaptive-robust-loss Eqs. 8–9, ding-narl-adjuster Eqs. 10–11,
zhou-l2b Eqs. 5–7, jiang-dynamic-loss Eqs. 7–8, Meta-Weight-Net) take the same online
bilevel step:

    θ'(Λ) = θ − lr · d(∇θ L_train(θ; Λ))          (virtual update, graph kept)
    L_meta(Λ) = CE(f_θ'(x_meta), y_meta)           (or a caller-given meta-loss)
    returns ∇Λ L_meta

``d`` is the plain gradient (``mode="sgd"``) or the direction the live ``torch.optim.SGD`` would
take (``mode="optimizer"``: weight decay and momentum buffer, dampening, Nesterov — the references
differ on this, so it is a switch). The virtual step goes through
``torch.func.functional_call`` and ``torch.autograd.grad(create_graph=True)`` (measured faster
than nested ``torch.func.grad`` on this CPU). The real model is never touched: parameters are
read, never written; buffers (BatchNorm running statistics) are cloned before the virtual
forwards; the optimiser state is only read; ``.grad`` fields are not accumulated into.

``head_only=True`` virtually updates only the last ``nn.Linear`` (whose output must be the
model's output): the body runs once per batch without a graph and the look-ahead is a linear
layer, ≈1.4× a plain step instead of ≈3–7×. ``every`` (T_meta, NARL: 10) says how often a
trainer takes a meta step; `LookaheadConfig.due` answers it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

TrainObjective = Callable[[torch.Tensor], torch.Tensor]
MetaLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LOOKAHEAD_MODES = ("sgd", "optimizer")


@dataclass(frozen=True)
class LookaheadConfig:
    """How the virtual step is taken.

    mode: ``"sgd"`` (θ' = θ − lr·∇θ) or ``"optimizer"`` (the live SGD's direction).
    head_only: virtually update only the last ``nn.Linear`` (the classifier head).
    every: take a meta step every ``every`` training steps (T_meta).
    """

    mode: str = "sgd"
    head_only: bool = False
    every: int = 1

    def __post_init__(self) -> None:
        if self.mode not in LOOKAHEAD_MODES:
            raise ValueError(f"LookaheadConfig.mode={self.mode!r} is not one of {LOOKAHEAD_MODES}")
        if not isinstance(self.head_only, bool):
            raise TypeError(f"LookaheadConfig.head_only must be a bool; got {self.head_only!r}")
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise ValueError(f"LookaheadConfig.every={self.every!r} must be an integer >= 1 (T_meta)")

    def due(self, step: int) -> bool:
        """True when training step ``step`` (0-based) takes a meta step (Alg. 1 of ding: t % T_meta == 0)."""
        return step % self.every == 0


@dataclass(frozen=True)
class MetaGradient:
    """What one look-ahead produced: ∇Λ L_meta per meta-parameter, and the two losses seen."""

    grads: tuple[torch.Tensor, ...]
    meta_loss: float
    train_loss: float


def meta_gradient(
    model: nn.Module,
    meta_params: Sequence[torch.Tensor],
    train_objective: TrainObjective,
    x_train: torch.Tensor,
    x_meta: torch.Tensor,
    y_meta: torch.Tensor,
    lr: float,
    *,
    config: LookaheadConfig = LookaheadConfig(),
    optimizer: torch.optim.Optimizer | None = None,
    meta_loss: MetaLoss | None = None,
) -> MetaGradient:
    """∇Λ L_meta(θ'(Λ)) for one training batch and one meta batch (the shared online step).

    Args:
        model: the real network; its parameters, buffers and ``.grad`` are left unchanged.
        meta_params: the tensors Λ (``requires_grad=True``) that ``train_objective`` depends on.
        train_objective: ``logits of x_train -> scalar`` training loss L_train(θ; Λ).
        x_train, x_meta, y_meta: the training batch and the clean meta batch.
        lr: the step size α of the virtual update (trainers pass the live learning rate).
        config: plain-SGD vs live-optimiser look-ahead, head-only.
        optimizer: the live ``torch.optim.SGD`` (required when ``config.mode == "optimizer"``).
        meta_loss: ``(logits, targets) -> scalar``; default mean cross entropy.

    Returns:
        `MetaGradient` with one gradient per meta-parameter (zeros where Λ had no influence).
    """
    _check_inputs(meta_params, lr, config, optimizer)
    meta_params = tuple(meta_params)
    step = _head_lookahead if config.head_only else _full_lookahead
    virtual_logits, train_loss = step(model, train_objective, x_train, x_meta, lr, config, optimizer)
    loss = (meta_loss or F.cross_entropy)(virtual_logits, y_meta)
    if loss.dim() != 0:
        raise ValueError(f"meta_loss must return a scalar; got shape {tuple(loss.shape)}")
    grads = torch.autograd.grad(loss, meta_params, allow_unused=True)
    grads = tuple(torch.zeros_like(p) if g is None else g for p, g in zip(meta_params, grads))
    return MetaGradient(grads=grads, meta_loss=float(loss.detach()), train_loss=float(train_loss.detach()))


def apply_meta_gradient(
    meta_optimizer: torch.optim.Optimizer, meta_params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor]
) -> None:
    """One step of ``meta_optimizer`` on Λ with the given gradients (Eq. 8 of shu / Eq. 10 of ding)."""
    for p, g in zip(meta_params, grads):
        p.grad = g.detach().clone()
    meta_optimizer.step()
    for p in meta_params:
        p.grad = None


def _check_inputs(
    meta_params: Sequence[torch.Tensor], lr: float, config: LookaheadConfig, optimizer: torch.optim.Optimizer | None
) -> None:
    """Reject what the look-ahead cannot do, naming the field and the fix."""
    if not isinstance(config, LookaheadConfig):
        raise TypeError(f"config must be a LookaheadConfig; got {type(config).__name__}")
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"lr={lr!r}: the virtual step size must be a positive number")
    if len(meta_params) == 0 or not all(isinstance(p, torch.Tensor) and p.requires_grad for p in meta_params):
        raise ValueError("meta_params must be a non-empty sequence of tensors with requires_grad=True")
    if config.mode == "optimizer":
        if not isinstance(optimizer, torch.optim.SGD):
            raise ValueError(
                f"mode='optimizer' looks ahead with the live torch.optim.SGD; got {type(optimizer).__name__}. "
                "Pass the SGD optimiser, or use LookaheadConfig(mode='sgd') (e.g. for Adam-trained models)"
            )
        if any(g.get("maximize", False) for g in optimizer.param_groups):
            raise ValueError("mode='optimizer' does not support SGD(maximize=True); use mode='sgd'")


def _full_lookahead(
    model: nn.Module,
    train_objective: TrainObjective,
    x_train: torch.Tensor,
    x_meta: torch.Tensor,
    lr: float,
    config: LookaheadConfig,
    optimizer: torch.optim.Optimizer | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Virtually update every trainable parameter; return (meta logits at θ', train loss)."""
    params = dict(model.named_parameters())
    trainable = {k: p for k, p in params.items() if p.requires_grad}
    buffers = {k: b.clone() for k, b in model.named_buffers()}
    logits = functional_call(model, (params, buffers), (x_train,))
    train_loss = _scalar_objective(train_objective, logits)
    grads = torch.autograd.grad(train_loss, tuple(trainable.values()), create_graph=True, allow_unused=True)
    updated = dict(params)
    for (name, p), g in zip(trainable.items(), grads):
        updated[name] = p - lr * _direction(p, g, config, optimizer)
    return functional_call(model, (updated, buffers), (x_meta,)), train_loss


def _head_lookahead(
    model: nn.Module,
    train_objective: TrainObjective,
    x_train: torch.Tensor,
    x_meta: torch.Tensor,
    lr: float,
    config: LookaheadConfig,
    optimizer: torch.optim.Optimizer | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Virtually update only the last ``nn.Linear``; the body is a constant feature map."""
    head = classifier_head(model)
    feats_train = _head_inputs(model, head, x_train)
    feats_meta = _head_inputs(model, head, x_meta)
    head_params = [p for p in (head.weight, head.bias) if p is not None and p.requires_grad]
    if not head_params:
        raise ValueError("head_only look-ahead: the last nn.Linear has no trainable parameters")
    train_loss = _scalar_objective(train_objective, F.linear(feats_train, head.weight, head.bias))
    grads = torch.autograd.grad(train_loss, head_params, create_graph=True, allow_unused=True)
    new = {id(p): p - lr * _direction(p, g, config, optimizer) for p, g in zip(head_params, grads)}
    weight = new.get(id(head.weight), head.weight)
    bias = None if head.bias is None else new.get(id(head.bias), head.bias)
    return F.linear(feats_meta, weight, bias), train_loss


def classifier_head(model: nn.Module) -> nn.Linear:
    """The last ``nn.Linear`` of ``model`` in module order (the classifier head)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"head_only look-ahead needs an nn.Linear head; {type(model).__name__} has none")
    return linears[-1]


def check_head_only(model: nn.Module, x: torch.Tensor) -> None:
    """Raise ValueError unless ``model``'s last ``nn.Linear`` produces its output for inputs like ``x``."""
    _head_inputs(model, classifier_head(model), x)


def _head_inputs(model: nn.Module, head: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """The head's input features for ``x``, computed without a graph and with cloned buffers."""
    captured: dict[str, torch.Tensor] = {}

    def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        captured["in"], captured["out"] = inputs[0], output

    handle = head.register_forward_hook(hook)
    try:
        with torch.no_grad():
            params = dict(model.named_parameters())
            buffers = {k: b.clone() for k, b in model.named_buffers()}
            out = functional_call(model, (params, buffers), (x,))
    finally:
        handle.remove()
    if "out" not in captured or captured["out"] is not out:
        raise ValueError(
            f"head_only look-ahead needs the last nn.Linear of {type(model).__name__} to produce the model's "
            "output (logits); use LookaheadConfig(head_only=False) for this architecture"
        )
    return captured["in"].detach()


def _scalar_objective(train_objective: TrainObjective, logits: torch.Tensor) -> torch.Tensor:
    loss = train_objective(logits)
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        raise ValueError("train_objective must return a scalar tensor (the batch training loss)")
    return loss


def _direction(
    p: torch.Tensor, g: torch.Tensor | None, config: LookaheadConfig, optimizer: torch.optim.Optimizer | None
) -> torch.Tensor:
    """The update direction d with θ' = θ − lr·d (plain gradient, or the live SGD's step)."""
    if g is None:
        g = torch.zeros_like(p)
    if config.mode == "sgd":
        return g
    group = _group_of(optimizer, p)
    if group["weight_decay"]:
        g = g + group["weight_decay"] * p
    momentum = group["momentum"]
    if not momentum:
        return g
    buf = optimizer.state.get(p, {}).get("momentum_buffer")
    # torch.optim.SGD: the first step initialises the buffer with the gradient itself
    buf = g if buf is None else momentum * buf + (1.0 - group["dampening"]) * g
    return g + momentum * buf if group["nesterov"] else buf


def _group_of(optimizer: torch.optim.Optimizer, p: torch.Tensor) -> dict:
    for group in optimizer.param_groups:
        if any(q is p for q in group["params"]):
            return group
    raise ValueError("mode='optimizer': a model parameter is not managed by the given optimiser")
