"""The source copier behind every standalone plug-in module: portable code copied verbatim.

`portable_sources` returns the source of functions and classes (``inspect.getsource``, decorator
lines dropped) after checking, on the syntax tree, that each reads only ``torch``, ``math``, ``F``
(``torch.nn.functional``), ``nn``, builtins and the other copied entries — so the module it goes
into needs only torch. Anything else (a module constant, an unlisted helper, a closure, code
without a source file) raises a ValueError that names the family and the function.
"""
from __future__ import annotations

import ast
import builtins
import inspect
import math
import sys
import textwrap
from typing import Callable, Collection, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

PORTABLE_GLOBALS = {"torch": torch, "math": math, "F": F, "nn": nn}
"""The module-level names a copied function may read besides builtins and the other copied code."""

__all__ = ["PORTABLE_GLOBALS", "portable_sources"]


def portable_sources(code: Iterable[Callable], family: str, reserved: Collection[str] = ()) -> list[str]:
    """The source of each function or class in ``code`` (in order, each once) for a standalone module.

    Every free name the code reads must be ``torch``, ``math``, ``F``, ``nn``, a builtin or another
    entry of ``code``; a name in ``reserved`` (the names the module template defines) raises.
    ``family`` names the owner in error messages.
    """
    items = _unique_functions(tuple(code))
    portable = {fn.__name__: fn for fn in items}
    for fn in items:
        if fn.__name__ in reserved:
            raise ValueError(
                f"loss family {family!r}: function name {fn.__name__!r} clashes with a name of the plug-in "
                "module; rename the function"
            )
    return [_portable_function_source(fn, portable, family) for fn in items]


def _unique_functions(functions: tuple[Callable, ...]) -> list[Callable]:
    """The functions (and classes) to copy, in order, each once; two different ones of one name raise."""
    seen: dict[str, Callable] = {}
    for fn in functions:
        if not (inspect.isfunction(fn) or inspect.isclass(fn)):
            raise ValueError(f"plug-in code must be plain functions or classes; got {type(fn).__name__} {fn!r}")
        if fn.__name__ in seen and seen[fn.__name__] is not fn:
            raise ValueError(f"two plug-in functions are named {fn.__name__!r}; helper names must be unique")
        seen[fn.__name__] = fn
    return list(seen.values())


def _portable_function_source(fn: Callable, portable: Mapping[str, Callable], family: str) -> str:
    """The source of ``fn`` (a function or class) without decorators, after checking its free names are portable."""
    where = f"loss family {family!r}: function {fn.__module__}.{fn.__name__}"
    try:
        text = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError) as exc:
        raise ValueError(f"{where}: its source is not available ({exc}); define it in a .py file") from None
    tree = ast.parse(text)
    node = tree.body[0] if tree.body else None
    kind = ast.ClassDef if inspect.isclass(fn) else ast.FunctionDef
    if not isinstance(node, kind) or node.name != fn.__name__ or getattr(fn, "__closure__", None):
        raise ValueError(f"{where}: plug-in code must be module-level 'def' functions without closures")
    module_globals = fn.__globals__ if inspect.isfunction(fn) else vars(sys.modules[fn.__module__])
    for free in sorted(_free_names(node)):
        expected = portable.get(free, PORTABLE_GLOBALS.get(free))
        if expected is None or module_globals.get(free) is not expected:
            raise ValueError(
                f"{where} uses the global name {free!r}, which a standalone plug-in cannot carry; use only "
                "torch, math, F, nn and functions listed in helpers= (write constants as literals)"
            )
    body = "\n".join(text.splitlines()[node.lineno - 1:])
    return f"# evoloss {fn.__module__}.{fn.__name__}\n{body}\n"


def _free_names(function: ast.FunctionDef | ast.ClassDef) -> set[str]:
    """Names ``function`` reads but does not bind.

    Excluded: builtins, annotations (never evaluated under ``from __future__ import annotations``)
    and the function's own decorators (dropped from the copy).
    """
    skipped = [a.annotation for a in ast.walk(function) if isinstance(a, (ast.arg, ast.AnnAssign))]
    skipped += [n.returns for n in ast.walk(function) if isinstance(n, ast.FunctionDef)]
    skipped += function.decorator_list
    in_annotation = {id(sub) for tree in skipped if tree is not None for sub in ast.walk(tree)}
    bound: set[str] = set()
    loaded: set[str] = set()
    for node in ast.walk(function):
        if isinstance(node, (ast.FunctionDef, ast.Lambda)):
            bound.update(a.arg for a in ast.walk(node.args) if isinstance(a, ast.arg))
            bound.add(getattr(node, "name", ""))
        elif isinstance(node, ast.Name) and id(node) not in in_annotation:
            (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    return loaded - bound - set(dir(builtins))
