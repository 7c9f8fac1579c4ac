"""SIGTERM and SIGINT (docs/RELIABILITY.md "Faults"): the search stops at a safe point (the generation in
flight is discarded, never half-stored), the embedded Ray is stopped, one line is printed, the exit
status is 143 / 130, and the resume continues exactly: the rows equal an uninterrupted run's."""
from __future__ import annotations

import json
import signal
import tempfile
import time
from pathlib import Path

import pytest

from evoloss.search.cli import main
from tests.faults.helpers import assert_same_trajectory, cli_process, in_process_pool, write_config


def wait_for(path: Path, proc, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"no {path} after {timeout}s"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run (in-process pool, in this process)."""
    folder = tmp_path_factory.mktemp("ref")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("evoloss.search.engine.evaluation_pool", in_process_pool)
        assert main(["search", str(write_config(folder)), "--out", str(folder / "run")]) == 0
    return folder / "run"


def _stop_mid_search(proc, run: Path, signum: int) -> list[str]:
    wait_for(run / "state" / "gen-000000.json", proc)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signum, err[-3000:]
    assert "Traceback" not in err and "SIGABRT" not in err and "*** " not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith(f"evoloss search: stopped by {signal.Signals(signum).name} at a safe point")
    assert f"evoloss search --resume {run}" in lines[-1]
    return lines


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_at_a_safe_point_and_the_resume_is_exact(reference: Path, tmp_path: Path, monkeypatch,
                                                                  signum: int) -> None:
    run = tmp_path / "run"
    proc = cli_process("search", str(write_config(tmp_path)), "--out", str(run), in_process=True)
    _stop_mid_search(proc, run, signum)
    done = sorted(p.name for p in (run / "state").iterdir())
    assert done and "gen-000002.json" not in done  # stopped before the end
    parts = sorted(p.name for p in (run / "evaluations").iterdir())
    assert all(not name.startswith(".") for name in parts)  # no temp part left behind
    monkeypatch.setattr("evoloss.search.engine.evaluation_pool", in_process_pool)
    assert main(["search", "--resume", str(run)]) == 0
    assert_same_trajectory(reference, run)


@pytest.mark.slow
@pytest.mark.integration
def test_sigterm_stops_the_embedded_ray_and_the_resume_is_exact(reference: Path) -> None:
    from evoloss.search.engine import RAY_SESSION_RECORD, owner_token
    from evoloss.search.ray_runtime import owned_processes, stop_processes, stop_processes_under

    with tempfile.TemporaryDirectory(prefix="evs-", dir="/tmp") as d:
        run, owners = Path(d) / "run", []
        try:
            proc = cli_process("search", str(write_config(Path(d))), "--out", str(run))
            wait_for(run / "state" / "gen-000000.json", proc)
            owners.append(owner_token(json.loads((run / RAY_SESSION_RECORD).read_text())["salt"], run))
            _stop_mid_search(proc, run, signal.SIGTERM)
            assert owned_processes(owners[0]) == []  # every process of its Ray, agents included
            resume = cli_process("search", "--resume", str(run))
            _, err = resume.communicate(timeout=600)
            assert resume.returncode == 0, err[-3000:]
            assert_same_trajectory(reference, run)
        finally:
            for owner in owners:
                stop_processes(owned_processes(owner))
            stop_processes_under(run / "ray")
