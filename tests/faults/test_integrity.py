"""Integrity checks of a resume and of every read (docs/RELIABILITY.md "Exact resume"): an edited
config, a version change, a part that does not match the schema, an older schema, a gap, fewer
generations than are done, an edited state. Each is refused before any compute, naming what is wrong."""
from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from evoloss.results.parts import ADDED_IN_SCHEMA_2
from evoloss.search.cli import main
from tests.faults.helpers import in_process_pool, snapshot, write_config


@contextlib.contextmanager
def no_compute(cluster, run_dir, *, address=None):
    raise AssertionError("a refused resume started the evaluation pool")
    yield  # pragma: no cover


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A search of 2 complete generations (in-process pool)."""
    folder = tmp_path_factory.mktemp("base")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("evoloss.search.engine.evaluation_pool", in_process_pool)
        cfg = write_config(folder, **{"generations = 3": "generations = 2"})
        assert main(["search", str(cfg), "--out", str(folder / "run")]) == 0
    return folder / "run"


@pytest.fixture()
def run(finished_run: Path, tmp_path: Path, monkeypatch) -> Path:
    """A copy of the finished run, resumed here only through a pool that must never start."""
    monkeypatch.setattr("evoloss.search.engine.evaluation_pool", no_compute)
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


def refused(args: list[str], capsys, run: Path) -> str:
    before = snapshot(run)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert snapshot(run) == before  # nothing written
    return err


def test_an_edited_config_is_refused_naming_the_key(run: Path, capsys) -> None:
    config = run / "config.toml"
    config.write_text(config.read_text().replace("epochs = 2", "epochs = 3"))
    err = refused(["search", "--resume", str(run), "--set", "search.generations=3"], capsys, run)
    assert "config train.epochs" in err and "was 2, now 3" in err


def test_the_cluster_and_the_generation_count_may_change(finished_run: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("evoloss.search.engine.evaluation_pool", in_process_pool)
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    config = copy / "config.toml"
    config.write_text(config.read_text().replace("num_cpus = 2", "num_cpus = 1"))
    assert main(["search", "--resume", str(copy), "--set", "search.generations=3"]) == 0


def test_a_version_change_needs_allowing_and_is_recorded(finished_run: Path, tmp_path: Path, monkeypatch,
                                                         capsys) -> None:
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    saved = json.loads((copy / "state" / "gen-000001.json").read_text())["versions"]
    monkeypatch.setattr("evoloss.search.run_dir.current_versions", lambda: {**saved, "torch": "99.0"})
    monkeypatch.setattr("evoloss.search.engine.evaluation_pool", no_compute)
    err = refused(["search", "--resume", str(copy), "--set", "search.generations=3"], capsys, copy)
    assert f"torch {saved['torch']} -> 99.0" in err and "--allow-version-change" in err
    monkeypatch.setattr("evoloss.search.engine.evaluation_pool", in_process_pool)
    assert main(["search", "--resume", str(copy), "--set", "search.generations=3", "--allow-version-change"]) == 0
    rows = pd.read_parquet(copy / "evaluations")
    assert set(rows[rows.generation < 2].version_change) == {""}
    assert set(rows[rows.generation == 2].version_change) == {f"torch {saved['torch']} -> 99.0"}
    assert json.loads((copy / "state" / "gen-000002.json").read_text())["versions"]["torch"] == "99.0"


def _rewrite(path: Path, change) -> None:
    table = pq.read_table(path)
    pq.write_table(change(table), path)


def test_a_part_missing_a_column_names_the_file(run: Path, capsys) -> None:
    part = run / "evaluations" / "gen-000001.parquet"
    _rewrite(part, lambda t: t.drop_columns(["status"]))
    for args in (["status", str(run)], ["search", "--resume", str(run), "--set", "search.generations=3"]):
        err = refused(args, capsys, run)
        assert str(part) in err and "column 'status'" in err and "missing" in err


def test_a_column_of_the_wrong_type_names_the_file(run: Path, capsys) -> None:
    part = run / "generations" / "gen-000000.parquet"
    _rewrite(part, lambda t: t.set_column(t.schema.get_field_index("sigma"), pa.field("sigma", pa.string()),
                                          pa.array(["x"] * t.num_rows)))
    err = refused(["status", str(run)], capsys, run)
    assert str(part) in err and "column 'sigma' is string" in err and "double" in err


def _as_schema_1(table: pa.Table) -> pa.Table:
    table = table.drop_columns(list(ADDED_IN_SCHEMA_2))
    table = table.set_column(table.schema.get_field_index("schema_version"), "schema_version",
                             pa.array([1] * table.num_rows, pa.int64()))
    meta = {**table.schema.metadata, b"evoloss.schema_version": b"1"}
    return table.replace_schema_metadata(meta)


def test_rows_of_schema_1_are_read_but_never_resumed(run: Path, capsys) -> None:
    for part in sorted((run / "evaluations").glob("gen-*.parquet")):
        _rewrite(part, _as_schema_1)
    from evoloss.search.api import SearchResult

    rows = SearchResult(run).evaluations()
    assert set(rows.schema_version) == {1} and set(rows.fidelity) == {1.0} and set(rows.version_change) == {""}
    assert main(["status", str(run)]) == 0
    err = refused(["search", "--resume", str(run), "--set", "search.generations=3"], capsys, run)
    assert "record schema 1" in err and "start a new run" in err


@pytest.mark.parametrize("missing", ["evaluations/gen-000000.parquet", "state/gen-000000.json",
                                     "generations/gen-000000.parquet"])
def test_a_gap_is_found_before_any_compute(run: Path, capsys, missing: str) -> None:
    (run / missing).unlink()
    err = refused(["search", "--resume", str(run), "--set", "search.generations=3"], capsys, run)
    assert "has a gap" in err and str(run / missing) in err


def test_fewer_generations_than_done_is_refused(run: Path, capsys) -> None:
    err = refused(["search", "--resume", str(run), "--set", "search.generations=1"], capsys, run)
    assert "search.generations" in err and "below the 2 generations" in err


def test_an_edited_state_is_refused(run: Path, capsys) -> None:
    path = run / "state" / "gen-000001.json"
    state = json.loads(path.read_text())
    state["config"]["train"]["epochs"] = 3
    path.write_text(json.dumps(state))
    err = refused(["search", "--resume", str(run), "--set", "search.generations=3"], capsys, run)
    assert "config_hash" in err and str(run) in err
