"""The generation loop: ask → decode → dispatch → record → tell → checkpoint (docs/architecture.md).

`run_search(config, pool, store)` drives one search through a `GenerationLoop`, the per-generation
steps every engine shares (resume from the store's state, ask, decode, build jobs, progress lines,
finish and store the generation, stop reasons, summary); `search.tune_engine` drives the same loop
from a Ray Tune searcher. The coordinator is not the strategy: it maps jobs to candidates, turns records into rows, and tells `CMAStrategy` only
about complete generations. Each generation is stored as one unit — evaluation rows, its
generation row, then the strategy state (`ResultStore` contract) — so a search killed at any point
resumes from its last complete generation with the same trajectory and no duplicated rows.

Failures inside a generation never stop the search: a job's records say ``failed``/``timeout``/
``diverged``, `search.fitness` decides what counts (and how tasks combine), and the strategy's single
failure policy ranks the rest.
"""
from __future__ import annotations

import datetime as _dt
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

from evoloss import losses
from evoloss.losses import LossSpec
from evoloss.losses.versions import evoloss_version
from evoloss.results.queries import best_candidate
from evoloss.results.schema import SCHEMA_VERSION
from evoloss.results.store import ResultStore
from evoloss.search.clean_labels import fitness_clean_labels
from evoloss.search.config import SearchConfig, config_dict, initial_genome
from evoloss.search.fidelity import HalvingSchedule, choose_finishers, complete_ranking, reference_jobs, with_epochs
from evoloss.search.fitness import FitnessRule, fitness, near_chance_tasks, references_from_rows
from evoloss.search.grid import dataset_input, grid_from_config, left_out_line, metric_column
from evoloss.search.strategy import CMAStrategy
from evoloss.workers.jobs import Job
from evoloss.workers.noise import convention_name
from evoloss.workers.task import Task

ProgressFn = Callable[[str], None]


class JobRunnerPool(Protocol):
    """What the coordinator needs of a dispatcher (`search.dispatch.ActorPool` or an in-process one)."""

    def run_jobs(self, jobs: Sequence[Job], *, timeout_s: float | None = None,
                 on_result: Callable[[Any], None] | None = None) -> list[Any]: ...

    size: int  # actors (jobs that can run at once)


@dataclass
class SearchSummary:
    run_id: str
    generations: int
    evaluations: int
    best_fitness: float
    best_spec: LossSpec | None
    stop_reasons: dict[str, str]
    wall_s: float
    train_s: float
    resumed_from: int | None = None
    history: list[dict] = field(default_factory=list)


def make_strategy(config: SearchConfig) -> CMAStrategy:
    """The CMA-ES of ``config`` over its family's genome."""
    family = losses.get_family(config.search.family)
    s = config.search
    return CMAStrategy(
        family.dim, popsize=s.popsize, sigma0=s.sigma0, seed=s.seed, x0=initial_genome(config),
        max_generations=s.generations, failure_margin=s.failure_margin, failure_floor=s.failure_floor,
    )


def decode_candidates(family_name: str, genomes: np.ndarray) -> list[LossSpec]:
    """Genomes → loss specs (every decoded value lies inside its parameter's valid range)."""
    family = losses.get_family(family_name)
    return [LossSpec(family_name, family.decode(g)) for g in np.asarray(genomes)]


def trainer_options(config: Any) -> dict[str, Any]:
    """The inner trainer's options from a search or compare config's ``[train]`` (the population
    trainer's ``compile``)."""
    return {"compile": config.train.compile} if config.train.trainer == "population" else {}


def make_jobs(generation: int, tasks: Sequence[Task], specs: Sequence[LossSpec], trainer: str,
              actors: int, *, candidates: Sequence[int] | None = None, tag: str = "",
              options: Mapping[str, Any] | None = None) -> list[Job]:
    """One job per task × chunk of candidates; candidates are split so that jobs ≥ actors.

    Chunks are contiguous and a pure function of (len(specs), len(tasks), actors), so a resumed
    run with the same cluster size forms the same jobs. ``candidates`` are the specs' indices in
    their generation (default 0..k-1); ``tag`` marks the job ids of a later rung (`search.fidelity`).
    """
    ids = list(range(len(specs))) if candidates is None else [int(c) for c in candidates]
    k = len(specs)
    chunks_per_task = max(1, min(k, math.ceil(max(actors, 1) / max(len(tasks), 1))))
    bounds = np.linspace(0, k, chunks_per_task + 1).round().astype(int)
    jobs = []
    for t, task in enumerate(tasks):
        for c in range(chunks_per_task):
            lo, hi = int(bounds[c]), int(bounds[c + 1])
            if lo == hi:
                continue
            jobs.append(Job(job_id=f"g{generation}-{tag}t{t}-c{c}", task=task, specs=tuple(specs[lo:hi]),
                            trainer=trainer, candidates=tuple(ids[lo:hi]), trainer_options=dict(options or {})))
    return jobs


def record_to_row(rec: Mapping[str, Any], task: Task, *, run_id: str, generation: int, metric_rule: str,
                  method: str = "", method_kind: str = "", fitness_rule: str = "",
                  version_change: str = "") -> dict[str, Any]:
    """A worker's record dict (EvalRecord fields + identity) → one evaluation row of results.schema."""
    n = task.noise
    return {
        "run_id": run_id, "generation": int(generation), "candidate": int(rec["candidate"]),
        "method": method, "method_kind": method_kind,
        "family": rec["family"], "params": rec.get("params") or {},
        "dataset": task.dataset, "arch": task.arch, "noise_type": n.kind, "noise_rate": float(n.rate),
        "noise_convention": rec.get("noise_convention") or convention_name(n),
        "noise_rate_realised": float(rec.get("noise_rate_realised", math.nan)),
        "seed": int(task.seed), "task_key": task.key(),
        "status": rec["status"], "error": rec.get("error") or "",
        "val_acc_last": float(rec["val_acc_last"]), "val_acc_best": float(rec["val_acc_best"]),
        "test_acc_last": float(rec["test_acc_last"]), "test_acc_best": float(rec["test_acc_best"]),
        "noisy_val_acc_best": float(rec.get("noisy_val_acc_best", math.nan)),
        "test_acc_noisy": float(rec.get("test_acc_noisy", math.nan)),
        "best_epoch": int(rec.get("best_epoch", -1)), "epochs_run": int(rec.get("epochs_run", 0)),
        "curve_val": [float(v) for v in rec.get("curve_val") or []],
        "train_loss_last": float(rec.get("train_loss_last", math.nan)),
        "wall_s": float(rec.get("wall_s", 0.0)), "device": rec.get("device") or "",
        "host": rec.get("host") or "", "trainer": rec.get("trainer") or "",
        "metric_rule": metric_rule, "fitness_metric": metric_column(metric_rule),
        "evoloss_version": rec.get("evoloss_version") or evoloss_version(),
        "torch_version": rec.get("torch_version") or "",
        "schema_version": SCHEMA_VERSION, "extra": rec.get("extra") or {},
        "execution": rec.get("execution") or "", "execution_note": rec.get("execution_note") or "",
        "protocol": rec.get("protocol") or "default", "clean_labels_used": int(rec.get("clean_labels_used", 0)),
        "fitness_rule": fitness_rule, "fidelity": float(rec.get("fidelity", 1.0)),
        "version_change": version_change,
    }


def _rows_from_results(results: Sequence[Any], jobs: Sequence[Job], **row_args: Any) -> list[dict]:
    by_id = {job.job_id: job for job in jobs}
    rows = []
    for res in results:
        job = by_id[res.job_id]
        # the fitness reads the task's clean validation split (none under the noisy rule)
        clean = fitness_clean_labels(job.task, row_args.get("metric_rule", "last"))
        for rec in res.records:
            row = record_to_row(rec, job.task, **row_args)
            row["clean_labels_used"] = max(row["clean_labels_used"], clean)
            rows.append(row)
    rows.sort(key=lambda r: (r["task_key"], r["candidate"]))
    return rows


def _generation_row(run_id: str, generation: int, fitness: Mapping[int, float], specs: Sequence[LossSpec],
                    strategy: CMAStrategy, rows: Sequence[Mapping], wall_s: float, grid_keys: list[str]) -> dict:
    finite = {c: f for c, f in fitness.items() if math.isfinite(f)}
    best_c = max(finite, key=lambda c: (finite[c], -c)) if finite else -1
    values = np.array(list(finite.values())) if finite else np.array([math.nan])
    return {
        "run_id": run_id, "generation": generation,
        "best_fitness": float(finite[best_c]) if finite else math.nan,
        "mean_fitness": float(np.mean(values)), "median_fitness": float(np.median(values)),
        "best_candidate": int(best_c), "best_params": dict(specs[best_c].params) if finite else {},
        "sigma": float(strategy.sigma), "evaluations": len(rows),
        "failed": sum(1 for r in rows if r["status"] != "ok"),
        "evals_per_s": len(rows) / wall_s if wall_s > 0 else math.nan, "wall_s": float(wall_s),
        "grid_subset": grid_keys, "timestamp": _dt.datetime.now(_dt.timezone.utc),
    }


def generation_state(config: SearchConfig, strategy: CMAStrategy, generation: int, run_id: str,
                     references: Mapping[str, float] | None = None) -> dict:
    """What the store keeps after ``generation``: the strategy (exact), the config, the run id and the
    CE references of the ``relative-ce`` fitness (`search.fidelity`)."""
    from evoloss.search.run_dir import config_hash, current_versions  # the resume checks (search.run_dir)

    data = config_dict(config)
    return {"strategy": strategy.state(), "generation": generation, "config": data, "run_id": run_id,
            "references": dict(sorted((references or {}).items())), "config_hash": config_hash(data),
            "versions": current_versions()}


def fitness_rule(config: SearchConfig) -> FitnessRule:
    """The `search.fitness.FitnessRule` of ``config``'s ``[grid]``."""
    g = config.grid
    return FitnessRule(score=g.fitness, aggregate=g.aggregate, quantile=g.quantile, metric_rule=g.metric_rule)


def halving_schedule(config: SearchConfig) -> HalvingSchedule | None:
    """The successive-halving step of ``config`` (`search.fidelity`), or None."""
    s = config.search
    return None if s.low_fidelity is None else HalvingSchedule(s.low_fidelity, s.finish_share)


def finish_generation(config: SearchConfig, strategy: CMAStrategy, store: ResultStore, *, run_id: str,
                      generation: int, genomes: np.ndarray, specs: Sequence[LossSpec], tasks: Sequence[Task],
                      jobs: Sequence[Job], results: Sequence[Any], started: float,
                      references: dict[str, float] | None = None, ref_ids: frozenset[str] = frozenset(),
                      low_ids: frozenset[str] = frozenset(),
                      finishers: Sequence[int] | None = None, version_change: str = "") -> tuple[dict, list[dict]]:
    """Rows → fitness → tell → generation row → store → state, the one order every engine follows.

    ``references`` (updated in place from the CE jobs ``ref_ids``), ``low_ids`` (the low-fidelity
    jobs) and ``finishers`` come from a successive-halving generation (`search.fidelity`).
    Returns the generation row and the evaluation rows. The state is saved last, so a crash before it
    leaves the generation incomplete and a resume redoes it (results.store contract).
    """
    rule, metric = fitness_rule(config), config.grid.metric_rule
    refs = references if references is not None else {}
    row_args = dict(run_id=run_id, generation=generation, metric_rule=metric, fitness_rule=rule.name,
                    version_change=version_change)
    refs.update(references_from_rows(_rows_from_results([r for r in results if r.job_id in ref_ids], jobs,
                                                        **row_args), metric))
    main = [r for r in results if r.job_id not in ref_ids]
    rows = _rows_from_results([r for r in main if r.job_id not in low_ids], jobs, **row_args)
    fit = fitness(rows, rule, candidates=range(len(specs)), references=refs)
    told = fit
    if low_ids:
        schedule = halving_schedule(config)
        low_rows = _rows_from_results([r for r in main if r.job_id in low_ids], jobs, **row_args)
        for row in low_rows:
            row["fidelity"] = schedule.fidelity(config.train.epochs) if schedule else row["fidelity"]
        low = fitness(low_rows, rule, candidates=range(len(specs)), references=refs)
        fit = {c: (fit[c] if c in set(finishers or ()) else math.nan) for c in fit}
        told = complete_ranking(fit, low, finishers or (), config.search.failure_margin)
        rows = sorted(low_rows + rows, key=lambda r: (r["task_key"], r["fidelity"], r["candidate"]))
    strategy.tell(genomes, [told[c] for c in range(len(specs))])
    wall = time.perf_counter() - started
    gen_row = _generation_row(run_id, generation, fit, specs, strategy, rows, wall, [t.key() for t in tasks])
    store.append(generation, rows, gen_row)
    store.save_state(generation, generation_state(config, strategy, generation, run_id, refs))
    return gen_row, rows


@dataclass
class GenerationPlan:
    """One generation as asked of the strategy: its genomes, their specs, its tasks and jobs."""

    index: int
    genomes: np.ndarray
    specs: list[LossSpec]
    tasks: list[Task]
    jobs: list[Job]
    started: float  # perf_counter() when the generation was asked (its generation row's wall_s)
    ref_ids: frozenset[str] = frozenset()  # CE reference jobs (relative-ce fitness)
    low_ids: frozenset[str] = frozenset()  # low-fidelity jobs (successive halving)
    finishers: list[int] | None = None  # candidates that train the full budget (after the low rung)


class GenerationLoop:
    """The generation loop every engine drives: resume, ask → jobs, progress, finish, stop, summary.

    An engine calls `start` for a generation's jobs, runs them its own way (a pool, Tune trials),
    reports ``job_ended`` as they end and hands every result to `finish`; it starts the next
    generation until `finished`. ``resumed_from`` is the store's last complete generation when the
    loop was built (None for a new run); ``history`` holds this call's generation rows.
    """

    def __init__(self, config: SearchConfig, store: ResultStore, *, run_id: str, progress: ProgressFn | None = None,
                 max_new_generations: int | None = None, version_change: str = "") -> None:
        self.config, self.store, self.run_id = config, store, run_id
        self.version_change = version_change  # recorded in every row this loop writes (an allowed resume)
        self.say: ProgressFn = progress or (lambda _line: None)
        self.max_new_generations = max_new_generations
        self.grid = grid_from_config(config)
        self.rule, self.schedule = fitness_rule(config), halving_schedule(config)
        self.references: dict[str, float] = {}
        if self.grid.left_out:
            self.say(left_out_line(self.grid.left_out, ((e.dataset, e.arch) for e in self.config.grid.exclude)))
        saved = store.load_state()
        self.strategy: CMAStrategy
        self.resumed_from: int | None
        self.restore(None if saved is None else saved[0], None if saved is None else saved[1])
        self.history: list[dict] = []
        self.train_s, self.started, self.done_now = 0.0, time.perf_counter(), 0
        self._classes: dict[str, int] | None = None  # dataset -> class count (`warn_near_chance`)
        self._near_chance_said: set[str] = set()

    def restore(self, generation: int | None, state: Mapping[str, Any] | None) -> None:
        """Continue after ``generation`` from its stored ``state`` (None, None: from the start)."""
        self.strategy = make_strategy(self.config)
        self.references = {}
        if state is not None:
            self.strategy.restore(state["strategy"])
            self.references = {str(k): float(v) for k, v in (state.get("references") or {}).items()}
        self.resumed_from = generation

    def finished(self) -> bool:
        """True when no further generation starts: the strategy stopped or ``max_new_generations`` ran."""
        limit = self.max_new_generations
        return bool(self.strategy.stop()) or (limit is not None and self.done_now >= limit)

    def jobs_per_generation(self, actors: int) -> int:
        """How many jobs `start` forms per generation on ``actors`` (a function of the counts only)."""
        genomes = np.zeros((self.config.search.popsize, self.strategy.config["dim"]))
        specs = decode_candidates(self.config.search.family, genomes)
        tasks = self.grid.tasks_for_generation(self.strategy.generation)
        return len(make_jobs(0, tasks, specs, self.config.train.trainer, actors))

    def start(self, actors: int) -> GenerationPlan:
        """Ask the strategy for the next generation and form its jobs for ``actors`` actors."""
        started = time.perf_counter()
        g = self.strategy.generation
        genomes = self.strategy.ask()
        specs = decode_candidates(self.config.search.family, genomes)
        tasks = self.grid.tasks_for_generation(g)
        trainer, options, low_ids = self.config.train.trainer, trainer_options(self.config), frozenset()
        if self.schedule is None:
            jobs = make_jobs(g, tasks, specs, trainer, actors, options=options)
        else:
            low = [with_epochs(t, self.schedule.low_epochs(self.config.train.epochs)) for t in tasks]
            jobs = make_jobs(g, low, specs, trainer, actors, tag="low-", options=options)
            low_ids = frozenset(j.job_id for j in jobs)
        refs = reference_jobs(g, tasks, self.references, trainer, options) if self.rule.needs_reference else []
        return GenerationPlan(index=g, genomes=genomes, specs=specs, tasks=tasks, jobs=jobs + refs, started=started,
                              ref_ids=frozenset(j.job_id for j in refs), low_ids=low_ids)

    def more_jobs(self, plan: GenerationPlan, results: Sequence[Any], actors: int) -> list[Job]:
        """The next rung's jobs after ``results`` (those of ``plan.jobs`` so far), appended to
        ``plan.jobs``; [] when the generation is complete (`search.fidelity`: the finishers)."""
        if self.schedule is None or plan.finishers is not None:
            return []
        refs = dict(self.references)
        metric, rule = self.config.grid.metric_rule, self.rule
        args = dict(run_id=self.run_id, generation=plan.index, metric_rule=metric)
        refs.update(references_from_rows(_rows_from_results([r for r in results if r.job_id in plan.ref_ids],
                                                            plan.jobs, **args), metric))
        low_rows = _rows_from_results([r for r in results if r.job_id in plan.low_ids], plan.jobs, **args)
        low = fitness(low_rows, rule, candidates=range(len(plan.specs)), references=refs)
        plan.finishers = choose_finishers(low, self.schedule.finishers(len(plan.specs)))
        extra = make_jobs(plan.index, plan.tasks, [plan.specs[c] for c in plan.finishers], self.config.train.trainer,
                          actors, candidates=plan.finishers, tag="full-", options=trainer_options(self.config))
        plan.jobs = plan.jobs + extra
        return extra

    def job_ended(self, plan: GenerationPlan, ended: int) -> None:
        """Progress within a generation: ``ended`` of its jobs have ended."""
        self.say(f"\rgen {plan.index}: {min(ended, len(plan.jobs))}/{len(plan.jobs)} jobs")

    def finish(self, plan: GenerationPlan, results: Sequence[Any]) -> dict:
        """Store the generation (`finish_generation`, results in job order) and print its line;
        returns its generation row."""
        gen_row, rows = finish_generation(self.config, self.strategy, self.store, run_id=self.run_id,
                                          generation=plan.index, genomes=plan.genomes, specs=plan.specs,
                                          tasks=plan.tasks, jobs=plan.jobs, results=results, started=plan.started,
                                          references=self.references, ref_ids=plan.ref_ids, low_ids=plan.low_ids,
                                          finishers=plan.finishers, version_change=self.version_change)
        self.train_s += sum(r["wall_s"] for r in rows)
        self.done_now += 1
        self.history.append(gen_row)
        self.warn_near_chance(rows)
        self.say(_progress_line(gen_row, plan.index, self.config.search.generations,
                                time.perf_counter() - self.started, self.done_now))
        return gen_row

    def warn_near_chance(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """One line, once per task, for a task on which every candidate of the generation stayed near
        chance (`search.fitness.near_chance_tasks`): it gives the fitness no signal."""
        if self._classes is None:
            found = {d: dataset_input(d, self.config.grid.data_dir) for d in self.config.grid.datasets}
            self._classes = {d: v[1] for d, v in found.items() if v is not None}
        column = metric_column(self.config.grid.metric_rule)
        for key, (best, classes) in near_chance_tasks(rows, self.config.grid.metric_rule, self._classes).items():
            if key in self._near_chance_said:
                continue
            self._near_chance_said.add(key)
            self.say(f"\rnote: task {key}: every candidate stayed near chance ({column} at most {best:.3f}, "
                     f"chance {1 / classes:.3f}), so it gives the fitness no signal; train longer (train.epochs) "
                     "or leave the pair out of the grid (grid.exclude)\n")

    def summary(self) -> SearchSummary:
        """The search so far: the store's complete generations, the stop reasons, this call's timings."""
        return _summary(self.config, self.store, self.strategy, self.run_id, time.perf_counter() - self.started,
                        self.train_s, self.resumed_from, self.history)


def run_search(config: SearchConfig, pool: JobRunnerPool, store: ResultStore, *, run_id: str,
               progress: ProgressFn | None = None, max_new_generations: int | None = None,
               version_change: str = "") -> SearchSummary:
    """Run (or resume) the search of ``config`` until the strategy stops.

    Resumes from ``store.load_state()`` when the store holds a complete generation. Returns the
    summary; every generation is already stored when this returns (or raises).
    ``max_new_generations`` stops early after that many generations of this call (tests use it to
    simulate an interrupted run). ``version_change`` (e.g. ``"torch 2.14.1 -> 2.15.0"``, a resume
    across versions that was allowed) goes into the ``version_change`` column of every new row.
    """
    loop = GenerationLoop(config, store, run_id=run_id, progress=progress, max_new_generations=max_new_generations,
                          version_change=version_change)
    while not loop.finished():
        plan = loop.start(pool.size)
        ended = [0]

        def on_result(_res: Any, plan: GenerationPlan = plan) -> None:
            ended[0] += 1
            loop.job_ended(plan, ended[0])

        results = pool.run_jobs(plan.jobs, timeout_s=config.cluster.timeout_s, on_result=on_result)
        while extra := loop.more_jobs(plan, results, pool.size):  # successive halving's next rung
            results = results + pool.run_jobs(extra, timeout_s=config.cluster.timeout_s, on_result=on_result)
        loop.finish(plan, results)
    return loop.summary()


def _progress_line(gen_row: Mapping, g: int, total: int, elapsed: float, done_now: int) -> str:
    """The line printed after generation ``g`` (of ``total``): fitness, sigma, speed, failures, ETA."""
    eta = elapsed / done_now * max(total - g - 1, 0)
    return (f"\rgen {g + 1}/{total}  best {gen_row['best_fitness']:.4f}  mean {gen_row['mean_fitness']:.4f}  "
            f"sigma {gen_row['sigma']:.3g}  {gen_row['evals_per_s']:.2f} evals/s  "
            f"failed {gen_row['failed']}  ETA {eta:.0f}s\n")


def _summary(config: SearchConfig, store: ResultStore, strategy: CMAStrategy, run_id: str, wall: float,
                   train_s: float, resumed_from: int | None, history: list[dict]) -> SearchSummary:
    """The `SearchSummary` of a search whose strategy is ``strategy``, read from its store."""
    best = best_candidate(store, config.grid.metric_rule)
    evals = store.read(complete_only=True)
    return SearchSummary(
        run_id=run_id, generations=len(store.generations_done()), evaluations=len(evals),
        best_fitness=best[1] if best else math.nan, best_spec=best[0] if best else None,
        stop_reasons=strategy.stop(), wall_s=wall, train_s=train_s, resumed_from=resumed_from, history=history,
    )
