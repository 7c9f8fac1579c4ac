"""`evoloss search` end to end on an embedded Ray: determinism across fresh processes, SIGKILL of
the coordinator then --resume, and an evaluation actor killed mid-generation."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from evoloss.search.ray_runtime import processes_under  # also puts the psutil that ships with ray on sys.path
import psutil
import pytest

pytestmark = pytest.mark.integration

CONFIG = """
[search]
family = "gce"
popsize = 4
generations = 4
seed = 5

[grid]
datasets = ["synthetic:n=400,c=3,d=6"]
archs = ["mlp2"]
noise = [{type = "symmetric", rate = 0.4}]
seeds = [0, 1]
mode = "ar"

[train]
epochs = 3
batch_size = 32
trainer = "standard"

[cluster]
num_cpus = 2
timeout_s = 120.0
"""


@pytest.fixture()
def short_dir():
    # Ray's unix sockets need a short temp-dir path (search.ray_runtime.MAX_TEMP_DIR_LEN)
    with tempfile.TemporaryDirectory(prefix="evl-", dir="/tmp") as d:
        yield Path(d)
        _kill_ray_under(Path(d))


def _kill_ray_under(path: Path) -> None:
    from evoloss.search.ray_runtime import stop_processes_under

    for sub in path.glob("*/ray"):
        stop_processes_under(sub)


def _search(*args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    return subprocess.Popen([sys.executable, "-m", "evoloss", "search", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return out


def _generations(run: Path) -> pd.DataFrame:
    df = pd.read_parquet(run / "generations")
    return df.drop(columns=["wall_s", "evals_per_s", "timestamp", "run_id"]).reset_index(drop=True)


def _evaluations(run: Path) -> pd.DataFrame:
    df = pd.read_parquet(run / "evaluations")
    keep = ["generation", "candidate", "task_key", "status", "params", "val_acc_last", "test_acc_last"]
    return df[keep].sort_values(["generation", "candidate", "task_key"]).reset_index(drop=True)


def test_sigkill_then_resume_matches_an_uninterrupted_run(short_dir):
    cfg = short_dir / "c.toml"
    cfg.write_text(CONFIG)
    full, cut = short_dir / "a", short_dir / "b"
    out = _finish(_search(str(cfg), "--out", str(full)))
    assert "best fitness" in out

    proc = _search(str(cfg), "--out", str(cut))
    deadline = time.monotonic() + 240
    while not (cut / "state" / "gen-000001.json").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "search ended before generation 1"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the coordinator and anything in its session, mid-generation 2
    proc.wait()
    assert not (cut / "state" / "gen-000003.json").exists()
    _finish(_search("--resume", str(cut)))

    pd.testing.assert_frame_equal(_generations(full), _generations(cut))
    evals = _evaluations(cut)
    assert not evals.duplicated(["generation", "candidate", "task_key"]).any()
    assert len(evals) == 4 * 4 * 2
    pd.testing.assert_frame_equal(_evaluations(full), evals)
    assert not (cut / ".ray-temp-dir").exists()


def test_actor_killed_mid_generation_loses_nothing(short_dir):
    cfg = short_dir / "c.toml"
    cfg.write_text(CONFIG.replace("epochs = 3", "epochs = 30").replace("generations = 4", "generations = 2"))
    run = short_dir / "k"
    proc = _search(str(cfg), "--out", str(run))
    victim = None
    deadline = time.monotonic() + 240
    while victim is None:
        assert proc.poll() is None and time.monotonic() < deadline, "no busy actor seen"
        # only this run's actors: descendants of the Ray node whose temp dir is inside the run
        for p in processes_under(run / "ray"):
            with contextlib.suppress(psutil.Error):
                if "ray::EvalActor.run_job" in " ".join(p.cmdline()):
                    victim = p
                    break
        time.sleep(0.1)
    victim.kill()
    _finish(proc)
    evals = pd.read_parquet(run / "evaluations")
    assert len(evals) == 2 * 4 * 2
    assert (evals["status"] == "ok").all(), evals[["status", "error"]]
