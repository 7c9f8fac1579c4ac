"""``digits``: scikit-learn's bundled 8×8 handwritten digits (1,797 samples, 10 classes, no network).

Pixels (0–16) become ``[N, 1, 8, 8]`` float32 standardised with the pool's mean/std. There is no
official test split (`workers.splits` carves one). Semantic noise uses the digit map.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from evoloss.workers.datasets.registry import RawDataset, labels_tensor, register_dataset, standardise


@register_dataset("digits", semantic_map="digits10")
def load_digits(root: Path, options: Mapping[str, Any]) -> RawDataset:
    """sklearn ``load_digits``: [1797, 1, 8, 8] images, labels 0–9."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    x, _ = standardise(bunch.images[:, None, :, :], None)
    return RawDataset(x, labels_tensor(bunch.target), None, None, 10, (1, 8, 8), "digits")
