"""The compare configuration: methods × task groups, validated like the search config, written back in full.

A compare config has the sections ``[compare]``, ``[[methods]]``, ``[[tasks]]``, ``[train]``,
``[cluster]`` and ``[output]``. ``[train]`` and ``[cluster]`` are the search config's sections
(`search.config.TrainSection`, `ClusterSection`), and every value goes through the same converters
(`search.config_fields`), so errors read the same (one `ConfigError` each):
``config methods[2].params.q: must be <= 1, got 1.5; ...``.

Methods (each needs a unique ``name``; ``kind`` decides which other keys it takes):

- ``loss``    hand-designed: ``family`` [+ ``params``, defaults filled in];
- ``tuned``   hand-designed: ``family`` + ``grid`` = {param: [values]} [+ fixed ``params``]; per task
  the grid point with the best *clean validation* accuracy is reported (`search.compare`);
- ``plugin``  evolved: ``path`` of a plug-in ``loss.json`` (or a plain ``{"family", "params"}`` file);
- ``search``  evolved: ``run_dir`` of a search run, whose best candidate is compared;
- ``trainer`` meta-learned: ``trainer`` (a registered meta-learned trainer) [+ ``options``, and
  ``family``/``params`` for its base loss, default: the trainer's own];
- ``cleanlab`` confident learning (workers/cleanlab_method.py): K-fold out-of-sample probabilities,
  ``cleanlab.filter.find_label_issues``, CE on the kept samples [+ ``options`` = {folds, filter_by}];
  its rows' method_kind is "hand-designed" (CE on cleaned data) and ``extra.cleanlab`` has the pruning.

Paths (``path``, ``run_dir``) are relative to the working directory and are read when the compare
runs: a missing or broken one makes that method's cells ``failed``, never a config error.

Task groups: ``name``, ``datasets`` × ``archs`` × ``noise`` × ``seeds`` and ``heldout`` (true: the
evolved losses never saw these tasks in their search; rows say ``extra.split = "held-out"``). A
(dataset, arch, noise) task belongs to one group only (any seed), so "held-out" never means "seen
task, new seed" and a report can key the split by task.

Overrides take dotted keys as in the search config; list entries are addressed by
name: ``methods.evolved.run_dir=runs/x``, ``tasks.held-out.seeds=[0]``.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from evoloss import losses
from evoloss.search.config import (
    NOISE_EXAMPLE,
    ClusterSection,
    NoiseSection,
    PluginsSection,
    TrainSection,
    canonical_file_datasets,
    check_cluster,
    check_noise,
    check_metric_rule,
    check_task_names,
    check_train,
    load_plugin_modules,
)
from evoloss.search.config_fields import (
    ConfigError,
    build_section,
    build_sections,
    check_root,
    config_field as _f,
    merge,
    nested,
    plain_data,
    preset_and_file,
    section_lines,
    unknown_key,
    unknown_name,
)
from evoloss.search.preset_files import preset_names

METHOD_KINDS = {"loss": "hand-designed", "tuned": "hand-designed", "plugin": "evolved", "search": "evolved",
                "trainer": "meta-learned", "cleanlab": "hand-designed"}
"""Config ``kind`` → the rows' ``method_kind`` (results.schema)."""
LOSS_TRAINERS = ("population", "standard")
MAX_GRID_POINTS = 64
_OPTIONAL = ("family", "params", "path", "run_dir", "trainer", "options", "grid")
_KIND_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {  # kind -> (required, optional)
    "loss": (("family",), ("params",)),
    "tuned": (("family", "grid"), ("params",)),
    "plugin": (("path",), ()),
    "search": (("run_dir",), ()),
    "trainer": (("trainer",), ("options", "family", "params")),
    "cleanlab": ((), ("options",)),
}


@dataclass(frozen=True, kw_only=True)
class CompareSection:
    metric_rule: str = _f("last", "report test accuracy at the last epoch (last) or at the best-validation epoch "
                          "(best) or at the best noisy-validation epoch (noisy: gao-arl Table 3, needs train.noisy_val); tuned methods "
                          "select on the column the rule reads", "str", choices=("last", "best", "noisy"))
    meta_per_class: int = _f(10, "clean meta samples per class carved from every task's pool (meta-learned methods "
                             "train on them; every method sees the same train/val/test splits)", "int", min=0)
    clean_budget: int = _f(0, "hold the clean-label budget equal: every task's clean validation split has this many "
                           "rows and is also the meta set of the meta-learned methods (meta_per_class is then "
                           "unused); 0 = off", "int", min=0)


@dataclass(frozen=True, kw_only=True)
class MethodSection:
    name: str = _f("", "unique method name (rows' method column)", "str")
    kind: str = _f("", "loss | tuned | plugin | search | trainer | cleanlab", "str", choices=tuple(METHOD_KINDS))
    family: str | None = _f(None, "loss family (loss, tuned; trainer: its base loss)", "str?")
    params: dict | None = _f(None, "loss parameters {name = value}; missing ones take the family defaults", "params")
    path: str | None = _f(None, "plugin: the plug-in loss.json (or its directory)", "str?")
    run_dir: str | None = _f(None, "search: the search run directory", "str?")
    trainer: str | None = _f(None, "trainer: a registered meta-learned trainer", "str?")
    options: dict | None = _f(None, "trainer: its keyword options", "options")
    grid: dict | None = _f(None, "tuned: {param = [values]}, searched on the clean validation split", "grid")


@dataclass(frozen=True, kw_only=True)
class TaskGroupSection:
    name: str = _f("", "unique group name (a column of the summary table)", "str")
    heldout: bool = _f(False, "true: tasks the evolved losses' search never saw", "bool")
    datasets: tuple[str, ...] = _f(("digits",), "dataset registry names", "names")
    archs: tuple[str, ...] = _f(("mlp2",), "architecture registry names", "names")
    noise: tuple[NoiseSection, ...] = _f((NoiseSection(),), "noise settings", "tables",
                                         section=NoiseSection, what="noise tables", example=NOISE_EXAMPLE)
    seeds: tuple[int, ...] = _f((0,), "task seeds (split, noise, initialisation)", "ints", min=0)
    data_dir: str | None = _f(None, "where dataset files live; unset = the datasets' default", "str?")


@dataclass(frozen=True, kw_only=True)
class CompareOutputSection:
    run_dir: str = _f("runs/compare", "the run directory (rows, resolved config, summary)", "str")


@dataclass(frozen=True, kw_only=True)
class CompareConfig:
    compare: CompareSection = field(default_factory=CompareSection, metadata={"doc": "how results are read"})
    methods: tuple[MethodSection, ...] = field(default=(), metadata={"doc": "the methods compared, one [[methods]] "
                                                                             "table each (required)"})
    tasks: tuple[TaskGroupSection, ...] = field(default=(), metadata={"doc": "the task groups, one [[tasks]] table "
                                                                           "each (required)"})
    train: TrainSection = field(default_factory=TrainSection,
                                metadata={"doc": "how each network is trained (the search config's [train])"})
    cluster: ClusterSection = field(default_factory=ClusterSection,
                                    metadata={"doc": "where evaluations run (the search config's [cluster])"})
    output: CompareOutputSection = field(default_factory=CompareOutputSection,
                                         metadata={"doc": "where the run is written"})
    plugins: PluginsSection = field(default_factory=PluginsSection,
                                    metadata={"doc": "your own modules (loss families ...), docs/data.md"})


_TABLES = {"compare": CompareSection, "train": TrainSection, "cluster": ClusterSection, "output": CompareOutputSection,
           "plugins": PluginsSection}
_LISTS = {"methods": MethodSection, "tasks": TaskGroupSection}
ROOT_KEYS = ("compare", "methods", "tasks", "train", "cluster", "output", "plugins")


# --- method checks -------------------------------------------------------------------------------
_ADD_HINTS = {"family": 'add family = "gce"', "grid": "add grid = {q = [0.1, 0.4, 0.7]}",
              "path": 'add path = "runs/quick/export/evolved_loss/loss.json"', "run_dir": 'add run_dir = "runs/quick"',
              "trainer": 'add trainer = "l2b"'}


def _check_method_keys(path: str, method: MethodSection) -> None:
    """The keys ``method.kind`` requires are set and no key it does not use is."""
    if not method.name.strip():
        raise ConfigError(f"{path}.name", "must be a non-empty name", method.name, 'write e.g. name = "gce"')
    if not method.kind:
        raise ConfigError(f"{path}.kind", "is required", method.kind, f"choose one of {', '.join(METHOD_KINDS)}")
    required, optional = _KIND_KEYS[method.kind]
    for key in required:
        if getattr(method, key) is None:
            raise ConfigError(f"{path}.{key}", f"is required by kind {method.kind!r}", None, _ADD_HINTS[key])
    for key in _OPTIONAL:
        value = getattr(method, key)
        if value is not None and key not in required + optional:
            takes = ", ".join(required + optional)
            raise ConfigError(f"{path}.{key}", f"is not used by kind {method.kind!r}", value,
                              f"remove it (kind {method.kind!r} takes {takes})")
    if method.params is not None and method.family is None:
        raise ConfigError(f"{path}.params", "needs a family", method.params, _ADD_HINTS["family"])


def _family_params(path: str, name: str, params: Mapping[str, float] | None) -> dict[str, float]:
    """``params`` checked against family ``name`` (names and ranges); returned with defaults filled in."""
    if name not in losses.list_losses(include_private=True):
        raise unknown_name(f"{path}.family", name, losses.list_losses())
    family = losses.get_family(name)
    for key, value in (params or {}).items():
        if not family.param_names:
            raise ConfigError(f"{path}.params.{key}", f"family {name!r} has no parameters", value, "remove params")
        if key not in family.param_names:
            raise unknown_key(f"{path}.params", key, list(family.param_names))
        if not family.param(key).contains(value):
            raise ConfigError(f"{path}.params.{key}", f"is outside its valid range {family.param(key).range_text()}",
                              value, "use a value inside the range")
    return {k: float(v) for k, v in family.validate(params or {}).items()}


def _check_grid(path: str, method: MethodSection, given: Mapping[str, float]) -> None:
    """A tuned method's grid: known parameters, not also fixed in ``params``, values in range, not too big."""
    family = losses.get_family(method.family)
    for key, values in method.grid.items():
        if key not in family.param_names:
            raise unknown_key(f"{path}.grid", key, list(family.param_names) or ["(none: the family has no parameters)"])
        if key in given:
            raise ConfigError(f"{path}.grid.{key}", "is also fixed in params", list(values), "keep it in one of the two")
        param = family.param(key)
        for j, v in enumerate(values):
            if not param.contains(v):
                raise ConfigError(f"{path}.grid.{key}[{j}]", f"is outside its valid range {param.range_text()}", v,
                                  "use values inside the range")
    points = math.prod(len(v) for v in method.grid.values())
    if points > MAX_GRID_POINTS:
        raise ConfigError(f"{path}.grid", f"has {points} points (the product of its lists)",
                          {k: list(v) for k, v in method.grid.items()}, f"use at most {MAX_GRID_POINTS} points")


def tuned_grid_points(method: MethodSection) -> list[dict[str, float]]:
    """The parameter sets a ``tuned`` method trains: its ``params`` (defaults filled) with every
    combination of its ``grid`` lists, in order (the first grid key varies slowest)."""
    keys = list(method.grid)
    base = dict(method.params or {})
    return [{**base, **dict(zip(keys, combo))} for combo in itertools.product(*(method.grid[k] for k in keys))]


def _trainer_registry() -> list[str]:
    from evoloss.workers.jobs import DEFAULT_TRAINER_MODULES, import_trainer_modules
    from evoloss.workers.trainer import list_trainers

    import_trainer_modules(DEFAULT_TRAINER_MODULES)
    return list_trainers()


def build_trainer(method: MethodSection) -> tuple[Any, losses.LossSpec]:
    """The trainer of a ``trainer`` method with its options, and the base loss spec its jobs carry
    (``family``/``params``, else the trainer's ``default_spec()``, else CE)."""
    from evoloss.workers.trainer import create_trainer

    trainer = create_trainer(method.trainer, **dict(method.options or {}))
    if method.family is not None:
        return trainer, losses.LossSpec(method.family, dict(method.params or {}))
    default = getattr(trainer, "default_spec", None)
    return trainer, (default() if callable(default) else losses.LossSpec("ce"))


def _check_trainer(path: str, method: MethodSection) -> bool:
    """Validate a ``trainer`` method; return whether it needs a clean meta set."""
    registered = _trainer_registry()
    name = method.trainer
    if name in LOSS_TRAINERS:
        raise ConfigError(f"{path}.trainer", "is a loss trainer, not a meta-learned method", name,
                          'compare losses with kind = "loss" methods (they train with train.trainer)')
    if name not in registered:
        raise unknown_name(f"{path}.trainer", name, [t for t in registered if t not in LOSS_TRAINERS])
    try:
        trainer, spec = build_trainer(method)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}.options", f"rejected by trainer {name!r} ({exc})", method.options or {},
                          "use the options the trainer documents") from None
    make_method = getattr(trainer, "make_method", None)
    if not callable(make_method):
        return False
    try:
        return bool(getattr(make_method(spec), "needs_clean_meta", False))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}.family", f"trainer {name!r} cannot use this base loss ({exc})", method.family,
                          "use the family the trainer learns, or leave family out") from None


def _check_cleanlab(path: str, method: MethodSection) -> None:
    """A ``cleanlab`` method's options, checked by building its trainer."""
    from evoloss.workers.trainer import create_trainer

    _trainer_registry()
    try:
        create_trainer("cleanlab", **dict(method.options or {}))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}.options", f"rejected by the cleanlab method ({exc})", method.options or {},
                          "use {folds = 5, filter_by = \"prune_by_noise_rate\"}") from None


def _check_method(i: int, method: MethodSection, meta_per_class: int) -> MethodSection:
    """One method validated; ``params`` returned with the family defaults filled in."""
    path = f"methods[{i}]"
    _check_method_keys(path, method)
    if method.family is not None:
        given = dict(method.params or {})
        full = _family_params(path, method.family, given)
        if method.kind == "tuned":
            _check_grid(path, method, given)
            method = dataclasses.replace(method, params={k: v for k, v in full.items() if k not in method.grid})
        else:
            method = dataclasses.replace(method, params=full)
    if method.kind == "cleanlab":
        _check_cleanlab(path, method)
    if method.kind == "trainer" and _check_trainer(path, method) and meta_per_class == 0:
        raise ConfigError("compare.meta_per_class", f"is 0 but method {method.name!r} needs a clean meta set", 0,
                          "set compare.meta_per_class >= 1 (e.g. 10)")
    return method


# --- task-group checks ---------------------------------------------------------------------------
def noise_label(noise: NoiseSection) -> str:
    """``symmetric0.8-exact``: the noise part of a task's key (workers.task.Task.key)."""
    if noise.type == "none":
        return "clean"
    return f"{noise.type}{noise.rate:g}" + (f"-{noise.convention}" if noise.convention else "")


def _check_task_groups(groups: tuple[TaskGroupSection, ...]) -> None:
    """Names unique and non-empty, registries, and each (dataset, arch, noise) in one group only."""
    owner: dict[str, str] = {}
    for i, group in enumerate(groups):
        path = f"tasks[{i}]"
        if not group.name.strip():
            raise ConfigError(f"{path}.name", "must be a non-empty name", group.name, 'write e.g. name = "seen"')
        if group.name in {g.name for g in groups[:i]}:
            raise ConfigError(f"{path}.name", "repeats the name of another task group", group.name,
                              "give each group its own name")
        check_noise(f"{path}.noise", group.noise)
        check_task_names(path, group.datasets, group.archs, group.noise, data_dir=group.data_dir)
        for dataset, arch, noise in itertools.product(group.datasets, group.archs, group.noise):
            label = f"{dataset}/{arch}/{noise_label(noise)}"
            if label in owner and owner[label] != group.name:
                raise ConfigError(path, f"lists task {label} that group {owner[label]!r} already has", group.name,
                                  "list each dataset/arch/noise task in one group (seeds included)")
            owner[label] = group.name


def _check_method_names(methods: tuple[MethodSection, ...]) -> None:
    for i, method in enumerate(methods):
        if method.name in {m.name for m in methods[:i]}:
            raise ConfigError(f"methods[{i}].name", "repeats the name of another method", method.name,
                              "give each method its own name")


def parse_compare_config(data: Mapping[str, Any]) -> CompareConfig:
    """Validate a compare config dict (as tomllib reads it) into a `CompareConfig`.

    Raises:
        ValueError: for the first problem found, naming the key path, the value and the fix.
    """
    data = load_plugin_modules(data)
    check_root(data, list(ROOT_KEYS))
    for key in _LISTS:
        if key not in data:
            raise ConfigError(key, "is missing", None, f"add one or more [[{key}]] tables")
    parts: dict[str, Any] = {name: build_section(cls, data[name], name)
                             for name, cls in _TABLES.items() if name in data}
    parts.update({name: build_sections(cls, data[name], name) for name, cls in _LISTS.items()})
    config = CompareConfig(**parts)
    check_train(config.train)  # the search config's train.val/test rules
    check_metric_rule("compare.metric_rule", config.compare.metric_rule, config.train)
    check_cluster(config.cluster)  # and its [cluster] rules (address form, GPU share)
    if config.cluster.engine != "native":
        raise ConfigError("cluster.engine", "must be 'native' for a compare (Ray Tune runs searches only)",
                          config.cluster.engine, 'remove it or set engine = "native"')
    _check_method_names(config.methods)
    clean = config.compare.meta_per_class or config.compare.clean_budget
    methods = tuple(_check_method(i, m, clean) for i, m in enumerate(config.methods))
    _check_task_groups(config.tasks)
    tasks = tuple(dataclasses.replace(g, datasets=canonical_file_datasets(g.datasets)) for g in config.tasks)
    return dataclasses.replace(config, methods=methods, tasks=tasks)


# --- loading -------------------------------------------------------------------------------------
def list_compare_presets() -> list[str]:
    """Names of the compare presets shipped in ``search/compare_presets/`` (without .toml)."""
    return preset_names("compare")


def _named_entry(data: dict[str, Any], key: str, override: str, value: Any) -> None:
    """Apply ``methods.<name>.<key...> = value`` to the list entry called <name>, in place."""
    section, name, *rest = key.split(".")
    entries = data.get(section)
    names = [e.get("name") for e in entries] if isinstance(entries, list) else []
    if not isinstance(entries, list) or name not in names:
        close = difflib.get_close_matches(name, [str(n) for n in names], n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(override, f"names no entry of {section}", name,
                          f"{hint}{section} entries are: {', '.join(map(str, names)) or 'none'}")
    if not rest:
        raise ConfigError(override, "must name a key of the entry", name, f"write {section}.{name}.KEY=VALUE")
    index = names.index(name)
    entries[index] = merge(entries[index], nested({".".join(rest): value}))


def apply_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` with dotted-key overrides merged in; ``methods.<name>.key`` / ``tasks.<name>.key``
    address a list entry by its name."""
    out = copy.deepcopy(dict(data))
    for key, value in overrides.items():
        head = str(key).split(".")[0]
        if head in _LISTS and "." in str(key):
            _named_entry(out, str(key), f"{key}", value)
        else:
            out = merge(out, nested({key: value}))
    return out


def load_compare_config(path: str | Path | None = None, preset: str | None = None,
                        overrides: Mapping[str, Any] | None = None, *,
                        data: Mapping[str, Any] | None = None) -> CompareConfig:
    """A compare preset, then a TOML file, then ``data``, then overrides, merged in that order and validated.

    ``data`` is a compare config as Python data (e.g. `compare_config_dict` of a config); None values
    in it mean unset.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ConfigError: (a ValueError) an unknown preset (key ``preset``), invalid TOML or any invalid
            setting (`parse_compare_config`).
    """
    merged = preset_and_file("compare", preset, path, "compare preset", data)
    if overrides:
        merged = apply_overrides(merged, overrides)
    return parse_compare_config(merged)


# --- writing -------------------------------------------------------------------------------------
def resolved_compare_toml(config: CompareConfig) -> str:
    """The whole compare config as TOML, every default written out (methods: the keys their kind uses)."""
    lines = ["# evoloss compare config, resolved: every setting written out (run it with: evoloss compare FILE)"]
    for name in ("compare", "train", "cluster", "output", "plugins"):
        lines += [f"\n[{name}]", *section_lines(getattr(config, name))]
    for method in config.methods:
        lines += ["\n[[methods]]", *section_lines(method, skip_unset=True)]
    for group in config.tasks:
        lines += ["\n[[tasks]]", *section_lines(group)]
    return "\n".join(lines) + "\n"


def compare_config_dict(config: CompareConfig) -> dict[str, Any]:
    """The config as plain JSON data (tuples as lists, unset as None)."""
    return plain_data(config)
