"""Dynamic Loss: a meta-learned label corrector and margin generator, without clean data.

jiang-dynamic-loss, Eqs. 2–9 and Alg. 1 (supplement):

    DL_i = ℓ(y*_i, f(x_i) + q)                                    (Eq. 2)
    y*_i = g(r_i | y_i)·y_i + (1 − g(r_i | y_i))·y'_i            (Eq. 3, the label corrector)
    q = G_m(1) ∈ R^C                                              (Eq. 5, the margin generator; Eq. 6)
    ω̂ = ω − α (1/m0) Σ_{X_n} ∇ω DL                                (Eq. 7)
    θ ← θ − β (1/m0) Σ_{X_c} ∇θ ℓ(x, y; ω̂)                         (Eq. 8; Adam 3e-3, wd 0, Table 7)
    ω ← ω − α (1/m0) Σ_{X_n} ∇ω DL(θ_new)                          (Eq. 9)

r_i is the class-wise loss-rank bin of sample i (`dynamic_sampling.rank_bins`), g(·|y) =
one-hot(y) → 2-layer MLP → R sigmoids, and the meta set X_c is rebuilt from the noisy data each
epoch by hierarchical sampling (`dynamic_sampling.hierarchical_meta_set`); the first
``warmup_epochs`` train the base loss on all data with no meta step (Alg. 1's warm-up).

Choices where the paper is silent: y'_i is the classifier's hard prediction argmax f(x_i)
(detached), so Eq. 3 makes DL_i = g·ℓ(f+q, y_i) + (1−g)·ℓ(f+q, y'_i) for any base loss ℓ (the
spec's family; for CE this equals CE against the soft label y*); the corrector's output bias
starts at ``trust_bias`` = 4 (g ≈ 0.98: "initialised to trust labels"); the margin generator's last
layer starts at zero (q = 0: plain softmax); hidden width 100; R = 10 bins by default (the paper
uses 50–100 on CIFAR); losses for ranks and sampling are the base loss of f (no q) in eval mode.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from evoloss.losses import LossSpec, get_family
from evoloss.workers.evaluation import EVAL_BATCH_SIZE
from evoloss.workers.meta.dynamic_sampling import check_fractions, hierarchical_meta_set, rank_bins
from evoloss.workers.meta.lookahead import LookaheadConfig, MetaGradient, apply_meta_gradient, meta_gradient
from evoloss.workers.meta.meta_trainer import MetaTrainer, require_float_params
from evoloss.workers.meta.method import Batch, EpochPlan, MetaMethod, derived_seed, seeded_linear
from evoloss.workers.meta.training import MetaRun
from evoloss.workers.trainer import register_trainer



class DynamicMetaNet(nn.Module):
    """The label corrector table g[c, r] (Eq. 3) and the margin vector q[c] (Eq. 5)."""

    def __init__(
        self, num_classes: int, bins: int, *, hidden: int = 100, trust_bias: float = 4.0, seed: int = 0
    ) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.corrector_in, self.corrector_out = seeded_linear(num_classes, hidden, g), seeded_linear(hidden, bins, g)
        self.margin_in, self.margin_out = seeded_linear(num_classes, hidden, g), seeded_linear(hidden, num_classes, g)
        with torch.no_grad():
            self.corrector_out.bias += trust_bias
            self.margin_out.weight.zero_()
            self.margin_out.bias.zero_()
        self.num_classes = num_classes

    def label_weights(self) -> torch.Tensor:
        """g[c, r] ∈ (0, 1): one-hot(c) → MLP → sigmoid, for every class at once ([C, R])."""
        eye = torch.eye(self.num_classes, dtype=self.corrector_in.weight.dtype, device=self.corrector_in.weight.device)
        return torch.sigmoid(self.corrector_out(torch.relu(self.corrector_in(eye))))

    def margins(self) -> torch.Tensor:
        """q = G_m(1) ([C])."""
        ones = torch.ones(1, self.num_classes, dtype=self.margin_in.weight.dtype, device=self.margin_in.weight.device)
        return self.margin_out(torch.relu(self.margin_in(ones)))[0]


class DynamicLoss(MetaMethod):
    """Label correction by loss-rank bin plus learned class margins, meta-learned on a sampled meta set."""

    needs_clean_meta = False

    def __init__(self, spec: LossSpec, *, rank_bins: int = 10, warmup_epochs: int = 1, primary_fraction: float = 0.5,
                 meta_fraction: float = 0.25, hidden: int = 100, trust_bias: float = 4.0, meta_lr: float = 3e-3,
                 meta_weight_decay: float = 0.0, lookahead: LookaheadConfig = LookaheadConfig()) -> None:
        check_fractions(primary_fraction, meta_fraction)
        integers = (("rank_bins", rank_bins, 1), ("hidden", hidden, 1), ("warmup_epochs", warmup_epochs, 0))
        for name, value, least in integers:
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name}={value!r} must be an integer >= {least}")
        if not (meta_lr > 0 and math.isfinite(meta_lr)) or meta_weight_decay < 0:
            raise ValueError(f"meta_lr={meta_lr!r} must be > 0 and meta_weight_decay={meta_weight_decay!r} >= 0")
        fam = get_family(spec.family)
        self.fn, self.params, self.lookahead = fam.fn, fam.validate(spec.params), lookahead
        self.bins, self.warmup_epochs, self.hidden, self.trust_bias = rank_bins, warmup_epochs, hidden, trust_bias
        self.primary_fraction, self.meta_fraction = primary_fraction, meta_fraction
        self.meta_lr, self.meta_weight_decay = meta_lr, meta_weight_decay
        self.net: DynamicMetaNet | None = None
        self.ranks: torch.Tensor | None = None
        self.warm = True
        self._epoch_info: dict[str, object] = {}

    def init_meta_parameters(self, num_classes: int, seed: int, dtype: torch.dtype, device: torch.device | str) -> None:
        """The meta net (seeded) and its Adam (Eq. 8)."""
        self.net = DynamicMetaNet(num_classes, self.bins, hidden=self.hidden, trust_bias=self.trust_bias,
                                  seed=derived_seed(seed, "dynamic")).to(device=device, dtype=dtype)
        self.meta_optimizer = torch.optim.Adam(
            self.net.parameters(), lr=self.meta_lr, weight_decay=self.meta_weight_decay
        )

    def dynamic_loss(self, logits: torch.Tensor, targets: torch.Tensor, ranks: torch.Tensor,
                     weights: torch.Tensor, margins: torch.Tensor) -> torch.Tensor:
        """Mean of DL_i = g_i·ℓ(f+q, y_i) + (1 − g_i)·ℓ(f+q, y'_i) (Eqs. 2, 3, 6)."""
        predicted = logits.detach().argmax(dim=1)
        shifted = logits + margins
        g = weights[targets, ranks]
        given = self.fn(shifted, targets, **self.params)
        corrected = self.fn(shifted, predicted, **self.params)
        return (g * given + (1 - g) * corrected).mean()

    def meta_gradient(self, model: nn.Module, batch: Batch, ranks: torch.Tensor, x_meta: torch.Tensor,
                      y_meta: torch.Tensor, lr: float, optimizer: torch.optim.Optimizer | None = None) -> MetaGradient:
        """∇θ CE(f_ω̂(θ)(x_meta), y_meta) in ``net.parameters()`` order (Eqs. 7–8).

        ``ranks`` are the rank bins r_i of the batch rows.
        """
        def objective(logits: torch.Tensor) -> torch.Tensor:
            return self.dynamic_loss(logits, batch.y, ranks, self.net.label_weights(), self.net.margins())

        return meta_gradient(model, list(self.net.parameters()), objective, batch.x, x_meta, y_meta, lr,
                             config=self.lookahead, optimizer=optimizer)

    # --- MetaMethod hooks ---------------------------------------------------------------------
    def prepare(self, run: MetaRun) -> None:
        param = next(run.model.parameters())
        self.init_meta_parameters(run.data.num_classes, run.task.seed, param.dtype, param.device)

    def begin_epoch(self, run: MetaRun, epoch: int) -> EpochPlan:
        self.warm = epoch < self.warmup_epochs
        if self.warm:
            self._epoch_info = {"meta_set_size": 0, "meta_set_clean_fraction": None, "corrected_label_accuracy": None}
            return EpochPlan(meta=False)
        losses, predicted = self._train_losses(run)
        labels, classes = run.data.y_train, run.data.num_classes
        self.ranks = rank_bins(losses, labels, classes, self.bins)
        meta, rest = hierarchical_meta_set(
            losses, labels, classes, primary_fraction=self.primary_fraction, meta_fraction=self.meta_fraction,
            generator=run.generator(f"dynamic/{epoch}"),
        )
        self._epoch_info = self._diagnostics(run, meta, predicted)
        return EpochPlan(train_index=rest, x_meta=run.data.x_train[meta], y_meta=labels[meta])

    def meta_step(
        self, run: MetaRun, batch: Batch, x_meta: torch.Tensor, y_meta: torch.Tensor, lr: float
    ) -> MetaGradient:
        result = self.meta_gradient(run.model, batch, self.ranks[batch.index], x_meta, y_meta, lr, run.optimizer)
        apply_meta_gradient(self.meta_optimizer, list(self.net.parameters()), result.grads)
        return result

    def train_loss(self, run: MetaRun, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        if self.warm:
            return self.fn(logits, batch.y, **self.params).mean()
        with torch.no_grad():
            weights, margins = self.net.label_weights(), self.net.margins()
        return self.dynamic_loss(logits, batch.y, self.ranks[batch.index], weights, margins)

    def _train_losses(self, run: MetaRun) -> tuple[torch.Tensor, torch.Tensor]:
        """Base loss of f (no margins) and argmax prediction of every training row, eval mode, no graph."""
        model, x, y = run.model, run.data.x_train, run.data.y_train
        was_training = model.training
        model.train(False)  # eval mode
        losses, predicted = [], []
        with torch.no_grad():
            for start in range(0, len(y), EVAL_BATCH_SIZE):
                logits = model(x[start:start + EVAL_BATCH_SIZE])
                losses.append(self.fn(logits, y[start:start + EVAL_BATCH_SIZE], **self.params))
                predicted.append(logits.argmax(dim=1))
        model.train(was_training)
        return torch.cat(losses), torch.cat(predicted)

    def _diagnostics(self, run: MetaRun, meta: torch.Tensor, predicted: torch.Tensor) -> dict[str, object]:
        """Meta-set size and purity, and the accuracy of the corrected labels (known clean labels)."""
        clean, noisy = run.data.y_train_clean, run.data.y_train
        with torch.no_grad():
            trust = self.net.label_weights()[noisy, self.ranks] >= 0.5
        corrected = torch.where(trust, noisy, predicted)
        return {"meta_set_size": len(meta),
                "meta_set_clean_fraction": float((noisy[meta] == clean[meta]).float().mean()),
                "corrected_label_accuracy": float((corrected == clean).float().mean())}

    def epoch_quantities(self, run: MetaRun) -> dict[str, object]:
        with torch.no_grad():
            weights, margins = self.net.label_weights(), self.net.margins()
        return {**self._epoch_info, "margins": margins.tolist(), "label_weight_by_bin": weights.mean(0).tolist()}

    def final_extra(self, run: MetaRun) -> dict[str, object]:
        with torch.no_grad():
            return {"label_weights": self.net.label_weights().tolist(), "margins_final": self.net.margins().tolist(),
                    "rank_bins": self.bins, "warmup_epochs": self.warmup_epochs}


@register_trainer("dynamic")
class DynamicLossTrainer(MetaTrainer):
    """``dynamic``: each spec is the base loss ℓ (none: CE); no clean meta set is needed. Options:
    ``rank_bins`` (10), ``warmup_epochs`` (1), ``primary_fraction`` M0 (0.5), ``meta_fraction`` M1
    (0.25), ``hidden`` (100), ``trust_bias`` (4), ``meta_lr`` (Adam 3e-3), ``meta_weight_decay`` (0).
    ``protocol="paper"`` sets jiang Table 7's: warm-up 5 epochs, 100 rank bins (CIFAR-10)."""

    name = "dynamic"
    paper_key = "dynamic"

    def __init__(self, *, rank_bins: int = 10, warmup_epochs: int = 1, primary_fraction: float = 0.5,
                 meta_fraction: float = 0.25, hidden: int = 100, trust_bias: float = 4.0, meta_lr: float = 3e-3,
                 meta_weight_decay: float = 0.0, **options) -> None:
        super().__init__(**options)
        given = dict(rank_bins=rank_bins, warmup_epochs=warmup_epochs, primary_fraction=primary_fraction,
                     meta_fraction=meta_fraction, hidden=hidden, trust_bias=trust_bias, meta_lr=meta_lr,
                     meta_weight_decay=meta_weight_decay)
        self.method_options = self.protocol_options(given, DYNAMIC_DEFAULTS)
        DynamicLoss(LossSpec("ce"), **self.method_options)  # validates the options now

    def make_method(self, spec: LossSpec) -> DynamicLoss:
        require_float_params(self.name, spec)
        return DynamicLoss(spec, **self.method_options, lookahead=self.lookahead)


DYNAMIC_DEFAULTS: dict[str, object] = dict(rank_bins=10, warmup_epochs=1, primary_fraction=0.5, meta_fraction=0.25,
                                           hidden=100, trust_bias=4.0, meta_lr=3e-3, meta_weight_decay=0.0)
