"""Class-wise loss-rank bins and hierarchical meta-set sampling of the Dynamic Loss.

jiang-dynamic-loss, "Label Corrector" and "Hierarchical Sampling Strategy" (§ Method):

- rank bins: samples are grouped by their (noisy) label, sorted by loss within the group, and the
  sorted group is split evenly into R bins; bin 0 holds the lowest losses (likely clean);
- hierarchical sampling, each epoch, from the noisy training set itself (no clean data):
  (i) a primary set of M0 random samples per class, (ii) the M1 lowest-loss samples per class of
  the primary set form the meta set D_c; the rest of the training set is D_n.

The paper gives M0 = 0.5, M1 = 0.25 as numbers without a unit. We read them as fractions of the
smallest class's size (so the meta set is class-balanced, as the paper requires) and require
0 < M1 ≤ M0 ≤ 1; a class smaller than the primary size contributes all its samples as primary.
"""
from __future__ import annotations

import math

import torch


def rank_bins(losses: torch.Tensor, labels: torch.Tensor, num_classes: int, bins: int) -> torch.Tensor:
    """Bin index r_i ∈ {0..bins−1} of each sample's loss rank within its label's class.

    Within a class of n samples sorted by increasing loss, position k gets bin ⌊k·bins/n⌋
    (ties broken by row order, so the result is deterministic).
    """
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"rank_bins: bins={bins!r} must be a positive integer")
    ranks = torch.zeros(len(labels), dtype=torch.long, device=labels.device)
    for c in range(num_classes):
        rows = (labels == c).nonzero(as_tuple=True)[0]
        if len(rows) == 0:
            continue
        order = torch.sort(losses[rows], stable=True).indices
        position = torch.empty_like(order)
        position[order] = torch.arange(len(rows), device=labels.device)
        ranks[rows] = position * bins // len(rows)
    return ranks


def hierarchical_meta_set(
    losses: torch.Tensor, labels: torch.Tensor, num_classes: int, *, primary_fraction: float,
    meta_fraction: float, generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(meta rows D_c, remaining rows D_n), both sorted; see the module docstring.

    ``generator`` (CPU) draws the primary sets; the same generator state gives the same split.
    """
    check_fractions(primary_fraction, meta_fraction)
    counts = torch.bincount(labels.cpu(), minlength=num_classes)
    present = counts[counts > 0]
    if len(present) == 0:
        raise ValueError("hierarchical sampling: the training set is empty")
    smallest = int(present.min())
    m0 = max(1, round(primary_fraction * smallest))
    m1 = max(1, min(m0, round(meta_fraction * smallest)))
    losses_cpu, labels_cpu = losses.detach().cpu(), labels.cpu()
    chosen = []
    for c in range(num_classes):
        rows = (labels_cpu == c).nonzero(as_tuple=True)[0]
        if len(rows) == 0:
            continue
        primary = rows[torch.randperm(len(rows), generator=generator)[: min(m0, len(rows))]]
        lowest = torch.sort(losses_cpu[primary], stable=True).indices[:m1]
        chosen.append(primary[lowest])
    meta = torch.sort(torch.cat(chosen)).values
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[meta] = False
    rest = keep.nonzero(as_tuple=True)[0]
    return meta.to(labels.device), rest.to(labels.device)


def check_fractions(primary_fraction: float, meta_fraction: float) -> None:
    """Raise ValueError unless 0 < meta_fraction ≤ primary_fraction ≤ 1."""
    ok = all(isinstance(v, (int, float)) and math.isfinite(v) for v in (primary_fraction, meta_fraction))
    if not ok or not 0 < meta_fraction <= primary_fraction <= 1:
        raise ValueError(
            f"hierarchical sampling needs 0 < meta_fraction (M1) <= primary_fraction (M0) <= 1; got "
            f"M0={primary_fraction!r}, M1={meta_fraction!r} (the paper uses 0.5 and 0.25)"
        )
