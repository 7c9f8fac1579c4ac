"""The dataset registry: `RawDataset`, `register_dataset`, `load_dataset`, dataset names with options.

A dataset name is ``base`` or ``base:key=value,key=value`` (e.g. ``synthetic:n=4000,c=10,d=20``).
Options are declared by the dataset (`DatasetOption`) and parsed strictly: unknown keys (with close
matches), repeated keys, unparsable or out-of-range values and options given to a dataset that
takes none all raise ValueError. `canonical_name` writes every option out in sorted order, so
``synthetic`` and ``synthetic:n=4000`` name the same data and share one cache entry.

Every loader returns float32 inputs standardised per channel with the statistics of its own
training pool (`standardise`): images ``[N, C, H, W]``, sequences ``[N, 1, L]``, vectors ``[N, D]``
(one "channel" per feature), and int64 labels. Loaded datasets are cached per process in an LRU
keyed by (canonical name, resolved data dir); callers must not modify the cached tensors in place.
"""
from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import math
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

DEFAULT_DATA_DIR = "~/.cache/evoloss"
CACHE_SIZE = 6  # datasets kept per process (CIFAR-10 as float32 is ~0.7 GB)


@dataclass(frozen=True)
class RawDataset:
    """A dataset as loaded: the training pool and the official test set (None when there is none)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor | None
    y_test: torch.Tensor | None
    num_classes: int
    input_shape: tuple[int, ...]
    name: str
    options: Mapping[str, Any] = field(default_factory=dict)
    # Datasets from users' files (workers/datasets/files.py): the training labels as the file gives
    # them (possibly noisy; what noise type "given" trains on), whether ``y_train`` holds known clean
    # labels, and how many trailing rows of the pool are a trusted clean set (``x_val``/``y_val`` of
    # the file) that may only go to the clean val / meta / test splits (workers/file_splits.py).
    y_given: torch.Tensor | None = None
    clean_known: bool = True
    clean_pool: int = 0

    def __post_init__(self) -> None:
        """Check dtypes, shapes and label ranges of both splits."""
        if self.y_given is not None and (self.y_given.dtype != torch.int64 or self.y_given.shape != self.y_train.shape):
            raise ValueError(f"dataset {self.name!r}: y_given must be int64 labels like y_train")
        if not 0 <= self.clean_pool < len(self.y_train):
            raise ValueError(f"dataset {self.name!r}: clean_pool={self.clean_pool} must leave training rows")
        pairs = [("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)]
        for split, x, y in pairs:
            if (x is None) != (y is None):
                raise ValueError(f"dataset {self.name!r}: x_{split} and y_{split} must both be set or both None")
            if x is None:
                continue
            if x.dtype != torch.float32 or y.dtype != torch.int64 or len(x) != len(y):
                raise ValueError(
                    f"dataset {self.name!r}: {split} split must be float32 inputs and int64 labels of equal "
                    f"length, got {x.dtype} {tuple(x.shape)} and {y.dtype} {tuple(y.shape)}"
                )
            if tuple(x.shape[1:]) != tuple(self.input_shape):
                raise ValueError(
                    f"dataset {self.name!r}: x_{split} has shape {tuple(x.shape)}, input_shape {self.input_shape}"
                )
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                raise ValueError(f"dataset {self.name!r}: {split} labels outside [0, {self.num_classes})")


@dataclass(frozen=True)
class DatasetOption:
    """One option of a parametrised dataset name: its type, default and inclusive valid range."""

    kind: type  # int | float | str (str: options of file-backed names, e.g. table's label column)
    default: int | float
    low: float = -math.inf
    high: float = math.inf
    doc: str = ""

    def parse(self, dataset: str, key: str, text: str) -> int | float:
        """Parse the text of one option value and range-check it."""
        try:
            value = self.kind(text)
        except ValueError:
            raise ValueError(
                f"dataset {dataset!r}: option {key}={text!r} is not a valid {self.kind.__name__} ({self.doc})"
            ) from None
        return self.check(dataset, key, value)

    def check(self, dataset: str, key: str, value: int | float) -> int | float:
        """Range-check one option value (TypeError for a wrong type)."""
        if self.kind is str:
            if not isinstance(value, str) or not value.strip():
                raise TypeError(f"dataset {dataset!r}: option {key} must be a non-empty text, got {value!r}")
            return value.strip()
        wrong_int = self.kind is int and not isinstance(value, (int, np.integer))
        if isinstance(value, bool) or wrong_int or not isinstance(value, (int, float, np.integer, np.floating)):
            raise TypeError(f"dataset {dataset!r}: option {key} must be a {self.kind.__name__}, got {value!r}")
        if not (math.isfinite(value) and self.low <= value <= self.high):
            raise ValueError(
                f"dataset {dataset!r}: option {key}={value!r} is outside [{self.low:g}, {self.high:g}] ({self.doc})"
            )
        return value


Loader = Callable[[Path, Mapping[str, Any]], RawDataset]


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset: its loader, declared options and semantic class map."""

    name: str
    loader: Loader
    options: Mapping[str, DatasetOption]
    semantic_map: str | None  # key of workers.noise.SEMANTIC_MAPS, or None
    doc: str
    takes_path: bool = False  # the name is ``base:PATH[,key=value...]`` (a user's file or folder)


_DATASETS: dict[str, DatasetEntry] = {}
_CACHE: OrderedDict[tuple[str, str], RawDataset] = OrderedDict()


def register_dataset(
    name: str,
    *,
    options: Mapping[str, DatasetOption] | None = None,
    semantic_map: str | None = None,
    takes_path: bool = False,
) -> Callable[[Loader], Loader]:
    """Decorator: register ``loader(root, options) -> RawDataset`` as dataset ``name``.

    ``semantic_map`` names the class map of ``asymmetric/semantic`` noise for this dataset.
    ``takes_path``: the dataset is named ``name:PATH[,key=value...]``; PATH (relative to the working
    directory) is resolved to an absolute path and handed to the loader as ``options["path"]``.

    Raises:
        ValueError: ``name`` is already registered or is not a lower-case identifier.
    """

    def deco(loader: Loader) -> Loader:
        """Register ``loader`` under ``name``."""
        if not name.replace("_", "").isalnum() or name.lower() != name:
            raise ValueError(f"dataset name {name!r} must be lower-case letters, digits and '_'")
        if name in _DATASETS:
            raise ValueError(f"dataset {name!r} is already registered (by {_DATASETS[name].loader.__module__})")
        doc = (loader.__doc__ or "").strip()
        _DATASETS[name] = DatasetEntry(name, loader, dict(options or {}), semantic_map, doc, takes_path)
        return loader

    return deco


def list_datasets(pattern: str = "*") -> list[str]:
    """Registered dataset base names matching a glob ``pattern``, sorted."""
    return sorted(n for n in _DATASETS if fnmatch.fnmatch(n, pattern))


def get_dataset_entry(name: str) -> DatasetEntry:
    """The registry entry of a dataset name (options allowed: ``synthetic:n=100`` → ``synthetic``)."""
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a string, got {type(name).__name__} {name!r}")
    base = name.split(":", 1)[0].strip()
    if base not in _DATASETS:
        close = difflib.get_close_matches(base, list(_DATASETS), n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"unknown dataset {base!r}.{hint} Valid: {', '.join(sorted(_DATASETS))}")
    return _DATASETS[base]


def parse_dataset_name(name: str) -> tuple[DatasetEntry, dict[str, int | float]]:
    """Split ``base:key=value,...`` into the registry entry and the full option dict (defaults filled;
    a file-backed name's absolute path under ``"path"``)."""
    entry, given = _parse_given(name)
    options = {k: given.get(k, opt.default) for k, opt in entry.options.items()}
    if entry.takes_path:
        options["path"] = given["path"]
    return entry, options


def canonical_name(name: str) -> str:
    """The dataset name with every option written out in sorted order (``digits`` stays ``digits``)."""
    return _canonical(*parse_dataset_name(name))


def _parse_given(name: str) -> tuple[DatasetEntry, dict[str, int | float]]:
    """The registry entry and the options the name itself sets (strictly parsed)."""
    entry = get_dataset_entry(name)
    given: dict[str, int | float] = {}
    if entry.takes_path:
        return entry, _parse_path_name(entry, name)
    if ":" not in name:
        return entry, given
    if not entry.options:
        raise ValueError(f"dataset {entry.name!r} takes no options, got {name!r}; use {entry.name!r}")
    for item in name.split(":", 1)[1].split(","):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not key or not value:
            raise ValueError(f"dataset {name!r}: option {item!r} must look like key=value (e.g. {_example(entry)})")
        if key not in entry.options:
            close = difflib.get_close_matches(key, list(entry.options), n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ValueError(f"dataset {entry.name!r}: unknown option {key!r}.{hint} Valid: {', '.join(entry.options)}")
        if key in given:
            raise ValueError(f"dataset {name!r}: option {key!r} is given twice")
        given[key] = entry.options[key].parse(entry.name, key, value)
    return entry, given


def _parse_path_name(entry: DatasetEntry, name: str) -> dict[str, Any]:
    """``base:PATH[,key=value...]``: the absolute PATH (relative ones against the working directory)
    and the trailing options (declared keys only; strictly parsed)."""
    rest = name.split(":", 1)[1] if ":" in name else ""
    pieces = rest.split(",")
    given: dict[str, Any] = {}
    while len(pieces) > 1 and "=" in pieces[-1]:
        key, _, value = (part.strip() for part in pieces.pop().partition("="))
        if key not in entry.options:
            close = difflib.get_close_matches(key, list(entry.options), n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            valid = ", ".join(entry.options) or "none"
            raise ValueError(f"dataset {name!r}: unknown option {key!r}.{hint} Valid options: {valid}")
        if key in given:
            raise ValueError(f"dataset {name!r}: option {key!r} is given twice")
        given[key] = entry.options[key].parse(entry.name, key, value)
    path = ",".join(pieces).strip()
    if not path:
        raise ValueError(f"dataset {name!r} needs a path: write {entry.name}:PATH (relative to the working directory)")
    given["path"] = str(Path(path).expanduser().resolve())
    return given


def _canonical(entry: DatasetEntry, options: Mapping[str, int | float]) -> str:
    """``base:k=v,...`` with every option, keys sorted (file-backed: ``base:/abs/path,k=v,...``)."""
    if entry.takes_path:
        rest = [f"{k}={options[k]}" for k in sorted(options) if k != "path"]
        return f"{entry.name}:" + ",".join([str(options["path"]), *rest])
    if not options:
        return entry.name
    return entry.name + ":" + ",".join(f"{k}={options[k]!r}" for k in sorted(options))


def validate_dataset_name(name: str, data_dir: str | os.PathLike | None = None) -> str:
    """The canonical name of dataset ``name``; a file-backed one (``npz:PATH`` ...) is also read and
    checked now, so a malformed file is refused before anything runs (config resolution calls this).

    Raises:
        ValueError / TypeError / FileNotFoundError: unknown dataset, bad options, or a missing or
            malformed file (naming the file, the field and the fix).
    """
    entry, options = parse_dataset_name(name)
    if entry.takes_path:
        load_dataset(name, data_dir)
    return _canonical(entry, options)


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """``data_dir`` if given, else ``$EVOLOSS_DATA_DIR``, else ``~/.cache/evoloss`` (user-expanded)."""
    chosen = data_dir if data_dir not in (None, "") else os.environ.get("EVOLOSS_DATA_DIR") or DEFAULT_DATA_DIR
    return Path(chosen).expanduser().resolve()


def download_requested() -> bool:
    """True when the environment asks loaders to download missing files (``EVOLOSS_DOWNLOAD=1``)."""
    return os.environ.get("EVOLOSS_DOWNLOAD", "0").strip().lower() in ("1", "true", "yes")


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, seed: int | None = None) -> RawDataset:
    """Load dataset ``name`` (options allowed) from ``data_dir`` (see `resolve_data_dir`), cached.

    Args:
        seed: generation seed of generated datasets (those with a ``seed`` option: ``synthetic``,
            ``mnist1d``), used when the name does not set one; file-backed datasets ignore it.

    Raises:
        ValueError: unknown dataset or bad options (with close matches); the name's ``seed``
            option contradicting ``seed``.
        FileNotFoundError: a file-backed dataset's files are missing (names the path and the fix).
    """
    entry, given = _parse_given(name)
    if seed is not None and "seed" in entry.options:
        if "seed" in given and given["seed"] != seed:
            raise ValueError(f"dataset {name!r} sets seed={given['seed']} but load_dataset got seed={seed}; give one")
        given["seed"] = entry.options["seed"].check(entry.name, "seed", seed)
    options = {k: given.get(k, opt.default) for k, opt in entry.options.items()}
    if entry.takes_path:
        options["path"] = given["path"]
    canonical = _canonical(entry, options)
    root = resolve_data_dir(data_dir)
    key = (canonical, str(root)) if not entry.takes_path else (canonical, str(root), _file_stamp(options["path"]))
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    raw = entry.loader(root, dict(options))
    if raw.name != canonical:
        raw = dataclasses.replace(raw, name=canonical, options=dict(options))
    _CACHE[key] = raw
    while len(_CACHE) > CACHE_SIZE:
        _CACHE.popitem(last=False)
    return raw


def _file_stamp(path: str) -> str:
    """Size and modification time of a dataset file (a changed file is read again, not served from cache)."""
    try:
        st = os.stat(path)
    except OSError:
        return "missing"
    return f"{st.st_size}:{st.st_mtime_ns}"


def clear_dataset_cache() -> None:
    """Forget every cached dataset of this process."""
    _CACHE.clear()


def cached_dataset_keys() -> list[tuple[str, str]]:
    """(canonical name, data dir) of the cached datasets, least recently used first."""
    return list(_CACHE)


def standardise(x_train: np.ndarray, x_test: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-channel standardisation with the training pool's statistics (axis 1 = channel/feature).

    ``x = (x − mean_c) / std_c`` with mean/std over every axis but 1 of ``x_train`` (float64
    statistics; a constant channel keeps std 1). Returns float32 tensors.
    """
    xt = np.asarray(x_train, dtype=np.float64)
    axes = tuple(a for a in range(xt.ndim) if a != 1)
    mean = xt.mean(axis=axes, keepdims=True)
    std = xt.std(axis=axes, keepdims=True)
    std = np.where(std > 0, std, 1.0)

    def apply(x: np.ndarray) -> torch.Tensor:
        """Standardise one array with the training statistics."""
        return torch.from_numpy(((np.asarray(x, dtype=np.float64) - mean) / std).astype(np.float32))

    return apply(xt), None if x_test is None else apply(x_test)


def labels_tensor(y: np.ndarray | torch.Tensor | list) -> torch.Tensor:
    """Labels as a contiguous int64 tensor."""
    return torch.as_tensor(np.asarray(y, dtype=np.int64)).contiguous()


def missing_files_error(dataset: str, missing: list[Path], how: str) -> FileNotFoundError:
    """The FileNotFoundError of a file-backed dataset: which files, where, and how to get them."""
    listed = ", ".join(str(p) for p in missing)
    return FileNotFoundError(
        f"dataset {dataset!r}: missing {listed}. {how} Or set EVOLOSS_DOWNLOAD=1 to let torchvision download "
        "them, or point task.data_dir / EVOLOSS_DATA_DIR at a folder that has them."
    )


def _example(entry: DatasetEntry) -> str:
    """An example name with every option at its default (for error messages)."""
    return f"{entry.name}:" + ",".join(f"{k}={opt.default!r}" for k, opt in entry.options.items())
