"""Shared pieces of the fault tests: a tiny search config, the CLI in this process on an in-process
pool (no Ray), a search subprocess, and comparisons of two runs' trajectories."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

TINY_TOML = """
[search]
family = "gce"
popsize = 4
generations = 3
seed = 5

[grid]
datasets = ["synthetic:n=300,c=3,d=6"]
archs = ["mlp2"]
noise = [{type = "symmetric", rate = 0.4}]
seeds = [0]
mode = "ar"

[train]
epochs = 2
batch_size = 32
trainer = "standard"

[cluster]
num_cpus = 2
timeout_s = 120.0
"""

# The CLI in a fresh process with the in-process pool in place of Ray (signals, locks: real processes).
IN_PROCESS_CLI = """
import contextlib, sys
import evoloss.search.engine as engine
from evoloss.search.local_pool import InProcessPool

@contextlib.contextmanager
def pool(cluster, run_dir, *, address=None):
    yield InProcessPool()

engine.evaluation_pool = pool
from evoloss.search.cli import main
sys.exit(main(sys.argv[1:]))
"""


def write_config(folder: Path, text: str = TINY_TOML, **replace: str) -> Path:
    for old, new in replace.items():
        text = text.replace(old, new)
    path = folder / "c.toml"
    path.write_text(text)
    return path


@contextlib.contextmanager
def in_process_pool(cluster: Any, run_dir: Path, *, address: str | None = None) -> Iterator[Any]:
    """A stand-in for `search.engine.evaluation_pool`: the same jobs, run in this process."""
    from evoloss.search.local_pool import InProcessPool

    yield InProcessPool()


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}


def cli_process(*args: str, in_process: bool = False) -> subprocess.Popen:
    """``evoloss ARGS`` in a new process (its own session); with ``in_process`` on the in-process pool."""
    head = [sys.executable, "-c", IN_PROCESS_CLI] if in_process else [sys.executable, "-m", "evoloss"]
    return subprocess.Popen([*head, *args], env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def trajectory(run: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(generation rows, evaluation rows) of a run without the columns that measure time or place."""
    gens = pd.read_parquet(run / "generations").drop(columns=["wall_s", "evals_per_s", "timestamp", "run_id"])
    keep = ["generation", "candidate", "task_key", "status", "params", "val_acc_last", "test_acc_last"]
    evals = pd.read_parquet(run / "evaluations")[keep]
    return (gens.sort_values("generation").reset_index(drop=True),
            evals.sort_values(["generation", "candidate", "task_key"]).reset_index(drop=True))


def assert_same_trajectory(a: Path, b: Path) -> None:
    for left, right in zip(trajectory(a), trajectory(b)):
        pd.testing.assert_frame_equal(left, right)


def snapshot(run: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``run`` with its size and modification time (ns): what a reader must not change."""
    return {str(p.relative_to(run)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(run.rglob("*"))}
