"""The training protocols of the meta-learning papers, in one table (``protocol = "paper"``).

Every meta trainer takes ``protocol = "default"`` (the task's budget, i.e. the architecture's
protocol, like every other trainer) or ``protocol = "paper"``: the classifier optimiser, learning
rate, momentum, weight decay, batch size, learning-rate schedule and gradient clipping of the
method's paper replace the task's budget, and the paper's warm-up, meta optimiser and look-ahead
are used. Each value is cited (``PAPER_PROTOCOLS[...].source``); where a paper gives several
settings we take its CIFAR-10 one. ``tests/workers/meta/test_paper_protocols.py`` checks every
number against the cited text.

Rules for the embedded (small) tasks, our choices:

- the number of epochs stays the task's (``budget.epochs``); a step schedule's milestones are the
  paper's as *fractions* of its total (shu: 40 and 50 of 60 epochs → 2/3 and 5/6 of the run);
  warm-up epochs are the paper's count (zhou: 10; jiang: 5), not scaled;
- the meta-set size is recorded here (the papers' 1,000 clean CIFAR images) but the trainer uses
  the task's meta set (``splits.meta_per_class`` / ``meta_total``) and records its size in
  ``clean_labels_used``: a preset that wants the paper's size sets ``meta_total = 1000``;
- a value the paper does not state is marked "(not stated: ours)" in ``source``.

Meta-Weight-Net's own paper is not one of ours; its row is the shared set-up under which shu §4.1
ran it as a baseline ("default settings in the original paper"), with the meta optimiser of its
reference code (Adam 1e-3, wd 1e-4).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Mapping

from evoloss.workers.task import Budget, Task

PROTOCOLS = ("default", "paper")


@dataclass(frozen=True)
class PaperProtocol:
    """One paper's classifier and meta settings (see the module docstring for how they apply).

    ``milestones``: fractions of the run at which the learning rate is multiplied by ``gamma``
    (empty: ``schedule`` alone); ``method_options``: the trainer options the protocol sets
    (warm-up, meta optimiser ...); ``lookahead``: "sgd" (plain virtual step) or "optimizer"
    (the live SGD's momentum and weight decay); ``source``: field -> where the paper states it.
    """

    paper: str
    optimizer: str
    lr: float
    momentum: float
    weight_decay: float
    batch_size: int
    schedule: str = "constant"
    milestones: tuple[float, ...] = ()
    gamma: float = 1.0
    grad_clip: float | None = None
    warmup_epochs: int = 0
    meta_set_size: int = 0
    meta_optimizer: str = ""
    meta_lr: float | None = None
    meta_weight_decay: float = 0.0
    lookahead: str = "sgd"
    method_options: Mapping[str, object] = field(default_factory=dict)
    source: Mapping[str, str] = field(default_factory=dict)

    def budget(self, budget: Budget) -> Budget:
        """``budget`` with the paper's optimiser, lr, momentum, wd, batch, schedule and clipping (epochs kept)."""
        return dataclasses.replace(budget, optimizer=self.optimizer, lr=self.lr, momentum=self.momentum,
                                   weight_decay=self.weight_decay, batch_size=self.batch_size,
                                   schedule=self.schedule, grad_clip=self.grad_clip)

    def task(self, task: Task) -> Task:
        """``task`` trained under this protocol (data, seeds and epochs unchanged)."""
        return dataclasses.replace(task, budget=self.budget(task.budget))

    def as_dict(self) -> dict[str, object]:
        """JSON-able record of the protocol (written to ``EvalRecord.extra["protocol"]``)."""
        out = dataclasses.asdict(self)
        out["milestones"], out["method_options"] = list(self.milestones), dict(self.method_options)
        out["source"] = dict(self.source)
        return out


_SHU_SOURCE = {
    "optimizer": "shu §4.1 Experimental setup: SGD", "lr": "shu §4.1: initial learning rate 0.1",
    "momentum": "shu §4.1: momentum 0.9", "weight_decay": "shu §4.1: weight decay 1e-3",
    "batch_size": "shu §4.1: mini-batch size 100",
    "milestones": "shu §4.1 (ResNet-32): lr ×0.1 at 40 and 50 of 60 epochs",
    "grad_clip": "shu: none stated", "warmup_epochs": "shu Alg. 1: none",
    "meta_set_size": "shu §4.1 Datasets: 1,000 clean images (CIFAR)",
    "meta_optimizer": "shu §4.1: SGD for the hyperparameters, learning rate as the classifier's (Eq. 8)",
}

PAPER_PROTOCOLS: dict[str, PaperProtocol] = {
    "adaptive": PaperProtocol(
        paper="shu-adaptive-robust-loss", optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-3,
        batch_size=100, milestones=(40 / 60, 50 / 60), gamma=0.1, meta_set_size=1000, meta_optimizer="sgd",
        meta_lr=None, source=_SHU_SOURCE),
    "narl": PaperProtocol(
        paper="ding-narl-adjuster", optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, batch_size=100,
        milestones=(80 / 120, 100 / 120), gamma=0.1, meta_set_size=1000, meta_optimizer="adam", meta_lr=1e-3,
        meta_weight_decay=1e-4, method_options={"meta_every": 10},
        source={"optimizer": "ding §4.1 Experimental setup: SGD", "lr": "ding §4.1: initial learning rate 0.1",
                "momentum": "ding §4.1: momentum 0.9", "weight_decay": "ding §4.1: weight decay 5e-4",
                "batch_size": "ding §4.1: mini-batch size 100",
                "milestones": "ding §4.1 (CIFAR-10): lr ×0.1 at 80 and 100 of 120 epochs",
                "grad_clip": "ding: none stated", "warmup_epochs": "ding Alg. 1: none",
                "meta_set_size": "ding §4.1 Datasets: 1,000 clean images",
                "meta_optimizer": "ding §4.1: Adam, lr 1e-3, weight decay 1e-4, T_meta = 10"}),
    "l2b": PaperProtocol(
        paper="zhou-l2b-learning-to-bootstrap", optimizer="sgd", lr=0.15, momentum=0.9, weight_decay=5e-4,
        batch_size=512, schedule="cosine", grad_clip=5.0, warmup_epochs=10, meta_set_size=1000,
        meta_optimizer="none (ε at 0, Eq. 7-9)", lookahead="optimizer",
        method_options={"warmup_epochs": 10},
        source={"optimizer": "zhou §4.2: SGD", "lr": "zhou §4.2: learning rate 0.15",
                "momentum": "zhou §4.2: momentum 0.9", "weight_decay": "zhou §4.2: weight decay 0.0005",
                "batch_size": "zhou §4.2: batch size 512 for CIFAR-10 (256 for CIFAR-100)",
                "schedule": "zhou §4.2: cosine annealing decay",
                "grad_clip": "zhou §4.2: 'Gradient clipping is applied' (max-norm 5.0 not stated: ours)",
                "warmup_epochs": "zhou §4.2: warm up period 10 epochs (following DivideMix [16])",
                "meta_set_size": "zhou §4.1: 1,000 clean images in D_val",
                "lookahead": "zhou §4.2: optimiser and schedule the same for the main and the meta model"}),
    "dynamic": PaperProtocol(
        paper="jiang-dynamic-loss", optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, batch_size=512,
        schedule="cosine", warmup_epochs=5, meta_optimizer="adam", meta_lr=3e-3, meta_weight_decay=0.0,
        method_options={"warmup_epochs": 5, "primary_fraction": 0.5, "meta_fraction": 0.25, "rank_bins": 100,
                        "meta_lr": 3e-3, "meta_weight_decay": 0.0},
        source={"optimizer": "jiang Table 7 (CIFAR-10): SGD", "lr": "jiang Table 7: learning rate 0.1",
                "momentum": "jiang Table 7: momentum 0.9", "weight_decay": "jiang Table 7: weight decay 5e-4",
                "batch_size": "jiang Table 7: batch size 512", "schedule": "jiang Table 7: cosine annealing",
                "grad_clip": "jiang: none stated", "warmup_epochs": "jiang Table 7: warmup epoch 5",
                "meta_set_size": "jiang §Method: built from the noisy data each epoch (M0 0.5, M1 0.25, Table 7)",
                "meta_optimizer": "jiang Table 7: Adam, lr 3e-3, weight decay 0, fixed",
                "rank_bins": "jiang Table 7: rank number 100 (CIFAR-10; 50 for CIFAR-100)"}),
    "mwnet": PaperProtocol(
        paper="shu-adaptive-robust-loss (its Meta-Weight-Net baseline)", optimizer="sgd", lr=0.1, momentum=0.9,
        weight_decay=1e-3, batch_size=100, milestones=(40 / 60, 50 / 60), gamma=0.1, meta_set_size=1000,
        meta_optimizer="adam", meta_lr=1e-3, meta_weight_decay=1e-4,
        method_options={"meta_lr": 1e-3, "meta_weight_decay": 1e-4},
        source={**_SHU_SOURCE, "meta_optimizer": "Meta-Weight-Net reference code: Adam 1e-3, wd 1e-4 "
                                                 "(not in our papers: ours)"}),
}


def paper_protocol(key: str) -> PaperProtocol:
    """The protocol row ``key`` (adaptive | narl | l2b | dynamic | mwnet); ValueError naming the keys."""
    if key not in PAPER_PROTOCOLS:
        raise ValueError(f"no paper protocol {key!r}; known: {', '.join(PAPER_PROTOCOLS)}")
    return PAPER_PROTOCOLS[key]


def check_protocol(protocol: object) -> str:
    """``protocol`` if it is one of `PROTOCOLS`, else ValueError naming the field and the choices."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol={protocol!r} is not one of {PROTOCOLS} "
                         "('paper': the method's paper's optimiser, schedule, warm-up and meta optimiser)")
    return str(protocol)


def merge_method_options(trainer: str, protocol: PaperProtocol, given: Mapping[str, object],
                         defaults: Mapping[str, object]) -> dict[str, object]:
    """The trainer's method options under ``protocol``: the paper's values replace the defaults;
    an option the caller set to something else than both raises ValueError (naming it and the fix)."""
    out = dict(given)
    for name, value in protocol.method_options.items():
        if name not in defaults:
            continue
        mine = given.get(name, defaults[name])
        if mine != defaults[name] and mine != value:
            raise ValueError(f"trainer {trainer!r}: protocol='paper' sets {name}={value!r} ({protocol.paper}); "
                             f"drop {name}={mine!r} or use protocol='default'")
        out[name] = value
    return out


def step_factor(milestones: tuple[float, ...], gamma: float, epoch: int, epochs: int) -> float:
    """gamma ** (number of milestones passed at ``epoch``): a milestone f is passed from epoch ⌊f·epochs⌋ on."""
    passed = sum(1 for f in milestones if epoch >= int(f * epochs))
    return gamma ** passed
