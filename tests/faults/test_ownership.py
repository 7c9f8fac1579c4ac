"""Exact process ownership (docs/RELIABILITY.md "Exact ownership"): a resume ends only the processes
that carry its run's owner token (given to them when they started), never one picked by its command
line or named in a crafted or copied record; after a SIGKILLed coordinator and a resume no Ray process
of the old session is left."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from evoloss.search.engine import LEGACY_RAY_RECORD, RAY_SESSION_RECORD, owner_token, reap_orphans
from evoloss.search.ray_runtime import OWNER_ENV, owned_processes, stop_processes, stop_processes_under
import psutil  # after ray_runtime: the psutil that ships with ray
import pytest

from tests.faults.helpers import clean_env, cli_process, write_config

SLEEPER = "import time; time.sleep(600)"


@contextlib.contextmanager
def sleeper(*argv: str, env: dict[str, str] | None = None):
    proc = subprocess.Popen([sys.executable, "-c", SLEEPER, *argv], env={**clean_env(), **(env or {})})
    try:
        yield psutil.Process(proc.pid)
    finally:
        proc.kill()
        proc.wait()


def test_a_process_naming_the_run_in_its_arguments_survives(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "ray").mkdir(parents=True)
    with sleeper(str(run / "ray"), f"--temp-dir={run / 'ray'}") as victim:
        (run / LEGACY_RAY_RECORD).write_text(str(run / "ray"))  # what a copied or crafted run holds
        crafted = {"salt": "f" * 32, "session": "session_x", "processes": [[victim.pid, victim.create_time()]]}
        (run / RAY_SESSION_RECORD).write_text(json.dumps(crafted))
        assert reap_orphans(run) == 0
        assert victim.is_running() and victim.status() != psutil.STATUS_ZOMBIE
        assert not (run / LEGACY_RAY_RECORD).exists() and not (run / RAY_SESSION_RECORD).exists()


def test_exactly_the_processes_of_this_run_are_ended(tmp_path: Path) -> None:
    run, elsewhere = tmp_path / "run", tmp_path / "original"
    run.mkdir()
    salt = "a1" * 16
    with sleeper(env={OWNER_ENV: owner_token(salt, run)}) as ours, sleeper() as named, \
            sleeper(env={OWNER_ENV: owner_token(salt, elsewhere)}) as original:
        # the record as if copied here from "original" (same salt), naming a foreign pid exactly
        record = {"salt": salt, "session": "s", "processes": [[named.pid, named.create_time()]]}
        (run / RAY_SESSION_RECORD).write_text(json.dumps(record))
        assert reap_orphans(run) == 1
        assert not ours.is_running() or ours.status() == psutil.STATUS_ZOMBIE
        for survivor in (named, original):
            assert survivor.is_running() and survivor.status() != psutil.STATUS_ZOMBIE


@pytest.fixture()
def short_dir():
    # Ray's unix sockets need a short temp-dir path (search.ray_runtime.MAX_TEMP_DIR_LEN)
    with tempfile.TemporaryDirectory(prefix="evf-", dir="/tmp") as d:
        owners: list[str] = []
        yield Path(d), owners
        for owner in owners:
            stop_processes(owned_processes(owner))
        for sub in Path(d).glob("*/ray"):
            stop_processes_under(sub)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"no {path} after {timeout}s"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.integration
def test_sigkill_then_resume_leaves_no_ray_process_of_the_old_session(short_dir) -> None:
    folder, owners = short_dir
    cfg = write_config(folder, **{"generations = 3": "generations = 2"})
    run = folder / "run"
    proc = cli_process("search", str(cfg), "--out", str(run))
    wait_for(run / "state" / "gen-000000.json", proc)
    record = json.loads((run / RAY_SESSION_RECORD).read_text())
    owner = owner_token(record["salt"], run)
    owners.append(owner)
    old = owned_processes(owner)
    assert record["session"].startswith("session_") and len(old) >= 3  # GCS, raylet, agents, workers
    with sleeper(str(run), str(run / "ray")) as victim:
        os.kill(proc.pid, signal.SIGKILL)  # the coordinator alone: its Ray is orphaned
        proc.communicate()
        resume = cli_process("search", "--resume", str(run))
        _, err = resume.communicate(timeout=600)
        assert resume.returncode == 0, err[-3000:]
        left = [p for p in old if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert left == [] and owned_processes(owner) == []
        assert victim.is_running() and victim.status() != psutil.STATUS_ZOMBIE
    assert sorted(p.name for p in (run / "state").iterdir()) == ["gen-000000.json", "gen-000001.json"]
    assert not (run / RAY_SESSION_RECORD).exists()
