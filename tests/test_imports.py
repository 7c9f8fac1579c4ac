"""Lint-style checks over the source: import names, module-name strings, import arrows, private names.

Everything here reads the syntax tree of the files (``ast``); nothing of evoloss is imported, so these
tests are fast and work without torch or Ray.

The rules (docs/architecture.md, "Layers"):

- the repository's top-level folders install as ONE import name, ``evoloss``: code says
  ``from evoloss.losses ...``, never ``import losses`` / ``from workers ...`` (a bare name would import a
  second copy of the package from the working tree, or a user's own ``losses.py``);
- module names written in strings (``importlib.import_module``, ``monkeypatch.setattr``, lists of
  modules to import) follow the same rule, and those that name an evoloss module name one that exists;
- the import arrows point one way: ``search -> workers -> losses`` and ``search -> results -> losses``;
- a module imports no leading-underscore name from another module (private means private).
"""
from __future__ import annotations

import ast
import functools
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
THIS_FILE = Path(__file__).resolve().relative_to(ROOT).as_posix()
SCANNED = ("losses", "workers", "results", "search", "evoloss", "tests", "bench", "scripts")
"""Folders whose .py files are checked (relative to the repository root)."""
SUBPACKAGES = ("losses", "workers", "results", "search")
"""Top-level folders that install as ``evoloss.<name>``: never importable under their bare name."""
PACKAGE_DIRS = {"evoloss": "evoloss", **{name: f"evoloss.{name}" for name in SUBPACKAGES}}
"""Repository folder -> dotted package name (pyproject.toml's ``[tool.setuptools.package-dir]``)."""

# The import arrows: folder -> evoloss packages it must never import.
FORBIDDEN_IMPORTS = {
    "losses": ("evoloss.workers", "evoloss.results", "evoloss.search"),
    "results": ("evoloss.search", "evoloss.workers"),
    "workers": ("evoloss.search", "evoloss.results"),
}


# --- the parsed files ------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def sources() -> dict[str, ast.Module]:
    """Every scanned .py file, parsed: {path relative to the root (posix): tree}."""
    trees: dict[str, ast.Module] = {}
    for folder in SCANNED:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            rel = path.relative_to(ROOT).as_posix()
            trees[rel] = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
    return trees


def absolute_imports(tree: ast.Module) -> list[tuple[int, str, tuple[str, ...]]]:
    """``(line, module, imported names)`` of every absolute import (``import m``: names empty)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name, ()) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module, tuple(alias.name for alias in node.names)))
    return found


def imported_modules(tree: ast.Module) -> list[tuple[int, str]]:
    """Modules an import may load: ``from evoloss import workers`` counts as ``evoloss.workers``."""
    out = []
    for line, module, names in absolute_imports(tree):
        out.append((line, module))
        out.extend((line, f"{module}.{name}") for name in names if name != "*")
    return out


def string_constants(tree: ast.Module):
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value


def first_string_arg(call: ast.Call) -> str | None:
    if call.args and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str):
        return call.args[0].value
    return None


def calls(tree: ast.Module):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def allowed_module_name(name: str) -> bool:
    """``evoloss.…``, ``tests.…`` or a standard-library module (the part before any ``:attr``)."""
    module = name.partition(":")[0]
    top = module.split(".")[0]
    return top in ("evoloss", "tests") or top in sys.stdlib_module_names


def module_exists(dotted: str) -> bool:
    """Whether ``evoloss.X.a.b`` names a module or package in the repository (via PACKAGE_DIRS)."""
    parts = dotted.split(".")
    folder = "evoloss" if len(parts) == 1 or parts[1] not in SUBPACKAGES else parts[1]
    rest = parts[1:] if folder == "evoloss" else parts[2:]
    base = ROOT / folder / Path(*rest) if rest else ROOT / folder
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def test_scanned_folders_exist_and_hold_code() -> None:
    trees = sources()
    for folder in ("losses", "workers", "results", "search", "evoloss", "tests"):
        assert any(path.startswith(folder + "/") for path in trees), f"no .py files under {folder}/"


# --- (a) one import name -------------------------------------------------------------------------
def test_no_bare_subpackage_imports() -> None:
    bad = [
        f"{path}:{line}: {module}"
        for path, tree in sources().items()
        for line, module, _ in absolute_imports(tree)
        if module.split(".")[0] in SUBPACKAGES
    ]
    assert not bad, "import these through evoloss (from evoloss.losses import ...):\n" + "\n".join(bad)


def test_no_bare_subpackage_imports_in_code_held_in_strings() -> None:
    """Code run through ``python -c`` or written to scripts follows the same rule."""
    bad = []
    for path, tree in sources().items():
        for line, text in string_constants(tree):
            if "import" not in text or path == THIS_FILE:
                continue
            try:
                code = ast.parse(text)
            except SyntaxError:
                continue  # prose, not code
            bad += [f"{path}:{line}: {module}" for _, module, _ in absolute_imports(code)
                    if module.split(".")[0] in SUBPACKAGES]
    assert not bad, "code in strings must import through evoloss too:\n" + "\n".join(bad)


def test_no_relative_imports() -> None:
    """Relative imports are not used (every import names its package, so moves are greppable)."""
    bad = [
        f"{path}:{node.lineno}: from {'.' * node.level}{node.module or ''} import ..."
        for path, tree in sources().items()
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level > 0
    ]
    assert not bad, "use absolute evoloss.… imports:\n" + "\n".join(bad)


# --- (b) module names in strings -------------------------------------------------------------------
def test_import_module_string_literals_are_evoloss_tests_or_stdlib() -> None:
    bad = []
    for path, tree in sources().items():
        for call, func in calls(tree):
            if func.split(".")[-1] in ("import_module", "__import__", "find_spec"):
                name = first_string_arg(call)
                if name is not None and not allowed_module_name(name):
                    bad.append(f"{path}:{call.lineno}: {func}({name!r})")
    assert not bad, "module names must start with evoloss. or tests. (or be stdlib):\n" + "\n".join(bad)


def test_monkeypatch_and_mock_string_targets_are_evoloss_tests_or_stdlib() -> None:
    """``monkeypatch.setattr("pkg.mod.attr", value)`` / ``delattr("…")`` / ``mock.patch("…")`` targets."""
    bad = []
    for path, tree in sources().items():
        for call, func in calls(tree):
            last = func.split(".")[-1]
            patching = (last in ("setattr", "delattr") and "monkeypatch" in func) or last == "patch"
            target = first_string_arg(call) if patching else None
            if target is not None and "." in target and not allowed_module_name(target):
                bad.append(f"{path}:{call.lineno}: {func}({target!r}, ...)")
    assert not bad, "patch targets must start with evoloss. or tests. (or be stdlib):\n" + "\n".join(bad)


_BARE_MODULE_STRING = re.compile(
    r"^(?:(?:losses|workers|results)(?:\.[A-Za-z_]\w*)+|search\.(?:commands|engine)(?:\.[A-Za-z_]\w*)*)(?::\w+)?$"
)
_FILE_SUFFIXES = {"json", "toml", "parquet", "md", "png", "txt", "csv", "py", "npz", "pkl"}


@functools.lru_cache(maxsize=None)
def bare_module_strings() -> dict[tuple[str, str], int]:
    """Strings that are a whole bare module path (``"workers.standard"``, ``"search.engine:f"``).

    This file is skipped: its own self-tests quote such strings.
    """
    found: dict[tuple[str, str], int] = {}
    for path, tree in sources().items():
        if path == THIS_FILE:
            continue
        for line, value in string_constants(tree):
            if _BARE_MODULE_STRING.match(value) and value.rsplit(".", 1)[-1] not in _FILE_SUFFIXES:
                found.setdefault((path, value), line)
    return found


def test_no_bare_module_name_strings() -> None:
    new = bare_module_strings()
    assert not new, "write module names in strings as evoloss.…:\n" + "\n".join(
        f"{path}:{line}: {value!r}" for (path, value), line in sorted(new.items()))


_EVOLOSS_MODULE_STRING = re.compile(r"^evoloss\.(?:losses|workers|results|search)(?:\.[A-Za-z_]\w*)*(?::\w+)?$")


def test_evoloss_module_name_strings_name_existing_modules() -> None:
    """A module list (``DEFAULT_TRAINER_MODULES``, the CLI's ``COMMANDS`` …) must follow every move.

    Strings that name a module on purpose absent (``no_such`` in the name) are skipped.
    """
    bad = []
    for path, tree in sources().items():
        for line, value in string_constants(tree):
            if not _EVOLOSS_MODULE_STRING.match(value) or "no_such" in value:
                continue
            module, _, attr = value.partition(":")
            exists = module_exists(module) or (not attr and module_exists(module.rsplit(".", 1)[0]))
            if not exists:
                bad.append(f"{path}:{line}: {value!r}")
    assert not bad, "these strings name evoloss modules that do not exist:\n" + "\n".join(bad)


# --- (c) the import arrows -------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def arrow_violations() -> dict[tuple[str, str], int]:
    found: dict[tuple[str, str], int] = {}
    for path, tree in sources().items():
        folder = path.split("/")[0]
        forbidden = FORBIDDEN_IMPORTS.get(folder, ())
        for line, module in imported_modules(tree):
            if any(module == f or module.startswith(f + ".") for f in forbidden):
                found.setdefault((path, module), line)
    return found


@pytest.mark.parametrize("folder", sorted(FORBIDDEN_IMPORTS))
def test_import_arrows_point_one_way(folder: str) -> None:
    """losses imports nothing of ours; results and workers import losses only (search imports all)."""
    bad = {k: line for k, line in arrow_violations().items()
           if k[0].startswith(folder + "/")}
    assert not bad, (
        f"{folder}/ must not import {', '.join(FORBIDDEN_IMPORTS[folder])} (move the shared piece down):\n"
        + "\n".join(f"{path}:{line}: {module}" for (path, module), line in sorted(bad.items()))
    )


def test_forbidden_import_detection_sees_every_import_form() -> None:
    """The checker itself: plain, from-package, from-module and function-local imports all count."""
    tree = ast.parse(
        "import evoloss.search.cli\n"
        "from evoloss import workers\n"
        "from evoloss.results.store import ParquetStore\n"
        "def f():\n    from evoloss.search import engine\n"
    )
    modules = {m for _, m in imported_modules(tree)}
    assert {"evoloss.search.cli", "evoloss.workers", "evoloss.results.store", "evoloss.search"} <= modules


# --- (d) private names -----------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def private_imports() -> dict[tuple[str, str], int]:
    """``from evoloss.X.mod import _name`` anywhere: {(file, "module:name"): line} (dunders excluded)."""
    found: dict[tuple[str, str], int] = {}
    for path, tree in sources().items():
        for line, module, names in absolute_imports(tree):
            if module.split(".")[0] != "evoloss":
                continue
            for name in names:
                if name.startswith("_") and not (name.startswith("__") and name.endswith("__")):
                    found.setdefault((path, f"{module}:{name}"), line)
    return found


def test_no_private_name_imports() -> None:
    new = private_imports()
    assert not new, "make the name public (no leading underscore) or move it where it is used:\n" + "\n".join(
        f"{path}:{line}: {name}" for (path, name), line in sorted(new.items()))
