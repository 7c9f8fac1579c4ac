"""Exporting a found loss as a plain plug-in: ``loss.json`` + a standalone ``<name>.py``.

`export_plugin` validates the spec, writes the document of `losses.plugin.format` and the module
text of `standalone_source` — the template below filled with the family's name, normalisation and
parameters (as literals), `losses.criterion`'s code (the nn.CrossEntropyLoss contract) and the
family's function, label table, native form and helpers, copied by
`losses.plugin.source.portable_sources` — through the all-or-nothing `losses.plugin.files.write_plugin_dir`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

import torch

from evoloss.losses.criterion import CRITERION_CODE
from evoloss.losses.plugin.files import provenance_json, write_plugin_dir
from evoloss.losses.plugin.format import (
    PLUGIN_FILE,
    PLUGIN_FORMAT,
    PLUGIN_FORMAT_VERSION,
    normalisation_name,
    plugin_class_name,
    validate_plugin_name,
)
from evoloss.losses.plugin.source import portable_sources
from evoloss.losses.registry import Family, LossSpec, get_family

__all__ = ["export_plugin", "standalone_source"]

_MODULE_TEMPLATE = '''\
"""Loss plug-in `@NAME@` exported by evoloss: family @FAMILY@, normalisation @NORM@.

Standalone: needs only torch (the evoloss loss code is copied below, the parameters written in as
literals). A drop-in for ``nn.CrossEntropyLoss``: the same constructor arguments and call forms::

    from @NAME@ import @CLASS@
    criterion = @CLASS@()  # weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0
    loss = criterion(logits, targets)  # logits [N, C], [N, C, d1, ...] or [C]; targets class indices
                                       # [N, d1, ...] or class probabilities of the logits' shape

``loss_fn(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0)`` is
the functional form. ``validate=None`` (default) checks target values only for CPU tensors outside
torch.compile, so the forward never synchronises with a GPU; ``validate=True`` always checks.
What each option means for a family: evoloss's docs/plugin.md; the rules: `family_criterion` below.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

FAMILY = @FAMILY@
NORMALISATION = @NORM@
PARAMS = @PARAMS@

__all__ = ["@CLASS@", "loss_fn"]


# ---- copied from evoloss (decorators dropped) ----
@CODE@

def loss_fn(input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None, ignore_index: int = -100,
            reduction: str = "mean", label_smoothing: float = 0.0) -> torch.Tensor:
    """The exported loss with ``F.cross_entropy``'s arguments."""
    return family_criterion(@FN@, PARAMS, input, target, weight, ignore_index, reduction, label_smoothing,
                            label_table=@TABLE@, native=@NATIVE@, soft_targets=@SOFT@, family=FAMILY,
                            batch=@BATCH@)


class @CLASS@(FamilyLoss):
    """The exported loss as a module, with ``nn.CrossEntropyLoss``'s constructor arguments."""

    def __init__(self, weight: torch.Tensor | None = None, size_average=None, ignore_index: int = -100, reduce=None,
                 reduction: str = "mean", label_smoothing: float = 0.0, *, validate: bool | None = None) -> None:
        super().__init__(@FN@, PARAMS, weight, size_average, ignore_index, reduce, reduction, label_smoothing,
                         label_table=@TABLE@, native=@NATIVE@, soft_targets=@SOFT@, validate=validate,
                         family=FAMILY, batch=@BATCH@)
'''
_TEMPLATE_NAMES = {"annotations", "math", "torch", "F", "nn", "FAMILY", "NORMALISATION", "PARAMS", "loss_fn",
                   "__all__"}


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
        "provenance": provenance_json(provenance),
    }
    module_text = standalone_source(family, params, name)
    files = {PLUGIN_FILE: json.dumps(document, indent=2, allow_nan=False) + "\n", f"{name}.py": module_text}
    return write_plugin_dir(out_dir, files, overwrite=overwrite)


def standalone_source(family: Family, params: Mapping[str, float], name: str) -> str:
    """The text of the standalone ``<name>.py`` for ``family`` with float ``params`` (checked to compile).

    The module copies `losses.criterion`'s `CRITERION_CODE` and the family's code (`Family.code`); its
    class is named by `plugin_class_name`, which never collides with a name the module defines.
    """
    code = (*CRITERION_CODE, *family.code)
    class_name = plugin_class_name(name, taken={*_TEMPLATE_NAMES, *(c.__name__ for c in code)})
    chunks = portable_sources(code, family.name, {*_TEMPLATE_NAMES, class_name})
    params_literal = "{" + ", ".join(f"{key!r}: {float(value)!r}" for key, value in params.items()) + "}"
    replacements = {
        "@NAME@": name, "@CLASS@": class_name, "@FAMILY@": repr(family.name),
        "@NORM@": repr(normalisation_name(family)), "@PARAMS@": params_literal, "@FN@": family.fn.__name__,
        "@TABLE@": family.label_table.__name__ if family.label_table is not None else "None",
        "@NATIVE@": family.native.__name__ if family.native is not None else "None",
        "@SOFT@": repr(bool(family.soft_targets)), "@BATCH@": repr(bool(family.batch)),
        "@CODE@": "\n\n".join(chunks),
    }
    text = _MODULE_TEMPLATE
    for token, value in replacements.items():
        text = text.replace(token, value)
    compile(text, f"{name}.py", "exec")  # syntax check only; nothing is run
    return text


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
