"""Loss-shape figures: how a loss responds to the predicted probabilities (gao-arl, Fig. 2).

gao-arl-taylor-loss-search, Fig. 2 plots each loss against the predicted probability for a labelled
entry (y = 1) and an unlabelled one (y = 0); its §4 reads robustness off those curves (how hard a
loss "corrects" a confident prediction that disagrees with the label, and where its minimum lies).
Our losses are not all class-wise separable, so we draw the two situations on whole probability
vectors instead, several losses per panel:

- left panel, *labelled class*: the probability p_y of the labelled class sweeps (0, 1);
- right panel, *a non-labelled class*: the probability p_k of one other class k ≠ y sweeps (0, 1)
  — the network grows confident in another class, as on a noisy label it actually gets right.

Logit construction (our choice; the paper does not say): the swept class gets probability s, and
the remaining 1 − s is spread evenly over the other C − 1 classes (the labelled class among them in
the right panel). The logits are log p (softmax(log p) = p because Σp = 1), computed in float64; s
runs over an even grid strictly inside (0, 1): ``linspace(0, 1, points + 2)[1:-1]``.

A batch family (``relative_gce``: a row's loss depends on its batch) is drawn with each point as a
batch of its own — the loss of a batch whose rows all sit at that point.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from evoloss.losses import LossSpec, create_loss, get_family
from evoloss.results.store import atomic_write

SWEEPS = ("label", "other")
LABEL_CLASS = 0
OTHER_CLASS = 1
_TITLES = {
    "label": "labelled class: loss vs $p_y$",
    "other": "a non-labelled class: loss vs $p_k$ ($k \\neq y$)",
}


def probability_grid(points: int = 199) -> np.ndarray:
    """``points`` evenly spaced probabilities strictly inside (0, 1)."""
    if isinstance(points, bool) or not isinstance(points, int) or points < 2:
        raise ValueError(f"points must be an integer >= 2; got {points!r}")
    return np.linspace(0.0, 1.0, points + 2)[1:-1]


def shape_logits(probs: np.ndarray, num_classes: int, sweep: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits [N, C] (float64) and labels [N] placing probability ``probs[i]`` on the swept class.

    ``sweep="label"`` sweeps the labelled class (class 0); ``sweep="other"`` sweeps class 1 while the
    label stays 0. The other C − 1 classes share 1 − s evenly; logits = log p.
    """
    _check_classes(num_classes)
    if sweep not in SWEEPS:
        raise ValueError(f"sweep={sweep!r} is not one of {SWEEPS}")
    s = torch.as_tensor(np.asarray(probs, dtype=np.float64))
    if s.dim() != 1 or not bool(((s > 0) & (s < 1)).all()):
        raise ValueError("probs must be a 1-d array of probabilities strictly inside (0, 1)")
    swept = LABEL_CLASS if sweep == "label" else OTHER_CLASS
    p = ((1.0 - s) / (num_classes - 1))[:, None].repeat(1, num_classes)
    p[:, swept] = s
    targets = torch.full((s.shape[0],), LABEL_CLASS, dtype=torch.long)
    return torch.log(p), targets


def loss_shape_curves(spec: LossSpec, num_classes: int = 10, points: int = 199) -> dict[str, np.ndarray]:
    """The per-sample loss of ``spec`` along both sweeps: ``{"p": grid, "label": [N], "other": [N]}``.

    Raises:
        ValueError: the loss is not finite somewhere on the grid (named with the probability).
    """
    if not isinstance(spec, LossSpec):
        raise TypeError(f"spec must be a LossSpec; got {type(spec).__name__} {spec!r}")
    grid = probability_grid(points)
    loss = create_loss(spec, reduction="none")
    one_row_batches = get_family(spec.family).batch
    curves: dict[str, np.ndarray] = {"p": grid}
    with torch.no_grad():
        for sweep in SWEEPS:
            logits, targets = shape_logits(grid, num_classes, sweep)
            if one_row_batches:
                values = torch.cat([loss(logits[i:i + 1], targets[i:i + 1]) for i in range(len(targets))])
            else:
                values = loss(logits, targets)
            values = values.numpy().astype(np.float64)
            bad = ~np.isfinite(values)
            if bad.any():
                raise ValueError(
                    f"loss {spec.family!r} is not finite on the {sweep!r} sweep at p={grid[bad][0]:.4g}; "
                    "check its parameters"
                )
            curves[sweep] = values
    return curves


def plot_loss_shapes(
    specs: Sequence[tuple[str, LossSpec]],
    out_png: str | os.PathLike,
    num_classes: int = 10,
    points: int = 199,
) -> Path:
    """Draw every ``(label, spec)`` on one two-panel figure (gao-arl Fig. 2 style); return the PNG path.

    Every curve is computed before anything is written; the PNG is written to a temporary file
    beside ``out_png`` and renamed, so a failure leaves no file. Uses the Agg canvas directly (no
    pyplot, no global backend switch).

    Raises:
        ValueError: empty ``specs``, a bad or duplicate label, ``num_classes`` < 2, ``out_png`` not
            ending in ``.png``, or a loss that is not finite on the grid.
        TypeError: an entry is not a ``(str, LossSpec)`` pair.
    """
    out = Path(out_png)
    if out.suffix.lower() != ".png":
        raise ValueError(f"out_png must end in '.png'; got {str(out)!r}")
    if out.is_dir():
        raise ValueError(f"out_png {str(out)!r} is a directory; give a file name ending in '.png'")
    _check_classes(num_classes)
    entries = _check_entries(specs)
    curves = [(label, loss_shape_curves(spec, num_classes, points)) for label, spec in entries]
    figure = _draw(curves, num_classes)
    atomic_write(out, lambda stream: figure.savefig(stream, format="png", dpi=100))
    return out


MAX_CLASSES = 10_000
"""Most classes a loss-shape figure spreads probabilities over (each curve holds points x classes logits)."""


def _check_classes(num_classes: int) -> None:
    """Raise unless ``num_classes`` is an integer in [2, `MAX_CLASSES`] (bool excluded)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2; got {num_classes!r}")
    if num_classes > MAX_CLASSES:
        raise ValueError(f"num_classes must be at most {MAX_CLASSES} (each curve holds points x classes logits); "
                         f"got {num_classes!r}")


def _check_entries(specs: Sequence[tuple[str, LossSpec]]) -> list[tuple[str, LossSpec]]:
    """The ``(label, spec)`` pairs, checked: non-empty list, string labels, unique, LossSpec values."""
    if isinstance(specs, (str, bytes)) or not isinstance(specs, Sequence):
        raise TypeError(f"specs must be a list of (label, LossSpec) pairs; got {type(specs).__name__}")
    if not specs:
        raise ValueError("specs is empty; give at least one (label, LossSpec) pair to plot")
    seen: set[str] = set()
    for index, entry in enumerate(specs):
        if not (isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[1], LossSpec)):
            raise TypeError(f"specs[{index}] must be a (label, LossSpec) pair; got {entry!r}")
        label = entry[0]
        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"specs[{index}] label must be a non-empty string; got {label!r}")
        if label in seen:
            raise ValueError(f"specs[{index}] label {label!r} is used twice; give each loss its own label")
        seen.add(label)
    return list(specs)


def _draw(curves: list[tuple[str, dict[str, np.ndarray]]], num_classes: int) -> Figure:
    """The two-panel figure: one line per loss in each panel, shared legend on the left panel."""
    figure = Figure(figsize=(10.0, 4.2))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2)
    for ax, sweep in zip(axes, SWEEPS):
        for label, curve in curves:
            ax.plot(curve["p"], curve[sweep], label=label, linewidth=1.6)
        ax.set_title(_TITLES[sweep], fontsize=10)
        ax.set_xlabel("predicted probability" + (" $p_y$" if sweep == "label" else " $p_k$"))
        ax.set_xlim(0.0, 1.0)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("loss")
    axes[0].legend(fontsize=8, loc="best")
    figure.suptitle(f"Loss shapes, C = {num_classes} classes (rest of the mass spread evenly)", fontsize=11)
    figure.tight_layout()
    return figure
