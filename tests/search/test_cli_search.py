"""`evoloss search|status|export` argument and config errors: one line, exit 2, nothing written."""
from __future__ import annotations

from pathlib import Path

import pytest

from evoloss.search.cli import main


def _write(tmp_path: Path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


BAD_TOML = {
    "unknown_section": ("[serch]\nfamily='gce'\n", "serch"),
    "unknown_key": ("[search]\npopsiz=4\n", "popsiz"),
    "bad_family": ("[search]\nfamily='gcee'\n", "gcee"),
    "family_without_params": ("[search]\nfamily='ce'\n", "search.family"),
    "popsize_too_small": ("[search]\npopsize=1\n", "search.popsize"),
    "sigma_negative": ("[search]\nsigma0=-1.0\n", "search.sigma0"),
    "popsize_string": ("[search]\npopsize='many'\n", "search.popsize"),
    "noise_rate_above_one": ("[grid]\nnoise=[{type='symmetric', rate=1.5}]\n", "grid.noise[0].rate"),
    "noise_type_unknown": ("[grid]\nnoise=[{type='symetric', rate=0.4}]\n", "grid.noise[0].type"),
    "dataset_unknown": ("[grid]\ndatasets=['digitz']\n", "digitz"),
    "arch_unknown": ("[grid]\narchs=['mlp9']\n", "mlp9"),
    "metric_rule": ("[grid]\nmetric_rule='median'\n", "grid.metric_rule"),
    "epochs_zero": ("[train]\nepochs=0\n", "train.epochs"),
    "trainer_unknown": ("[train]\ntrainer='fast'\n", "train.trainer"),
    "gpus_fraction": ("[cluster]\ngpus_per_actor=1.5\n", "cluster.gpus_per_actor"),
    "invalid_toml": ("[search\npopsize=4\n", "TOML"),
}


@pytest.mark.parametrize("name", sorted(BAD_TOML))
def test_bad_config_is_one_line_exit_2_and_no_run_dir(name, tmp_path, capsys):
    text, needle = BAD_TOML[name]
    cfg = _write(tmp_path, "c.toml", text)
    out = tmp_path / "run"
    assert main(["search", cfg, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert needle in err, err
    assert not out.exists()


BAD_ARGS = {
    "no_config": ([], "exactly one of CONFIG.toml or --preset"),
    "both_config_and_preset": (["CFG", "--preset", "quick"], "exactly one"),
    "unknown_preset": (["--preset", "quik"], "quick"),
    "missing_file": (["nope.toml"], "does not exist"),
    "bad_override": (["--preset", "quick", "--set", "search.popsize"], "section.key=value"),
    "override_unknown_key": (["--preset", "quick", "--set", "search.sigma=2"], "did you mean 'sigma0'"),
    "resume_missing_dir": (["--resume", "RUN"], "does not exist"),
    "resume_with_config": (["CFG", "--resume", "RUN"], "drop CONFIG"),
    "bad_engine": (["--preset", "quick", "--engine", "fast"], "invalid choice"),
}


@pytest.mark.parametrize("name", sorted(BAD_ARGS))
def test_bad_arguments_are_one_line_exit_2(name, tmp_path, capsys):
    args, needle = BAD_ARGS[name]
    cfg = _write(tmp_path, "ok.toml", "[search]\nfamily='gce'\n")
    args = [a.replace("CFG", cfg).replace("RUN", str(tmp_path / "missing-run")) for a in args]
    with pytest.raises(SystemExit) if name == "bad_engine" else _no_raise() as exc:
        code = main(["search", *args, "--out", str(tmp_path / "run")])
    if name == "bad_engine":
        code = exc.value.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "run").exists()


def test_existing_run_dir_is_refused_without_resume(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "keep.txt").write_text("user data")
    cfg = _write(tmp_path, "ok.toml", "[search]\nfamily='gce'\n")
    assert main(["search", cfg, "--out", str(run)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == ["keep.txt"]


@pytest.mark.parametrize("command", ["status", "export"])
def test_status_and_export_of_a_missing_run(command, tmp_path, capsys):
    assert main([command, str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_export_of_a_directory_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    assert main(["export", str(tmp_path / "d")]) == 2
    assert "not an evoloss run directory" in capsys.readouterr().err


class _no_raise:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_resume_may_extend_generations_but_not_change_the_trajectory(tmp_path, capsys):
    import argparse

    from evoloss.search.api import prepare_search
    from evoloss.search.commands.search import add_arguments, api_arguments
    from evoloss.search.config import load_config
    from evoloss.search.run_dir import create_run_dir

    run = tmp_path / "run"
    create_run_dir(run, load_config(overrides={"search.family": "gce", "search.generations": 2}))
    assert main(["search", "--resume", str(run), "--set", "search.popsize=4"]) == 2
    err = capsys.readouterr().err
    assert "search.popsize" in err and "cannot change" in err and "search.generations" in err
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config, run_dir, resuming = prepare_search(
        **api_arguments(parser.parse_args(["--resume", str(run), "--set", "search.generations=5"])))
    assert resuming and run_dir == run and config.search.generations == 5 and config.search.family == "gce"
