"""Where evaluations run: the Ray actor pool (embedded or joined cluster), opened for one command."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from search.config import ClusterSection
from search.dispatch import ActorPool, PoolConfig
from search.ray_runtime import start_ray


@contextlib.contextmanager
def evaluation_pool(cluster: ClusterSection, run_dir: Path, *, address: str | None = None) -> Iterator[ActorPool]:
    """Start (or join) Ray and a pool of evaluation actors; stop both on exit.

    ``address`` (the CLI's ``--address``) overrides ``cluster.address``. The embedded Ray keeps its
    temp files under ``run_dir/ray`` when that path is short enough (search.ray_runtime).
    """
    address = address or cluster.address
    with start_ray(address, num_cpus=cluster.num_cpus, temp_dir=Path(run_dir) / "ray"):
        pool = ActorPool(PoolConfig(cpus_per_actor=cluster.cpus_per_actor, gpus_per_actor=cluster.gpus_per_actor))
        try:
            yield pool
        finally:
            pool.shutdown()
