"""Run directories: create one for a new run, reopen one to resume, write files atomically."""
from __future__ import annotations

from pathlib import Path

from evoloss.results.store import atomic_write
from evoloss.search.config import SearchConfig, load_config, resolved_toml

CONFIG_NAME = "config.toml"


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file in the same folder, fsync and a rename."""
    atomic_write(Path(path), lambda fh: fh.write(text.encode("utf-8")))


def check_new_run_dir(run_dir: Path) -> None:
    """A new run needs an absent or empty directory (never mix two runs' rows)."""
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        from evoloss.search.config_fields import ConfigError

        raise ConfigError("out", "already exists and is not empty", str(run_dir),
                          "resume that run, or choose another run directory",
                          f"run directory {str(run_dir)!r} already exists and is not empty; resume that run, "
                          "or choose another run directory")


def create_run_dir(run_dir: Path, config: SearchConfig) -> None:
    """Create ``run_dir`` with its resolved ``config.toml`` (every default written out)."""
    check_new_run_dir(run_dir)
    atomic_write_text(run_dir / CONFIG_NAME, resolved_toml(config))


def load_run_config(run_dir: Path) -> SearchConfig:
    """The config a run was started with (for resuming, status and export)."""
    path = run_dir / CONFIG_NAME
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {str(run_dir)!r} does not exist")
    if not path.is_file():
        raise ValueError(f"{str(run_dir)!r} is not an evoloss run directory: {CONFIG_NAME} is missing")
    return load_config(path)


def run_id_of(run_dir: Path) -> str:
    return Path(run_dir).resolve().name
