"""`InProcessPool`: the dispatcher contract without Ray — jobs run one by one in this process.

For unit tests of the coordinator and for debugging a trainer with a plain traceback. It gives the
same records as `search.dispatch.ActorPool` (both call `workers.jobs.JobRunner`), but it has
no timeouts and no actor replacement: a job that hangs, hangs.
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

from evoloss.workers.jobs import Job, JobResult, JobRunner


class InProcessPool:
    """Run jobs sequentially with one `JobRunner` (its task-data cache persists across calls)."""

    def __init__(self, *, device: str = "cpu", cache_size: int = 4) -> None:
        self._runner = JobRunner(device=device, cache_size=cache_size)
        self.size = 1

    def run_jobs(self, jobs: Sequence[Job], *, timeout_s: float | None = None,
                 on_result: Callable[[JobResult], None] | None = None) -> list[JobResult]:
        out = []
        for job in jobs:
            t0 = time.perf_counter()
            records = self._runner.run_job(job)
            res = JobResult(job_id=job.job_id, status="ok", records=records, attempts=1,
                            wall_s=time.perf_counter() - t0)
            out.append(res)
            if on_result is not None:
                on_result(res)
        return out

    def shutdown(self) -> None:
        """Nothing to stop (the pool contract's counterpart of ActorPool.shutdown)."""
