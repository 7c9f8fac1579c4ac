"""Users' arrays into a `RawDataset`: the checks every file-backed dataset shares (docs/data.md).

A user's dataset is a set of named arrays: ``x_train`` and ``y_train`` (the labels as given,
possibly noisy), optionally ``y_train_clean`` (the true labels of the same rows), ``x_val``/``y_val``
(a trusted clean set) and ``x_test``/``y_test`` (a clean test set). `check_arrays` refuses anything a
trainer could not use, each time with one line naming the file, the array and the fix: a missing
array or half of a pair, an empty training set, rows that do not match between inputs and labels,
inputs that are not real numbers or hold NaN/inf, labels that are not 1-D integers or lie outside
``[0, num_classes)``, and test/val inputs of another shape than the training inputs.

`user_dataset` then builds the `RawDataset`. Inputs are standardised per channel (axis 1; per
feature for ``[N, D]``) with the statistics of the training rows, as every built-in loader does.
The trusted clean set, when given, is appended to the pool as its last ``clean_pool`` rows; the
splits (workers/file_splits.py) send those rows only to the clean validation, meta and test splits.
With ``y_train_clean`` the pool's labels are the clean ones (``clean_known``) and ``y_given`` the
file's; without it the pool's labels are the file's own.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from evoloss.workers.datasets.registry import RawDataset, labels_tensor

PAIRS = (("x_val", "y_val"), ("x_test", "y_test"))
LABEL_KEYS = ("y_train", "y_train_clean", "y_val", "y_test")
INPUT_KEYS = ("x_train", "x_val", "x_test")
KNOWN_KEYS = ("x_train", "y_train", "y_train_clean", "x_val", "y_val", "x_test", "y_test", "num_classes")
MAX_CLASSES = 100_000


class DataFileError(ValueError):
    """A malformed dataset file: ``file``, the ``field`` (array, column, folder) and the fix, in one line."""

    def __init__(self, file: str, field: str, problem: str, fix: str) -> None:
        self.file, self.field = file, field
        super().__init__(f"dataset file {file}: {field} {problem}; {fix}")


def check_arrays(file: str, arrays: Mapping[str, np.ndarray]) -> int:
    """Check the arrays of one dataset file (module docstring); return the number of classes.

    ``arrays`` may hold ``num_classes`` (a whole number >= 2); otherwise it is 1 + the largest label.
    """
    for key in ("x_train", "y_train"):
        if key not in arrays:
            raise DataFileError(file, f"array {key!r}", "is missing",
                                f"save x_train (inputs) and y_train (integer labels), e.g. "
                                f"np.savez(path, x_train=x, y_train=y); it has {sorted(arrays) or 'no arrays'}")
    for x_key, y_key in PAIRS:
        if (x_key in arrays) != (y_key in arrays):
            have, lack = (x_key, y_key) if x_key in arrays else (y_key, x_key)
            raise DataFileError(file, f"array {lack!r}", f"is missing while {have!r} is given",
                                f"save both {x_key} and {y_key}, or neither")
    for key in INPUT_KEYS:
        if key in arrays:
            _check_inputs(file, key, arrays[key], arrays["x_train"])
    for key in LABEL_KEYS:
        if key in arrays:
            _check_labels(file, key, arrays[key])
    _check_lengths(file, arrays)
    return _num_classes(file, arrays)


def _check_inputs(file: str, key: str, x: np.ndarray, x_train: np.ndarray) -> None:
    """Real numbers, at least ``[N, D]``, finite, and shaped like the training inputs."""
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_) \
            or np.issubdtype(x.dtype, np.complexfloating) or np.issubdtype(x.dtype, np.timedelta64):
        raise DataFileError(file, f"array {key!r}", f"has dtype {x.dtype}, not real numbers",
                            f"save numeric inputs, e.g. {key}.astype(np.float32)")
    if x.ndim < 2:
        raise DataFileError(file, f"array {key!r}", f"has shape {x.shape}, not [N, ...] with one row per sample",
                            f"reshape it, e.g. {key}.reshape(len({key}), -1)")
    if len(x) == 0:
        raise DataFileError(file, f"array {key!r}", "is empty (0 rows)", "give at least one sample per split")
    if key != "x_train" and x.shape[1:] != x_train.shape[1:]:
        raise DataFileError(file, f"array {key!r}", f"has sample shape {x.shape[1:]} but x_train has {x_train.shape[1:]}",
                            "give every split the same input shape")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).reshape(len(x), -1).any(axis=1).sum())
        raise DataFileError(file, f"array {key!r}", f"has NaN or inf values in {bad} row(s)",
                            "remove or impute those rows before saving")


def _check_labels(file: str, key: str, y: np.ndarray) -> None:
    """1-D integers >= 0."""
    if y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.integer):
        raise DataFileError(file, f"array {key!r}", f"has dtype {y.dtype}, not integer class indices",
                            f"save class indices 0..C-1, e.g. {key}.astype(np.int64)")
    if y.ndim != 1:
        raise DataFileError(file, f"array {key!r}", f"has shape {y.shape}, not one label per sample [N]",
                            "save class indices, not one-hot rows (e.g. y.argmax(1))")
    if len(y) and int(y.min()) < 0:
        raise DataFileError(file, f"array {key!r}", f"has negative labels (min {int(y.min())})",
                            "labels must be class indices 0..C-1")


def _check_lengths(file: str, arrays: Mapping[str, np.ndarray]) -> None:
    """Inputs and labels of a split have one row each per sample."""
    for x_key, y_keys in (("x_train", ("y_train", "y_train_clean")), ("x_val", ("y_val",)), ("x_test", ("y_test",))):
        for y_key in y_keys:
            if x_key in arrays and y_key in arrays and len(arrays[y_key]) != len(arrays[x_key]):
                raise DataFileError(file, f"array {y_key!r}", f"has {len(arrays[y_key])} labels for "
                                    f"{len(arrays[x_key])} rows of {x_key!r}", "give one label per sample")


def _num_classes(file: str, arrays: Mapping[str, np.ndarray]) -> int:
    """``num_classes`` of the file, else 1 + the largest label; every label must be below it."""
    largest = max(int(arrays[k].max()) for k in LABEL_KEYS if k in arrays and len(arrays[k]))
    if "num_classes" in arrays:
        value = arrays["num_classes"]
        if value.shape != () or not np.issubdtype(value.dtype, np.integer) or not 2 <= int(value) <= MAX_CLASSES:
            raise DataFileError(file, "array 'num_classes'", f"is {value!r}, not a whole number in [2, {MAX_CLASSES}]",
                                "save it as np.int64(C), or leave it out (then C = largest label + 1)")
        count = int(value)
        for key in LABEL_KEYS:
            if key in arrays and len(arrays[key]) and int(arrays[key].max()) >= count:
                raise DataFileError(file, f"array {key!r}", f"has label {int(arrays[key].max())} outside "
                                    f"[0, {count}) (num_classes = {count})", "fix the labels or num_classes")
        return count
    if not 1 <= largest < MAX_CLASSES:
        raise DataFileError(file, "labels", f"name {largest + 1} class(es); a classification needs 2 to {MAX_CLASSES}",
                            "check y_train (all one class?) or save num_classes")
    return largest + 1


def user_dataset(name: str, arrays: Mapping[str, np.ndarray], num_classes: int) -> RawDataset:
    """The `RawDataset` of checked arrays (module docstring): standardised inputs, the clean pool
    appended, ``y_given`` the file's training labels."""
    x_parts = [arrays["x_train"]] + ([arrays["x_val"]] if "x_val" in arrays else [])
    pool = np.concatenate([np.asarray(x, dtype=np.float64) for x in x_parts])
    n_train = len(arrays["x_train"])
    axes = tuple(a for a in range(pool.ndim) if a != 1)
    train64 = pool[:n_train]
    mean = train64.mean(axis=axes, keepdims=True)
    std = train64.std(axis=axes, keepdims=True)
    std = np.where(std > 0, std, 1.0)
    x_pool = torch.from_numpy(((pool - mean) / std).astype(np.float32))
    x_test = arrays.get("x_test")
    xs = None if x_test is None else torch.from_numpy(((np.asarray(x_test, np.float64) - mean) / std).astype(np.float32))
    given = np.asarray(arrays["y_train"], dtype=np.int64)
    clean_known = "y_train_clean" in arrays
    pool_labels = np.asarray(arrays["y_train_clean"] if clean_known else given, dtype=np.int64)
    val_labels = [np.asarray(arrays["y_val"], dtype=np.int64)] if "y_val" in arrays else []
    y_pool = labels_tensor(np.concatenate([pool_labels, *val_labels]))
    y_given = labels_tensor(np.concatenate([given, *val_labels]))
    y_test = None if x_test is None else labels_tensor(arrays["y_test"])
    return RawDataset(x_pool, y_pool, xs, y_test, int(num_classes), tuple(pool.shape[1:]), name,
                      y_given=y_given, clean_known=clean_known, clean_pool=len(pool) - n_train)


__all__ = ["DataFileError", "KNOWN_KEYS", "check_arrays", "user_dataset"]
