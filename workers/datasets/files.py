"""Datasets from users' files: ``npz:PATH`` (NumPy arrays) and ``table:PATH,label=NAME`` (Parquet/CSV).

``npz:PATH`` reads ``x_train``, ``y_train`` and optionally ``y_train_clean``, ``x_val``/``y_val``,
``x_test``/``y_test`` and ``num_classes`` with ``np.load(allow_pickle=False)``: an array of Python
objects (a pickle) is refused, never unpickled. Any other key is refused with the close matches
(a typo such as ``y_trian`` must not silently drop the clean labels).

``table:PATH,label=NAME[,clean=NAME][,split=NAME]`` reads a Parquet (``.parquet``/``.pq``) or CSV
(``.csv``) file with pandas: every column but the label, clean-label and split columns is a numeric
feature (``[N, D]`` inputs). Labels are whole numbers, or text/categories mapped to class indices in
sorted order. The ``split`` column, when named, says ``train``, ``val`` or ``test`` per row
(``val`` = the trusted clean set). Both go through the checks of `workers.datasets.user_arrays`;
docs/data.md describes the formats.
"""
from __future__ import annotations

import difflib
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from evoloss.workers.datasets.registry import DatasetOption, RawDataset, register_dataset
from evoloss.workers.datasets.user_arrays import KNOWN_KEYS, DataFileError, check_arrays, user_dataset

TABLE_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
SPLIT_VALUES = ("train", "val", "test")


def read_npz(path: str) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, read with ``allow_pickle=False`` (module docstring)."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"dataset file {path}: does not exist (or is not a file); check the path "
                                "(relative paths start at the working directory)")
    try:
        archive = np.load(file, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataFileError(path, "the file", f"is not a readable .npz archive ({exc})",
                            "write it with np.savez or np.savez_compressed") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataFileError(path, "the file", "holds a single array (.npy), not named arrays",
                            "write it with np.savez(path, x_train=..., y_train=...)")
    with archive:
        for key in archive.files:
            if key not in KNOWN_KEYS:
                close = difflib.get_close_matches(key, KNOWN_KEYS, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise DataFileError(path, f"array {key!r}", "is not a key evoloss reads",
                                    f"{hint}use only {', '.join(KNOWN_KEYS)}")
        return {key: _array(path, archive, key) for key in archive.files}


def _array(path: str, archive: Any, key: str) -> np.ndarray:
    """One array of the archive; an object array (a pickle) or a corrupt member is a DataFileError."""
    try:
        return np.asarray(archive[key])
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise DataFileError(path, f"array {key!r}", "holds Python objects (a pickle), which evoloss never loads",
                                "save a numeric array (np.asarray(v, dtype=np.float32) or np.int64)") from None
        raise DataFileError(path, f"array {key!r}", f"cannot be read ({exc})", "write the file again") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataFileError(path, f"array {key!r}", f"cannot be read ({exc})", "write the file again") from None


@register_dataset("npz", takes_path=True)
def load_npz(root: Path, options: Mapping[str, Any]) -> RawDataset:
    """A user's ``.npz`` file of arrays (x_train, y_train; optional y_train_clean, x_val/y_val, x_test/y_test)."""
    path = str(options["path"])
    arrays = read_npz(path)
    num_classes = check_arrays(path, arrays)
    return user_dataset(f"npz:{path}", arrays, num_classes)


# --- tables ---------------------------------------------------------------------------------------
def read_table(path: str) -> Any:
    """The file as a pandas DataFrame (format from the suffix)."""
    import pandas as pd

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"dataset file {path}: does not exist (or is not a file); check the path "
                                "(relative paths start at the working directory)")
    kind = TABLE_SUFFIXES.get(file.suffix.lower())
    if kind is None:
        raise DataFileError(path, "the file name", f"ends in {file.suffix!r}, not a table format",
                            f"use one of {', '.join(TABLE_SUFFIXES)}")
    try:
        return pd.read_csv(file) if kind == "csv" else pd.read_parquet(file)
    except Exception as exc:  # pandas/pyarrow raise many types for a broken file
        raise DataFileError(path, "the file", f"is not a readable {kind} table ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''})", f"write it with pandas' to_{kind}") from None


def _column(path: str, frame: Any, option: str, name: str) -> Any:
    if name not in frame.columns:
        close = difflib.get_close_matches(name, [str(c) for c in frame.columns], n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise DataFileError(path, f"column {name!r} ({option}=)", "is missing",
                            f"{hint}columns: {', '.join(map(str, frame.columns))}")
    return frame[name]


def _label_codes(path: str, name: str, column: Any, classes: list | None) -> tuple[np.ndarray, list]:
    """Class indices of a label column: integers as they are, text/categories in sorted order."""
    import pandas as pd

    if column.isna().any():
        raise DataFileError(path, f"column {name!r}", f"has {int(column.isna().sum())} missing label(s)",
                            "fill or drop those rows")
    if pd.api.types.is_bool_dtype(column) or pd.api.types.is_float_dtype(column):
        raise DataFileError(path, f"column {name!r}", f"has dtype {column.dtype}, not class labels",
                            "store whole numbers 0..C-1 or class names")
    if pd.api.types.is_integer_dtype(column):
        return column.to_numpy(dtype=np.int64), classes or []
    names = classes or sorted({str(v) for v in column})
    index = {n: i for i, n in enumerate(names)}
    unknown = sorted({str(v) for v in column} - set(index))
    if unknown:
        raise DataFileError(path, f"column {name!r}", f"has classes {unknown[:5]} that the label column lacks",
                            "use the same class names in both columns")
    return np.array([index[str(v)] for v in column], dtype=np.int64), names


def table_arrays(path: str, frame: Any, options: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The named arrays of a table (module docstring)."""
    import pandas as pd

    label, clean, split = options["label"], options["clean"], options["split"]
    for option, name in (("label", label), ("clean", clean), ("split", split)):
        if name != "-":
            _column(path, frame, option, name)  # named columns first: a typo is the likelier mistake
    special = [c for c in (label, clean, split) if c != "-"]
    features = [c for c in frame.columns if c not in special]
    if not features:
        raise DataFileError(path, "feature columns", "are missing", "add at least one numeric feature column")
    for c in features:
        if not (pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])):
            raise DataFileError(path, f"column {c!r}", f"has dtype {frame[c].dtype}, not numbers",
                                "encode it as numbers, or name it as the label/clean/split column")
    x = frame[features].to_numpy(dtype=np.float64)
    y, classes = _label_codes(path, label, _column(path, frame, "label", label), None)
    arrays = {"x_train": x, "y_train": y}
    if clean != "-":
        arrays["y_train_clean"], _ = _label_codes(path, clean, _column(path, frame, "clean", clean), classes or None)
    if classes:
        arrays["num_classes"] = np.int64(max(len(classes), 2))
    if split == "-":
        return arrays
    parts = _column(path, frame, "split", split).astype(str).to_numpy()
    bad = sorted(set(parts) - set(SPLIT_VALUES))
    if bad:
        raise DataFileError(path, f"column {split!r}", f"has values {bad[:5]}", f"use only {', '.join(SPLIT_VALUES)}")
    out = {"num_classes": arrays["num_classes"]} if "num_classes" in arrays else {}
    for part, (xk, yk) in (("train", ("x_train", "y_train")), ("val", ("x_val", "y_val")), ("test", ("x_test", "y_test"))):
        rows = parts == part
        if rows.any() or part == "train":
            out[xk], out[yk] = x[rows], y[rows]
    if "y_train_clean" in arrays:
        out["y_train_clean"] = arrays["y_train_clean"][parts == "train"]
    return out


_TABLE_OPTIONS = {
    "label": DatasetOption(str, "label", doc="the label column (the labels as given)"),
    "clean": DatasetOption(str, "-", doc="a column of known clean labels ('-' = none)"),
    "split": DatasetOption(str, "-", doc="a column of train/val/test per row ('-' = all train)"),
}


@register_dataset("table", takes_path=True, options=_TABLE_OPTIONS)
def load_table(root: Path, options: Mapping[str, Any]) -> RawDataset:
    """A Parquet or CSV table: numeric feature columns and a label column (``label=NAME``)."""
    path = str(options["path"])
    frame = read_table(path)
    if len(frame) == 0:
        raise DataFileError(path, "the table", "has no rows", "give at least one sample")
    arrays = table_arrays(path, frame, options)
    num_classes = check_arrays(path, arrays)
    name = f"table:{path}," + ",".join(f"{k}={options[k]}" for k in sorted(_TABLE_OPTIONS))
    return user_dataset(name, arrays, num_classes)
