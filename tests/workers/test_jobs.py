"""The wire types (`workers.jobs`) and the Ray-free search modules import without ray."""
from __future__ import annotations

import subprocess
import sys
import textwrap

RAY_FREE_MODULES = ("evoloss.workers.jobs", "evoloss.search.local_pool", "evoloss.search.coordinator")


def test_jobs_local_pool_and_coordinator_do_not_import_ray() -> None:
    """In a fresh interpreter (this one may have ray loaded already by other tests)."""
    code = textwrap.dedent(f"""
        import importlib, sys
        for name in {RAY_FREE_MODULES!r}:
            importlib.import_module(name)
        loaded = sorted(m for m in sys.modules if m == "ray" or m.startswith("ray."))
        assert "ray" not in sys.modules, f"ray was imported: {{loaded[:5]}}"
        from evoloss.workers.jobs import Job, JobResult, JobRunner
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
