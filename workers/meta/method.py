"""The hooks a meta-learned method plugs into the shared training loop (`workers.meta.training`).

- ``prepare(run)``: allocate the meta-parameters (idempotent: NARL shares one method across runs);
- ``begin_epoch(run, epoch) -> EpochPlan``: the rows trained on and the meta set of this epoch
  (the Dynamic Loss re-samples its meta set from the noisy data each epoch; warm-up skips meta steps);
- ``meta_step(run, batch, x_meta, y_meta, lr) -> MetaGradient | None``: Λ update via `lookahead`;
- ``train_loss(run, logits, batch) -> scalar``: the real loss with the current Λ;
- ``epoch_quantities(run) -> dict`` and ``final_extra(run) -> dict``: learned quantities for
  ``EvalRecord.extra`` (``extra["per_epoch"][key]`` is the trajectory over evaluated epochs).
"""
from __future__ import annotations

import abc
import math
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from evoloss.workers.meta.lookahead import LookaheadConfig, MetaGradient

if TYPE_CHECKING:  # the loop imports this module; the type only
    from evoloss.workers.meta.training import MetaRun


def derived_seed(seed: int, label: str) -> int:
    """A seed for one random stream of a run (meta batches, meta-net init, sampling), stable across processes."""
    return (int(seed) * 1_000_003 + zlib.crc32(label.encode())) % (2**62)


def seeded_linear(fan_in: int, fan_out: int, generator: torch.Generator) -> nn.Linear:
    """An ``nn.Linear`` with PyTorch's default initialisation drawn from ``generator``; the global RNG
    is not consumed (``skip_init``), so building meta-nets never shifts the classifier's random streams."""
    layer = nn.utils.skip_init(nn.Linear, fan_in, fan_out)
    with torch.no_grad():
        nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
        bound = 1 / math.sqrt(fan_in)
        layer.bias.uniform_(-bound, bound, generator=generator)
    return layer


@dataclass
class Batch:
    """One training mini-batch: inputs, (noisy) labels and their row indices in the training split."""

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor


@dataclass
class EpochPlan:
    """What an epoch trains on: ``train_index`` rows (None: all), its meta set, and whether it meta-steps."""

    train_index: torch.Tensor | None = None
    x_meta: torch.Tensor | None = None
    y_meta: torch.Tensor | None = None
    meta: bool = True


class MetaMethod(abc.ABC):
    """The per-method part of a meta-learned trainer (see the module docstring for the hooks)."""

    lookahead: LookaheadConfig = LookaheadConfig()
    needs_clean_meta: bool = True

    def prepare(self, run: "MetaRun") -> None:
        """Allocate meta-parameters on the run's device and dtype (called once per run)."""

    def begin_epoch(self, run: "MetaRun", epoch: int) -> EpochPlan:
        """The plan of ``epoch``; by default all training rows and the clean meta set."""
        return EpochPlan()

    def meta_step(
        self, run: "MetaRun", batch: Batch, x_meta: torch.Tensor, y_meta: torch.Tensor, lr: float
    ) -> MetaGradient | None:
        """Update the meta-parameters on this batch; None when the method takes no meta step."""
        return None

    @abc.abstractmethod
    def train_loss(self, run: "MetaRun", logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The scalar loss of the real step on ``batch`` with the current meta-parameters."""

    def epoch_quantities(self, run: "MetaRun") -> dict[str, object]:
        """Learned quantities after an evaluated epoch (JSON-able scalars or lists)."""
        return {}

    def final_extra(self, run: "MetaRun") -> dict[str, object]:
        """Learned quantities at the end of the run (JSON-able)."""
        return {}
