"""Exporting a found loss as a plain plug-in: ``loss.json`` + a standalone ``<name>.py``.

`export_plugin` validates the spec, writes the document of `losses.plugin.format` and the module
text of `standalone_source` — the template below filled with the family's name, normalisation and
parameters (as literals), followed by `check_inputs`, the family's per-sample function and its
helpers copied by `losses.plugin.source.portable_sources` — through the all-or-nothing
`losses.plugin.files.write_plugin_dir`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

import torch

from evoloss.losses.module import check_inputs
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
