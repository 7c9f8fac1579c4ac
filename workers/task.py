"""`Task`: what one evaluation trains on — dataset, label noise, architecture, budget, seed.

A `Task` is data only (frozen, hashable, JSON-serialisable through `to_dict`/`from_dict`);
`materialize(task)` turns it into tensors (`TaskData`) deterministically for its seed.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import torch


@dataclass(frozen=True)
class NoiseSpec:
    """Label noise applied to the training split (docs/noise.md).

    kind: ``none | symmetric | asymmetric | instance | longtail``.
    convention: for ``symmetric`` one of ``exact`` (exact rate, other class; APL), ``transition``
    (sampled from T with 1−r on the diagonal), ``uniform_mix`` (may keep the class: flips r(C−1)/C);
    for ``asymmetric`` ``pairflip`` (i → i+1) or ``semantic`` (the dataset's class map);
    ``instance``: ``xia2020``; ``longtail``: ``jiang`` (imbalance ``imbalance`` = ρ, then noise λ=rate).
    """

    kind: str = "none"
    rate: float = 0.0
    convention: str = ""
    imbalance: float = 1.0


@dataclass(frozen=True)
class Budget:
    """How long and how a network is trained. ``None`` means "the architecture's protocol"."""

    epochs: int = 20
    batch_size: int = 64
    optimizer: str | None = None  # "sgd" | "adam"; None -> architecture protocol
    lr: float | None = None
    momentum: float | None = None
    weight_decay: float = 0.0
    schedule: str = "constant"  # "constant" | "cosine"
    grad_clip: float | None = None


@dataclass(frozen=True)
class Splits:
    """How the labelled pool is split. Sizes are fractions (< 1) or counts (>= 1).

    ``val`` is the clean validation split (fitness signal), ``test`` the clean test split when the
    dataset has no official one, ``meta_per_class``/``meta_total`` an optional clean meta set,
    ``noisy_val`` an optional validation split that keeps the noisy labels, ``max_train`` caps the
    training split (seeded subsample).
    """

    val: float = 0.2
    test: float = 0.2
    meta_per_class: int = 0
    meta_total: int = 0
    noisy_val: float = 0.0
    max_train: int | None = None


@dataclass(frozen=True)
class Task:
    dataset: str
    arch: str
    noise: NoiseSpec = NoiseSpec()
    budget: Budget = Budget()
    splits: Splits = Splits()
    seed: int = 0
    data_dir: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Task":
        d = dict(d)
        return cls(
            dataset=d["dataset"],
            arch=d["arch"],
            noise=NoiseSpec(**d.get("noise", {})),
            budget=Budget(**d.get("budget", {})),
            splits=Splits(**d.get("splits", {})),
            seed=int(d.get("seed", 0)),
            data_dir=d.get("data_dir"),
        )

    def key(self) -> str:
        """A short stable identifier used in records and reports."""
        n = self.noise
        noise = "clean" if n.kind == "none" else f"{n.kind}{n.rate:g}" + (f"-{n.convention}" if n.convention else "")
        return f"{self.dataset}/{self.arch}/{noise}/s{self.seed}"


@dataclass
class TaskData:
    """The realised tensors of a task. ``x_*`` float32, ``y_*`` int64; empty splits have 0 rows."""

    x_train: torch.Tensor
    y_train: torch.Tensor  # noisy labels (what the loss sees)
    y_train_clean: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    x_meta: torch.Tensor | None = None
    y_meta: torch.Tensor | None = None
    x_noisy_val: torch.Tensor | None = None
    y_noisy_val: torch.Tensor | None = None
    noise_rate: float = 0.0  # realised fraction of training labels that differ from the clean ones
    transition: np.ndarray | None = None  # realised C×C matrix, row = clean class, col = noisy class
    noise_convention: str = "none"
    info: dict = field(default_factory=dict)
