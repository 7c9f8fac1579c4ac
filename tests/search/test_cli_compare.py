"""``evoloss compare``: bad input is one line, exit 2 and no run directory; a run writes rows, the
resolved config and the summary (in-process pool), and once through a real local Ray (marked)."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import pytest

from evoloss.search.cli import build_parser, main
from evoloss.search.compare_config import load_compare_config, resolved_compare_toml
from evoloss.search.local_pool import InProcessPool

TINY = """
[compare]
meta_per_class = 5

[train]
epochs = 1
max_train = 100

[[methods]]
name = "ce"
kind = "loss"
family = "ce"

[[methods]]
name = "gce-tuned"
kind = "tuned"
family = "gce"
grid = {q = [0.3, 0.9]}

[[methods]]
name = "evolved"
kind = "search"
run_dir = "no/such/run"

[[methods]]
name = "l2b"
kind = "trainer"
trainer = "l2b"

[[tasks]]
name = "seen"
datasets = ["digits"]
noise = [{type = "symmetric", rate = 0.8, convention = "exact"}]
seeds = [0]

[[tasks]]
name = "held-out"
heldout = true
datasets = ["digits"]
noise = [{type = "asymmetric", rate = 0.4, convention = "pairflip"}]
seeds = [0]
"""


def _config(tmp_path: Path, text: str = TINY) -> Path:
    path = tmp_path / "compare.toml"
    path.write_text(text)
    return path


def test_compare_is_a_listed_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["compare", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--preset" in out and "--address" in out and "--set" in out and "quick" in out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--set", "compare.metric_rul=best"], "config compare: unknown key 'metric_rul'; did you mean 'metric_rule'"),
        (["--set", "methods.evolvd.run_dir=x"], "names no entry of methods, got 'evolvd'; did you mean 'evolved'"),
        (["--set", "train.epochs=0"], "config train.epochs: must be >= 1, got 0"),
        (["--set", "methods.l2b.options={variant = 'x'}"], "config methods[3].options: rejected by trainer 'l2b'"),
        (["--preset", "quick"], "give exactly one of CONFIG.toml or --preset NAME"),
    ],
    ids=["unknown-key", "unknown-method", "bad-epochs", "bad-trainer-option", "config-and-preset"],
)
def test_bad_input_is_one_line_exit_2_and_no_run_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     extra: list[str], message: str) -> None:
    out = tmp_path / "run"
    code = main(["compare", str(_config(tmp_path)), "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("evoloss compare: error: ") and message in err, err
    assert not out.exists()


def test_bad_preset_missing_file_and_used_run_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("an earlier run")
    cases = [(["--preset", "quik"], "config --preset: is not registered, got 'quik'; did you mean 'quick'"),
             ([str(tmp_path / "nope.toml")], "does not exist"),
             ([], "give exactly one of CONFIG.toml or --preset NAME"),
             (["--preset", "quick", "--out", str(used)], "already exists and is not empty")]
    for argv, message in cases:
        assert main(["compare", *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    assert sorted(p.name for p in used.iterdir()) == ["keep.txt"]


def test_preset_quick_resolves_to_the_compare_preset(tmp_path: Path) -> None:
    from evoloss.search.api import prepare_compare
    from evoloss.search.cli import config_argument

    args = build_parser().parse_args(["compare", "--preset", "quick", "--out", str(tmp_path / "r")])
    config, run_dir = prepare_compare(config_argument(args, "compare"), out=args.out,
                                      overrides={"methods.evolved.run_dir": "runs/other"})
    names = {m.name for m in config.methods}
    assert names >= {"ce", "gce", "sce", "nce+mae", "evolved", "l2b", "mwnet", "adaptive-gce"}
    assert config.methods[5].run_dir == "runs/other" and run_dir == tmp_path / "r" and not run_dir.exists()


@contextlib.contextmanager
def _in_process_pool(cluster: Any, run_dir: Path, *, address: str | None = None) -> Iterator[InProcessPool]:
    yield InProcessPool()


def test_a_compare_run_writes_rows_config_and_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("evoloss.search.engine.evaluation_pool", _in_process_pool)
    config_file = _config(tmp_path, TINY.replace('[[methods]]\nname = "l2b"\nkind = "trainer"\ntrainer = "l2b"\n', ""))
    out = tmp_path / "run"
    assert main(["compare", str(config_file), "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    rows = pd.read_parquet(out / "evaluations")
    assert len(rows) == 3 * 2 and list(rows["method"][:3]) == ["ce", "gce-tuned", "evolved"]
    assert set(rows[rows["method"] == "evolved"]["status"]) == {"failed"}
    assert set(rows[rows["method"] != "evolved"]["status"]) == {"ok"}
    assert [json.loads(e)["split"] for e in rows["extra"]] == ["seen"] * 3 + ["held-out"] * 3
    summary = (out / "summary.txt").read_text()
    assert summary.strip() in stdout and "failed: unresolved search" in summary
    reloaded = load_compare_config(out / "config.toml")
    assert resolved_compare_toml(reloaded) == (out / "config.toml").read_text()
    assert f"evoloss report {out}" in stdout


@pytest.mark.integration
@pytest.mark.slow
def test_compare_through_the_real_ray_pool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r"
    code = main(["compare", str(_config(tmp_path)), "--out", str(out), "--set", "cluster.num_cpus=2"])
    assert code == 0, capsys.readouterr().err
    rows = pd.read_parquet(out / "evaluations")
    assert len(rows) == 4 * 2
    ok = rows[rows["method"] != "evolved"]
    assert set(ok["status"]) == {"ok"} and set(ok["trainer"]) == {"population", "l2b"}
    assert (ok["host"] != "").all() and set(rows[rows["method"] == "evolved"]["status"]) == {"failed"}
    assert "l2b" in (out / "summary.txt").read_text()
