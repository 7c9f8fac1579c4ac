"""The search configuration: typed sections loaded from TOML, validated, written back out in full.

``load_config(path, preset, overrides)`` merges, in order, a preset shipped in ``search/presets/``,
a TOML file and overrides (nested dicts or dotted keys: ``{"search.popsize": 4}``), then validates:
unknown sections/keys are rejected with close matches, types and ranges are checked, and every
error is one `search.config_fields.ConfigError` (a ValueError) naming the key path
(``grid.noise[0].rate``), the value and the fix.
Loss families are checked against ``losses``; datasets, architectures and noise models against the
``workers`` registries when those modules import. ``resolved_toml(config)`` writes every setting
(defaults included; unset optional ones as comments) so a run directory records what ran.
"""
from __future__ import annotations

import dataclasses
import importlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from evoloss import losses
from evoloss.search.config_fields import (
    ConfigError,
    build_section,
    check_root,
    config_field as _f,
    merge,
    nested,
    plain_data,
    preset_and_file,
    section_lines,
    unknown_name,
    unset_optional,
)
from evoloss.search.preset_files import preset_names

if TYPE_CHECKING:
    from evoloss.workers.task import NoiseSpec


@dataclass(frozen=True, kw_only=True)
class SearchSection:
    family: str = _f("taylor", "loss family whose parameters CMA-ES searches (losses.list_losses())", "str")
    popsize: int = _f(8, "CMA-ES population size lambda", "int", min=2, max=4096)
    sigma0: float = _f(1.0, "initial CMA-ES step size, in genome units", "float", gt=0.0, max=100.0)
    generations: int = _f(10, "generations to run (stop reason max_generations)", "int", min=1)
    seed: int = _f(0, "seeds CMA-ES sampling and the per-generation task subset", "int", min=0)
    x0: Any = _f("default", '"default" (family defaults), "zeros", or a genome list', "word_or_numbers",
                 choices=("default", "zeros"))
    failure_margin: float = _f(0.01, "failed candidates score worst finite fitness minus this", "float", gt=0.0)
    failure_floor: float = _f(0.0, "fitness of every candidate when all failed", "float", min=0.0, max=1.0)
    low_fidelity: float | None = _f(None, "successive halving: share of train.epochs every candidate first trains; "
                                    "unset = all train the full budget", "float?", gt=0.0, lt=1.0)
    finish_share: float = _f(0.34, "successive halving: share of candidates (the best at low fidelity) that "
                             "train the full budget", "float", gt=0.0, max=1.0)


@dataclass(frozen=True, kw_only=True)
class NoiseSection:
    type: str = _f("symmetric", "none | symmetric | asymmetric | instance | longtail | given (the labels of "
                   "the dataset's file, docs/data.md)", "str",
                   choices=("none", "symmetric", "asymmetric", "instance", "longtail", "given"))
    rate: float = _f(0.8, "noise rate r (type given: none, the file's labels are used as they are)", "float",
                     min=0.0, lt=1.0)
    convention: str = _f("", 'how r is applied (docs/noise.md); "" = the type\'s default', "str")
    imbalance: float = _f(1.0, "long-tail imbalance ratio rho (type longtail only)", "float", min=1.0)

    def __post_init__(self) -> None:
        if self.type == "given" and self.rate == 0.8:  # the default rate: type given has none (check_noise)
            object.__setattr__(self, "rate", 0.0)

    def to_spec(self) -> NoiseSpec:
        """This noise setting as the `workers.task.NoiseSpec` a task carries."""
        from evoloss.workers.task import NoiseSpec  # lazily: workers.task imports torch

        return NoiseSpec(kind=self.type, rate=self.rate, convention=self.convention, imbalance=self.imbalance)


NOISE_EXAMPLE = 'write e.g. [{type = "symmetric", rate = 0.8}]'
"""How an invalid noise list is fixed (the search and compare configs' noise fields)."""


@dataclass(frozen=True, kw_only=True)
class PairSection:
    dataset: str = _f("", "a name in grid.datasets", "str")
    arch: str = _f("", "a name in grid.archs", "str")


EXCLUDE_EXAMPLE = 'write e.g. [{dataset = "mnist1d", arch = "mlp4"}]'


@dataclass(frozen=True, kw_only=True)
class GridSection:
    datasets: tuple[str, ...] = _f(("digits",), "dataset registry names", "names")
    archs: tuple[str, ...] = _f(("mlp2",), "architecture registry names", "names")
    noise: tuple[NoiseSection, ...] = _f((NoiseSection(),), "noise settings", "tables",
                                         section=NoiseSection, what="noise tables", example=NOISE_EXAMPLE)
    seeds: tuple[int, ...] = _f((0,), "task seeds (split, noise, initialisation)", "ints", min=0)
    mode: str = _f("ar", "ar (1 dataset) | dr (1 arch) | ardr (full product)", "str", choices=("ar", "dr", "ardr"))
    subset_size: int | None = _f(None, "tasks per generation (seeded random subset); unset = all", "int?", min=1)
    metric_rule: str = _f("last", "fitness reads val_acc_last (last), val_acc_best (best) or noisy_val_acc_best "
                          "(noisy: gao-arl Table 3, early stopping on a noisy validation split; needs train.noisy_val)",
                          "str", choices=("last", "best", "noisy"))
    fitness: str = _f("accuracy", "score per task: accuracy | relative-ce (over CE's, trained once per task) | "
                      "rank (normalised among the generation's candidates)", "str",
                      choices=("accuracy", "relative-ce", "rank"))
    aggregate: str = _f("mean", "scores over tasks: mean | quantile (the lower grid.quantile, worst-case transfer)",
                        "str", choices=("mean", "quantile"))
    quantile: float = _f(0.25, "the quantile of aggregate = quantile (0 = the worst task)", "float", min=0.0, max=1.0)
    stratify: str = _f("none", "how a generation's subset is drawn: none (from the whole grid) | arch (the same "
                       "share of grid.subset_size from each architecture, the remainder to random ones)", "str",
                       choices=("none", "arch"))
    exclude: tuple[PairSection, ...] = _f((), "dataset x arch pairs left out of the product (e.g. a pair the search "
                                          "names as near chance); [] = none", "tables", section=PairSection,
                                          what="dataset/arch tables", example=EXCLUDE_EXAMPLE,
                                          empty_ok=True)
    incompatible: str = _f("refuse", "a dataset x arch pair that cannot work: refuse (error listing the pairs that "
                           "fit) | leave-out (skipped, said in one line)", "str", choices=("refuse", "leave-out"))
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
    noisy_val: float = _f(0.0, "validation split that keeps its noisy labels (fraction or count; 0 = none); "
                          "metric_rule = noisy reads it", "float", min=0.0)
    trainer: str = _f("population", "inner trainer", "str", choices=("population", "standard"))
    compile: str = _f("auto", "population trainer: torch.compile its training step: auto (on CUDA only; on CPU "
                      "the warm-up outweighs a short search) | on | off", "str", choices=("auto", "on", "off"))


@dataclass(frozen=True, kw_only=True)
class ClusterSection:
    address: str | None = _f(None, "HOST:PORT of a Ray cluster; unset = embedded local Ray", "str?")
    num_cpus: int | None = _f(None, "CPUs of the embedded Ray; unset = the machine's", "int?", min=1, max=4096)
    cpus_per_actor: float = _f(1.0, "CPUs each evaluation actor reserves (>= 0.05: at most 20 actors per CPU)",
                               "float", min=0.05, max=256.0)
    gpus_per_actor: float = _f(0.0, "GPU share per actor (fractions allowed; 0, or >= 0.01: at most 100 per GPU)",
                               "float", min=0.0, max=1.0)
    timeout_s: float = _f(600.0, "seconds before a job is marked timeout (at most a week)", "float", gt=0.0,
                          max=604800.0)
    engine: str = _f("native", "native dispatch or ray tune", "str", choices=("native", "tune"))


@dataclass(frozen=True, kw_only=True)
class OutputSection:
    run_dir: str = _f("runs/search", "the run directory (results, state, resolved config)", "str")


@dataclass(frozen=True, kw_only=True)
class PluginsSection:
    modules: tuple[str, ...] | None = _f(None, "modules imported first (in the driver and every Ray worker), e.g. your own "
                                  "loss families; also written plugins = [...] at the top of the file; unset = none",
                                  "names")


def load_plugin_modules(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` with a top-level ``plugins = [...]`` read as ``[plugins] modules``; the modules imported
    (`workers.user_code.load_plugins`) so that their loss families and datasets are known to the checks."""
    if isinstance(data, Mapping) and isinstance(data.get("plugins"), list):
        data = {**data, "plugins": {"modules": data["plugins"]}}
    if not isinstance(data, Mapping) or "plugins" not in data:
        return dict(data) if isinstance(data, Mapping) else data
    section = build_section(PluginsSection, data["plugins"], "plugins")
    from evoloss.workers.user_code import load_plugins  # lazily: only configs that name plug-ins pay it

    try:
        load_plugins(section.modules or ())
    except ValueError as exc:
        raise ConfigError("plugins.modules", "cannot be imported", list(section.modules), str(exc),
                          message=f"config plugins: {exc}") from None
    return dict(data)


def canonical_file_datasets(datasets: tuple[str, ...]) -> tuple[str, ...]:
    """Dataset names with the paths of users' files made absolute (``npz:data.npz`` -> ``npz:/abs/data.npz``),
    so that a run records which file it read and Ray workers in other directories read the same one."""
    try:
        from evoloss.workers.datasets import canonical_name, get_dataset_entry
    except ImportError:
        return datasets
    return tuple(canonical_name(d) if get_dataset_entry(d).takes_path else d for d in datasets)


@dataclass(frozen=True, kw_only=True)
class SearchConfig:
    search: SearchSection = field(default_factory=SearchSection, metadata={"doc": "what CMA-ES searches and how"})
    grid: GridSection = field(default_factory=GridSection,
                              metadata={"doc": "the tasks every candidate loss is trained on (fitness: their mean)"})
    train: TrainSection = field(default_factory=TrainSection, metadata={"doc": "how each network is trained"})
    cluster: ClusterSection = field(default_factory=ClusterSection, metadata={"doc": "where evaluations run"})
    output: OutputSection = field(default_factory=OutputSection, metadata={"doc": "where the run is written"})
    plugins: PluginsSection = field(default_factory=PluginsSection,
                                    metadata={"doc": "your own modules (loss families ...), docs/data.md"})


SECTIONS: dict[str, type] = {f.name: f.default_factory for f in dataclasses.fields(SearchConfig)}


def parse_config(data: Mapping[str, Any]) -> SearchConfig:
    """Validate a config dict (as tomllib reads it) into a `SearchConfig`.

    Raises:
        ConfigError: (a ValueError) for the first problem found, naming the key path, the value and the fix.
    """
    data = load_plugin_modules(data)
    check_root(data, list(SECTIONS))
    config = SearchConfig(**{name: build_section(SECTIONS[name], data[name], name) for name in data})
    _check_relations(config)
    _check_registries(config)
    grid = dataclasses.replace(config.grid, datasets=canonical_file_datasets(config.grid.datasets))
    return dataclasses.replace(config, grid=grid)


# --- cross-field and registry checks -------------------------------------------------------------
def check_train(train: TrainSection) -> None:
    """The split rules of ``[train]``: ``val``/``test`` fractions or whole counts, leaving training data."""
    for name in ("val", "test", "noisy_val"):
        value = getattr(train, name)
        if value >= 1 and value != int(value):
            raise ConfigError(f"train.{name}", "must be a fraction < 1 or a whole count >= 1", value, "e.g. 0.2 or 200")
    if train.val < 1 and train.test < 1 and train.val + train.test >= 1:
        raise ConfigError("train.test", f"val + test fractions must leave training data (val = {train.val:g})",
                          train.test, "make val + test < 1")


def check_metric_rule(key: str, rule: str, train: TrainSection) -> None:
    """``noisy`` (gao-arl Table 3) reads a validation split that keeps its noisy labels: it must exist."""
    if rule == "noisy" and train.noisy_val <= 0:
        raise ConfigError(key, "reads the noisy validation split, and train.noisy_val is 0", rule,
                          "set train.noisy_val (e.g. 0.1, or a count such as 200)")


def check_noise(path: str, noise: tuple[NoiseSection, ...]) -> None:
    """Noise settings at ``path`` (``grid.noise``): type ``none`` takes no rate."""
    for i, n in enumerate(noise):
        if n.type == "none" and n.rate != 0.0:
            raise ConfigError(f"{path}[{i}].rate", "type 'none' takes no rate", n.rate, "set rate = 0.0")
        if n.type == "given" and (n.rate != 0.0 or n.convention not in ("", "file")):
            raise ConfigError(f"{path}[{i}]", "type 'given' takes no rate or convention (the file's labels are "
                              "used as they are)", {"rate": n.rate, "convention": n.convention},
                              'write {type = "given"}')


def check_cluster_address(key: str, address: str) -> None:
    """A cluster address must be ``HOST:PORT`` (what ``ray start --head`` printed); checked when the
    config is read, before any run directory exists."""
    host, sep, port = str(address).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(key, "must be HOST:PORT of a Ray head", address, "e.g. 127.0.0.2:6379, or leave it unset "
                          "for an embedded Ray")


def check_cluster(cluster: ClusterSection, path: str = "cluster") -> None:
    """``[cluster]`` rules across its fields: the address form, and a GPU share of 0 or at least 0.01."""
    if cluster.address is not None:
        check_cluster_address(f"{path}.address", cluster.address)
    if 0.0 < cluster.gpus_per_actor < 0.01:
        raise ConfigError(f"{path}.gpus_per_actor", "must be 0 or >= 0.01 (a smaller share starts thousands of "
                          "actors per GPU)", cluster.gpus_per_actor, "use 0 (CPU only) or a share >= 0.01")


def _check_relations(config: SearchConfig) -> None:
    grid = config.grid
    if grid.mode == "ar" and len(grid.datasets) != 1:
        raise ConfigError("grid.datasets", "mode 'ar' (architecture randomisation) takes one dataset",
                          list(grid.datasets), 'keep one dataset or set grid.mode = "ardr"')
    if grid.mode == "dr" and len(grid.archs) != 1:
        raise ConfigError("grid.archs", "mode 'dr' (dataset randomisation) takes one architecture", list(grid.archs),
                          'keep one architecture or set grid.mode = "ardr"')
    size = len(grid.datasets) * len(grid.archs) * len(grid.noise) * len(grid.seeds)
    if grid.subset_size is not None and grid.subset_size > size:
        raise ConfigError("grid.subset_size", f"exceeds the grid's {size} tasks", grid.subset_size,
                          f"use at most {size}, or leave it unset for all tasks")
    check_train(config.train)
    check_metric_rule("grid.metric_rule", grid.metric_rule, config.train)
    check_cluster(config.cluster)
    check_noise("grid.noise", grid.noise)
    if config.cluster.engine == "tune" and (config.search.low_fidelity is not None or grid.fitness == "relative-ce"):
        key = "search.low_fidelity" if config.search.low_fidelity is not None else "grid.fitness"
        raise ConfigError(key, "needs the native engine (extra jobs inside a generation)",
                          getattr(config.search, "low_fidelity", None) if key.startswith("search") else grid.fitness,
                          'set cluster.engine = "native"')
    family = losses.get_family(config.search.family) if config.search.family in losses.list_losses(include_private=True) else None
    if family is not None and not isinstance(config.search.x0, str) and len(config.search.x0) != family.dim:
        problem = f"family {family.name!r} has {family.dim} parameter(s) ({', '.join(family.param_names)})"
        raise ConfigError("search.x0", problem, list(config.search.x0), f'give {family.dim} genome values or "default"')


_TASK_CHECKS = (("datasets", "evoloss.workers.datasets", "validate_dataset_name"),  # reads users' files
                ("archs", "evoloss.workers.archs", "get_arch"),
                ("noise", "evoloss.workers.noise", "validate_noise_spec"))


def check_task_names(path: str, datasets: tuple[str, ...], archs: tuple[str, ...], noise: tuple[NoiseSection, ...],
                     *, skip_missing: bool = False, data_dir: str | None = None) -> None:
    """Dataset, architecture and noise names at ``path`` (``grid``, ``tasks[0]``) against the workers'
    registries; with ``skip_missing`` a registry module that does not import is skipped (its names are
    then checked when tasks materialise). Users' files are read and checked here, and so are noise type
    ``given`` and users' model factories against them (`workers.user_checks`)."""
    values = {"datasets": datasets, "archs": archs, "noise": tuple(n.to_spec() for n in noise)}
    for key, module, function in _TASK_CHECKS:
        try:
            check = getattr(importlib.import_module(module), function)
        except ImportError:
            if skip_missing:
                continue
            raise
        for i, value in enumerate(values[key]):
            try:
                check(value)
            except (ValueError, TypeError, OSError) as exc:
                raise ConfigError(f"{path}.{key}[{i}]", "is not valid", value, str(exc),
                                  message=f"config {path}.{key}[{i}]: {exc}") from None
    try:
        from evoloss.workers.user_checks import check_task_inputs
    except ImportError:
        return
    for key, i, problem in check_task_inputs(datasets, archs, values["noise"], data_dir):
        raise ConfigError(f"{path}.{key}[{i}]", "is not valid", values[key][i], problem,
                          message=f"config {path}.{key}[{i}]: {problem}")


def _check_registries(config: SearchConfig) -> None:
    """Names against the loss registry and, when importable, the workers' registries."""
    name = config.search.family
    if name not in losses.list_losses(include_private=True):
        raise unknown_name("search.family", name, losses.list_losses())
    if losses.get_family(name).dim == 0:
        searchable = [n for n in losses.list_losses() if losses.get_family(n).dim > 0]
        raise ConfigError("search.family", "has no parameters to search", name,
                          f"choose one of {', '.join(searchable)}")
    grid = config.grid
    check_task_names("grid", grid.datasets, grid.archs, grid.noise, skip_missing=True, data_dir=grid.data_dir)
    _check_pairs(config)


def _check_pairs(config: SearchConfig) -> None:
    """Dataset × architecture pairs that cannot work (`search.grid.incompatible_pairs`): refused, or
    with ``grid.incompatible = "leave-out"`` counted out of the grid (and the subset size checked)."""
    try:
        from evoloss.search.grid import incompatible_pairs  # lazily: loads the workers' registries
    except ImportError:
        return
    grid = config.grid
    for i, pair in enumerate(grid.exclude):
        for key, name, names in (("dataset", pair.dataset, grid.datasets), ("arch", pair.arch, grid.archs)):
            if name not in names:
                raise ConfigError(f"grid.exclude[{i}].{key}", f"is not in grid.{key}s", name,
                                  f"use one of {', '.join(names)}")
    excluded = {(p.dataset, p.arch) for p in grid.exclude}
    if len(excluded) != len(grid.exclude):
        raise ConfigError("grid.exclude", "lists a pair twice", [vars(p) for p in grid.exclude], "remove the duplicate")
    bad = [b for b in incompatible_pairs(grid.datasets, grid.archs, grid.data_dir) if (b[0], b[1]) not in excluded]
    if bad and grid.incompatible == "refuse":
        skip = {(d, a) for d, a, _ in bad}
        fit = [f"{a} on {d}" for a in grid.archs for d in grid.datasets if (d, a) not in skip]
        raise ConfigError("grid.archs", f"{bad[0][1]!r} cannot take dataset {bad[0][0]!r} "
                          f"({len(bad)} pair(s) cannot work)", list(grid.archs),
                          f"pairs that fit: {', '.join(fit) or 'none'}; or set grid.incompatible = \"leave-out\"")
    size = (len(grid.datasets) * len(grid.archs) - len(bad) - len(excluded)) * len(grid.noise) * len(grid.seeds)
    if size == 0:
        raise ConfigError("grid.archs", "no dataset x architecture pair can work" if not excluded else
                          "no dataset x architecture pair is left after grid.exclude", list(grid.archs),
                          "add an architecture that takes these datasets (e.g. mlp2), or exclude fewer pairs")
    if grid.subset_size is not None and grid.subset_size > size:
        raise ConfigError("grid.subset_size", f"exceeds the {size} tasks left after {len(bad)} pair(s) that cannot "
                          f"work and {len(excluded)} excluded", grid.subset_size, f"use at most {size}")
    if grid.stratify == "arch" and grid.subset_size is not None:
        from evoloss.search.grid import arch_task_counts, stratum_shortfall

        gone = excluded | {(d, a) for d, a, _ in bad}
        counts = arch_task_counts(grid.datasets, grid.archs, gone, len(grid.noise) * len(grid.seeds))
        short = stratum_shortfall(counts, grid.subset_size)
        if short:
            raise ConfigError("grid.subset_size", f"takes up to {short[1]} tasks of each architecture under "
                              f"grid.stratify = \"arch\", but {short[0]!r} has {counts[short[0]]}",
                              grid.subset_size, f"use at most {len(grid.archs) * min(counts.values())}, or "
                              "grid.stratify = \"none\"")


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
    return preset_names("search")


def load_config(
    path: str | Path | None = None, preset: str | None = None, overrides: Mapping[str, Any] | None = None,
    *, data: Mapping[str, Any] | None = None,
) -> SearchConfig:
    """A preset, then a TOML file, then ``data``, then overrides, merged in that order and validated.

    ``data`` is a config as Python data (sections of key = value, e.g. `config_dict` of a config);
    None values in it mean unset.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ConfigError: (a ValueError) an unknown preset (key ``preset``), invalid TOML, or any invalid
            setting (see `parse_config`).
    """
    merged = preset_and_file("search", preset, path, "preset", data)
    if overrides:
        merged = unset_optional(merge(merged, nested(overrides)), overrides, SECTIONS)
    return parse_config(merged)


def parse_override(text: str) -> tuple[str, Any]:
    """``"search.popsize=4"`` -> ``("search.popsize", 4)``; the value is read as TOML, else as a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(key.strip() or text, "must look like section.key=value", text, "e.g. search.popsize=4",
                          message=f"override {text!r} must look like section.key=value, e.g. search.popsize=4")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.strip(), value


# --- writing -------------------------------------------------------------------------------------
def resolved_toml(config: SearchConfig) -> str:
    """The whole config as TOML, every default written out; unset optional keys as comments."""
    lines = ["# evoloss search config, resolved: every setting written out (run it with: evoloss search FILE)"]
    for section in dataclasses.fields(config):
        lines += [f"\n[{section.name}]", *section_lines(getattr(config, section.name))]
    return "\n".join(lines) + "\n"


def config_dict(config: SearchConfig) -> dict[str, Any]:
    """The config as plain data (tuples as lists, unset as None), e.g. for JSON."""
    return plain_data(config)
