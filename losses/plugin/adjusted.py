"""Adjusted-loss plug-ins: a meta-learned NARL-Adjuster + a base robust loss, exported as data.

ding-narl-adjuster §3.2 and Eq. 13 (meta-test, Alg. 2) set a robust loss's hyperparameters per sample:

    m_i = f_y(x_i) − max_{j≠y} f_j(x_i)              the logit margin, detached (the adjuster's input)
    Λ_i = offset + s · σ(W2 ReLU(W1 m_i + b1) + b2)   one output per learned hyperparameter
    ℓ_i = L_base(f(x_i), y_i; Λ_i, fixed)             GCE, SL, PolySoft, JS (any registered family)

A registry family has scalar `Param`s (searched by CMA-ES, written as literals), which cannot carry
weight matrices, so this is a typed ``adjuster`` section of the plug-in format (`losses.plugin`):
``loss.json`` holds the usual header (``format`` "evoloss-loss", ``format_version`` 1, ``name``,
``family`` = the base family, ``normalisation``, ``provenance``), ``params`` = the base parameters the
adjuster does not set (SL's ``A``), and ``adjuster`` = {``format`` "evoloss-narl-adjuster",
``format_version`` 1, ``input`` "logit_margin", ``stage_rule`` "equal_fractions", ``param_names``,
``hidden``, ``offsets`` and ``scales`` {name: float}, ``snapshots``: [{``w1`` [hidden][1], ``b1``
[hidden], ``w2`` [P][hidden], ``b2`` [P]}, ...]} — PyTorch layout, JSON lists of floats.

Snapshots by training stage (NARL keeps θ(T/3), θ(2T/3), θ(T)): K snapshots split training into K
equal parts; snapshot k is used while ``progress`` (the fraction of training done, e.g. step / T or
epoch / epochs) is in [k/K, (k+1)/K), the last one also at 1 (`snapshot_index`). For progress =
step / T this is NARL's meta-test rule ``min(K − 1, K·step // T)``. A one-snapshot plug-in needs no
progress; a several-snapshot one raises until it is given one (no silent stage 0).

Choices: Λ is computed without gradient (the margin is detached and the adjuster is fixed at
meta-test), so ∂ℓ/∂logits is the base loss's gradient at constant Λ, as in NARL's trainer. The top of
Λ's range, offset + scale, may pass a closed family bound by at most 1e-12 relative (float rounding
of e.g. 0.05 + 0.9); anything further is rejected.

This module holds the loss (`AdjustedLoss` and the portable code `PORTABLE_CODE`), the parsed plug-in
(`AdjustedPlugin`) and its readers, and registers the ``adjuster`` section with `load_loss`; the
section's field checks are in `losses.plugin.adjusted_format`. Export is in
`losses.plugin.adjusted_export`: the standalone ``<name>.py`` copies, by the one plug-in mechanism
(`portable_sources`), `losses.criterion`'s code, the base family's code and `PORTABLE_CODE`
(`adjuster_margin`, `adjuster_output`, `snapshot_index`, `AdjustedLoss`), with the weights written
in as float literals.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from evoloss.losses.criterion import check_criterion_options, family_criterion
from evoloss.losses.plugin.adjusted_format import (
    ADJUSTER_FORMAT,
    ADJUSTER_FORMAT_VERSION,
    INPUT,
    STAGE_RULE,
    WEIGHT_KEYS,
    parse_adjuster_section,
    parse_fixed_params,
)
from evoloss.losses.plugin.files import read_json_object
from evoloss.losses.plugin.format import (
    PLUGIN_FILE,
    PLUGIN_FORMAT,
    PLUGIN_FORMAT_VERSION,
    parse_plugin_header,
    plugin_file,
    register_plugin_section,
)
from evoloss.losses.registry import LossSpec, get_family

SECTION = "adjuster"

__all__ = ["AdjustedLoss", "AdjustedPlugin", "PORTABLE_CODE", "SECTION", "adjusted_plugin_at", "adjuster_margin",
           "adjuster_output", "parse_adjusted_plugin", "read_adjusted_plugin", "snapshot_index"]


# --- portable code: copied verbatim into the standalone module -----------------------------------
def adjuster_margin(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """m_i = f_y − max_{j≠y} f_j per sample, detached (ding-narl-adjuster §3.2, the adjuster's input)."""
    logits = logits.detach()
    own = logits.gather(1, targets[:, None])[:, 0]
    others = logits.scatter(1, targets[:, None], float("-inf"))
    return own - others.max(dim=1).values


def adjuster_output(margin: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor,
                    offsets: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """[B, P]: Λ = offset + s·σ(W2 ReLU(W1 m + b1) + b2) (ding-narl-adjuster §3.2, plus the range offset)."""
    hidden = torch.relu(F.linear(margin[:, None], w1, b1))
    return offsets + scales * torch.sigmoid(F.linear(hidden, w2, b2))


def snapshot_index(progress: float | None, count: int) -> int:
    """The snapshot of ``count`` used at ``progress`` in [0, 1]: k with progress in [k/K, (k+1)/K), the last at 1.

    For progress = step / T this is NARL's ``min(K − 1, K·step // T)`` (floating-point K·(step/T) lands
    on the integer at stage boundaries; tests check every step for K ≤ 4, T ≤ 60). ``progress`` may
    be None only when there is one snapshot.
    """
    if progress is None:
        if count == 1:
            return 0
        raise ValueError(
            f"this adjusted loss holds {count} snapshots by training stage; pass progress= (the fraction of "
            "training done, in [0, 1], e.g. epoch / epochs) or call set_progress(...) first"
        )
    if isinstance(progress, bool) or not isinstance(progress, (int, float)):
        raise TypeError(f"progress must be a number in [0, 1]; got {type(progress).__name__} {progress!r}")
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"progress={progress!r}: pass the fraction of training done, in [0, 1]")
    return min(count - 1, math.floor(count * progress))


class AdjustedLoss(nn.Module):
    """A robust loss with per-sample hyperparameters from a fixed NARL-Adjuster (ding Alg. 2, Eq. 13).

    ``loss(input, target, progress=None, reduction=None)``; ``progress`` (or `set_progress`) picks the
    snapshot by training stage (see `snapshot_index`). ``snapshots`` are mappings of ``w1``, ``b1``,
    ``w2``, ``b2`` (nested lists or tensors); weights are float64 buffers, cast to the logits' dtype
    and device when used. ``nn.CrossEntropyLoss``'s options follow `losses.criterion` (``weight``,
    ``ignore_index``, ``label_smoothing`` — the base loss's expected value under the smoothed label,
    with the row's Λ — and ``[C]``, ``[N, C]``, ``[N, C, d1, ...]`` inputs); class-probability targets
    raise, the adjuster's input being the labelled class's logit margin. ``batch``: the base family is
    a batch family (`losses.registry`): its batch statistic reads only the kept rows (``ignore_index``
    rows are masked out) and label smoothing is refused, as for `losses.Loss`.
    """

    def __init__(self, base_loss: Callable, family: str, param_names: Sequence[str], offsets: Sequence[float],
                 scales: Sequence[float], snapshots: Sequence[Mapping], fixed_params: Mapping | None = None,
                 reduction: str = "mean", *, weight: torch.Tensor | None = None, ignore_index: int = -100,
                 label_smoothing: float = 0.0, label_table: Callable | None = None,
                 validate: bool | None = None, batch: bool = False) -> None:
        super().__init__()
        check_criterion_options(weight, None, None, reduction, label_smoothing, not batch, family)
        if not snapshots:
            raise ValueError("an adjusted loss needs at least one adjuster snapshot")
        self.base_loss, self.family, self.reduction, self.label_table = base_loss, family, reduction, label_table
        self.param_names, self.fixed_params = tuple(param_names), dict(fixed_params or {})
        self.snapshot_count, self.progress = len(snapshots), None
        self.ignore_index, self.label_smoothing, self.validate = int(ignore_index), float(label_smoothing), validate
        self.batch = bool(batch)
        self.register_buffer("weight", weight)
        self.register_buffer("offsets", torch.tensor([float(v) for v in offsets], dtype=torch.float64))
        self.register_buffer("scales", torch.tensor([float(v) for v in scales], dtype=torch.float64))
        for k, weights in enumerate(snapshots):
            for key in ("w1", "b1", "w2", "b2"):
                self.register_buffer(f"snapshot{k}_{key}", torch.as_tensor(weights[key], dtype=torch.float64).clone())

    def set_progress(self, progress: float) -> None:
        """Set the fraction of training done (in [0, 1]) used when a call passes no ``progress``."""
        snapshot_index(progress, self.snapshot_count)
        self.progress = progress

    def snapshot_values(self, k: int, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """{name: [M]} per-row Λ of snapshot ``k`` for ``logits`` [M, C] and class indices [M] (no gradient)."""
        weights = [getattr(self, f"snapshot{k}_{key}").to(logits) for key in ("w1", "b1", "w2", "b2")]
        with torch.no_grad():
            margin = adjuster_margin(logits, targets)
            values = adjuster_output(margin, *weights, self.offsets.to(logits), self.scales.to(logits))
        return {name: values[:, i] for i, name in enumerate(self.param_names)}

    def hyperparameters(self, logits: torch.Tensor, targets: torch.Tensor,
                        progress: float | None = None) -> dict[str, torch.Tensor]:
        """{name: [B]} per-sample Λ of the snapshot for ``progress`` (no gradient), logits [B, C]."""
        k = snapshot_index(self.progress if progress is None else progress, self.snapshot_count)
        return self.snapshot_values(k, logits, targets.long())

    def per_sample(self, logits: torch.Tensor, targets: torch.Tensor, progress: float | None = None) -> torch.Tensor:
        """The base loss with the per-sample Λ and the fixed parameters, unreduced."""
        return self.forward(logits, targets, progress, reduction="none")

    def forward(self, input: torch.Tensor, target: torch.Tensor, progress: float | None = None,
                reduction: str | None = None) -> torch.Tensor:
        k = snapshot_index(self.progress if progress is None else progress, self.snapshot_count)
        fixed = self.fixed_params
        return family_criterion(self.base_loss, lambda logits, rows: {**fixed, **self.snapshot_values(k, logits, rows)},
                                input, target, self.weight, self.ignore_index,
                                self.reduction if reduction is None else reduction, self.label_smoothing,
                                label_table=self.label_table, soft_targets=False, validate=self.validate,
                                family=self.family, batch=self.batch)

    def extra_repr(self) -> str:
        return (f"family={self.family!r}, learned={self.param_names!r}, fixed={self.fixed_params!r}, "
                f"snapshots={self.snapshot_count}, reduction={self.reduction!r}")


PORTABLE_CODE = (adjuster_margin, adjuster_output, snapshot_index, AdjustedLoss)


# --- the parsed plug-in ------------------------------------------------------------------------------
@dataclass(frozen=True)
class AdjustedPlugin:
    """A validated adjusted-loss plug-in: base family, fixed parameters and the adjuster snapshots."""

    name: str
    family: str
    param_names: tuple[str, ...]
    hidden: int
    offsets: dict[str, float]
    scales: dict[str, float]
    snapshots: tuple[dict[str, torch.Tensor], ...]
    fixed_params: dict[str, float]
    normalisation: str
    provenance: dict

    def loss(self, reduction: str = "mean", **options) -> AdjustedLoss:
        """The loss module (`load_loss` returns this); ``options``: AdjustedLoss's CE keywords."""
        family = get_family(self.family)
        return AdjustedLoss(family.fn, self.family, self.param_names,
                            [self.offsets[n] for n in self.param_names], [self.scales[n] for n in self.param_names],
                            self.snapshots, self.fixed_params, reduction=reduction, label_table=family.label_table,
                            batch=family.batch, **options)

    def base_spec(self) -> LossSpec:
        """The base family with the fixed parameters (what NARL's trainer takes as its spec)."""
        return LossSpec(self.family, dict(self.fixed_params))

    def adjuster_dicts(self) -> list[dict]:
        """The snapshots as ``evoloss-narl-adjuster`` v1 dicts (NARL's ``adjuster=`` option)."""
        head = {"format": ADJUSTER_FORMAT, "format_version": ADJUSTER_FORMAT_VERSION, "family": self.family,
                "param_names": list(self.param_names), "hidden": self.hidden, "input": INPUT}
        ranges = {"offsets": dict(self.offsets), "scales": dict(self.scales)}
        return [{**head, **{k: s[k].tolist() for k in WEIGHT_KEYS}, **ranges} for s in self.snapshots]

    def document(self) -> dict:
        """The ``loss.json`` content (JSON data only)."""
        section = {"format": ADJUSTER_FORMAT, "format_version": ADJUSTER_FORMAT_VERSION, "input": INPUT,
                   "stage_rule": STAGE_RULE, "param_names": list(self.param_names), "hidden": self.hidden,
                   "offsets": dict(self.offsets), "scales": dict(self.scales),
                   "snapshots": [{k: s[k].tolist() for k in WEIGHT_KEYS} for s in self.snapshots]}
        return {"format": PLUGIN_FORMAT, "format_version": PLUGIN_FORMAT_VERSION, "name": self.name,
                "family": self.family, "params": dict(self.fixed_params), "normalisation": self.normalisation,
                "provenance": dict(self.provenance), SECTION: section}


def parse_adjusted_plugin(data: Mapping, where: str = "loss.json") -> AdjustedPlugin:
    """Validate a decoded adjusted-loss plug-in; every error is a ValueError naming the field, after ``where``."""
    family, meta = parse_plugin_header(data, where)
    if SECTION not in data:
        raise ValueError(f"{where}: field {SECTION!r} is missing; this is a plain loss plug-in — read it with "
                         "losses.read_plugin or losses.load_loss")
    section = parse_adjuster_section(data[SECTION], family, where)
    fixed = parse_fixed_params(family, data["params"], section.param_names, where)
    return AdjustedPlugin(meta["name"], family.name, section.param_names, section.hidden, section.offsets,
                          section.scales, section.snapshots, fixed, meta["normalisation"], meta["provenance"])


def read_adjusted_plugin(path: str | os.PathLike) -> AdjustedPlugin:
    """Parse the adjusted-loss plug-in at ``path`` (its ``loss.json`` or directory); JSON data only."""
    file = plugin_file(Path(path))
    return parse_adjusted_plugin(read_json_object(file), where=str(file))


def adjusted_plugin_at(path: str | os.PathLike) -> AdjustedPlugin | None:
    """The plug-in at ``path`` when it is an evoloss plug-in (a directory or a file whose JSON says
    ``"format": "evoloss-loss"``), else None (e.g. a raw adjuster JSON). A plain plug-in raises."""
    file = Path(path) / PLUGIN_FILE if Path(path).is_dir() else Path(path)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != PLUGIN_FORMAT:
        return None
    return read_adjusted_plugin(file)


def _load_section(data: dict, where: str, reduction: str, **options) -> AdjustedLoss:
    """`losses.load_loss` of a document with an ``adjuster`` section."""
    return parse_adjusted_plugin(data, where).loss(reduction, **options)


register_plugin_section(SECTION, _load_section)
