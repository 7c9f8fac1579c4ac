"""``mnist``, ``fashion_mnist``, ``kmnist`` through torchvision's real loaders (IDX files).

Files live where torchvision looks for them: ``<data_dir>/<MNIST|FashionMNIST|KMNIST>/raw/`` with the
four uncompressed IDX files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``); torchvision's legacy ``processed/`` tensors
are accepted too. Nothing is downloaded unless ``EVOLOSS_DOWNLOAD=1``. Pixels /255 become
``[N, 1, 28, 28]`` standardised with the training pool's mean/std. Only ``mnist`` (digits) has a
semantic class map; ``asymmetric/semantic`` noise on the other two is refused.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from evoloss.workers.datasets.registry import (
    RawDataset,
    download_requested,
    labels_tensor,
    missing_files_error,
    register_dataset,
    standardise,
)


def idx_files(root: Path, class_name: str) -> list[Path]:
    """The raw IDX files torchvision's MNIST-style class ``class_name`` reads under ``root``."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, class_name)
    raw = Path(root) / class_name / "raw"
    return [raw / os.path.splitext(os.path.basename(name))[0] for name, _ in cls.resources]


def _has_legacy(root: Path, class_name: str) -> bool:
    """Whether torchvision's legacy processed/*.pt tensors are present."""
    processed = Path(root) / class_name / "processed"
    return (processed / "training.pt").is_file() and (processed / "test.pt").is_file()


def load_idx_dataset(root: Path, class_name: str, dataset: str) -> RawDataset:
    """Read train + test of an MNIST-style torchvision dataset; FileNotFoundError when absent."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, class_name)
    download = download_requested()
    missing = [p for p in idx_files(root, class_name) if not p.is_file()]
    if missing and not download and not _has_legacy(root, class_name):
        raise missing_files_error(
            dataset, missing, f"Put the four uncompressed IDX files of {class_name} in {missing[0].parent}."
        )
    train = cls(str(root), train=True, download=download)
    test = cls(str(root), train=False, download=download)
    x_train, x_test = standardise(_pixels(train.data), _pixels(test.data))
    shape = tuple(x_train.shape[1:])
    return RawDataset(x_train, labels_tensor(train.targets), x_test, labels_tensor(test.targets), 10, shape, dataset)


def _pixels(data: Any) -> np.ndarray:
    """uint8 images [N, H, W] as float64 [N, 1, H, W] in [0, 1]."""
    return np.asarray(data, dtype=np.float64)[:, None, :, :] / 255.0


@register_dataset("mnist", semantic_map="digits10")
def load_mnist(root: Path, options: Mapping[str, Any]) -> RawDataset:
    """MNIST (LeCun et al.): 60k/10k 28×28 digits via ``torchvision.datasets.MNIST``."""
    return load_idx_dataset(root, "MNIST", "mnist")


@register_dataset("fashion_mnist")
def load_fashion_mnist(root: Path, options: Mapping[str, Any]) -> RawDataset:
    """Fashion-MNIST: 60k/10k 28×28 clothing images via ``torchvision.datasets.FashionMNIST``."""
    return load_idx_dataset(root, "FashionMNIST", "fashion_mnist")


@register_dataset("kmnist")
def load_kmnist(root: Path, options: Mapping[str, Any]) -> RawDataset:
    """Kuzushiji-MNIST: 60k/10k 28×28 cursive Japanese characters via ``torchvision.datasets.KMNIST``."""
    return load_idx_dataset(root, "KMNIST", "kmnist")
