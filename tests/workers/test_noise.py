"""Label-noise models against their formulas (docs/noise.md), written independently in float64.

Sampled conventions are compared with a 5-sigma binomial tolerance per entry on 30,000 labels,
so each check is deterministic for its seed and would also hold for almost any other seed.
"""
from __future__ import annotations

import math
import random

import numpy as np
import pytest

from evoloss.workers.noise import (
    SEMANTIC_MAPS,
    apply_noise,
    convention_name,
    list_noise_models,
    longtail_class_counts,
    realised_transition,
    register_noise,
    truncated_normal,
    xia_flip_probabilities,
)
from evoloss.workers.task import NoiseSpec

C = 10
N = 30_000


def labels(n: int = N, c: int = C, seed: int = 0, skew: bool = True) -> np.ndarray:
    """Unbalanced class labels (class k has weight k+1 when skewed)."""
    rng = np.random.default_rng(1000 + seed)
    w = np.arange(1, c + 1, dtype=np.float64) if skew else np.ones(c)
    return rng.choice(c, size=n, p=w / w.sum()).astype(np.int64)


def symmetric_nominal(r: float, c: int) -> np.ndarray:
    t = np.full((c, c), r / (c - 1))
    np.fill_diagonal(t, 1 - r)
    return t


def uniform_mix_nominal(r: float, c: int) -> np.ndarray:
    t = np.full((c, c), r / c)
    np.fill_diagonal(t, 1 - r + r / c)
    return t


def map_nominal(r: float, c: int, mapping: dict[int, int]) -> np.ndarray:
    t = np.eye(c)
    for s, d in mapping.items():
        t[s, s], t[s, d] = 1 - r, r
    return t


def within_sampling_error(real: np.ndarray, nominal: np.ndarray, y: np.ndarray) -> None:
    n_i = np.bincount(y, minlength=nominal.shape[0]).astype(np.float64)[:, None]
    tol = 5 * np.sqrt(nominal * (1 - nominal) / n_i) + 1e-12
    assert np.all(np.abs(real - nominal) <= tol), np.abs(real - nominal).max()
    assert np.all(real[nominal == 0] == 0)  # impossible transitions never happen
    np.testing.assert_allclose(real.sum(axis=1), 1.0)


# --- symmetric/exact ----------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.45, 0.8, 1.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_exact_rate_is_exact_and_matrix_within_rounding(rate: float, seed: int) -> None:
    y = labels(2003, seed=seed)
    out = apply_noise(NoiseSpec("symmetric", rate, "exact"), y, num_classes=C, seed=seed)
    assert out.convention == "symmetric/exact"
    assert np.sum(out.labels != y) == math.floor(rate * len(y) + 0.5)
    assert out.noise_rate == math.floor(rate * len(y) + 0.5) / len(y)
    n_c = np.bincount(y, minlength=C)[:, None]
    assert np.all(np.abs(out.transition - symmetric_nominal(rate, C)) < 2.0 / n_c)
    np.testing.assert_allclose(out.expected_transition, symmetric_nominal(rate, C))


# --- sampled conventions ------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.2, 0.8])
@pytest.mark.parametrize("seed", [0, 3])
def test_transition_convention_matches_its_matrix(rate: float, seed: int) -> None:
    y = labels(seed=seed)
    out = apply_noise(NoiseSpec("symmetric", rate, "transition"), y, num_classes=C, seed=seed)
    within_sampling_error(out.transition, symmetric_nominal(rate, C), y)
    assert abs(out.noise_rate - rate) <= 5 * math.sqrt(rate * (1 - rate) / N)


@pytest.mark.parametrize("rate", [0.4, 0.8])
def test_uniform_mix_flips_only_r_times_c_minus_1_over_c(rate: float) -> None:
    y = labels(seed=2)
    out = apply_noise(NoiseSpec("symmetric", rate, "uniform_mix"), y, num_classes=C, seed=2)
    within_sampling_error(out.transition, uniform_mix_nominal(rate, C), y)
    flips = rate * (C - 1) / C
    assert abs(out.noise_rate - flips) <= 5 * math.sqrt(flips * (1 - flips) / N)
    assert out.noise_rate < rate - 0.5 * rate / C  # the convention trap: "80%" flips 72%


@pytest.mark.parametrize("rate", [0.1, 0.4, 1.0])
def test_pairflip_moves_each_class_to_the_next(rate: float) -> None:
    y = labels(seed=4)
    out = apply_noise(NoiseSpec("asymmetric", rate, "pairflip"), y, num_classes=C, seed=4)
    within_sampling_error(out.transition, map_nominal(rate, C, {i: (i + 1) % C for i in range(C)}), y)


@pytest.mark.parametrize("map_name", sorted(SEMANTIC_MAPS))
def test_semantic_map_matches_its_matrix(map_name: str) -> None:
    y = labels(seed=5, skew=False)
    mapping = SEMANTIC_MAPS[map_name]
    out = apply_noise(NoiseSpec("asymmetric", 0.4, "semantic"), y, num_classes=C, seed=5, class_map=mapping)
    within_sampling_error(out.transition, map_nominal(0.4, C, mapping), y)
    expected_rate = 0.4 * np.isin(y, list(mapping)).mean()
    assert abs(out.noise_rate - expected_rate) <= 5 * math.sqrt(0.4 * 0.6 / N)


def test_semantic_maps_are_the_published_ones_and_apply_simultaneously() -> None:
    assert SEMANTIC_MAPS["digits10"] == {7: 1, 2: 7, 5: 6, 6: 5, 3: 8}
    # CIFAR-10: truck(9)→automobile(1), bird(2)→airplane(0), deer(4)→horse(7), cat(3)↔dog(5)
    assert SEMANTIC_MAPS["cifar10"] == {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}
    y = np.arange(C, dtype=np.int64).repeat(3)
    digits = apply_noise(NoiseSpec("asymmetric", 1.0, "semantic"), y, num_classes=C, seed=0,
                         class_map=SEMANTIC_MAPS["digits10"]).labels
    expect = {0: 0, 1: 1, 2: 7, 3: 8, 4: 4, 5: 6, 6: 5, 7: 1, 8: 8, 9: 9}  # 2→7 stays 7, not 7→1
    assert digits.tolist() == [expect[v] for v in y.tolist()]
    cifar = apply_noise(NoiseSpec("asymmetric", 1.0, "semantic"), y, num_classes=C, seed=0,
                        class_map=SEMANTIC_MAPS["cifar10"]).labels
    assert cifar[y == 3].tolist() == [5] * 3 and cifar[y == 5].tolist() == [3] * 3  # cats and dogs swap


def test_semantic_without_a_class_map_is_refused() -> None:
    with pytest.raises(ValueError, match="pairflip"):
        apply_noise(NoiseSpec("asymmetric", 0.4, "semantic"), labels(100), num_classes=C, seed=0)


# --- instance-dependent (xia2020) ---------------------------------------------------------------


def truncated_normal_mean(mu: float, sd: float) -> float:
    grid = np.linspace(0.0, 1.0, 200_001)
    dens = np.exp(-0.5 * ((grid - mu) / sd) ** 2)
    return float(np.trapezoid(grid * dens, grid) / np.trapezoid(dens, grid))


def test_xia_flip_probabilities_follow_the_formula() -> None:
    rng = np.random.default_rng(0)
    logits, y, q = rng.normal(size=(7, 4)) * 3, rng.integers(0, 4, 7), rng.random(7)
    p = xia_flip_probabilities(logits, y, q)
    for i in range(7):
        others = [j for j in range(4) if j != y[i]]
        e = np.exp(logits[i, others] - logits[i, others].max())
        expect = np.zeros(4)
        expect[others] = q[i] * e / e.sum()
        expect[y[i]] = 1 - q[i]
        np.testing.assert_allclose(p[i], expect, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("mu", [0.0, 0.4, 0.95])
def test_truncated_normal_mean_and_support(mu: float) -> None:
    draws = truncated_normal(mu, 0.1, 40_000, np.random.default_rng(1))
    assert draws.min() >= 0 and draws.max() <= 1
    assert abs(draws.mean() - truncated_normal_mean(mu, 0.1)) <= 5 * 0.1 / math.sqrt(40_000)


@pytest.mark.parametrize("rate", [0.2, 0.4])
def test_xia2020_rate_and_matrix_match_their_expectation(rate: float) -> None:
    c, rng = 4, np.random.default_rng(7)
    y = rng.integers(0, c, N)
    x = rng.normal(size=(N, 6)) * 0.5 + y[:, None] * 0.1
    out = apply_noise(NoiseSpec("instance", rate, "xia2020"), y, num_classes=c, seed=3, features=x)
    mean_q = truncated_normal_mean(rate, 0.1)
    assert abs(out.noise_rate - mean_q) <= 5 * math.sqrt(mean_q * (1 - mean_q) / N)
    within_sampling_error(out.transition, out.expected_transition, y)
    np.testing.assert_allclose(np.diag(out.expected_transition), 1 - mean_q, atol=0.01)
    assert len(set(np.round(out.expected_transition[0, 1:], 3))) > 1  # not symmetric: instance-driven


def test_xia2020_needs_features() -> None:
    with pytest.raises(ValueError, match="features"):
        apply_noise(NoiseSpec("instance", 0.4), labels(50), num_classes=C, seed=0)


# --- long-tailed + noise (jiang) ----------------------------------------------------------------


def test_longtail_profile_matches_cifar10_lt_counts() -> None:
    # the CIFAR-10-LT class sizes of Cao et al. 2019 (n_max 5000), used by jiang-dynamic-loss
    assert longtail_class_counts(5000, 10, 100).tolist() == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert longtail_class_counts(5000, 10, 10).tolist() == [5000, 3871, 2997, 2320, 1796, 1391, 1077, 834, 645, 500]
    assert longtail_class_counts(100, 10, 100).tolist()[-1] == 1


@pytest.mark.parametrize("lam", [0.2, 0.5])
def test_jiang_flips_to_class_j_with_prob_lambda_nj_over_n(lam: float) -> None:
    counts = longtail_class_counts(6000, C, 10)
    y = np.random.default_rng(9).permutation(np.repeat(np.arange(C), counts))
    out = apply_noise(NoiseSpec("longtail", lam, "jiang", imbalance=10), y, num_classes=C, seed=1)
    prior = counts / counts.sum()
    nominal = lam * np.tile(prior, (C, 1)) + (1 - lam) * np.eye(C)
    within_sampling_error(out.transition, nominal, y)
    np.testing.assert_allclose(out.expected_transition, nominal)
    flips = float(np.sum(prior * lam * (1 - prior)))
    assert abs(out.noise_rate - flips) <= 5 * math.sqrt(flips * (1 - flips) / len(y))


# --- registry, determinism, validation ----------------------------------------------------------


def test_registry_lists_every_model_and_refuses_duplicates() -> None:
    assert set(list_noise_models()) >= {
        "symmetric/exact", "symmetric/transition", "symmetric/uniform_mix", "asymmetric/pairflip",
        "asymmetric/semantic", "instance/xia2020", "longtail/jiang",
    }
    with pytest.raises(ValueError, match="already registered"):
        register_noise("symmetric", "exact")(lambda y, r, ctx, rng: (y, np.eye(2)))


def test_default_conventions_are_written_out() -> None:
    assert convention_name(NoiseSpec("symmetric", 0.4)) == "symmetric/exact"
    assert convention_name(NoiseSpec("asymmetric", 0.4)) == "asymmetric/pairflip"
    assert convention_name(NoiseSpec()) == "none"


def test_no_noise_is_identity() -> None:
    y = labels(500)
    out = apply_noise(NoiseSpec(), y, num_classes=C, seed=0)
    assert np.array_equal(out.labels, y) and out.noise_rate == 0 and out.convention == "none"
    np.testing.assert_array_equal(out.transition, np.eye(C))


@pytest.mark.parametrize("spec", [NoiseSpec("symmetric", 0.5, "transition"), NoiseSpec("symmetric", 0.5, "exact"),
                                  NoiseSpec("asymmetric", 0.5), NoiseSpec("longtail", 0.5, imbalance=3)])
def test_same_seed_same_labels_other_seed_other_labels(spec: NoiseSpec) -> None:
    y = labels(2000)
    a = apply_noise(spec, y, num_classes=C, seed=11).labels
    assert np.array_equal(a, apply_noise(spec, y, num_classes=C, seed=11).labels)
    assert not np.array_equal(a, apply_noise(spec, y, num_classes=C, seed=12).labels)
    assert not np.array_equal(a, apply_noise(spec, y, num_classes=C, seed=11, stream=1).labels)


def test_global_rngs_are_untouched() -> None:
    np.random.seed(123)
    random.seed(123)
    before_np, before_py = np.random.get_state()[1].copy(), random.getstate()
    x = np.random.default_rng(0).normal(size=(300, 3))
    for spec in [NoiseSpec("symmetric", 0.5), NoiseSpec("instance", 0.4), NoiseSpec("longtail", 0.3, imbalance=2)]:
        apply_noise(spec, labels(300), num_classes=C, seed=0, features=x)
    assert np.array_equal(np.random.get_state()[1], before_np) and random.getstate() == before_py


def test_realised_transition_gives_absent_classes_an_identity_row() -> None:
    t = realised_transition(np.array([0, 0, 1]), np.array([1, 0, 1]), 3)
    np.testing.assert_allclose(t, [[0.5, 0.5, 0], [0, 1, 0], [0, 0, 1]])


@pytest.mark.parametrize(
    "spec, exc, match",
    [
        (NoiseSpec("symmetric", -0.1), ValueError, r"noise.rate=-0.1 must be in \[0, 1\]"),
        (NoiseSpec("symmetric", 1.5), ValueError, "noise.rate=1.5"),
        (NoiseSpec("symmetric", float("nan")), ValueError, "noise.rate=nan"),
        (NoiseSpec("symmetric", "0.4"), TypeError, "noise.rate must be a number"),  # type: ignore[arg-type]
        (NoiseSpec("symetric", 0.4), ValueError, "Did you mean 'symmetric'"),
        (NoiseSpec("symmetric", 0.4, "exat"), ValueError, "Did you mean 'exact'"),
        (NoiseSpec("none", 0.4), ValueError, "takes no rate"),
        (NoiseSpec("symmetric", 0.4, imbalance=10), ValueError, "needs noise.kind='longtail'"),
        (NoiseSpec("longtail", 0.4, imbalance=0.5), ValueError, "must be >= 1"),
        (NoiseSpec("longtail", 0.4, imbalance=float("inf")), ValueError, "finite"),
    ],
)
def test_bad_noise_specs_raise_clear_errors(spec: NoiseSpec, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        apply_noise(spec, labels(100), num_classes=C, seed=0)


def test_bad_labels_raise() -> None:
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\)"):
        apply_noise(NoiseSpec("symmetric", 0.2), np.array([0, 10]), num_classes=C, seed=0)
    with pytest.raises(ValueError, match="num_classes"):
        apply_noise(NoiseSpec("symmetric", 0.2), np.array([0, 0]), num_classes=1, seed=0)


# --- the papers' asymmetric settings (shu §4.1, ding §4.1) ----------------------------------------
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def test_oneway_cifar10_is_dings_four_one_way_flips():
    spec = NoiseSpec("asymmetric", 0.4, "oneway")
    y = labels()
    out = apply_noise(spec, y, num_classes=C, seed=3, class_map=SEMANTIC_MAPS["cifar10"])
    name = CIFAR10_NAMES.index
    nominal = np.eye(C)
    for src, dst in [("truck", "automobile"), ("bird", "airplane"), ("deer", "horse"), ("cat", "dog")]:
        nominal[name(src), name(src)], nominal[name(src), name(dst)] = 0.6, 0.4
    within_sampling_error(out.transition, nominal, y)
    assert out.transition[name("dog"), name("dog")] == 1.0  # one way: dogs never become cats
    np.testing.assert_allclose(out.expected_transition, nominal)
    assert out.convention == "asymmetric/oneway"


def test_two_class_flips_each_class_to_two_others_with_half_the_rate_each():
    r, y = 0.4, labels()
    spec = NoiseSpec("asymmetric", r, "two_class")
    out = apply_noise(spec, y, num_classes=C, seed=5)
    t = out.expected_transition
    for i in range(C):
        off = [j for j in range(C) if j != i and t[i, j] > 0]
        assert len(off) == 2 and t[i, i] == pytest.approx(1 - r)
        assert t[i, off[0]] == pytest.approx(r / 2) and t[i, off[1]] == pytest.approx(r / 2)
    within_sampling_error(out.transition, t, y)
    assert out.noise_rate == pytest.approx(r, abs=5 * math.sqrt(r * (1 - r) / N))
    other_split = apply_noise(spec, y[:5000], num_classes=C, seed=5, stream=1)
    np.testing.assert_array_equal(other_split.expected_transition, t)  # same process for every split
    with pytest.raises(ValueError, match=">= 3 classes"):
        apply_noise(spec, np.array([0, 1]), num_classes=2, seed=0)


def test_superclass_corruption_stays_inside_cifar100_superclasses():
    r, c = 0.5, 100
    rng = np.random.default_rng(7)
    y = rng.integers(0, c, size=100_000)
    out = apply_noise(NoiseSpec("asymmetric", r, "superclass"), y, num_classes=c, seed=2)
    # CIFAR-100's 20 superclasses of 5 classes each, e.g. superclass 4 = fish (aquarium fish, flatfish, ...)
    coarse = np.array([4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11, 6, 11, 5, 10, 7, 6, 13,
                       15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5, 5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17,
                       4, 2, 0, 17, 4, 18, 17, 10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15,
                       13, 16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13])
    assert np.all(np.bincount(coarse, minlength=20) == 5)
    nominal = np.where(coarse[:, None] == coarse[None, :], r / 5, 0.0) + (1 - r) * np.eye(c)
    np.testing.assert_allclose(out.expected_transition, nominal)
    within_sampling_error(out.transition, nominal, y)
    assert out.noise_rate == pytest.approx(r * 4 / 5, abs=0.01)  # the uniform draw keeps y w.p. 1/5
    with pytest.raises(ValueError, match="100 classes"):
        apply_noise(NoiseSpec("asymmetric", r, "superclass"), labels(), num_classes=C, seed=0)
