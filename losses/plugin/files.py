"""Plug-in file I/O: strict JSON reading, JSON-data checks, and the all-or-nothing directory write.

- `read_json_object`: one JSON object from a file, size-capped (`MAX_SPEC_BYTES`), UTF-8, no
  duplicate keys — every problem a ValueError naming the file;
- `provenance_json` / `check_finite_json`: free-form metadata checked to be strict JSON data (string
  keys, finite numbers), on the way out and on the way in;
- `write_plugin_dir`: the plug-in directory built beside its target and renamed into place, so an
  error never leaves a half-written plug-in.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Mapping

MAX_SPEC_BYTES = 1 << 20

__all__ = ["MAX_SPEC_BYTES", "check_finite_json", "provenance_json", "read_json_object", "write_plugin_dir"]


# --- reading ----------------------------------------------------------------------------------
def read_json_object(file: Path) -> dict:
    """The JSON object in ``file``: size-capped, UTF-8, no duplicate keys."""
    size = file.stat().st_size
    if size > MAX_SPEC_BYTES:
        raise ValueError(f"{file}: {size} bytes is too large for a loss spec (limit {MAX_SPEC_BYTES} bytes)")
    try:
        text = file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{file}: is not UTF-8 text ({exc.reason} at byte {exc.start}); write it as UTF-8 JSON"
        ) from None
    try:
        data = json.loads(text, object_pairs_hook=_object_without_duplicates)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{file}: is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except ValueError as exc:  # a duplicate key
        raise ValueError(f"{file}: {exc}") from None
    except RecursionError:  # json nests recursively: thousands of [ or { exhaust the stack
        raise ValueError(f"{file}: nests JSON arrays or objects thousands of levels deep; a loss spec needs "
                         "a few") from None
    if not isinstance(data, dict):
        raise ValueError(f"{file}: must be a JSON object {{...}}; got a JSON {type(data).__name__}")
    return data


def _object_without_duplicates(pairs: list[tuple[str, object]]) -> dict:
    """``json.loads`` object hook: a repeated key is an error (json keeps the last one silently)."""
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r} in a JSON object; each field may appear once")
        out[key] = value
    return out


# --- JSON data checks -------------------------------------------------------------------------
def provenance_json(provenance: Mapping | None) -> dict:
    """``provenance`` checked to be strict JSON data (finite numbers, string keys); a copy."""
    if provenance is None:
        return {}
    if not isinstance(provenance, Mapping):
        raise ValueError(
            f"export_plugin: provenance must be a dict of JSON data; got {type(provenance).__name__} {provenance!r}"
        )
    try:
        text = json.dumps(dict(provenance), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"export_plugin: provenance is not JSON-serialisable ({exc}); pass only str, int, finite float, "
            "bool, None, lists and dicts (e.g. str() a path, None for a NaN fitness)"
        ) from None
    bad_keys = _non_string_keys(provenance)
    if bad_keys:
        raise ValueError(
            f"export_plugin: provenance key {bad_keys[0]!r} is not a string; JSON object keys must be strings"
        )
    return json.loads(text)


def _non_string_keys(value: object) -> list[object]:
    """Keys anywhere in nested dicts that are not strings (json.dumps would silently turn them into ones)."""
    if isinstance(value, Mapping):
        bad = [k for k in value if not isinstance(k, str)]
        return bad + [k for v in value.values() for k in _non_string_keys(v)]
    if isinstance(value, (list, tuple)):
        return [k for v in value for k in _non_string_keys(v)]
    return []


def check_finite_json(value: object, field: str, where: str) -> None:
    """Raise on a NaN/Infinity anywhere in nested JSON data, naming its dotted path."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}: field {field!r} is {value!r}; JSON data must hold finite numbers (or null)")
    if isinstance(value, Mapping):
        for key, item in value.items():
            check_finite_json(item, f"{field}.{key}", where)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_finite_json(item, f"{field}[{index}]", where)


# --- writing ----------------------------------------------------------------------------------
def write_plugin_dir(out_dir: str | os.PathLike, files: Mapping[str, str], *, overwrite: bool = False) -> Path:
    """Write ``files`` (name -> UTF-8 text, in order) as the directory ``out_dir``, all or nothing.

    The directory is built beside ``out_dir`` and renamed into place; ``out_dir`` must be absent or
    empty unless ``overwrite``. Raises ValueError for a target that may not be written.
    """
    out_dir = Path(out_dir)
    _check_target(out_dir, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        for file_name, text in files.items():
            _write_text(staging / file_name, text)
        _install_dir(staging, out_dir, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def _check_target(out_dir: Path, overwrite: bool) -> None:
    """Raise unless ``out_dir`` may receive the plug-in (absent, empty, or ``overwrite``)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"export_plugin: out_dir {str(out_dir)!r} exists and is not a directory; choose a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise ValueError(
            f"export_plugin: out_dir {str(out_dir)!r} exists and is not empty; choose a new directory "
            "or pass overwrite=True"
        )


def _write_text(path: Path, text: str) -> None:
    """Write UTF-8 ``text`` and fsync it, so the rename that follows publishes complete files."""
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _install_dir(staging: Path, out_dir: Path, overwrite: bool) -> None:
    """Rename the finished ``staging`` directory to ``out_dir`` (replacing it when allowed)."""
    _check_target(out_dir, overwrite)
    replace_dir(staging, out_dir)


def replace_dir(staging: Path, out_dir: Path) -> None:
    """Rename the finished ``staging`` directory to ``out_dir``; an existing ``out_dir`` is moved aside
    first and put back if the rename fails, then removed (the caller has checked it may go)."""
    if not out_dir.exists():
        os.rename(staging, out_dir)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
    os.rmdir(old)
    os.rename(out_dir, old)
    try:
        os.rename(staging, out_dir)
    except BaseException:
        os.rename(old, out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)
