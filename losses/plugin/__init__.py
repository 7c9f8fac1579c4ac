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
module (``adjuster``: per-sample hyperparameters from a meta-learned network, `losses.plugin.adjusted`).
Its module registers the section with `register_plugin_section`; `load_loss` hands such a document
to the section's loader, and `read_plugin` / `read_loss_file` refuse it (it is not a `LossSpec`).
The header fields and their checks (`parse_plugin_header`), the copying of portable code
(`portable_sources`) and the atomic directory write (`write_plugin_dir`) are shared.

The modules:

- `losses.plugin.format`: the ``loss.json`` fields and checks, typed sections, `load_loss` / `read_plugin`;
- `losses.plugin.source`: the source copier for standalone modules (`portable_sources`);
- `losses.plugin.files`: strict JSON reading, JSON-data checks, the atomic directory write;
- `losses.plugin.export`: `export_plugin` and the plain standalone module (`standalone_source`);
- `losses.plugin.adjusted_format` / `adjusted` / `adjusted_export`: the ``adjuster`` section, the
  `AdjustedLoss` it loads as, and its export (imported here, so the section is always registered).
"""
from __future__ import annotations

from evoloss.losses.plugin.files import MAX_SPEC_BYTES, write_plugin_dir
from evoloss.losses.plugin.format import (
    PLUGIN_FILE,
    PLUGIN_FORMAT,
    PLUGIN_FORMAT_VERSION,
    SectionLoader,
    load_loss,
    normalisation_name,
    parse_plugin,
    parse_plugin_header,
    plugin_class_name,
    read_loss_file,
    read_plugin,
    register_plugin_section,
    validate_plugin_name,
)
from evoloss.losses.plugin.source import portable_sources
from evoloss.losses.plugin.export import export_plugin, standalone_source
from evoloss.losses.plugin import adjusted  # noqa: F401,E402  (registers the ``adjuster`` section)

__all__ = [
    "MAX_SPEC_BYTES",
    "PLUGIN_FILE",
    "PLUGIN_FORMAT",
    "PLUGIN_FORMAT_VERSION",
    "SectionLoader",
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
