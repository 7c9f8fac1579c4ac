"""evoloss loss library (leaf package: imports nothing else of ours).

Families register themselves on import; `create_loss(spec)` builds one, `list_losses()` names them.
"""
from __future__ import annotations

from evoloss.losses.registry import Family, LossSpec, Param, get_family, list_losses, register_family
from evoloss.losses.module import Loss, create_loss

# Each family is one module; importing it registers it.
from evoloss.losses import (  # noqa: F401  (registration)
    apl,
    bitempered,
    bootstrap,
    ce,
    focal,
    gce,
    js,
    label_smoothing,
    mae,
    polysoft,
    relative_gce,
    sce,
    taylor,
)
from evoloss.losses.plugin import export_plugin, load_loss, read_plugin
from evoloss.losses.plugin.adjusted import AdjustedLoss, read_adjusted_plugin  # the adjuster plug-in
from evoloss.losses.plugin.adjusted_export import export_adjuster_plugin

__all__ = [
    "AdjustedLoss",
    "Family",
    "Loss",
    "LossSpec",
    "Param",
    "create_loss",
    "export_adjuster_plugin",
    "export_plugin",
    "get_family",
    "list_losses",
    "load_loss",
    "read_adjusted_plugin",
    "read_plugin",
    "register_family",
]
