"""The wire types of an evaluation, without Ray: `Job`, `JobResult`, `JobRunner` and their helpers.

A `Job` is one task × K candidate losses; `JobRunner` runs jobs in one process (materialising task
data through a small LRU cache and calling the trainer); `JobResult` is what a dispatcher hands back
per job. Nothing here imports ray, so the coordinator, the in-process pool and the tests use these
types without it; `workers.ray_actors.EvalActor` is the thin Ray actor around one `JobRunner`.

Wire format: the coordinator sends ``Job.to_dict()`` (JSON-able: no pickled code or objects) and
receives a list of plain dicts, one per candidate, in the job's order: the `EvalRecord` fields plus
`RECORD_IDENTITY_FIELDS`. A trainer that raises never loses the job: every candidate comes back as a
``failed`` record carrying the error text and the job's identity.
"""
from __future__ import annotations

import importlib
import json
import math
import os
import socket
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

from evoloss.losses import LossSpec
from evoloss.workers.allocator import keep_freed_memory
from evoloss.workers.records import EVAL_RECORD_FIELDS, STATUSES, EvalRecord
from evoloss.workers.task import Budget, Task, TaskData
from evoloss.workers.trainer import create_trainer

RECORD_IDENTITY_FIELDS = ("job_id", "candidate", "task_key", "host", "node_ip", "worker_pid")
"""Keys every result dict carries besides the `EvalRecord` fields."""

DEFAULT_MATERIALIZER = "evoloss.workers.materialize:materialize"
DEFAULT_TRAINER_MODULES = (
    "evoloss.workers.standard",
    "evoloss.workers.population",
    "evoloss.workers.meta.adaptive",
    "evoloss.workers.meta.narl",
    "evoloss.workers.meta.l2b",
    "evoloss.workers.meta.dynamic",
    "evoloss.workers.meta.mwnet",
    "evoloss.workers.cleanlab_method",
)
"""Modules whose import registers the built-in trainers; an absent one is skipped and reported."""

UNCAPPED_TRAIN_ROWS = 50_000
_ERROR_TEXT_LIMIT = 4000  # characters of traceback kept in a failed record


@dataclass(frozen=True)
class Job:
    """One unit of dispatch: train ``specs`` on ``task`` with trainer ``trainer``.

    ``candidates`` names each spec (default ``0..K-1``) so records map back to the strategy's
    candidates; ``cost`` is a relative size hint for longest-job-first dispatch (default
    `estimated_cost`). ``trainer_options`` must be JSON-able (they travel as JSON).
    """

    job_id: str
    task: Task
    specs: tuple[LossSpec, ...]
    trainer: str = "standard"
    trainer_options: Mapping[str, Any] = field(default_factory=dict)
    candidates: tuple[Any, ...] = ()
    cost: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.job_id, str) or not self.job_id:
            raise ValueError(f"Job.job_id must be a non-empty string; got {self.job_id!r}")
        if not isinstance(self.task, Task):
            raise TypeError(f"Job.task must be a workers.task.Task; got {type(self.task).__name__}")
        specs = tuple(self.specs)
        if not specs or not all(isinstance(s, LossSpec) for s in specs):
            raise ValueError(f"Job.specs must be a non-empty sequence of LossSpec; got {self.specs!r}")
        object.__setattr__(self, "specs", specs)
        candidates = tuple(self.candidates) if self.candidates else tuple(range(len(specs)))
        if len(candidates) != len(specs) or len(set(candidates)) != len(candidates):
            raise ValueError(
                f"Job.candidates must be {len(specs)} unique ids, one per spec; got {candidates!r}"
            )
        object.__setattr__(self, "candidates", candidates)
        if not isinstance(self.trainer, str) or not self.trainer:
            raise ValueError(f"Job.trainer must be a registered trainer name; got {self.trainer!r}")
        try:
            json.dumps(dict(self.trainer_options), allow_nan=True)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"Job.trainer_options must be JSON-able (str keys, plain values): {exc}") from None
        if self.cost is not None and not (math.isfinite(self.cost) and self.cost >= 0):
            raise ValueError(f"Job.cost must be a finite number >= 0 or None; got {self.cost!r}")

    def estimated_cost(self) -> float:
        """The dispatch size: ``cost`` if given, else candidates × epochs × training rows, where an
        uncapped training split (``max_train=None``) counts as `UNCAPPED_TRAIN_ROWS` (an MNIST-size
        split, so uncapped tasks go before capped ones). The coordinator passes ``cost`` when it knows better."""
        if self.cost is not None:
            return float(self.cost)
        rows = self.task.splits.max_train or UNCAPPED_TRAIN_ROWS
        return float(len(self.specs) * max(self.task.budget.epochs, 1) * rows)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able wire form (float parameters only; a tensor parameter raises TypeError)."""
        return {
            "job_id": self.job_id,
            "task": self.task.to_dict(),
            "specs": [s.to_dict() for s in self.specs],
            "trainer": self.trainer,
            "trainer_options": dict(self.trainer_options),
            "candidates": list(self.candidates),
            "cost": self.cost,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Job":
        """Rebuild a job from `to_dict` output."""
        missing = [k for k in ("job_id", "task", "specs") if k not in d]
        if missing:
            raise ValueError(f"job dict is missing {missing}; build it with Job.to_dict()")
        return cls(
            job_id=str(d["job_id"]),
            task=Task.from_dict(d["task"]),
            specs=tuple(LossSpec.from_dict(s) for s in d["specs"]),
            trainer=d.get("trainer", "standard"),
            trainer_options=dict(d.get("trainer_options") or {}),
            candidates=tuple(d.get("candidates") or ()),
            cost=d.get("cost"),
        )


JOB_STATUSES = ("ok", "failed", "timeout")


@dataclass
class JobResult:
    """What came back for one job. ``status`` is ``ok`` when the trainer returned (its records may still
    say ``diverged``/``failed`` per candidate), ``failed`` or ``timeout`` when the pool gave up on it."""

    job_id: str
    status: str
    records: list[dict[str, Any]]
    attempts: int
    wall_s: float
    node_ip: str = ""
    error: str = ""


def failure_records(
    job: Job, status: str, error: str, *, wall_s: float = 0.0, device: str = "", origin: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """One record per candidate of ``job`` with ``status`` (failed/timeout) and ``error``, metrics NaN."""
    if status not in STATUSES or status == "ok":
        raise ValueError(f"failure_records: status={status!r} must be one of {STATUSES[1:]}")
    records = []
    for spec, candidate in zip(job.specs, job.candidates):
        rec = EvalRecord(family=spec.family, params=_float_params(spec), status=status, error=error,
                         wall_s=float(wall_s), device=device, trainer=job.trainer)
        records.append(_with_identity(rec.to_dict(), job, candidate, origin))
    return records


def _float_params(spec: LossSpec) -> dict[str, float]:
    return {k: float(v) for k, v in spec.params.items()}


def _with_identity(record: dict[str, Any], job: Job, candidate: Any, origin: Mapping[str, Any] | None) -> dict:
    origin = origin or {}
    record.update(job_id=job.job_id, candidate=candidate, task_key=job.task.key(),
                  host=origin.get("host", ""), node_ip=origin.get("node_ip", ""),
                  worker_pid=int(origin.get("worker_pid", 0)))
    return record


def task_provenance(data: TaskData) -> dict[str, Any]:
    """What the worker realised for a task and which versions ran it (recorded on every row)."""
    import torch

    from evoloss.losses.versions import evoloss_version

    return {"noise_rate_realised": float(data.noise_rate), "noise_convention": data.noise_convention,
            "torch_version": str(torch.__version__), "evoloss_version": evoloss_version()}


def threads_for(cpus: float) -> int:
    """torch intra-op threads for an actor holding ``cpus`` CPUs (floor, at least 1)."""
    if not (isinstance(cpus, (int, float)) and math.isfinite(cpus) and cpus > 0):
        raise ValueError(f"cpus per actor must be a positive number; got {cpus!r}")
    return max(1, int(cpus))


def pick_device(gpu_ids: Sequence[Any], cuda_available: bool) -> str:
    """``cuda`` when Ray assigned GPUs (Ray narrows CUDA_VISIBLE_DEVICES to them) and CUDA works, else ``cpu``."""
    return "cuda" if len(gpu_ids) > 0 and cuda_available else "cpu"


def resolve_callable(path: str) -> Callable[..., Any]:
    """Import ``"package.module:attribute"`` (a name from configuration, never evaluated code)."""
    module_name, sep, attr = str(path).partition(":")
    if not sep or not module_name or not attr.isidentifier():
        raise ValueError(f"materializer={path!r} must look like 'package.module:function'")
    target = getattr(importlib.import_module(module_name), attr, None)
    if not callable(target):
        raise ValueError(f"materializer={path!r}: {module_name} has no callable {attr!r}")
    return target


def import_trainer_modules(names: Sequence[str]) -> dict[str, str]:
    """Import each module (registering its trainers); return ``{module: problem}`` for those that failed.

    A module that does not exist is reported as ``"not installed"``; any other import error is kept
    as its text so that a job asking for that trainer fails with the real cause.
    """
    problems: dict[str, str] = {}
    for name in names:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            absent = exc.name is not None and (name == exc.name or name.startswith(exc.name + "."))
            problems[name] = "not installed" if absent else f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # a broken trainer module must not take the actor down
            problems[name] = f"{type(exc).__name__}: {exc}"
    return problems


class JobRunner:
    """Runs jobs in one process: materialises (with an LRU cache) and calls the trainer.

    The cache key is the task without ``arch`` and ``budget``: `materialize` depends only on the
    dataset, noise, splits, seed and data_dir (workers/materialize.py), so an AR grid (one dataset,
    several architectures) materialises its data once per actor.
    """

    def __init__(
        self,
        *,
        device: str = "cpu",
        cache_size: int = 4,
        materializer: str = DEFAULT_MATERIALIZER,
        trainer_modules: Sequence[str] = DEFAULT_TRAINER_MODULES,
        origin: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(cache_size, int) or cache_size < 1:
            raise ValueError(f"cache_size must be an integer >= 1; got {cache_size!r}")
        self.device = device
        self.cache_size = cache_size
        self.materializer = materializer
        self.keeps_freed_memory = keep_freed_memory()  # this process is a worker: reuse freed buffers
        self.origin = dict(origin or {"host": socket.gethostname(), "node_ip": "", "worker_pid": os.getpid()})
        self.import_problems = import_trainer_modules(trainer_modules)
        self._materialize: Callable[[Task], TaskData] | None = None
        self._cache: OrderedDict[Task, TaskData] = OrderedDict()
        self.materialized = 0  # how many times data was built (cache misses)

    def task_data(self, task: Task) -> TaskData:
        """The materialised data of ``task``, from the LRU cache when present."""
        key = replace(task, arch="", budget=Budget())
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        if self._materialize is None:
            self._materialize = resolve_callable(self.materializer)
        data = self._materialize(task)
        self.materialized += 1
        self._cache[key] = data
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return data

    def cache_stats(self) -> dict[str, int]:
        """Materialisations so far and the number of cached tasks."""
        return {"materialized": self.materialized, "cached": len(self._cache)}

    def run_job(self, job: Job | Mapping[str, Any]) -> list[dict[str, Any]]:
        """Train the job's candidates; one result dict per candidate, in order (never raises for a bad run)."""
        job = job if isinstance(job, Job) else Job.from_dict(job)
        start = time.perf_counter()
        try:
            data = self.task_data(job.task)
            trainer = create_trainer(job.trainer, **dict(job.trainer_options))
            records = trainer.fit(job.task, list(job.specs), self.device, data)
            _check_records(records, job)
        except Exception as exc:
            return failure_records(job, "failed", self._error_text(exc), wall_s=time.perf_counter() - start,
                                   device=self.device, origin=self.origin)
        realised = task_provenance(data)
        return [{**_with_identity(r.to_dict(), job, c, self.origin), **realised}
                for r, c in zip(records, job.candidates)]

    def _error_text(self, exc: BaseException) -> str:
        text = f"{type(exc).__name__}: {exc}"
        broken = {m: p for m, p in self.import_problems.items() if p != "not installed"}
        if broken:
            text += f"\ntrainer modules that failed to import: {broken}"
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return (text + "\n" + tb[-_ERROR_TEXT_LIMIT:]).strip()


def _check_records(records: object, job: Job) -> None:
    if not isinstance(records, list) or not all(isinstance(r, EvalRecord) for r in records):
        raise TypeError(f"trainer {job.trainer!r} must return a list of EvalRecord; got {type(records).__name__}")
    if len(records) != len(job.specs):
        raise ValueError(f"trainer {job.trainer!r} returned {len(records)} records for {len(job.specs)} specs")


__all__ = [
    "DEFAULT_MATERIALIZER",
    "DEFAULT_TRAINER_MODULES",
    "EVAL_RECORD_FIELDS",
    "JOB_STATUSES",
    "Job",
    "JobResult",
    "JobRunner",
    "RECORD_IDENTITY_FIELDS",
    "UNCAPPED_TRAIN_ROWS",
    "failure_records",
    "import_trainer_modules",
    "pick_device",
    "resolve_callable",
    "task_provenance",
    "threads_for",
]
