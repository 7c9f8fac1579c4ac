"""``usps`` through ``torchvision.datasets.USPS`` (bz2-compressed libsvm text files).

Files: ``<data_dir>/usps/usps.bz2`` (7,291 train) and ``<data_dir>/usps/usps.t.bz2`` (2,007 test) —
a ``usps`` subfolder of the data dir is the root handed to torchvision. Each line is
``label index:value ...`` with labels 1–10 and pixels in [−1, 1]; torchvision maps them to labels
0–9 and uint8 pixels. Pixels /255 become ``[N, 1, 16, 16]`` standardised with the training pool's
mean/std. Nothing is downloaded unless ``EVOLOSS_DOWNLOAD=1``. Semantic noise uses the digit map.
"""
from __future__ import annotations

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


def usps_files(root: Path) -> list[Path]:
    """The two files torchvision's USPS reads (train, test) for data dir ``root``."""
    import torchvision.datasets as tvd

    return [Path(root) / "usps" / tvd.USPS.split_list[split][1] for split in ("train", "test")]


@register_dataset("usps", semantic_map="digits10")
def load_usps(root: Path, options: Mapping[str, Any]) -> RawDataset:
    """USPS handwritten digits: [N, 1, 16, 16], 10 classes, official train/test split."""
    import torchvision.datasets as tvd

    download = download_requested()
    missing = [p for p in usps_files(root) if not p.is_file()]
    if missing and not download:
        raise missing_files_error("usps", missing, "Put usps.bz2 and usps.t.bz2 (libsvm, bz2) there.")
    folder = str(Path(root) / "usps")
    train = tvd.USPS(folder, train=True, download=download)
    test = tvd.USPS(folder, train=False, download=download)
    x_train, x_test = standardise(_pixels(train.data), _pixels(test.data))
    return RawDataset(x_train, labels_tensor(train.targets), x_test, labels_tensor(test.targets), 10,
                      tuple(x_train.shape[1:]), "usps")


def _pixels(data: Any) -> np.ndarray:
    """uint8 images [N, H, W] as float64 [N, 1, H, W] in [0, 1]."""
    return np.asarray(data, dtype=np.float64)[:, None, :, :] / 255.0
