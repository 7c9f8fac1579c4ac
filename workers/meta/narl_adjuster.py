"""The NARL-Adjuster network and its export as plain data.

ding-narl-adjuster §3.2: per-sample hyperparameters from the sample's logit margin,

    m_i = f_y(x_i) − max_{j≠y} f_j(x_i)                (logits, detached: the adjuster's input)
    Λ_i = offset + s · σ(W2ᵀ ReLU(W1ᵀ m_i + b1) + b2)  (hidden d = 100, one output per hyperparameter)

The paper writes s·σ(·); we add the family's lower bound ``offset`` so every value is valid
(PolySoft's d > 1, open bounds pulled in by the parameter's margin), and use biases (PyTorch's
default ``nn.Linear``, as the paper's "default initialisation" implies). The scale s of a
parameter is its range width when the family range is bounded (GCE q: (0, 1]; SL γ1, γ2: [0, 20];
JS π1: [0.05, 0.95]) and `UNBOUNDED_SCALE` = 10 above an unbounded range (PolySoft λ ∈ (0, 10),
d ∈ (1, 11)); both can be overridden.

`adjuster_to_dict` / `adjuster_from_dict` give the adjuster as JSON-able data (format
``evoloss-narl-adjuster`` v1): ``family``, ``param_names``, ``hidden``, the weights in PyTorch
layout (``w1`` [hidden][1], ``b1`` [hidden], ``w2`` [P][hidden], ``b2`` [P]), ``offsets`` and
``scales`` per parameter, and ``input`` = ``"logit_margin"`` — everything needed to rebuild Λ(m)
without this code (the loss-library plug-in does that).
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
from torch import nn

from evoloss.losses import get_family
from evoloss.workers.meta.bounds import Bounds
from evoloss.workers.meta.method import seeded_linear

ADJUSTER_FORMAT = "evoloss-narl-adjuster"
ADJUSTER_FORMAT_VERSION = 1
UNBOUNDED_SCALE = 10.0
HIDDEN = 100


def logit_margin(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """m_i = f_y − max_{j≠y} f_j per sample, detached (the adjuster's input, §3.2)."""
    logits = logits.detach()
    own = logits.gather(1, targets[:, None])[:, 0]
    others = logits.scatter(1, targets[:, None], float("-inf"))
    return own - others.max(dim=1).values


def output_ranges(
    family: str, param_names: Sequence[str], scales: Mapping[str, float] | None = None
) -> tuple[dict, dict]:
    """(offsets, scales) per learned parameter: Λ ranges over [offset, offset + scale]."""
    fam = get_family(family)
    offsets, widths = {}, {}
    for name in param_names:
        bounds = Bounds.of(fam.param(name))
        if not math.isfinite(bounds.low):
            raise ValueError(
                f"NARL needs a finite lower bound for {family}.{name}; its range is {fam.param(name).range_text()}"
            )
        width = bounds.width if math.isfinite(bounds.high) else UNBOUNDED_SCALE
        s = float((scales or {}).get(name, width))
        if not (0 < s <= width and math.isfinite(s)):
            raise ValueError(f"scale of {family}.{name} is {s!r}; it must be in (0, {width:g}] (the parameter's range)")
        offsets[name], widths[name] = float(bounds.low), s
    return offsets, widths


class Adjuster(nn.Module):
    """Λ(m): logit margin [B] -> per-sample hyperparameters, one [B] tensor per parameter name."""

    def __init__(self, family: str, param_names: Sequence[str], offsets: Mapping[str, float],
                 scales: Mapping[str, float], *, hidden: int = HIDDEN, seed: int = 0) -> None:
        super().__init__()
        if not param_names:
            raise ValueError("an adjuster needs at least one hyperparameter name")
        self.family, self.param_names, self.hidden = family, tuple(param_names), int(hidden)
        g = torch.Generator().manual_seed(seed)
        self.fc1, self.fc2 = seeded_linear(1, self.hidden, g), seeded_linear(self.hidden, len(param_names), g)
        self.register_buffer("offsets", torch.tensor([float(offsets[n]) for n in param_names]))
        self.register_buffer("scales", torch.tensor([float(scales[n]) for n in param_names]))

    def forward(self, margin: torch.Tensor) -> torch.Tensor:
        """[B] margins -> [B, P] hyperparameters."""
        hidden = torch.relu(self.fc1(margin[:, None]))
        return self.offsets + self.scales * torch.sigmoid(self.fc2(hidden))

    def hyperparameters(self, margin: torch.Tensor) -> dict[str, torch.Tensor]:
        """{name: [B] tensor} for the loss family's keyword arguments."""
        values = self(margin)
        return {name: values[:, i] for i, name in enumerate(self.param_names)}

    def start_at(self, values: Mapping[str, float]) -> None:
        """Shift the output bias so that Λ(m = 0) equals ``values`` (clipped just inside the range)."""
        with torch.no_grad():
            zero = self.fc2(torch.relu(self.fc1(torch.zeros(1, 1, dtype=self.fc1.weight.dtype))))[0]
            for i, name in enumerate(self.param_names):
                if name not in values:
                    continue
                frac = (float(values[name]) - float(self.offsets[i])) / float(self.scales[i])
                frac = min(max(frac, 1e-4), 1 - 1e-4)
                self.fc2.bias[i] += math.log(frac) - math.log1p(-frac) - zero[i]


def adjuster_to_dict(adjuster: Adjuster) -> dict:
    """The adjuster as JSON-able data (see the module docstring for the format)."""
    def rows(t: torch.Tensor) -> list:
        return t.detach().cpu().double().tolist()

    return {
        "format": ADJUSTER_FORMAT, "format_version": ADJUSTER_FORMAT_VERSION, "family": adjuster.family,
        "param_names": list(adjuster.param_names), "hidden": adjuster.hidden, "input": "logit_margin",
        "w1": rows(adjuster.fc1.weight), "b1": rows(adjuster.fc1.bias),
        "w2": rows(adjuster.fc2.weight), "b2": rows(adjuster.fc2.bias),
        "offsets": dict(zip(adjuster.param_names, rows(adjuster.offsets))),
        "scales": dict(zip(adjuster.param_names, rows(adjuster.scales))),
    }


def adjuster_from_dict(data: Mapping) -> Adjuster:
    """Rebuild an `Adjuster` from `adjuster_to_dict` data; ValueError names any bad field."""
    if not isinstance(data, Mapping) or data.get("format") != ADJUSTER_FORMAT:
        raise ValueError(f"not an adjuster: expected a mapping with format={ADJUSTER_FORMAT!r}; got {str(data)[:80]!r}")
    if data.get("format_version") != ADJUSTER_FORMAT_VERSION:
        raise ValueError(
            f"adjuster format_version={data.get('format_version')!r}; this code reads {ADJUSTER_FORMAT_VERSION}"
        )
    names, hidden, family = list(data.get("param_names") or []), data.get("hidden"), data.get("family")
    fam = get_family(family)
    unknown = [n for n in names if n not in fam.param_names]
    if not names or unknown or not isinstance(hidden, int) or hidden < 1:
        raise ValueError(f"adjuster param_names={names!r} / hidden={hidden!r} do not fit family {family!r} "
                         f"(parameters {fam.param_names}); hidden must be a positive integer")
    shapes = {"w1": (hidden, 1), "b1": (hidden,), "w2": (len(names), hidden), "b2": (len(names),)}
    tensors = {key: _tensor_field(data, key, shape) for key, shape in shapes.items()}
    for key in ("offsets", "scales"):
        if not isinstance(data.get(key), Mapping) or set(data[key]) != set(names):
            raise ValueError(f"adjuster field {key!r} must map each of {names} to a number; got {data.get(key)!r}")
    adjuster = Adjuster(family, names, data["offsets"], data["scales"], hidden=hidden)
    with torch.no_grad():
        for key, module, attr in (("w1", adjuster.fc1, "weight"), ("b1", adjuster.fc1, "bias"),
                                  ("w2", adjuster.fc2, "weight"), ("b2", adjuster.fc2, "bias")):
            getattr(module, attr).copy_(tensors[key])
    return adjuster


def _tensor_field(data: Mapping, key: str, shape: tuple[int, ...]) -> torch.Tensor:
    try:
        t = torch.tensor(data[key], dtype=torch.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"adjuster field {key!r} must be a nested list of numbers of shape {shape}: {exc}") from None
    if tuple(t.shape) != shape or not bool(torch.isfinite(t).all()):
        raise ValueError(f"adjuster field {key!r} has shape {tuple(t.shape)}; expected {shape} of finite numbers")
    return t
