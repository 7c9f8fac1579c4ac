"""Store queries (`results.queries`) and the read-only store (`ParquetStore.open_read_only`)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from evoloss.losses import LossSpec
from evoloss.results.queries import best_candidate, run_progress
from evoloss.results.store import MemoryStore, ParquetStore
from tests.results.test_store import eval_row, gen_row


def _filled(store: MemoryStore | ParquetStore) -> MemoryStore | ParquetStore:
    """Two complete generations (best fitness 0.6 at generation 0, candidate 1) and an incomplete one."""
    for g, best in ((0, 0.6), (1, 0.5)):
        rows = [eval_row(g, c, params={"q": 0.1 * (c + 1)}) for c in range(2)]
        rows[1]["status"] = "failed" if g == 1 else "ok"
        store.append(g, rows, gen_row(g, best_fitness=best, best_candidate=1, best_params={"q": 0.2},
                                      sigma=0.5 - 0.1 * g, evaluations=2, wall_s=4.0))
        store.save_state(g, {"generation": g})
    store.append(2, [eval_row(2, 0)], gen_row(2, best_fitness=0.9, best_candidate=0, evaluations=1))
    return store


def test_best_candidate_and_progress_read_complete_generations_only() -> None:
    store = _filled(MemoryStore())
    spec, fitness, generation, candidate = best_candidate(store, "last")
    assert spec == LossSpec(eval_row(0, 1)["family"], {"q": 0.2}) and (fitness, generation, candidate) == (0.6, 0, 1)
    progress = run_progress(store)
    assert progress["generations_done"] == 2 and progress["evaluations"] == 4
    assert progress["status_counts"] == {"failed": 1, "ok": 3}
    assert progress["last_sigma"] == pytest.approx(0.4) and progress["evals_per_s"] == pytest.approx(0.5)


def test_queries_of_an_empty_store() -> None:
    assert best_candidate(MemoryStore(), "last") is None
    assert run_progress(MemoryStore()) == {"generations_done": 0, "evaluations": 0, "status_counts": {},
                                           "last_sigma": None, "evals_per_s": None}


def test_read_only_store_keeps_in_flight_temp_files(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _filled(ParquetStore(run))
    in_flight = run / "evaluations" / ".gen-000003.parquet.tmp-abc123"
    in_flight.write_bytes(b"half a part")
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    store = ParquetStore.open_read_only(run)
    assert store.generations_done() == [0, 1] and len(store.read()) == 5 and len(store.read(complete_only=True)) == 4
    assert best_candidate(store, "last")[1:] == (0.6, 0, 1) and store.load_state() == (1, {"generation": 1})
    assert in_flight.read_bytes() == b"half a part"
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before


def test_read_only_store_creates_nothing_and_refuses_writes(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    store = ParquetStore.open_read_only(empty)
    assert store.generations_done() == [] and store.read().empty and store.load_state() is None
    assert run_progress(store)["generations_done"] == 0
    with pytest.raises(PermissionError, match="read-only"):
        store.append(0, [eval_row(0, 0)], gen_row(0))
    with pytest.raises(PermissionError, match="read-only"):
        store.save_state(0, {})
    assert list(empty.iterdir()) == []


def test_read_only_store_of_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope"))):
        ParquetStore.open_read_only(tmp_path / "nope")
    assert not (tmp_path / "nope").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="not a directory"):
        ParquetStore.open_read_only(tmp_path / "file")
