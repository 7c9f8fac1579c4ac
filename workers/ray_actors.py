"""The Ray actor that runs evaluation jobs: `EvalActor`, a persistent actor around one `JobRunner`.

This is the only module of ``workers`` that imports ray. Everything an actor does lives in the
plain `workers.jobs.JobRunner` class (testable without a cluster; `Job`, `JobResult` and the wire
format are described there); `EvalActor` pins torch's thread count to its CPU share, picks ``cuda``
when Ray assigned it a GPU (whole or fractional), and keeps the materialised `TaskData` of recent
tasks in the runner's small LRU.
"""
from __future__ import annotations

import os
import socket
from typing import Any, Mapping, Sequence

import ray

from evoloss.workers.jobs import DEFAULT_MATERIALIZER, DEFAULT_TRAINER_MODULES, JobRunner, pick_device, threads_for


@ray.remote(max_restarts=0, max_task_retries=0)
class EvalActor:
    """A persistent evaluation actor: one per CPU slot or GPU share (resources set by the pool)."""

    def __init__(
        self,
        *,
        cpus: float = 1.0,
        cache_size: int = 4,
        materializer: str = DEFAULT_MATERIALIZER,
        trainer_modules: Sequence[str] = DEFAULT_TRAINER_MODULES,
    ) -> None:
        import torch  # once per actor process: the ~3 s import is paid at start, not per job

        torch.set_num_threads(threads_for(cpus))
        device = pick_device(ray.get_gpu_ids(), torch.cuda.is_available())
        origin = {"host": socket.gethostname(), "node_ip": ray.util.get_node_ip_address(), "worker_pid": os.getpid()}
        self._runner = JobRunner(device=device, cache_size=cache_size, materializer=materializer,
                                 trainer_modules=trainer_modules, origin=origin)

    def ready(self) -> dict[str, Any]:
        """Where this actor runs and what it could not import (the pool waits on this before dispatch)."""
        import torch

        return {**self._runner.origin, "device": self._runner.device, "threads": torch.get_num_threads(),
                "import_problems": dict(self._runner.import_problems)}

    def run_job(self, job: Mapping[str, Any]) -> list[dict[str, Any]]:
        """`JobRunner.run_job` on the wire form of a job."""
        return self._runner.run_job(job)

    def cache_stats(self) -> dict[str, int]:
        """Materialisations so far and the number of cached tasks."""
        return self._runner.cache_stats()


__all__ = ["EvalActor"]
