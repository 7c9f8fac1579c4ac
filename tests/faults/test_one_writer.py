"""One writer per run directory (docs/RELIABILITY.md "One writer"): a second writer is refused
naming the holder, the read-only commands change nothing in a live run, and the lock goes with
its holder whatever way it ends. One live search serves the three tests (in this order)."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from evoloss.search.cli import main
from tests.faults.helpers import cli_process, in_process_pool, snapshot, write_config


def wait_for(path: Path, proc, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the search ended before {path.name}: {proc.communicate()[1][-2000:]}")
        assert time.monotonic() < deadline, f"no {path} after {timeout}s"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def live_search(tmp_path_factory):
    """A real `evoloss search` process (in-process pool, 50 generations) past generation 0."""
    folder = tmp_path_factory.mktemp("live")
    cfg = write_config(folder, **{"generations = 3": "generations = 50"})
    run = folder / "run"
    proc = cli_process("search", str(cfg), "--out", str(run), in_process=True)
    try:
        wait_for(run / "state" / "gen-000000.json", proc)
        yield proc, run
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()


def test_a_second_writer_is_refused_naming_the_holder(live_search, monkeypatch, capsys) -> None:
    proc, run = live_search
    monkeypatch.setattr("evoloss.search.engine.evaluation_pool", in_process_pool)
    assert main(["search", "--resume", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"is being written by pid {proc.pid}" in err and "(evoloss search, since" in err
    assert proc.poll() is None  # the holder goes on
    assert json.loads((run / ".lock").read_text())["pid"] == proc.pid


def test_readers_of_a_live_search_change_nothing(live_search, tmp_path: Path, capsys) -> None:
    proc, run = live_search
    os.killpg(proc.pid, signal.SIGSTOP)  # frozen mid-generation: its lock held, its files as they are
    in_flight = run / "evaluations" / ".gen-000099.parquet.tmp-inflight"
    try:
        in_flight.write_bytes(b"half of a part the coordinator is writing")
        before = snapshot(run)
        assert main(["status", str(run)]) == 0
        assert main(["status", str(run), "--json"]) == 0
        assert main(["report", str(run), "--out", str(tmp_path / "report")]) == 0
        main(["export", str(run), "--out", str(tmp_path / "plugin")])  # whatever it answers, it only reads
        assert "/50 generations" in capsys.readouterr().out
        assert snapshot(run) == before and in_flight.exists()
    finally:
        os.killpg(proc.pid, signal.SIGCONT)
    in_flight.unlink()
    done = len(list((run / "state").iterdir()))
    wait_for(run / "state" / f"gen-{done:06d}.json", proc)  # the writer goes on, unharmed


def test_the_lock_goes_with_its_holder(live_search, monkeypatch) -> None:
    proc, run = live_search
    os.killpg(proc.pid, signal.SIGKILL)  # no clean-up code runs: the kernel releases the flock
    proc.wait()
    monkeypatch.setattr("evoloss.search.engine.evaluation_pool", in_process_pool)
    done = len(list((run / "state").iterdir()))
    assert main(["search", "--resume", str(run), "--set", f"search.generations={done + 1}"]) == 0
    assert len(list((run / "state").iterdir())) == done + 1
