"""`status` and `export` on a compare run say that it is one and which commands apply
(docs/RELIABILITY.md "Hostile input")."""
from __future__ import annotations

from pathlib import Path

import pytest

from evoloss.search.cli import main
from tests.results.report_rows import write_compare_run


@pytest.fixture()
def compare_run(tmp_path: Path) -> Path:
    run = write_compare_run(tmp_path / "cmp")
    (run / "config.toml").write_text('[compare]\nmetric_rule = "last"\n\n[[methods]]\nname = "ce"\nkind = "loss"\n'
                                     'family = "ce"\n')
    return run


@pytest.mark.parametrize("command", [["status"], ["status", "--json"], ["export"], ["search", "--resume"]])
def test_a_compare_run_is_named_and_the_commands_that_apply_are_given(compare_run: Path, capsys, command) -> None:
    before = sorted(p.name for p in compare_run.rglob("*"))
    args = [command[0], *command[1:], str(compare_run)] if command[0] != "search" else [*command, str(compare_run)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "is a compare run" in err and f"evoloss report {compare_run}" in err and "apply to search runs" in err
    assert sorted(p.name for p in compare_run.rglob("*")) == before
