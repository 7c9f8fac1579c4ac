"""The loss plug-in: export a found loss as ``loss.json`` + a standalone module, and load it back.

`export_plugin` writes a directory holding

- ``loss.json`` — JSON data only: ``format`` ("evoloss-loss"), ``format_version`` (1), ``name``,
  ``family``, ``params`` (every parameter, as floats), ``normalisation`` (the family's scale
  normalisation rule, "none" for most) and ``provenance`` (free-form JSON from the caller: run id,
  fitness, task grid, version ...);
- ``<name>.py`` — a module that needs only torch: the family's per-sample function and its
  ``helpers`` copied verbatim (``inspect.getsource``, decorator lines dropped), the parameters written
  in as literals, ``loss_fn(logits, targets, reduction="mean")`` and an ``nn.Module`` drop-in for
  ``nn.CrossEntropyLoss``. One mechanism for every family; the copied code is checked at export time
  to use only ``torch``, ``math``, ``F`` (``torch.nn.functional``), builtins and the listed helpers.

`load_loss` / `read_plugin` parse ``loss.json`` as data (the ``.py`` is never executed) and reject
anything malformed with a ValueError naming the field. Unlike TaylorGLO (``eval`` of loss strings) or
EvoMAL (pickled modules), nothing user-supplied is ever run by evoloss.

Typed sections: a plug-in may carry one extra top-level section that makes it another kind of loss
module (``adjuster``: per-sample hyperparameters from a meta-learned network, `losses.adjusted`).
Its module registers the section with `register_plugin_section`; `load_loss` hands such a document
to the section's loader, and `read_plugin` / `read_loss_file` refuse it (it is not a `LossSpec`).
The header fields and their checks (`parse_plugin_header`), the copying of portable code
(`portable_sources`) and the atomic directory write (`write_plugin_dir`) are shared.
"""
from __future__ import annotations

import ast
import builtins
import inspect
import json
import keyword
import math
import os
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Callable, Collection, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from evoloss.losses.module import Loss, check_inputs
from evoloss.losses.registry import Family, LossSpec, _unknown, get_family

PLUGIN_FORMAT = "evoloss-loss"
PLUGIN_FORMAT_VERSION = 1
PLUGIN_FILE = "loss.json"
MAX_SPEC_BYTES = 1 << 20
_PLUGIN_FIELDS = ("format", "format_version", "name", "family", "params", "normalisation", "provenance")
_REQUIRED_FIELDS = ("format", "format_version", "name", "family", "params", "normalisation")
_PLAIN_SPEC_FIELDS = ("family", "params", "name")

__all__ = [
    "PLUGIN_FORMAT",
    "PLUGIN_FORMAT_VERSION",
    "export_plugin",
    "load_loss",
    "normalisation_name",
    "parse_plugin",
    "parse_plugin_header",
    "plugin_class_name",
    "portable_sources",
    "read_loss_file",
    "read_plugin",
    "register_plugin_section",
    "standalone_source",
    "validate_plugin_name",
    "write_plugin_dir",
]

SectionLoader = Callable[[dict, str, str], nn.Module]
_SECTION_LOADERS: dict[str, SectionLoader] = {}


def register_plugin_section(field: str, loader: SectionLoader) -> None:
    """Register a typed top-level section: ``loader(document, where, reduction) -> nn.Module``.

    Raises:
        ValueError: ``field`` is a plain plug-in field or already registered.
    """
    if field in _PLUGIN_FIELDS or field in _SECTION_LOADERS:
        raise ValueError(f"plug-in section {field!r} is already a plug-in field or section; choose another name")
    _SECTION_LOADERS[field] = loader


# --- the standalone module ---------------------------------------------------------------------
_PORTABLE_GLOBALS = {"torch": torch, "math": math, "F": F, "nn": nn}
_MODULE_TEMPLATE = '''\
"""Loss plug-in `@NAME@` exported by evoloss: family @FAMILY@, normalisation @NORM@.

Standalone: needs only torch (the evoloss loss code is copied below, the parameters written in as
literals). A drop-in for ``nn.CrossEntropyLoss`` (``reduction`` only; no weight/ignore_index)::

    from @NAME@ import @CLASS@
    criterion = @CLASS@()  # reduction="mean" | "sum" | "none"
    loss = criterion(logits, targets)  # logits [B, C] float, targets [B] class indices
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

FAMILY = @FAMILY@
NORMALISATION = @NORM@
PARAMS = @PARAMS@
REDUCTIONS = ("mean", "sum", "none")


def loss_fn(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """The loss of ``logits`` [B, C] for class indices ``targets`` [B], reduced by ``reduction``."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r} is not one of {REDUCTIONS}")
    check_inputs(logits, targets)
    per_sample = @FN@(logits, targets.long(), **PARAMS)
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample


class @CLASS@(nn.Module):
    """The exported loss as a module: ``@CLASS@(reduction="mean")(logits, targets)``."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction={reduction!r} is not one of {REDUCTIONS}")
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return loss_fn(logits, targets, self.reduction)

    def extra_repr(self) -> str:
        return f"family={FAMILY!r}, params={PARAMS!r}, reduction={self.reduction!r}"


# ---- copied from evoloss (decorators dropped) ----
'''
_TEMPLATE_NAMES = {"annotations", "math", "torch", "F", "nn", "FAMILY", "NORMALISATION", "PARAMS", "REDUCTIONS",
                   "loss_fn"}


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


def plugin_class_name(name: str) -> str:
    """The nn.Module class name of plug-in ``name``: ``evolved_loss`` -> ``EvolvedLoss``."""
    camel = "".join(part[:1].upper() + part[1:] for part in name.split("_"))
    return camel if camel.isidentifier() and camel != name else f"Plugin{camel}"


def standalone_source(family: Family, params: Mapping[str, float], name: str) -> str:
    """The text of the standalone ``<name>.py`` for ``family`` with float ``params`` (checked to compile)."""
    class_name = plugin_class_name(name)
    chunks = portable_sources((check_inputs, family.fn, *family.helpers), family.name, {*_TEMPLATE_NAMES, class_name})
    params_literal = "{" + ", ".join(f"{key!r}: {float(value)!r}" for key, value in params.items()) + "}"
    replacements = {
        "@NAME@": name, "@CLASS@": class_name, "@FAMILY@": repr(family.name),
        "@NORM@": repr(normalisation_name(family)), "@PARAMS@": params_literal, "@FN@": family.fn.__name__,
    }
    text = _MODULE_TEMPLATE
    for token, value in replacements.items():
        text = text.replace(token, value)
    text += "\n\n".join(chunks)
    compile(text, f"{name}.py", "exec")  # syntax check only; nothing is run
    return text


def portable_sources(code: Iterable[Callable], family: str, reserved: Collection[str] = ()) -> list[str]:
    """The source of each function or class in ``code`` (in order, each once) for a standalone module.

    Every free name the code reads must be ``torch``, ``math``, ``F``, ``nn``, a builtin or another
    entry of ``code``; a name in ``reserved`` (the names the module template defines) raises.
    ``family`` names the owner in error messages.
    """
    items = _unique_functions(tuple(code))
    portable = {fn.__name__: fn for fn in items}
    for fn in items:
        if fn.__name__ in reserved:
            raise ValueError(
                f"loss family {family!r}: function name {fn.__name__!r} clashes with a name of the plug-in "
                "module; rename the function"
            )
    return [_portable_function_source(fn, portable, family) for fn in items]


def _unique_functions(functions: tuple[Callable, ...]) -> list[Callable]:
    """The functions (and classes) to copy, in order, each once; two different ones of one name raise."""
    seen: dict[str, Callable] = {}
    for fn in functions:
        if not (inspect.isfunction(fn) or inspect.isclass(fn)):
            raise ValueError(f"plug-in code must be plain functions or classes; got {type(fn).__name__} {fn!r}")
        if fn.__name__ in seen and seen[fn.__name__] is not fn:
            raise ValueError(f"two plug-in functions are named {fn.__name__!r}; helper names must be unique")
        seen[fn.__name__] = fn
    return list(seen.values())


def _portable_function_source(fn: Callable, portable: Mapping[str, Callable], family: str) -> str:
    """The source of ``fn`` (a function or class) without decorators, after checking its free names are portable."""
    where = f"loss family {family!r}: function {fn.__module__}.{fn.__name__}"
    try:
        text = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError) as exc:
        raise ValueError(f"{where}: its source is not available ({exc}); define it in a .py file") from None
    tree = ast.parse(text)
    node = tree.body[0] if tree.body else None
    kind = ast.ClassDef if inspect.isclass(fn) else ast.FunctionDef
    if not isinstance(node, kind) or node.name != fn.__name__ or getattr(fn, "__closure__", None):
        raise ValueError(f"{where}: plug-in code must be module-level 'def' functions without closures")
    module_globals = fn.__globals__ if inspect.isfunction(fn) else vars(sys.modules[fn.__module__])
    for free in sorted(_free_names(node)):
        expected = portable.get(free, _PORTABLE_GLOBALS.get(free))
        if expected is None or module_globals.get(free) is not expected:
            raise ValueError(
                f"{where} uses the global name {free!r}, which a standalone plug-in cannot carry; use only "
                "torch, math, F, nn and functions listed in helpers= (write constants as literals)"
            )
    body = "\n".join(text.splitlines()[node.lineno - 1:])
    return f"# evoloss {fn.__module__}.{fn.__name__}\n{body}\n"


def _free_names(function: ast.FunctionDef | ast.ClassDef) -> set[str]:
    """Names ``function`` reads but does not bind.

    Excluded: builtins, annotations (never evaluated under ``from __future__ import annotations``)
    and the function's own decorators (dropped from the copy).
    """
    skipped = [a.annotation for a in ast.walk(function) if isinstance(a, (ast.arg, ast.AnnAssign))]
    skipped += [n.returns for n in ast.walk(function) if isinstance(n, ast.FunctionDef)]
    skipped += function.decorator_list
    in_annotation = {id(sub) for tree in skipped if tree is not None for sub in ast.walk(tree)}
    bound: set[str] = set()
    loaded: set[str] = set()
    for node in ast.walk(function):
        if isinstance(node, (ast.FunctionDef, ast.Lambda)):
            bound.update(a.arg for a in ast.walk(node.args) if isinstance(a, ast.arg))
            bound.add(getattr(node, "name", ""))
        elif isinstance(node, ast.Name) and id(node) not in in_annotation:
            (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    return loaded - bound - set(dir(builtins))


# --- export -----------------------------------------------------------------------------------
def export_plugin(
    spec: LossSpec,
    out_dir: str | os.PathLike,
    name: str = "evolved_loss",
    provenance: Mapping | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write the plug-in of ``spec`` (``loss.json`` + ``<name>.py``) into ``out_dir``; return ``out_dir``.

    The directory is built in a temporary directory beside ``out_dir`` and renamed into place, so an
    error never leaves a half-written plug-in. ``out_dir`` must not exist or be empty, unless
    ``overwrite=True`` (then it is replaced as a whole).

    Raises:
        TypeError: ``spec`` is not a LossSpec, or a parameter is a per-sample tensor.
        ValueError: invalid ``name``, parameters outside their range, ``provenance`` not JSON data,
            ``out_dir`` not empty, or family code a standalone module cannot carry.
    """
    if not isinstance(spec, LossSpec):
        raise TypeError(f"export_plugin: spec must be a LossSpec; got {type(spec).__name__}")
    validate_plugin_name(name)
    family = get_family(spec.family)
    params = _float_params(family, spec)
    document = {
        "format": PLUGIN_FORMAT,
        "format_version": PLUGIN_FORMAT_VERSION,
        "name": name,
        "family": family.name,
        "params": params,
        "normalisation": normalisation_name(family),
        "provenance": _provenance_json(provenance),
    }
    module_text = standalone_source(family, params, name)
    files = {PLUGIN_FILE: json.dumps(document, indent=2, allow_nan=False) + "\n", f"{name}.py": module_text}
    return write_plugin_dir(out_dir, files, overwrite=overwrite)


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


def _float_params(family: Family, spec: LossSpec) -> dict[str, float]:
    """Every parameter of ``spec`` (defaults filled in) as a plain float, in the family's order."""
    values = dict(spec.params)
    for key, value in values.items():
        if isinstance(value, torch.Tensor):
            if value.dim() != 0:
                raise TypeError(
                    f"export_plugin: parameter {key!r} is a tensor of shape {tuple(value.shape)}; a plug-in "
                    "stores one float per parameter — export a scalar spec (per-sample values cannot be exported)"
                )
            values[key] = float(value.detach().item())
    full = family.validate(values)
    return {p.name: float(full[p.name]) for p in family.params}


def _provenance_json(provenance: Mapping | None) -> dict:
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


# --- load -------------------------------------------------------------------------------------
def load_loss(path: str | os.PathLike, reduction: str = "mean") -> nn.Module:
    """The loss module of the plug-in at ``path`` (its ``loss.json``, or the plug-in directory).

    A plain plug-in gives a `Loss`; one with a typed section gives that section's module (an
    ``adjuster`` section: `losses.adjusted.AdjustedLoss`). Reads JSON data only; the exported ``.py``
    is never executed. Raises ValueError naming the field for any malformed file (see `read_plugin`).
    """
    file = _plugin_file(Path(path))
    data = _read_json_object(file)
    section = _section_of(data, str(file))
    if section is not None:
        return _SECTION_LOADERS[section](data, str(file), reduction)
    spec, _ = parse_plugin(data, where=str(file))
    return Loss(spec, reduction=reduction)


def read_plugin(path: str | os.PathLike) -> tuple[LossSpec, dict]:
    """Parse a plug-in ``loss.json`` (or its directory): ``(LossSpec, metadata)``.

    ``metadata`` holds ``name``, ``normalisation``, ``format_version`` and ``provenance``.
    """
    file = _plugin_file(Path(path))
    return parse_plugin(_read_json_object(file), where=str(file))


def read_loss_file(path: str | os.PathLike) -> tuple[str, LossSpec]:
    """``(label, LossSpec)`` from a plug-in ``loss.json`` or a plain ``{"family", "params"[, "name"]}`` file.

    The label is the ``name`` field when present, else the family name. A file with a ``format``
    field is read as a plug-in (all plug-in rules apply); missing plain-spec params take defaults.
    """
    file = _plugin_file(Path(path))
    data = _read_json_object(file)
    if "format" in data:
        spec, meta = parse_plugin(data, where=str(file))
        return meta["name"], spec
    where = str(file)
    _reject_unknown_fields(data, _PLAIN_SPEC_FIELDS, where)
    family = _parse_family(data, where)
    params = _parse_params(family, data.get("params", {}), where, fill_defaults=True)
    label = data.get("name", family.name)
    if not isinstance(label, str) or not label.strip():
        raise ValueError(f"{where}: field 'name' must be a non-empty string; got {label!r}")
    return label, LossSpec(family.name, params)


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
    params = _parse_params(family, data["params"], where, fill_defaults=False)
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
    _check_finite_json(provenance, "provenance", where)
    meta = {"name": name, "normalisation": expected, "format_version": version, "provenance": dict(provenance)}
    return family, meta


def _section_of(data: object, where: str) -> str | None:
    """The registered typed section ``data`` carries, if any (a mapping holding two of them raises)."""
    if not isinstance(data, Mapping):
        return None
    present = [field for field in _SECTION_LOADERS if field in data]
    if len(present) > 1:
        raise ValueError(f"{where}: fields {present}: a plug-in carries at most one typed section; keep one")
    return present[0] if present else None


def _plugin_file(path: Path) -> Path:
    """``path`` itself, or ``path/loss.json`` for a directory; it must be an existing file."""
    file = path / PLUGIN_FILE if path.is_dir() else path
    if not file.is_file():
        raise ValueError(f"loss file {str(file)!r} is not a file; pass a plug-in loss.json (or its directory)")
    return file


def _read_json_object(file: Path) -> dict:
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


def _reject_unknown_fields(data: Mapping, known: tuple[str, ...], where: str) -> None:
    """Raise on the first key outside ``known``, with the close matches (never drop keys silently)."""
    for key in data:
        if key not in known:
            raise ValueError(f"{where}: " + _unknown("field", key, known))


def _parse_family(data: Mapping, where: str) -> Family:
    """The registered family named by the ``family`` field."""
    if "family" not in data:
        raise ValueError(f"{where}: field 'family' is missing; name a loss family")
    try:
        return get_family(data["family"])
    except ValueError as exc:
        raise ValueError(f"{where}: field 'family': {exc}") from None


def _parse_params(family: Family, raw: object, where: str, *, fill_defaults: bool) -> dict[str, float]:
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


def _check_finite_json(value: object, field: str, where: str) -> None:
    """Raise on a NaN/Infinity anywhere in nested JSON data, naming its dotted path."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}: field {field!r} is {value!r}; JSON data must hold finite numbers (or null)")
    if isinstance(value, Mapping):
        for key, item in value.items():
            _check_finite_json(item, f"{field}.{key}", where)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_finite_json(item, f"{field}[{index}]", where)


