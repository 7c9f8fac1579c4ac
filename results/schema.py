"""The one written, versioned schema of the record store: evaluation rows and generation rows.

Every Parquet file of a run carries ``SCHEMA_VERSION`` in its schema metadata (and every evaluation
row in the ``schema_version`` column). Change a column → bump the version and say why here.

Evaluation rows (`EVAL_SCHEMA`, one per (candidate, task) training run):

=====================  ===============  ==========================================================
column                 type             meaning
=====================  ===============  ==========================================================
run_id                 string           the run directory's id
generation             int64            CMA-ES generation (0-based); 0 for compare runs
candidate              int64            index of the candidate in its generation (compare: method)
method                 string           compare runs: the method's name; "" in a search
method_kind            string           "" (search) | "hand-designed" | "evolved" | "meta-learned"
family                 string           loss family (registry key)
params                 string (JSON)    the family's parameters, {"name": value}
dataset                string           dataset registry key
arch                   string           architecture registry key
noise_type             string           NoiseSpec.kind: none | symmetric | asymmetric | ...
noise_rate             float64          nominal noise rate r
noise_convention       string           how r was applied (docs/noise.md), e.g. "exact"
noise_rate_realised    float64          realised fraction of flipped training labels
seed                   int64            the task's seed (split, noise, init)
task_key               string           Task.key(), e.g. "digits/mlp2/symmetric0.8-exact/s0"
status                 string           ok | diverged | failed | timeout
error                  string           the reason when status != ok, else ""
val_acc_last           float64          clean validation accuracy after the last epoch (NaN: none)
val_acc_best           float64          best clean validation accuracy over the epochs
test_acc_last          float64          clean test accuracy after the last epoch
test_acc_best          float64          clean test accuracy at the best-validation epoch
noisy_val_acc_best     float64          best accuracy on the noisy validation split (NaN: none)
test_acc_noisy         float64          clean test accuracy at the best noisy-validation epoch (gao-arl
                                        Table 3's early stopping on noisy labels; NaN: no noisy split)
best_epoch             int64            epoch of val_acc_best (0-based; -1: none)
epochs_run             int64            epochs actually trained
curve_val              list<float64>    clean validation accuracy per epoch (learning curve)
train_loss_last        float64          mean training loss of the last epoch
wall_s                 float64          wall seconds of this evaluation
device                 string           "cpu", "cuda:0", ...
host                   string           host name of the worker
trainer                string           trainer registry key ("standard", "population", ...)
metric_rule            string           "last" | "best": which epoch the fitness reads
fitness_metric         string           the column the fitness read, e.g. "val_acc_last"
evoloss_version        string           evoloss package version
torch_version          string           torch version on the worker
schema_version         int64            SCHEMA_VERSION when written
extra                  string (JSON)    method-specific extras (e.g. a learned Λ trajectory)
execution              string           how the trainer ran it: "single" | "stacked" |
                                        "stacked-compiled" | "one-by-one" ("" : not recorded)
execution_note         string           why a faster path was not taken (e.g. the compile error); ""
protocol               string           the trainer's hyperparameter protocol: "default" | "paper"
clean_labels_used      int64            clean labels this evaluation consumed (meta set, clean
                                        validation rows read for fitness or selection; 0: none)
fitness_rule           string           how task accuracies became the candidate's fitness
                                        (search rows; "" in a compare)
fidelity               float64          share of the full epoch budget this evaluation was given
                                        (1.0: full; < 1: stopped by a multi-fidelity schedule)
version_change         string           "" or the evoloss/torch version change a resume allowed
=====================  ===============  ==========================================================

Schema history: 1 — first release; 2 — execution, execution_note, protocol, clean_labels_used,
fitness_rule, fidelity, version_change and test_acc_noisy added (the population trainer's path, the paper protocols,
equal-clean-budget comparisons, multi-fidelity fitness, resumes across versions).

Generation rows (`GENERATION_SCHEMA`, one per CMA-ES generation):

=====================  ===============  ==========================================================
run_id                 string           the run directory's id
generation             int64            generation index
best_fitness           float64          best candidate fitness of this generation (NaN: all failed)
mean_fitness           float64          mean over candidates with a finite fitness
median_fitness         float64          median over candidates with a finite fitness
best_candidate         int64            candidate index of best_fitness (-1: all failed)
best_params            string (JSON)    that candidate's parameters
sigma                  float64          CMA-ES step size after this generation's update
evaluations            int64            evaluation rows written for this generation
failed                 int64            of those, rows with status != ok
evals_per_s            float64          evaluations / wall_s
wall_s                 float64          wall seconds of the generation (ask to store)
grid_subset            string (JSON)    the task keys evaluated this generation (a list)
timestamp              timestamp[us, UTC]  when the generation finished (timezone-aware)
=====================  ===============  ==========================================================

Documented conversions done by `rows_to_table` (so ``EvalRecord.to_dict()`` merged with the task
and run fields is a valid row): JSON columns take a JSON string or a dict/list (dumped with sorted
keys; non-finite floats inside become ``null``, numpy scalars/arrays become numbers/lists);
float columns take ints and floats (NaN allowed); ``curve_val`` takes any sequence of numbers.
"""
from __future__ import annotations

import difflib
import json
import math
from datetime import datetime
from typing import Any, Iterable, Mapping

import numpy as np
import pyarrow as pa

SCHEMA_VERSION = 2
STATUSES = ("ok", "diverged", "failed", "timeout")
METHOD_KINDS = ("", "hand-designed", "evolved", "meta-learned")
METRIC_RULES = ("last", "best", "noisy")
JSON_COLUMNS = frozenset({"params", "extra", "best_params", "grid_subset"})

_S, _F, _I = pa.string(), pa.float64(), pa.int64()
_EVAL_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("run_id", _S), ("generation", _I), ("candidate", _I), ("method", _S), ("method_kind", _S),
    ("family", _S), ("params", _S), ("dataset", _S), ("arch", _S), ("noise_type", _S),
    ("noise_rate", _F), ("noise_convention", _S), ("noise_rate_realised", _F), ("seed", _I),
    ("task_key", _S), ("status", _S), ("error", _S), ("val_acc_last", _F), ("val_acc_best", _F),
    ("test_acc_last", _F), ("test_acc_best", _F), ("noisy_val_acc_best", _F), ("test_acc_noisy", _F), ("best_epoch", _I),
    ("epochs_run", _I), ("curve_val", pa.list_(_F)), ("train_loss_last", _F), ("wall_s", _F),
    ("device", _S), ("host", _S), ("trainer", _S), ("metric_rule", _S), ("fitness_metric", _S),
    ("evoloss_version", _S), ("torch_version", _S), ("schema_version", _I), ("extra", _S),
    ("execution", _S), ("execution_note", _S), ("protocol", _S), ("clean_labels_used", _I),
    ("fitness_rule", _S), ("fidelity", _F), ("version_change", _S),
)
_GENERATION_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("run_id", _S), ("generation", _I), ("best_fitness", _F), ("mean_fitness", _F),
    ("median_fitness", _F), ("best_candidate", _I), ("best_params", _S), ("sigma", _F),
    ("evaluations", _I), ("failed", _I), ("evals_per_s", _F), ("wall_s", _F), ("grid_subset", _S),
    ("timestamp", pa.timestamp("us", tz="UTC")),
)
# Allowed values of enumerated string columns.
_CHOICES: dict[str, tuple[str, ...]] = {
    "status": STATUSES,
    "method_kind": METHOD_KINDS,
    "metric_rule": METRIC_RULES,
}


def _schema(columns: Iterable[tuple[str, pa.DataType]], kind: str) -> pa.Schema:
    meta = {"evoloss.schema_version": str(SCHEMA_VERSION), "evoloss.kind": kind}
    return pa.schema([pa.field(n, t, nullable=False) for n, t in columns], metadata=meta)


EVAL_SCHEMA = _schema(_EVAL_COLUMNS, "evaluations")
GENERATION_SCHEMA = _schema(_GENERATION_COLUMNS, "generations")


def _jsonable(value: Any) -> Any:
    """Recursively turn numpy values into Python ones and non-finite floats into None."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"{type(value).__name__} {value!r} is not JSON-serialisable")


def to_json(value: Any, where: str = "value") -> str:
    """Dump ``value`` for a JSON column (sorted keys, strict JSON); a string must already be JSON.

    ``where`` names the value in error messages (e.g. "row 3, column 'params'").
    """
    if isinstance(value, str):
        try:
            json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: {value[:80]!r} is not valid JSON ({exc.msg})") from None
        return value
    try:
        return json.dumps(_jsonable(value), sort_keys=True, allow_nan=False)
    except TypeError as exc:
        raise TypeError(f"{where}: {exc}; pass numbers, strings, lists and dicts") from None


def _check_value(column: str, dtype: pa.DataType, value: Any, row: int) -> Any:
    """The value converted for ``dtype``, or a TypeError/ValueError naming column, row and value."""
    where = f"row {row}, column {column!r}"
    if column in JSON_COLUMNS:
        return to_json(value, where)
    if pa.types.is_string(dtype):
        if not isinstance(value, str):
            raise TypeError(f"{where}: expected a string, got {type(value).__name__} {value!r}")
        if column in _CHOICES and value not in _CHOICES[column]:
            raise ValueError(f"{where}: {value!r} is not one of {_CHOICES[column]}")
        return value
    if pa.types.is_int64(dtype):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{where}: expected an integer, got {type(value).__name__} {value!r}")
        return int(value)
    if pa.types.is_float64(dtype):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise TypeError(f"{where}: expected a number (NaN allowed), got {type(value).__name__} {value!r}")
        return float(value)
    if pa.types.is_list(dtype):
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (list, tuple, np.ndarray)):
            raise TypeError(f"{where}: expected a list of numbers, got {type(value).__name__} {value!r}")
        return [_check_value(column, pa.float64(), v, row) for v in value]
    if pa.types.is_timestamp(dtype):
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise TypeError(
                f"{where}: expected a timezone-aware datetime (datetime.now(timezone.utc)), got {value!r}"
            )
        return value
    raise TypeError(f"{where}: no conversion for arrow type {dtype}")  # schema bug, not user input


def rows_to_table(rows: Iterable[Mapping[str, Any]], schema: pa.Schema = EVAL_SCHEMA) -> pa.Table:
    """Validate ``rows`` (dicts, one per row) against ``schema`` and build an Arrow table.

    Every column of the schema must be present in every row and no other key may be; values are
    converted as documented in the module docstring.

    Raises:
        ValueError: a missing or unknown column (with close matches), a value outside a column's
            allowed set (status, method_kind, metric_rule) or a string that is not valid JSON.
        TypeError: a value of the wrong type; the message names the row, the column and the value.
    """
    names = schema.names
    columns: dict[str, list[Any]] = {n: [] for n in names}
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(f"row {i}: expected a dict of column -> value, got {type(row).__name__}")
        missing = [n for n in names if n not in row]
        if missing:
            kind = schema.metadata[b"evoloss.kind"].decode()
            raise ValueError(f"row {i}: missing column(s) {missing} of the {kind} schema (results.schema)")
        unknown = [k for k in row if k not in columns]
        if unknown:
            close = difflib.get_close_matches(str(unknown[0]), names, n=3)
            hint = f"; did you mean {close}?" if close else ""
            raise ValueError(f"row {i}: unknown column {unknown[0]!r}{hint} (columns: {', '.join(names)})")
        for field in schema:
            columns[field.name].append(_check_value(field.name, field.type, row[field.name], i))
    arrays = [pa.array(columns[f.name], type=f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def schema_columns(schema: pa.Schema = EVAL_SCHEMA) -> tuple[str, ...]:
    """The column names of ``schema`` in order."""
    return tuple(schema.names)
