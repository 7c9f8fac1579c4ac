"""Typed TOML config fields: declaration, conversion, errors, layering and writing, in one place.

Both configs (`search.config` and `search.compare_config`) declare their sections as frozen
dataclasses whose fields come from `config_field(default, doc, kind, **rules)`: the default, a
one-line doc (the configuration reference, docs/configuration.md, is generated from it), the value
kind and its range/choice rules. `build_section` turns a TOML table into such a section, rejecting
unknown keys with close matches and converting every value by its kind; every problem is one
`ConfigError` (a ValueError) naming the key path (``grid.noise[0].rate``), the value and the fix.

Value kinds (``kind=``), a trailing ``?`` making a scalar optional (unset = None):

- ``str``, ``int``, ``float``, ``bool``: scalars (rules ``choices``, ``min``, ``max``, ``gt``, ``lt``);
- ``names`` / ``ints``: non-empty lists of distinct strings / integers (rules apply to each item);
- ``tables``: a non-empty list of tables, each built as section ``section=`` (``what=`` and
  ``example=`` word the error; ``empty_ok=True`` also takes ``[]``);
- ``word_or_numbers``: one of ``choices`` or a non-empty list of numbers (``search.x0``);
- ``params``: ``{name = number}``; ``grid``: ``{name = [numbers]}``; ``options``: a table of plain data.

Of evoloss this module imports only `search.preset_files` (no torch, no Ray), so both configs and the
reference generator (`search.config_reference`) can use it.
"""
from __future__ import annotations

import dataclasses
import datetime
import difflib
import json
import math
import tomllib
from dataclasses import field
from pathlib import Path
from typing import Any, Mapping

from evoloss.search.preset_files import preset_names, preset_text

UNSET = "unset"
"""How the writers and the reference show an optional value that is not set (None)."""

KINDS = ("str", "int", "float", "bool", "names", "ints", "tables", "word_or_numbers", "params", "grid", "options")
"""Every value kind `convert_value` knows (each scalar kind also with a trailing ``?``)."""

_LIST_EXAMPLES = {
    "names": 'write e.g. ["digits", "mnist1d"]',
    "ints": "write e.g. [0, 1]",
    "numbers": "write e.g. [0.0, 0.5]",
}


class ConfigError(ValueError):
    """An invalid config setting: ``key`` (the key path), the ``value`` received and the ``fix``.

    The message reads ``config <key>: <problem>, got <value>; <fix>`` unless ``message`` gives
    another wording (unknown keys, registry errors, TOML syntax errors). A ValueError subclass, so
    ``except ValueError`` keeps catching every config error.
    """

    def __init__(self, key: str, problem: str, value: Any, fix: str, message: str | None = None) -> None:
        self.key = key
        self.problem = problem
        self.value = value
        self.fix = fix
        super().__init__(message if message is not None else f"config {key}: {problem}, got {value!r}; {fix}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.key, self.problem, self.value, self.fix, str(self)))


def config_field(default: Any, doc: str, kind: str, **rules: Any) -> Any:
    """A config field: its default, one-line doc, value kind and range/choice rules, in one place."""
    if kind.rstrip("?") not in KINDS:
        raise TypeError(f"config_field kind {kind!r} is not one of {KINDS}")  # a bug in a config module
    if not doc.strip():
        raise TypeError("config_field needs a non-empty doc")  # the reference is generated from it
    return field(default=default, metadata={"doc": doc, "kind": kind, **rules})


def unknown_key(path: str, key: str, valid: list[str]) -> ConfigError:
    """The error for key ``key`` that table ``path`` does not have, with close matches (or every valid key)."""
    close = difflib.get_close_matches(key, valid, n=3)
    hint = f"did you mean {' or '.join(map(repr, close))}?" if close else f"valid keys: {', '.join(valid)}"
    full = key if path == "<root>" else f"{path}.{key}"
    return ConfigError(full, "unknown key", key, hint, message=f"config {path}: unknown key {key!r}; {hint}")


def unknown_name(path: str, name: str, valid: list[str]) -> ConfigError:
    """The error for a name (preset, family, trainer) that its registry does not have, with close matches."""
    close = difflib.get_close_matches(name, valid, n=3)
    hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
    return ConfigError(path, "is not registered", name, f"{hint}valid: {', '.join(valid)}")


# --- value conversion ----------------------------------------------------------------------------
def _number(path: str, value: Any, kind: str) -> int | float:
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, "must be an integer", value, "write a whole number without quotes")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(path, "must be a number", value, "write a number without quotes, e.g. 0.5")
    if not math.isfinite(value):
        raise ConfigError(path, "must be finite", value, "write a finite number")
    return float(value)


def check_rules(path: str, value: Any, meta: Mapping[str, Any]) -> None:
    """Range and choice rules of a scalar (or of each item of a list)."""
    if "choices" in meta and value not in meta["choices"]:
        folded = {str(c).lower(): c for c in meta["choices"]}
        close = difflib.get_close_matches(str(value).lower(), list(folded), n=1)
        hint = f"did you mean {folded[close[0]]!r}? " if close else ""
        raise ConfigError(path, "is not a valid choice", value, f"{hint}choose one of {', '.join(meta['choices'])}")
    for rule, ok, words in (("min", lambda v, b: v >= b, ">="), ("max", lambda v, b: v <= b, "<="),
                            ("gt", lambda v, b: v > b, ">"), ("lt", lambda v, b: v < b, "<")):
        if rule in meta and not ok(value, meta[rule]):
            raise ConfigError(path, f"must be {words} {meta[rule]:g}", value, f"use a value {words} {meta[rule]:g}")


def _scalar(path: str, value: Any, kind: str, meta: Mapping[str, Any]) -> Any:
    if kind == "str":
        if not isinstance(value, str):
            raise ConfigError(path, "must be a string", value, 'quote it, e.g. "digits"')
    elif kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(path, "must be true or false", value, "write true or false without quotes")
        return value
    else:
        value = _number(path, value, kind)
    check_rules(path, value, meta)
    return value


def _listed(path: str, value: Any, what: str, example: str) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise ConfigError(path, f"must be a non-empty list of {what}", value, example)
    return value


def _number_map(path: str, value: Any, example: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(path, "must be a table of name = value", value, f"write e.g. {example}")
    return {str(k): v for k, v in value.items()}


def _plain_number(path: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(path, "must be a finite number", value, "write a number without quotes, e.g. 0.7")
    return float(value)


def _json_value(path: str, value: Any) -> Any:
    if isinstance(value, (datetime.date, datetime.time)):
        raise ConfigError(path, "must be a number, string, boolean, list or table", value, "quote it as a string")
    if isinstance(value, Mapping):
        return {str(k): _json_value(f"{path}.{k}", v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_value(f"{path}[{i}]", v) for i, v in enumerate(value)]
    return value


def _grid(path: str, value: Any) -> dict[str, tuple[float, ...]]:
    grid = _number_map(path, value, "{q = [0.1, 0.4, 0.7]}")
    if not grid:
        raise ConfigError(path, "must name at least one parameter", value, "write e.g. {q = [0.1, 0.4, 0.7]}")
    out = {}
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}.{key}", "must be a non-empty list of numbers", values, "write e.g. [0.1, 0.4]")
        out[key] = tuple(_plain_number(f"{path}.{key}[{i}]", v) for i, v in enumerate(values))
        if len(set(out[key])) != len(out[key]):
            raise ConfigError(f"{path}.{key}", "lists a value twice", values, "remove the duplicate")
    return out


def convert_value(path: str, value: Any, meta: Mapping[str, Any]) -> Any:
    """A TOML value converted to the field's kind (``meta["kind"]``), checked against its rules."""
    kind = meta["kind"]
    if kind.endswith("?"):
        return _scalar(path, value, kind[:-1], meta)
    if kind in ("str", "int", "float", "bool"):
        return _scalar(path, value, kind, meta)
    if kind in ("names", "ints"):
        items = _listed(path, value, kind, _LIST_EXAMPLES[kind])
        item_kind = "str" if kind == "names" else "int"
        out = tuple(_scalar(f"{path}[{i}]", v, item_kind, meta) for i, v in enumerate(items))
        if len(set(out)) != len(out):
            raise ConfigError(path, "lists an entry twice", value, "remove the duplicate")
        return out
    if kind == "tables":
        if meta.get("empty_ok") and value == []:
            return ()
        items = _listed(path, value, meta["what"], meta["example"])
        return tuple(build_section(meta["section"], v, f"{path}[{i}]") for i, v in enumerate(items))
    if kind == "word_or_numbers":
        if isinstance(value, str):
            return _scalar(path, value, "str", {"choices": meta["choices"]})
        items = _listed(path, value, "numbers", _LIST_EXAMPLES["numbers"])
        return tuple(_scalar(f"{path}[{i}]", v, "float", {}) for i, v in enumerate(items))
    if kind == "params":
        return {k: _plain_number(f"{path}.{k}", v) for k, v in _number_map(path, value, "{q = 0.7}").items()}
    if kind == "grid":
        return _grid(path, value)
    if kind == "options":
        return _json_value(path, _number_map(path, value, "{variant = \"free\"}"))
    raise TypeError(f"config field kind {kind!r} has no converter")  # a bug in a config module


def build_section(cls: type, table: Any, path: str) -> Any:
    """Build section ``cls`` from a TOML table: unknown keys rejected with close matches, each value converted."""
    if not isinstance(table, Mapping):
        raise ConfigError(path, "must be a table", table, f"write [{path}] followed by key = value lines")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in table:
        if key not in fields:
            raise unknown_key(path, str(key), list(fields))
    return cls(**{k: convert_value(f"{path}.{k}", v, fields[k].metadata) for k, v in table.items()})


def build_sections(cls: type, value: Any, path: str) -> tuple[Any, ...]:
    """An array of tables (``[[path]]``), each built as section ``cls``."""
    if not isinstance(value, list) or not value:
        raise ConfigError(path, "must be a non-empty list of tables", value, f"write one or more [[{path}]] tables")
    return tuple(build_section(cls, item, f"{path}[{i}]") for i, item in enumerate(value))


def check_root(data: Any, sections: list[str]) -> None:
    """The whole config is a table whose keys are all in ``sections``."""
    if not isinstance(data, Mapping):
        raise ConfigError("<root>", "must be a table of sections", data, f"use sections {', '.join(sections)}")
    for key in data:
        if key not in sections:
            raise unknown_key("<root>", str(key), sections)


# --- reading and layering ------------------------------------------------------------------------
MAX_NESTING = 16
"""Deepest nesting of tables and lists a config may have (the deepest shipped one has 4)."""
MAX_CONFIG_BYTES = 1 << 20
"""Largest config file read (the shipped ones are a few kilobytes)."""


def check_nesting(value: Any, where: str) -> None:
    """``value`` (parsed TOML, or a config as Python data) nests at most `MAX_NESTING` tables and
    lists deep; measured without recursion, so any depth gives this one error."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (Mapping, list, tuple)):
            if depth >= MAX_NESTING:
                raise ConfigError(where, f"nests tables or lists more than {MAX_NESTING} deep", f"depth > {depth}",
                                  "flatten it (a config needs at most a few levels)",
                                  message=f"config {where}: nests tables or lists more than {MAX_NESTING} levels "
                                          "deep; a config needs at most a few levels")
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, Mapping) else item))


def read_toml(text: str, where: str) -> dict[str, Any]:
    """``text`` parsed as TOML; a syntax error or nesting deeper than `MAX_NESTING` is a
    `ConfigError` naming ``where`` it came from."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(where, "invalid TOML", None, f"fix the TOML syntax ({exc})",
                          message=f"config {where}: invalid TOML ({exc})") from None
    except RecursionError:  # tomllib parses nested arrays and inline tables recursively
        raise ConfigError(where, f"nests more than {MAX_NESTING} levels deep", None, "flatten it",
                          message=f"config {where}: nests tables or lists thousands of levels deep (at most "
                                  f"{MAX_NESTING}); a config needs at most a few levels") from None
    check_nesting(data, where)
    return data


def read_config_text(file: Path) -> str:
    """The text of config file ``file``: at most `MAX_CONFIG_BYTES`, UTF-8; errors name the file."""
    size = file.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(repr(str(file)), "is too large for a config", f"{size} bytes",
                          f"at most {MAX_CONFIG_BYTES} bytes",
                          message=f"config file {str(file)!r} is {size} bytes, too large for a config "
                                  f"(at most {MAX_CONFIG_BYTES}); is it the right file?")
    try:
        return file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(repr(str(file)), "is not UTF-8 text", None, "give a TOML text file",
                          message=f"config file {str(file)!r} is not UTF-8 text ({exc.reason} at byte {exc.start}): "
                                  "is it a binary file? give a TOML text file") from None


def nested(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted keys (``"search.popsize"``) become nested tables."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        *parents, leaf = str(key).split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(str(key), "overrides a value that is not a table", value, "check the key path")
        node[leaf] = nested(value) if isinstance(value, Mapping) else value
    return out


def merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` merged in: tables merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in over.items():
        out[key] = merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), dict) else value
    return out


def unset_optional(merged: dict[str, Any], overrides: Mapping[str, Any], sections: Mapping[str, type]) -> dict[str, Any]:
    """``merged`` without the keys that an override sets to ``none`` (``--set search.low_fidelity=none``;
    None from Python) where that key is an optional field (kind ``…?``, unset = its default None): TOML
    has no null, so this is how a command line unsets what a preset or file set. Other keys keep the
    value, and its validation error names the field."""
    out = dict(merged)
    for key, value in overrides.items():
        if not (value is None or (isinstance(value, str) and value.strip().lower() == "none")):
            continue
        section, _, name = str(key).partition(".")
        cls = sections.get(section)
        fields = {f.name: f for f in dataclasses.fields(cls)} if cls is not None and dataclasses.is_dataclass(cls) \
            else {}
        if name in fields and str(fields[name].metadata.get("kind", "")).endswith("?") and \
                isinstance(out.get(section), dict):
            out[section] = {k: v for k, v in out[section].items() if k != name}
    return out


def drop_unset(data: Any) -> Any:
    """``data`` without the keys whose value is None, in nested tables and lists too: in a config
    given as Python data (e.g. `plain_data` of a config), None means unset, as a missing TOML key."""
    if isinstance(data, Mapping):
        return {k: drop_unset(v) for k, v in data.items() if v is not None}
    if isinstance(data, (list, tuple)):
        return [drop_unset(v) for v in data]
    return data


def preset_and_file(kind: str, preset: str | None, path: str | Path | None, label: str,
                    data: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The TOML data of shipped preset ``preset`` of ``kind`` (`search.preset_files`), then file ``path``
    merged over it, then ``data`` (a config as Python data, None values meaning unset: `drop_unset`);
    ``label`` names the preset in TOML errors (e.g. ``"compare preset"``).

    Raises:
        ConfigError: an unknown preset (key ``preset``) or invalid TOML.
        FileNotFoundError: ``path`` does not exist.
    """
    out: dict[str, Any] = {}
    if preset is not None:
        names = preset_names(kind)
        if preset not in names:
            raise unknown_name("preset", str(preset), names)
        out = read_toml(preset_text(kind, preset), f"{label} {preset!r}")
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"config file {str(file)!r} does not exist")
        out = merge(out, read_toml(read_config_text(file), repr(str(file))))
    if data is not None:
        if not isinstance(data, Mapping):
            raise ConfigError("<root>", "must be a table of sections", data, "pass a dict of sections")
        check_nesting(data, "<root>")
        out = merge(out, drop_unset(data))
    return out


# --- writing -------------------------------------------------------------------------------------
def toml_key(key: str) -> str:
    """A bare TOML key when it may be one (letters, digits, ``_``, ``-``), else a quoted one."""
    return key if key and all(c.isascii() and (c.isalnum() or c in "_-") for c in key) else json.dumps(key)


def toml_value(value: Any) -> str:
    """A TOML inline value: scalars, lists/tuples as arrays, tables and dataclasses as ``{key = value}``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a TOML basic string
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{toml_key(str(k))} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        items = (f"{f.name} = {toml_value(getattr(value, f.name))}" for f in dataclasses.fields(value))
        return "{" + ", ".join(items) + "}"
    raise TypeError(f"no TOML form for {type(value).__name__} {value!r}")


def section_lines(obj: Any, *, skip_unset: bool = False) -> list[str]:
    """``key = value  # doc`` per field of section ``obj``; an unset (None) one as a comment, or left
    out with ``skip_unset``."""
    lines = []
    for f in dataclasses.fields(obj):
        value, doc = getattr(obj, f.name), f.metadata["doc"]
        if value is None:
            if not skip_unset:
                lines.append(f"# {f.name} = ({UNSET})  # {doc}")
        else:
            lines.append(f"{f.name} = {toml_value(value)}  # {doc}")
    return lines


def plain_data(config: Any) -> dict[str, Any]:
    """A config dataclass as plain JSON data (tuples as lists, unset as None)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def field_docs(cls: type) -> dict[str, str]:
    """``{field: doc}`` of a section class (what the reference prints); a field without one is a TypeError."""
    docs = {}
    for f in dataclasses.fields(cls):
        doc = f.metadata.get("doc", "")
        if not isinstance(doc, str) or not doc.strip():
            raise TypeError(f"{cls.__name__}.{f.name} has no doc; declare it with config_field(..., doc, ...)")
        docs[f.name] = doc
    return docs


__all__ = [
    "ConfigError", "KINDS", "MAX_CONFIG_BYTES", "MAX_NESTING", "UNSET", "build_section", "build_sections",
    "check_nesting", "check_root", "check_rules", "config_field", "convert_value", "drop_unset", "field_docs",
    "merge", "nested", "plain_data", "preset_and_file", "read_config_text", "read_toml",
    "section_lines", "toml_key", "toml_value", "unknown_key", "unknown_name",
]
