"""The config presets shipped with evoloss: their names and texts (cheap: no torch, no Ray).

Search presets live in ``search/presets/``, compare presets in ``search/compare_presets/``; a preset
is one TOML file whose name (without ``.toml``) is the preset's name.
"""
from __future__ import annotations

from importlib import resources

FOLDERS = {"search": "presets", "compare": "compare_presets"}


def _folder(kind: str):
    if kind not in FOLDERS:
        raise ValueError(f"preset kind {kind!r} is not one of {sorted(FOLDERS)}")
    return resources.files("evoloss.search").joinpath(FOLDERS[kind])


def preset_names(kind: str = "search") -> list[str]:
    """Names of the shipped presets of ``kind`` ("search" or "compare"), sorted."""
    return sorted(p.name[: -len(".toml")] for p in _folder(kind).iterdir() if p.name.endswith(".toml"))


def preset_text(kind: str, name: str) -> str:
    """The TOML text of preset ``name`` of ``kind``; raises KeyError-free ValueError on an unknown name."""
    names = preset_names(kind)
    if name not in names:
        raise ValueError(f"{kind} preset {name!r} is not shipped; choose one of {', '.join(names)}")
    return _folder(kind).joinpath(f"{name}.toml").read_text(encoding="utf-8")
