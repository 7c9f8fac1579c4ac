"""``synthetic``: a seeded Gaussian mixture with configurable size, classes and dimension.

``synthetic:n=4000,c=10,d=20,sep=0.5,seed=0`` (the defaults). Class means ``μ_k ~ N(0, sep²·I_d)``,
inputs ``x = μ_y + ε`` with ``ε ~ N(0, I_d)``; labels are balanced (``i mod c``, then permuted).
With the defaults two class means lie about ``sep·√(2d)`` ≈ 3.2 noise standard deviations
apart: learnable by an MLP but not trivially separable. No official test split.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from evoloss.workers.datasets.registry import DatasetOption, RawDataset, labels_tensor, register_dataset, standardise

SYNTHETIC_OPTIONS = {
    "n": DatasetOption(int, 4000, 2, 10_000_000, "number of samples, >= c"),
    "c": DatasetOption(int, 10, 2, 1000, "number of classes"),
    "d": DatasetOption(int, 20, 1, 100_000, "input dimension"),
    "sep": DatasetOption(float, 0.5, 1e-6, 1e3, "std of the class means in units of the noise std"),
    "seed": DatasetOption(int, 0, 0, 2**32 - 1, "generation seed"),
}


def gaussian_mixture(n: int, c: int, d: int, sep: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw (unstandardised) float64 inputs [n, d] and int64 labels [n] of the mixture."""
    if n < c:
        raise ValueError(f"dataset 'synthetic': n={n} must be >= c={c} (at least one sample per class)")
    rng = np.random.default_rng([seed, 0x5EED])
    means = rng.standard_normal((c, d)) * sep
    y = rng.permutation(np.arange(n, dtype=np.int64) % c)
    x = means[y] + rng.standard_normal((n, d))
    return x, y


@register_dataset("synthetic", options=SYNTHETIC_OPTIONS)
def load_synthetic(root: Path, options: Mapping[str, Any]) -> RawDataset:
    """Seeded Gaussian mixture (no files, no network); vectors [N, D] standardised per feature."""
    x, y = gaussian_mixture(int(options["n"]), int(options["c"]), int(options["d"]), float(options["sep"]),
                            int(options["seed"]))
    x_train, _ = standardise(x, None)
    return RawDataset(x_train, labels_tensor(y), None, None, int(options["c"]), (int(options["d"]),), "synthetic")
