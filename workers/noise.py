"""Label-noise models behind one registry keyed by ``(kind, convention)`` (docs/noise.md).

Published "r% noise" means different things in different code bases, so every model is a named
convention and every materialised task records which one it used (``"symmetric/exact"`` ...):

=================  ===========  =================================================================
kind               convention   what happens to a training label ``y`` (rate ``r``, ``C`` classes)
=================  ===========  =================================================================
symmetric          exact        exactly ``round(r·N)`` labels change, to another class (APL lineage)
symmetric          transition   drawn from ``T = (1−r)·I + r/(C−1)·(1 − I)`` (Co-teaching lineage)
symmetric          uniform_mix  with prob. ``r`` replaced by a uniform class that may be ``y``, so only
                                ``r(C−1)/C`` change (Meta-Weight-Net / NARL / L2B copies)
asymmetric         pairflip     ``y → y+1 mod C`` with prob. ``r``
asymmetric         semantic     the dataset's class map (``SEMANTIC_MAPS``) with prob. ``r``
asymmetric         oneway       the class map with each mutual pair made one-way (ding §4.1: CIFAR-10
                                TRUCK→AUTOMOBILE, BIRD→AIRPLANE, DEER→HORSE, CAT→DOG; dog stays)
asymmetric         two_class    each class flips to two other classes (seeded per class) with ``r/2``
                                each (shu §4.1 after Meta-Weight-Net [42])
asymmetric         superclass   CIFAR-100 hierarchical corruption (shu §4.1, ding §4.1 after GLC):
                                w.p. ``r`` a uniform class of the same superclass (it may be ``y``)
instance           xia2020      ding-narl §4.2 after Xia et al. 2020 (see `_xia2020`)
longtail           jiang        jiang-dynamic-loss §Experiments: ``y → j`` with prob. ``r·N_j/N``
=================  ===========  =================================================================

Every model draws from a ``numpy.random.Generator`` derived from the seed it is given (never the
global RNG) and returns the noisy labels and its *expected* transition matrix; `apply_noise` adds
the *realised* noise rate and transition matrix (row = clean class, col = noisy class).
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
from scipy.special import ndtr, ndtri

from evoloss.workers.task import NoiseSpec

NOISE_KINDS = ("none", "symmetric", "asymmetric", "instance", "longtail", "given")
# An empty ``NoiseSpec.convention`` means the kind's default, written out in every record.
DEFAULT_CONVENTION = {"symmetric": "exact", "asymmetric": "pairflip", "instance": "xia2020", "longtail": "jiang",
                      "given": "file"}  # given: the labels of a user's file (workers/given_noise.py)
XIA_FLIP_STD = 0.1  # ding-narl §4.2: flip rate ~ N(r, 0.1²) truncated to [0, 1]

# Class maps of ``asymmetric/semantic`` (docs/noise.md); applied simultaneously. A dataset names its
# map when it registers (``register_dataset(..., semantic_map=...)``): digits, mnist, usps and mnist1d
# use "digits10", cifar10 uses "cifar10"; every other dataset (fashion_mnist, kmnist, cifar100,
# synthetic) refuses ``asymmetric/semantic`` with a ValueError that suggests ``pairflip``.
SEMANTIC_MAPS: dict[str, dict[int, int]] = {
    # 10-class handwritten digits: 7→1, 2→7, 5↔6, 3→8
    "digits10": {7: 1, 2: 7, 5: 6, 6: 5, 3: 8},
    # CIFAR-10 (0 airplane, 1 automobile, 2 bird, 3 cat, 4 deer, 5 dog, 7 horse, 9 truck):
    # truck→automobile, bird→airplane, deer→horse, cat↔dog
    "cifar10": {9: 1, 2: 0, 4: 7, 3: 5, 5: 3},
}


@dataclass(frozen=True)
class NoiseContext:
    """What a noise model may need besides the labels.

    ``features``: ``[N, D]`` float inputs (instance noise); ``class_map``: source → target class
    (semantic noise); ``class_counts``: the ``N_j`` of the long-tailed training split (defaults to
    the counts of the labels being corrupted); ``structure_seed``: seeds the parts of the noise
    *process* shared by every split it corrupts (the ``W`` of xia2020).
    """

    num_classes: int
    structure_seed: int
    features: np.ndarray | None = None
    class_map: Mapping[int, int] | None = None
    class_counts: np.ndarray | None = None
    given: np.ndarray | None = None  # the dataset's own labels of these rows (noise type "given")


_Pair = tuple[np.ndarray, np.ndarray]
NoiseFn = Callable[[np.ndarray, float, NoiseContext, np.random.Generator], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class NoiseModel:
    """A registered noise model: its key, its function and the inputs it needs besides labels."""

    kind: str
    convention: str
    fn: NoiseFn
    needs_features: bool = False
    needs_class_map: bool = False
    doc: str = ""


@dataclass(frozen=True)
class NoisyLabels:
    """The result of corrupting one split.

    ``noise_rate``: realised fraction of labels that changed; ``transition``: realised C×C matrix
    (rows of classes absent from the split are identity rows, so every row sums to 1);
    ``expected_transition``: the matrix the model samples from, averaged over the split's samples.
    """

    labels: np.ndarray
    noise_rate: float
    transition: np.ndarray
    expected_transition: np.ndarray
    convention: str


_MODELS: dict[tuple[str, str], NoiseModel] = {}


def register_noise(
    kind: str, convention: str, *, needs_features: bool = False, needs_class_map: bool = False
) -> Callable[[NoiseFn], NoiseFn]:
    """Decorator: register ``fn(labels, rate, ctx, rng) -> (noisy, expected_T)`` as ``kind/convention``."""

    def deco(fn: NoiseFn) -> NoiseFn:
        """Register ``fn`` under (kind, convention)."""
        if kind not in NOISE_KINDS:
            raise ValueError(f"noise kind {kind!r} is not one of {NOISE_KINDS}")
        if (kind, convention) in _MODELS:
            raise ValueError(f"noise model {kind}/{convention} is already registered")
        _MODELS[(kind, convention)] = NoiseModel(
            kind, convention, fn, needs_features, needs_class_map, (fn.__doc__ or "").strip()
        )
        return fn

    return deco


def list_noise_models() -> list[str]:
    """Registered noise models as ``"kind/convention"`` strings, sorted."""
    return sorted(f"{k}/{c}" for k, c in _MODELS)


def validate_noise_spec(spec: NoiseSpec) -> NoiseModel | None:
    """Check a `NoiseSpec`; return its model (None for ``kind="none"``).

    Raises:
        TypeError / ValueError: naming the field, the value received and the valid choices.
    """
    if not isinstance(spec, NoiseSpec):
        raise TypeError(f"noise must be a NoiseSpec, got {type(spec).__name__}")
    rate = _check_fraction("noise.rate", spec.rate)
    imbalance = spec.imbalance
    if isinstance(imbalance, bool) or not isinstance(imbalance, (int, float)) or not math.isfinite(imbalance):
        raise ValueError(f"noise.imbalance={imbalance!r} must be a finite number >= 1 (1 = balanced)")
    if spec.kind not in NOISE_KINDS:
        raise ValueError(_unknown_text("noise.kind", spec.kind, NOISE_KINDS))
    if spec.kind != "longtail" and imbalance != 1.0:
        raise ValueError(f"noise.imbalance={imbalance!r} needs noise.kind='longtail' (got {spec.kind!r})")
    if spec.kind == "none":
        if rate != 0.0 or spec.convention not in ("", "none"):
            raise ValueError(
                f"noise.kind='none' takes no rate or convention (got rate={spec.rate!r}, "
                f"convention={spec.convention!r}); set noise.kind to one of {NOISE_KINDS[1:]}"
            )
        return None
    if spec.kind == "longtail" and imbalance < 1.0:
        raise ValueError(f"noise.imbalance={imbalance!r} must be >= 1 (ratio of the largest to the smallest class)")
    convention = spec.convention or DEFAULT_CONVENTION[spec.kind]
    if (spec.kind, convention) not in _MODELS:
        valid = sorted(c for k, c in _MODELS if k == spec.kind)
        raise ValueError(_unknown_text(f"noise.convention for kind {spec.kind!r}", convention, valid))
    return _MODELS[(spec.kind, convention)]


def convention_name(spec: NoiseSpec) -> str:
    """The resolved convention string recorded with every task: ``"none"`` or ``"kind/convention"``."""
    model = validate_noise_spec(spec)
    return "none" if model is None else f"{model.kind}/{model.convention}"


def apply_noise(
    spec: NoiseSpec,
    labels: np.ndarray,
    *,
    num_classes: int,
    seed: int,
    stream: int = 0,
    features: np.ndarray | None = None,
    class_map: Mapping[int, int] | None = None,
    class_counts: np.ndarray | None = None,
    given_labels: np.ndarray | None = None,
) -> NoisyLabels:
    """Corrupt ``labels`` with the noise model of ``spec``.

    Args:
        seed: the task's noise seed; ``stream`` tells splits apart (train 0, noisy-val 1): their
            sample draws differ while the noise process (xia2020's ``W``) is the same.
        features, class_map, class_counts: see `NoiseContext`; ``given_labels``: its ``given``.

    Raises:
        ValueError: bad spec, labels outside ``[0, num_classes)``, or a missing input the model needs.
    """
    model = validate_noise_spec(spec)
    y = _check_labels(labels, num_classes)
    if model is None:
        eye = np.eye(num_classes)
        return NoisyLabels(y.copy(), 0.0, realised_transition(y, y, num_classes), eye, "none")
    name = f"{model.kind}/{model.convention}"
    if y.size == 0:
        eye = np.eye(num_classes)
        return NoisyLabels(y.copy(), 0.0, eye, eye, name)
    if model.needs_features and (features is None or len(features) != len(y)):
        raise ValueError(f"noise {name} needs features with one row per label (got {_shape(features)})")
    if model.needs_class_map and not class_map:
        raise ValueError(
            f"noise {name} needs the dataset's semantic class map; this dataset has none "
            f"(maps exist for: {', '.join(sorted(SEMANTIC_MAPS))}); use asymmetric/pairflip instead"
        )
    ctx = NoiseContext(num_classes, int(seed), features, class_map, class_counts, given_labels)
    rng = np.random.default_rng([int(seed), 1 + int(stream)])
    noisy, expected = model.fn(y, float(spec.rate), ctx, rng)
    noisy = np.asarray(noisy, dtype=np.int64)
    rate = float(np.mean(noisy != y)) if len(y) else 0.0
    return NoisyLabels(noisy, rate, realised_transition(y, noisy, num_classes), expected, name)


def realised_transition(clean: np.ndarray, noisy: np.ndarray, num_classes: int) -> np.ndarray:
    """Row-normalised confusion counts ``T[i, j] = #(clean=i, noisy=j) / #(clean=i)``.

    A class absent from ``clean`` gets an identity row, so every row sums to 1.
    """
    counts = np.zeros((num_classes, num_classes), dtype=np.float64)
    np.add.at(counts, (np.asarray(clean), np.asarray(noisy)), 1.0)
    totals = counts.sum(axis=1, keepdims=True)
    eye = np.eye(num_classes)
    return np.where(totals > 0, counts / np.maximum(totals, 1.0), eye)


def longtail_class_counts(max_count: int, num_classes: int, imbalance: float) -> np.ndarray:
    """Exponential long-tail profile (jiang-dynamic-loss §Experiments, after Cao et al. 2019).

    ``n_i = floor(max_count · ρ^(−i/(C−1)))`` for class index ``i`` (class 0 is the head, class
    C−1 keeps ``max_count/ρ``); a 1e-9 slack keeps exact products such as 100/100 from rounding down.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes={num_classes} must be >= 2 for a long-tailed profile")
    i = np.arange(num_classes, dtype=np.float64)
    return np.floor(max_count * float(imbalance) ** (-i / (num_classes - 1)) + 1e-9).astype(np.int64)


# --- symmetric ----------------------------------------------------------------------------------


def symmetric_matrix(rate: float, num_classes: int) -> np.ndarray:
    """``T = (1−r)·I + r/(C−1)·(1 − I)``: the nominal matrix of every symmetric convention but uniform_mix."""
    off = rate / (num_classes - 1)
    return np.full((num_classes, num_classes), off) + np.eye(num_classes) * (1.0 - rate - off)


@register_noise("symmetric", "exact")
def _symmetric_exact(y: np.ndarray, rate: float, ctx: NoiseContext, rng: np.random.Generator) -> _Pair:
    """Exactly ``round(r·N)`` labels change (APL). Their per-class counts are apportioned to the class
    sizes by largest remainder, and each class's flipped labels are spread as evenly as possible over
    the other C−1 classes (leftovers to randomly chosen ones), so the realised matrix is within
    2/n_c of the nominal one in every entry."""
    c = ctx.num_classes
    sizes = np.bincount(y, minlength=c)
    quotas = _largest_remainder(rate * sizes, int(math.floor(rate * len(y) + 0.5)), rng)
    noisy = y.copy()
    for k in range(c):
        members = np.flatnonzero(y == k)
        chosen = rng.choice(members, size=int(quotas[k]), replace=False)
        others = np.array([j for j in range(c) if j != k], dtype=np.int64)
        targets = np.repeat(others, len(chosen) // (c - 1))
        extra = rng.choice(others, size=len(chosen) % (c - 1), replace=False)
        noisy[chosen] = rng.permutation(np.concatenate([targets, extra]))
    return noisy, symmetric_matrix(rate, c)


@register_noise("symmetric", "transition")
def _symmetric_transition(y: np.ndarray, rate: float, ctx: NoiseContext, rng: np.random.Generator) -> _Pair:
    """Each label is drawn from row ``y`` of `symmetric_matrix` (flip w.p. r to a uniform other class)."""
    c = ctx.num_classes
    flip = rng.random(len(y)) < rate
    offset = rng.integers(1, c, size=len(y))  # a uniform *other* class: y + {1..C-1} mod C
    return np.where(flip, (y + offset) % c, y), symmetric_matrix(rate, c)


@register_noise("symmetric", "uniform_mix")
def _symmetric_uniform_mix(y: np.ndarray, rate: float, ctx: NoiseContext, rng: np.random.Generator) -> _Pair:
    """With prob. r the label is replaced by a uniform class (possibly itself): ``T = (1−r)·I + r/C``."""
    c = ctx.num_classes
    replace = rng.random(len(y)) < rate
    new = rng.integers(0, c, size=len(y))
    expected = (1.0 - rate) * np.eye(c) + rate / c
    return np.where(replace, new, y), expected


def _largest_remainder(ideal: np.ndarray, total: int, rng: np.random.Generator) -> np.ndarray:
    """Integers summing to ``total`` with ``|out_k − ideal_k| < 1`` (ties broken by ``rng``)."""
    base = np.floor(ideal + 1e-12).astype(np.int64)
    left = total - int(base.sum())
    frac = ideal - base
    order = np.lexsort((rng.random(len(ideal)), -frac))  # largest fractional part first
    base[order[:left]] += 1
    return base


# --- asymmetric ---------------------------------------------------------------------------------


def class_map_matrix(rate: float, num_classes: int, class_map: Mapping[int, int]) -> np.ndarray:
    """Nominal matrix of a class map: ``T[i, m(i)] = r``, ``T[i, i] = 1 − r`` for mapped classes."""
    t = np.eye(num_classes)
    for src, dst in class_map.items():
        t[src, src] = 1.0 - rate
        t[src, dst] += rate
    return t


def _flip_by_map(y: np.ndarray, rate: float, c: int, class_map: Mapping[int, int], rng: np.random.Generator) -> _Pair:
    """Flip each label to ``class_map[y]`` with prob. r, deciding from the original label."""
    bad = {s: d for s, d in class_map.items() if not (0 <= s < c and 0 <= d < c and s != d)}
    if bad:
        raise ValueError(f"class map entries {bad} are not pairs of distinct classes in [0, {c})")
    target = np.arange(c, dtype=np.int64)
    for src, dst in class_map.items():
        target[src] = dst
    flip = rng.random(len(y)) < rate
    # every sample's flip is decided from its ORIGINAL label in one pass: cat↔dog cannot re-flip
    return np.where(flip, target[y], y), class_map_matrix(rate, c, class_map)


@register_noise("asymmetric", "pairflip")
def _pairflip(y: np.ndarray, rate: float, ctx: NoiseContext, rng: np.random.Generator) -> _Pair:
    """``y → (y + 1) mod C`` with prob. r (gao-arl's 40% asymmetric setting, pair-flip form)."""
    c = ctx.num_classes
    return _flip_by_map(y, rate, c, {k: (k + 1) % c for k in range(c)}, rng)


@register_noise("asymmetric", "semantic", needs_class_map=True)
def _semantic(y: np.ndarray, rate: float, ctx: NoiseContext, rng: np.random.Generator) -> _Pair:
    """The dataset's class map (``SEMANTIC_MAPS``) applied with prob. r, all sources simultaneously."""
    return _flip_by_map(y, rate, ctx.num_classes, dict(ctx.class_map or {}), rng)


def one_way(class_map: Mapping[int, int]) -> dict[int, int]:
    """``class_map`` with every mutual pair ``a ↔ b`` kept one way only, ``min(a, b) → max(a, b)``.

    For CIFAR-10's map this is ding §4.1's TRUCK→AUTOMOBILE, BIRD→AIRPLANE, DEER→HORSE, CAT(3)→DOG(5).
    """
    return {s: d for s, d in class_map.items() if not (class_map.get(d) == s and s > d)}


@register_noise("asymmetric", "oneway", needs_class_map=True)
def _oneway(y: np.ndarray, rate: float, ctx: NoiseContext, rng: np.random.Generator) -> _Pair:
    """The dataset's class map made one-way (`one_way`), applied with prob. r (ding-narl §4.1)."""
    return _flip_by_map(y, rate, ctx.num_classes, one_way(dict(ctx.class_map or {})), rng)


def two_class_matrix(rate: float, num_classes: int, structure_seed: int) -> np.ndarray:
    """``T[i, i] = 1 − r`` and ``r/2`` on two distinct other classes per row, drawn per class from the
    noise process's seed (Meta-Weight-Net's ``flip_labels_C_two``, the setting shu §4.1 uses)."""
    rng = np.random.default_rng([int(structure_seed), 0])
    t = np.eye(num_classes) * (1.0 - rate)
    for i in range(num_classes):
        others = np.array([j for j in range(num_classes) if j != i])
        t[i, rng.choice(others, size=2, replace=False)] = rate / 2
    return t


@register_noise("asymmetric", "two_class")
def _two_class(y: np.ndarray, rate: float, ctx: NoiseContext, rng: np.random.Generator) -> _Pair:
    """Each label is drawn from its row of `two_class_matrix` (shu §4.1: "flipped to two classes with
    same probability"); the two classes of a row are the same for every split of a task."""
    if ctx.num_classes < 3:
        raise ValueError(f"noise asymmetric/two_class needs >= 3 classes, got {ctx.num_classes}")
    t = two_class_matrix(rate, ctx.num_classes, ctx.structure_seed)
    return _draw_rows(y, t, rng), t


# CIFAR-100 fine label -> superclass (the dataset's "coarse_labels", torchvision class order).
CIFAR100_SUPERCLASS = np.array([
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11, 6, 11, 5, 10, 7, 6, 13, 15, 3, 15,
    0, 11, 1, 10, 12, 14, 16, 9, 11, 5, 5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13, 16, 19, 2, 4, 6, 19, 5, 5, 8, 19,
    18, 1, 2, 15, 6, 0, 17, 8, 14, 13])


def superclass_matrix(rate: float) -> np.ndarray:
    """``T = (1 − r)·I + (r/5)·B``, ``B[i, j] = 1`` when i, j share a CIFAR-100 superclass (GLC's
    hierarchical corruption: uniform over the 5 classes of the superclass, the true one included)."""
    same = CIFAR100_SUPERCLASS[:, None] == CIFAR100_SUPERCLASS[None, :]
    return (1.0 - rate) * np.eye(100) + rate / 5.0 * same


@register_noise("asymmetric", "superclass")
def _superclass(y: np.ndarray, rate: float, ctx: NoiseContext, rng: np.random.Generator) -> _Pair:
    """CIFAR-100 hierarchical corruption (shu §4.1, ding §4.1, after GLC [16]/[26]); 100 classes only."""
    if ctx.num_classes != 100:
        raise ValueError(f"noise asymmetric/superclass is CIFAR-100's superclass corruption: it needs 100 classes "
                         f"in CIFAR-100's order, got {ctx.num_classes}; use asymmetric/two_class or pairflip")
    t = superclass_matrix(rate)
    return _draw_rows(y, t, rng), t


def _draw_rows(y: np.ndarray, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each label ``y_i`` replaced by a draw from row ``y_i`` of the transition matrix ``t``."""
    u = rng.random(len(y))
    return np.minimum((u[:, None] > np.cumsum(t[y], axis=1)).sum(axis=1), t.shape[1] - 1)


# --- instance-dependent -------------------------------------------------------------------------


def truncated_normal(mean: float, std: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """Draws of ``N(mean, std²)`` truncated to [0, 1] by inverse-CDF sampling."""
    lo, hi = ndtr((0.0 - mean) / std), ndtr((1.0 - mean) / std)
    u = lo + rng.random(size) * (hi - lo)
    return np.clip(mean + std * ndtri(u), 0.0, 1.0)


def xia_flip_probabilities(logits: np.ndarray, y: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Per-sample label distribution of ding-narl §4.2 / Xia et al. 2020.

    ``p_i = q_i · softmax(l_i)`` with ``l_i = x_i · W_{y_i}`` and ``l_{i,y_i} = −∞`` (true class masked),
    then ``p_{i,y_i} = 1 − q_i``. ``logits``: [N, C] values of ``x_i · W_{y_i}``. Returns [N, C] float64.
    """
    rows = np.arange(len(y))
    masked = np.array(logits, dtype=np.float64)
    masked[rows, y] = -np.inf
    masked -= masked.max(axis=1, keepdims=True)
    soft = np.exp(masked)
    soft /= soft.sum(axis=1, keepdims=True)
    p = q[:, None] * soft
    p[rows, y] = 1.0 - q
    return p


@register_noise("instance", "xia2020", needs_features=True)
def _xia2020(y: np.ndarray, rate: float, ctx: NoiseContext, rng: np.random.Generator) -> _Pair:
    """Instance-dependent noise (ding-narl §4.2 after Xia et al. 2020, their Alg. 1).

    Flip rate ``q_i ~ N(r, 0.1²)`` truncated to [0, 1] (so the expected rate is the truncated mean,
    equal to r for 0.3 <= r <= 0.7 and above r near 0); other-class distribution
    ``softmax(x_i · W_{y_i})`` with the true class masked. Choice: ding says "W of size s × c for
    every sample"; like Xia's algorithm we draw one ``W_k ~ N(0, 1)`` of size [features × C] per
    clean class k (in class order, from the task's structure seed, whether or not k occurs), so the
    noise is a fixed function of the instance and is the same process for every split.
    """
    c = ctx.num_classes
    x = np.asarray(ctx.features).reshape(len(y), -1)  # kept in its dtype: CIFAR float64 would be ~1 GB
    w_rng = np.random.default_rng([ctx.structure_seed, 0])
    logits = np.zeros((len(y), c))
    for k in range(c):  # one [D, C] matrix at a time: CIFAR-100's full W would be 245 MB
        w_k = w_rng.standard_normal((x.shape[1], c))
        members = y == k
        logits[members] = x[members].astype(np.float64) @ w_k
    q = truncated_normal(rate, XIA_FLIP_STD, len(y), rng)
    p = xia_flip_probabilities(logits, y, q)
    u = rng.random(len(y))
    noisy = np.minimum((u[:, None] > np.cumsum(p, axis=1)).sum(axis=1), c - 1)
    return noisy, _class_mean_rows(p, y, c)


def _class_mean_rows(p: np.ndarray, y: np.ndarray, c: int) -> np.ndarray:
    """Mean of the per-sample label distributions of each clean class (identity for absent ones)."""
    out = np.eye(c)
    for k in range(c):
        if np.any(y == k):
            out[k] = p[y == k].mean(axis=0)
    return out


# --- long-tailed + noise ------------------------------------------------------------------------


@register_noise("longtail", "jiang")
def _jiang(y: np.ndarray, rate: float, ctx: NoiseContext, rng: np.random.Generator) -> _Pair:
    """jiang-dynamic-loss (CIFAR-N-LT): each label independently becomes class j w.p. ``λ·N_j/N``.

    ``N_j`` are the class counts of the (already long-tailed) training split. Read as: with prob. λ
    the label is redrawn from the class prior ``N_j/N`` (it may stay), so ``T = (1−λ)·I + λ·1·πᵀ``.
    The long-tailed subsampling itself happens in `workers.splits` (training split only).
    """
    c = ctx.num_classes
    counts = np.bincount(y, minlength=c) if ctx.class_counts is None else np.asarray(ctx.class_counts)
    if counts.shape != (c,) or counts.sum() <= 0 or np.any(counts < 0):
        raise ValueError(f"class_counts must be {c} non-negative counts with a positive sum, got {counts!r}")
    prior = counts / counts.sum()
    redraw = rng.random(len(y)) < rate
    new = rng.choice(c, size=len(y), p=prior)
    return np.where(redraw, new, y), (1.0 - rate) * np.eye(c) + rate * prior[None, :]


# --- checks -------------------------------------------------------------------------------------


def _check_fraction(field: str, value: object) -> float:
    """A number in [0, 1] (NaN refused), or TypeError/ValueError naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{field} must be a number in [0, 1], got {type(value).__name__} {value!r}")
    v = float(value)
    if not (0.0 <= v <= 1.0):  # also rejects NaN
        raise ValueError(f"{field}={value!r} must be in [0, 1] (a fraction, e.g. 0.4 for 40% noise)")
    return v


def _check_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Labels as int64 after checking their shape and range."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise ValueError(f"num_classes={num_classes!r} must be an integer >= 2")
    y = np.asarray(labels)
    if y.ndim != 1 or (y.size and not np.issubdtype(y.dtype, np.integer)):
        raise ValueError(f"labels must be a 1-D integer array, got dtype {y.dtype} shape {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got range [{y.min()}, {y.max()}]")
    return y.astype(np.int64)


def _shape(a: np.ndarray | None) -> str:
    """How an optional array is described in error messages."""
    return "None" if a is None else f"shape {tuple(np.shape(a))}"


def _unknown_text(field: str, value: object, valid) -> str:
    """An 'unknown ...' message with close matches and the valid choices."""
    valid = list(valid)
    close = difflib.get_close_matches(str(value), valid, n=3)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    return f"unknown {field} {value!r}.{hint} Valid: {', '.join(valid)}"


# The "given" noise type (the labels of a user's file) registers in its own module.
from evoloss.workers import given_noise  # noqa: E402,F401
