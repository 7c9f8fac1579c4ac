"""Checks across a task grid's datasets, architectures and noise that need the data itself.

Run while a config is resolved (`search.config.check_task_names`), before any run directory
exists, so that a task that cannot work is one line and exit 2, never a grid of failed rows:

- noise type ``given`` needs a dataset that carries its own labels, and a clean subset for the
  clean validation (fitness) split: a file's ``y_train_clean``, or its ``x_val``/``y_val``
  (``val/`` of a folder, ``split = val`` rows of a table);
- a user's model factory (``MODULE:FUNCTION``) must build for each file-backed dataset's input
  shape and class count and map two rows to logits ``[2, C]`` (`workers.archs.check_user_model`).
"""
from __future__ import annotations

import os
from typing import Sequence

from evoloss.workers.archs import check_user_model
from evoloss.workers.datasets import get_dataset_entry, load_dataset
from evoloss.workers.given_noise import GIVEN_DATASETS_HINT
from evoloss.workers.task import NoiseSpec


def check_given_noise(dataset: str, data_dir: str | os.PathLike | None = None) -> None:
    """ValueError unless ``dataset`` has given labels and a clean subset (module docstring)."""
    entry = get_dataset_entry(dataset)
    if not entry.takes_path:
        raise ValueError(f"noise type 'given' trains on a dataset's own labels, but {entry.name!r} has only clean "
                         f"labels; {GIVEN_DATASETS_HINT}, or use a synthetic noise type")
    raw = load_dataset(dataset, data_dir)
    if raw.y_given is None:
        raise ValueError(f"noise type 'given': dataset {dataset!r} carries no labels of its own; {GIVEN_DATASETS_HINT}")
    if not raw.clean_known and raw.clean_pool == 0:
        raise ValueError(
            f"dataset file {dataset.split(':', 1)[1].split(',')[0]}: keys 'y_train_clean' and 'x_val'/'y_val' are "
            "missing, and noise type 'given' needs one of them: fitness and model selection are measured on a "
            "clean validation split, which the given (noisy) labels cannot supply; save y_train_clean (true labels "
            "of some or all rows) or a trusted x_val/y_val set (folders: val/; tables: split=val rows)")


def check_task_inputs(datasets: Sequence[str], archs: Sequence[str], noise: Sequence[NoiseSpec],
                      data_dir: str | os.PathLike | None = None) -> list[tuple[str, int, str]]:
    """Every problem of the grid as ``(key, index, message)``: ``key`` is ``datasets`` or ``archs``."""
    problems: list[tuple[str, int, str]] = []
    if any(n.kind == "given" for n in noise):
        for i, dataset in enumerate(datasets):
            try:
                check_given_noise(dataset, data_dir)
            except (ValueError, OSError) as exc:
                problems.append(("datasets", i, str(exc)))
    for j, arch in enumerate(archs):
        if ":" not in arch:
            continue
        for dataset in datasets:
            if not get_dataset_entry(dataset).takes_path:
                continue  # built-in shapes are known to the trainers; the factory is checked on the file-backed ones
            raw = load_dataset(dataset, data_dir)
            try:
                check_user_model(arch, tuple(raw.input_shape), raw.num_classes)
            except ValueError as exc:
                problems.append(("archs", j, f"{exc} (dataset {dataset})"))
    return problems


__all__ = ["check_given_noise", "check_task_inputs"]
