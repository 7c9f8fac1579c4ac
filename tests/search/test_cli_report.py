"""``evoloss report``: the files it writes, its summary, and one line + exit 2 for a bad run dir."""
from __future__ import annotations

from pathlib import Path

import pytest
from matplotlib.image import imread

from evoloss.results.store import ParquetStore
from evoloss.search.cli import COMMANDS, main
from tests.results.report_rows import write_compare_run, write_search_run


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_report_is_registered() -> None:
    assert "evoloss.search.commands.report" in COMMANDS


def test_compare_run_report_in_the_default_place(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = write_compare_run(tmp_path / "run")
    assert main(["report", str(run)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:2] == ["method", "kind"] and out[1].split()[0] == "ce"
    assert out[-1] == f"wrote {run / 'report' / 'report.md'} (3 figures; compare run)"
    assert sorted(p.name for p in (run / "report").iterdir()) == [
        "accuracy_vs_noise.png", "learning_curves.png", "loss_shapes.png", "report.md"]
    assert imread(run / "report" / "learning_curves.png")[..., :3].std() > 0.05


def test_out_option_and_byte_identical_reruns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = write_search_run(tmp_path / "run", generations=3, popsize=4)
    first, second = tmp_path / "r1", tmp_path / "deep" / "r2"
    assert main(["report", str(run), "--out", str(first)]) == 0
    assert main(["report", str(run), "--out", str(second)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("search: best fitness ") and lines[-1].endswith("(2 figures; search run)")
    assert (first / "report.md").read_bytes() == (second / "report.md").read_bytes()
    assert not (run / "report").exists()


@pytest.mark.parametrize(
    "make,match",
    [
        ("missing", "does not exist"),
        ("empty-dir", "has no evaluation or generation rows"),
        ("empty-store", "has no evaluation or generation rows"),
        ("file", "is not a directory"),
    ],
)
def test_bad_run_dir_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: str, match: str
) -> None:
    run = tmp_path / "runs" / "r-1"
    if make == "empty-dir":
        run.mkdir(parents=True)
    elif make == "empty-store":
        ParquetStore(run)
    elif make == "file":
        run.parent.mkdir()
        run.write_text("not a run")
    before = _tree(tmp_path)
    code = main(["report", str(run)])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("evoloss report: error: run dir ")
    assert f"{str(run)!r}" in captured.err and match in captured.err
    assert _tree(tmp_path) == before  # nothing created, not even the run dir's folders


@pytest.mark.parametrize(
    "argv,match",
    [
        (["--classes", "1"], "num_classes must be an integer >= 2; got 1"),
        (["--out", "{run}/evaluations/gen-000000.parquet"], "exists and is not a directory"),
    ],
    ids=["one-class", "out-is-a-file"],
)
def test_bad_options_are_one_line_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], match: str
) -> None:
    run = write_compare_run(tmp_path / "run")
    before = _tree(tmp_path)
    code = main(["report", str(run), *(a.format(run=run) for a in argv)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and match in err
    assert _tree(tmp_path) == before


def test_unknown_metric_is_an_argparse_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["report", str(tmp_path), "--metric", "accuracy"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and "invalid choice: 'accuracy'" in err
