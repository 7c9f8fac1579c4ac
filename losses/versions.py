"""Version strings recorded with every result and plug-in (the leaf package, so all can import it)."""
from __future__ import annotations

import functools
from importlib import metadata


@functools.lru_cache(maxsize=None)
def evoloss_version() -> str:
    """The installed evoloss distribution's version ("unknown" when run from an uninstalled tree)."""
    try:
        return metadata.version("evoloss")
    except metadata.PackageNotFoundError:
        return "unknown"


def torch_version() -> str:
    import torch

    return str(torch.__version__)
