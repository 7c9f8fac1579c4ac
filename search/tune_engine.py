"""The search under Ray Tune: the evaluation as a Tune trainable, CMA-ES as a Tune `Searcher`.

`run_search_tune` runs the same search as `search.coordinator.run_search` (same jobs, rows,
generation rows, state and resume through the same store and the same `GenerationLoop`), but
`ray.tune.Tuner` schedules the jobs:

- `EvalTrainable` (class trainable, ``reuse_actors=True``) runs one `workers.jobs.Job` per
  trial through a `JobRunner` that lives as long as the actor, so a reused actor keeps its imported
  torch and its task-data cache (measured here: a fresh trial costs ~3–4 s, a reused one ~0.03 s).
  A job running past ``cluster.timeout_s`` raises `JobTimedOut`; the errored actor is then stopped.
- `CMASearcher` hands out one job per ``suggest`` from the current generation, collects the records
  in ``on_trial_complete`` and, once every job of the generation has a result, tells the strategy
  and stores the generation. It is wrapped in ``ConcurrencyLimiter(batch=True)`` (the
  generation barrier), with ``max_concurrent`` = the jobs of one generation.

Failure rules (the native pool's, `search.dispatch`): a trainer that raises comes back as
``failed`` records from the runner itself; a trial that errors (its actor died) is re-run as a new
trial at most ``max_retries`` times, then its candidates get ``failed`` records carrying Tune's
error text; a `JobTimedOut` trial gets ``timeout`` records and is not re-run. Tune's own retry is
off (``max_failures=0``) so that the searcher sees every failure and a generation never stalls.

Measured cost of the barrier (bench/engines.py, BENCHMARKS.md "Engines"): when the last trial of
a generation ends, no trial of the next one exists yet, so Tune's actor cache keeps one idle actor
and stops the others; the next generation's trials reuse that one and request new actors, and a
new actor that is not ready before the cached one frees up is cancelled. Jobs shorter than an actor
start-up (~3–10 s here) therefore run one at a time after generation 0; longer jobs pay one actor
start per extra actor per generation. The native pool keeps its actors for the whole search.

Choices: Tune's result files go to ``<run_dir>/tune/<experiment>`` (JSON and CSV loggers only,
one directory per trial named after its job); Tune's experiment checkpoint gets a JSON snapshot of
the searcher (`CMASearcher.save`; Tune names the file ``searcher-state-*.pkl``), but resume goes
through the store (``evoloss search --resume``), never through ``Tuner.restore``. When Ray is
already initialised in this process (tests, notebooks) the search uses it; otherwise Ray is
started as the native engine starts it (`search.engine.owned_ray`).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from evoloss.results.store import ResultStore
from evoloss.search.config import ClusterSection, SearchConfig
from evoloss.search.ray_runtime import ray, tune_api
from evoloss.search.coordinator import GenerationLoop, GenerationPlan, ProgressFn, SearchSummary, generation_state
from evoloss.search.dispatch import actor_count, dispatch_order
from evoloss.search.strategy import CMAStrategy
from evoloss.workers.jobs import (
    DEFAULT_MATERIALIZER, DEFAULT_TRAINER_MODULES, Job, JobResult, JobRunner, failure_records, pick_device,
    threads_for,
)

_TUNE = tune_api()
tune = _TUNE.tune
CSVLoggerCallback, JsonLoggerCallback = _TUNE.CSVLoggerCallback, _TUNE.JsonLoggerCallback
ConcurrencyLimiter, Searcher = _TUNE.ConcurrencyLimiter, _TUNE.Searcher

_ERROR_TEXT_LIMIT = 4000


class JobTimedOut(RuntimeError):
    """A job ran past its ``timeout_s`` inside a trial (the trial errors; its records say ``timeout``)."""


@dataclass(frozen=True)
class TuneEngineOptions:
    """What the actors import and how failures are retried (defaults: the native pool's)."""

    materializer: str = DEFAULT_MATERIALIZER
    trainer_modules: tuple[str, ...] = DEFAULT_TRAINER_MODULES
    cache_size: int = 4
    max_retries: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "trainer_modules", tuple(self.trainer_modules))
        if isinstance(self.cache_size, bool) or not isinstance(self.cache_size, int) or self.cache_size < 1:
            raise ValueError(f"TuneEngineOptions.cache_size must be an integer >= 1; got {self.cache_size!r}")
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ValueError(f"TuneEngineOptions.max_retries must be an integer >= 0; got {self.max_retries!r}")


def run_job_with_timeout(runner: JobRunner, job: Mapping[str, Any], timeout_s: float | None) -> list[dict]:
    """``runner.run_job(job)`` in a daemon thread; `JobTimedOut` when it runs past ``timeout_s``.

    The thread cannot be stopped: the caller must let its process end (the trial errors, and Tune
    stops an errored trial's actor instead of reusing it).
    """
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["records"] = runner.run_job(job)
        except BaseException as exc:  # re-raised in the calling thread
            box["error"] = exc

    thread = threading.Thread(target=work, name=f"job-{job.get('job_id', '?')}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise JobTimedOut(f"job {job.get('job_id')!r} ran past timeout_s={timeout_s:g}: trial errored, actor stopped")
    if "error" in box:
        raise box["error"]
    return box["records"]


def trial_result(job_id: str, records: list[dict], wall_s: float) -> dict[str, Any]:
    """What a trial reports (once, ``done``): the job's records as JSON text, so that Tune's result
    flattening and loggers keep them intact, and the job's wall time."""
    return {"job_id": job_id, "records_json": json.dumps(records), "candidates": len(records),
            "job_wall_s": float(wall_s), "done": True}


class EvalTrainable(tune.Trainable):
    """One trial = one job. Config: ``{"job": Job.to_dict(), "runner": {...}, "timeout_s": float|None}``."""

    def setup(self, config: dict) -> None:
        import torch  # once per actor: reused trials skip this (and the trainer imports below)

        runner = dict(config["runner"])
        torch.set_num_threads(threads_for(float(runner["cpus"])))
        self._runner_config = runner
        self._runner = JobRunner(
            device=pick_device(ray.get_gpu_ids(), torch.cuda.is_available()), cache_size=int(runner["cache_size"]),
            materializer=runner["materializer"], trainer_modules=list(runner["trainer_modules"]),
            origin={"host": os.uname().nodename, "node_ip": ray.util.get_node_ip_address(), "worker_pid": os.getpid()},
        )
        self._job, self._timeout_s = config["job"], config.get("timeout_s")

    def step(self) -> dict:
        start = time.perf_counter()
        records = run_job_with_timeout(self._runner, self._job, self._timeout_s)
        return trial_result(self._job["job_id"], records, time.perf_counter() - start)

    def reset_config(self, new_config: dict) -> bool:
        if dict(new_config["runner"]) != self._runner_config:
            self.setup(new_config)
        self._job, self._timeout_s = new_config["job"], new_config.get("timeout_s")
        return True


@dataclass
class _Generation:
    """The jobs of one generation (its `GenerationPlan`) and what came back for them."""

    plan: GenerationPlan
    queue: deque[int]
    attempts: list[int]
    results: dict[int, JobResult] = field(default_factory=dict)
    trials_ended: int = 0

    @property
    def index(self) -> int:
        return self.plan.index

    @property
    def jobs(self) -> list[Job]:
        return self.plan.jobs

    def job_result(self, index: int, records: list[dict], status: str, wall_s: float, error: str = "") -> None:
        self.results[index] = JobResult(self.jobs[index].job_id, status, records, self.attempts[index], wall_s,
                                        error=error)

    @property
    def complete(self) -> bool:
        return len(self.results) == len(self.jobs)


class CMASearcher(Searcher):
    """CMA-ES (`search.strategy.CMAStrategy`) as a Tune `Searcher` over the jobs of each generation.

    ``suggest`` returns the next job of the current generation (longest first), None while the
    generation's last jobs run, and ``FINISHED`` once the strategy stops (or after
    ``max_new_generations``). ``on_trial_complete`` turns each trial into a `JobResult`; the last one
    completes the generation through the coordinator's `GenerationLoop` (rows, fitness, tell,
    generation row, store, state, in its order). An error in that step (e.g. the store) is kept in ``failure`` and ends
    the search (Tune would otherwise only log it); `run_search_tune` re-raises it.
    """

    def __init__(self, config: SearchConfig, store: ResultStore, *, run_id: str, actors: int,
                 options: TuneEngineOptions | None = None, progress: ProgressFn | None = None,
                 max_new_generations: int | None = None) -> None:
        super().__init__(metric=None, mode=None)
        if isinstance(actors, bool) or not isinstance(actors, int) or actors < 1:
            raise ValueError(f"CMASearcher: actors must be an integer >= 1 (trials that run at once); got {actors!r}")
        self.config, self.store, self.run_id, self.actors = config, store, run_id, actors
        self.options = options or TuneEngineOptions()
        self.loop = GenerationLoop(config, store, run_id=run_id, progress=progress,
                                   max_new_generations=max_new_generations)
        self.failure: BaseException | None = None
        self.error_text = lambda trial_id: ""  # set by the `TrialWatcher` of the run
        self._current: _Generation | None = None
        self._trials: dict[str, tuple[int, float]] = {}
        self._runner = {"cpus": config.cluster.cpus_per_actor, "cache_size": self.options.cache_size,
                        "materializer": self.options.materializer,
                        "trainer_modules": list(self.options.trainer_modules)}

    @property
    def strategy(self) -> CMAStrategy:
        """The CMA-ES being searched with (the loop's)."""
        return self.loop.strategy

    @property
    def resumed_from(self) -> int | None:
        """The complete generation this search continued from (None: a new search)."""
        return self.loop.resumed_from

    def jobs_per_generation(self) -> int:
        """How many jobs `make_jobs` forms per generation (a function of the counts only)."""
        return self.loop.jobs_per_generation(self.actors)

    def finished(self) -> bool:
        """True when no further generation will start."""
        return self.failure is not None or self.loop.finished()

    def suggest(self, trial_id: str) -> dict | str | None:
        if self.failure is not None:
            return Searcher.FINISHED
        if self._current is None:
            if self.finished():
                return Searcher.FINISHED
            self._current = self._start_generation()
        gen = self._current
        if not gen.queue:
            return None
        index = gen.queue.popleft()
        gen.attempts[index] += 1
        self._trials[trial_id] = (index, time.monotonic())
        return {"job": gen.jobs[index].to_dict(), "runner": self._runner, "timeout_s": self.config.cluster.timeout_s}

    def _start_generation(self) -> _Generation:
        plan = self.loop.start(self.actors)
        return _Generation(plan=plan, queue=deque(dispatch_order(plan.jobs)), attempts=[0] * len(plan.jobs))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        entry, gen = self._trials.pop(trial_id, None), self._current
        if entry is None or gen is None:
            return
        try:
            self._collect(gen, entry, trial_id, result, error)
            if gen.complete:
                self._complete_generation(gen)
        except Exception as exc:  # noqa: BLE001 - kept and re-raised by run_search_tune after Tune stops
            self.failure, self._current = exc, None

    def _collect(self, gen: _Generation, entry: tuple[int, float], trial_id: str, result: dict | None,
                 error: bool) -> None:
        """Record one trial's outcome for its job, or queue the job again (an errored trial, retries left)."""
        index, handed_out = entry
        job, wall = gen.jobs[index], time.monotonic() - handed_out
        if not error and result is not None and "records_json" in result:
            records = json.loads(result["records_json"])
            if len(records) == len(job.specs):
                gen.job_result(index, records, "ok", float(result.get("job_wall_s", wall)))
                return
            text, status = f"trial returned {len(records)} records for {len(job.specs)} specs", "failed"
        else:
            text = self.error_text(trial_id) or f"trial {trial_id} of job {job.job_id!r} errored (no error file)"
            status = "timeout" if JobTimedOut.__name__ in text else "failed"
            if status == "failed" and gen.attempts[index] <= self.options.max_retries:
                gen.queue.appendleft(index)  # its actor died: a new trial re-runs the job first
                return
        text = text[-_ERROR_TEXT_LIMIT:]
        gen.job_result(index, failure_records(job, status, text, wall_s=wall), status, wall, error=text)

    def _complete_generation(self, gen: _Generation) -> None:
        """Rows → fitness → tell → generation row → store → state (`GenerationLoop.finish`, results in
        job order)."""
        self.loop.finish(gen.plan, [gen.results[i] for i in range(len(gen.jobs))])
        self._current = None

    def state_after(self, generation: int) -> dict[str, Any]:
        """The store state after ``generation`` (the same keys as the native coordinator's)."""
        return generation_state(self.config, self.strategy, generation, self.run_id)

    def trial_ended(self, trial_id: str) -> None:
        """Progress: one more job of the current generation ended (from `TrialWatcher`)."""
        gen = self._current
        if gen is not None and trial_id in self._trials:
            gen.trials_ended += 1  # a re-run job counts once per trial
            self.loop.job_ended(gen.plan, gen.trials_ended)

    def save(self, checkpoint_path: str) -> None:
        """A JSON snapshot for Tune's experiment checkpoint: the last complete generation's state."""
        done = self.store.load_state()
        snapshot = {"format": "evoloss.tune-searcher/1", "run_id": self.run_id,
                    "generation": None if done is None else done[0], "state": None if done is None else done[1]}
        Path(checkpoint_path).write_text(json.dumps(snapshot), encoding="utf-8")

    def restore(self, checkpoint_path: str) -> None:
        """Continue from a `save` snapshot: the strategy of its last complete generation (no pending jobs)."""
        snapshot = json.loads(Path(checkpoint_path).read_text(encoding="utf-8"))
        if not isinstance(snapshot, dict) or snapshot.get("format") != "evoloss.tune-searcher/1":
            raise ValueError(f"{checkpoint_path!r} is not a CMASearcher snapshot (written by CMASearcher.save)")
        self.loop.restore(snapshot["generation"], snapshot["state"])
        self._current, self._trials = None, {}


class TrialWatcher(tune.Callback):
    """Tells the searcher each trial's error text (Tune hands the searcher only the trial id) and progress."""

    def __init__(self, searcher: CMASearcher) -> None:
        self.searcher = searcher
        self._trials: dict[str, Any] = {}
        searcher.error_text = self.error_text

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._trials[trial.trial_id] = trial

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.searcher.trial_ended(trial.trial_id)
        self._trials.pop(trial.trial_id, None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.searcher.trial_ended(trial.trial_id)

    def error_text(self, trial_id: str) -> str:
        """The tail of the trial's error file (plain text written by Tune), or "" when there is none."""
        trial = self._trials.get(trial_id)
        path = getattr(trial, "error_file", None) if trial is not None else None
        if not path or not os.path.isfile(path):
            return ""
        return Path(path).read_text(encoding="utf-8", errors="replace")[-_ERROR_TEXT_LIMIT:].strip()


def trial_name(trial: Any) -> str:
    """A trial is named after its job (``g3-t1-c0``)."""
    return str(trial.config["job"]["job_id"])


def trial_dirname(trial: Any) -> str:
    """One directory per trial: job id and trial id (a re-run job gets a new trial id)."""
    return f"{trial.config['job']['job_id']}_{trial.trial_id}"


@contextlib.contextmanager
def _connected_ray(cluster: ClusterSection, run_dir: Path, address: str | None) -> Iterator[None]:
    """Use the Ray this process is already connected to (``address`` is then not used), else start one
    the way the native engine does (`search.engine.owned_ray`: a killed predecessor's Ray ended first,
    this one recorded by exact identity; embedded, or joining ``address``)."""
    if ray.is_initialized():
        yield
        return
    from evoloss.search.engine import owned_ray

    with owned_ray(cluster, Path(run_dir), address=address):
        yield


TUNE_ENVIRONMENT = {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1", "RAY_AIR_NEW_OUTPUT": "0"}
"""Set while the Tuner runs: no TensorBoard logger (we pass the JSON and CSV ones), and Tune's
classic output engine, which ``verbose=0`` silences (the new one prints its tables anyway)."""


@contextlib.contextmanager
def _tune_environment() -> Iterator[None]:
    """`TUNE_ENVIRONMENT` for the block (Tune reads these in the driver when ``fit`` starts); restored after."""
    saved = {key: os.environ.get(key) for key in TUNE_ENVIRONMENT}
    os.environ.update(TUNE_ENVIRONMENT)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def make_tuner(searcher: CMASearcher, cluster: ClusterSection, storage_path: Path, name: str) -> tune.Tuner:
    """The `tune.Tuner` of one search: `EvalTrainable` on actor-sized resources, the searcher behind a
    ``ConcurrencyLimiter(batch=True)`` of one generation's jobs, actors reused, Tune's retries off."""
    resources = {"cpu": cluster.cpus_per_actor, "gpu": cluster.gpus_per_actor}
    limiter = ConcurrencyLimiter(searcher, max_concurrent=searcher.jobs_per_generation(), batch=True)
    return tune.Tuner(
        tune.with_resources(EvalTrainable, resources),
        tune_config=tune.TuneConfig(search_alg=limiter, num_samples=-1, reuse_actors=True,
                                    trial_name_creator=trial_name, trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(name=name, storage_path=str(storage_path.absolute()), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=0),
                                  checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=0,
                                                                          checkpoint_at_end=False),
                                  callbacks=[TrialWatcher(searcher), JsonLoggerCallback(), CSVLoggerCallback()]),
    )


def run_search_tune(config: SearchConfig, store: ResultStore, *, run_id: str, run_dir: str | Path,
                    address: str | None = None, progress: ProgressFn | None = None,
                    options: TuneEngineOptions | None = None,
                    max_new_generations: int | None = None, version_change: str = "") -> SearchSummary:
    """Run (or resume) the search of ``config`` under ``ray.tune.Tuner``; the same rows as `run_search`.

    Args:
        store: the run's store; a complete generation in it is resumed from (as the native engine).
        run_dir: Tune writes under ``run_dir/tune``; an embedded Ray keeps its temp files in ``run_dir/ray``.
        address: a Ray cluster to join (default ``config.cluster.address``, else an embedded Ray).
        options: what the actors import and how many times a dead trial is re-run.
        max_new_generations: stop after that many generations of this call (tests: an interrupted run).
        version_change: recorded in every new row (a resume across versions that was allowed).
    Raises:
        whatever stopped the generation step (e.g. the store), after Tune has shut its trials down.
    """
    run_dir = Path(run_dir)
    with _connected_ray(config.cluster, run_dir, address):
        cluster = config.cluster
        actors = actor_count(ray.cluster_resources(), cluster.cpus_per_actor, cluster.gpus_per_actor)
        searcher = CMASearcher(config, store, run_id=run_id, actors=actors, options=options, progress=progress,
                               max_new_generations=max_new_generations)
        searcher.loop.version_change = version_change
        name = f"tune-gen{searcher.strategy.generation:06d}-{_dt.datetime.now():%Y%m%d-%H%M%S-%f}"
        if not searcher.finished():
            with _tune_environment():
                make_tuner(searcher, cluster, run_dir / "tune", name).fit()
    if searcher.failure is not None:
        raise searcher.failure
    return searcher.loop.summary()


__all__ = [
    "CMASearcher",
    "EvalTrainable",
    "JobTimedOut",
    "TrialWatcher",
    "TuneEngineOptions",
    "make_tuner",
    "run_job_with_timeout",
    "run_search_tune",
    "trial_dirname",
    "trial_result",
    "trial_name",
]
