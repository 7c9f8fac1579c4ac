"""``cifar10`` and ``cifar100`` in torchvision's on-disk layout, read without unpickling arbitrary code.

Files: ``<data_dir>/cifar-10-batches-py/{data_batch_1..5, test_batch}`` and
``<data_dir>/cifar-100-python/{train, test}``, exactly the folders and batch names of
``torchvision.datasets.CIFAR10/CIFAR100`` (read from those classes). The batches are Python
pickles; torchvision calls ``pickle.load`` on them, which would run any code a tampered file
carries. So we read them with `SafeBatchUnpickler`, which only resolves the few NumPy globals an
array needs, and check that ``data`` is a uint8 [n, 3072] array. Choice: like torchvision's
``_check_integrity`` we require the files, but we do not check the official MD5 sums (test
fixtures are tiny real-format files). ``EVOLOSS_DOWNLOAD=1`` fetches the archive through
torchvision's own downloader (which does check the archive's MD5). Pixels /255 become
``[N, 3, 32, 32]`` standardised per channel with the training pool's mean/std. CIFAR-10 has the
semantic class map ``cifar10``; CIFAR-100 has none.
"""
from __future__ import annotations

import importlib
import pickle
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

_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class SafeBatchUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the NumPy array globals of a CIFAR batch (anything else raises)."""

    def find_class(self, module: str, name: str) -> Any:
        """Resolve an allowed NumPy global; refuse every other one."""
        module = module.replace("numpy.core.", "numpy._core.")
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch file")
        return getattr(importlib.import_module(module), name)


def read_batch(path: Path) -> tuple[np.ndarray, list[int]]:
    """One CIFAR batch file: uint8 images [n, 3, 32, 32] and their labels (``labels``/``fine_labels``)."""
    with open(path, "rb") as f:
        try:
            entry = SafeBatchUnpickler(f, encoding="latin1").load()
        except (pickle.UnpicklingError, EOFError, ValueError) as err:
            raise ValueError(f"{path} is not a CIFAR python batch file: {err}") from None
    if not isinstance(entry, dict):
        raise ValueError(f"{path}: a CIFAR batch is a dict, got {type(entry).__name__}")
    data = entry.get("data")
    labels = entry.get("labels", entry.get("fine_labels"))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"{path}: 'data' must be a uint8 array [n, 3072], got {getattr(data, 'shape', data)!r}")
    if labels is None or len(labels) != len(data):
        raise ValueError(f"{path}: expected {len(data)} 'labels' or 'fine_labels', got {labels!r:.80}")
    return data.reshape(-1, 3, 32, 32), [int(v) for v in labels]


def cifar_files(root: Path, class_name: str) -> tuple[list[Path], list[Path]]:
    """(train batch paths, test batch paths) of torchvision's ``class_name`` under data dir ``root``."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, class_name)
    folder = Path(root) / cls.base_folder
    return [folder / name for name, _ in cls.train_list], [folder / name for name, _ in cls.test_list]


def load_cifar(root: Path, class_name: str, dataset: str, num_classes: int) -> RawDataset:
    """Read every train and test batch of ``class_name``; FileNotFoundError names what is missing."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, class_name)
    train_paths, test_paths = cifar_files(root, class_name)
    missing = [p for p in train_paths + test_paths if not p.is_file()]
    if missing and download_requested():
        from torchvision.datasets.utils import download_and_extract_archive

        download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)
        missing = [p for p in train_paths + test_paths if not p.is_file()]
    if missing:
        raise missing_files_error(dataset, missing, f"Extract {cls.filename} into {root}.")
    x_train, y_train = _read_all(train_paths)
    x_test, y_test = _read_all(test_paths)
    xt, xs = standardise(x_train / 255.0, x_test / 255.0)
    return RawDataset(xt, labels_tensor(y_train), xs, labels_tensor(y_test), num_classes, (3, 32, 32), dataset)


def _read_all(paths: list[Path]) -> tuple[np.ndarray, list[int]]:
    """Concatenated float64 pixels and labels of several batch files."""
    batches = [read_batch(p) for p in paths]
    return np.concatenate([b[0] for b in batches]).astype(np.float64), [v for b in batches for v in b[1]]


@register_dataset("cifar10", semantic_map="cifar10")
def load_cifar10(root: Path, options: Mapping[str, Any]) -> RawDataset:
    """CIFAR-10: 50k/10k 32×32 colour images, 10 classes."""
    return load_cifar(root, "CIFAR10", "cifar10", 10)


@register_dataset("cifar100")
def load_cifar100(root: Path, options: Mapping[str, Any]) -> RawDataset:
    """CIFAR-100 (fine labels): 50k/10k 32×32 colour images, 100 classes."""
    return load_cifar(root, "CIFAR100", "cifar100", 100)
