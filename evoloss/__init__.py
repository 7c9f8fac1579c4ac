"""evoloss: evolutionary and meta-learned loss search for noisy labels.

The public API (each name loads its module on first use, so ``import evoloss`` is cheap)::

    import evoloss
    run = evoloss.search("quick", out="runs/s")          # a CMA-ES loss search -> SearchResult
    path = evoloss.export(run, name="robust_loss")        # -> .../robust_loss/loss.json
    criterion = evoloss.load_loss(path)                   # an nn.Module: criterion(logits, targets)
    cmp = evoloss.compare("quick", out="runs/c", overrides={"methods.evolved.run_dir": str(run.run_dir)})
    evoloss.report(cmp)                                   # -> runs/c/report/report.md

Extension points: `register_dataset`, `register_arch`, `register_loss_family` (with `Param`),
`register_trainer`, and `load_plugins(["my_losses"])`: modules of yours imported here and in every Ray
worker (docs/data.md). Datasets from files (``npz:PATH`` ...) and model factories (``MODULE:FUNCTION``)
are named in configs.
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "CompareConfig",
    "CompareResult",
    "ConfigError",
    "LossSpec",
    "Param",
    "SearchConfig",
    "SearchResult",
    "compare",
    "create_loss",
    "export",
    "export_plugin",
    "load_loss",
    "load_plugins",
    "register_arch",
    "register_dataset",
    "register_loss_family",
    "register_trainer",
    "report",
    "search",
]

# public name -> (module, attribute); attribute None: the module itself
_LAZY: dict[str, tuple[str, str | None]] = {
    "search": ("evoloss.search", None),  # the package is callable: evoloss.search(config, ...)
    "SearchResult": ("evoloss.search.api", "SearchResult"),
    "export": ("evoloss.search.api", "export"),
    "compare": ("evoloss.search.api", "compare"),
    "CompareResult": ("evoloss.search.api", "CompareResult"),
    "report": ("evoloss.search.api", "report"),
    "ConfigError": ("evoloss.search.config_fields", "ConfigError"),
    "SearchConfig": ("evoloss.search.config", "SearchConfig"),
    "CompareConfig": ("evoloss.search.compare_config", "CompareConfig"),
    "LossSpec": ("evoloss.losses.registry", "LossSpec"),
    "create_loss": ("evoloss.losses", "create_loss"),
    "load_loss": ("evoloss.losses", "load_loss"),
    "export_plugin": ("evoloss.losses", "export_plugin"),
    "register_loss_family": ("evoloss.losses.registry", "register_family"),
    "Param": ("evoloss.losses.registry", "Param"),
    "load_plugins": ("evoloss.workers.user_code", "load_plugins"),
    "register_dataset": ("evoloss.workers.datasets.registry", "register_dataset"),
    "register_arch": ("evoloss.workers.archs", "register_arch"),
    "register_trainer": ("evoloss.workers.trainer", "register_trainer"),
    "losses": ("evoloss.losses", None),
    "workers": ("evoloss.workers", None),
    "results": ("evoloss.results", None),
}


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from evoloss.losses.versions import evoloss_version

        return evoloss_version()
    if name not in _LAZY:
        raise AttributeError(f"module 'evoloss' has no attribute {name!r}")
    module, attribute = _LAZY[name]
    value = importlib.import_module(module)
    if attribute is not None:
        value = getattr(value, attribute)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | {"__version__"})
