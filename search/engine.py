"""Where evaluations run: the Ray actor pool (embedded or joined cluster), opened for one command.

A coordinator killed with SIGKILL cannot stop the embedded Ray it started; its processes would
outlive it. So the pool records the embedded Ray's temp dir in ``RUN_DIR/.ray-temp-dir`` and the
next command on that run (``--resume``) first ends whatever still runs under it.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from evoloss.search.config import ClusterSection
from evoloss.search.dispatch import ActorPool, PoolConfig
from evoloss.search.ray_runtime import start_ray, stop_processes_under
from evoloss.search.run_dir import atomic_write_text

RAY_TEMP_RECORD = ".ray-temp-dir"


def reap_orphans(run_dir: Path) -> int:
    """End the Ray processes a killed coordinator of this run left behind; how many were ended."""
    record = Path(run_dir) / RAY_TEMP_RECORD
    if not record.is_file():
        return 0
    temp = record.read_text(encoding="utf-8").strip()
    ended = stop_processes_under(temp) if temp and Path(temp).is_dir() else []
    record.unlink(missing_ok=True)
    return len(ended)


@contextlib.contextmanager
def evaluation_pool(cluster: ClusterSection, run_dir: Path, *, address: str | None = None) -> Iterator[ActorPool]:
    """Start (or join) Ray and a pool of evaluation actors; stop both on exit.

    ``address`` (the CLI's ``--address``) overrides ``cluster.address``. The embedded Ray keeps its
    temp files under ``run_dir/ray`` when that path is short enough (search.ray_runtime).
    """
    address = address or cluster.address
    run_dir = Path(run_dir)
    reap_orphans(run_dir)
    with start_ray(address, num_cpus=cluster.num_cpus, temp_dir=run_dir / "ray") as runtime:
        if runtime.embedded and runtime.temp_dir is not None:
            atomic_write_text(run_dir / RAY_TEMP_RECORD, str(runtime.temp_dir))
        pool = ActorPool(PoolConfig(cpus_per_actor=cluster.cpus_per_actor, gpus_per_actor=cluster.gpus_per_actor))
        try:
            yield pool
        finally:
            pool.shutdown()
    (run_dir / RAY_TEMP_RECORD).unlink(missing_ok=True)
