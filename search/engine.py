"""Where evaluations run: the Ray actor pool (embedded or joined cluster), opened for one command,
and how that command stops (signals, leftovers of a killed predecessor).

**Exact ownership.** A coordinator killed with SIGKILL cannot stop the embedded Ray it started; its
processes would outlive it. So before starting Ray the command writes ``RUN_DIR/.ray-session.json``
with a fresh random salt; the owner token, SHA-256 of the salt and the run directory's real path
(`owner_token`), goes into the environment every process of the node starts with
(`search.ray_runtime.OWNER_ENV`). After start-up the record gets Ray's session id and the node's
processes by pid and start time. The next writer of that run (``--resume``; it holds the run's
writer lock, so the recorded coordinator is gone) recomputes the token from the salt and its own
path and ends exactly the processes carrying it, agents and workers included, and nothing else: a
process is never picked by its command line, and a record copied or crafted into another directory
names a token no process carries.

**Signals.** Under `stop_on_signals` the first SIGTERM or SIGINT raises `Stopped` in the main
thread. The generation in flight is then discarded (its rows may be on disk, but without its state
it is incomplete and a resume redoes it: results.store contract), the pool and the embedded Ray are
stopped on the way out, and the command line prints one line and exits 143 / 130.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import signal
import threading
from pathlib import Path
from typing import Any, Iterator

from evoloss.search.config import ClusterSection
from evoloss.search.dispatch import ActorPool, PoolConfig
from evoloss.search.ray_runtime import (
    OWNER_ENV,
    RayRuntime,
    owned_processes,
    process_identities,
    start_ray,
    stop_processes,
)
from evoloss.search.run_dir import atomic_write_text

RAY_SESSION_RECORD = ".ray-session.json"
LEGACY_RAY_RECORD = ".ray-temp-dir"  # written before exact ownership; never trusted, only removed


class Stopped(BaseException):
    """SIGTERM or SIGINT asked the command to stop (a BaseException, like KeyboardInterrupt, so no
    ``except Exception`` on the way swallows it). ``exit_code`` is 128 + the signal number."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(signal.Signals(signum).name)


def stopped_line(stop: Stopped) -> str:
    """The one line the command line prints for ``stop`` (what was kept, how to continue)."""
    run_dir = getattr(stop, "run_dir", None)
    if getattr(stop, "resumable", False) and run_dir is not None:
        return (f"stopped by {stop} at a safe point; every complete generation is stored, the one in flight is "
                f"discarded; continue with: evoloss search --resume {run_dir}")
    where = f" ({run_dir} is incomplete)" if run_dir is not None else ""
    return f"stopped by {stop}; Ray stopped{where}"


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn the first SIGTERM / SIGINT of the block into `Stopped`; later ones are ignored while the
    command cleans up. Outside the main thread (where Python cannot set handlers) this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired: list[int] = []

    def handler(signum: int, _frame: Any) -> None:
        if not fired:
            fired.append(signum)
            raise Stopped(signum)

    saved = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, previous in saved.items():
            signal.signal(s, previous)


def _read_record(run_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((run_dir / RAY_SESSION_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def owner_token(salt: str, run_dir: Path) -> str:
    """The token the Ray processes of ``run_dir``'s writer carry: SHA-256 of the record's salt and the
    run directory's real path (so a record is only ever valid in the directory that wrote it)."""
    return hashlib.sha256(f"{salt}\0{os.path.realpath(run_dir)}".encode()).hexdigest()


def reap_orphans(run_dir: Path) -> int:
    """End the Ray processes a killed writer of this run left behind; how many were ended.

    Only processes carrying this run's owner token (`owner_token` of the record's salt and this
    directory) are signalled. Call it only while holding the run's writer lock.
    """
    run_dir = Path(run_dir)
    record = _read_record(run_dir)
    ended = []
    salt = record.get("salt") if record is not None else None
    if isinstance(salt, str) and len(salt) >= 32:
        ended = stop_processes(owned_processes(owner_token(salt, run_dir)))
    (run_dir / RAY_SESSION_RECORD).unlink(missing_ok=True)
    (run_dir / LEGACY_RAY_RECORD).unlink(missing_ok=True)
    return len(ended)


@contextlib.contextmanager
def owned_ray(cluster: ClusterSection, run_dir: Path, *, address: str | None = None,
              **start_args: Any) -> Iterator[RayRuntime]:
    """`start_ray` for the writer of ``run_dir``: first end a killed predecessor's leftovers, then
    record the new embedded node (owner token, session id, processes); on exit stop Ray, end any
    straggler of this node, and remove the record. Joining a cluster (``address``) records nothing."""
    run_dir = Path(run_dir)
    reap_orphans(run_dir)
    address = address or cluster.address
    salt = secrets.token_hex(16) if address is None else None
    owner = owner_token(salt, run_dir) if salt else None
    record: dict[str, Any] = {"salt": salt, "owner_env": OWNER_ENV, "session": "", "processes": []}
    if owner:
        atomic_write_text(run_dir / RAY_SESSION_RECORD, json.dumps(record))
    try:
        with start_ray(address, num_cpus=cluster.num_cpus, temp_dir=run_dir / "ray", owner=owner,
                       **start_args) as runtime:
            if runtime.embedded:
                record.update(session=runtime.session_name, temp_dir=str(runtime.temp_dir),
                              processes=[list(p) for p in process_identities(p.pid for p in owned_processes(owner))])
                atomic_write_text(run_dir / RAY_SESSION_RECORD, json.dumps(record))
            yield runtime
    finally:
        if owner:
            stop_processes(owned_processes(owner), timeout_s=10.0)
            (run_dir / RAY_SESSION_RECORD).unlink(missing_ok=True)


@contextlib.contextmanager
def evaluation_pool(cluster: ClusterSection, run_dir: Path, *, address: str | None = None) -> Iterator[ActorPool]:
    """Start (or join) Ray and a pool of evaluation actors; stop both on exit.

    ``address`` (the CLI's ``--address``) overrides ``cluster.address``. The embedded Ray keeps its
    temp files under ``run_dir/ray`` when that path is short enough (search.ray_runtime).
    """
    with owned_ray(cluster, run_dir, address=address):
        pool = ActorPool(PoolConfig(cpus_per_actor=cluster.cpus_per_actor, gpus_per_actor=cluster.gpus_per_actor))
        try:
            yield pool
        finally:
            pool.shutdown()
