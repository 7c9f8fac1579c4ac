"""Search config: presets, TOML round trip, overrides, and one clear error per bad setting."""
from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import pytest

from evoloss.search.config import (
    SearchConfig,
    config_dict,
    initial_genome,
    list_presets,
    load_config,
    parse_config,
    parse_override,
    resolved_toml,
)
from evoloss.search.grid import grid_from_config
from evoloss import losses

BASE: dict[str, Any] = {
    "search": {"family": "gce", "popsize": 6, "sigma0": 0.5, "generations": 3, "seed": 1},
    "grid": {"datasets": ["digits"], "archs": ["mlp2", "mlp3"], "seeds": [0, 1], "mode": "ar",
             "noise": [{"type": "symmetric", "rate": 0.8, "convention": "exact"},
                       {"type": "asymmetric", "rate": 0.4, "convention": "pairflip"}]},
    "train": {"epochs": 2, "max_train": 300},
}


def with_setting(path: str, value: Any) -> dict[str, Any]:
    """BASE with one setting replaced; ``grid.noise.0.rate`` walks into lists by index."""
    data = copy.deepcopy(BASE)
    *parents, leaf = path.split(".")
    node: Any = data
    for part in parents:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    node[int(leaf) if leaf.isdigit() else leaf] = value
    return data


def test_base_parses_with_defaults_filled() -> None:
    config = parse_config(BASE)
    assert isinstance(config, SearchConfig)
    assert config.search.popsize == 6 and config.search.x0 == "default"
    assert config.grid.noise[1].convention == "pairflip" and config.grid.subset_size is None
    assert config.train.batch_size == 64 and config.cluster.engine == "native"
    assert parse_config({}) == SearchConfig()  # every default is valid


BAD = [
    ("serach.popsize", 4, "config <root>: unknown key 'serach'; did you mean 'search'"),
    ("search.popsze", 4, "config search: unknown key 'popsze'; did you mean 'popsize'"),
    ("search.popsize", 1, "config search.popsize: must be >= 2"),
    ("search.popsize", 8.5, "config search.popsize: must be an integer"),
    ("search.popsize", True, "config search.popsize: must be an integer"),
    ("search.sigma0", 0.0, "config search.sigma0: must be > 0"),
    ("search.sigma0", "big", "config search.sigma0: must be a number"),
    ("search.sigma0", float("inf"), "config search.sigma0: must be finite"),
    ("search.family", "gcee", "config search.family: is not registered, got 'gcee'; did you mean 'gce'"),
    ("search.family", "ce", "config search.family: has no parameters to search"),
    ("search.x0", "random", "config search.x0: is not a valid choice"),
    ("search.x0", [0.1, 0.2], "config search.x0: family 'gce' has 1 parameter(s)"),
    ("search.seed", -3, "config search.seed: must be >= 0"),
    ("grid.noise.0.rate", 1.5, "config grid.noise[0].rate: must be < 1"),
    ("grid.noise.1.type", "pairflip", "config grid.noise[1].type: is not a valid choice"),
    ("grid.noise.0.rat", 0.2, "config grid.noise[0]: unknown key 'rat'; did you mean 'rate'"),
    ("grid.noise.1.convention", "semantc", "config grid.noise[1]:"),
    ("grid.noise", [], "config grid.noise: must be a non-empty list"),
    ("grid.datasets", ["digits", "mnist1d"], "config grid.datasets: mode 'ar'"),
    ("grid.datasets", "digits", "config grid.datasets: must be a non-empty list"),
    ("grid.datasets", ["digitz"], "config grid.datasets[0]: unknown dataset 'digitz'"),
    ("grid.archs", ["mlp2", "mlp9"], "config grid.archs[1]: unknown architecture 'mlp9'"),
    ("grid.archs", ["mlp2", "mlp2"], "config grid.archs: lists an entry twice"),
    ("grid.mode", "AR", "config grid.mode: is not a valid choice, got 'AR'; did you mean 'ar'?"),
    ("grid.subset_size", 9, "config grid.subset_size: exceeds the grid's 8 tasks"),
    ("grid.seeds", [0, "1"], "config grid.seeds[1]: must be an integer"),
    ("grid.metric_rule", "final", "config grid.metric_rule: is not a valid choice"),
    ("train.epochs", 0, "config train.epochs: must be >= 1"),
    ("train.optimizer", "rmsprop", "config train.optimizer: is not a valid choice"),
    ("train.momentum", 1.0, "config train.momentum: must be < 1"),
    ("train.test", 0.9, "config train.test: val + test fractions must leave training data"),
    ("train.val", 2.5, "config train.val: must be a fraction < 1 or a whole count"),
    ("train.trainer", "meta", "config train.trainer: is not a valid choice"),
    ("cluster.gpus_per_actor", -0.5, "config cluster.gpus_per_actor: must be >= 0"),
    ("cluster.engine", "dask", "config cluster.engine: is not a valid choice"),
    ("cluster.timeout_s", 0, "config cluster.timeout_s: must be > 0"),
    ("output", "runs/x", "config output: must be a table"),
]


@pytest.mark.parametrize("path, value, message", BAD, ids=[f"{p}={v!r}" for p, v, _ in BAD])
def test_bad_config_raises_one_clear_error(path: str, value: Any, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_config(with_setting(path, value))
    text = str(info.value)
    assert text.startswith(message), text
    assert len(text.splitlines()) == 1


def test_presets_load_and_build_grids() -> None:
    assert {"quick", "quick-taylor", "quick-ar", "transfer", "arl-ar", "arl-dr"} <= set(list_presets())
    quick = load_config(preset="quick")
    assert (quick.search.family, quick.search.low_fidelity) == ("relative_gce", None)  # no halving (its comments)
    taylor = load_config(preset="quick-taylor")  # the main job's search until relative_gce: same grid and train
    assert (taylor.search.family, taylor.search.low_fidelity, taylor.search.finish_share) == ("taylor", 0.25, 0.34)
    assert (taylor.grid, taylor.train) == (quick.grid, quick.train)
    assert quick.grid.datasets[0] == "digits" and quick.grid.noise[0].rate == 0.8 and quick.grid.subset_size == 6
    tasks = grid_from_config(quick).tasks()
    assert {t.arch for t in tasks} == {"mlp2", "mlp3", "mlp4"} and tasks[0].splits.max_train == quick.train.max_train
    assert {t.dataset for t in tasks if t.arch == "mlp4"} == {"digits"}  # the deep MLP on digits only
    assert len(tasks) == (3 + 3 + 1) * 2 * 2 and quick.grid.stratify == "arch"
    assert sorted(t.arch for t in grid_from_config(quick).tasks_for_generation(0)) == ["mlp2", "mlp2", "mlp3",
                                                                                      "mlp3", "mlp4", "mlp4"]
    transfer = load_config(preset="transfer")  # the two-MLP grid quick had before mlp4, at 30 epochs
    two_mlp = {"grid.archs": ["mlp2", "mlp3"], "grid.exclude": [], "grid.stratify": "none"}
    assert transfer.grid == load_config(preset="quick", overrides=two_mlp).grid
    assert (quick.train.epochs, transfer.train.epochs) == (15, 30)
    ar = load_config(preset="quick-ar")  # the AR-only baseline
    assert ar.grid.datasets == ("digits",) and ar.grid.mode == "ar" and ar.train.epochs == 30
    ar, dr = load_config(preset="arl-ar"), load_config(preset="arl-dr")
    assert ar.grid.mode == "ar" and ar.grid.archs == ("mlp2", "mlp3", "cnn4")
    assert dr.grid.mode == "dr" and dr.grid.datasets == ("mnist", "kmnist", "cifar10")
    with pytest.raises(ValueError, match="config preset: is not registered, got 'quik'; did you mean 'quick'"):
        load_config(preset="quik")


def test_resolved_toml_round_trips(tmp_path: Path) -> None:
    config = parse_config(with_setting("grid.subset_size", 5))
    text = resolved_toml(config)
    assert "# lr = (unset)" in text and 'family = "gce"' in text
    assert tomllib.loads(text)["grid"]["subset_size"] == 5
    path = tmp_path / "config.toml"
    path.write_text(text)
    assert load_config(path) == config
    assert config_dict(load_config(path))["grid"]["noise"][1]["type"] == "asymmetric"


def test_file_preset_and_overrides_merge_in_order(tmp_path: Path) -> None:
    path = tmp_path / "my.toml"
    path.write_text('[search]\npopsize = 12\n[train]\nepochs = 4\n')
    config = load_config(path, preset="quick", overrides={"search.popsize": 20, "train": {"batch_size": 32}})
    assert config.search.popsize == 20 and config.train.epochs == 4 and config.train.batch_size == 32
    assert config.grid.archs == ("mlp2", "mlp3", "mlp4")  # from the preset
    assert parse_override("search.sigma0=0.3") == ("search.sigma0", 0.3)
    assert parse_override('grid.datasets=["digits"]') == ("grid.datasets", ["digits"])
    assert parse_override("output.run_dir=runs/x") == ("output.run_dir", "runs/x")
    with pytest.raises(ValueError, match="section.key=value"):
        parse_override("popsize")


@pytest.mark.parametrize("unset", ["none", "None", None])
def test_an_override_of_none_unsets_an_optional_field(tmp_path: Path, unset: object) -> None:
    """The quick-taylor preset turns successive halving on; ``--set search.low_fidelity=none`` turns it
    off (TOML has no null), as does None from Python; a file's optional value is unset the same way."""
    assert load_config(preset="quick-taylor").search.low_fidelity == 0.25
    config = load_config(preset="quick-taylor", overrides={"search.low_fidelity": unset})
    assert config.search.low_fidelity is None and config.search.finish_share == 0.34
    path = tmp_path / "my.toml"
    path.write_text("[train]\nlr = 0.05\nepochs = 3\n")
    config = load_config(path, preset="quick", overrides={"train.lr": unset})
    assert config.train.lr is None and config.train.epochs == 3
    assert parse_override("search.low_fidelity=none") == ("search.low_fidelity", "none")


@pytest.mark.parametrize(("key", "message"), [("search.popsize", "search.popsize: must be an integer, got 'none'"),
                                              ("grid.archs", "grid.archs")])
def test_none_is_not_a_value_of_a_required_field(key: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_config(preset="quick", overrides={key: "none"})


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[search\npopsize = 4\n")
    with pytest.raises(ValueError, match="invalid TOML"):
        load_config(bad)


def test_initial_genome() -> None:
    family = losses.get_family("gce")
    assert initial_genome(parse_config(BASE)) == family.encode(family.defaults()).tolist()
    assert initial_genome(parse_config(with_setting("search.x0", "zeros"))) == [0.0]
    assert initial_genome(parse_config(with_setting("search.x0", [0.25]))) == [0.25]


def test_the_quickstart_line_says_what_the_quick_grid_trains_on() -> None:
    from evoloss.search.commands.quickstart import grid_line

    line = grid_line(load_config(preset="quick"))
    assert line.startswith("3 datasets x 3 archs x 2 noise types less 2 excluded pair(s), "
                           "6 tasks per generation (stratified by arch), fitness relative-ce/q0.25")
    plain = grid_line(load_config(preset="quick", overrides={"grid.exclude": [], "grid.stratify": "none"}))
    assert "excluded" not in plain and "stratified" not in plain and "6 tasks per generation, " in plain
