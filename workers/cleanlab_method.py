"""The ``cleanlab`` trainer: confident learning (Northcutt et al. 2021) — find the likely mislabelled
training samples from out-of-sample predicted probabilities, drop them, train on the rest.

What practitioners try first on a noisy dataset, with the `cleanlab` package doing the finding:

1. out-of-sample probabilities: the training split is cut into ``folds`` seeded stratified folds
   (plain seeded folds when a class has fewer than ``folds`` samples); for each fold a network of the
   task's own architecture is trained with cross entropy on the other folds (the task's budget and
   protocol: the same optimiser, lr schedule and batch order as `workers.standard`) and predicts
   softmax probabilities for the held-out fold;
2. ``cleanlab.filter.find_label_issues(labels, pred_probs, filter_by=...)`` flags label issues
   (Northcutt et al. §3: the confident joint, then pruning by ``filter_by``);
3. the kept samples are trained with the method's loss (cross entropy by default) by the standard
   trainer, whose record (clean validation and test accuracy) is the method's row.

Everything is seeded by the task seed: the folds (``[seed, 3]``), each network's initialisation
(`protocol.init_seed`) and batch order. The record's ``extra.cleanlab`` holds the number of samples
flagged and kept, the fold count and filter, and — when the clean labels of the training split are
known (``TaskData.info["clean_labels_known"]``) — the precision and recall of the flagged samples
against the truly mislabelled ones and the noise rate left in the kept set. No clean labels are used.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Sequence

import numpy as np
import torch

from evoloss.losses import LossSpec
from evoloss.workers.archs import check_arch, create_arch
from evoloss.workers.protocol import batches, init_seed, lr_at, resolve_optimizer
from evoloss.workers.records import EvalRecord
from evoloss.workers.standard import StandardTrainer, batch_loss, check_data, make_optimizer, seeded_rng, validate_inputs
from evoloss.workers.task import Task, TaskData
from evoloss.workers.trainer import register_trainer

FOLD_STREAM = 3  # the stream of the task seed that draws the folds
FILTERS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given")


@register_trainer("cleanlab")
class CleanlabTrainer:
    """Confident learning with cleanlab (module docstring).

    Args:
        folds: cross-validation folds for the out-of-sample probabilities (cleanlab's default 5).
        filter_by: `cleanlab.filter.find_label_issues`'s rule.
        meta_source: accepted for the compare's clean-budget mode and unused (no clean labels are read).
    """

    name = "cleanlab"

    def __init__(self, *, folds: int = 5, filter_by: str = "prune_by_noise_rate", meta_source: str = "meta") -> None:
        if isinstance(folds, bool) or not isinstance(folds, int) or not 2 <= folds <= 20:
            raise ValueError(f"cleanlab option folds={folds!r} must be a whole number in [2, 20] (e.g. 5)")
        if filter_by not in FILTERS:
            raise ValueError(f"cleanlab option filter_by={filter_by!r} is not one of {', '.join(FILTERS)}")
        self.folds, self.filter_by = folds, filter_by

    def default_spec(self) -> LossSpec:
        """The loss trained on the kept samples (and the fold networks): cross entropy."""
        return LossSpec("ce")

    def fit(self, task: Task, specs: Sequence[LossSpec], device: str = "cpu",
            data: TaskData | None = None) -> list[EvalRecord]:
        """Find label issues, prune them, train each spec on the kept samples; one record per spec."""
        validate_inputs(task, specs)
        if data is None:
            from evoloss.workers.materialize import materialize

            data = materialize(task)
        check_arch(task.arch, tuple(data.input_shape), data.num_classes)
        check_data(data)
        start = time.perf_counter()
        probs = self.out_of_sample_probs(task, data, device)
        issues = find_issues(data.y_train.numpy(), probs, self.filter_by)
        kept = np.flatnonzero(~issues)
        subset = dataclasses.replace(data, x_train=data.x_train[kept], y_train=data.y_train[kept],
                                     y_train_clean=data.y_train_clean[kept])
        cv_s = time.perf_counter() - start
        records = StandardTrainer().fit(task, list(specs), device, subset)
        extra = {"cleanlab": {**issue_stats(data, issues), "folds": self.folds, "filter_by": self.filter_by,
                              "cv_wall_s": cv_s}}
        return [dataclasses.replace(r, trainer=self.name, wall_s=r.wall_s + cv_s, extra={**r.extra, **extra})
                for r in records]

    def out_of_sample_probs(self, task: Task, data: TaskData, device: str) -> np.ndarray:
        """``[N, C]`` softmax probabilities, each row from the network that did not train on it."""
        y = data.y_train.numpy()
        probs = np.zeros((len(y), data.num_classes), dtype=np.float64)
        for train_rows, held_rows in fold_indices(y, self.folds, task.seed):
            model = train_ce(task, data, train_rows, device)
            with torch.no_grad():
                model.eval()
                x = data.x_train[torch.from_numpy(held_rows)].to(device)
                probs[held_rows] = torch.softmax(model(x), dim=1).double().cpu().numpy()
        return probs


def fold_indices(labels: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Seeded (stratified where every class has ``folds`` samples) K-fold (train, held-out) index pairs."""
    from sklearn.model_selection import KFold, StratifiedKFold

    if len(labels) < folds:
        raise ValueError(f"cleanlab: {len(labels)} training samples cannot make {folds} folds; lower folds")
    state = int(np.random.default_rng([int(seed), FOLD_STREAM]).integers(2**31 - 1))
    counts = np.bincount(labels)
    counts = counts[counts > 0]
    splitter = StratifiedKFold(folds, shuffle=True, random_state=state) if counts.min() >= folds \
        else KFold(folds, shuffle=True, random_state=state)
    return [(a.astype(np.int64), b.astype(np.int64)) for a, b in splitter.split(np.zeros(len(labels)), labels)]


def train_ce(task: Task, data: TaskData, rows: np.ndarray, device: str) -> torch.nn.Module:
    """One network of the task's architecture trained with CE on ``rows`` (the standard protocol)."""
    dev = torch.device(device)
    budget, seed = task.budget, init_seed(task.seed)
    optim = resolve_optimizer(task.arch, budget)
    loss_fn = batch_loss(validate_inputs(task, [LossSpec("ce")])[0])
    x, y = data.x_train[torch.from_numpy(rows)].to(dev), data.y_train[torch.from_numpy(rows)].to(dev)
    with seeded_rng(seed, dev):
        model = create_arch(task.arch, tuple(data.input_shape), data.num_classes, seed=seed).to(dev)
        optimizer = make_optimizer(model, optim)
        for epoch in range(budget.epochs):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(budget, optim.lr, epoch)
            model.train()
            for idx in batches(len(y), budget.batch_size, seed=task.seed, epoch=epoch):
                idx = idx.to(dev)
                loss = loss_fn(model(x[idx]), y[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if budget.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), budget.grad_clip)
                optimizer.step()
    return model


def find_issues(labels: np.ndarray, probs: np.ndarray, filter_by: str) -> np.ndarray:
    """cleanlab's boolean mask of label issues (a non-finite probability row is refused)."""
    from cleanlab.filter import find_label_issues

    if not np.isfinite(probs).all():
        raise ValueError("cleanlab: a fold network produced non-finite probabilities (it diverged)")
    probs = probs / probs.sum(axis=1, keepdims=True)
    # n_jobs=1: cleanlab's default forks a multiprocessing.Pool, which in a Ray actor whose torch has
    # started OpenMP threads can deadlock (seen once in the main job: a 3 s job hung until its 300 s
    # timeout); cleanlab documents that n_jobs changes only the run time, never the result.
    issues = find_label_issues(labels=labels, pred_probs=probs, filter_by=filter_by, n_jobs=1)
    return np.asarray(issues, dtype=bool)


def issue_stats(data: TaskData, issues: np.ndarray) -> dict[str, Any]:
    """Flagged / kept counts and, with known clean labels, precision and recall of the flagged samples."""
    stats: dict[str, Any] = {"flagged": int(issues.sum()), "kept": int((~issues).sum()), "train": int(len(issues))}
    if not data.info.get("clean_labels_known", True):
        return {**stats, "precision": None, "recall": None, "kept_noise_rate": None}
    wrong = (data.y_train != data.y_train_clean).numpy()
    hit = int((issues & wrong).sum())
    stats["precision"] = hit / int(issues.sum()) if issues.any() else None
    stats["recall"] = hit / int(wrong.sum()) if wrong.any() else None
    stats["kept_noise_rate"] = float(wrong[~issues].mean()) if (~issues).any() else None
    return stats


__all__ = ["CleanlabTrainer", "find_issues", "fold_indices", "issue_stats", "train_ce"]
