"""Contract tests run on every ResultStore implementation, plus the Parquet crash cases."""
from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from evoloss.results.schema import (
    EVAL_SCHEMA,
    GENERATION_SCHEMA,
    SCHEMA_VERSION,
    STATUSES,
    rows_to_table,
)
from evoloss.results.store import MemoryStore, ParquetStore, ResultStore
from evoloss.workers.records import EVAL_RECORD_FIELDS, STATUSES as RECORD_STATUSES, EvalRecord


def eval_row(generation: int, candidate: int, **over: object) -> dict:
    """A valid evaluation row built the documented way: EvalRecord.to_dict() + run/task fields."""
    record = EvalRecord(family="gce", params={"q": 0.7}, val_acc_last=0.5 + 0.01 * candidate,
                        val_acc_best=0.6, curve_val=[0.4, 0.5], extra={"lam": [1.0, math.nan]})
    row = record.to_dict()
    row.update(
        run_id="r1", generation=generation, candidate=candidate, method="", method_kind="",
        dataset="digits", arch="mlp2", noise_type="symmetric", noise_rate=0.8, noise_convention="exact",
        noise_rate_realised=0.79, seed=0, task_key="digits/mlp2/symmetric0.8-exact/s0", host="h",
        metric_rule="last", fitness_metric="val_acc_last", evoloss_version="0.1.0",
        torch_version="2.14.1", schema_version=SCHEMA_VERSION, fitness_rule="", version_change="",
    )
    row.update(over)
    return row


def gen_row(generation: int, **over: object) -> dict:
    row = dict(
        run_id="r1", generation=generation, best_fitness=0.6, mean_fitness=0.5, median_fitness=0.5,
        best_candidate=1, best_params={"q": 0.7}, sigma=0.5, evaluations=2, failed=0, evals_per_s=1.0,
        wall_s=2.0, grid_subset=["digits/mlp2/symmetric0.8-exact/s0"],
        timestamp=datetime(2025, 1, 1, tzinfo=timezone.utc),
    )
    row.update(over)
    return row


def put(store: ResultStore, generation: int, n: int = 2, state: bool = True) -> None:
    store.append(generation, [eval_row(generation, c) for c in range(n)], gen_row(generation))
    if state:
        store.save_state(generation, {"generation": generation, "mean": [0.1 * generation, 1.0]})


# --- schema ----------------------------------------------------------------------------------
def test_eval_record_fields_are_columns() -> None:
    assert set(EVAL_RECORD_FIELDS) <= set(EVAL_SCHEMA.names)
    assert STATUSES == RECORD_STATUSES


def test_rows_to_table_converts_record_dicts() -> None:
    table = rows_to_table([eval_row(0, 0)])
    assert table.schema.equals(EVAL_SCHEMA, check_metadata=True)
    assert json.loads(table.column("params")[0].as_py()) == {"q": 0.7}
    assert json.loads(table.column("extra")[0].as_py()) == {"lam": [1.0, None]}  # NaN -> null
    assert table.column("curve_val")[0].as_py() == [0.4, 0.5]
    assert table.schema.metadata[b"evoloss.schema_version"] == str(SCHEMA_VERSION).encode()


@pytest.mark.parametrize(
    "column, value, exc, words",
    [
        ("generation", 1.5, TypeError, "integer"),
        ("generation", True, TypeError, "integer"),
        ("val_acc_last", "0.5", TypeError, "number"),
        ("val_acc_last", None, TypeError, "number"),
        ("family", 3, TypeError, "string"),
        ("curve_val", "0.1", TypeError, "list"),
        ("curve_val", [0.1, "x"], TypeError, "number"),
        ("status", "crashed", ValueError, "not one of"),
        ("method_kind", "evolution", ValueError, "not one of"),
        ("params", "{bad json", ValueError, "not valid JSON"),
        ("params", {"q": object()}, TypeError, "JSON"),
    ],
)
def test_rows_to_table_wrong_type_names_column(column: str, value: object, exc: type, words: str) -> None:
    with pytest.raises(exc, match=words) as info:
        rows_to_table([eval_row(0, 0), {**eval_row(0, 1), column: value}])
    assert repr(column) in str(info.value) and "row 1" in str(info.value)


def test_rows_to_table_missing_and_unknown_columns() -> None:
    row = eval_row(0, 0)
    del row["task_key"]
    with pytest.raises(ValueError, match="missing column.*task_key"):
        rows_to_table([row])
    with pytest.raises(ValueError, match="unknown column 'val_acc_lst'.*val_acc_last"):
        rows_to_table([eval_row(0, 0, val_acc_lst=0.1)])
    with pytest.raises(TypeError, match="timezone-aware"):
        rows_to_table([gen_row(0, timestamp=datetime(2025, 1, 1))], GENERATION_SCHEMA)


# --- the contract, on every store ------------------------------------------------------------
STORES: dict[str, Callable[[Path], ResultStore]] = {
    "memory": lambda tmp: MemoryStore(),
    "parquet": lambda tmp: ParquetStore(tmp / "runs" / "r1"),
}


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ResultStore:
    return STORES[request.param](tmp_path)


def test_empty_store(store: ResultStore) -> None:
    assert store.load_state() is None and store.generations_done() == []
    assert list(store.read().columns) == EVAL_SCHEMA.names and len(store.read()) == 0
    assert list(store.read_generations().columns) == GENERATION_SCHEMA.names


def test_append_read_roundtrip(store: ResultStore) -> None:
    put(store, 0, n=3)
    put(store, 1, n=2)
    df = store.read()
    assert list(df.columns) == EVAL_SCHEMA.names
    assert df["generation"].tolist() == [0, 0, 0, 1, 1] and df["candidate"].tolist() == [0, 1, 2, 0, 1]
    assert df["val_acc_last"].tolist() == pytest.approx([0.5, 0.51, 0.52, 0.5, 0.51])
    assert list(df["curve_val"].iloc[0]) == [0.4, 0.5]
    gens = store.read_generations()
    assert gens["generation"].tolist() == [0, 1] and gens["timestamp"].iloc[0].tzinfo is not None
    assert store.generations_done() == [0, 1]
    assert store.load_state() == (1, {"generation": 1, "mean": [0.1, 1.0]})


def test_state_missing_means_incomplete_and_reappend_overwrites(store: ResultStore) -> None:
    put(store, 0)
    put(store, 1, n=3, state=False)  # "crash" after the rows, before the state
    assert store.load_state() == (0, {"generation": 0, "mean": [0.0, 1.0]})
    assert store.generations_done() == [0]
    assert len(store.read()) == 5 and len(store.read(complete_only=True)) == 2
    put(store, 1, n=2)  # the re-run of generation 1
    df = store.read()
    assert len(df) == 4 and df.duplicated(["generation", "candidate"]).sum() == 0
    assert store.read_generations()["generation"].tolist() == [0, 1]
    assert store.load_state()[0] == 1


def test_append_is_all_or_nothing(store: ResultStore) -> None:
    put(store, 0)
    with pytest.raises(TypeError, match="val_acc_best"):
        store.append(1, [eval_row(1, 0), eval_row(1, 1, val_acc_best="x")], gen_row(1))
    with pytest.raises(ValueError, match="missing column"):
        store.append(1, [eval_row(1, 0)], {k: v for k, v in gen_row(1).items() if k != "sigma"})
    assert len(store.read()) == 2 and len(store.read_generations()) == 1


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda s: s.append(0, [eval_row(0, 0)], gen_row(0)), "already complete"),
        (lambda s: s.append(1, [eval_row(2, 0)], gen_row(1)), "one generation at a time"),
        (lambda s: s.append(1, [eval_row(1, 0)], gen_row(3)), "generation_row"),
        (lambda s: s.append(-1, [], gen_row(-1)), "non-negative"),
        (lambda s: s.save_state(5, {}), "append generation 5"),
        (lambda s: s.save_state(0, {"x": math.nan}), "strict JSON"),
        (lambda s: s.save_state(0, {"x": object()}), "strict JSON"),
    ],
)
def test_bad_calls_raise_clearly(store: ResultStore, call: Callable, words: str) -> None:
    put(store, 0)
    with pytest.raises((ValueError, TypeError), match=words):
        call(store)


def test_load_state_is_a_copy(store: ResultStore) -> None:
    put(store, 0)
    _, state = store.load_state()
    state["mean"].append(99.0)
    assert store.load_state()[1]["mean"] == [0.0, 1.0]


def test_empty_generation_allowed(store: ResultStore) -> None:
    store.append(0, [], gen_row(0, evaluations=0, best_fitness=math.nan, best_candidate=-1))
    store.save_state(0, {})
    assert len(store.read()) == 0 and math.isnan(store.read_generations()["best_fitness"].iloc[0])


# --- Parquet specifics -----------------------------------------------------------------------
def test_parquet_layout_and_pandas_reads_the_folder(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "r1"
    store = ParquetStore(run)
    put(store, 0)
    put(store, 7, n=3)
    assert sorted(p.name for p in (run / "evaluations").iterdir()) == ["gen-000000.parquet", "gen-000007.parquet"]
    assert (run / "generations" / "gen-000007.parquet").exists() and (run / "state" / "gen-000007.json").exists()
    (run / "evaluations" / ".gen-000008.parquet.tmp-abc").write_bytes(b"half a file")  # crash residue
    df = pd.read_parquet(run / "evaluations")
    assert len(df) == 5 and set(df["generation"]) == {0, 7}
    metadata = pq.read_schema(run / "evaluations" / "gen-000007.parquet").metadata
    assert metadata[b"evoloss.kind"] == b"evaluations"
    reopened = ParquetStore(run)  # a new process resuming: residue removed, state found
    assert not list((run / "evaluations").glob(".*")) and reopened.load_state()[0] == 7


def test_parquet_crash_between_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ParquetStore(tmp_path / "r")
    put(store, 0)
    real = store._write_table

    def die_on_generation_row(directory: Path, generation: int, table: pa.Table) -> None:
        if directory == store.generations_dir:
            raise OSError("simulated crash")
        real(directory, generation, table)

    monkeypatch.setattr(store, "_write_table", die_on_generation_row)
    with pytest.raises(OSError):
        put(store, 1, n=4)
    monkeypatch.undo()
    resumed = ParquetStore(tmp_path / "r")
    assert resumed.load_state()[0] == 0 and resumed.generations_done() == [0]
    assert len(resumed.read()) == 6  # evaluations of gen 1 are on disk, gen 1 is incomplete
    with pytest.raises(ValueError, match="generation row"):
        resumed.save_state(1, {})
    put(resumed, 1, n=2)
    assert len(pd.read_parquet(tmp_path / "r" / "evaluations")) == 4
    assert resumed.generations_done() == [0, 1]


def test_parquet_rejects_file_as_run_dir(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        ParquetStore(tmp_path / "f")
