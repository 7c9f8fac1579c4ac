"""``mnist1d``: MNIST-1D generated locally (Greydanus 2020), cached under the data dir as .npz.

Generated with ``mnist1d.data.make_dataset`` and the package's default arguments (4,000 train +
1,000 test sequences of length 40 at ``n=5000``), never with its ``get_dataset``, which downloads.
``mnist1d:n=5000,seed=42`` are the defaults (``seed`` is the generator's own ``args.seed``). The
generator seeds Python's and NumPy's global RNGs; we save and restore both around the call so a
worker's global state is left as it was. The arrays are written once to
``<data_dir>/mnist1d/mnist1d_n<n>_seed<seed>.npz`` (temp file + rename) and read back with
``allow_pickle=False``; an unwritable data dir only costs the cache. Inputs become ``[N, 1, 40]``
standardised with the training pool's mean/std. Semantic noise uses the digit map.
"""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from evoloss.workers.datasets.registry import DatasetOption, RawDataset, labels_tensor, register_dataset, standardise

MNIST1D_OPTIONS = {
    "n": DatasetOption(int, 5000, 100, 1_000_000, "total samples (80% train, 20% test), a multiple of 10"),
    "seed": DatasetOption(int, 42, 0, 2**32 - 1, "the generator's args.seed"),
}
_KEYS = ("x", "y", "x_test", "y_test")


def mnist1d_cache_path(root: Path, n: int, seed: int) -> Path:
    """Where the generated arrays of ``mnist1d:n=<n>,seed=<seed>`` are cached."""
    return Path(root) / "mnist1d" / f"mnist1d_n{n}_seed{seed}.npz"


def generate_mnist1d(n: int, seed: int) -> dict[str, np.ndarray]:
    """Run the local generator (no network), leaving the global RNG states untouched."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = int(n)
    args.seed = int(seed)
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return {k: np.asarray(data[k]) for k in _KEYS}


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when the .npz file is absent."""
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as f:
        if set(_KEYS) - set(f.files):
            lacking = sorted(set(_KEYS) - set(f.files))
            raise ValueError(f"dataset 'mnist1d': cache file {path} lacks {lacking}; delete it to regenerate")
        return {k: f[k] for k in _KEYS}


def _write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write the arrays atomically (temp file + rename); a failing write only loses the cache."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    except OSError:
        return  # read-only data dir: regenerate next time
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; the cache is shared by every worker of the host
        os.replace(tmp, path)
    except OSError:
        Path(tmp).unlink(missing_ok=True)


@register_dataset("mnist1d", options=MNIST1D_OPTIONS, semantic_map="digits10")
def load_mnist1d(root: Path, options: Mapping[str, Any]) -> RawDataset:
    """MNIST-1D: [N, 1, 40] sequences, 10 classes, official 80/20 train/test split."""
    n, seed = int(options["n"]), int(options["seed"])
    if n % 10:
        raise ValueError(f"dataset 'mnist1d': option n={n} must be a multiple of 10 (samples per class x 10)")
    path = mnist1d_cache_path(root, n, seed)
    arrays = _read_cache(path)
    if arrays is None:
        arrays = generate_mnist1d(n, seed)
        _write_cache(path, arrays)
    x_train, x_test = standardise(arrays["x"][:, None, :], arrays["x_test"][:, None, :])
    length = int(arrays["x"].shape[1])
    return RawDataset(x_train, labels_tensor(arrays["y"]), x_test, labels_tensor(arrays["y_test"]), 10,
                      (1, length), "mnist1d")
