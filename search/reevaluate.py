"""The ``reevaluated`` export pick: the top candidates of a search and its final CMA-ES mean trained
again on seeds the search never used, and the one with the best clean validation accuracy exported.

A search's best candidate won on the very tasks it was scored on, so its fitness is biased upwards
(the winner's curse); the CMA-ES mean was never scored at all. This pick measures both kinds on new
draws of the same tasks before choosing (docs/export.md):

1. **Candidates** (`top_candidates`): the ``top`` best distinct candidates (distinct by their decoded
   parameters) over every complete generation, ranked by the search's own fitness with the search's
   tie rule (the earlier generation, then the lower candidate index), so the first is the ``best``
   pick; then the final CMA-ES mean (the ``mean`` pick).
2. **Tasks** (`reevaluation_tasks`): the search grid's datasets × archs × noise settings (pairs the grid
   leaves out skipped) with ``reeval_seeds`` new seeds from ``max(max(grid.seeds) + 1, 100)`` on, and the search's
   ``[train]`` (budget, splits, trainer) and metric rule. A grid with ``subset_size`` re-evaluates
   every such task when there are at most `MAX_TASKS`, else a seeded subset of
   ``max(MAX_TASKS, subset_size)`` of them, drawn from ``search.seed`` (a pure function of the config).
3. **Re-evaluation**: one compare run (`search.compare`, through ``evoloss.compare``: the same pool,
   Ray, trainer and records) with one ``kind = "loss"`` method per candidate, written to its own run
   directory (``OUT/reevaluation``), never into the search run.
4. **Choice** (`reevaluation_scores`, `choose`): the highest mean over the re-evaluation rows of the
   metric rule's validation column (``val_acc_last`` | ``val_acc_best`` | ``noisy_val_acc_best``,
   `search.fitness.metric_column`), rows counted as a search counts them (`search.fitness.row_score`);
   ties to the earlier-ranked candidate. Test accuracy is never read.

`export_reevaluated` stages the whole export directory beside its target — the compare run first,
the plug-in last — and renames it into place, so a failure leaves nothing behind.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np

from evoloss.search.config_fields import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from evoloss.losses import LossSpec
    from evoloss.search.config import SearchConfig

DEFAULT_TOP, MAX_TOP = 4, 64
DEFAULT_REEVAL_SEEDS, MAX_REEVAL_SEEDS = 2, 16
MAX_TASKS = 8
"""A subset-size grid is re-evaluated on every task up to this many, else on a seeded subset."""
SUBSET_STREAM = 0x5EED
"""Second word of the subset's seed ``[search.seed, SUBSET_STREAM]``: not the search's own subset draws."""
REEVAL_DIR = "reevaluation"
MEAN_ID = "mean"


@dataclass(frozen=True)
class Candidate:
    """One candidate of the re-evaluation: ``id`` is ``g<gen>-c<cand>`` or ``"mean"``."""

    id: str
    spec: "LossSpec"
    generation: int
    candidate: int | None
    fitness: float | None


# --- arguments -----------------------------------------------------------------------------------
def _argument_error(key: str, problem: str, value: Any, fix: str) -> ConfigError:
    return ConfigError(key, problem, value, fix, f"{key}={value!r}: {problem}; {fix}")


def check_pick_arguments(pick: str, top: int | None, reeval_seeds: int | None) -> tuple[int, int]:
    """``(top, reeval_seeds)`` with defaults filled in, checked; both only with ``pick="reevaluated"``."""
    for key, value, default, most in (("top", top, DEFAULT_TOP, MAX_TOP),
                                      ("reeval_seeds", reeval_seeds, DEFAULT_REEVAL_SEEDS, MAX_REEVAL_SEEDS)):
        if value is None:
            continue
        if pick != "reevaluated":
            raise _argument_error(key, f"is used by pick='reevaluated' only, not pick={pick!r}", value,
                                  f"drop {key}, or set pick='reevaluated'")
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
            raise _argument_error(key, f"must be an int in [1, {most}]", value, f"e.g. {key}={default} (the default)")
    return (DEFAULT_TOP if top is None else top), (DEFAULT_REEVAL_SEEDS if reeval_seeds is None else reeval_seeds)


# --- candidates ----------------------------------------------------------------------------------
def _no_generation(run_dir: Path) -> ValueError:
    return ValueError(f"run {str(run_dir)!r} has no complete generation: nothing to re-evaluate; wait for its "
                      f"first generation (evoloss status {run_dir})")


def top_candidates(config: "SearchConfig", evaluations: "pd.DataFrame", references: dict[str, float],
                   top: int) -> list[Candidate]:
    """The ``top`` best distinct candidates of the complete generations' rows (module docstring, 1).

    Fitness is the search's rule (`search.coordinator.fitness_rule`) over each generation's
    full-budget rows, with the CE ``references`` of the run's last state; no fitness, no rank."""
    from evoloss.losses import LossSpec
    from evoloss.search.coordinator import fitness_rule
    from evoloss.search.fitness import fitness

    rule, scored = fitness_rule(config), []
    full = evaluations[evaluations["fidelity"] >= 1.0]
    for generation, rows in full.groupby("generation", sort=True):
        for cand, value in fitness(rows, rule, references=references).items():
            if math.isfinite(value):
                scored.append((-value, int(generation), int(cand)))
    params = {(int(g), int(c)): (f, p) for g, c, f, p in
              full[["generation", "candidate", "family", "params"]].itertuples(index=False)}
    out: list[Candidate] = []
    seen: set[str] = set()
    for neg, generation, cand in sorted(scored):
        family, text = params[(generation, cand)]
        key = json.dumps([family, json.loads(text)], sort_keys=True)
        if key not in seen and len(out) < top:
            seen.add(key)
            out.append(Candidate(f"g{generation}-c{cand}", LossSpec(family, json.loads(text)), generation, cand, -neg))
    return out


# --- tasks and the compare config ----------------------------------------------------------------
REEVAL_SEED_FLOOR = 100
"""Re-evaluation seeds start at least here: above the search's, and clear of the seeds the shipped
compare presets hold out (the quick compare's held-out groups use seeds 4-6), so choosing the export
never sees a held-out task's split, noise draw or initialisation."""


def reevaluation_seeds(config: "SearchConfig", reeval_seeds: int) -> list[int]:
    """``max(max(grid.seeds) + 1, REEVAL_SEED_FLOOR) …``, ``reeval_seeds`` of them: seeds no task of the
    search used, clear of the shipped compare presets' held-out seeds."""
    start = max(max(config.grid.seeds) + 1, REEVAL_SEED_FLOOR)
    return list(range(start, start + reeval_seeds))


def reevaluation_tasks(config: "SearchConfig", seeds: Sequence[int]) -> list[tuple[str, str, int, int]]:
    """``(arch, dataset, noise index, seed)`` of every re-evaluation task, in grid order (module docstring, 2)."""
    from evoloss.search.grid import grid_from_config, stratum_shortfall

    search_grid = grid_from_config(config)
    every = dataclasses.replace(search_grid, seeds=tuple(seeds), subset_size=None, stratify="none")
    noises = list(search_grid.noises)
    tasks = every.tasks()
    if config.grid.subset_size is not None and len(tasks) > MAX_TASKS:
        # the search grid's own subset rule (stratified by arch when it is, and each arch has enough tasks)
        # on the re-evaluation seeds, drawn from the stream [search.seed, SUBSET_STREAM]
        size = min(len(tasks), max(MAX_TASKS, config.grid.subset_size))
        stratify = "none" if stratum_shortfall(every.arch_task_counts(), size) else search_grid.stratify
        drawn = dataclasses.replace(every, subset_size=size, subset_seed=config.search.seed, stratify=stratify)
        tasks = drawn.tasks_for_generation(SUBSET_STREAM)
    return [(t.arch, t.dataset, noises.index(t.noise), t.seed) for t in tasks]


def _task_groups(config: "SearchConfig", grid_data: dict[str, Any], seeds: Sequence[int],
                 tasks: Sequence[tuple[str, str, int, int]]) -> list[dict[str, Any]]:
    """One task group for a full product, else one group per (arch, dataset, noise) with its seeds."""
    g = config.grid
    if len(tasks) == len(g.archs) * len(g.datasets) * len(g.noise) * len(seeds):
        return [{"name": REEVAL_DIR, "datasets": list(g.datasets), "archs": list(g.archs),
                 "noise": grid_data["noise"], "seeds": list(seeds), "data_dir": g.data_dir}]
    settings: dict[tuple[str, str, int], list[int]] = {}
    for arch, dataset, noise, seed in tasks:
        settings.setdefault((arch, dataset, noise), []).append(seed)
    return [{"name": f"{REEVAL_DIR}-{i}", "datasets": [d], "archs": [a], "noise": [grid_data["noise"][n]],
             "seeds": s, "data_dir": g.data_dir} for i, ((a, d, n), s) in enumerate(settings.items())]


def reevaluation_config(config: "SearchConfig", candidates: Sequence[Candidate], seeds: Sequence[int],
                        run_dir: Path) -> dict[str, Any]:
    """The compare config (as data) that re-evaluates ``candidates`` on the search's grid with ``seeds``."""
    from evoloss.search.config import config_dict

    data = config_dict(config)
    methods = [{"name": c.id, "kind": "loss", "family": c.spec.family, "params": dict(c.spec.params)}
               for c in candidates]
    out = {
        "compare": {"metric_rule": config.grid.metric_rule, "meta_per_class": 0, "clean_budget": 0},
        "methods": methods,
        "tasks": _task_groups(config, data["grid"], seeds, reevaluation_tasks(config, seeds)),
        "train": data["train"], "cluster": {**data["cluster"], "engine": "native"},
        "output": {"run_dir": str(run_dir)},
    }
    if data["plugins"].get("modules"):
        out["plugins"] = data["plugins"]
    return out


# --- the choice ----------------------------------------------------------------------------------
def reevaluation_scores(rows: "pd.DataFrame", metric_rule: str, count: int) -> list[float | None]:
    """Per candidate index 0..count-1: the mean validation metric of its counted rows (None: none counted).

    Reads only ``candidate``, ``status`` and the metric rule's validation column."""
    from evoloss.search.fitness import metric_column, row_score

    column = metric_column(metric_rule)
    values: dict[int, list[float]] = {i: [] for i in range(count)}
    for i, row in enumerate(rows[["candidate", "status", column]].to_dict("records")):
        score = row_score(row, column, i)
        if score is not None and int(row["candidate"]) in values:
            values[int(row["candidate"])].append(score)
    return [float(np.mean(v)) if v else None for v in values.values()]


def choose(scores: Sequence[float | None]) -> int | None:
    """The index of the highest score, ties to the earlier index; None when no score is known."""
    best = None
    for i, s in enumerate(scores):
        if s is not None and (best is None or s > scores[best]):
            best = i
    return best


def reevaluate(run: Any, *, top: int, reeval_seeds: int, run_dir: Path, recorded_dir: Path | None = None,
               progress: Callable[[str], None] | None = None) -> tuple["LossSpec", dict[str, Any]]:
    """Re-evaluate the candidates of ``run`` (a `search.api.SearchResult`) in the new compare run
    ``run_dir`` and return the chosen spec and its provenance (``recorded_dir``: the path the
    provenance names, default ``run_dir``).

    Raises:
        ValueError: the run has no complete generation, or no candidate got a counted row.
    """
    from evoloss.results.store import ParquetStore
    from evoloss.search import api
    from evoloss.search.fitness import metric_column

    config = run.config
    saved = ParquetStore.open_read_only(run.run_dir).load_state()
    if saved is None:
        raise _no_generation(run.run_dir)
    candidates = top_candidates(config, run.evaluations(), dict(saved[1].get("references") or {}), top)
    candidates.append(Candidate(MEAN_ID, run.mean, int(saved[0]), None, None))
    seeds = reevaluation_seeds(config, reeval_seeds)
    recorded = Path(recorded_dir or run_dir)
    result = api.compare(reevaluation_config(config, candidates, seeds, recorded), out=run_dir, progress=progress)
    rows = result.evaluations()
    scores = reevaluation_scores(rows, config.grid.metric_rule, len(candidates))
    chosen = choose(scores)
    if chosen is None:
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(rows["status"].value_counts().items()))
        first = next((e.splitlines()[0] for e in rows["error"] if e), "none recorded")
        raise ValueError(f"the re-evaluation of run {str(run.run_dir)!r} gave no usable row ({statuses}; first "
                         f"error: {first}); nothing exported: fix the cause, then export again")
    pick = candidates[chosen]
    listed = [{"id": c.id, "generation": c.generation, "candidate": c.candidate, "fitness": c.fitness,
               "family": c.spec.family, "params": dict(c.spec.params), "score": s} for c, s in zip(candidates, scores)]
    return pick.spec, {
        "pick": "reevaluated", "fitness": pick.fitness, "generation": pick.generation, "candidate": pick.candidate,
        "reevaluation": {"chosen": pick.id, "selected_on": metric_column(config.grid.metric_rule), "top": top,
                         "seeds": seeds, "search_seeds": list(config.grid.seeds),
                         "tasks": sorted(set(rows["task_key"])), "run_dir": str(recorded),
                         "candidates": listed},
    }


# --- the staged export directory -----------------------------------------------------------------
def check_target(out_dir: Path, overwrite: bool) -> None:
    """Raise unless ``out_dir`` may become the export (absent, empty, or ``overwrite``)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise _argument_error("out", "exists and is not a directory", str(out_dir), "choose a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise _argument_error("out", "exists and is not empty", str(out_dir),
                              "choose a new directory or pass overwrite=True")


def _install(staging: Path, out_dir: Path, overwrite: bool) -> None:
    """Rename the finished ``staging`` to ``out_dir``, replacing an empty or (``overwrite``) old one."""
    from evoloss.losses.plugin.files import replace_dir

    check_target(out_dir, overwrite)
    replace_dir(staging, out_dir)


@contextlib.contextmanager
def _staging(out_dir: Path) -> Iterator[Path]:
    """A fresh directory beside ``out_dir``, removed with everything in it unless the block installed it."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.reeval-", dir=out_dir.parent))
    try:
        yield staging
    except BaseException as exc:
        if getattr(exc, "run_dir", None) is not None:  # a Stopped compare: its directory is gone with the staging
            exc.run_dir = None
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def export_reevaluated(out_dir: Path, *, overwrite: bool, pick_in: Callable[[Path, Path], tuple[Any, dict]],
                       write_plugin: Callable[[Any, dict, Path], Path]) -> Path:
    """Build ``out_dir`` = the re-evaluation run (``reevaluation/``) + the plug-in, all or nothing.

    ``pick_in(run_dir, recorded_dir)`` re-evaluates into ``run_dir`` and returns ``(spec, origin)``;
    ``write_plugin(spec, origin, directory)`` writes the plug-in into the new ``directory``. Returns
    ``out_dir``."""
    check_target(out_dir, overwrite)
    with _staging(out_dir) as staging:
        spec, origin = pick_in(staging / REEVAL_DIR, out_dir / REEVAL_DIR)
        plugin = write_plugin(spec, origin, staging / ".plugin")  # the plug-in last
        for file in sorted(plugin.iterdir()):
            os.rename(file, staging / file.name)
        plugin.rmdir()
        _install(staging, out_dir, overwrite)
    return out_dir
