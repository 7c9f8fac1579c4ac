"""An OSError while writing (docs/RELIABILITY.md "Faults"): one line naming the path, exit 2, and a
run that resumes when it happened mid-search. The file-size limit (RLIMIT_FSIZE) makes the kernel fail
the write of the first Parquet part the way a full disk does (write() itself fails)."""
from __future__ import annotations

import resource
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd

from evoloss.search.cli import main
from tests.faults.helpers import IN_PROCESS_CLI, clean_env, in_process_pool, write_config

LIMIT = 8192  # config.toml fits, the first evaluations part (≈12 kB) does not


def _limited() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failing write() returns EFBIG instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


def test_a_failed_write_mid_search_is_one_line_and_the_run_resumes(tmp_path: Path, monkeypatch) -> None:
    cfg = write_config(tmp_path, **{"generations = 3": "generations = 2"})
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", IN_PROCESS_CLI, "search", str(cfg), "--out", str(run)],
                          env=clean_env(), capture_output=True, text=True, preexec_fn=_limited, timeout=600)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert err[-1].startswith("evoloss search: error:") and "cannot write" in err[-1], err
    assert str(run / "evaluations" / "gen-000000.parquet") in err[-1] and "File too large" in err[-1]
    assert not list((run / "evaluations").glob(".*tmp*"))  # no temp part left behind
    monkeypatch.setattr("evoloss.search.engine.evaluation_pool", in_process_pool)
    assert main(["search", "--resume", str(run)]) == 0
    assert sorted(pd.read_parquet(run / "evaluations").generation.unique()) == [0, 1]


def test_an_unusable_output_path_is_one_line_and_creates_nothing(tmp_path: Path, capsys) -> None:
    (tmp_path / "file").write_text("not a folder")
    run = tmp_path / "file" / "run"
    assert main(["search", "--preset", "quick", "--out", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(tmp_path / "file") in err
