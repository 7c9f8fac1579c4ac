"""The coordinator-side actor pool: jobs to persistent `EvalActor`s, with timeouts and replacement.

`ActorPool.run_jobs(jobs, timeout_s=..., on_result=...)` keeps every actor busy (longest job first),
reports each job as it finishes, and never lets one job stall a generation:

- an actor that dies (``RayActorError``/``ActorDiedError``, a crashed worker, a lost node) is
  replaced by a fresh one and its job re-run, at most ``max_retries`` times; after that the job's
  candidates come back ``failed`` with the reason;
- a job that runs past ``timeout_s`` comes back ``timeout`` (CMA-ES tolerates a few badly scored candidates: time stragglers out
  instead of stalling); its actor is killed with ``ray.kill`` and replaced, the other jobs go on;
- a trainer that raises comes back ``failed`` from the actor itself (workers/jobs.py, run by the actor in workers/ray_actors.py).

``ray.util.ActorPool`` is not used: it does not re-run a job whose actor died, has no per-job
timeout, and hands back results without their job. The loop waits with ``ray.wait(num_returns=1,
timeout=...)``, so the coordinator sleeps until a job or an actor start finishes or a deadline passes.

Timing rule: a job's clock starts when it is submitted to an actor that is ready (torch imported,
trainers registered), so actor start-up never counts against ``timeout_s``. An actor that fails to
start, or is not ready after ``actor_start_timeout_s``, is dropped (not replaced: that is an
environment problem, not a transient one); when no actor is left the remaining jobs fail with the reason.
"""
from __future__ import annotations

import contextlib
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from evoloss.search.ray_runtime import RayActorError, RayError, RayTaskError, ray

from evoloss.workers.jobs import (
    DEFAULT_MATERIALIZER, DEFAULT_TRAINER_MODULES, JOB_STATUSES, Job, JobResult, failure_records,
)
from evoloss.workers.ray_actors import EvalActor


@dataclass(frozen=True)
class PoolConfig:
    """How the pool is sized and behaves. ``num_actors=None``: as many as the cluster's CPUs (and
    GPUs, when ``gpus_per_actor`` > 0; fractional shares allowed) hold."""

    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    num_actors: int | None = None
    max_retries: int = 2
    cache_size: int = 4
    materializer: str = DEFAULT_MATERIALIZER
    trainer_modules: tuple[str, ...] = DEFAULT_TRAINER_MODULES
    poll_s: float = 0.5
    actor_start_timeout_s: float = 300.0

    def __post_init__(self) -> None:
        _check_positive("cpus_per_actor", self.cpus_per_actor)
        if not (math.isfinite(self.gpus_per_actor) and self.gpus_per_actor >= 0):
            raise ValueError(f"PoolConfig.gpus_per_actor must be >= 0 (a fraction shares a GPU); got {self.gpus_per_actor!r}")
        if self.num_actors is not None and (not isinstance(self.num_actors, int) or self.num_actors < 1):
            raise ValueError(f"PoolConfig.num_actors must be an integer >= 1 or None (= fill the cluster); got {self.num_actors!r}")
        if not isinstance(self.cache_size, int) or self.cache_size < 1:
            raise ValueError(f"PoolConfig.cache_size must be an integer >= 1 (tasks cached per actor); got {self.cache_size!r}")
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ValueError(f"PoolConfig.max_retries must be an integer >= 0; got {self.max_retries!r}")
        _check_positive("poll_s", self.poll_s)
        _check_positive("actor_start_timeout_s", self.actor_start_timeout_s)
        object.__setattr__(self, "trainer_modules", tuple(self.trainer_modules))


def _check_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"PoolConfig.{name} must be a positive number; got {value!r}")


def actor_count(resources: Mapping[str, float], cpus_per_actor: float, gpus_per_actor: float = 0.0,
                requested: int | None = None) -> int:
    """How many actors fit in ``resources`` (Ray's ``cluster_resources()``): CPUs // cpus_per_actor,
    and GPUs // gpus_per_actor when actors take GPU shares. ``requested`` must fit, or ValueError."""
    cpus, gpus = float(resources.get("CPU", 0.0)), float(resources.get("GPU", 0.0))
    fit = math.floor(cpus / cpus_per_actor + 1e-9)
    if gpus_per_actor > 0:
        fit = min(fit, math.floor(gpus / gpus_per_actor + 1e-9))
    if fit < 1:
        raise ValueError(
            f"the cluster has CPU={cpus:g}, GPU={gpus:g}: not enough for one actor with "
            f"cpus_per_actor={cpus_per_actor:g}, gpus_per_actor={gpus_per_actor:g}; lower them or add resources"
        )
    if requested is not None and requested > fit:
        raise ValueError(f"num_actors={requested} does not fit: the cluster holds {fit} actors of this size; use <= {fit}")
    return requested or fit


def dispatch_order(jobs: Sequence[Job]) -> list[int]:
    """Indices of ``jobs``, largest `Job.estimated_cost` first (longest-processing-time), ties in input order."""
    return sorted(range(len(jobs)), key=lambda i: -jobs[i].estimated_cost())


@dataclass
class _Slot:
    """One actor and what the pool knows of it."""

    actor: Any
    created: float
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Running:
    index: int
    slot: _Slot
    started: float


class ActorPool:
    """A fixed-size pool of persistent `EvalActor`s on the connected Ray cluster (see module docstring).

    Use as a context manager (or call `shutdown`) so the actors are killed at the end. Actors persist
    across `run_jobs` calls, so each generation reuses their imported torch and cached task data.
    """

    def __init__(self, config: PoolConfig | None = None) -> None:
        if not ray.is_initialized():
            raise RuntimeError("ActorPool needs a running Ray: enter search.ray_runtime.start_ray(...) first")
        self.config = config or PoolConfig()
        self.size = actor_count(ray.cluster_resources(), self.config.cpus_per_actor,
                                self.config.gpus_per_actor, self.config.num_actors)
        self.counters = {"actor_deaths": 0, "retries": 0, "timeouts": 0, "start_failures": 0}
        self.lost_reasons: list[str] = []
        self._idle: deque[_Slot] = deque()
        self._starting: dict[Any, _Slot] = {}
        for _ in range(self.size):
            self._start_actor()
        self._wait_for_starts()

    # --- actors ----------------------------------------------------------------------------------
    def _start_actor(self) -> None:
        cfg = self.config
        actor = EvalActor.options(num_cpus=cfg.cpus_per_actor, num_gpus=cfg.gpus_per_actor).remote(
            cpus=cfg.cpus_per_actor, cache_size=cfg.cache_size, materializer=cfg.materializer,
            trainer_modules=list(cfg.trainer_modules))
        self._starting[actor.ready.remote()] = _Slot(actor=actor, created=time.monotonic())

    def _wait_for_starts(self) -> None:
        """Block until every starting actor is ready or dropped; raise if none is left."""
        while self._starting:
            ready, _ = ray.wait(list(self._starting), num_returns=1, timeout=self._start_wait_s())
            for ref in ready:
                self._on_actor_ready(ref)
            self._expire_starts()
        if not self._idle:
            raise RuntimeError(f"no evaluation actor could be started: {'; '.join(self.lost_reasons)}")

    def _on_actor_ready(self, ref: Any) -> None:
        slot = self._starting.pop(ref)
        try:
            slot.info = ray.get(ref)
        except RayError as exc:
            self._drop(slot, f"actor failed to start: {_short(exc)}")
            return
        self._idle.append(slot)

    def _expire_starts(self) -> None:
        limit = self.config.actor_start_timeout_s
        now = time.monotonic()
        for ref, slot in list(self._starting.items()):
            if now - slot.created > limit:
                del self._starting[ref]
                self._drop(slot, f"actor not ready after actor_start_timeout_s={limit:g}")

    def _drop(self, slot: _Slot, reason: str) -> None:
        self.counters["start_failures"] += 1
        self.lost_reasons.append(reason)
        _kill(slot.actor)

    def _replace(self, slot: _Slot) -> None:
        """Kill ``slot``'s actor (whatever its state) and start a fresh one in its place."""
        _kill(slot.actor)
        self._start_actor()

    def _start_wait_s(self) -> float:
        if not self._starting:
            return self.config.poll_s
        oldest = min(s.created for s in self._starting.values())
        left = self.config.actor_start_timeout_s - (time.monotonic() - oldest)
        return max(0.0, min(self.config.poll_s, left))

    @property
    def alive(self) -> int:
        """Actors ready or starting (busy ones are counted by `run_jobs` while it runs)."""
        return len(self._idle) + len(self._starting)

    def actor_info(self) -> list[dict[str, Any]]:
        """The ``ready()`` answer (node_ip, host, pid, device, threads) of each idle actor."""
        return [dict(s.info) for s in self._idle]

    def shutdown(self) -> None:
        """Kill every actor of the pool (idempotent)."""
        for slot in list(self._idle) + list(self._starting.values()):
            _kill(slot.actor)
        self._idle.clear()
        self._starting.clear()

    def __enter__(self) -> "ActorPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # --- jobs ------------------------------------------------------------------------------------
    def run_jobs(self, jobs: Sequence[Job], *, timeout_s: float | None = None,
                 on_result: Callable[[JobResult], None] | None = None) -> list[JobResult]:
        """Run ``jobs`` on the pool; return one `JobResult` per job in input order.

        ``on_result`` is called with each result as it finishes (completion order), for progress.
        ``timeout_s`` bounds each job's run on its actor (None: no limit).
        """
        _check_jobs(jobs, timeout_s)
        run = _Run(self, list(jobs), timeout_s, on_result)
        try:
            run.loop()
        finally:
            run.abandon()
        return [r for r in run.results if r is not None]


def _check_jobs(jobs: Sequence[Job], timeout_s: float | None) -> None:
    if timeout_s is not None and (isinstance(timeout_s, bool) or not (isinstance(timeout_s, (int, float))
                                                                      and math.isfinite(timeout_s) and timeout_s > 0)):
        raise ValueError(f"timeout_s must be a positive number of seconds or None; got {timeout_s!r}")
    ids = [getattr(j, "job_id", None) for j in jobs]
    if not all(isinstance(j, Job) for j in jobs):
        raise TypeError("run_jobs expects evoloss.workers.jobs.Job objects")
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"job ids must be unique within one run_jobs call; duplicated: {dup}")


class _Run:
    """The state of one `run_jobs` call: queue, jobs in flight, attempts, results."""

    def __init__(self, pool: ActorPool, jobs: list[Job], timeout_s: float | None,
                 on_result: Callable[[JobResult], None] | None) -> None:
        self.pool, self.jobs, self.timeout_s, self.on_result = pool, jobs, timeout_s, on_result
        self.queue: deque[int] = deque(dispatch_order(jobs))
        self.running: dict[Any, _Running] = {}
        self.attempts = [0] * len(jobs)
        self.results: list[JobResult | None] = [None] * len(jobs)

    def loop(self) -> None:
        pool = self.pool
        while self.queue or self.running:
            self.submit()
            if not self.running and not pool._starting:
                self.fail_queue(f"no evaluation actor is left: {'; '.join(pool.lost_reasons) or 'all were lost'}")
                break
            waitables = list(self.running) + list(pool._starting)
            ready, _ = ray.wait(waitables, num_returns=1, timeout=self.wait_s())
            for ref in ready:
                if ref in pool._starting:
                    pool._on_actor_ready(ref)
                else:
                    self.collect(ref, self.running.pop(ref))
            self.expire()
            pool._expire_starts()

    def submit(self) -> None:
        while self.queue and self.pool._idle:
            index, slot = self.queue.popleft(), self.pool._idle.popleft()
            self.attempts[index] += 1
            ref = slot.actor.run_job.remote(self.jobs[index].to_dict())
            self.running[ref] = _Running(index=index, slot=slot, started=time.monotonic())

    def wait_s(self) -> float:
        wait = self.pool._start_wait_s()
        if self.timeout_s is not None and self.running:
            first = min(r.started for r in self.running.values())
            wait = min(wait, self.timeout_s - (time.monotonic() - first))
        return max(0.0, wait)

    def collect(self, ref: Any, run: _Running) -> None:
        job, wall = self.jobs[run.index], time.monotonic() - run.started
        try:
            records = ray.get(ref)
        except RayTaskError as exc:  # run_job itself raised (the actor is alive): the job is bad
            self.pool._idle.append(run.slot)
            self.finish(run.index, "failed", f"job {job.job_id!r} raised on the actor: {_short(exc)}", wall, run.slot)
            return
        except (RayActorError, RayError) as exc:  # the actor, its worker or its node is gone
            self.on_actor_death(run, exc, wall)
            return
        self.pool._idle.append(run.slot)
        if not isinstance(records, list) or len(records) != len(job.specs):
            self.finish(run.index, "failed", f"actor returned {records!r:.200} for {len(job.specs)} specs", wall, run.slot)
            return
        self.store(JobResult(job.job_id, "ok", records, self.attempts[run.index], wall,
                             node_ip=str(run.slot.info.get("node_ip", ""))), run.index)

    def on_actor_death(self, run: _Running, exc: BaseException, wall: float) -> None:
        pool, job = self.pool, self.jobs[run.index]
        pool.counters["actor_deaths"] += 1
        pool._replace(run.slot)
        if self.attempts[run.index] <= pool.config.max_retries:
            pool.counters["retries"] += 1
            self.queue.appendleft(run.index)  # re-run first, on the next ready actor
            return
        reason = (f"actor died {self.attempts[run.index]} times running job {job.job_id!r} "
                  f"(max_retries={pool.config.max_retries}); last: {_short(exc)}")
        self.finish(run.index, "failed", reason, wall, run.slot)

    def expire(self) -> None:
        if self.timeout_s is None:
            return
        now = time.monotonic()
        for ref, run in list(self.running.items()):
            if now - run.started > self.timeout_s:
                del self.running[ref]
                self.pool.counters["timeouts"] += 1
                self.pool._replace(run.slot)
                reason = (f"job {self.jobs[run.index].job_id!r} ran past timeout_s={self.timeout_s:g} "
                          f"on {run.slot.info.get('node_ip', '?')} pid {run.slot.info.get('worker_pid', '?')}: actor killed")
                self.finish(run.index, "timeout", reason, now - run.started, run.slot)

    def finish(self, index: int, status: str, error: str, wall: float, slot: _Slot) -> None:
        job, info = self.jobs[index], slot.info
        records = failure_records(job, status, error, wall_s=wall, device=str(info.get("device", "")), origin=info)
        self.store(JobResult(job.job_id, status, records, self.attempts[index], wall,
                             node_ip=str(info.get("node_ip", "")), error=error), index)

    def fail_queue(self, reason: str) -> None:
        while self.queue:
            index = self.queue.popleft()
            job = self.jobs[index]
            self.store(JobResult(job.job_id, "failed", failure_records(job, "failed", reason),
                                 self.attempts[index], 0.0, error=reason), index)

    def store(self, result: JobResult, index: int) -> None:
        self.results[index] = result
        if self.on_result is not None:
            self.on_result(result)

    def abandon(self) -> None:
        """On an early exit (callback error, interrupt), kill and replace actors still busy with our jobs."""
        for run in self.running.values():
            self.pool._replace(run.slot)
        self.running.clear()


def _kill(actor: Any) -> None:
    with contextlib.suppress(RayError, ValueError):  # already gone
        ray.kill(actor, no_restart=True)


def _short(exc: BaseException, limit: int = 600) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= limit else text[:limit] + " ..."


__all__ = ["ActorPool", "JOB_STATUSES", "JobResult", "PoolConfig", "actor_count", "dispatch_order"]
