"""Meta-Weight-Net: a 1 → 100 → 1 network maps a sample's loss to its weight (Shu et al., Meta-Weight-Net, NeurIPS 2019).

The common meta-learned reweighting baseline (Shu et al., 2019; the baseline of every paper here):

    w_i = V(ℓ_i; Θ) = σ(W2ᵀ ReLU(W1 ℓ_i + b1) + b2),   ℓ_i the per-sample base loss, detached
    θ'(Θ) = θ − α ∇θ (1/n) Σ_i w_i ℓ_i(θ)              (the virtual step, `lookahead`)
    Θ ← Adam step on ∇Θ CE(f_θ'(x_meta), y_meta)
    θ ← θ − α ∇θ (1/n) Σ_i V(ℓ_i; Θ) ℓ_i(θ)            (the real step, weights recomputed, no graph)

Choices: the weighted loss is the plain batch mean of w_i ℓ_i (no renormalisation of the weights;
``normalize=True`` divides by Σ w_i instead); the weight net's input ℓ_i is detached (REFERENCE
§4); meta optimiser Adam lr 1e-3, weight decay 1e-4; the net's initialisation is PyTorch's default
drawn from a generator seeded by the task seed. The base loss ℓ is the spec's family (default CE).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from evoloss.losses import LossSpec, get_family
from evoloss.workers.meta.lookahead import LookaheadConfig, MetaGradient, apply_meta_gradient, meta_gradient
from evoloss.workers.meta.meta_trainer import MetaTrainer, require_float_params
from evoloss.workers.meta.method import Batch, MetaMethod, derived_seed, seeded_linear
from evoloss.workers.meta.training import MetaRun
from evoloss.workers.trainer import register_trainer


HIDDEN = 100


class WeightNet(nn.Module):
    """V(ℓ; Θ): per-sample loss [B] -> weight in (0, 1) [B] (1 → hidden → 1, ReLU, sigmoid)."""

    def __init__(self, seed: int, hidden: int = HIDDEN) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.hidden, self.out = seeded_linear(1, hidden, g), seeded_linear(hidden, 1, g)

    def forward(self, loss: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.out(F.relu(self.hidden(loss[:, None]))))[:, 0]


class MetaWeightNet(MetaMethod):
    """Sample reweighting by a meta-learned weight net on the per-sample base loss."""

    def __init__(
        self, spec: LossSpec, *, seed: int = 0, meta_lr: float = 1e-3, meta_weight_decay: float = 1e-4,
        normalize: bool = False, lookahead: LookaheadConfig = LookaheadConfig(),
    ) -> None:
        fam = get_family(spec.family)
        self.fn, self.params = fam.fn, fam.validate(spec.params)
        self.seed, self.meta_lr, self.meta_weight_decay = seed, meta_lr, meta_weight_decay
        self.normalize, self.lookahead = normalize, lookahead
        self.net: WeightNet | None = None
        self._weights_seen: list[torch.Tensor] = []

    def init_meta_parameters(self, dtype: torch.dtype, device: torch.device | str) -> None:
        """Build the weight net (seeded) and its Adam optimiser."""
        self.net = WeightNet(derived_seed(self.seed, "mwnet")).to(device=device, dtype=dtype)
        self.meta_optimizer = torch.optim.Adam(
            self.net.parameters(), lr=self.meta_lr, weight_decay=self.meta_weight_decay
        )

    def weighted_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(1/n) Σ w_i ℓ_i with w = V(ℓ.detach()), differentiable in Θ (the look-ahead objective)."""
        per_sample = self.fn(logits, targets, **self.params)
        return self._combine(self.net(per_sample.detach()), per_sample)

    def _combine(self, weights: torch.Tensor, per_sample: torch.Tensor) -> torch.Tensor:
        """Mean of w_i ℓ_i, or Σ w_i ℓ_i / Σ w_i when ``normalize``."""
        if self.normalize:
            return (weights * per_sample).sum() / weights.sum().clamp_min(1e-12)
        return (weights * per_sample).mean()

    def meta_gradient(
        self, model: nn.Module, batch: Batch, x_meta: torch.Tensor, y_meta: torch.Tensor, lr: float,
        optimizer: torch.optim.Optimizer | None = None,
    ) -> MetaGradient:
        """∇Θ CE(f_θ'(Θ)(x_meta), y_meta) in ``net.parameters()`` order."""
        return meta_gradient(model, list(self.net.parameters()), lambda lo: self.weighted_loss(lo, batch.y),
                             batch.x, x_meta, y_meta, lr, config=self.lookahead, optimizer=optimizer)

    # --- MetaMethod hooks ---------------------------------------------------------------------
    def prepare(self, run: MetaRun) -> None:
        param = next(run.model.parameters())
        self.seed = run.task.seed
        self.init_meta_parameters(param.dtype, param.device)

    def meta_step(
        self, run: MetaRun, batch: Batch, x_meta: torch.Tensor, y_meta: torch.Tensor, lr: float
    ) -> MetaGradient:
        result = self.meta_gradient(run.model, batch, x_meta, y_meta, lr, run.optimizer)
        apply_meta_gradient(self.meta_optimizer, list(self.net.parameters()), result.grads)
        return result

    def train_loss(self, run: MetaRun, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        per_sample = self.fn(logits, batch.y, **self.params)
        with torch.no_grad():
            weights = self.net(per_sample.detach())
        self._weights_seen.append(weights.mean())
        return self._combine(weights, per_sample)

    def weight_curve(self, losses: torch.Tensor) -> list[float]:
        """The learned weighting function on a grid of loss values."""
        param = next(self.net.parameters())
        with torch.no_grad():
            return self.net(losses.to(param)).tolist()

    def epoch_quantities(self, run: MetaRun) -> dict[str, object]:
        mean_weight = float(torch.stack(self._weights_seen).mean()) if self._weights_seen else math.nan
        self._weights_seen = []
        return {"mean_weight": mean_weight, "weight_curve": self.weight_curve(LOSS_GRID)}

    def final_extra(self, run: MetaRun) -> dict[str, object]:
        return {"loss_grid": LOSS_GRID.tolist(), "weight_curve_final": self.weight_curve(LOSS_GRID)}


LOSS_GRID = torch.linspace(0.0, 5.0, 11)


@register_trainer("mwnet")
class MetaWeightNetTrainer(MetaTrainer):
    """``mwnet``: each spec is a base loss (none: CE) reweighted by its own weight net. Options:
    ``meta_lr`` (Adam, 1e-3), ``meta_weight_decay`` (1e-4), ``normalize`` (False)."""

    name = "mwnet"
    paper_key = "mwnet"

    def __init__(
        self, *, meta_lr: float = 1e-3, meta_weight_decay: float = 1e-4, normalize: bool = False, **options
    ) -> None:
        super().__init__(**options)
        if not (meta_lr > 0 and math.isfinite(meta_lr)) or meta_weight_decay < 0:
            raise ValueError(f"meta_lr={meta_lr!r} must be > 0 and meta_weight_decay={meta_weight_decay!r} >= 0")
        merged = self.protocol_options({"meta_lr": meta_lr, "meta_weight_decay": meta_weight_decay},
                                       {"meta_lr": 1e-3, "meta_weight_decay": 1e-4})
        self.meta_lr, self.meta_weight_decay, self.normalize = merged["meta_lr"], merged["meta_weight_decay"], \
            bool(normalize)

    def make_method(self, spec: LossSpec) -> MetaWeightNet:
        require_float_params(self.name, spec)
        return MetaWeightNet(spec, meta_lr=self.meta_lr, meta_weight_decay=self.meta_weight_decay,
                             normalize=self.normalize, lookahead=self.lookahead)
