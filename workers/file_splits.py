"""Split indices of a dataset that carries a trusted clean set (a user's ``x_val``/``y_val``).

A `RawDataset` with ``clean_pool = m > 0`` has its pool laid out as ``[training rows | m clean
rows]`` (workers/datasets/user_arrays.py). The clean rows are trusted, the training rows carry the
labels as given, so the usual rules of `workers.splits.make_splits` are applied to each part on
its own, with the task's seed:

- clean rows: the clean meta set (``meta_per_class`` / ``meta_total``), then the clean test split
  when the dataset has no official test set (``splits.test``), and every remaining clean row is the
  clean validation split (``x_val`` is used whole: ``splits.val`` does not cut it down);
- training rows: the noisy validation split (``splits.noisy_val``), long-tail subsampling and
  ``max_train``; the rest is the training split.

Without a clean set (``clean_pool = 0``) this is `make_splits` on the pool's clean labels, exactly
as for a built-in dataset. Returned indices are into the whole pool (``test`` into the official
test set when ``test_is_official``), so `workers.materialize` reads every split from the pool.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from evoloss.workers.datasets import RawDataset
from evoloss.workers.splits import SplitIndices, make_splits
from evoloss.workers.task import Splits


def dataset_splits(raw: RawDataset, splits: Splits, *, seed: int, imbalance: float = 1.0) -> SplitIndices:
    """The disjoint split indices of ``raw`` for one task (module docstring)."""
    official = None if raw.x_test is None else len(raw.x_test)
    labels = raw.y_train.numpy()
    if raw.clean_pool == 0:
        return make_splits(labels, raw.num_classes, splits, seed=seed, official_test_size=official, imbalance=imbalance)
    n_train = len(labels) - raw.clean_pool
    given = (raw.y_given if raw.y_given is not None else raw.y_train).numpy()
    clean_rules = Splits(val=0.0, test=splits.test if official is None else 0.0, meta_per_class=splits.meta_per_class,
                         meta_total=splits.meta_total)
    clean = make_splits(labels[n_train:], raw.num_classes, clean_rules, seed=seed, official_test_size=official)
    train_rules = Splits(val=0.0, test=0.0, noisy_val=splits.noisy_val, max_train=splits.max_train)
    train = make_splits(given[:n_train], raw.num_classes, train_rules, seed=seed, imbalance=imbalance)
    shift = np.int64(n_train)
    return dataclasses.replace(
        train,
        val=clean.train + shift,
        meta=clean.meta + shift,
        test=clean.test if clean.test_is_official else clean.test + shift,
        test_is_official=clean.test_is_official,
        pool_size=len(labels),
    )


__all__ = ["dataset_splits"]
