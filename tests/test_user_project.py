"""A user's project folder with its own ``losses.py``, ``search.py``, ``results.py`` and ``workers.py``
shadows nothing of evoloss: a search, an export and a compare run from it, on the embedded Ray."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

USER_MODULE = 'raise ImportError("the user\'s own {name}.py was imported instead of evoloss.{name}")\n'
SEARCH = """
[search]
family = "gce"
popsize = 4
generations = 1
seed = 1
[grid]
datasets = ["digits"]
archs = ["mlp2"]
seeds = [0]
noise = [{type = "symmetric", rate = 0.6}]
[train]
epochs = 1
max_train = 200
[cluster]
num_cpus = 2
"""
COMPARE = """
[train]
epochs = 1
max_train = 200
[cluster]
num_cpus = 2
[[methods]]
name = "ce"
kind = "loss"
family = "ce"
[[methods]]
name = "evolved"
kind = "search"
run_dir = "runs/s"
[[tasks]]
name = "seen"
datasets = ["digits"]
archs = ["mlp2"]
seeds = [0]
noise = [{type = "symmetric", rate = 0.6}]
"""


def _evoloss(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "PYTHONPATH": ""}
    # `python -m` puts the working directory first on sys.path: the worst case for shadowing
    out = subprocess.run([sys.executable, "-m", "evoloss", *args], cwd=project, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_search_export_and_compare_from_a_project_with_its_own_modules(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    for name in ("losses", "search", "results", "workers"):
        (project / f"{name}.py").write_text(USER_MODULE.format(name=name))
    (project / "search.toml").write_text(SEARCH)
    (project / "compare.toml").write_text(COMPARE)

    _evoloss(project, "search", "search.toml", "--out", "runs/s")
    exported = _evoloss(project, "export", "runs/s", "--name", "robust_loss")
    assert "robust_loss" in exported.stdout
    plugin = json.loads((project / "runs/s/export/robust_loss/loss.json").read_text())
    assert plugin["family"] == "gce"
    _evoloss(project, "compare", "compare.toml", "--out", "runs/c")
    summary = (project / "runs/c/summary.txt").read_text()
    assert "ce" in summary and "evolved" in summary
    import pandas as pd

    rows = pd.read_parquet(project / "runs/c/evaluations")
    assert set(rows["status"]) == {"ok"}, rows[["method", "status", "error"]].to_string()
