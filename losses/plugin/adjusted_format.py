"""The ``adjuster`` section of an adjusted-loss plug-in: its constants and its validation.

`losses.plugin.adjusted` loads the plug-in and `losses.plugin.adjusted_export` writes it (see the
former's docstring for the whole format); this module checks a decoded section as JSON data, field
by field, so every mistake is a ValueError that names the dotted field (``adjuster.snapshots[1].w1``),
the value received and what to write instead:

- ``format`` "evoloss-narl-adjuster", ``format_version`` 1 (the format of NARL's `adjuster_to_dict`),
  ``input`` "logit_margin", ``stage_rule`` "equal_fractions";
- ``param_names``: distinct parameters of the base family; ``hidden``: a positive integer;
- ``offsets``/``scales`` {name: finite float}, scale > 0, and Λ ∈ [offset, offset + scale] inside the
  parameter's valid range (the top may pass a closed bound by `RANGE_SLACK` relative: float rounding
  of e.g. 0.05 + 0.9 — the base loss is unaffected by one ulp);
- ``snapshots``: a non-empty list of {w1 [hidden][1], b1 [hidden], w2 [P][hidden], b2 [P]}, nested
  lists of finite numbers (not bools or strings) of exactly those shapes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import torch

from evoloss.losses.plugin.format import parse_params
from evoloss.losses.registry import Family, unknown_name_message

ADJUSTER_FORMAT = "evoloss-narl-adjuster"  # the format of workers.meta.narl_adjuster.adjuster_to_dict
ADJUSTER_FORMAT_VERSION = 1
INPUT = "logit_margin"
STAGE_RULE = "equal_fractions"
WEIGHT_KEYS = ("w1", "b1", "w2", "b2")
_SECTION_FIELDS = ("format", "format_version", "input", "stage_rule", "param_names", "hidden", "offsets", "scales",
                   "snapshots")
RANGE_SLACK = 1e-12


@dataclass(frozen=True)
class AdjusterSection:
    """The checked ``adjuster`` section of an adjusted-loss plug-in (weights as float64 tensors)."""

    param_names: tuple[str, ...]
    hidden: int
    offsets: dict[str, float]
    scales: dict[str, float]
    snapshots: tuple[dict[str, torch.Tensor], ...]


def parse_adjuster_section(raw: object, family: Family, where: str) -> AdjusterSection:
    """Check every field of the ``adjuster`` section against ``family``; ValueError names the field."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: field 'adjuster' must be a JSON object; got {type(raw).__name__}")
    _check_fields(raw, _SECTION_FIELDS, "adjuster", where)
    for key, expected in (("format", ADJUSTER_FORMAT), ("input", INPUT), ("stage_rule", STAGE_RULE)):
        if raw[key] != expected:
            raise ValueError(f"{where}: field 'adjuster.{key}' is {raw[key]!r}; expected {expected!r} (re-export the "
                             "adjuster with this evoloss)")
    version = raw["format_version"]
    if isinstance(version, bool) or version != ADJUSTER_FORMAT_VERSION:
        raise ValueError(f"{where}: field 'adjuster.format_version' is {version!r}; this evoloss reads version "
                         f"{ADJUSTER_FORMAT_VERSION}")
    names = _parse_param_names(raw["param_names"], family, where)
    hidden = raw["hidden"]
    if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
        raise ValueError(f"{where}: field 'adjuster.hidden' is {hidden!r}; write the adjuster's hidden width as a "
                         "positive integer")
    offsets = _parse_number_map(raw["offsets"], names, "offsets", where)
    scales = _parse_number_map(raw["scales"], names, "scales", where)
    for name in names:
        _check_output_range(family, name, offsets[name], scales[name], where)
    snapshots = raw["snapshots"]
    if not isinstance(snapshots, list) or not snapshots:
        raise ValueError(f"{where}: field 'adjuster.snapshots' must be a non-empty list of weight objects; got "
                         f"{snapshots!r:.60}")
    shapes = {"w1": (hidden, 1), "b1": (hidden,), "w2": (len(names), hidden), "b2": (len(names),)}
    parsed = tuple(_parse_snapshot(s, shapes, f"adjuster.snapshots[{k}]", where) for k, s in enumerate(snapshots))
    return AdjusterSection(names, hidden, offsets, scales, parsed)


def _check_fields(raw: Mapping, known: tuple[str, ...], prefix: str, where: str) -> None:
    """Unknown fields raise (with the close matches); missing ones raise naming the dotted field."""
    for key in raw:
        if key not in known:
            message = unknown_name_message("field", f"{prefix}.{key}", [f"{prefix}.{k}" for k in known])
            raise ValueError(f"{where}: " + message)
    for key in known:
        if key not in raw:
            raise ValueError(f"{where}: field '{prefix}.{key}' is missing; the section needs {', '.join(known)}")


def _parse_param_names(raw: object, family: Family, where: str) -> tuple[str, ...]:
    """A non-empty list of distinct parameter names of ``family``."""
    if not isinstance(raw, list) or not raw or not all(isinstance(n, str) for n in raw):
        raise ValueError(f"{where}: field 'adjuster.param_names' must be a non-empty list of parameter names of "
                         f"{family.name!r}; got {raw!r:.60}")
    for index, name in enumerate(raw):
        if name in raw[:index]:
            raise ValueError(f"{where}: field 'adjuster.param_names' repeats {name!r}; name each parameter once")
        if name not in family.param_names:
            raise ValueError(f"{where}: field 'adjuster.param_names': {name!r} is not a parameter of loss family "
                             f"{family.name!r} (its parameters: {', '.join(family.param_names)})")
    return tuple(raw)


def _parse_number_map(raw: object, names: tuple[str, ...], key: str, where: str) -> dict[str, float]:
    """{name: finite float} for exactly ``names``."""
    if not isinstance(raw, Mapping) or set(raw) != set(names):
        raise ValueError(f"{where}: field 'adjuster.{key}' must map each of {list(names)} to a number; got {raw!r:.80}")
    for name in names:
        value = raw[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value):
            raise ValueError(f"{where}: field 'adjuster.{key}.{name}' is {value!r:.40}; write a finite number")
    return {name: float(raw[name]) for name in names}


def _check_output_range(family: Family, name: str, offset: float, scale: float, where: str) -> None:
    """Λ ∈ [offset, offset + scale] must lie in the parameter's valid range (top: `RANGE_SLACK` relative)."""
    param = family.param(name)
    where_range = f"the valid range {param.range_text()} of {family.name}.{name}"
    if not scale > 0:
        raise ValueError(f"{where}: field 'adjuster.scales.{name}' is {scale!r}; it must be > 0 (Λ ranges over "
                         "[offset, offset + scale])")
    if not param.contains(offset):
        raise ValueError(f"{where}: field 'adjuster.offsets.{name}' is {offset!r}, outside {where_range}")
    top = offset + scale
    slack = 0.0 if param.high_open else RANGE_SLACK * max(1.0, abs(param.high))
    if not (param.contains(top) or (math.isfinite(param.high) and param.high < top <= param.high + slack)):
        raise ValueError(f"{where}: field 'adjuster.scales.{name}' is {scale!r}: offset + scale = {top!r} leaves "
                         f"{where_range}")


def _parse_snapshot(raw: object, shapes: dict[str, tuple[int, ...]], field: str, where: str) -> dict[str, torch.Tensor]:
    """One snapshot's weights as float64 tensors of the expected shapes, all finite."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: field {field!r} must be a JSON object of {', '.join(WEIGHT_KEYS)}; got {raw!r:.60}")
    _check_fields(raw, WEIGHT_KEYS, field, where)
    return {key: _weight_tensor(raw[key], shape, f"{field}.{key}", where) for key, shape in shapes.items()}


def _weight_tensor(raw: object, shape: tuple[int, ...], field: str, where: str) -> torch.Tensor:
    """A nested list of numbers (not bools or strings) of ``shape``, as a finite float64 tensor."""
    problem = f"{where}: field {field!r} must be a nested list of numbers of shape {shape}"
    if not _is_number_grid(raw, len(shape)):
        raise ValueError(f"{problem}; got {raw!r:.60}")
    try:
        tensor = torch.tensor(raw, dtype=torch.float64)
    except (ValueError, TypeError, RuntimeError, OverflowError) as exc:
        raise ValueError(f"{problem} ({str(exc).splitlines()[0]})") from None
    if tuple(tensor.shape) != shape:
        raise ValueError(f"{where}: field {field!r} has shape {tuple(tensor.shape)}; expected {shape}")
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{where}: field {field!r} has non-finite entries; write finite numbers")
    return tensor


def _is_number_grid(raw: object, depth: int) -> bool:
    """``raw`` is a number (depth 0) or a list of depth − 1 grids."""
    if depth == 0:
        return not isinstance(raw, bool) and isinstance(raw, (int, float))
    return isinstance(raw, list) and all(_is_number_grid(item, depth - 1) for item in raw)


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # a JSON integer too large for a float
        return False


def parse_fixed_params(family: Family, raw: object, learned: tuple[str, ...], where: str) -> dict[str, float]:
    """The plug-in's ``params`` field: exactly the base parameters the adjuster does not set (``learned``)."""
    if isinstance(raw, Mapping):
        for key in raw:
            if key in learned:
                rest = [p for p in family.param_names if p not in learned]
                raise ValueError(f"{where}: field 'params.{key}' is set per sample by the adjuster (adjuster."
                                 f"param_names); list only the fixed parameters: {', '.join(rest) or 'none'}")
    fixed = Family(family.name, family.fn, tuple(p for p in family.params if p.name not in learned))
    return parse_params(fixed, raw, where, fill_defaults=False)
