"""The README's Python example runs as written (copied out of README.md, not retyped here)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = "<!-- the example below is run verbatim by tests/test_readme.py -->"


def readme_example() -> str:
    text = README.read_text(encoding="utf-8")
    assert MARKER in text, "README.md lost the marker of its tested Python example"
    match = re.search(r"```python\n(.*?)```", text[text.index(MARKER):], re.S)
    assert match, "no ```python block after the marker"
    return match.group(1)


@pytest.mark.integration
def test_the_readme_python_example_runs_verbatim(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(readme_example())
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "runs/api-example/export/robust_loss/loss.json").is_file()
    assert "trained with the evolved loss" in out.stdout
