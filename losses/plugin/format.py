"""The ``loss.json`` format: its fields, their checks, typed sections, and reading a plug-in back.

A plain plug-in document holds ``format`` (`PLUGIN_FORMAT`), ``format_version``
(`PLUGIN_FORMAT_VERSION`), ``name`` (a module name, `validate_plugin_name`), ``family``, ``params``
(finite numbers within the family's ranges), ``normalisation`` (`normalisation_name` of the family)
and optional ``provenance`` (JSON data). `parse_plugin_header` checks every field but ``params``;
`parse_plugin` adds them and gives a `LossSpec`. A document may carry one typed section registered
with `register_plugin_section` (``adjuster``: `losses.plugin.adjusted`); `load_loss` hands it to the
section's loader, `read_plugin` / `read_loss_file` refuse it. Every error is a ValueError naming the
field after ``where`` (the file). Files are read as JSON data only (`files.read_json_object`).
"""
from __future__ import annotations

import keyword
import math
import os
import sys
from pathlib import Path
from typing import Callable, Collection, Mapping

from torch import nn

from evoloss.losses.module import Loss
from evoloss.losses.plugin.files import check_finite_json, read_json_object
from evoloss.losses.registry import Family, LossSpec, get_family, unknown_name_message

PLUGIN_FORMAT = "evoloss-loss"
PLUGIN_FORMAT_VERSION = 1
PLUGIN_FILE = "loss.json"
_PLUGIN_FIELDS = ("format", "format_version", "name", "family", "params", "normalisation", "provenance")
_REQUIRED_FIELDS = ("format", "format_version", "name", "family", "params", "normalisation")
_PLAIN_SPEC_FIELDS = ("family", "params", "name")

__all__ = [
    "PLUGIN_FILE",
    "PLUGIN_FORMAT",
    "PLUGIN_FORMAT_VERSION",
    "SectionLoader",
    "load_loss",
    "normalisation_name",
    "parse_params",
    "parse_plugin",
    "parse_plugin_header",
    "plugin_class_name",
    "plugin_file",
    "read_loss_file",
    "read_plugin",
    "register_plugin_section",
    "validate_plugin_name",
]

SectionLoader = Callable[..., nn.Module]  # (document, where, reduction, **options)
_SECTION_LOADERS: dict[str, SectionLoader] = {}


def register_plugin_section(field: str, loader: SectionLoader) -> None:
    """Register a typed top-level section: ``loader(document, where, reduction, **options) -> nn.Module``.

    Raises:
        ValueError: ``field`` is a plain plug-in field or already registered.
    """
    if field in _PLUGIN_FIELDS or field in _SECTION_LOADERS:
        raise ValueError(f"plug-in section {field!r} is already a plug-in field or section; choose another name")
    _SECTION_LOADERS[field] = loader


def normalisation_name(family: Family) -> str:
    """The name of ``family``'s scale-normalisation rule, or ``"none"``.

    Looked up, first hit wins: a ``normalisation`` attribute of the `Family`, a ``normalisation``
    attribute of its function, a ``NORMALISATION`` attribute of the module defining the function.
    A callable counts by its ``__name__`` (e.g. taylor's named normalisation function).
    """
    module = sys.modules.get(getattr(family.fn, "__module__", ""), None)
    hooks = ((family, "normalisation"), (family.fn, "normalisation"), (module, "NORMALISATION"))
    for owner, attribute in hooks:
        value = getattr(owner, attribute, None) if owner is not None else None
        if value:
            return value.__name__ if callable(value) else str(value)
    return "none"


def validate_plugin_name(name: object) -> None:
    """Raise unless ``name`` can name the plug-in module: an identifier shadowing no imported module."""
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise ValueError(
            f"plug-in name {name!r} is not a valid Python identifier; use letters, digits and '_' "
            "not starting with a digit, e.g. 'evolved_loss'"
        )
    if name == "torch" or name in sys.stdlib_module_names:
        raise ValueError(f"plug-in name {name!r} would shadow the module {name!r}; choose e.g. '{name}_loss'")


def plugin_class_name(name: str, taken: Collection[str] = ()) -> str:
    """The nn.Module class name of plug-in ``name``: ``evolved_loss`` -> ``EvolvedLoss``.

    ``taken`` holds the names the generated module defines itself (its constants, copied functions
    and classes); a CamelCase name equal to one of them, or to ``name``, is prefixed with ``Plugin``
    until it is free (``PARAMS_`` -> ``PluginPARAMS``, ``family_loss`` -> ``PluginFamilyLoss``), so
    no export name can shadow the module's own code.
    """
    camel = "".join(part[:1].upper() + part[1:] for part in name.split("_"))
    if not camel.isidentifier():
        camel = f"Plugin{camel}"
    while camel == name or camel in taken:
        camel = f"Plugin{camel}"
    return camel


# --- load -------------------------------------------------------------------------------------
def load_loss(path: str | os.PathLike, reduction: str = "mean", **options) -> nn.Module:
    """The loss module of the plug-in at ``path`` (its ``loss.json``, or the plug-in directory).

    A plain plug-in gives a `Loss`; one with a typed section gives that section's module (an
    ``adjuster`` section: `losses.plugin.adjusted.AdjustedLoss`). ``options`` are the
    ``nn.CrossEntropyLoss`` keywords ``weight``, ``ignore_index``, ``label_smoothing`` and ``validate``
    (`losses.criterion`), the same as the standalone module's. Reads JSON data only; the exported
    ``.py`` is never executed. Raises ValueError naming the field for any malformed file (see `read_plugin`).
    """
    unknown = sorted(set(options) - {"weight", "ignore_index", "label_smoothing", "validate"})
    if unknown:
        raise TypeError(f"load_loss: unknown option {unknown[0]!r}; the options are weight, ignore_index, "
                        "label_smoothing and validate (and reduction)")
    file = plugin_file(Path(path))
    data = read_json_object(file)
    section = _section_of(data, str(file))
    if section is not None:
        return _SECTION_LOADERS[section](data, str(file), reduction, **options)
    spec, _ = parse_plugin(data, where=str(file))
    return Loss(spec, reduction=reduction, **options)


def read_plugin(path: str | os.PathLike) -> tuple[LossSpec, dict]:
    """Parse a plug-in ``loss.json`` (or its directory): ``(LossSpec, metadata)``.

    ``metadata`` holds ``name``, ``normalisation``, ``format_version`` and ``provenance``.
    """
    file = plugin_file(Path(path))
    return parse_plugin(read_json_object(file), where=str(file))


def read_loss_file(path: str | os.PathLike) -> tuple[str, LossSpec]:
    """``(label, LossSpec)`` from a plug-in ``loss.json`` or a plain ``{"family", "params"[, "name"]}`` file.

    The label is the ``name`` field when present, else the family name. A file with a ``format``
    field is read as a plug-in (all plug-in rules apply); missing plain-spec params take defaults.
    """
    file = plugin_file(Path(path))
    data = read_json_object(file)
    if "format" in data:
        spec, meta = parse_plugin(data, where=str(file))
        return meta["name"], spec
    where = str(file)
    _reject_unknown_fields(data, _PLAIN_SPEC_FIELDS, where)
    family = _parse_family(data, where)
    params = parse_params(family, data.get("params", {}), where, fill_defaults=True)
    label = data.get("name", family.name)
    if not isinstance(label, str) or not label.strip():
        raise ValueError(f"{where}: field 'name' must be a non-empty string; got {label!r}")
    return label, LossSpec(family.name, params)


def plugin_file(path: Path) -> Path:
    """``path`` itself, or ``path/loss.json`` for a directory; it must be an existing file."""
    file = path / PLUGIN_FILE if path.is_dir() else path
    if not file.is_file():
        raise ValueError(f"loss file {str(file)!r} is not a file; pass a plug-in loss.json (or its directory)")
    return file


# --- parse ------------------------------------------------------------------------------------
def parse_plugin(data: Mapping, where: str = "loss.json") -> tuple[LossSpec, dict]:
    """Validate a decoded plain plug-in document; ``where`` prefixes every error message.

    A document with a typed section (e.g. ``adjuster``) is refused: it is not a `LossSpec`.
    """
    section = _section_of(data, where)
    if section is not None:
        raise ValueError(
            f"{where}: field {section!r}: this plug-in holds a typed {section!r} section (per-sample "
            "hyperparameters), not one LossSpec; load it with losses.load_loss(path) (or, for an adjuster, "
            "meta-test it with the narl-<family> trainer: adjuster=path)"
        )
    family, meta = parse_plugin_header(data, where)
    params = parse_params(family, data["params"], where, fill_defaults=False)
    return LossSpec(family.name, params), meta


def parse_plugin_header(data: Mapping, where: str = "loss.json") -> tuple[Family, dict]:
    """Check every field but ``params`` (and any typed section): ``(family, metadata)``.

    ``metadata`` holds ``name``, ``normalisation``, ``format_version`` and ``provenance``.
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: a plug-in must be a JSON object; got {type(data).__name__}")
    _reject_unknown_fields(data, _PLUGIN_FIELDS + tuple(_SECTION_LOADERS), where)
    for key in _REQUIRED_FIELDS:
        if key not in data:
            needed = ", ".join(_REQUIRED_FIELDS)
            raise ValueError(f"{where}: field {key!r} is missing; an evoloss plug-in needs {needed}")
    if data["format"] != PLUGIN_FORMAT:
        raise ValueError(
            f"{where}: field 'format' is {data['format']!r}; expected {PLUGIN_FORMAT!r} (is this an evoloss plug-in?)"
        )
    version = data["format_version"]
    if isinstance(version, bool) or not isinstance(version, int) or version != PLUGIN_FORMAT_VERSION:
        raise ValueError(
            f"{where}: field 'format_version' is {version!r}; this evoloss reads version {PLUGIN_FORMAT_VERSION} "
            "(re-export the plug-in with this evoloss)"
        )
    name = data["name"]
    try:
        validate_plugin_name(name)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: field 'name': {exc}") from None
    family = _parse_family(data, where)
    expected = normalisation_name(family)
    if data["normalisation"] != expected:
        raise ValueError(
            f"{where}: field 'normalisation' is {data['normalisation']!r} but loss family {family.name!r} uses "
            f"{expected!r}; the plug-in was made by an incompatible evoloss — re-export it"
        )
    provenance = data.get("provenance", {})
    if not isinstance(provenance, Mapping):
        raise ValueError(f"{where}: field 'provenance' must be a JSON object; got {type(provenance).__name__}")
    check_finite_json(provenance, "provenance", where)
    meta = {"name": name, "normalisation": expected, "format_version": version, "provenance": dict(provenance)}
    return family, meta


def parse_params(family: Family, raw: object, where: str, *, fill_defaults: bool) -> dict[str, float]:
    """Each parameter a finite number (not bool/str), then the family's names and ranges."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: field 'params' must be a JSON object of name -> number; got {raw!r}")
    for key, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(
                f"{where}: field 'params.{key}' must be a number; got {type(value).__name__} {value!r}"
            )
        try:
            finite = math.isfinite(value)
        except OverflowError:  # a JSON integer too large for a float
            finite = False
        if not finite:
            raise ValueError(f"{where}: field 'params.{key}' is {value!r:.40}; write a finite number")
    try:
        full = family.validate(raw, fill_defaults=fill_defaults)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: field 'params': {exc}") from None
    return {name: float(value) for name, value in full.items()}


def _section_of(data: object, where: str) -> str | None:
    """The registered typed section ``data`` carries, if any (a mapping holding two of them raises)."""
    if not isinstance(data, Mapping):
        return None
    present = [field for field in _SECTION_LOADERS if field in data]
    if len(present) > 1:
        raise ValueError(f"{where}: fields {present}: a plug-in carries at most one typed section; keep one")
    return present[0] if present else None


def _reject_unknown_fields(data: Mapping, known: tuple[str, ...], where: str) -> None:
    """Raise on the first key outside ``known``, with the close matches (never drop keys silently)."""
    for key in data:
        if key not in known:
            raise ValueError(f"{where}: " + unknown_name_message("field", key, known))


def _parse_family(data: Mapping, where: str) -> Family:
    """The registered family named by the ``family`` field."""
    if "family" not in data:
        raise ValueError(f"{where}: field 'family' is missing; name a loss family")
    try:
        return get_family(data["family"])
    except ValueError as exc:
        raise ValueError(f"{where}: field 'family': {exc}") from None
