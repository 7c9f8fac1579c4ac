"""The search configuration: typed sections loaded from TOML, validated, written back out in full.

``load_config(path, preset, overrides)`` merges, in order, a preset shipped in ``search/presets/``,
a TOML file and overrides (nested dicts or dotted keys: ``{"search.popsize": 4}``), then validates:
unknown sections/keys are rejected with close matches, types and ranges are checked, and every
error is one ValueError naming the key path (``grid.noise[0].rate``), the value and the fix.
Loss families are checked against ``losses``; datasets, architectures and noise models against the
``workers`` registries when those modules import. ``resolved_toml(config)`` writes every setting
(defaults included; unset optional ones as comments) so a run directory records what ran.
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib
import json
import math
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from evoloss import losses

_NONE_MEANS = "unset"


def _f(default: Any, doc: str, kind: str, **rules: Any) -> Any:
    """A config field: its default, meaning, value kind and range rules, in one place."""
    return field(default=default, metadata={"doc": doc, "kind": kind, **rules})


@dataclass(frozen=True, kw_only=True)
class SearchSection:
    family: str = _f("taylor", "loss family whose parameters CMA-ES searches (losses.list_losses())", "str")
    popsize: int = _f(8, "CMA-ES population size lambda", "int", min=2)
    sigma0: float = _f(1.0, "initial CMA-ES step size, in genome units", "float", gt=0.0)
    generations: int = _f(10, "generations to run (stop reason max_generations)", "int", min=1)
    seed: int = _f(0, "seeds CMA-ES sampling and the per-generation task subset", "int", min=0)
    x0: Any = _f("default", '"default" (family defaults), "zeros", or a genome list', "x0")
    failure_margin: float = _f(0.01, "failed candidates score worst finite fitness minus this", "float", gt=0.0)
    failure_floor: float = _f(0.0, "fitness of every candidate when all failed", "float", min=0.0, max=1.0)


@dataclass(frozen=True, kw_only=True)
class NoiseSection:
    type: str = _f("symmetric", "none | symmetric | asymmetric | instance | longtail", "str",
                   choices=("none", "symmetric", "asymmetric", "instance", "longtail"))
    rate: float = _f(0.8, "noise rate r", "float", min=0.0, lt=1.0)
    convention: str = _f("", 'how r is applied (REFERENCE.md §3); "" = the type\'s default', "str")
    imbalance: float = _f(1.0, "long-tail imbalance ratio rho (type longtail only)", "float", min=1.0)


@dataclass(frozen=True, kw_only=True)
class GridSection:
    datasets: tuple[str, ...] = _f(("digits",), "dataset registry names", "names")
    archs: tuple[str, ...] = _f(("mlp2",), "architecture registry names", "names")
    noise: tuple[NoiseSection, ...] = _f((NoiseSection(),), "noise settings", "noise")
    seeds: tuple[int, ...] = _f((0,), "task seeds (split, noise, initialisation)", "ints", min=0)
    mode: str = _f("ar", "ar (1 dataset) | dr (1 arch) | ardr (full product)", "str", choices=("ar", "dr", "ardr"))
    subset_size: int | None = _f(None, "tasks per generation (seeded random subset); unset = all", "int?", min=1)
    metric_rule: str = _f("last", "fitness reads val_acc_last (last) or val_acc_best (best)", "str",
                          choices=("last", "best"))
    data_dir: str | None = _f(None, "where dataset files live; unset = the datasets' default", "str?")


@dataclass(frozen=True, kw_only=True)
class TrainSection:
    epochs: int = _f(20, "training epochs per evaluation", "int", min=1)
    batch_size: int = _f(64, "mini-batch size", "int", min=1)
    max_train: int | None = _f(None, "cap on training samples (seeded subsample); unset = all", "int?", min=1)
    optimizer: str | None = _f(None, "sgd | adam; unset = the architecture's protocol", "str?", choices=("sgd", "adam"))
    lr: float | None = _f(None, "learning rate; unset = the architecture's protocol", "float?", gt=0.0)
    momentum: float | None = _f(None, "SGD momentum; unset = the architecture's protocol", "float?", min=0.0, lt=1.0)
    weight_decay: float = _f(0.0, "weight decay", "float", min=0.0)
    schedule: str = _f("constant", "learning-rate schedule", "str", choices=("constant", "cosine"))
    grad_clip: float | None = _f(None, "gradient-norm clip; unset = none", "float?", gt=0.0)
    val: float = _f(0.2, "clean validation split (fraction < 1 or count >= 1)", "float", gt=0.0)
    test: float = _f(0.2, "clean test split when the dataset has none (fraction or count)", "float", min=0.0)
    trainer: str = _f("population", "inner trainer", "str", choices=("population", "standard"))


@dataclass(frozen=True, kw_only=True)
class ClusterSection:
    address: str | None = _f(None, "HOST:PORT of a Ray cluster; unset = embedded local Ray", "str?")
    num_cpus: int | None = _f(None, "CPUs of the embedded Ray; unset = the machine's", "int?", min=1)
    cpus_per_actor: float = _f(1.0, "CPUs each evaluation actor reserves", "float", gt=0.0)
    gpus_per_actor: float = _f(0.0, "GPU share per actor (fractions allowed)", "float", min=0.0, max=1.0)
    timeout_s: float = _f(600.0, "seconds before a job is marked timeout", "float", gt=0.0)
    engine: str = _f("native", "native dispatch or ray tune", "str", choices=("native", "tune"))


@dataclass(frozen=True, kw_only=True)
class OutputSection:
    run_dir: str = _f("runs/search", "the run directory (results, state, resolved config)", "str")


@dataclass(frozen=True, kw_only=True)
class SearchConfig:
    search: SearchSection = field(default_factory=SearchSection)
    grid: GridSection = field(default_factory=GridSection)
    train: TrainSection = field(default_factory=TrainSection)
    cluster: ClusterSection = field(default_factory=ClusterSection)
    output: OutputSection = field(default_factory=OutputSection)


SECTIONS: dict[str, type] = {f.name: f.default_factory for f in dataclasses.fields(SearchConfig)}


def _error(path: str, problem: str, value: Any, fix: str) -> ValueError:
    return ValueError(f"config {path}: {problem}, got {value!r}; {fix}")


def _unknown(path: str, key: str, valid: list[str]) -> ValueError:
    close = difflib.get_close_matches(key, valid, n=3)
    hint = f"did you mean {' or '.join(map(repr, close))}?" if close else f"valid keys: {', '.join(valid)}"
    return ValueError(f"config {path}: unknown key {key!r}; {hint}")


# --- value conversion ----------------------------------------------------------------------------
def _number(path: str, value: Any, kind: str) -> int | float:
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise _error(path, "must be an integer", value, "write a whole number without quotes")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _error(path, "must be a number", value, "write a number without quotes, e.g. 0.5")
    if not math.isfinite(value):
        raise _error(path, "must be finite", value, "write a finite number")
    return float(value)


def _check_rules(path: str, value: Any, meta: Mapping[str, Any]) -> None:
    """Range and choice rules of a scalar (or of each item of a list)."""
    if "choices" in meta and value not in meta["choices"]:
        folded = {str(c).lower(): c for c in meta["choices"]}
        close = difflib.get_close_matches(str(value).lower(), list(folded), n=1)
        hint = f"did you mean {folded[close[0]]!r}? " if close else ""
        raise _error(path, "is not a valid choice", value, f"{hint}choose one of {', '.join(meta['choices'])}")
    for rule, ok, words in (("min", lambda v, b: v >= b, ">="), ("max", lambda v, b: v <= b, "<="),
                            ("gt", lambda v, b: v > b, ">"), ("lt", lambda v, b: v < b, "<")):
        if rule in meta and not ok(value, meta[rule]):
            raise _error(path, f"must be {words} {meta[rule]:g}", value, f"use a value {words} {meta[rule]:g}")


def _scalar(path: str, value: Any, kind: str, meta: Mapping[str, Any]) -> Any:
    if kind == "str":
        if not isinstance(value, str):
            raise _error(path, "must be a string", value, 'quote it, e.g. "digits"')
    else:
        value = _number(path, value, kind)
    _check_rules(path, value, meta)
    return value


_LIST_EXAMPLES = {
    "names": 'write e.g. ["digits", "mnist1d"]',
    "ints": "write e.g. [0, 1]",
    "numbers": "write e.g. [0.0, 0.5]",
    "noise tables": 'write e.g. [{type = "symmetric", rate = 0.8}]',
}


def _listed(path: str, value: Any, what: str) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise _error(path, f"must be a non-empty list of {what}", value, _LIST_EXAMPLES[what])
    return value


def _convert(path: str, value: Any, meta: Mapping[str, Any]) -> Any:
    """A TOML value converted to the field's kind, checked against its rules."""
    kind = meta["kind"]
    if kind.endswith("?"):
        return _scalar(path, value, kind[:-1], meta)
    if kind in ("str", "int", "float"):
        return _scalar(path, value, kind, meta)
    if kind in ("names", "ints"):
        items = _listed(path, value, "names" if kind == "names" else "ints")
        out = tuple(_scalar(f"{path}[{i}]", v, "str" if kind == "names" else "int", meta) for i, v in enumerate(items))
        if len(set(out)) != len(out):
            raise _error(path, "lists an entry twice", value, "remove the duplicate")
        return out
    if kind == "noise":
        items = _listed(path, value, "noise tables")
        return tuple(_section(NoiseSection, v, f"{path}[{i}]") for i, v in enumerate(items))
    if kind == "x0":
        if isinstance(value, str):
            return _scalar(path, value, "str", {"choices": ("default", "zeros")})
        return tuple(_scalar(f"{path}[{i}]", v, "float", {}) for i, v in enumerate(_listed(path, value, "numbers")))
    raise TypeError(f"config field kind {kind!r} has no converter")  # a bug in this module


def _section(cls: type, table: Any, path: str) -> Any:
    """Build section ``cls`` from a TOML table: unknown keys rejected, each value converted."""
    if not isinstance(table, Mapping):
        raise _error(path, "must be a table", table, f"write [{path}] followed by key = value lines")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in table:
        if key not in fields:
            raise _unknown(path, str(key), list(fields))
    return cls(**{k: _convert(f"{path}.{k}", v, fields[k].metadata) for k, v in table.items()})


def parse_config(data: Mapping[str, Any]) -> SearchConfig:
    """Validate a config dict (as tomllib reads it) into a `SearchConfig`.

    Raises:
        ValueError: one per problem found first, naming the key path, the value and the fix.
    """
    if not isinstance(data, Mapping):
        raise _error("<root>", "must be a table of sections", data, f"use sections {', '.join(SECTIONS)}")
    for key in data:
        if key not in SECTIONS:
            raise _unknown("<root>", str(key), list(SECTIONS))
    config = SearchConfig(**{name: _section(SECTIONS[name], data[name], name) for name in data})
    _check_relations(config)
    _check_registries(config)
    return config


# --- cross-field and registry checks -------------------------------------------------------------
def _check_relations(config: SearchConfig) -> None:
    grid, train = config.grid, config.train
    if grid.mode == "ar" and len(grid.datasets) != 1:
        raise _error("grid.datasets", "mode 'ar' (architecture randomisation) takes one dataset", list(grid.datasets),
                     'keep one dataset or set grid.mode = "ardr"')
    if grid.mode == "dr" and len(grid.archs) != 1:
        raise _error("grid.archs", "mode 'dr' (dataset randomisation) takes one architecture", list(grid.archs),
                     'keep one architecture or set grid.mode = "ardr"')
    size = len(grid.datasets) * len(grid.archs) * len(grid.noise) * len(grid.seeds)
    if grid.subset_size is not None and grid.subset_size > size:
        raise _error("grid.subset_size", f"exceeds the grid's {size} tasks", grid.subset_size,
                     f"use at most {size}, or leave it unset for all tasks")
    for name in ("val", "test"):
        value = getattr(train, name)
        if value >= 1 and value != int(value):
            raise _error(f"train.{name}", "must be a fraction < 1 or a whole count >= 1", value, "e.g. 0.2 or 200")
    if train.val < 1 and train.test < 1 and train.val + train.test >= 1:
        raise _error("train.test", f"val + test fractions must leave training data (val = {train.val:g})",
                     train.test, "make val + test < 1")
    for i, noise in enumerate(grid.noise):
        if noise.type == "none" and noise.rate != 0.0:
            raise _error(f"grid.noise[{i}].rate", "type 'none' takes no rate", noise.rate, "set rate = 0.0")
    family = losses.get_family(config.search.family) if config.search.family in losses.list_losses(include_private=True) else None
    if family is not None and not isinstance(config.search.x0, str) and len(config.search.x0) != family.dim:
        problem = f"family {family.name!r} has {family.dim} parameter(s) ({', '.join(family.param_names)})"
        raise _error("search.x0", problem, list(config.search.x0), f'give {family.dim} genome values or "default"')


def _check_registries(config: SearchConfig) -> None:
    """Names against the loss registry and, when importable, the workers' registries."""
    name = config.search.family
    if name not in losses.list_losses(include_private=True):
        raise _unknown_name("search.family", name, losses.list_losses())
    if losses.get_family(name).dim == 0:
        searchable = [n for n in losses.list_losses() if losses.get_family(n).dim > 0]
        raise _error("search.family", "has no parameters to search", name, f"choose one of {', '.join(searchable)}")
    from evoloss.workers.task import NoiseSpec

    checks: list[tuple[str, str, Any]] = [("evoloss.workers.datasets", "get_dataset_entry", config.grid.datasets),
                                          ("evoloss.workers.archs", "get_arch", config.grid.archs)]
    specs = tuple(NoiseSpec(kind=n.type, rate=n.rate, convention=n.convention, imbalance=n.imbalance)
                  for n in config.grid.noise)
    checks.append(("evoloss.workers.noise", "validate_noise_spec", specs))
    for module, function, values in checks:
        try:
            check = getattr(importlib.import_module(module), function)
        except ImportError:  # that part of workers is not installed: checked when tasks materialise
            continue
        path = {"evoloss.workers.datasets": "grid.datasets", "evoloss.workers.archs": "grid.archs"}.get(module, "grid.noise")
        for i, value in enumerate(values):
            try:
                check(value)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"config {path}[{i}]: {exc}") from None


def _unknown_name(path: str, name: str, valid: list[str]) -> ValueError:
    close = difflib.get_close_matches(name, valid, n=3)
    hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
    return _error(path, "is not registered", name, f"{hint}valid: {', '.join(valid)}")


def initial_genome(config: SearchConfig) -> list[float]:
    """CMA-ES x0 for ``search.x0``: the family's defaults encoded, zeros, or the given genome."""
    family = losses.get_family(config.search.family)
    x0 = config.search.x0
    if x0 == "default":
        return family.encode(family.defaults()).tolist()
    if x0 == "zeros":
        return [0.0] * family.dim
    return [float(v) for v in x0]


# --- loading -------------------------------------------------------------------------------------
def list_presets() -> list[str]:
    """Names of the presets shipped in ``search/presets/`` (file names without .toml)."""
    folder = resources.files("evoloss.search").joinpath("presets")
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def _read_toml(text: str, where: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"config {where}: invalid TOML ({exc})") from None


def _nested(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted keys ("search.popsize") become nested tables."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        *parents, leaf = str(key).split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise _error(str(key), "overrides a value that is not a table", value, "check the key path")
        node[leaf] = _nested(value) if isinstance(value, Mapping) else value
    return out


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), dict) else value
    return out


def load_config(
    path: str | Path | None = None, preset: str | None = None, overrides: Mapping[str, Any] | None = None
) -> SearchConfig:
    """A preset, then a TOML file, then overrides, merged in that order and validated.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: an unknown preset, invalid TOML, or any invalid setting (see `parse_config`).
    """
    data: dict[str, Any] = {}
    if preset is not None:
        if preset not in list_presets():
            raise _unknown_name("--preset", str(preset), list_presets())
        text = resources.files("evoloss.search").joinpath("presets", f"{preset}.toml").read_text(encoding="utf-8")
        data = _read_toml(text, f"preset {preset!r}")
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"config file {str(file)!r} does not exist")
        data = _merge(data, _read_toml(file.read_text(encoding="utf-8"), repr(str(file))))
    if overrides:
        data = _merge(data, _nested(overrides))
    return parse_config(data)


def parse_override(text: str) -> tuple[str, Any]:
    """``"search.popsize=4"`` -> ``("search.popsize", 4)``; the value is read as TOML, else as a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"override {text!r} must look like section.key=value, e.g. search.popsize=4")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.strip(), value


# --- writing -------------------------------------------------------------------------------------
def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a TOML basic string
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if dataclasses.is_dataclass(value):
        items = (f"{f.name} = {_toml_value(getattr(value, f.name))}" for f in dataclasses.fields(value))
        return "{" + ", ".join(items) + "}"
    raise TypeError(f"no TOML form for {type(value).__name__} {value!r}")


def resolved_toml(config: SearchConfig) -> str:
    """The whole config as TOML, every default written out; unset optional keys as comments."""
    lines = ["# evoloss search config, resolved: every setting written out (load it with --config)"]
    for section in dataclasses.fields(config):
        lines.append(f"\n[{section.name}]")
        obj = getattr(config, section.name)
        for f in dataclasses.fields(obj):
            value, doc = getattr(obj, f.name), f.metadata["doc"]
            if value is None:
                lines.append(f"# {f.name} = ({_NONE_MEANS})  # {doc}")
            else:
                lines.append(f"{f.name} = {_toml_value(value)}  # {doc}")
    return "\n".join(lines) + "\n"


def config_dict(config: SearchConfig) -> dict[str, Any]:
    """The config as plain data (tuples as lists, unset as None), e.g. for JSON."""
    return json.loads(json.dumps(dataclasses.asdict(config)))
