"""Reading one Parquet part of a run, checked against the record schema first.

Every part (``evaluations/gen-NNNNNN.parquet``, ``generations/gen-NNNNNN.parquet``) carries its
record schema version and kind in its metadata (results/schema.py). `check_part` reads only the
footer and names the file and the column of any mismatch, so a damaged or foreign part is one clear
error rather than a pyarrow traceback or a silently different frame. Parts of record schema 1 (before
the schema-2 columns) read with those columns at their documented defaults; a store that writes
refuses them (`OlderSchemaError`), so one run never mixes schemas.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from evoloss.results.schema import SCHEMA_VERSION

# Evaluation columns that record schema 2 added, with the value a schema-1 row reads as
# (results/schema.py "Schema history"); generation rows did not change.
ADDED_IN_SCHEMA_2: dict[str, Any] = {"execution": "", "execution_note": "", "protocol": "", "clean_labels_used": 0,
                                     "fitness_rule": "", "fidelity": 1.0, "version_change": ""}


class OlderSchemaError(ValueError):
    """A Parquet part written with an older record schema (readable; never appended to)."""


def _part_error(path: Path, problem: str) -> ValueError:
    return ValueError(f"{str(path)!r}: {problem}; it is not a part this evoloss can read (move it aside, "
                      "or restore it from a copy)")


def _expected_schema(path: Path, found: pa.Schema, schema: pa.Schema) -> tuple[int, pa.Schema]:
    """(schema version, the columns a part of that version must have) from a part's metadata."""
    meta = found.metadata or {}
    kind = schema.metadata[b"evoloss.kind"]
    if meta.get(b"evoloss.kind", kind) != kind:
        raise _part_error(path, f"holds {meta[b'evoloss.kind'].decode()} rows where {kind.decode()} rows belong")
    raw = meta.get(b"evoloss.schema_version", str(SCHEMA_VERSION).encode()).decode()
    if not raw.isdigit() or not 1 <= int(raw) <= SCHEMA_VERSION:
        raise _part_error(path, f"says record schema {raw!r}, this evoloss reads schemas 1 to {SCHEMA_VERSION} "
                                "(a newer evoloss wrote it? upgrade evoloss)")
    version = int(raw)
    if version == 1 and kind == b"evaluations":
        keep = [f for f in schema if f.name not in ADDED_IN_SCHEMA_2]
        return version, pa.schema(keep, metadata=schema.metadata)
    return version, schema


def check_part(path: str | os.PathLike[str], schema: pa.Schema, *, allow_older: bool = True) -> tuple[int, pa.Schema]:
    """Check one ``gen-NNNNNN.parquet`` part's columns against ``schema`` (its footer only, no rows).

    Returns ``(record schema version, the columns a part of that version has)``.

    Raises:
        ValueError: the file is not Parquet, holds the other kind of rows, misses a column or has one
            of the wrong type or an unknown one; the message names the file and the column.
        OlderSchemaError: a part of an older record schema and not ``allow_older``.
    """
    path = Path(path)
    try:
        found = pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise _part_error(path, f"is not a readable Parquet file ({' '.join(str(exc).split())})") from None
    version, expected = _expected_schema(path, found, schema)
    for want in expected:
        if want.name not in found.names:
            raise _part_error(path, f"column {want.name!r} ({want.type}) of record schema {version} is missing")
        got = found.field(want.name).type
        if got != want.type:
            raise _part_error(path, f"column {want.name!r} is {got}, record schema {version} has {want.type}")
    unknown = [n for n in found.names if n not in expected.names]
    if unknown:
        raise _part_error(path, f"column {unknown[0]!r} is not in record schema {version}")
    if version < SCHEMA_VERSION and not allow_older:
        raise OlderSchemaError(
            f"{str(path)!r} holds rows of record schema {version} (this evoloss writes schema {SCHEMA_VERSION}); "
            "status, export and report read it, but new rows cannot be added to its run: start a new run "
            "(evoloss search CONFIG --out NEW_DIR)")
    return version, expected


def read_part(path: str | os.PathLike[str], schema: pa.Schema, *, allow_older: bool = True) -> pa.Table:
    """One part's rows, checked first (`check_part`, same errors). A part of record schema 1 reads
    with the columns added since at their documented defaults (`ADDED_IN_SCHEMA_2`); its
    ``schema_version`` column keeps saying 1."""
    path = Path(path)
    version, expected = check_part(path, schema, allow_older=allow_older)
    try:
        table = pq.read_table(path, schema=expected)
    except (pa.ArrowException, OSError) as exc:
        raise _part_error(path, f"cannot be read ({' '.join(str(exc).split())})") from None
    return table if version == SCHEMA_VERSION else _upgraded(table, schema)


def _upgraded(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """An older part's table with the columns added since, at their defaults, in ``schema``'s order."""
    n = table.num_rows
    arrays = [table.column(f.name) if f.name in table.column_names
              else pa.array([ADDED_IN_SCHEMA_2[f.name]] * n, f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


__all__ = ["ADDED_IN_SCHEMA_2", "OlderSchemaError", "check_part", "read_part"]
