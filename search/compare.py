"""`run_compare`: hand-designed, evolved and meta-learned losses trained on the same tasks, one store.

The compare reuses the search's dispatch (docs/architecture.md): its jobs go to the same pool
(`search.engine.evaluation_pool`, or `search.local_pool.InProcessPool` in tests) and its rows to the
same record store. Per task (`compare_tasks`: every group's datasets × archs × noise × seeds):

- one job on ``train.trainer`` (the population trainer by default) carries every loss-type method:
  hand-designed losses, evolved losses (plug-ins, the best candidate of a search run) and every grid
  point of the tuned methods — K networks trained together, member by member identical to training
  them one by one;
- one job per meta-learned method, on that method's trainer with its options and base loss.

Every method of a task trains on the same `Task`, so the same train/val/test/meta splits, noisy
labels and initial weights. The meta set (``compare.meta_per_class`` per class) is carved from the
pool for every task; only meta-learned methods train on it (the usual protocol of the meta papers).

Rows (results.schema): one per (method, task) in generation 0, ``candidate`` = the method's index in
the config, ``method``/``method_kind`` set, and ``extra`` = the trainer's extras plus ``split``
("seen" | "held-out"), ``group`` (the task group) and ``source`` (where the method came from);
``clean_labels_used`` counts the clean labels the row consumed (`search.clean_labels`), and
``compare.clean_budget = N`` holds that budget equal (val split = meta set = N clean labels).

Failures never abort a compare. A method that cannot be resolved (a broken plug-in file, a missing
search run) gets ``failed`` rows carrying the reason and no jobs; a run whose loss diverges is
``diverged``; a job the pool gave up on is ``failed``/``timeout`` — all as the records say.

Tuned methods (`select_tuned`): per task, among grid points whose run ended ``ok`` with a finite
clean-validation metric (``val_acc_last`` or ``val_acc_best`` by ``compare.metric_rule``), the highest
wins, ties to the earlier grid point; its record becomes the row (its test accuracy is reported)
and ``extra.tuned`` keeps every point's parameters, validation score and status. With no eligible
point the row has NaN metrics and the points' common status (``failed`` if they differ).

Summary (`results.tables.group_summary_table`): per method × task group, the test accuracy at the
metric rule in %: per seed, the mean over the group's ok runs of that seed (its tasks); then the
mean ± sample std (ddof 1) of those seed means (a group mixes datasets, so a std over its runs would
measure the datasets, not the seeds). "(k/n ok)" when some runs were not ok, "<status>: <first error
line>" when none was.

A search run named by a ``search`` method is read through `ParquetStore.open_read_only`, so a compare
may read a search that is still running (its complete generations only) without touching its files.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from evoloss.losses import LossSpec
from evoloss.losses.plugin import read_loss_file
from evoloss.results.queries import best_candidate
from evoloss.results.store import ParquetStore, ResultStore
from evoloss.results.tables import group_summary_table
from evoloss.search.compare_config import (
    METHOD_KINDS,
    CompareConfig,
    MethodSection,
    build_trainer,
    compare_config_dict,
    tuned_grid_points,
)
from evoloss.search.clean_labels import row_clean_labels, search_clean_labels
from evoloss.search.config import SearchConfig
from evoloss.search.coordinator import JobRunnerPool, record_to_row, trainer_options
from evoloss.search.grid import TaskGrid, grid_from_config, metric_column
from evoloss.search.run_dir import load_run_config
from evoloss.workers.jobs import Job
from evoloss.workers.records import EvalRecord
from evoloss.workers.task import Task

GENERATION = 0
META_COST_FACTOR = 4.0
"""Dispatch size of a meta-learned job relative to one plain run (a look-ahead step
costs 3–7× a plain one), so the pool starts them early (longest job first)."""
_TASK_PROVENANCE = ("noise_convention", "noise_rate_realised")
ProgressFn = Callable[[str], None]


@dataclass(frozen=True)
class ResolvedMethod:
    """A configured method made concrete: the specs its jobs train (``trainer`` "" = the loss job),
    where it came from (``source``), or the reason it could not be resolved (``error``)."""

    index: int
    name: str
    kind: str
    method_kind: str
    specs: tuple[LossSpec, ...] = ()
    trainer: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)
    source: Mapping[str, Any] = field(default_factory=dict)
    error: str = ""


@dataclass(frozen=True)
class CompareTask:
    """One task of the compare, the group that lists it and its split ("seen" | "held-out")."""

    task: Task
    group: str
    split: str


@dataclass(frozen=True)
class Slot:
    """Which task, method and (tuned) grid point a job's candidate stands for."""

    task: int
    method: int
    point: int | None = None


@dataclass
class CompareSummary:
    run_id: str
    jobs: int
    rows: int
    statuses: dict[str, int]
    unresolved: dict[str, str]
    table: str
    wall_s: float


# --- methods -------------------------------------------------------------------------------------
def _search_best(run_dir: str) -> tuple[LossSpec, dict[str, Any]]:
    """The best candidate of the search run in ``run_dir`` and its provenance."""
    run = Path(run_dir)
    search_config = load_run_config(run)  # a missing dir or config.toml raises before the store is opened
    best = best_candidate(ParquetStore.open_read_only(run), search_config.grid.metric_rule)
    if best is None:
        raise ValueError(f"search run {run_dir!r} has no complete generation with a finite fitness yet")
    spec, fitness, generation, candidate = best
    return spec, {"run_dir": run_dir, "fitness": fitness, "generation": generation, "candidate": candidate,
                  "clean_labels": search_clean_labels(run)}


def _method_specs(method: MethodSection) -> tuple[tuple[LossSpec, ...], dict[str, Any]]:
    """The specs and provenance of a loss-type method (reads plug-in files and search runs)."""
    if method.kind == "loss":
        return (LossSpec(method.family, dict(method.params)),), {"family": method.family}
    if method.kind == "tuned":
        grid = {k: list(v) for k, v in method.grid.items()}
        return tuple(LossSpec(method.family, p) for p in tuned_grid_points(method)), {"family": method.family,
                                                                                     "grid": grid}
    if method.kind == "plugin":
        label, spec = read_loss_file(method.path)
        return (spec,), {"path": method.path, "label": label}
    spec, source = _search_best(method.run_dir)
    return (spec,), source


def resolve_method(index: int, method: MethodSection) -> ResolvedMethod:
    """Resolve one validated method; a plug-in or run that cannot be read gives ``error`` (never raises)."""
    configured = {k: getattr(method, k) for k in ("family", "path", "run_dir", "trainer") if getattr(method, k)}
    base = ResolvedMethod(index=index, name=method.name, kind=method.kind, method_kind=METHOD_KINDS[method.kind],
                          source=configured)
    try:
        if method.kind == "cleanlab":  # confident learning: its own trainer, CE on the kept samples
            return dataclasses.replace(base, specs=(LossSpec("ce"),), trainer="cleanlab",
                                       options=dict(method.options or {}), source={"family": "ce"})
        if method.kind == "trainer":
            _, spec = build_trainer(method)
            return dataclasses.replace(base, specs=(spec,), trainer=method.trainer, options=dict(method.options or {}),
                                       source={**configured, "base_loss": spec.to_dict()})
        specs, source = _method_specs(method)
        return dataclasses.replace(base, specs=specs, source={**configured, **source})
    except (ValueError, TypeError, KeyError, OSError) as exc:
        reason = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        return dataclasses.replace(base, error=f"unresolved {method.kind}: {reason}")


# --- tasks and jobs ------------------------------------------------------------------------------
def compare_tasks(config: CompareConfig) -> list[CompareTask]:
    """Every task of every group, in config order (within a group: arch, dataset, noise, seed).

    Budget and splits come from ``[train]`` exactly as a search builds them (`grid_from_config`),
    plus the compare's clean meta set."""
    base = grid_from_config(SearchConfig(train=config.train))
    splits = dataclasses.replace(base.splits, meta_per_class=config.compare.meta_per_class)
    if config.compare.clean_budget:  # one clean set of N labels per task: val = the meta set
        splits = dataclasses.replace(base.splits, val=float(config.compare.clean_budget), meta_per_class=0,
                                     meta_total=0)
    out = []
    for group in config.tasks:
        noises = tuple(n.to_spec() for n in group.noise)
        grid = TaskGrid(datasets=group.datasets, archs=group.archs, noises=noises, seeds=group.seeds, mode="ardr",
                        metric_rule=config.compare.metric_rule, budget=base.budget, splits=splits,
                        data_dir=group.data_dir)
        split = "held-out" if group.heldout else "seen"
        out += [CompareTask(task=t, group=group.name, split=split) for t in grid.tasks()]
    return out


def make_compare_jobs(tasks: Sequence[CompareTask], methods: Sequence[ResolvedMethod],
                      loss_trainer: str, *, meta_is_val: bool = False,
                      loss_options: Mapping[str, Any] | None = None) -> tuple[list[Job], dict[tuple[str, str], Slot]]:
    """Per task: one ``loss_trainer`` job with every loss-type spec, one job per meta-learned method.

    Returns the jobs and, for each ``(job_id, candidate)``, the `Slot` it fills. Unresolved methods
    get no job. ``meta_is_val``: the meta-learned methods use the clean validation split as their
    meta set (``compare.clean_budget``); ``loss_options``: the loss job's trainer options (``train.compile``)."""
    jobs: list[Job] = []
    slots: dict[tuple[str, str], Slot] = {}
    usable = [m for m in methods if not m.error]
    for t, ct in enumerate(tasks):
        job_id, specs, ids = f"t{t}-losses", [], []
        for m in (m for m in usable if not m.trainer):
            for j, spec in enumerate(m.specs):
                point = j if m.kind == "tuned" else None
                ids.append(f"m{m.index}" if point is None else f"m{m.index}-p{j}")
                specs.append(spec)
                slots[(job_id, ids[-1])] = Slot(t, m.index, point)
        if specs:
            jobs.append(Job(job_id=job_id, task=ct.task, specs=tuple(specs), trainer=loss_trainer,
                            candidates=tuple(ids), trainer_options=dict(loss_options or {})))
        for m in (m for m in usable if m.trainer):
            options = {**m.options, "meta_source": "val"} if meta_is_val and m.kind == "trainer" else dict(m.options)
            job = Job(job_id=f"t{t}-m{m.index}", task=ct.task, specs=m.specs, trainer=m.trainer,
                      trainer_options=options, candidates=(f"m{m.index}",))
            jobs.append(dataclasses.replace(job, cost=META_COST_FACTOR * job.estimated_cost()))
            slots[(job.job_id, f"m{m.index}")] = Slot(t, m.index)
    return jobs, slots


# --- rows ----------------------------------------------------------------------------------------
def _finite(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and math.isfinite(float(value))


def select_tuned(records: Sequence[Mapping[str, Any]], metric_rule: str) -> int | None:
    """Index of the grid point a tuned method reports: the highest clean-validation metric
    (``val_acc_<rule>``; ``noisy_val_acc_best`` under ``noisy``) among ``ok`` records with a finite value,
    ties to the lowest index; None if none."""
    column = metric_column(metric_rule)
    best: int | None = None
    for i, rec in enumerate(records):
        value = rec.get(column)
        if rec.get("status") == "ok" and _finite(value) and (best is None or value > records[best][column]):
            best = i
    return best


def tuned_record(records: Sequence[Mapping[str, Any]], metric_rule: str) -> dict[str, Any]:
    """The row record of a tuned method from its grid points' records (module docstring)."""
    chosen = select_tuned(records, metric_rule)
    column = metric_column(metric_rule)
    summary = {"selected_on": column, "chosen": chosen, "points": [dict(r.get("params") or {}) for r in records],
               "val": [r.get(column) if _finite(r.get(column)) else None for r in records],
               "status": [r.get("status") for r in records]}
    if chosen is not None:
        rec = dict(records[chosen])
    else:
        statuses = sorted({r.get("status") for r in records})
        first_error = next((r.get("error") for r in records if r.get("error")), "")
        rec = {**EvalRecord(family=records[0]["family"], params={}, trainer=records[0].get("trainer") or "",
                            status=statuses[0] if len(statuses) == 1 else "failed").to_dict(),
               "error": f"tuned: no grid point finished ok ({', '.join(map(str, summary['status']))}); "
                        f"first error: {first_error}"}
    rec["extra"] = {**(rec.get("extra") or {}), "tuned": summary}
    return rec


def _unresolved_record(method: ResolvedMethod, loss_trainer: str) -> dict[str, Any]:
    return EvalRecord(family="", params={}, status="failed", error=method.error,
                      trainer=method.trainer or loss_trainer).to_dict()


def _method_record(method: ResolvedMethod, got: Sequence[tuple[int | None, Mapping[str, Any]]], metric_rule: str,
                   loss_trainer: str) -> dict[str, Any]:
    if method.error:
        return _unresolved_record(method, loss_trainer)
    if not got:  # every job comes back from the pool; this guards the row count all the same
        return EvalRecord(family=method.specs[0].family, params={}, status="failed",
                          error=f"no record came back for method {method.name!r}").to_dict()
    if method.kind == "tuned":
        return tuned_record([rec for _, rec in sorted(got, key=lambda item: item[0])], metric_rule)
    return dict(got[0][1])


def compare_rows(tasks: Sequence[CompareTask], methods: Sequence[ResolvedMethod], results: Sequence[Any],
                 slots: Mapping[tuple[str, str], Slot], *, run_id: str, metric_rule: str,
                 loss_trainer: str, meta_is_val: bool = False) -> list[dict[str, Any]]:
    """One evaluation row per (task, method), tasks in order, methods in config order.

    Rows whose record never reached a worker (an unresolved method, a job the pool gave up on) take
    the task's realised noise convention and rate from another record of the same task, so every
    row of a task names its noise the same way."""
    found: dict[tuple[int, int], list[tuple[int | None, Mapping[str, Any]]]] = defaultdict(list)
    realised: dict[int, dict[str, Any]] = {}
    for res in results:
        for rec in res.records:
            slot = slots[(res.job_id, rec["candidate"])]
            found[(slot.task, slot.method)].append((slot.point, rec))
            if rec.get("noise_convention"):
                realised.setdefault(slot.task, {k: rec.get(k) for k in _TASK_PROVENANCE if k in rec})
    rows = []
    for t, ct in enumerate(tasks):
        for m in methods:
            rec = _method_record(m, found.get((t, m.index), []), metric_rule, loss_trainer)
            if not rec.get("noise_convention"):  # a record that never reached a worker: the task's realised noise
                rec = {**rec, **realised.get(t, {})}
            row = record_to_row({**rec, "candidate": m.index}, ct.task, run_id=run_id, generation=GENERATION,
                                metric_rule=metric_rule, method=m.name, method_kind=m.method_kind)
            row["extra"] = {**(rec.get("extra") or {}), "split": ct.split, "group": ct.group, "source": dict(m.source)}
            row["clean_labels_used"] = 0 if m.error else row_clean_labels(
                m.kind, rec, ct.task, metric_rule=metric_rule, meta_is_val=meta_is_val,
                search_labels=int(m.source.get("clean_labels", 0)))
            rows.append(row)
    return rows


def _generation_row(run_id: str, rows: Sequence[Mapping[str, Any]], metric_rule: str, wall_s: float,
                    task_keys: list[str]) -> dict[str, Any]:
    """The compare's one generation row: "fitness" = a method's mean test metric over its ok rows."""
    column = f"test_acc_{metric_rule}"
    by_method: dict[int, list[float]] = defaultdict(list)
    for r in rows:
        if r["status"] == "ok" and _finite(r[column]):
            by_method[r["candidate"]].append(float(r[column]))
    means = {c: float(np.mean(v)) for c, v in by_method.items()}
    best = max(means, key=lambda c: (means[c], -c)) if means else -1
    values = list(means.values()) or [math.nan]
    params = [json.dumps(r["params"], sort_keys=True) for r in rows if r["candidate"] == best]
    return {
        "run_id": run_id, "generation": GENERATION, "best_fitness": means.get(best, math.nan),
        "mean_fitness": float(np.mean(values)), "median_fitness": float(np.median(values)), "best_candidate": best,
        "best_params": json.loads(params[0]) if params and len(set(params)) == 1 else {}, "sigma": math.nan,
        "evaluations": len(rows), "failed": sum(1 for r in rows if r["status"] != "ok"),
        "evals_per_s": len(rows) / wall_s if wall_s > 0 else math.nan, "wall_s": float(wall_s),
        "grid_subset": task_keys, "timestamp": _dt.datetime.now(_dt.timezone.utc),
    }


# --- the run -------------------------------------------------------------------------------------
def _progress(say: ProgressFn, total: int, start: float) -> Callable[[Any], None]:
    done = [0]

    def on_result(_result: Any) -> None:
        done[0] += 1
        elapsed = time.perf_counter() - start
        eta = elapsed / done[0] * (total - done[0])
        say(f"\rcompare: {done[0]}/{total} jobs  elapsed {elapsed:.0f}s  ETA {eta:.0f}s"
            + ("\n" if done[0] == total else ""))

    return on_result


def run_compare(config: CompareConfig, pool: JobRunnerPool, store: ResultStore, *, run_id: str,
                progress: ProgressFn | None = None) -> CompareSummary:
    """Run every method of ``config`` on every task and store one row per (method, task).

    Resolves the methods (reading plug-ins and search runs), dispatches the jobs on ``pool``, writes
    the rows and a generation row as generation 0 and saves the compare's state (the resolved
    config and methods), which completes the run. Returns the summary with its printed table.
    """
    say = progress or (lambda _line: None)
    start = time.perf_counter()
    methods = [resolve_method(i, m) for i, m in enumerate(config.methods)]
    for m in methods:
        if m.error:
            say(f"compare: method {m.name!r} is failed everywhere: {m.error.splitlines()[0]}\n")
    tasks = compare_tasks(config)
    meta_is_val = config.compare.clean_budget > 0
    jobs, slots = make_compare_jobs(tasks, methods, config.train.trainer, meta_is_val=meta_is_val,
                                    loss_options=trainer_options(config))
    say(f"compare: {len(methods)} methods × {len(tasks)} tasks = {len(jobs)} jobs on {pool.size} actor(s)\n")
    results = pool.run_jobs(jobs, timeout_s=config.cluster.timeout_s,
                            on_result=_progress(say, len(jobs), start)) if jobs else []
    rule = config.compare.metric_rule
    rows = compare_rows(tasks, methods, results, slots, run_id=run_id, metric_rule=rule,
                        loss_trainer=config.train.trainer, meta_is_val=meta_is_val)
    wall = time.perf_counter() - start
    store.append(GENERATION, rows, _generation_row(run_id, rows, rule, wall, [t.task.key() for t in tasks]))
    store.save_state(GENERATION, {
        "kind": "compare", "run_id": run_id, "config": compare_config_dict(config),
        "methods": [{"name": m.name, "kind": m.kind, "method_kind": m.method_kind, "error": m.error,
                     "specs": [s.to_dict() for s in m.specs], "source": dict(m.source)} for m in methods],
    })
    statuses: dict[str, int] = defaultdict(int)
    for r in rows:
        statuses[r["status"]] += 1
    return CompareSummary(run_id=run_id, jobs=len(jobs), rows=len(rows), statuses=dict(sorted(statuses.items())),
                          unresolved={m.name: m.error for m in methods if m.error},
                          table=group_summary_table(rows, rule), wall_s=wall)
