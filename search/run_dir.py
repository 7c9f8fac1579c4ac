"""Run directories: create, reopen to resume, the one writer's lock, the resume checks, atomic writes.

**One writer.** The process that writes a run directory (a search, a resume, a compare) holds an OS
file lock on ``RUN_DIR/.lock`` (`fcntl.flock`, exclusive, non-blocking) for as long as it writes;
the kernel releases it on any exit, SIGKILL included, so a stale lock never needs cleaning up. A
second writer is refused with one line naming the holder (pid, host, command, since when), which the
holder wrote into the lock file. The read-only commands (status, report, export of a run) take no
lock and never create, change or delete anything in the run.

**Resume checks** (`check_resume`, all before any compute and before Ray starts): every Parquet part
against the record schema (an older schema is refused for resuming), no gap in the history, the
trajectory-relevant config unchanged since the last saved state (`config_hash`: every setting but
the cluster section, the output section, ``search.generations`` and ``grid.data_dir``, which say
where and how long a run executes, not what it computes), ``search.generations`` not below what is
done, and the evoloss / torch versions unchanged unless a version change is allowed.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import os
import socket
import sys
import tomllib
from pathlib import Path
from typing import Any, Iterator, Mapping

from evoloss.results.store import atomic_write, write_error
from evoloss.search.config import SearchConfig, config_dict, load_config, resolved_toml
from evoloss.search.config_fields import ConfigError

CONFIG_NAME = "config.toml"
LOCK_NAME = ".lock"
# Keys that say where and how long a run executes, not what it computes: left out of the config hash.
NOT_IN_TRAJECTORY = ("cluster", "output", "search.generations", "grid.data_dir")
COMPARE_SECTIONS = ("compare", "methods", "tasks")  # root keys only a compare config has


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file in the same folder, fsync and a rename."""
    atomic_write(Path(path), lambda fh: fh.write(text.encode("utf-8")))


# --- creating and reopening ----------------------------------------------------------------------
def check_new_run_dir(run_dir: Path) -> None:
    """A new run needs an absent or empty directory (never mix two runs' rows); its own lock file
    (taken just before the config is written) does not count."""
    run_dir = Path(run_dir)
    if run_dir.exists() and (not run_dir.is_dir() or any(p.name != LOCK_NAME for p in run_dir.iterdir())):
        raise ConfigError("out", "already exists and is not empty", str(run_dir),
                          "resume that run, or choose another run directory",
                          f"run directory {str(run_dir)!r} already exists and is not empty; resume that run, "
                          "or choose another run directory")


def create_run_dir(run_dir: Path, config: SearchConfig) -> None:
    """Create ``run_dir`` with its resolved ``config.toml`` (every default written out)."""
    check_new_run_dir(run_dir)
    atomic_write_text(run_dir / CONFIG_NAME, resolved_toml(config))


def load_run_config(run_dir: Path) -> SearchConfig:
    """The config a search run was started with (for resuming, status and export).

    Raises:
        FileNotFoundError: no such directory. ValueError: not a run directory, or a compare run
            (the message says which commands apply to it).
    """
    run_dir = Path(run_dir)
    path = run_dir / CONFIG_NAME
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {str(run_dir)!r} does not exist")
    if not path.is_file():
        raise ValueError(f"{str(run_dir)!r} is not an evoloss run directory: {CONFIG_NAME} is missing")
    if run_kind(run_dir) == "compare":
        raise ValueError(
            f"{str(run_dir)!r} is a compare run (written by evoloss compare), not a search run: status, export and "
            f"search --resume apply to search runs; for a compare run use evoloss report {run_dir} (tables, ranks, "
            f"figures), read its summary.txt, or pandas.read_parquet('{run_dir}/evaluations')")
    return load_config(path)


def run_kind(run_dir: Path) -> str:
    """``"compare"`` if the run's config.toml is a compare config, else ``"search"`` (unreadable
    TOML counts as a search: loading it then reports the TOML error)."""
    try:
        data = tomllib.loads((Path(run_dir) / CONFIG_NAME).read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError):
        return "search"
    return "compare" if any(key in data for key in COMPARE_SECTIONS) else "search"


def run_id_of(run_dir: Path) -> str:
    return Path(run_dir).resolve().name


# --- one writer ----------------------------------------------------------------------------------
class RunLockedError(ValueError):
    """The run directory is being written by another process (its holder is in the message)."""


def _holder_text(raw: bytes) -> str:
    try:
        info = json.loads(raw.decode("utf-8"))
        return (f"pid {int(info['pid'])} on {info['host']} ({info['command']}, since {info['since']})")
    except (ValueError, KeyError, TypeError):
        return "another process"


def probe_lock(run_dir: Path) -> None:
    """Raise `RunLockedError` if another process holds the writer lock of ``run_dir``; creates and
    changes nothing (the check a resume makes before its other checks)."""
    path = Path(run_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # no lock file: nobody has written this run since locks exist
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _locked(Path(run_dir), os.pread(fd, 4096, 0)) from None
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _locked(run_dir: Path, raw: bytes) -> RunLockedError:
    return RunLockedError(
        f"run directory {str(run_dir)!r} is being written by {_holder_text(raw)}; one writer per run: wait for it "
        f"to finish or stop it (evoloss status {run_dir} reads the run meanwhile)")


@contextlib.contextmanager
def writer_lock(run_dir: Path, command: str | None = None) -> Iterator[None]:
    """Hold the run's writer lock for the block (creates ``run_dir`` and its lock file if needed).

    Raises:
        RunLockedError: another process holds it; the message names that process.
        OSError: the lock file cannot be created (naming its path).
    """
    run_dir = Path(run_dir)
    path = run_dir / LOCK_NAME
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _locked(run_dir, os.pread(fd, 4096, 0)) from None
        since = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": since,
                "command": command or " ".join(["evoloss", *sys.argv[1:2]])}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode("utf-8"), 0)
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays (unlinking it would race the next writer)


# --- resume checks -------------------------------------------------------------------------------
def trajectory_config(data: Mapping[str, Any]) -> dict[str, Any]:
    """A config (as `config_dict` gives it) without the keys of `NOT_IN_TRAJECTORY`."""
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in data.items()}
    for key in NOT_IN_TRAJECTORY:
        section, _, leaf = key.partition(".")
        if leaf:
            out.get(section, {}).pop(leaf, None)
        else:
            out.pop(section, None)
    return out


def config_hash(data: Mapping[str, Any]) -> str:
    """SHA-256 of the trajectory-relevant config (canonical JSON: sorted keys, no spaces)."""
    text = json.dumps(trajectory_config(data), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, list) and any(isinstance(v, Mapping) for v in value):
        out = {}
        for i, v in enumerate(value):
            out.update(_flat(v, f"{prefix}[{i}]"))
        return out | ({f"{prefix}.length": len(value)} if prefix else {})
    return {prefix: value}


def changed_keys(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """The trajectory-relevant keys whose values differ between two configs, sorted. A key the saved
    config does not have (a setting added to evoloss since) counts as unchanged at its default."""
    a, b = _flat(trajectory_config(saved)), _flat(trajectory_config(current))
    defaults = _flat(trajectory_config(config_dict(SearchConfig())))
    return sorted(k for k in set(a) | set(b) if a.get(k, "<unset>") != b.get(k, "<unset>")
                  and not (k not in a and k in defaults and b.get(k) == defaults[k]))


def current_versions() -> dict[str, str]:
    """The evoloss and torch versions of this process (what a saved state records)."""
    from evoloss.losses.versions import evoloss_version, torch_version

    return {"evoloss": evoloss_version(), "torch": torch_version()}


def version_change(saved: Mapping[str, Any], now: Mapping[str, str]) -> str:
    """``"evoloss 0.1.0 -> 0.2.0; torch ..."`` for each recorded version that differs, or ``""``."""
    return "; ".join(f"{name} {saved[name]} -> {now[name]}" for name in sorted(now)
                     if name in saved and saved[name] != now[name])


def check_resume(run_dir: Path, config: SearchConfig, *, allow_version_change: bool = False) -> str:
    """Everything a resume of ``run_dir`` with ``config`` must pass, before any compute.

    Returns the version change to record in the new rows (``""`` when there is none).

    Raises:
        ValueError: a part that does not match the schema or has an older one, a gap, a config
            changed since the last saved state (`ConfigError` naming the key), ``search.generations``
            below the generations done, or a version change without ``allow_version_change``.
    """
    from evoloss.results.store import ParquetStore

    store = ParquetStore.open_read_only(run_dir)
    store.check_parts(allow_older=False)
    store.check_history()
    saved = store.load_state()
    if saved is None:
        return ""
    generation, state = saved
    current = config_dict(config)
    stored_config = state.get("config", {})
    if "config_hash" in state and config_hash(stored_config) != state["config_hash"]:
        raise ValueError(f"state of generation {generation} in {str(run_dir)!r}: its config does not match its "
                         "config_hash (the state file was edited); restore it, or start a new run")
    changed = changed_keys(stored_config, current)
    if changed:
        key = changed[0]
        raise ConfigError(key, "changed since the run was started", _flat(trajectory_config(current)).get(key),
                          f"it was {_flat(trajectory_config(stored_config)).get(key)!r}",
                          f"config {key} in {str(Path(run_dir) / CONFIG_NAME)!r} changed since generation "
                          f"{generation} was saved (was {_flat(trajectory_config(stored_config)).get(key)!r}, now "
                          f"{_flat(trajectory_config(current)).get(key)!r}): a resume must compute what the run "
                          "computed; restore it, or start a new run")
    done = len(store.generations_done())
    if config.search.generations < done:
        raise ConfigError("search.generations", f"is below the {done} generations this run has done",
                          config.search.generations, f"set it to at least {done} (or leave it as it was)")
    change = version_change(state.get("versions", {}), current_versions())
    if change and not allow_version_change:
        raise ValueError(
            f"run {str(run_dir)!r} was written with other versions ({change}); a resume across versions may "
            "change the trajectory: use the versions it was written with, or allow it (evoloss search --resume "
            "RUN --allow-version-change; the rows then record the change in their version_change column)")
    return change
