"""Synthetic but schema-valid run directories for the report tests (written through ParquetStore).

The compare run has 4 methods × 3 tasks × 3 seeds with accuracies chosen so that means, sample
standard deviations, ranks (with a tie) and costs can be worked out by hand; the search run has a
few generations of seeded random Taylor candidates.
"""
from __future__ import annotations

import math
import random
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from evoloss.results.schema import SCHEMA_VERSION
from evoloss.results.store import ParquetStore

RUN_ID = "cmp-test"
SEEDS = (0, 1, 2)
# (dataset, arch, noise_type, noise_rate, split)
TASKS = (
    ("digits", "mlp2", "symmetric", 0.4, "seen"),
    ("digits", "mlp2", "symmetric", 0.8, "seen"),
    ("mnist1d", "cnn1d", "symmetric", 0.8, "held-out"),
)
TASK_LABELS = ("digits/mlp2/symmetric0.4-exact", "digits/mlp2/symmetric0.8-exact", "mnist1d/cnn1d/symmetric0.8-exact")
# method -> (kind, family, params, wall seconds of an ok run)
METHODS: dict[str, tuple[str, str, dict[str, float], float]] = {
    "ce": ("hand-designed", "ce", {}, 2.0),
    "gce": ("hand-designed", "gce", {"q": 0.7}, 2.2),
    "arl": ("evolved", "taylor", {"theta2": -1.5, "theta3": 0.8, "theta6": -2.0}, 2.4),
    "mwnet": ("meta-learned", "ce", {}, 7.0),
}
# test_acc_last per (method, task index) per seed; a string is the status of a run that did not finish
TEST_ACC: dict[tuple[str, int], tuple[float | str, ...]] = {
    ("ce", 0): (0.80, 0.82, 0.84), ("ce", 1): (0.30, 0.32, 0.34), ("ce", 2): (0.50, 0.52, 0.54),
    ("gce", 0): (0.86, 0.88, "diverged"), ("gce", 1): (0.40, 0.42, 0.44), ("gce", 2): (0.50, 0.51, 0.55),
    ("arl", 0): (0.90, 0.91, 0.92), ("arl", 1): (0.60, 0.62, 0.64), ("arl", 2): (0.58, 0.60, 0.62),
    ("mwnet", 0): (0.85, 0.85, 0.85), ("mwnet", 1): (0.45, 0.46, 0.47),
    ("mwnet", 2): ("failed", "failed", "failed"),
}
ERRORS = {
    "diverged": "loss became NaN at epoch 3",
    "failed": "RuntimeError: meta set is empty | check splits.meta_per_class\nTraceback (most recent call last):\n  ...",
}
EPOCHS = 5


def base_row(**over: Any) -> dict[str, Any]:
    """A complete evaluation row (every schema column) with neutral values, updated by ``over``."""
    row: dict[str, Any] = dict(
        run_id=RUN_ID, generation=0, candidate=0, method="", method_kind="", family="ce", params={},
        dataset="digits", arch="mlp2", noise_type="symmetric", noise_rate=0.8, noise_convention="exact",
        noise_rate_realised=0.8, seed=0, task_key="digits/mlp2/symmetric0.8-exact/s0", status="ok",
        error="", val_acc_last=math.nan, val_acc_best=math.nan, test_acc_last=math.nan,
        test_acc_best=math.nan, noisy_val_acc_best=math.nan, test_acc_noisy=math.nan, best_epoch=-1, epochs_run=0, curve_val=[],
        train_loss_last=math.nan, wall_s=0.0, device="cpu", host="worker-1", trainer="standard",
        metric_rule="last", fitness_metric="val_acc_last", evoloss_version="0.1.0", torch_version="2.14.1",
        schema_version=SCHEMA_VERSION, extra={}, execution="single", execution_note="",
        protocol="default", clean_labels_used=0, fitness_rule="", fidelity=1.0, version_change="",
    )
    row.update(over)
    return row


def _curve(final: float, seed: int) -> list[float]:
    """A rising learning curve that ends at ``final`` (clean validation accuracy per epoch)."""
    return [final * (0.5 + 0.5 * (e + 1) / EPOCHS) - 0.002 * seed * (e % 2) for e in range(EPOCHS)]


def compare_row(method: str, task_index: int, seed: int) -> dict[str, Any]:
    """The evaluation row of one (method, task, seed) cell of the synthetic compare run."""
    kind, family, params, wall = METHODS[method]
    dataset, arch, noise_type, rate, split = TASKS[task_index]
    outcome = TEST_ACC[(method, task_index)][seed]
    row = base_row(
        candidate=list(METHODS).index(method), method=method, method_kind=kind, family=family, params=params,
        dataset=dataset, arch=arch, noise_type=noise_type, noise_rate=rate,
        noise_rate_realised=rate - 0.002 * (seed - 1), seed=seed,
        task_key=f"{TASK_LABELS[task_index]}/s{seed}", trainer="mwnet" if method == "mwnet" else "standard",
        extra={"split": split} if method != "mwnet" else {"split": split, "lambda": [0.1, 0.2]},
    )
    if isinstance(outcome, str):
        row.update(status=outcome, error=ERRORS[outcome], wall_s=1.0 if outcome == "diverged" else 0.5,
                   epochs_run=3 if outcome == "diverged" else 0, curve_val=[0.3, 0.2, 0.1] if outcome == "diverged" else [])
        return row
    row.update(
        test_acc_last=outcome, test_acc_best=min(outcome + 0.05, 1.0), val_acc_last=outcome + 0.01,
        val_acc_best=outcome + 0.03, best_epoch=EPOCHS - 2, epochs_run=EPOCHS, curve_val=_curve(outcome + 0.01, seed),
        train_loss_last=0.5, wall_s=wall,
    )
    return row


def compare_rows() -> list[dict[str, Any]]:
    """Every row of the synthetic compare run, in method, task, seed order."""
    return [compare_row(m, t, s) for m in METHODS for t in range(len(TASKS)) for s in SEEDS]


def compare_generation_row(rows: list[dict[str, Any]], generation: int = 0) -> dict[str, Any]:
    """A plausible generation row for a compare run (one 'generation' holding every method)."""
    failed = sum(r["status"] != "ok" for r in rows)
    return dict(
        run_id=RUN_ID, generation=generation, best_fitness=math.nan, mean_fitness=math.nan,
        median_fitness=math.nan, best_candidate=-1, best_params={}, sigma=math.nan, evaluations=len(rows),
        failed=failed, evals_per_s=1.0, wall_s=float(len(rows)), grid_subset=[],
        timestamp=datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
    )


def write_compare_run(run_dir: Path, *, shuffle_seed: int | None = None) -> Path:
    """Write the compare run into ``run_dir`` (rows shuffled with ``shuffle_seed`` when given)."""
    rows = compare_rows()
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(rows)
    store = ParquetStore(run_dir)
    store.append(0, rows, compare_generation_row(rows))
    store.save_state(0, {"kind": "compare"})
    return run_dir


SEARCH_TASKS = (("digits", "mlp2"), ("mnist1d", "mlp2"))


def search_rows(generation: int, popsize: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    """One generation of a Taylor search: ``popsize`` candidates × 2 tasks, candidate 1 of gen 1 diverged."""
    rows = []
    for candidate in range(popsize):
        theta = {f"theta{i}": float(np.round(rng.uniform(-3.0, 3.0), 4)) for i in range(2, 12)}
        for dataset, arch in SEARCH_TASKS:
            acc = float(np.round(0.3 + 0.05 * generation + 0.04 * rng.random(), 4))
            row = base_row(
                run_id="search-test", generation=generation, candidate=candidate, family="taylor", params=theta,
                dataset=dataset, arch=arch, task_key=f"{dataset}/{arch}/symmetric0.8-exact/s0", trainer="population",
                val_acc_last=acc, val_acc_best=acc + 0.01, test_acc_last=acc - 0.01, test_acc_best=acc,
                best_epoch=2, epochs_run=3, curve_val=[acc - 0.1, acc - 0.05, acc], wall_s=0.5,
            )
            if generation == 1 and candidate == 1 and dataset == "digits":
                row.update(status="diverged", error="loss became NaN", val_acc_last=math.nan)
            rows.append(row)
    return rows


def write_search_run(run_dir: Path, *, generations: int = 4, popsize: int = 6, seed: int = 0) -> Path:
    """Write a seeded Taylor search of ``generations`` × ``popsize`` candidates into ``run_dir``."""
    rng = np.random.default_rng(seed)
    store = ParquetStore(run_dir)
    for g in range(generations):
        rows = search_rows(g, popsize, rng)
        scores = {c: np.nanmean([r["val_acc_last"] for r in rows if r["candidate"] == c]) for c in range(popsize)}
        best = max(scores, key=lambda c: scores[c])
        values = np.array(list(scores.values()))
        store.append(g, rows, dict(
            run_id="search-test", generation=g, best_fitness=float(scores[best]), mean_fitness=float(values.mean()),
            median_fitness=float(np.median(values)), best_candidate=best,
            best_params=next(r["params"] for r in rows if r["candidate"] == best), sigma=0.5 * 0.8 ** g,
            evaluations=len(rows), failed=sum(r["status"] != "ok" for r in rows), evals_per_s=4.0 + g,
            wall_s=len(rows) / (4.0 + g), grid_subset=[r["task_key"] for r in rows[:2]],
            timestamp=datetime(2025, 1, 2, 3, 4, g, tzinfo=timezone.utc),
        ))
        store.save_state(g, {"generation": g})
    return run_dir
