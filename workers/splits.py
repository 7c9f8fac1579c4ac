"""Disjoint train / val / test / meta / noisy-val index sets of one task (docs/noise.md).

Order of operations, each step seeded from the task seed and none consuming another's stream:

1. one permutation of the dataset's training pool is drawn *first* (stream "split");
2. walking that permutation: the clean test split (only when the dataset has no official test
   set; otherwise the official test set is used whole and ``Splits.test`` is ignored), then the
   clean meta set (``meta_per_class``: the first k of each class, so class-balanced; or
   ``meta_total``: the next k samples, not balanced), the clean validation split, the noisy
   validation split, and the rest is the training split;
3. long-tailed subsampling (``imbalance`` > 1) keeps, per class, the first ``n_i`` training samples
   of the permutation order with the exponential profile of `workers.noise.longtail_class_counts`
   and ``max_count`` = the smallest class count of the training split (so every class can supply
   its quota; class 0 is the head);
4. ``max_train`` keeps the first ``max_train`` training indices (the permutation makes it a seeded
   random subset).

Every set is a subset of a distinct slice of the permutation, so train never overlaps
meta/val/test/noisy-val by construction; samples dropped in steps 3–4 are not reused elsewhere.
Sizes are fractions of the pool (0 <= v < 1, rounded half up) or counts (whole numbers >= 1).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from evoloss.workers.noise import longtail_class_counts
from evoloss.workers.task import Splits

SPLIT_STREAM = 0  # the stream of the task seed that draws the pool permutation


@dataclass(frozen=True)
class SplitIndices:
    """Indices into the dataset's training pool (``test`` into the official test set when
    ``test_is_official``). Empty splits are empty int64 arrays."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    meta: np.ndarray
    noisy_val: np.ndarray
    test_is_official: bool
    pool_size: int
    dropped_longtail: int = 0
    dropped_max_train: int = 0

    def sizes(self) -> dict[str, int]:
        """Split sizes (and the samples dropped by long-tail / max_train), JSON-able."""
        return {
            "pool": self.pool_size,
            "train": len(self.train),
            "val": len(self.val),
            "test": len(self.test),
            "meta": len(self.meta),
            "noisy_val": len(self.noisy_val),
            "dropped_longtail": self.dropped_longtail,
            "dropped_max_train": self.dropped_max_train,
        }


def split_count(field: str, value: object, pool_size: int) -> int:
    """Resolve a split size: a fraction ``0 <= v < 1`` of ``pool_size`` or a whole count ``>= 1``.

    Raises:
        TypeError / ValueError: naming ``field``, the value and the two accepted forms.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{field} must be a number (fraction < 1 or count >= 1), got {type(value).__name__} {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{field}={value!r} must be a fraction in [0, 1) or a whole count >= 1")
    if v < 1:
        return int(math.floor(v * pool_size + 0.5))
    if v != math.floor(v):
        raise ValueError(f"{field}={value!r}: a size >= 1 is a count and must be a whole number (e.g. {math.floor(v)})")
    return int(v)


def make_splits(
    pool_labels: np.ndarray,
    num_classes: int,
    splits: Splits,
    *,
    seed: int,
    official_test_size: int | None = None,
    imbalance: float = 1.0,
) -> SplitIndices:
    """Draw the disjoint split indices of one task (see the module docstring for the order).

    Args:
        pool_labels: clean labels of the dataset's training pool, [N] ints in [0, num_classes).
        official_test_size: size of the dataset's official test set, or None when it has none.
        imbalance: long-tail ratio ρ >= 1 applied to the training split only (1 = none).

    Raises:
        ValueError: sizes that leave no training data, too few samples of a class for
            ``meta_per_class``, both meta options set, or a long-tail quota of zero.
    """
    y = np.asarray(pool_labels, dtype=np.int64)
    n = len(y)
    if not isinstance(splits, Splits):
        raise TypeError(f"splits must be a Splits, got {type(splits).__name__}")
    if y.ndim != 1 or (n and (y.min() < 0 or y.max() >= num_classes)):
        raise ValueError(f"pool_labels must be 1-D ints in [0, {num_classes}), got shape {y.shape}")
    order = np.random.default_rng([_check_seed(seed), SPLIT_STREAM]).permutation(n)  # drawn first
    test_is_official = official_test_size is not None
    n_test = split_count("splits.test", splits.test, n)  # validated even when the official set replaces it
    if test_is_official:
        n_test = 0
    test = np.arange(official_test_size, dtype=np.int64) if test_is_official else order[:n_test]
    rest = order[n_test:]
    meta, rest = _take_meta(y, rest, splits, num_classes)
    n_val = split_count("splits.val", splits.val, n)
    n_noisy_val = split_count("splits.noisy_val", splits.noisy_val, n)
    if n_val + n_noisy_val >= len(rest):
        raise ValueError(
            f"splits leave no training data: pool {n}, test {n_test}, meta {len(meta)}, val {n_val}, "
            f"noisy_val {n_noisy_val}; lower splits.val / splits.test / splits.noisy_val"
        )
    val, noisy_val, train = rest[:n_val], rest[n_val : n_val + n_noisy_val], rest[n_val + n_noisy_val :]
    kept = _longtail(train, y, num_classes, imbalance)
    dropped_longtail = len(train) - len(kept)
    capped = kept[: _check_max_train(splits.max_train, len(kept))]
    return SplitIndices(
        train=capped,
        val=val,
        test=test,
        meta=meta,
        noisy_val=noisy_val,
        test_is_official=test_is_official,
        pool_size=n,
        dropped_longtail=dropped_longtail,
        dropped_max_train=len(kept) - len(capped),
    )


def _take_meta(y: np.ndarray, rest: np.ndarray, splits: Splits, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """The clean meta set (first k of each class, or the next k samples) and what remains."""
    per_class = _check_count("splits.meta_per_class", splits.meta_per_class)
    total = _check_count("splits.meta_total", splits.meta_total)
    if per_class and total:
        raise ValueError(
            f"splits.meta_per_class={per_class} and splits.meta_total={total} are both set; set one of them"
        )
    if total:
        if total >= len(rest):
            raise ValueError(f"splits.meta_total={total} leaves no training data ({len(rest)} samples left)")
        return rest[:total], rest[total:]
    if not per_class:
        return rest[:0], rest
    chosen = np.zeros(len(rest), dtype=bool)
    for k in range(num_classes):
        positions = np.flatnonzero(y[rest] == k)
        if len(positions) < per_class:
            raise ValueError(
                f"splits.meta_per_class={per_class}: class {k} has only {len(positions)} samples left "
                "after the test split; lower meta_per_class"
            )
        chosen[positions[:per_class]] = True
    return rest[chosen], rest[~chosen]


def _longtail(train: np.ndarray, y: np.ndarray, num_classes: int, imbalance: float) -> np.ndarray:
    """Keep the first ``n_i`` of each class (permutation order) for the exponential profile."""
    if imbalance == 1.0:
        return train
    counts = np.bincount(y[train], minlength=num_classes)
    quotas = longtail_class_counts(int(counts.min()), num_classes, imbalance)
    if quotas.min() < 1:
        raise ValueError(
            f"noise.imbalance={imbalance:g} leaves class {int(np.argmin(quotas))} with no training sample "
            f"(the smallest class has {int(counts.min())}); lower the imbalance or use a larger dataset"
        )
    keep = np.zeros(len(train), dtype=bool)
    for k in range(num_classes):
        keep[np.flatnonzero(y[train] == k)[: quotas[k]]] = True
    return train[keep]


def _check_count(field: str, value: object) -> int:
    """A whole number >= 0, or ValueError naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{field}={value!r} must be a whole number >= 0 (0 = no meta set)")
    return int(value)


def _check_max_train(value: object, available: int) -> int:
    """The training-split cap: ``available`` when None, else a whole number >= 1."""
    if value is None:
        return available
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"splits.max_train={value!r} must be a whole number >= 1, or None for no cap")
    return min(int(value), available)


def _check_seed(seed: object) -> int:
    """A whole-number seed >= 0 (NumPy seed sequences refuse negatives)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed={seed!r} must be a whole number >= 0")
    return int(seed)
