"""The cleanlab trainer: seeded K-fold out-of-sample probabilities, cleanlab's issue filter, CE on the rest."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from evoloss.losses import LossSpec
from evoloss.workers import cleanlab_method as cm
from evoloss.workers.materialize import materialize
from evoloss.workers.task import Budget, NoiseSpec, Splits, Task


def test_folds_partition_the_rows_stratified_and_seeded() -> None:
    labels = np.repeat(np.arange(3), 10)
    folds = cm.fold_indices(labels, 5, seed=3)
    held = np.concatenate([h for _, h in folds])
    assert sorted(held.tolist()) == list(range(30))
    for train, h in folds:
        assert set(train).isdisjoint(h) and len(train) + len(h) == 30
        assert np.bincount(labels[h], minlength=3).tolist() == [2, 2, 2]
    again = cm.fold_indices(labels, 5, seed=3)
    assert all((a[1] == b[1]).all() for a, b in zip(folds, again))
    assert any((a[1] != b[1]).any() for a, b in zip(folds, cm.fold_indices(labels, 5, seed=4)))
    rare = cm.fold_indices(np.array([0, 0, 0, 1, 1, 1, 2]), 3, seed=0)  # class 2 has 1 < 3 samples: plain folds
    assert sorted(np.concatenate([h for _, h in rare]).tolist()) == list(range(7))


def test_out_of_sample_probabilities_never_come_from_a_network_that_saw_the_row(monkeypatch) -> None:
    seen: list[set[int]] = []

    class Recorder(torch.nn.Module):
        def __init__(self, rows):
            super().__init__()
            self.rows = rows

        def forward(self, x):
            return torch.zeros(len(x), 3)

    def fake_train(task, data, rows, device):
        seen.append(set(rows.tolist()))
        return Recorder(rows)

    monkeypatch.setattr(cm, "train_ce", fake_train)
    x = torch.arange(12, dtype=torch.float32)[:, None]
    data = type("D", (), {"y_train": torch.tensor([0, 1, 2] * 4), "x_train": x, "num_classes": 3})()
    probs = cm.CleanlabTrainer(folds=4).out_of_sample_probs(Task("digits", "mlp2"), data, "cpu")
    assert len(seen) == 4 and np.allclose(probs, 1 / 3)
    held = [set(range(12)) - s for s in seen]
    assert sorted(r for h in held for r in h) == list(range(12))


def test_issue_stats_precision_and_recall_against_the_truly_mislabelled() -> None:
    clean = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    noisy = torch.tensor([1, 1, 2, 2, 1, 2, 0, 0])  # rows 0, 3, 7 are wrong
    issues = np.array([True, True, False, True, False, False, False, False])  # 2 of 3 flagged are wrong
    data = type("D", (), {"y_train": noisy, "y_train_clean": clean, "info": {"clean_labels_known": True}})()
    stats = cm.issue_stats(data, issues)
    assert stats["flagged"] == 3 and stats["kept"] == 5
    assert stats["precision"] == pytest.approx(2 / 3) and stats["recall"] == pytest.approx(2 / 3)
    assert stats["kept_noise_rate"] == pytest.approx(1 / 5)
    data.info = {"clean_labels_known": False}
    assert cm.issue_stats(data, issues)["precision"] is None


def test_find_issues_flags_confidently_contradicted_labels() -> None:
    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(3), 40)
    probs = np.full((120, 3), 0.05)
    probs[np.arange(120), truth] = 0.9
    labels = truth.copy()
    wrong = rng.choice(120, 12, replace=False)
    labels[wrong] = (truth[wrong] + 1) % 3
    flagged = np.flatnonzero(cm.find_issues(labels, probs, "prune_by_noise_rate"))
    assert set(flagged) == set(wrong)
    with pytest.raises(ValueError, match="non-finite"):
        cm.find_issues(labels, np.full((120, 3), np.nan), "both")


def test_find_issues_never_forks_a_process_pool(monkeypatch) -> None:
    """cleanlab's default n_jobs forks a multiprocessing.Pool, which can deadlock inside a Ray actor
    whose torch runs OpenMP threads (a compare job hung once until its timeout): find_issues runs
    single-process, and a Pool created anyway fails the test."""
    import multiprocessing

    def no_pool(*args, **kwargs):
        raise AssertionError("find_issues started a multiprocessing.Pool")

    monkeypatch.setattr(multiprocessing, "Pool", no_pool)
    truth = np.repeat(np.arange(4), 300)  # large enough that cleanlab would parallelise by default
    probs = np.full((1200, 4), 0.1)
    probs[np.arange(1200), truth] = 0.7
    assert not cm.find_issues(truth, probs, "both").any()


def test_fit_trains_ce_on_the_kept_rows_and_records_the_pruning(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    clean = rng.integers(0, 3, 150)
    x = (np.eye(3)[clean] * 4 + rng.normal(size=(150, 3))).astype(np.float32)
    given = np.where(rng.random(150) < 0.3, (clean + 1) % 3, clean)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=given, y_train_clean=clean)
    task = Task(f"npz:{tmp_path / 'd.npz'}", "mlp2", noise=NoiseSpec("given", 0.0),
                budget=Budget(epochs=3, batch_size=32), splits=Splits(val=0.2, test=0.2))
    (record,) = cm.CleanlabTrainer(folds=3).fit(task, [LossSpec("ce")])
    stats = record.extra["cleanlab"]
    assert record.status == "ok" and record.trainer == "cleanlab" and stats["train"] == 90
    assert stats["flagged"] + stats["kept"] == 90 and stats["flagged"] > 0
    assert record.extra["steps"] == 3 * -(-stats["kept"] // 32)  # the final network saw the kept rows only
    data = materialize(task)
    assert stats["recall"] is not None and 0 < stats["precision"] <= 1
    assert (cm.CleanlabTrainer(folds=3).fit(task, [LossSpec("ce")], data=data)[0].extra["cleanlab"]["flagged"]
            == stats["flagged"])  # seeded


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="folds=1"):
        cm.CleanlabTrainer(folds=1)
    with pytest.raises(ValueError, match="filter_by='nope'"):
        cm.CleanlabTrainer(filter_by="nope")
