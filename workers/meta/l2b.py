"""Learning to Bootstrap: per-sample weights on the real label and on the pseudo-label, meta-learned.

zhou-l2b-learning-to-bootstrap, Alg. 1 (Eqs. 3–10). For a batch, with f_i = L(F(x_i, θ), y_i)
(the base loss on the observed label) and g_i = L(F(x_i, θ), ŷ_i), ŷ_i = argmax F(x_i, θ)
(the pseudo-label, detached):

    θ̂(ε) = θ − λ ∇θ Σ_i (ε_α,i f_i + ε_β,i g_i)          (Eq. 5; ε initialised at 0)
    (a_i, b_i) = −∇ε (1/m) Σ_j f^v_j(θ̂)  at ε = 0         (Eq. 7, CE on the clean meta batch)
    α̃_i = max(a_i, 0),  β̃_i = max(b_i, 0)                  (Eq. 8)
    α_i = α̃_i / (Σα̃ + Σβ̃),  β_i = β̃_i / (Σα̃ + Σβ̃)       (Eq. 9)
    θ ← θ − λ ∇θ Σ_i (α_i f_i + β_i g_i)                   (Eq. 10)

The meta step size η of Eq. 7 cancels in Eq. 9. When every α̃, β̃ of a batch is 0 the
normalisation has nothing to divide: the weights stay 0 (as L2RW does), so that batch contributes
no gradient (momentum and weight decay still apply); ``extra["all_zero_batches"]`` counts them.
Ablations (Table 7), ``variant``:

- ``"free"`` (default): α, β ≥ 0 with Σα + Σβ = 1 over the batch;
- ``"alpha0"``: α = 0, β normalised alone (pseudo-labels only);
- ``"beta0"``: β = 0, α normalised alone (instance reweighting, L2RW);
- ``"sum1"``: α_i + β_i = 1 per sample (α_i = α̃_i/(α̃_i + β̃_i); ½, ½ when both are 0) and the
  batch loss is the mean — per-sample bootstrapping with a learned β_i (Eq. 2), no instance weights.

A meta step is needed for every batch (the weights exist only for it): T_meta must be 1.
``warmup_epochs`` (default 0; zhou §4.2: 10, ``protocol="paper"``) first train the base loss on all
data with no meta step, following DivideMix's warm-up that §4.2 cites.
"""
from __future__ import annotations

import torch
from torch import nn

from evoloss.losses import LossSpec, get_family
from evoloss.workers.meta.lookahead import LookaheadConfig, MetaGradient, meta_gradient
from evoloss.workers.meta.meta_trainer import MetaTrainer, require_float_params
from evoloss.workers.meta.method import Batch, EpochPlan, MetaMethod
from evoloss.workers.meta.training import MetaRun
from evoloss.workers.trainer import register_trainer


L2B_VARIANTS = ("free", "alpha0", "beta0", "sum1")


def bootstrap_weights(
    grad_alpha: torch.Tensor, grad_beta: torch.Tensor, variant: str = "free"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(α, β) from the meta-gradients at ε = 0 (Eqs. 7–9, or the ablation ``variant``)."""
    if variant not in L2B_VARIANTS:
        raise ValueError(f"variant={variant!r} is not one of {L2B_VARIANTS}")
    alpha = torch.clamp_min(-grad_alpha.detach(), 0.0)  # Eq. 8: rectify
    beta = torch.clamp_min(-grad_beta.detach(), 0.0)
    if variant == "alpha0":
        alpha = torch.zeros_like(alpha)
    elif variant == "beta0":
        beta = torch.zeros_like(beta)
    elif variant == "sum1":
        total = alpha + beta
        half = torch.full_like(alpha, 0.5)
        safe = torch.where(total > 0, total, torch.ones_like(total))
        return torch.where(total > 0, alpha / safe, half), torch.where(total > 0, beta / safe, half)
    total = alpha.sum() + beta.sum()  # Eq. 9: normalise over the batch
    if float(total) > 0:
        return alpha / total, beta / total
    return alpha, beta  # all zero: nothing to normalise, the batch contributes no gradient


class LearningToBootstrap(MetaMethod):
    """Per-sample α_i (observed label) and β_i (pseudo-label) weights from the look-ahead."""

    def __init__(
        self, spec: LossSpec, *, variant: str = "free", warmup_epochs: int = 0,
        lookahead: LookaheadConfig = LookaheadConfig(),
    ) -> None:
        if variant not in L2B_VARIANTS:
            raise ValueError(f"variant={variant!r} is not one of {L2B_VARIANTS}")
        if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int) or warmup_epochs < 0:
            raise ValueError(f"warmup_epochs={warmup_epochs!r} must be an integer >= 0")
        self.warmup_epochs, self.warm = warmup_epochs, False
        if lookahead.every != 1:
            raise ValueError(f"l2b computes the weights of every batch from its own meta step: meta_every must be 1, "
                             f"got {lookahead.every}")
        fam = get_family(spec.family)
        self.fn, self.params, self.variant, self.lookahead = fam.fn, fam.validate(spec.params), variant, lookahead
        self._weights: tuple[torch.Tensor, torch.Tensor] | None = None
        self._stats: list[tuple[float, float, bool]] = []
        self.all_zero_batches = 0

    def losses(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(f, g): the base loss on the observed labels and on the detached argmax pseudo-labels."""
        pseudo = logits.detach().argmax(dim=1)
        return self.fn(logits, targets, **self.params), self.fn(logits, pseudo, **self.params)

    def meta_gradient(
        self, model: nn.Module, batch: Batch, x_meta: torch.Tensor, y_meta: torch.Tensor, lr: float,
        optimizer: torch.optim.Optimizer | None = None,
    ) -> MetaGradient:
        """∇ε of the meta-loss at ε = 0 for (ε_α, ε_β), each [B] (Eqs. 5–7)."""
        param = next(model.parameters())
        eps_alpha = torch.zeros(len(batch.y), dtype=param.dtype, device=param.device, requires_grad=True)
        eps_beta = torch.zeros_like(eps_alpha, requires_grad=True)

        def objective(logits: torch.Tensor) -> torch.Tensor:
            f, g = self.losses(logits, batch.y)
            return (eps_alpha * f + eps_beta * g).sum()

        return meta_gradient(model, [eps_alpha, eps_beta], objective, batch.x, x_meta, y_meta, lr,
                             config=self.lookahead, optimizer=optimizer)

    # --- MetaMethod hooks ---------------------------------------------------------------------
    def begin_epoch(self, run: MetaRun, epoch: int) -> EpochPlan:
        self.warm = epoch < self.warmup_epochs
        return EpochPlan(meta=not self.warm)

    def meta_step(
        self, run: MetaRun, batch: Batch, x_meta: torch.Tensor, y_meta: torch.Tensor, lr: float
    ) -> MetaGradient:
        result = self.meta_gradient(run.model, batch, x_meta, y_meta, lr, run.optimizer)
        self._weights = bootstrap_weights(*result.grads, self.variant)
        return result

    def train_loss(self, run: MetaRun, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        if self.warm:  # warm-up: the base loss on the observed labels, no meta step
            return self.fn(logits, batch.y, **self.params).mean()
        if self._weights is None or len(self._weights[0]) != len(batch.y):
            raise RuntimeError("l2b: the real step of a batch needs that batch's meta step first")
        alpha, beta = self._weights
        self._weights = None
        f, g = self.losses(logits, batch.y)
        self._record(alpha, beta)
        loss = (alpha * f + beta * g).sum()  # Eq. 10
        return loss / len(batch.y) if self.variant == "sum1" else loss

    def _record(self, alpha: torch.Tensor, beta: torch.Tensor) -> None:
        total = float(alpha.sum() + beta.sum())
        zero = float(((alpha == 0) & (beta == 0)).float().mean())
        if self.variant != "sum1" and total == 0:
            self.all_zero_batches += 1
        self._stats.append((float(alpha.sum()) / total if total > 0 else float("nan"), zero, total == 0))

    def epoch_quantities(self, run: MetaRun) -> dict[str, object]:
        shares = [s for s, _, empty in self._stats if not empty]
        out = {"alpha_share": sum(shares) / len(shares) if shares else float("nan"),
               "zero_weight_fraction": sum(z for _, z, _ in self._stats) / max(len(self._stats), 1)}
        self._stats = []
        return out

    def final_extra(self, run: MetaRun) -> dict[str, object]:
        return {"variant": self.variant, "all_zero_batches": self.all_zero_batches,
                "warmup_epochs": self.warmup_epochs}


@register_trainer("l2b")
class LearningToBootstrapTrainer(MetaTrainer):
    """``l2b``: each spec is the base loss L (none: CE, as in the paper). Options ``variant``:
    ``free`` | ``alpha0`` | ``beta0`` | ``sum1`` (the ablations of Table 7); ``warmup_epochs`` (0)."""

    name = "l2b"
    paper_key = "l2b"

    def __init__(self, *, variant: str = "free", warmup_epochs: int = 0, **options) -> None:
        super().__init__(**options)
        if variant not in L2B_VARIANTS:
            raise ValueError(f"variant={variant!r} is not one of {L2B_VARIANTS}")
        if self.lookahead.every != 1:
            raise ValueError(f"l2b needs a meta step on every batch: meta_every must be 1, got {self.lookahead.every}")
        self.variant = variant
        self.warmup_epochs = self.protocol_options({"warmup_epochs": warmup_epochs},
                                                   {"warmup_epochs": 0})["warmup_epochs"]
        LearningToBootstrap(LossSpec("ce"), variant=variant, warmup_epochs=self.warmup_epochs)  # validates now

    def make_method(self, spec: LossSpec) -> LearningToBootstrap:
        require_float_params(self.name, spec)
        return LearningToBootstrap(spec, variant=self.variant, warmup_epochs=self.warmup_epochs,
                                   lookahead=self.lookahead)
