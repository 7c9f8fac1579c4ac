"""Bounds first (docs/RELIABILITY.md "Hostile input"): every numeric value that could exhaust memory or
time has an upper bound, every check (the cluster address included) runs before the run directory
exists, and binary, non-UTF-8 or absurdly nested input is one line naming the file."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from evoloss.search.cli import main
from evoloss.search.config_fields import MAX_NESTING
from evoloss.search.preset_files import preset_names, preset_text
from tests.faults.helpers import TINY_TOML


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("key, value", [
    ("search.popsize", "5000"), ("search.sigma0", "1e6"), ("cluster.cpus_per_actor", "0.0001"),
    ("cluster.cpus_per_actor", "1000"), ("cluster.gpus_per_actor", "0.0001"), ("cluster.gpus_per_actor", "2"),
    ("cluster.num_cpus", "100000"), ("cluster.timeout_s", "1e12"), ("cluster.address", '"not-an-address"'),
    ("cluster.address", '"127.0.0.1:99999"'),
])
def test_each_bound_is_checked_before_the_run_directory_exists(tmp_path: Path, capsys, key: str, value: str) -> None:
    run = tmp_path / "run"
    assert main(["search", "--preset", "quick", "--out", str(run), "--set", f"{key}={value}"]) == 2
    assert f"config {key}" in one_line(capsys)
    assert not run.exists()


def test_the_address_argument_is_checked_before_the_run_directory_exists(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    assert main(["search", "--preset", "quick", "--out", str(run), "--address", "nowhere"]) == 2
    assert "config address" in one_line(capsys) and not run.exists()


def test_a_compare_bound_is_checked_before_the_run_directory_exists(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    assert main(["compare", "--preset", "quick", "--out", str(run), "--set", "cluster.cpus_per_actor=0.0001"]) == 2
    assert "config cluster.cpus_per_actor" in one_line(capsys) and not run.exists()


def test_the_classes_of_a_loss_shape_figure_are_bounded(tmp_path: Path, capsys) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"family": "ce", "params": {}}))
    assert main(["plot-loss", str(spec), "--out", str(tmp_path / "fig.png"), "--classes", "100000000"]) == 2
    assert "num_classes must be at most" in one_line(capsys) and not (tmp_path / "fig.png").exists()


def test_the_shipped_configs_are_within_the_nesting_bound() -> None:
    from evoloss.search.config_fields import check_nesting, read_toml

    for kind in ("search", "compare"):
        for name in preset_names(kind):
            check_nesting(read_toml(preset_text(kind, name), name), name)


@pytest.mark.parametrize("depth", [MAX_NESTING + 1, 50_000])
def test_a_deeply_nested_toml_file_is_one_line(tmp_path: Path, capsys, depth: int) -> None:
    cfg = tmp_path / "deep.toml"
    cfg.write_text(TINY_TOML + "\n[output]\nrun_dir = " + "[" * depth + "]" * depth + "\n")
    assert main(["search", str(cfg), "--out", str(tmp_path / "run")]) == 2
    err = one_line(capsys)
    assert str(cfg) in err and "deep" in err and not (tmp_path / "run").exists()


def test_a_deeply_nested_json_spec_is_one_line(tmp_path: Path, capsys) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text("[" * 200_000 + "]" * 200_000)
    assert main(["plot-loss", str(spec), "--out", str(tmp_path / "fig.png")]) == 2
    err = one_line(capsys)
    assert str(spec) in err and "deep" in err and not (tmp_path / "fig.png").exists()


def test_a_deeply_nested_config_as_data_is_one_error() -> None:
    from evoloss.search.api import resolve_search_config
    from evoloss.search.config_fields import ConfigError

    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(ConfigError, match="more than 16"):
        resolve_search_config({"search": {"x0": deep}})


@pytest.mark.parametrize("content", [b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe",
                                     "[search]\nfamily = 'gce'\n".encode("utf-16")])
def test_a_binary_or_non_utf8_config_names_the_file(tmp_path: Path, capsys, content: bytes) -> None:
    cfg = tmp_path / "image.toml"
    cfg.write_bytes(content)
    assert main(["search", str(cfg), "--out", str(tmp_path / "run")]) == 2
    err = one_line(capsys)
    assert str(cfg) in err and "not UTF-8" in err and not (tmp_path / "run").exists()


def test_a_binary_run_config_names_the_file(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_bytes(b"\xff\xd8\xff\xe0 binary")
    assert main(["status", str(run)]) == 2
    assert str(run / "config.toml") in one_line(capsys)
