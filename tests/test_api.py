"""The public Python API (`evoloss`): cheap to import, the same validation as the CLI, queries of a run."""
from __future__ import annotations

import subprocess
import sys

import pytest

import evoloss
from evoloss.search import api
from evoloss.search.config_fields import ConfigError

TINY = {"search": {"family": "gce", "popsize": 4, "generations": 1, "seed": 3},
        "grid": {"datasets": ["digits"], "archs": ["mlp2"], "seeds": [0],
                 "noise": [{"type": "symmetric", "rate": 0.6}]},
        "train": {"epochs": 1, "max_train": 200, "trainer": "standard"}}


def test_importing_evoloss_loads_nothing_heavy():
    code = ("import sys, evoloss, evoloss.search, evoloss.search.api, evoloss.search.cli;"
            "evoloss.search.cli.build_parser();"
            "heavy = [m for m in ('torch', 'ray', 'pandas', 'pyarrow', 'matplotlib', 'cma') if m in sys.modules];"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == ""


def test_the_report_command_offers_the_report_metrics():
    from evoloss.results.tables import METRICS
    from evoloss.search.commands import report

    assert report.METRICS == METRICS


def test_public_names_resolve_lazily():
    for name in evoloss.__all__:
        assert getattr(evoloss, name) is not None, name
    assert callable(evoloss.search) and evoloss.search is sys.modules["evoloss.search"]
    assert evoloss.register_loss_family is evoloss.losses.register_family
    assert set(evoloss.__all__) <= set(dir(evoloss))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        evoloss.nope  # noqa: B018


@pytest.mark.parametrize("config, overrides, key", [
    ("no-such-preset", None, "config"),
    (42, None, "config"),
    (None, None, "config"),
    ("quick", {"search.popsze": 4}, "search.popsze"),
    ({**TINY, "search": {**TINY["search"], "popsize": 1}}, None, "search.popsize"),
])
def test_bad_search_arguments_raise_config_errors(tmp_path, config, overrides, key):
    with pytest.raises(ConfigError) as info:
        api.prepare_search(config, out=tmp_path / "run", overrides=overrides)
    assert info.value.key == key
    assert not (tmp_path / "run").exists()


def test_a_missing_toml_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.toml"):
        api.prepare_search(str(tmp_path / "nope.toml"))


def test_engine_and_resume_rules(tmp_path):
    with pytest.raises(ConfigError, match="engine"):
        api.prepare_search("quick", engine="spark")
    config, run_dir, resuming = api.prepare_search(TINY, out=tmp_path / "r", overrides={"search.popsize": 6},
                                                   engine="tune")
    assert (config.search.popsize, config.cluster.engine, run_dir, resuming) == (6, "tune", tmp_path / "r", False)
    from evoloss.search.run_dir import create_run_dir

    create_run_dir(tmp_path / "r", config)
    with pytest.raises(ConfigError, match="cannot be given when resuming"):
        api.prepare_search("quick", resume=tmp_path / "r")
    with pytest.raises(ConfigError) as info:
        api.prepare_search(resume=tmp_path / "r", overrides={"train.epochs": 9})
    assert info.value.key == "train.epochs"
    resumed, _, resuming = api.prepare_search(resume=tmp_path / "r", overrides={"search.generations": 5})
    assert resuming and resumed.search.generations == 5 and resumed.search.popsize == 6


def test_a_config_object_and_a_dict_give_the_same_config():
    from_dict = api.resolve_search_config(TINY)
    assert api.resolve_search_config(from_dict) == from_dict
    assert api.resolve_search_config(from_dict, {"search.seed": 9}).search.seed == 9


def test_search_result_queries_a_run_read_only(tmp_path):
    from evoloss.results.store import ParquetStore
    from evoloss.search.coordinator import run_search
    from evoloss.search.local_pool import InProcessPool
    from evoloss.search.run_dir import create_run_dir

    config = api.resolve_search_config(TINY)
    run = tmp_path / "run"
    create_run_dir(run, config)
    run_search(config, InProcessPool(), ParquetStore(run), run_id="run")
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    result = evoloss.SearchResult(run)
    assert result.best["spec"].family == "gce" and 0.0 <= result.best["fitness"] <= 1.0
    assert result.mean.family == "gce"
    assert len(result.evaluations()) == 4 and list(result.generations()["generation"]) == [0]
    status = result.status()
    assert status["generations_done"] == 1 and status["generations_planned"] == 1 and status["evaluations"] == 4
    path = evoloss.export(result, name="robust_loss", out=tmp_path / "plugin")
    assert path == tmp_path / "plugin" / "loss.json"
    assert evoloss.load_loss(path).spec == result.best["spec"]
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before  # queries and export wrote nothing there


def test_export_of_a_spec_needs_an_out_directory(tmp_path):
    spec = evoloss.LossSpec("gce", {"q": 0.5})
    with pytest.raises(ConfigError, match="out"):
        evoloss.export(spec)
    path = evoloss.export(spec, out=tmp_path / "g", name="my_gce")
    assert evoloss.load_loss(path).spec == spec and (tmp_path / "g" / "my_gce.py").is_file()
    with pytest.raises(ConfigError, match="pick"):
        evoloss.export(tmp_path, pick="median")


def test_compare_validates_before_writing(tmp_path):
    with pytest.raises(ConfigError):
        api.prepare_compare("quick", out=tmp_path / "c", overrides={"train.epochz": 1})
    with pytest.raises(ConfigError, match="compare preset"):
        api.prepare_compare("nope", out=tmp_path / "c")
    assert not (tmp_path / "c").exists()
    with pytest.raises(FileNotFoundError):
        evoloss.CompareResult(tmp_path / "c")
