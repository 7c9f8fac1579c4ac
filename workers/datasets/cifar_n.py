"""``cifar10n:PATH`` / ``cifar100n:PATH``: CIFAR with the human-annotated labels of CIFAR-10N/-100N.

The published label files (Wei et al. 2022, "Learning with noisy labels revisited: a study using
real-world human annotations"; ``CIFAR-10_human.pt``, ``CIFAR-100_human.pt``) are dicts of one label
array per annotation, in the order of the CIFAR training set: CIFAR-10N has ``clean_label``,
``aggre_label``, ``worse_label``, ``random_label1``..``random_label3``; CIFAR-100N has
``clean_label`` and ``noisy_label`` (plus coarse labels). They are read with
``torch.load(weights_only=True)``, allowing only the NumPy array globals (never arbitrary pickles).

The images and the clean labels come from the CIFAR files under the task's data dir (the
``cifar10``/``cifar100`` loaders); the option ``label=`` picks the annotation (defaults:
``worse_label``, 40.2% noise, and ``noisy_label``, 40.2%), which becomes the labels as given
(``noise = {type = "given"}`` trains on them, with the realised rate and transition matrix
recorded against CIFAR's own labels). A file whose ``clean_label`` disagrees with the CIFAR files,
or whose length, dtype or range does not fit, is refused naming the key and the fix.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from evoloss.workers.datasets.cifar import load_cifar
from evoloss.workers.datasets.registry import DatasetOption, RawDataset, labels_tensor, register_dataset
from evoloss.workers.datasets.user_arrays import DataFileError

_NUMPY_GLOBALS = [np._core.multiarray._reconstruct, np.ndarray, np.dtype,
                  *(type(np.dtype(t)) for t in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
                                                 np.uint32, np.uint64))]


def read_label_file(path: str) -> dict[str, np.ndarray]:
    """The label arrays of a CIFAR-N ``.pt`` file (``torch.load(weights_only=True)``)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"dataset file {path}: does not exist (or is not a file); download "
                                "CIFAR-10_human.pt / CIFAR-100_human.pt from the CIFAR-N release")
    try:
        with torch.serialization.safe_globals(_NUMPY_GLOBALS):
            content = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError ... for bad files
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise DataFileError(path, "the file", f"is not a label file torch.load(weights_only=True) accepts ({first})",
                            "use the published CIFAR-N .pt file, or torch.save a dict of integer label arrays") from None
    if not isinstance(content, dict) or not content:
        raise DataFileError(path, "the file", f"holds {type(content).__name__}, not a dict of label arrays",
                            "torch.save({'worse_label': labels, 'clean_label': labels}, path)")
    return {str(k): v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v) for k, v in content.items()}


def noisy_labels(path: str, labels: Mapping[str, np.ndarray], key: str, cifar_labels: np.ndarray,
                 num_classes: int) -> np.ndarray:
    """The annotation ``key`` checked against the CIFAR training labels (module docstring)."""
    if key not in labels:
        raise DataFileError(path, f"key {key!r}", "is missing", f"choose label= one of {', '.join(sorted(labels))}")
    for name in dict.fromkeys([key, "clean_label"]):
        if name not in labels:
            continue
        y = labels[name]
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or len(y) != len(cifar_labels):
            raise DataFileError(path, f"key {name!r}", f"is {y.dtype} {y.shape}, not {len(cifar_labels)} integer labels "
                                "(one per CIFAR training image)", "use the label file of this CIFAR training set")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise DataFileError(path, f"key {name!r}", f"has labels outside [0, {num_classes})",
                                "use the CIFAR-10N file with cifar10n and the CIFAR-100N file with cifar100n")
    if "clean_label" in labels and not np.array_equal(labels["clean_label"], cifar_labels):
        wrong = int(np.sum(labels["clean_label"] != cifar_labels))
        raise DataFileError(path, "key 'clean_label'", f"differs from the CIFAR training labels in {wrong} rows",
                            "use the label file made for this CIFAR copy (same image order)")
    return labels[key].astype(np.int64)


def _with_human_labels(root: Path, class_name: str, dataset: str, num_classes: int,
                       options: Mapping[str, Any]) -> RawDataset:
    """The label file read first (cheap checks before CIFAR's files), then CIFAR with it applied."""
    path, key = str(options["path"]), str(options["label"])
    labels = read_label_file(path)
    raw = load_cifar(root, class_name, dataset, num_classes)
    given = noisy_labels(path, labels, key, raw.y_train.numpy(), raw.num_classes)
    return dataclasses.replace(raw, name=f"{dataset}n:{path},label={key}", y_given=labels_tensor(given),
                               clean_known=True)


@register_dataset("cifar10n", takes_path=True,
                  options={"label": DatasetOption(str, "worse_label", doc="the annotation of CIFAR-10_human.pt")})
def load_cifar10n(root: Path, options: Mapping[str, Any]) -> RawDataset:
    """CIFAR-10 with a CIFAR-10N human annotation as the given labels."""
    return _with_human_labels(root, "CIFAR10", "cifar10", 10, options)


@register_dataset("cifar100n", takes_path=True,
                  options={"label": DatasetOption(str, "noisy_label", doc="the annotation of CIFAR-100_human.pt")})
def load_cifar100n(root: Path, options: Mapping[str, Any]) -> RawDataset:
    """CIFAR-100 with the CIFAR-100N human annotation as the given labels."""
    return _with_human_labels(root, "CIFAR100", "cifar100", 100, options)
