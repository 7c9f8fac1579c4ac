"""`EvalRecord`: what one training run of one candidate loss on one task produced.

The coordinator turns each record into one Parquet row (``results.schema`` is the one written
schema; ``EVAL_RECORD_FIELDS`` here must stay a subset of its columns — a test checks it).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

STATUSES = ("ok", "diverged", "failed", "timeout")


@dataclass
class EvalRecord:
    """One (candidate loss, task) evaluation.

    Metrics are clean-label accuracies in [0, 1]; NaN where the run produced none (failed before the
    first epoch). ``curve_val`` is the per-epoch clean validation accuracy (the learning curve).
    ``extra`` holds method-specific learned quantities (e.g. a meta-learned Λ trajectory), JSON-able.
    """

    family: str
    params: dict
    status: str = "ok"
    error: str = ""
    val_acc_last: float = math.nan
    val_acc_best: float = math.nan
    test_acc_last: float = math.nan
    test_acc_best: float = math.nan
    noisy_val_acc_best: float = math.nan
    test_acc_noisy: float = math.nan  # test accuracy at the best noisy-val epoch (gao-arl Table 3)
    best_epoch: int = -1
    epochs_run: int = 0
    curve_val: list = field(default_factory=list)
    train_loss_last: float = math.nan
    wall_s: float = 0.0
    device: str = "cpu"
    trainer: str = "standard"
    extra: dict = field(default_factory=dict)
    execution: str = ""  # "single" | "stacked" | "stacked-compiled" | "one-by-one"
    execution_note: str = ""  # why a faster path was not taken
    protocol: str = ""  # "default" | "paper"
    clean_labels_used: int = 0
    fidelity: float = 1.0

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"EvalRecord.status={self.status!r} is not one of {STATUSES}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


EVAL_RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(EvalRecord))
