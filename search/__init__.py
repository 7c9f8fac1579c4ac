"""The coordinator: genome spaces, CMA-ES (pycma), the generation loop, dispatch to Ray, the Ray Tune
adapter, config, compare, and the command line.

The package is also the search function of the public API: ``evoloss.search("quick", out="runs/s")``
calls `evoloss.search.api.search`. Importing it loads nothing heavy; its modules load on first use.
"""
from __future__ import annotations

import sys
import types
from typing import Any


class _SearchPackage(types.ModuleType):
    """``evoloss.search`` is both this package and, called, `evoloss.search.api.search`."""

    def __call__(self, config: Any = None, **kwargs: Any) -> Any:
        from evoloss.search.api import search

        return search(config, **kwargs)


sys.modules[__name__].__class__ = _SearchPackage
