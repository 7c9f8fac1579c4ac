"""The record store: where a run's evaluation rows, generation rows and search state live.

`ResultStore` states the contract; `MemoryStore` keeps everything in memory (unit tests);
`ParquetStore` writes one run directory::

    runs/<id>/evaluations/gen-000007.parquet   evaluation rows of generation 7 (results.schema)
    runs/<id>/generations/gen-000007.parquet   its generation row
    runs/<id>/state/gen-000007.json            the search state after generation 7 (JSON, no pickle)

``pandas.read_parquet("runs/<id>/evaluations")`` reads every evaluation row.
"""
from __future__ import annotations

import abc
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from evoloss.results.parts import check_part, read_part
from evoloss.results.schema import EVAL_SCHEMA, GENERATION_SCHEMA, rows_to_table

_GEN_FILE = re.compile(r"^gen-(\d{6,})\.(parquet|json)$")
_TMP_MARK = ".tmp-"


class ResultStore(abc.ABC):
    """Storage of a run, apart from the search (after optuna's ``BaseStorage`` contract).

    Contract, for every implementation (tests/results/test_store.py runs it on each):

    1. ``append(generation, eval_rows, generation_row)`` writes one generation at a time, all or
       nothing: every row is validated (`results.schema.rows_to_table`) before anything is written,
       every evaluation row and the generation row must carry ``generation``, and a generation that
       is already complete cannot be appended again (no silent rewrite of history).
    2. A generation is *complete* once ``save_state(generation, state)`` has run after its append.
       Write order is evaluations, generation row, then state; a generation that was appended
       (wholly or partly, e.g. a crash between files) but has no state is *incomplete*.
    3. Appending an incomplete generation again replaces its rows: never duplicates.
    4. ``load_state()`` returns ``(generation, state)`` of the last complete generation, or None.
       ``generations_done()`` lists the complete generations, ascending.
    5. ``read()`` / ``read_generations()`` return DataFrames with exactly the schema's columns, in
       generation order, rows of a generation in append order; incomplete generations are included
       unless ``complete_only=True``. An empty store gives empty frames with the same columns.
    6. State is JSON only: ``save_state`` rejects what ``json.dumps(allow_nan=False)`` rejects, and
       ``load_state`` returns a fresh copy (mutating it does not change the store).
    """

    @abc.abstractmethod
    def append(
        self, generation: int, eval_rows: Sequence[Mapping[str, Any]], generation_row: Mapping[str, Any]
    ) -> None:
        """Write the evaluation rows and the summary row of ``generation`` (see the contract)."""

    @abc.abstractmethod
    def read(self, *, complete_only: bool = False) -> pd.DataFrame:
        """Every evaluation row (see contract item 5)."""

    @abc.abstractmethod
    def read_generations(self, *, complete_only: bool = False) -> pd.DataFrame:
        """Every generation row (see contract item 5)."""

    @abc.abstractmethod
    def save_state(self, generation: int, state: Mapping[str, Any]) -> None:
        """Record the search state after ``generation``; this completes the generation."""

    @abc.abstractmethod
    def load_state(self) -> tuple[int, dict[str, Any]] | None:
        """``(generation, state)`` of the last complete generation, or None if there is none."""

    @abc.abstractmethod
    def generations_done(self) -> list[int]:
        """The complete generations, ascending."""

    @abc.abstractmethod
    def _appended(self) -> list[int]:
        """Generations with an evaluations part (complete or not), ascending."""

    # --- shared checks ------------------------------------------------------------------------
    def _prepare(
        self, generation: int, eval_rows: Sequence[Mapping[str, Any]], generation_row: Mapping[str, Any]
    ) -> tuple[pa.Table, pa.Table]:
        """Validate a generation before anything is written; return its two tables."""
        _check_generation(generation)
        done = self.generations_done()
        if generation in done:
            raise ValueError(
                f"generation {generation} is already complete (its state is saved); append the next "
                f"generation ({done[-1] + 1}) instead of rewriting history"
            )
        if isinstance(eval_rows, Mapping) or not isinstance(eval_rows, Sequence):
            raise TypeError(f"eval_rows must be a list of row dicts, got {type(eval_rows).__name__}")
        for i, row in enumerate(eval_rows):
            if isinstance(row, Mapping) and row.get("generation", generation) != generation:
                raise ValueError(
                    f"eval_rows[{i}]['generation']={row['generation']!r} but append() was called for "
                    f"generation {generation}; write one generation at a time"
                )
        if not isinstance(generation_row, Mapping):
            raise TypeError(f"generation_row must be a dict, got {type(generation_row).__name__}")
        if generation_row.get("generation", generation) != generation:
            raise ValueError(
                f"generation_row['generation']={generation_row['generation']!r} but append() was called "
                f"for generation {generation}"
            )
        return rows_to_table(eval_rows, EVAL_SCHEMA), rows_to_table([generation_row], GENERATION_SCHEMA)

    def _check_state(self, generation: int, state: Mapping[str, Any]) -> str:
        """The state as strict JSON text, after checking that its generation was appended."""
        _check_generation(generation)
        if generation not in self._appended():
            raise ValueError(f"save_state({generation}): append generation {generation} before saving its state")
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a dict, got {type(state).__name__}")
        try:
            return json.dumps(state, allow_nan=False, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"state of generation {generation} is not strict JSON ({exc}); store numbers, strings, "
                "lists and dicts only, with NaN/inf encoded as strings"
            ) from None


def _check_generation(generation: object) -> None:
    if isinstance(generation, bool) or not isinstance(generation, int) or generation < 0:
        raise ValueError(f"generation must be a non-negative int, got {generation!r}")


def _frame(tables: Sequence[pa.Table], schema: pa.Schema) -> pd.DataFrame:
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    return table.to_pandas()


class MemoryStore(ResultStore):
    """The in-memory store for unit tests; same contract as `ParquetStore`."""

    def __init__(self) -> None:
        self._evals: dict[int, pa.Table] = {}
        self._gens: dict[int, pa.Table] = {}
        self._states: dict[int, str] = {}

    def append(
        self, generation: int, eval_rows: Sequence[Mapping[str, Any]], generation_row: Mapping[str, Any]
    ) -> None:
        evals, gen = self._prepare(generation, eval_rows, generation_row)
        self._evals[generation] = evals
        self._gens[generation] = gen

    def _select(self, tables: dict[int, pa.Table], complete_only: bool) -> list[pa.Table]:
        keep = set(self.generations_done()) if complete_only else set(tables)
        return [tables[g] for g in sorted(tables) if g in keep]

    def read(self, *, complete_only: bool = False) -> pd.DataFrame:
        return _frame(self._select(self._evals, complete_only), EVAL_SCHEMA)

    def read_generations(self, *, complete_only: bool = False) -> pd.DataFrame:
        return _frame(self._select(self._gens, complete_only), GENERATION_SCHEMA)

    def save_state(self, generation: int, state: Mapping[str, Any]) -> None:
        self._states[generation] = self._check_state(generation, state)

    def load_state(self) -> tuple[int, dict[str, Any]] | None:
        done = self.generations_done()
        return (done[-1], json.loads(self._states[done[-1]])) if done else None

    def generations_done(self) -> list[int]:
        return sorted(g for g in self._states if g in self._evals and g in self._gens)

    def _appended(self) -> list[int]:
        return sorted(self._evals)


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable (POSIX); a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Any) -> None:
    """Write through ``write(fileobj)`` to a temp name beside ``path``, fsync, then os.replace.

    The temp name starts with '.' and ends in '.tmp-<random>' (not '.parquet'), so readers of the
    folder (pandas, pyarrow.dataset) never see a half-written file.

    Raises:
        OSError: the write failed (disk full, read-only file system, permission, a file where a folder
            should be); its message names ``path``, and nothing is left at ``path`` or beside it.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{_TMP_MARK}", dir=path.parent)
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise write_error(path, exc) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_error(path: Path, exc: OSError) -> OSError:
    """``exc`` as an OSError of the same kind whose message names ``path`` (``write()`` errors on a
    file descriptor carry no file name of their own)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    message = f"cannot write {str(path)!r}: {reason}"
    return type(exc)(exc.errno, message) if exc.errno is not None else type(exc)(message)


class ParquetStore(ResultStore):
    """A run directory of Parquet parts (one per generation and kind) and JSON state files.

    Every file is written to a temp name in its folder, fsync'd and renamed (`atomic_write`);
    temp files left by a crash are removed when the store is opened for writing. Open one writing
    store per run directory at a time (one coordinator owns a run); readers of a run that may be live
    (status, compare, report) use `open_read_only`, which creates and deletes nothing.
    """

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self._locate(run_dir)
        self.read_only = False
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise ValueError(f"run_dir {str(self.run_dir)!r} exists and is not a directory; pick another path")
        for d in (self.evaluations_dir, self.generations_dir, self.state_dir):
            d.mkdir(parents=True, exist_ok=True)
            for stale in d.glob(f".*{_TMP_MARK}*"):
                stale.unlink(missing_ok=True)

    @classmethod
    def open_read_only(cls, run_dir: str | os.PathLike[str]) -> ParquetStore:
        """The store of an existing run directory, for reading only: nothing is created or deleted.

        Safe on a live run: in-flight temp files are ignored (never removed), missing folders read as
        empty, and `append` / `save_state` raise PermissionError.

        Raises:
            FileNotFoundError: ``run_dir`` does not exist.
            NotADirectoryError: ``run_dir`` is a file.
        """
        store = cls.__new__(cls)
        store._locate(run_dir)
        store.read_only = True
        if not store.run_dir.exists():
            raise FileNotFoundError(f"run directory {str(store.run_dir)!r} does not exist; pass an existing run")
        if not store.run_dir.is_dir():
            raise NotADirectoryError(f"run_dir {str(store.run_dir)!r} is not a directory; pass a run directory")
        return store

    def _locate(self, run_dir: str | os.PathLike[str]) -> None:
        self.run_dir = Path(run_dir)
        self.evaluations_dir = self.run_dir / "evaluations"
        self.generations_dir = self.run_dir / "generations"
        self.state_dir = self.run_dir / "state"

    def _check_writable(self, what: str) -> None:
        if self.read_only:
            raise PermissionError(
                f"{what}: the store of {str(self.run_dir)!r} was opened read-only (ParquetStore.open_read_only); "
                "open it with ParquetStore(run_dir) to write (one writer per run)"
            )

    @staticmethod
    def _name(generation: int, suffix: str) -> str:
        return f"gen-{generation:06d}.{suffix}"

    @staticmethod
    def _listed(directory: Path, suffix: str) -> list[int]:
        if not directory.is_dir():  # a read-only store of a run that has not written this folder yet
            return []
        found = (_GEN_FILE.match(p.name) for p in directory.iterdir())
        return sorted(int(m.group(1)) for m in found if m and m.group(2) == suffix)

    def _write_table(self, directory: Path, generation: int, table: pa.Table) -> None:
        atomic_write(directory / self._name(generation, "parquet"), lambda fh: pq.write_table(table, fh))

    def append(
        self, generation: int, eval_rows: Sequence[Mapping[str, Any]], generation_row: Mapping[str, Any]
    ) -> None:
        self._check_writable(f"append({generation})")
        evals, gen = self._prepare(generation, eval_rows, generation_row)
        self._write_table(self.evaluations_dir, generation, evals)  # 1st: evaluations
        self._write_table(self.generations_dir, generation, gen)  # 2nd: the generation row

    def _read_dir(self, directory: Path, schema: pa.Schema, complete_only: bool) -> pd.DataFrame:
        """Every part of ``directory``, each checked against ``schema`` (`read_part`); a writing store
        refuses parts of an older schema, a read-only one reads them."""
        keep = set(self.generations_done()) if complete_only else None
        tables = [
            read_part(directory / self._name(g, "parquet"), schema, allow_older=self.read_only)
            for g in self._listed(directory, "parquet")
            if keep is None or g in keep
        ]
        return _frame(tables, schema)

    def check_parts(self, *, allow_older: bool = False) -> None:
        """Check every Parquet part of the run against the schema (`check_part`'s errors)."""
        for directory, schema in ((self.evaluations_dir, EVAL_SCHEMA), (self.generations_dir, GENERATION_SCHEMA)):
            for g in self._listed(directory, "parquet"):
                check_part(directory / self._name(g, "parquet"), schema, allow_older=allow_older)

    def check_history(self) -> None:
        """Every generation up to the last complete one is complete, and nothing lies beyond the next.

        A missing part or state file (a gap) would make a resume skip or redo history silently.

        Raises:
            ValueError: naming the first missing file and the complete generation after it.
        """
        files = {(d, suffix): set(self._listed(d, suffix)) for d, suffix in
                 ((self.evaluations_dir, "parquet"), (self.generations_dir, "parquet"), (self.state_dir, "json"))}
        last = max(files[(self.state_dir, "json")], default=-1)
        for g in range(last + 1):
            for (directory, suffix), present in files.items():
                if g not in present:
                    raise ValueError(
                        f"run {str(self.run_dir)!r} has a gap: {str(directory / self._name(g, suffix))!r} is missing "
                        f"although generation {last} is complete; restore the file, or start a new run")
        for (directory, suffix), present in files.items():
            beyond = sorted(g for g in present if g > last + 1)
            if beyond:
                raise ValueError(
                    f"run {str(self.run_dir)!r} has a gap: {str(directory / self._name(beyond[0], suffix))!r} exists "
                    f"but generation {last + 1} is not complete; restore the missing files, or start a new run")

    def read(self, *, complete_only: bool = False) -> pd.DataFrame:
        return self._read_dir(self.evaluations_dir, EVAL_SCHEMA, complete_only)

    def read_generations(self, *, complete_only: bool = False) -> pd.DataFrame:
        return self._read_dir(self.generations_dir, GENERATION_SCHEMA, complete_only)

    def save_state(self, generation: int, state: Mapping[str, Any]) -> None:
        self._check_writable(f"save_state({generation})")
        text = self._check_state(generation, state)
        if generation not in self._listed(self.generations_dir, "parquet"):
            raise ValueError(
                f"save_state({generation}): generation {generation} has no generation row; append it again"
            )
        atomic_write(self.state_dir / self._name(generation, "json"), lambda fh: fh.write(text.encode()))  # 3rd

    def load_state(self) -> tuple[int, dict[str, Any]] | None:
        done = self.generations_done()
        if not done:
            return None
        path = self.state_dir / self._name(done[-1], "json")
        try:
            return done[-1], json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"state file {str(path)!r} is not valid JSON ({exc.msg}); delete it to resume from the generation before"
            ) from None

    def generations_done(self) -> list[int]:
        evals = set(self._listed(self.evaluations_dir, "parquet"))
        gens = set(self._listed(self.generations_dir, "parquet"))
        return [g for g in self._listed(self.state_dir, "json") if g in evals and g in gens]

    def _appended(self) -> list[int]:
        return self._listed(self.evaluations_dir, "parquet")
