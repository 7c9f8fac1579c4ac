"""Split indices: disjoint by index, seeded, sized as asked; long-tail and max_train touch train only."""
from __future__ import annotations

import math

import numpy as np
import pytest

from evoloss.workers.splits import make_splits, split_count
from evoloss.workers.task import Splits

C = 10


def pool(n: int = 1500, seed: int = 0) -> np.ndarray:
    """Unbalanced pool labels (class k has weight k+2)."""
    w = np.arange(2, C + 2, dtype=np.float64)
    return np.random.default_rng(seed).choice(C, size=n, p=w / w.sum()).astype(np.int64)


def parts(idx) -> dict[str, np.ndarray]:
    return {"train": idx.train, "val": idx.val, "test": idx.test, "meta": idx.meta, "noisy_val": idx.noisy_val}


@pytest.mark.parametrize("seed", [0, 5])
@pytest.mark.parametrize("meta", [Splits(meta_per_class=7, noisy_val=0.1), Splits(meta_total=40, val=0.1, test=150)])
def test_pool_splits_are_disjoint_by_index_and_cover_the_pool(seed: int, meta: Splits) -> None:
    y = pool()
    idx = make_splits(y, C, meta, seed=seed)
    sets = parts(idx)
    for name, s in sets.items():
        assert len(np.unique(s)) == len(s), f"{name} repeats an index"
    names = list(sets)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not set(sets[a].tolist()) & set(sets[b].tolist()), f"{a} overlaps {b}"
    assert sorted(np.concatenate(list(sets.values())).tolist()) == list(range(len(y)))


def test_sizes_follow_fractions_and_counts() -> None:
    y = pool(1000)
    idx = make_splits(y, C, Splits(val=0.25, test=100, noisy_val=0.05, meta_per_class=3), seed=1)
    assert (len(idx.val), len(idx.test), len(idx.noisy_val), len(idx.meta)) == (250, 100, 50, 30)
    assert len(idx.train) == 1000 - 250 - 100 - 50 - 30
    assert idx.sizes()["train"] == len(idx.train)


def test_meta_per_class_is_class_balanced() -> None:
    y = pool()
    idx = make_splits(y, C, Splits(meta_per_class=9), seed=2)
    assert np.bincount(y[idx.meta], minlength=C).tolist() == [9] * C


def test_official_test_set_is_used_whole_and_pool_split_excludes_it() -> None:
    y = pool(800)
    idx = make_splits(y, C, Splits(val=0.2, test=0.3), seed=0, official_test_size=123)
    assert idx.test_is_official and idx.test.tolist() == list(range(123))
    assert len(idx.val) + len(idx.train) == 800  # Splits.test ignored: nothing of the pool goes to test


def test_same_seed_same_split_other_seed_other_split() -> None:
    y = pool()
    a, b = make_splits(y, C, Splits(), seed=3), make_splits(y, C, Splits(), seed=3)
    assert all(np.array_equal(x, z) for x, z in zip(parts(a).values(), parts(b).values()))
    c = make_splits(y, C, Splits(), seed=4)
    assert not np.array_equal(a.val, c.val)


def test_longtail_and_max_train_change_train_only() -> None:
    y = pool(3000)
    base = make_splits(y, C, Splits(meta_per_class=5), seed=8)
    lt = make_splits(y, C, Splits(meta_per_class=5, max_train=200), seed=8, imbalance=10.0)
    for name in ("val", "test", "meta", "noisy_val"):
        assert np.array_equal(getattr(base, name), getattr(lt, name)), name
    assert set(lt.train.tolist()) <= set(base.train.tolist())
    assert len(lt.train) == 200 and lt.dropped_max_train > 0 and lt.dropped_longtail > 0


def test_longtail_profile_on_train() -> None:
    y = pool(3000)
    base = make_splits(y, C, Splits(), seed=8)
    lt = make_splits(y, C, Splits(), seed=8, imbalance=20.0)
    n_max = int(np.bincount(y[base.train], minlength=C).min())
    expect = [math.floor(n_max * 20.0 ** (-i / (C - 1)) + 1e-9) for i in range(C)]
    assert np.bincount(y[lt.train], minlength=C).tolist() == expect
    assert lt.dropped_longtail == len(base.train) - sum(expect)


def test_max_train_is_a_seeded_prefix() -> None:
    y = pool()
    full = make_splits(y, C, Splits(), seed=6)
    capped = make_splits(y, C, Splits(max_train=100), seed=6)
    assert np.array_equal(capped.train, full.train[:100])
    assert make_splits(y, C, Splits(max_train=10**6), seed=6).train.tolist() == full.train.tolist()


@pytest.mark.parametrize(
    "value, expect", [(0.0, 0), (0.25, 3), (0.2, 2), (1, 1), (7.0, 7)]
)
def test_split_count_rounds_half_up_or_counts(value: float, expect: int) -> None:
    assert split_count("splits.val", value, 10) == expect


@pytest.mark.parametrize(
    "splits, kwargs, exc, match",
    [
        (Splits(val=1.5), {}, ValueError, "whole number"),
        (Splits(val=-0.1), {}, ValueError, r"splits.val=-0.1"),
        (Splits(test=float("nan")), {}, ValueError, "splits.test=nan"),
        (Splits(val="0.2"), {}, TypeError, "splits.val must be a number"),  # type: ignore[arg-type]
        (Splits(val=0.6, test=0.4), {}, ValueError, "no training data"),
        (Splits(meta_per_class=5, meta_total=10), {}, ValueError, "both set"),
        (Splits(meta_per_class=10**4), {}, ValueError, "class 0 has only"),
        (Splits(meta_per_class=-1), {}, ValueError, "meta_per_class=-1"),
        (Splits(max_train=0), {}, ValueError, "max_train=0"),
        (Splits(), {"seed": -1}, ValueError, "seed=-1"),
        (Splits(), {"imbalance": 10**6}, ValueError, "no training sample"),
    ],
)
def test_bad_splits_raise_clear_errors(splits: Splits, kwargs: dict, exc: type, match: str) -> None:
    kw = {"seed": 0, **kwargs}
    with pytest.raises(exc, match=match):
        make_splits(pool(), C, splits, **kw)
