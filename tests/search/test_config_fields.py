"""The shared config-field module: `ConfigError`, one error type for both configs, no CLI flags in
library messages, `NoiseSection.to_spec`, and the generated configuration reference."""
from __future__ import annotations

import dataclasses
import pickle
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from evoloss.search import compare_config, config
from evoloss.search.compare_config import CompareConfig, apply_overrides, load_compare_config
from evoloss.search.config import NoiseSection, SearchConfig, load_config, parse_override
from evoloss.search.config_fields import ConfigError, field_docs, plain_data, toml_value
from evoloss.search.config_reference import reference_markdown
from evoloss.workers.task import NoiseSpec

REPO_ROOT = Path(__file__).resolve().parents[2]
CLI_FLAGS = re.compile(r"--(preset|set|resume|out|config|metric|address)\b")
COMPARE_BASE: dict[str, Any] = {
    "methods": [{"name": "ce", "kind": "loss", "family": "ce"}, {"name": "gce", "kind": "loss", "family": "gce"}],
    "tasks": [{"name": "seen", "datasets": ["digits"], "archs": ["mlp2"], "seeds": [0]}],
}

SEARCH_BAD = [
    ({"search.popsiz": 3}, "search.popsiz", "popsiz"),
    ({"search.popsize": 1}, "search.popsize", 1),
    ({"search.x0": "zero"}, "search.x0", "zero"),
    ({"grid.noise": [{"type": "none", "rate": 0.3}]}, "grid.noise[0].rate", 0.3),
    ({"grid.datasets": ["no-such-dataset"]}, "grid.datasets[0]", "no-such-dataset"),
    ({"search.family": "gcee"}, "search.family", "gcee"),
    ({"train.val": 0.6, "train.test": 0.5}, "train.test", 0.5),
    ({"bogus": {}}, "bogus", "bogus"),
]


@pytest.mark.parametrize("overrides, key, value", SEARCH_BAD, ids=[k for _, k, _ in SEARCH_BAD])
def test_every_search_config_error_is_a_config_error_with_key_value_fix(overrides: dict, key: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(overrides=overrides)
    err = info.value
    assert isinstance(err, ValueError) and err.key == key and err.value == value and err.fix
    assert str(err).startswith("config ") and not CLI_FLAGS.search(str(err))


COMPARE_BAD = [
    ({"methods.gcee.params.q": 0.5}, "methods.gcee.params.q", "gcee"),
    ({"methods.gce": 3}, "methods.gce", "gce"),
    ({"methods.gce.params": {"zz": 1.0}}, "methods[1].params.zz", "zz"),
    ({"tasks.seen.seeds": [-1]}, "tasks[0].seeds[0]", -1),
    ({"tasks.seen.noise": [{"type": "none", "rate": 0.2}]}, "tasks[0].noise[0].rate", 0.2),
    ({"cluster.engine": "tune"}, "cluster.engine", "tune"),
]


@pytest.mark.parametrize("overrides, key, value", COMPARE_BAD, ids=[k for _, k, _ in COMPARE_BAD])
def test_every_compare_config_error_is_a_config_error(overrides: dict, key: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        compare_config.parse_compare_config(apply_overrides(COMPARE_BASE, overrides))
    err = info.value
    assert err.key == key and err.value == value and err.fix and not CLI_FLAGS.search(str(err))


def test_unknown_presets_name_the_key_not_the_flag() -> None:
    for load in (load_config, load_compare_config):
        with pytest.raises(ConfigError) as info:
            load(preset="quik")
        assert info.value.key == "preset" and info.value.value == "quik" and "quick" in info.value.fix
        assert str(info.value).startswith("config preset: is not registered") and not CLI_FLAGS.search(str(info.value))


def test_config_error_message_pickles_and_overrides() -> None:
    err = ConfigError("search.popsize", "must be >= 2", 1, "use a value >= 2")
    assert str(err) == "config search.popsize: must be >= 2, got 1; use a value >= 2"
    back = pickle.loads(pickle.dumps(err))
    assert (back.key, back.value, back.fix, str(back)) == (err.key, err.value, err.fix, str(err))
    with pytest.raises(ConfigError, match="section.key=value") as info:
        parse_override("popsize")
    assert info.value.value == "popsize"


def test_noise_section_to_spec() -> None:
    section = NoiseSection(type="longtail", rate=0.3, convention="jiang", imbalance=10.0)
    assert section.to_spec() == NoiseSpec(kind="longtail", rate=0.3, convention="jiang", imbalance=10.0)


def test_writer_and_plain_data() -> None:
    assert toml_value({"q": (0.1, 0.4), "a b": [True, "x"]}) == '{q = [0.1, 0.4], "a b" = [true, "x"]}'
    assert toml_value(NoiseSection()) == '{type = "symmetric", rate = 0.8, convention = "", imbalance = 1.0}'
    assert plain_data(SearchConfig())["grid"]["noise"] == [dataclasses.asdict(NoiseSection())]


# --- the configuration reference -------------------------------------------------------------------
def _section_classes() -> set[type]:
    found: set[type] = set()
    for module, root in ((config, SearchConfig), (compare_config, CompareConfig)):
        found |= {v for v in vars(module).values() if isinstance(v, type) and dataclasses.is_dataclass(v)
                  and v is not root and v.__module__ == module.__name__}
    return found


def test_every_config_field_has_a_doc() -> None:
    classes = _section_classes()
    assert {"SearchSection", "NoiseSection", "MethodSection", "TaskGroupSection"} <= {c.__name__ for c in classes}
    for cls in classes | {SearchConfig, CompareConfig}:
        for f in dataclasses.fields(cls):
            assert str(f.metadata.get("doc", "")).strip(), f"{cls.__name__}.{f.name} has no doc"
    for cls in classes:
        assert set(field_docs(cls)) == {f.name for f in dataclasses.fields(cls)}


def test_the_reference_lists_every_key_of_every_section() -> None:
    text = reference_markdown()
    for cls in _section_classes():
        for name in field_docs(cls):
            assert f"| `{name}` |" in text, f"{cls.__name__}.{name} missing from the reference"


def test_docs_configuration_md_is_the_generators_output() -> None:
    committed = (REPO_ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == reference_markdown(), (
        "docs/configuration.md is stale: run python -m evoloss.search.config_reference > docs/configuration.md")


def test_the_generator_runs_as_a_module() -> None:
    out = subprocess.run([sys.executable, "-m", "evoloss.search.config_reference"], capture_output=True, text=True,
                         check=True, cwd=REPO_ROOT)
    assert out.stdout == reference_markdown()


def test_configs_round_trip_through_plain_data() -> None:
    """``data=`` takes a config as Python data (None = unset): every preset comes back equal."""
    from evoloss.search.compare_config import compare_config_dict
    from evoloss.search.config import config_dict
    from evoloss.search.preset_files import preset_names

    for name in preset_names("search"):
        original = load_config(preset=name)
        assert load_config(data=config_dict(original)) == original
    for name in preset_names("compare"):
        original = load_compare_config(preset=name)
        assert load_compare_config(data=compare_config_dict(original)) == original
    assert load_config(preset="quick", data={"search": {"popsize": 5}}).search.popsize == 5
    with pytest.raises(ConfigError, match="must be a table of sections"):
        load_config(data=[1])  # type: ignore[arg-type]
