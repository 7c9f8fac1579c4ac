"""Adaptive robust loss: one global Λ per loss learned online from a clean meta set.

shu-adaptive-robust-loss, Alg. 1 (ARL): at each step t

    w̃(Λ) = w − α ∇w L_train(D_n, w; Λ)                   (Eq. 9, the virtual step)
    Λ ← Λ − β ∇Λ L_meta(D_m, w̃(Λ))                       (Eq. 8, CE on a clean meta batch, Eq. 7)
    w ← w − α ∇w L_train(D_n, w; Λ)                       (Eq. 10, the real step with the new Λ)

with L_train the robust loss of Eqs. 2–5 (A-GCE: q; A-SL: γ1, γ2; A-Bi-Tempered: t1, t2;
A-PolySoft: λ, d). Choices where the paper is silent, all options:

- Eq. 8 is taken on Λ itself: Λ ← Π(Λ − β ∇Λ L_meta), Π the projection onto the family's range
  (`workers.meta.bounds.Bounds.project`: open ends pulled inside by the parameter's margin). Inside
  the range one step moves Λ by exactly −β∇Λ L_meta. (An earlier version stepped a raw z with
  Λ = σ(z) or softplus(z), which multiplies every Λ step by (dΛ/dz)², ≈0.04 for GCE's q: Λ did not move.)
- β = the classifier's current learning rate ("the learning rate setting is the same as the
  classifier", §4.1), or ``meta_lr``.
- Initial Λ: the spec's values, else the family defaults (GCE q 0.7, Bi-Tempered t1 0.8, t2 1.2 …).
  Parameters that are not learned (SL's A) keep the spec's value.
- The paper's classifier setting (SGD lr 0.1, momentum 0.9, wd 1e-3, batch 100, lr ×0.1 at 2/3 and
  5/6 of the run; meta set 1,000 clean samples) is ``protocol="paper"``
  (`workers.meta.paper_protocols.PAPER_PROTOCOLS["adaptive"]`); the default follows the task's budget.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch

from evoloss.losses import LossSpec, get_family
from evoloss.workers.meta.bounds import Bounds
from evoloss.workers.meta.lookahead import LookaheadConfig, MetaGradient, meta_gradient
from evoloss.workers.meta.meta_trainer import MetaTrainer, require_float_params
from evoloss.workers.meta.method import Batch, MetaMethod
from evoloss.workers.meta.training import MetaRun
from evoloss.workers.trainer import register_trainer


# trainer name -> (loss family, the parameters Λ it learns)
ADAPTIVE_TRAINERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "adaptive-gce": ("gce", ("q",)),
    "adaptive-sl": ("sce", ("alpha", "beta")),
    "adaptive-bitempered": ("bitempered", ("t1", "t2")),
    "adaptive-polysoft": ("polysoft", ("lam", "d")),
}


class AdaptiveLoss(MetaMethod):
    """One global, bounded Λ of a loss family, learned by the look-ahead (Alg. 1)."""

    def __init__(
        self,
        family: str,
        learned: Sequence[str],
        init: Mapping[str, float],
        *,
        meta_lr: float | None = None,
        lookahead: LookaheadConfig = LookaheadConfig(),
    ) -> None:
        fam = get_family(family)
        full = fam.validate(init)
        if not learned or any(name not in fam.param_names for name in learned):
            raise ValueError(f"learned={tuple(learned)!r} must name parameters of {family!r}: {fam.param_names}")
        if meta_lr is not None and not (isinstance(meta_lr, (int, float)) and meta_lr > 0 and math.isfinite(meta_lr)):
            raise ValueError(f"meta_lr={meta_lr!r} must be a positive number (or None: the classifier's lr)")
        self.family, self.fn, self.lookahead, self.meta_lr = family, fam.fn, lookahead, meta_lr
        self.bounds = {name: Bounds.of(fam.param(name)) for name in learned}
        self.init = {name: self.bounds[name].check(float(full[name])) for name in learned}
        self.fixed = {k: v for k, v in full.items() if k not in self.bounds}
        self.lam: dict[str, torch.Tensor] = {}

    def init_meta_parameters(self, dtype: torch.dtype, device: torch.device | str) -> None:
        """Create Λ (0-d leaf tensors at the initial values) for the look-ahead to differentiate."""
        self.lam = {name: torch.tensor(self.init[name], dtype=dtype, device=device, requires_grad=True)
                    for name in self.bounds}

    def values(self) -> dict[str, torch.Tensor]:
        """The current Λ (0-d leaf tensors)."""
        return dict(self.lam)

    def step(self, grads: Sequence[torch.Tensor], beta: float) -> None:
        """Eq. 8 on Λ, then the projection onto the bounds: Λ ← Π(Λ − β ∇Λ L_meta)."""
        with torch.no_grad():
            for (name, lam), g in zip(self.lam.items(), grads):
                lam.sub_(beta * g)
                self.bounds[name].project(lam)

    def per_sample_loss(
        self, logits: torch.Tensor, targets: torch.Tensor, values: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        """The robust loss of Eqs. 2–5 per sample with Λ = ``values``."""
        return self.fn(logits, targets, **self.fixed, **values)

    def meta_gradient(
        self, model: torch.nn.Module, batch: Batch, x_meta: torch.Tensor, y_meta: torch.Tensor, lr: float,
        optimizer: torch.optim.Optimizer | None = None,
    ) -> MetaGradient:
        """∇Λ L_meta(w̃(Λ)), one gradient per learned parameter in `lam` order (Eqs. 7–9)."""
        def objective(logits: torch.Tensor) -> torch.Tensor:
            return self.per_sample_loss(logits, batch.y, self.values()).mean()

        return meta_gradient(model, list(self.lam.values()), objective, batch.x, x_meta, y_meta, lr,
                             config=self.lookahead, optimizer=optimizer)

    # --- MetaMethod hooks ---------------------------------------------------------------------
    def prepare(self, run: MetaRun) -> None:
        param = next(run.model.parameters())
        self.init_meta_parameters(param.dtype, param.device)

    def meta_step(
        self, run: MetaRun, batch: Batch, x_meta: torch.Tensor, y_meta: torch.Tensor, lr: float
    ) -> MetaGradient:
        result = self.meta_gradient(run.model, batch, x_meta, y_meta, lr, run.optimizer)
        self.step(result.grads, self.meta_lr or lr)
        return result

    def train_loss(self, run: MetaRun, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        with torch.no_grad():
            values = self.values()
        return self.per_sample_loss(logits, batch.y, values).mean()

    def epoch_quantities(self, run: MetaRun) -> dict[str, object]:
        return {name: float(v.detach()) for name, v in self.values().items()}

    def final_extra(self, run: MetaRun) -> dict[str, object]:
        return {"lambda_init": dict(self.init),
                "lambda_final": {name: float(v.detach()) for name, v in self.values().items()},
                "learned": list(self.bounds)}


class AdaptiveTrainer(MetaTrainer):
    """``adaptive-<loss>``: specs are optional — none gives one run from the family defaults; each
    given spec (of the trainer's family) gives one run starting from its values. Option:
    ``meta_lr`` (None: the classifier's current learning rate, as in the paper)."""

    paper_key = "adaptive"

    def __init__(
        self, *, name: str, family: str, learned: tuple[str, ...], meta_lr: float | None = None, **options
    ) -> None:
        self.name = name  # before the base checks, which name the trainer in their errors
        super().__init__(**options)
        self.name, self.family, self.learned, self.meta_lr = name, family, learned, meta_lr

    def default_spec(self) -> LossSpec:
        return LossSpec(self.family)

    def make_method(self, spec: LossSpec) -> AdaptiveLoss:
        if spec.family != self.family:
            raise ValueError(
                f"trainer {self.name!r} learns the {self.family!r} loss; got a spec of family {spec.family!r} "
                f"(pass LossSpec({self.family!r}, ...) or no spec)"
            )
        init = require_float_params(self.name, spec)
        return AdaptiveLoss(self.family, self.learned, init, meta_lr=self.meta_lr, lookahead=self.lookahead)


def _register(name: str, family: str, learned: tuple[str, ...]) -> None:
    @register_trainer(name)
    def create(**options) -> AdaptiveTrainer:
        return AdaptiveTrainer(name=name, family=family, learned=learned, **options)


for _name, (_family, _learned) in ADAPTIVE_TRAINERS.items():
    _register(_name, _family, _learned)
