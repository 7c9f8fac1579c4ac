"""Packaging: one installed import name (``evoloss``), and the record-schema document in step with the code.

- pyproject.toml's ``packages`` list is exactly the repository's package folders (an ``__init__.py``
  under evoloss/ losses/ workers/ results/ search/) plus the preset data folders, under their dotted
  ``evoloss.…`` names — so a new or moved subpackage cannot be left out of the wheel;
- (slow) a wheel built from the repository holds ``evoloss`` and nothing else at the top level, every
  .py file of those folders and the preset .toml files, and once installed into a fresh venv it makes
  ``evoloss`` importable while ``losses``, ``workers``, ``results`` and ``search`` are not;
- docs/records.md documents every column of ``EVAL_SCHEMA`` and ``GENERATION_SCHEMA`` and no other.
"""
from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIRS = {"evoloss": "evoloss", "losses": "evoloss.losses", "workers": "evoloss.workers",
               "results": "evoloss.results", "search": "evoloss.search"}
"""Repository folder -> the dotted package it installs as (``[tool.setuptools.package-dir]``)."""
DATA_PACKAGES = {"search/presets": "evoloss.search.presets",
                 "search/compare_presets": "evoloss.search.compare_presets"}
"""Folders without code that ship as package data (the preset .toml files)."""
BARE_NAMES = ("losses", "search", "workers", "results")


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def dotted(folder: Path) -> str:
    """``losses/plugin`` -> ``evoloss.losses.plugin`` (``folder`` relative to the root)."""
    top, *rest = folder.parts
    return ".".join([SOURCE_DIRS[top], *rest])


def package_folders() -> dict[str, Path]:
    """{dotted name: folder relative to the root} of every folder holding an ``__init__.py``."""
    found: dict[str, Path] = {}
    for top in SOURCE_DIRS:
        for init in (ROOT / top).rglob("__init__.py"):
            folder = init.parent.relative_to(ROOT)
            if "__pycache__" not in folder.parts:
                found[dotted(folder)] = folder
    return found


def source_files() -> list[Path]:
    """Every .py file of the source folders and the preset .toml files, relative to the root."""
    files = [p.relative_to(ROOT) for top in SOURCE_DIRS for p in (ROOT / top).rglob("*.py")
             if "__pycache__" not in p.parts]
    files += [p.relative_to(ROOT) for folder in DATA_PACKAGES for p in (ROOT / folder).glob("*.toml")]
    return sorted(files)


def wheel_path_of(rel: Path) -> str:
    """Where a repository file lands in the wheel: ``losses/plugin/x.py`` -> ``evoloss/losses/plugin/x.py``."""
    return "/".join([*dotted(rel.parent).split("."), rel.name])


# --- (a) the packages list ---------------------------------------------------------------------------
def test_packages_list_matches_the_package_folders() -> None:
    tool = pyproject()["tool"]["setuptools"]
    listed = tool["packages"]
    assert len(listed) == len(set(listed)), f"duplicates in [tool.setuptools] packages: {listed}"
    expected = set(package_folders()) | set(DATA_PACKAGES.values())
    missing, extra = sorted(expected - set(listed)), sorted(set(listed) - expected)
    assert not missing and not extra, (
        f"pyproject.toml [tool.setuptools] packages is out of step with the folders: "
        f"add {missing}, remove {extra} (a folder is a package when it holds an __init__.py)")


def test_package_dir_maps_each_top_level_folder_once() -> None:
    assert pyproject()["tool"]["setuptools"]["package-dir"] == {name: folder for folder, name in SOURCE_DIRS.items()}


def test_preset_folders_hold_data_only_and_are_package_data() -> None:
    tool = pyproject()["tool"]["setuptools"]
    for folder, name in DATA_PACKAGES.items():
        assert list((ROOT / folder).glob("*.toml")), f"{folder}/ holds no preset"
        assert not (ROOT / folder / "__init__.py").exists(), f"{folder}/ is data, not code"
        assert "*.toml" in tool["package-data"][name], f"{name} must ship its *.toml files"


def test_every_source_file_lies_in_a_package() -> None:
    """A .py file in a folder without ``__init__.py`` would silently stay out of the wheel."""
    packages = {folder for folder in package_folders().values()}
    orphans = [str(p) for p in source_files() if p.suffix == ".py" and p.parent not in packages]
    assert not orphans, f"these files are in no package (add an __init__.py): {orphans}"


# --- (b) the wheel and a fresh installation ----------------------------------------------------------
_COPY_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")


@pytest.mark.slow
def test_wheel_holds_only_evoloss_and_installs_one_import_name(tmp_path: Path) -> None:
    # Build from a copy of what the wheel is made of, so the shared working tree gets no build/ folder
    # and no stale build/lib files (setuptools never cleans those) can leak into the wheel.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for top in SOURCE_DIRS:
        shutil.copytree(ROOT / top, src / top, ignore=_COPY_IGNORE)
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "-q", "-w", str(wheels), str(src)],
        capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert build.returncode == 0, f"pip wheel failed:\n{build.stdout}\n{build.stderr}"
    (wheel,) = wheels.glob("evoloss-*.whl")

    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    top_level = {n.split("/")[0] for n in names}
    dist_info = {t for t in top_level if t.endswith(".dist-info")}
    assert len(dist_info) == 1 and top_level - dist_info == {"evoloss"}, sorted(top_level)
    missing = [wheel_path_of(p) for p in source_files() if wheel_path_of(p) not in names]
    assert not missing, f"the wheel lacks {missing}"
    assert {"evoloss/search/presets/quick.toml", "evoloss/search/compare_presets/quick.toml"} <= names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONNOUSERSITE"] = "1"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
         "--disable-pip-version-check", "-q", str(wheel)],
        capture_output=True, text=True, timeout=180, cwd=tmp_path, env=env)
    assert install.returncode == 0, f"pip install failed:\n{install.stdout}\n{install.stderr}"

    outside = tmp_path / "elsewhere"  # not the repository: its folders must not be importable from cwd
    outside.mkdir()
    probe = (
        "import importlib.util, json, sys, sysconfig\n"
        "names = " + repr([*BARE_NAMES, "evoloss", "evoloss.losses", "evoloss.workers", "evoloss.results",
                           "evoloss.search", "evoloss.search.presets"]) + "\n"
        "specs = {n: importlib.util.find_spec(n) for n in names}\n"
        "print(json.dumps({'purelib': sysconfig.get_paths()['purelib'],\n"
        "                  'origins': {n: (s.origin if s else None) for n, s in specs.items()},\n"
        "                  'locations': {n: (list(s.submodule_search_locations or []) if s else None)\n"
        "                                for n, s in specs.items()}}))\n"
    )
    run = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=60,
                         cwd=outside, env=env)
    assert run.returncode == 0, run.stderr
    import json

    found = json.loads(run.stdout)
    purelib = Path(found["purelib"]).resolve()
    assert purelib.is_relative_to(venv.resolve()), purelib
    for name in BARE_NAMES:
        assert found["origins"][name] is None and found["locations"][name] is None, (
            f"{name!r} is importable from an installation: {found['origins'][name]}")
    for name in ("evoloss", "evoloss.losses", "evoloss.workers", "evoloss.results", "evoloss.search"):
        origin = found["origins"][name]
        assert origin is not None, f"{name} is not importable from the installed wheel"
        assert Path(origin).resolve().is_relative_to(purelib), f"{name} comes from {origin}, not the venv"
    presets = found["locations"]["evoloss.search.presets"]
    assert presets and all(Path(p).resolve().is_relative_to(purelib) for p in presets), presets
    # the installed package runs without its dependencies as far as it needs none: the lazy API and the
    # shipped presets (package data) work from the wheel
    usable = subprocess.run(
        [str(python), "-c", "import evoloss, evoloss.search.preset_files as p; "
         "print(callable(evoloss.search), p.preset_names('search'), p.preset_names('compare'))"],
        capture_output=True, text=True, timeout=60, cwd=outside, env=env)
    assert usable.returncode == 0, usable.stderr
    assert usable.stdout.strip() == "True ['arl-ar', 'arl-dr', 'quick', 'quick-ar', 'quick-taylor', 'transfer'] ['arl-table1', 'arl-table2', 'quick']"


# --- docs/records.md and the schema ------------------------------------------------------------------
_ROW = re.compile(r"^\|\s*`([^`]+)`\s*\|")


def documented_tables() -> list[list[str]]:
    """The tables of docs/records.md whose rows start with a name in backticks (``| `run_id` | ... |``):
    for each, the first cells in order (a table ends at the first line that is not a table row)."""
    text = (ROOT / "docs" / "records.md").read_text(encoding="utf-8")
    tables: list[list[str]] = []
    current: list[str] | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("|"):
            current = None
            continue
        match = _ROW.match(line)
        if match:
            if current is None:
                current = []
                tables.append(current)
            current.append(match.group(1))
    return tables


def schema_columns() -> dict[str, list[str]]:
    """The column names of both schemas, read from results/schema.py's syntax tree (no pyarrow import)."""
    tree = ast.parse((ROOT / "results" / "schema.py").read_text(encoding="utf-8"))
    columns: dict[str, list[str]] = {}
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else (
            node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None)
        if isinstance(target, ast.Name) and target.id in ("_EVAL_COLUMNS", "_GENERATION_COLUMNS"):
            columns[target.id] = [elt.elts[0].value for elt in node.value.elts]
    assert set(columns) == {"_EVAL_COLUMNS", "_GENERATION_COLUMNS"}, (
        "results/schema.py no longer defines _EVAL_COLUMNS/_GENERATION_COLUMNS as tuples of (name, type): "
        "update schema_columns() in this test")
    return columns


def test_schema_columns_read_from_the_source_match_the_arrow_schemas() -> None:
    pytest.importorskip("pyarrow")
    from evoloss.results.schema import EVAL_SCHEMA, GENERATION_SCHEMA

    columns = schema_columns()
    assert columns["_EVAL_COLUMNS"] == EVAL_SCHEMA.names
    assert columns["_GENERATION_COLUMNS"] == GENERATION_SCHEMA.names


def test_records_doc_names_every_schema_column_and_no_other() -> None:
    tables = documented_tables()
    documented = {name for table in tables for name in table}
    columns = schema_columns()
    schema = set(columns["_EVAL_COLUMNS"]) | set(columns["_GENERATION_COLUMNS"])
    missing = sorted(schema - documented)
    extra = sorted(documented - schema)
    assert not missing, f"docs/records.md does not document the column(s) {missing}"
    assert not extra, f"docs/records.md documents column(s) the schemas lack: {extra}"


@pytest.mark.parametrize("schema", ["_EVAL_COLUMNS", "_GENERATION_COLUMNS"])
def test_records_doc_has_one_table_per_schema_in_column_order(schema: str) -> None:
    expected = schema_columns()[schema]
    tables = documented_tables()
    assert expected in tables, (
        f"docs/records.md needs one table listing {schema.strip('_').lower()} in the schema's order; "
        f"closest: {max(tables, key=lambda t: len(set(t) & set(expected)), default=[])}")


def test_records_doc_states_the_schema_version() -> None:
    tree = ast.parse((ROOT / "results" / "schema.py").read_text(encoding="utf-8"))
    version = next(node.value.value for node in tree.body if isinstance(node, ast.Assign)
                   and any(isinstance(t, ast.Name) and t.id == "SCHEMA_VERSION" for t in node.targets))
    text = (ROOT / "docs" / "records.md").read_text(encoding="utf-8")
    assert re.search(rf"[Ss]chema version[^0-9\n]*\b{version}\b", text), (
        f"docs/records.md must state the schema version ({version}) that results/schema.py writes")
