"""Exporting an adjusted-loss plug-in: ``loss.json`` with an ``adjuster`` section + a standalone module.

`export_adjuster_plugin` takes NARL's adjuster snapshots (``evoloss-narl-adjuster`` v1 dicts, by
training stage), checks that they come from one adjuster for the base family, builds the document of
`losses.plugin.adjusted` (validated by `parse_adjusted_plugin`, so export and load apply the same
rules) and writes it with `adjusted_standalone_source` through the all-or-nothing `write_plugin_dir`.
The standalone module copies `losses.criterion`'s code, the base family's code and
`PORTABLE_CODE` (`losses.plugin.source.portable_sources`), the weights written in as float literals.
"""
from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path
from typing import Mapping, Sequence

import torch

from evoloss.losses.criterion import CRITERION_CODE
from evoloss.losses.plugin.adjusted import PORTABLE_CODE, SECTION, AdjustedPlugin, parse_adjusted_plugin
from evoloss.losses.plugin.adjusted_format import STAGE_RULE, WEIGHT_KEYS
from evoloss.losses.plugin.files import MAX_SPEC_BYTES, provenance_json, write_plugin_dir
from evoloss.losses.plugin.format import (
    PLUGIN_FILE,
    PLUGIN_FORMAT,
    PLUGIN_FORMAT_VERSION,
    normalisation_name,
    plugin_class_name,
    validate_plugin_name,
)
from evoloss.losses.plugin.source import portable_sources
from evoloss.losses.registry import Family, get_family

DEFAULT_NAME = "narl_loss"

__all__ = ["DEFAULT_NAME", "adjusted_standalone_source", "export_adjuster_plugin"]


def export_adjuster_plugin(adjuster: Mapping | Sequence[Mapping], base_family: str, out_dir: str | os.PathLike,
                           name: str = DEFAULT_NAME, provenance: Mapping | None = None, *,
                           fixed_params: Mapping[str, float] | None = None, overwrite: bool = False) -> Path:
    """Write an adjusted-loss plug-in (``loss.json`` + standalone ``<name>.py``) into ``out_dir``.

    Args:
        adjuster: one ``evoloss-narl-adjuster`` v1 dict (NARL's `adjuster_to_dict`) or a list of them,
            the snapshots by training stage in order (e.g. NARL's θ(T/3), θ(2T/3), θ(T)).
        base_family: the loss the adjuster sets (its ``family`` field must match).
        fixed_params: the base family's parameters the adjuster does not set (defaults filled in).
        name, provenance, overwrite: as for `losses.export_plugin`.

    Raises:
        ValueError: snapshots from different adjusters, a malformed or non-finite adjuster (naming the
            field), an unknown family, bad ``name``/``provenance``/``fixed_params``; nothing is written.
    """
    snapshots = _snapshot_list(adjuster)
    family = get_family(base_family)
    validate_plugin_name(name)
    head = _common_head(snapshots, family.name)
    learned = head.get("param_names")
    fixed = _fixed_values(family, fixed_params, learned if isinstance(learned, list) else [])
    section = {**{k: v for k, v in head.items() if k != "family"}, "stage_rule": STAGE_RULE,
               "snapshots": [{k: s[k] for k in WEIGHT_KEYS if k in s} for s in snapshots]}
    document = {"format": PLUGIN_FORMAT, "format_version": PLUGIN_FORMAT_VERSION, "name": name,
                "family": family.name, "params": fixed, "normalisation": normalisation_name(family),
                "provenance": provenance_json(provenance), SECTION: section}
    plugin = parse_adjusted_plugin(document, where="export_adjuster_plugin")
    text = json.dumps(plugin.document(), indent=2, allow_nan=False) + "\n"
    size = len(text.encode("utf-8"))
    if size > MAX_SPEC_BYTES:
        raise ValueError(f"export_adjuster_plugin: loss.json would be {size} bytes, over the {MAX_SPEC_BYTES}-byte "
                         "limit the loader accepts; export fewer snapshots or a smaller adjuster")
    files = {PLUGIN_FILE: text, f"{name}.py": adjusted_standalone_source(plugin)}
    return write_plugin_dir(out_dir, files, overwrite=overwrite)


def _snapshot_list(adjuster: object) -> list[Mapping]:
    """``adjuster`` as a non-empty list of mappings."""
    items = [adjuster] if isinstance(adjuster, Mapping) else adjuster
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence) \
            or not all(isinstance(item, Mapping) for item in items):
        raise ValueError(f"export_adjuster_plugin: adjuster must be an adjuster dict or a list of them (snapshots by "
                         f"stage); got {type(adjuster).__name__} {adjuster!r:.60}")
    if not items:
        raise ValueError("export_adjuster_plugin: pass at least one adjuster snapshot")
    return list(items)


def _common_head(snapshots: list[Mapping], family: str) -> dict:
    """The fields every snapshot shares (all but the weights), checked equal across snapshots."""
    heads = [{k: v for k, v in s.items() if k not in WEIGHT_KEYS} for s in snapshots]
    for index, head in enumerate(heads):
        if head.get("family") != family:
            raise ValueError(f"export_adjuster_plugin: adjuster[{index}] is for loss family {head.get('family')!r}; "
                             f"base_family is {family!r} — export it with base_family={head.get('family')!r}")
        for key in sorted(set(head) | set(heads[0])):
            if head.get(key) != heads[0].get(key):
                raise ValueError(f"export_adjuster_plugin: adjuster[{index}] field {key!r} differs from adjuster[0]; "
                                 "all snapshots must come from one adjuster")
    return heads[0]


def _fixed_values(family: Family, fixed_params: Mapping | None, learned: list) -> dict[str, float]:
    """The base parameters the adjuster does not set: given values checked, defaults filled in."""
    given = dict(fixed_params or {})
    for key in given:
        if key in learned:
            raise ValueError(f"export_adjuster_plugin: fixed_params {key!r} is set per sample by the adjuster; "
                             f"pass only the other parameters of {family.name!r}")
    full = family.validate(given)
    return {p.name: float(full[p.name]) for p in family.params if p.name not in learned}


# --- the standalone module ---------------------------------------------------------------------------
_TEMPLATE_NAMES = {"annotations", "math", "torch", "F", "nn", "FAMILY", "NORMALISATION", "PARAM_NAMES",
                   "FIXED_PARAMS", "OFFSETS", "SCALES", "SNAPSHOTS", "__all__"}
_MODULE_TEMPLATE = '''\
"""Adjusted-loss plug-in `@NAME@` exported by evoloss: a NARL-Adjuster setting the @FAMILY_NAME@ loss.

Standalone: needs only torch (the evoloss code is copied below, the adjuster's weights written in as
literals). Per sample i (ding-narl-adjuster §3.2, Eq. 13): the detached logit margin
m_i = f_y − max_{j≠y} f_j gives Λ_i = offset + scale·σ(W2 ReLU(W1 m_i + b1) + b2) for @LEARNED@,
and the loss is @FAMILY_NAME@ with those per-sample values and FIXED_PARAMS::

    from @NAME@ import @CLASS@
    criterion = @CLASS@()  # weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0
    criterion.set_progress(epoch / epochs)  # the fraction of training done, in [0, 1]
    loss = criterion(logits, targets)  # logits [N, C], [N, C, d1, ...] or [C]; class-index targets
                                       # [N, d1, ...]; or criterion(..., progress=0.5)

Snapshots by training stage: with K snapshots, snapshot k is used while progress is in [k/K, (k+1)/K)
(the last one also at 1). This plug-in holds @COUNT@:
@PROGRESS_NOTE@
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

FAMILY = @FAMILY@
NORMALISATION = @NORM@
PARAM_NAMES = @PARAM_NAMES@
FIXED_PARAMS = @FIXED@
OFFSETS = @OFFSETS@
SCALES = @SCALES@
# One dict per snapshot, in stage order; PyTorch layout: w1 [hidden][1], b1 [hidden], w2 [P][hidden], b2 [P].
SNAPSHOTS = @SNAPSHOTS@

__all__ = ["@CLASS@"]


# ---- copied from evoloss (decorators dropped) ----
@CODE@

class @CLASS@(AdjustedLoss):
    """The exported adjusted loss: ``@CLASS@(reduction="mean")(logits, targets, progress=None)``."""

    def __init__(self, weight: torch.Tensor | None = None, size_average=None, ignore_index: int = -100, reduce=None,
                 reduction: str = "mean", label_smoothing: float = 0.0, *, validate: bool | None = None) -> None:
        check_criterion_options(weight, size_average, reduce, reduction, label_smoothing, True, FAMILY)
        super().__init__(@FN@, FAMILY, PARAM_NAMES, OFFSETS, SCALES, SNAPSHOTS, FIXED_PARAMS, reduction=reduction,
                         weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing,
                         label_table=@TABLE@, validate=validate, batch=@BATCH@)
'''


def adjusted_standalone_source(plugin: AdjustedPlugin) -> str:
    """The text of the standalone ``<name>.py`` of ``plugin`` (checked to compile; nothing is run)."""
    family = get_family(plugin.family)
    code = (*CRITERION_CODE, *family.code, *PORTABLE_CODE)
    class_name = plugin_class_name(plugin.name, taken={*_TEMPLATE_NAMES, *(c.__name__ for c in code)})
    chunks = portable_sources(code, family.name, {*_TEMPLATE_NAMES, class_name})
    many = len(plugin.snapshots) > 1
    replacements = {
        "@NAME@": plugin.name, "@CLASS@": class_name, "@FAMILY@": repr(family.name), "@FAMILY_NAME@": family.name,
        "@NORM@": repr(plugin.normalisation),
        "@LEARNED@": ", ".join(plugin.param_names), "@PARAM_NAMES@": repr(plugin.param_names),
        "@FIXED@": repr(plugin.fixed_params), "@OFFSETS@": repr([plugin.offsets[n] for n in plugin.param_names]),
        "@SCALES@": repr([plugin.scales[n] for n in plugin.param_names]), "@FN@": family.fn.__name__,
        "@TABLE@": family.label_table.__name__ if family.label_table is not None else "None",
        "@BATCH@": repr(bool(family.batch)),
        "@COUNT@": f"{len(plugin.snapshots)} snapshot{'s' if many else ''}",
        "@PROGRESS_NOTE@": "pass progress (or call set_progress) before computing the loss." if many
        else "progress is not needed.",
        "@SNAPSHOTS@": _snapshots_literal(plugin.snapshots), "@CODE@": "\n\n".join(chunks),
    }
    text = _MODULE_TEMPLATE
    for token, value in replacements.items():
        text = text.replace(token, value)
    compile(text, f"{plugin.name}.py", "exec")  # syntax check only
    return text


def _snapshots_literal(snapshots: Sequence[Mapping[str, torch.Tensor]]) -> str:
    """A Python list literal of the snapshot dicts, floats written exactly (repr), lines wrapped."""
    lines = ["["]
    for weights in snapshots:
        lines.append("    {")
        for key in WEIGHT_KEYS:
            lines.append(textwrap.fill(repr(weights[key].tolist()), width=116, initial_indent=f"        {key!r}: ",
                                       subsequent_indent=" " * 12, break_on_hyphens=False,
                                       break_long_words=False) + ",")
        lines.append("    },")
    return "\n".join(lines + ["]"])
