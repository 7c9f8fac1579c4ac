"""JSON capture and in-place restore of a ``cma.CMAEvolutionStrategy``'s evolving state (no pickle).

What is saved: every *plain-data* attribute (None, bool, int, float, str, numpy scalar, numeric
ndarray, and lists/tuples/str-keyed dicts of those) of the pycma objects that ask/tell change,
listed in `STATE_PATHS`. Everything else is left to the constructor, which rebuilds it identically
from the same config: options, derived parameters (``sp``), functions (``randn``, eigen method),
the logger and timers, boundary handler, solution archives (empty between generations) and caches
keyed by tuples. Arrays and lists shared by several attributes (``es.C is es.sm.C``) are stored once
and written back as one shared object.

Encoding (strict JSON): finite floats as numbers; NaN/±inf as ``{"float": "nan"}``; numpy scalars as
``{"np": dtype, "v": ...}``; arrays as ``{"nd": dtype, "shape": [...], "data": [...]}``; tuples as
``{"tuple": [...]}``; dicts as ``{"dict": {...}}``; a second reference as ``{"ref": "sm.C"}``.
Restore only assigns decoded values onto attributes of objects that the fresh strategy already has;
it never imports or instantiates anything named in the state.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from cma.utilities.utils import ElapsedWCTime

# The pycma objects (attribute paths from the strategy) whose plain-data attributes are saved.
STATE_PATHS: tuple[str, ...] = (
    "", "sm", "adapt_sigma", "sigma_vec", "best", "best.last", "fit", "_stoptolxstagnation", "_stopdict",
)
# Plain but not state: the arguments of the last tell (large, only read by pycma's ``tell2``) and
# the constructor's own record of its inputs.
_SKIP = frozenset({"_tell2_args", "inputargs", "inopts"})
_NUMERIC_KINDS = frozenset("biuf")


class _NotPlain(Exception):
    """Raised while encoding a value that is not plain data (the attribute is then skipped)."""


def encode_value(value: Any) -> Any:
    """``value`` as strict-JSON data (see the module docstring); raises TypeError if not plain."""
    try:
        return _encode(value, None, "")
    except _NotPlain as exc:
        raise TypeError(f"{type(value).__name__} is not plain data ({exc})") from None


def decode_value(data: Any) -> Any:
    """The inverse of `encode_value` (references are not allowed here)."""
    return _decode(data, None)


def _encode(value: Any, seen: dict[int, str] | None, path: str) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.generic):
        if value.dtype.kind not in _NUMERIC_KINDS:
            raise _NotPlain(f"numpy scalar of dtype {value.dtype}")
        return {"np": value.dtype.str, "v": _encode(value.item(), None, path)}
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"float": repr(value)}
    if isinstance(value, (np.ndarray, list)) and seen is not None:
        if id(value) in seen:
            return {"ref": seen[id(value)]}
        encoded = _encode(value, None, path)
        seen[id(value)] = path  # only once it proved plain: a ref always points at a saved value
        return encoded
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in _NUMERIC_KINDS:
            raise _NotPlain(f"array of dtype {value.dtype}")
        flat = [_encode(v, None, path) for v in value.reshape(-1).tolist()]
        return {"nd": value.dtype.str, "shape": list(value.shape), "data": flat}
    if type(value) is list:
        return [_encode(v, None, path) for v in value]
    if type(value) is tuple:
        return {"tuple": [_encode(v, None, path) for v in value]}
    if type(value) is dict:
        if not all(isinstance(k, str) for k in value):
            raise _NotPlain("dict with non-string keys")
        return {"dict": {k: _encode(v, None, path) for k, v in value.items()}}
    raise _NotPlain(type(value).__name__)


def _decode(data: Any, refs: dict[str, Any] | None) -> Any:
    if isinstance(data, list):
        return [_decode(v, refs) for v in data]
    if not isinstance(data, dict):
        return data
    if "float" in data:
        return float(data["float"])  # "nan", "inf", "-inf"
    if "np" in data:
        return np.dtype(data["np"]).type(_decode(data["v"], refs))
    if "nd" in data:
        flat = [_decode(v, refs) for v in data["data"]]
        return np.array(flat, dtype=np.dtype(data["nd"])).reshape(data["shape"])
    if "tuple" in data:
        return tuple(_decode(v, refs) for v in data["tuple"])
    if "dict" in data:
        return {k: _decode(v, refs) for k, v in data["dict"].items()}
    raise ValueError(f"unreadable value in CMA state: {str(data)[:80]}")


def _resolve(es: Any, path: str) -> Any:
    obj = es
    for name in filter(None, path.split(".")):
        obj = getattr(obj, name)
    return obj


def capture_es(es: Any) -> dict[str, Any]:
    """The evolving state of pycma strategy ``es`` as ``{path: {attribute: encoded value}}``."""
    seen: dict[int, str] = {}
    captured: dict[str, Any] = {}
    for path in STATE_PATHS:
        obj = _resolve(es, path)
        attrs: dict[str, Any] = {}
        for name, value in vars(obj).items():
            if name in _SKIP:
                continue
            try:
                attrs[name] = _encode(value, seen, f"{path}.{name}" if path else name)
            except _NotPlain:
                continue
        entry: dict[str, Any] = {"attrs": attrs}
        if isinstance(obj, dict):  # pycma's stop dictionary: its items are the active reasons
            entry["items"] = encode_value({str(k): v for k, v in obj.items()})
        captured[path] = entry
    return captured


def restore_es(es: Any, captured: dict[str, Any]) -> None:
    """Write `capture_es` output back into a freshly constructed ``es`` with the same config.

    Raises:
        ValueError: the state names an object path that this pycma's strategy does not have.
    """
    unknown = sorted(set(captured) - set(STATE_PATHS))
    if unknown:
        raise ValueError(f"CMA state has unknown object paths {unknown}; expected {list(STATE_PATHS)}")
    deferred: list[tuple[Any, str, str]] = []
    for path in STATE_PATHS:
        if path not in captured:
            raise ValueError(f"CMA state lacks object {path or 'es'!r}; it was not written by this version")
        try:
            obj = _resolve(es, path)
        except AttributeError:
            raise ValueError(
                f"this pycma strategy has no object {path!r}; the state needs the pycma that wrote it"
            ) from None
        for name, data in captured[path]["attrs"].items():
            if isinstance(data, dict) and "ref" in data:
                deferred.append((obj, name, data["ref"]))
            else:
                setattr(obj, name, _decode(data, None))
        if "items" in captured[path]:
            obj.clear()
            obj.update(decode_value(captured[path]["items"]))
    for obj, name, ref in deferred:  # shared arrays/lists point at the restored original
        owner, _, attr = ref.rpartition(".")
        setattr(obj, name, getattr(_resolve(es, owner), attr))
    if es.countiter > 0 and not hasattr(es, "timer"):
        # pycma creates its wall-clock timer in the first ask (only its 'timeout' criterion reads
        # it); a resumed strategy starts a fresh one, paused as after a tell.
        es.timer = ElapsedWCTime()
        es.timer.pause()
