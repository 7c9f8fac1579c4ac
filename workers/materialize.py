"""`materialize(task) -> TaskData`: dataset + splits + label noise, deterministic for the task's seed.

Three independent random streams derive from ``task.seed`` (NumPy ``default_rng([seed, stream])``),
so changing the noise never moves the split and vice versa: ``[seed, 0]`` draws the split
permutation (`workers.splits`), ``[seed + NOISE_SEED_OFFSET, 1]`` the training-label noise and
``[seed + NOISE_SEED_OFFSET, 2]`` the noisy-validation noise; the noise *process* shared by both
(xia2020's ``W``) comes from ``[seed + NOISE_SEED_OFFSET, 0]``. The dataset itself does not depend
on the task seed (generated datasets take their own ``seed`` option), and nothing touches the
global RNGs. Noise applies to the training split and the noisy validation split only; val, test
and meta keep clean labels. ``TaskData.info`` is JSON-able and records sizes, the dataset's
canonical name and options, and the nominal and realised noise.
"""
from __future__ import annotations

import numpy as np
import torch

from evoloss.workers.datasets import RawDataset, get_dataset_entry, load_dataset
from evoloss.workers.file_splits import dataset_splits
from evoloss.workers.noise import SEMANTIC_MAPS, NoisyLabels, apply_noise, validate_noise_spec
from evoloss.workers.splits import SplitIndices
from evoloss.workers.task import Splits, Task, TaskData

NOISE_SEED_OFFSET = 7_919  # keeps the noise streams apart from the split stream of the same seed


def materialize(task: Task) -> TaskData:
    """Turn a `Task` into tensors: noisy train / clean val / clean test (/ clean meta / noisy val).

    Raises:
        TypeError / ValueError: a malformed task (naming the field, the value and the fix), an
            unknown dataset or noise model, or split sizes the dataset cannot supply.
        FileNotFoundError: a file-backed dataset is not on disk (names the path and the fix).
    """
    _check_task(task)
    model = validate_noise_spec(task.noise)
    raw = load_dataset(task.dataset, task.data_dir)
    imbalance = float(task.noise.imbalance) if task.noise.kind == "longtail" else 1.0
    idx = dataset_splits(raw, task.splits, seed=task.seed, imbalance=imbalance)  # make_splits, or a file's clean set
    class_map = _class_map(task.dataset) if model is not None and model.needs_class_map else None
    y_pool = raw.y_train.numpy()
    train_counts = np.bincount(y_pool[idx.train], minlength=raw.num_classes)
    train_noise = _noisy(task, raw, idx.train, stream=0, class_map=class_map, class_counts=train_counts)
    noisy_val = _noisy(task, raw, idx.noisy_val, stream=1, class_map=class_map, class_counts=train_counts)
    x_test, y_test = _test_tensors(raw, idx)
    has_meta = len(idx.meta) > 0
    has_noisy_val = task.splits.noisy_val > 0
    unknown = task.noise.kind == "given" and not raw.clean_known  # the file has no clean labels of its training rows
    return TaskData(
        x_train=_rows(raw.x_train, idx.train),
        y_train=torch.from_numpy(train_noise.labels),
        y_train_clean=_rows(raw.y_train, idx.train),
        x_val=_rows(raw.x_train, idx.val),
        y_val=_rows(raw.y_train, idx.val),
        x_test=x_test,
        y_test=y_test,
        num_classes=raw.num_classes,
        input_shape=tuple(raw.input_shape),
        x_meta=_rows(raw.x_train, idx.meta) if has_meta else None,
        y_meta=_rows(raw.y_train, idx.meta) if has_meta else None,
        x_noisy_val=_rows(raw.x_train, idx.noisy_val) if has_noisy_val else None,
        y_noisy_val=torch.from_numpy(noisy_val.labels) if has_noisy_val else None,
        noise_rate=float("nan") if unknown else train_noise.noise_rate,
        transition=None if unknown else train_noise.transition,
        noise_convention=train_noise.convention,
        info={**_info(task, raw, idx, train_noise, noisy_val), "clean_labels_known": not unknown,
              **({"noise_rate_realised": None} if unknown else {})},
    )


def _noisy(task: Task, raw: RawDataset, rows: np.ndarray, *, stream: int, class_map: dict | None,
           class_counts: np.ndarray) -> NoisyLabels:
    """Corrupt the clean labels of ``rows`` (features are only handed to models that use them)."""
    model = validate_noise_spec(task.noise)
    features = None
    if model is not None and model.needs_features and len(rows):
        features = raw.x_train[torch.from_numpy(rows)].reshape(len(rows), -1).numpy()
    given = None if raw.y_given is None else raw.y_given.numpy()[rows]  # noise type "given"
    return apply_noise(task.noise, raw.y_train.numpy()[rows], num_classes=raw.num_classes,
                       seed=task.seed + NOISE_SEED_OFFSET, stream=stream, features=features,
                       class_map=class_map, class_counts=class_counts, given_labels=given)


def _class_map(dataset: str) -> dict[int, int]:
    """The semantic class map of ``dataset``; ValueError listing the datasets that have one."""
    from evoloss.workers.datasets import list_datasets

    entry = get_dataset_entry(dataset)
    if entry.semantic_map is None:
        having = [n for n in list_datasets() if get_dataset_entry(n).semantic_map]
        raise ValueError(
            f"noise asymmetric/semantic: dataset {entry.name!r} has no semantic class map (datasets with "
            f"one: {', '.join(having)}); use noise.convention='pairflip' for this dataset"
        )
    return dict(SEMANTIC_MAPS[entry.semantic_map])


def _rows(t: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
    """A fresh contiguous copy of the selected rows (never a view into the cached dataset)."""
    return t[torch.from_numpy(np.asarray(rows, dtype=np.int64))].contiguous()


def _test_tensors(raw: RawDataset, idx: SplitIndices) -> tuple[torch.Tensor, torch.Tensor]:
    """The clean test split: rows of the official test set or of the pool."""
    if idx.test_is_official:
        return _rows(raw.x_test, idx.test), _rows(raw.y_test, idx.test)
    return _rows(raw.x_train, idx.test), _rows(raw.y_train, idx.test)


def _info(task: Task, raw: RawDataset, idx: SplitIndices, train: NoisyLabels, noisy_val: NoisyLabels) -> dict:
    """The JSON-able ``TaskData.info``: sizes, dataset options, nominal and realised noise."""
    counts = np.bincount(raw.y_train.numpy()[idx.train], minlength=raw.num_classes)
    return {
        "dataset": raw.name,
        "dataset_options": dict(raw.options),
        "sizes": idx.sizes(),
        "test_source": "official" if idx.test_is_official else "pool",
        "train_class_counts": [int(c) for c in counts],
        "noise_kind": task.noise.kind,
        "noise_rate_nominal": float(task.noise.rate),
        "noise_rate_realised": train.noise_rate,
        "noise_rate_noisy_val": noisy_val.noise_rate if len(idx.noisy_val) else None,
        "noise_imbalance": float(task.noise.imbalance),
        "expected_transition": train.expected_transition.tolist(),
        "seed": task.seed,
    }


def _check_task(task: Task) -> None:
    """TypeError/ValueError for a malformed task before any data is loaded."""
    if not isinstance(task, Task):
        raise TypeError(f"materialize expects a Task, got {type(task).__name__}")
    if not isinstance(task.splits, Splits):
        raise TypeError(f"task.splits must be a Splits, got {type(task.splits).__name__}")
    seed = task.seed
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"task.seed={seed!r} must be a whole number >= 0")
    if task.data_dir is not None and not isinstance(task.data_dir, str):
        raise TypeError(f"task.data_dir must be a path string or None, got {type(task.data_dir).__name__}")
