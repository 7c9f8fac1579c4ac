"""The population training step under ``torch.compile``, with shapes that never change during a search.

One training step of the stacked network (`workers.population.stack`) — forward, every member's loss,
``torch.func.grad``, per-member gradient clipping and the stacked SGD/Adam update — is one traced
function of tensors only, compiled once (``fullgraph=True``: a graph break is a compile failure, never
a silent slow path) and reused for every later step, generation and task of the same shape:

- **members**: the stack holds ``bucket_size(K)`` slots (the next power of two). Slots without a
  member, and members that left (diverged), stay in the stack with member weight 0: their gradient is
  exactly zero, so nothing they compute reaches a live member (members never mix; stack.py);
- **rows**: the last batch of an epoch is padded to the batch size with copies of its own rows and
  weight 0, so each member's loss is still ``Σ_b w_b ℓ_b / Σ_b w_b`` = the mean over the real rows,
  exactly what ``standard`` computes on the unpadded batch (within float rounding);
- **values that change** (learning rate, Adam's bias corrections, loss parameters) are tensors;
- **steps per call**: `STEPS_PER_CALL` consecutive steps are unrolled into one graph (one guard check
  and one launch for all of them), with a one-step graph for an epoch's remainder.

`compiled_step` keeps one compiled function per step signature (architecture, slots, batch, dtype,
device, loss families, optimiser): a search compiles once per architecture and bucket. Inductor's
artefacts go to ``<data dir>/inductor`` (``TORCHINDUCTOR_CACHE_DIR``, unless already set), so other
actors and resumed runs load them from disk instead of compiling. `compile_count` counts Dynamo's
compiled graphs in this process (a recompile is one more).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Sequence

import torch

from evoloss.workers.population.layers import BatchNorm, Layer
from evoloss.workers.population.optim import ADAM_BETAS, ADAM_EPS, CLIP_EPS
from evoloss.workers.population.stack import StackedNet
from evoloss.workers.protocol import OptimSpec

COMPILE_MODES = ("auto", "on", "off")
STEPS_PER_CALL = 4  # the trainer's default: steps unrolled into one compiled call (BENCHMARKS.md)
RECOMPILE_LIMIT = 64  # Dynamo's default (8) silently runs later signatures eager

Step = Callable[..., torch.Tensor]
_STEPS: dict[tuple, Step] = {}
_WARM: set[tuple] = set()  # keys of `_STEPS` that have run once in this process (compiled, loaded and working)


def bucket_size(k: int) -> int:
    """The stack size for ``k`` members: the next power of two (1, 2, 4, 8, 16, ...)."""
    return 1 << max(k - 1, 0).bit_length()


def compile_count() -> int:
    """Graphs Dynamo has compiled in this process so far (every recompile adds one)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def use_compile(mode: str, device: torch.device) -> bool:
    """Whether ``mode`` compiles on ``device``: ``"on"``, ``"off"``, or ``"auto"`` = on CUDA only.

    ``auto`` leaves CPU runs eager: there the compile warm-up (measured 11-87 s per graph on the 2-core
    reference machine, BENCHMARKS.md "Compiled step") exceeds what it saves on a short search.
    """
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile={mode!r} is not one of {COMPILE_MODES}")
    return mode == "on" or (mode == "auto" and device.type == "cuda")


def not_compilable(layers: Sequence[Layer]) -> str | None:
    """Why a stack cannot take the compiled step, or None (BatchNorm updates running statistics in place)."""
    for layer in layers:
        if isinstance(layer, BatchNorm):
            return f"{type(layer.module).__name__} updates its running statistics in place"
    return None


def configure_cache(data_dir: str | os.PathLike | None) -> str:
    """Point Inductor's on-disk cache at ``<data dir>/inductor`` (unless the environment set one); returns it."""
    from evoloss.workers.datasets.registry import resolve_data_dir

    if not os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(resolve_data_dir(data_dir) / "inductor")
    import torch._dynamo

    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    torch._dynamo.config.accumulated_recompile_limit = max(
        torch._dynamo.config.accumulated_recompile_limit, 4 * RECOMPILE_LIMIT)
    return os.environ["TORCHINDUCTOR_CACHE_DIR"]


@dataclass(frozen=True)
class LossGroup:
    """The slots of one loss family: ``fn(logits[g·B, C], targets[g·B], **params[g·B])`` per sample; a
    batch family (``batch``) gets ``[g, B, C]``, ``[g, B]`` and the row weights as its ``mask``."""

    fn: Callable[..., torch.Tensor]
    param_names: tuple[str, ...]
    slots: tuple[int, ...]
    batch: bool = False


@dataclass(frozen=True)
class StepPlan:
    """What a compiled step is specialised on (everything else is a tensor argument)."""

    layers: tuple[Layer, ...]
    param_counts: tuple[int, ...]
    slots: int
    groups: tuple[LossGroup, ...]
    optim: OptimSpec
    grad_clip: float | None

    @cached_property
    def signature(self) -> tuple:
        """Architecture, loss groups and optimiser as plain values (computed once per plan)."""
        arch = tuple((type(layer).__name__, repr(layer.module)) for layer in self.layers)
        groups = tuple((g.fn.__module__, g.fn.__qualname__, g.param_names, g.slots) for g in self.groups)
        optim = (self.optim.name, self.optim.momentum, self.optim.weight_decay)
        return arch, groups, optim

    def key(self, x: torch.Tensor, backend: str) -> tuple:
        arch, groups, optim = self.signature
        return (arch, self.slots, tuple(x.shape), x.dtype, str(x.device), groups, optim, self.grad_clip, backend)


def compiled_step(plan: StepPlan, xs: torch.Tensor, backend: str = "inductor") -> tuple[tuple, Step]:
    """``(signature key, the compiled training steps)`` for ``plan`` on stacks of batches like ``xs``
    ``[steps, B, ...]`` (built once per signature: the number of steps a call runs is part of it)."""
    key = plan.key(xs, backend)
    if key not in _STEPS:
        _STEPS[key] = torch.compile(make_step(plan, xs.shape[0]), backend=backend, fullgraph=True, dynamic=False)
    return key, _STEPS[key]


def compiled_predict(plan: StepPlan, x: torch.Tensor, backend: str = "inductor") -> tuple[tuple, Step]:
    """``(signature key, predict)`` with ``predict(params, x) -> classes [S, rows]`` (eval mode) for chunks
    like ``x``, compiled once per signature."""
    key = (*plan.key(x, backend), "predict")
    if key not in _STEPS:
        k, layers, counts = plan.slots, plan.layers, plan.param_counts

        def predict(params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
            h, layout, start = x, "shared", 0
            for layer, n in zip(layers, counts):
                h, layout = layer.apply(params[start:start + n], (), h, layout, k, False)
                start += n
            return h.argmax(dim=1)  # h is [S, C, rows]

        _STEPS[key] = torch.compile(predict, backend=backend, fullgraph=True, dynamic=False)
    return key, _STEPS[key]


def make_step(plan: StepPlan, steps: int = 1) -> Step:
    """``run(params, state, scalars, loss_sum, xs, ys, row_ws, member_w, lr, loss_args)``: ``steps``
    consecutive updates of every slot, on the batches ``xs[i], ys[i]`` (one guard check and one call of
    the compiled code for all of them: on CPU the per-call overhead is a fifth of a small step).

    ``params``: the stacked parameters (updated in place); ``state``: SGD momentum buffers, or Adam's
    ``exp_avg`` then ``exp_avg_sq`` lists; ``scalars`` ``[steps, 2]``: Adam's ``[step_size,
    bias_correction2_sqrt]`` of each step (unused by SGD); ``loss_sum`` ``[S]`` accumulates each slot's
    batch losses; ``row_ws`` ``[steps, B]`` and ``member_w`` ``[S]`` are the row and member weights (0 =
    padding); ``loss_args``: each group's parameter tensors ``[g·B]``.
    """
    k, layers, counts = plan.slots, plan.layers, plan.param_counts
    order = [s for g in plan.groups for s in g.slots]
    inverse = [order.index(s) for s in range(k)]

    def losses_of(params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor, row_w: torch.Tensor,
                  loss_args: list[torch.Tensor]) -> torch.Tensor:
        h, layout, start = x, "shared", 0
        for layer, n in zip(layers, counts):
            h, layout = layer.apply(params[start:start + n], (), h, layout, k, True)
            start += n
        logits = h.transpose(1, 2)  # [S, B, C]
        batch, classes = logits.shape[1], logits.shape[2]
        parts, arg = [], 0
        for group in plan.groups:
            g = len(group.slots)
            chunk = logits.reshape(k * batch, classes) if group.slots == tuple(range(k)) else \
                logits[list(group.slots)].reshape(g * batch, classes)
            kwargs = dict(zip(group.param_names, loss_args[arg:arg + len(group.param_names)]))
            arg += len(group.param_names)
            if group.batch:  # the padding rows stay out of the batch statistic
                kwargs = {name: v.reshape(g, batch) for name, v in kwargs.items()}
                per_sample = group.fn(chunk.reshape(g, batch, classes), y.expand(g, batch),
                                      mask=row_w.expand(g, batch), **kwargs)
            else:
                per_sample = group.fn(chunk, y.repeat(g), **kwargs).reshape(g, batch)
            parts.append((per_sample * row_w).sum(dim=1) / row_w.sum())  # the mean over the real rows
        values = torch.cat(parts) if len(parts) > 1 else parts[0]
        return values if order == list(range(k)) else values[inverse]

    def total_loss(params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor, row_w: torch.Tensor,
                   member_w: torch.Tensor, loss_args: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        values = losses_of(params, x, y, row_w, loss_args)
        return (values * member_w).sum(), values.detach()  # ∂/∂θ_k = member_w[k]·∂loss_k/∂θ_k

    def step(params: list[torch.Tensor], state: list[torch.Tensor], scalars: torch.Tensor, loss_sum: torch.Tensor,
             x: torch.Tensor, y: torch.Tensor, row_w: torch.Tensor, member_w: torch.Tensor, lr: torch.Tensor,
             loss_args: list[torch.Tensor]) -> None:
        grads, values = torch.func.grad(total_loss, has_aux=True)(params, x, y, row_w, member_w, loss_args)
        grads = list(grads)
        if plan.grad_clip is not None:
            _clip(grads, plan.grad_clip, k)
        _update(plan.optim, params, grads, state, lr, scalars)
        loss_sum.add_(values)

    def run(params: list[torch.Tensor], state: list[torch.Tensor], scalars: torch.Tensor, loss_sum: torch.Tensor,
            xs: torch.Tensor, ys: torch.Tensor, row_ws: torch.Tensor, member_w: torch.Tensor, lr: torch.Tensor,
            loss_args: list[torch.Tensor]) -> None:
        for i in range(steps):  # unrolled: the steps are one graph
            step(params, state, scalars[i], loss_sum, xs[i], ys[i], row_ws[i], member_w, lr, loss_args)

    return run


def _clip(grads: list[torch.Tensor], max_norm: float, k: int) -> None:
    """`optim.clip_member_grad_norms` (``clip_grad_norm_`` per member), traced."""
    norms = torch.stack([torch.linalg.vector_norm(g.reshape(k, -1), 2, dim=1) for g in grads], dim=1)
    coef = torch.clamp(max_norm / (torch.linalg.vector_norm(norms, 2, dim=1) + CLIP_EPS), max=1.0)
    for i, g in enumerate(grads):
        grads[i] = g * coef.view(k, *([1] * (g.dim() - 1)))


def _update(optim: OptimSpec, params: list[torch.Tensor], grads: list[torch.Tensor], state: list[torch.Tensor],
            lr: torch.Tensor, scalars: torch.Tensor) -> None:
    """`optim.StackedSGD` / `optim.StackedAdam`'s update, traced. SGD's buffers start at zero, so the
    first step's ``b ← μ·0 + g`` is torch's ``b ← g``."""
    n = len(params)
    if optim.weight_decay != 0:
        grads = [g + optim.weight_decay * p for g, p in zip(grads, params)]
    if optim.name == "sgd":
        if optim.momentum != 0:
            for b, g in zip(state[:n], grads):
                b.mul_(optim.momentum).add_(g)
            grads = state[:n]
        for p, g in zip(params, grads):
            p.sub_(lr * g)
        return
    beta1, beta2 = ADAM_BETAS
    exp_avg, exp_avg_sq = state[:n], state[n:2 * n]
    step_size, bias_correction2_sqrt = scalars[0], scalars[1]
    for p, g, m, v in zip(params, grads, exp_avg, exp_avg_sq):
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        p.sub_(step_size * (m / (v.sqrt() / bias_correction2_sqrt + ADAM_EPS)))  # addcdiv_(value=-step_size)


class CompiledSteps:
    """The compiled steps bound to one run: its stacked net's parameters, optimiser state and weights.

    Two compiled functions share them: one runs ``chunk`` steps per call (most of an epoch), the other
    one step (an epoch's remainder, and a ``max_steps`` cut); `steps` uses both.

    Args:
        net: the stacked network over ``bucket_size(K)`` slots (slots ``K…`` are copies of member 0).
        families, params: each slot's loss family and float parameters (`MemberLosses` validated them).
        live: how many leading slots hold members (the rest get member weight 0).
        x_like: a training batch (its shape, dtype and device fix the compiled signature).
        chunk: steps per call of the unrolled function (1: only the one-step function).
    """

    def __init__(self, net: StackedNet, families: Sequence, params: Sequence[dict], live: int, optim: OptimSpec,
                 grad_clip: float | None, x_like: torch.Tensor, backend: str, chunk: int = 1) -> None:
        if chunk < 1:
            raise ValueError(f"chunk={chunk!r} must be a positive number of steps")
        dev, dtype, batch = x_like.device, net.params[0].dtype, x_like.shape[0]
        slots = net.size
        net.set_requires_grad(False)  # func.grad differentiates the explicit inputs
        self.net, self.optim, self.params, self.chunk = net, optim, net.params, chunk
        groups: dict[str, list[int]] = {}
        for s, fam in enumerate(families):
            groups.setdefault(fam.name, []).append(s)
        by_name = {fam.name: fam for fam in families}
        self.plan = StepPlan(
            layers=tuple(net.layers), param_counts=tuple(len(layer.params) for layer in net.layers), slots=slots,
            groups=tuple(LossGroup(by_name[n].fn, tuple(by_name[n].param_names), tuple(ss), by_name[n].batch)
                         for n, ss in groups.items()),
            optim=optim, grad_clip=grad_clip,
        )
        self.loss_args = [torch.tensor([params[s][p] for s in ss], dtype=dtype, device=dev).repeat_interleave(batch)
                          for n, ss in groups.items() for p in by_name[n].param_names]
        zeros = [torch.zeros_like(p) for p in self.params]
        if optim.name == "adam":
            self.state = zeros + [torch.zeros_like(p) for p in self.params]
        else:
            self.state = zeros if optim.momentum != 0 else []
        self.member_w = torch.zeros(slots, dtype=dtype, device=dev)
        self.member_w[:live] = 1
        self.lr = torch.zeros((), dtype=dtype, device=dev)
        self._lr_value = 0.0
        self.adam_steps = 0
        self._scalars = {n: torch.ones(n, 2, dtype=dtype, device=dev) for n in {1, chunk}}
        compiled = {n: compiled_step(self.plan, x_like.expand(n, *x_like.shape), backend) for n in {1, chunk}}
        self._keys = {n: key for n, (key, _) in compiled.items()}
        self.fns = {n: fn for n, (_, fn) in compiled.items()}
        self.backend = backend
        self._padded: dict[int, torch.Tensor] = {}  # id of an eval split -> its rows padded to whole chunks
        self._predict: dict[tuple, tuple[tuple, Step]] = {}  # chunk shape -> compiled_predict's (key, fn)

    def warm_up(self, x: torch.Tensor, y: torch.Tensor, row_w: torch.Tensor, eval_x: torch.Tensor | None = None,
                eval_rows: int = 0) -> None:
        """Compile (or load from the caches) both step functions by running them on copies of the state, and
        the prediction on ``eval_x`` chunks of ``eval_rows`` when given; raises on failure. A function that
        already ran in this process is not run again (its compile cannot fail any more)."""
        for n, fn in self.fns.items():
            if self._keys[n] in _WARM:
                continue
            params, state = [p.clone() for p in self.params], [s.clone() for s in self.state]
            xs, ys, ws = (t.expand(n, *t.shape).contiguous() for t in (x, y, row_w))
            fn(params, state, self._scalars[n].clone(), torch.zeros_like(self.member_w), xs, ys, ws, self.member_w,
               self.lr, self.loss_args)
            _WARM.add(self._keys[n])
        if eval_x is not None and len(eval_x):
            chunk_x = eval_x[:min(eval_rows, len(eval_x))]
            key, predict = self._predict_fn(chunk_x)
            if key not in _WARM:
                with torch.no_grad():
                    predict(self.params, chunk_x)
                _WARM.add(key)

    def _predict_fn(self, chunk_x: torch.Tensor) -> tuple[tuple, Step]:
        """`compiled_predict` for chunks like ``chunk_x``, looked up once per chunk shape of this run."""
        shape = tuple(chunk_x.shape)
        if shape not in self._predict:
            self._predict[shape] = compiled_predict(self.plan, chunk_x, self.backend)
        return self._predict[shape]

    def steps(self, xs: torch.Tensor, ys: torch.Tensor, row_ws: torch.Tensor, lr: float,
              loss_sum: torch.Tensor) -> None:
        """``len(xs)`` updates of every slot, on the batches ``xs[i], ys[i]`` (row weights ``row_ws[i]``) in
        order, ``chunk`` at a time and the remainder one by one; adds each batch loss to ``loss_sum``."""
        if lr != self._lr_value:  # the schedule changes it once per epoch at most
            self.lr.fill_(lr)
            self._lr_value = lr
        start = 0
        while start < len(xs):
            n = self.chunk if len(xs) - start >= self.chunk else 1
            scalars = self._scalars[n]
            if self.optim.name == "adam":  # StackedAdam's bias corrections of each step, as tensors
                beta1, beta2 = ADAM_BETAS
                for i in range(n):
                    t = self.adam_steps + i + 1
                    scalars[i, 0], scalars[i, 1] = lr / (1 - beta1**t), (1 - beta2**t) ** 0.5
                self.adam_steps += n
            end = start + n
            self.fns[n](self.params, self.state, scalars, loss_sum, xs[start:end], ys[start:end], row_ws[start:end],
                        self.member_w, self.lr, self.loss_args)
            start = end

    @torch.no_grad()
    def predict(self, x: torch.Tensor, rows: int) -> torch.Tensor:
        """Eval-mode classes ``[S, N]`` of every slot on ``x``, in compiled chunks of ``rows`` (the last one
        padded with copies of the first rows, whose predictions are dropped)."""
        n = x.shape[0]
        rows = min(rows, n)
        key = id(x)
        if key not in self._padded:
            pad = -n % rows
            self._padded[key] = torch.cat([x, x[torch.arange(pad, device=x.device) % n]]) if pad else x
        _, fn = self._predict_fn(x[:rows])
        out = [fn(self.params, chunk) for chunk in self._padded[key].split(rows)]
        return torch.cat(out, dim=1)[:, :n]

    @torch.no_grad()
    def retire(self, slot: int) -> None:
        """Take ``slot``'s member out of training: weight 0, parameters and optimiser state zeroed (finite)."""
        self.member_w[slot] = 0
        for t in self.params + self.state:
            t[slot].zero_()
        for layer in self.net.layers:
            for b in layer.buffers:
                b[slot].zero_()
