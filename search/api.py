"""The Python API: search, export, compare and report, the way the command line does them.

``evoloss.search(...)``, ``evoloss.export(...)``, ``evoloss.compare(...)`` and ``evoloss.report(...)``
are these functions (`evoloss/__init__.py` exposes them lazily). The command line is a thin layer
over them: each command parses its arguments, calls one function here and prints the result. So the
rules of a run live here, each once: how a config is given (`resolve_search_config`), what may change
when a run is resumed (`RESUME_MAY_SET`), which engine runs it, which loss an export picks
(`picked_spec`), and which files a run writes (``config.toml``, ``summary.txt``).

Errors are those of the config layer (`ConfigError`, a ValueError naming key, value and fix),
``FileNotFoundError`` for missing files, and ValueError for a run directory that cannot be used;
nothing is written before every check has passed. Messages name keys and arguments of these
functions, never command-line flags.
"""
from __future__ import annotations

import difflib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from evoloss.search.preset_files import preset_names

if TYPE_CHECKING:  # the heavy modules load on first use
    import pandas as pd

    from evoloss.losses import LossSpec
    from evoloss.search.compare import CompareSummary
    from evoloss.search.compare_config import CompareConfig
    from evoloss.search.config import SearchConfig
    from evoloss.search.coordinator import SearchSummary

ENGINES = ("native", "tune")
PICKS = ("best", "mean", "reevaluated")
# What a resume may change besides cluster.* (where a run executes, not what it computes).
RESUME_MAY_SET = ("search.generations", "grid.data_dir")
SUMMARY_NAME = "summary.txt"
Progress = Callable[[str], None]


# --- progress ------------------------------------------------------------------------------------
def stderr_progress() -> Progress:
    """A progress sink: live ``\\r`` lines on a terminal, finished lines only in logs and notebooks."""
    tty = sys.stderr.isatty()

    def write(line: str) -> None:
        if tty:
            sys.stderr.write(line)
        elif line.endswith("\n"):
            sys.stderr.write(line.lstrip("\r"))
        sys.stderr.flush()

    return write


def _progress(progress: bool | Progress) -> Progress | None:
    if callable(progress):
        return progress
    return stderr_progress() if progress else None


# --- configs -------------------------------------------------------------------------------------
def _config_error(key: str, problem: str, value: Any, fix: str, *, argument: bool = True) -> Exception:
    """A `ConfigError` about an argument of these functions (``argument``) or a config key."""
    from evoloss.search.config_fields import ConfigError

    message = f"{key}={value!r}: {problem}; {fix}" if argument else None
    return ConfigError(key, problem, value, fix, message)


def _source(config: Any, kind: str) -> tuple[str | None, str | None, dict | None]:
    """(preset, path, data) for a config given as a preset name, a TOML path or a mapping."""
    if isinstance(config, Mapping):
        return None, None, dict(config)
    if isinstance(config, (str, Path)):
        text = str(config)
        if isinstance(config, str) and text in preset_names(kind):
            return text, None, None
        if text.endswith(".toml") or Path(text).exists():
            return None, text, None
        close = difflib.get_close_matches(text, preset_names(kind), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise _config_error("config", f"is neither a {kind} preset nor a TOML file", text,
                            f"{hint}give a preset ({', '.join(preset_names(kind))}) or the path of a .toml file")
    raise _config_error("config", "must be a preset name, a TOML path, a dict or a config object",
                        type(config).__name__, f"e.g. evoloss.{kind}('quick')")


def resolve_search_config(config: Any, overrides: Mapping[str, Any] | None = None) -> "SearchConfig":
    """A validated `SearchConfig` from a preset name, a TOML path, a dict or a `SearchConfig`,
    with ``overrides`` (dotted keys, ``{"search.popsize": 4}``) applied last."""
    from evoloss.search.config import SearchConfig, config_dict, load_config

    if isinstance(config, SearchConfig):
        config = config_dict(config)
    preset, path, data = _source(config, "search")
    return load_config(path, preset=preset, overrides=overrides, data=data)


def resolve_compare_config(config: Any, overrides: Mapping[str, Any] | None = None) -> "CompareConfig":
    """A validated `CompareConfig`, given as for `resolve_search_config`."""
    from evoloss.search.compare_config import CompareConfig, compare_config_dict, load_compare_config

    if isinstance(config, CompareConfig):
        config = compare_config_dict(config)
    preset, path, data = _source(config, "compare")
    return load_compare_config(path, preset=preset, overrides=overrides, data=data)


def _merged(overrides: Mapping[str, Any] | None, **extra: Any) -> dict[str, Any]:
    out = dict(overrides or {})
    out.update({k: v for k, v in extra.items() if v is not None})
    return out


# --- search --------------------------------------------------------------------------------------
class SearchResult:
    """A search run, finished or not: its directory and queries of its record store.

    Opening one (``SearchResult(run_dir)``) only reads the run; it never modifies it, so it is safe
    on a search that is still running.
    """

    def __init__(self, run_dir: str | Path, summary: "SearchSummary | None" = None) -> None:
        from evoloss.search.run_dir import load_run_config

        self.run_dir = Path(run_dir)
        self.config: SearchConfig = load_run_config(self.run_dir)
        self.summary = summary  # what the call that ran it returned (None for a reopened run)

    def _store(self):
        from evoloss.results.store import ParquetStore

        return ParquetStore.open_read_only(self.run_dir)

    @property
    def best(self) -> dict[str, Any] | None:
        """The best candidate: ``{"spec", "fitness", "generation", "candidate"}``, or None."""
        from evoloss.results.queries import best_candidate

        found = best_candidate(self._store(), self.config.grid.metric_rule)
        if found is None:
            return None
        spec, fitness, generation, candidate = found
        return {"spec": spec, "fitness": fitness, "generation": generation, "candidate": candidate}

    @property
    def mean(self) -> "LossSpec | None":
        """The CMA-ES mean after the last complete generation, decoded (None before the first)."""
        from evoloss.search.coordinator import decode_candidates
        from evoloss.search.strategy import CMAStrategy

        saved = self._store().load_state()
        if saved is None:
            return None
        return decode_candidates(self.config.search.family, CMAStrategy.from_state(saved[1]["strategy"]).mean[None, :])[0]

    def evaluations(self, complete_only: bool = True) -> "pd.DataFrame":
        """Every evaluation row (one per candidate × task) as a DataFrame (docs/records.md)."""
        return self._store().read(complete_only=complete_only)

    def generations(self) -> "pd.DataFrame":
        """One row per complete generation: best and mean fitness, sigma, evaluations, timings."""
        return self._store().read_generations(complete_only=True)

    def status(self) -> dict[str, Any]:
        """Progress, best candidate and failure counts of the run, as a JSON-ready dict."""
        from evoloss.results.queries import run_progress

        best = self.best
        return {
            "run_dir": str(self.run_dir),
            "family": self.config.search.family,
            **run_progress(self._store()),
            "generations_planned": self.config.search.generations,
            "best_fitness": None if best is None else best["fitness"],
            "best": None if best is None else {"generation": best["generation"], "candidate": best["candidate"],
                                               **best["spec"].to_dict()},
            "metric_rule": self.config.grid.metric_rule,
        }

    def __repr__(self) -> str:
        return f"SearchResult({str(self.run_dir)!r})"


def _resume_config(run_dir: Path, overrides: dict[str, Any]) -> "SearchConfig":
    from evoloss.search.config import load_config
    from evoloss.search.run_dir import CONFIG_NAME, load_run_config

    stored = load_run_config(run_dir)
    fixed = [k for k in overrides if k not in RESUME_MAY_SET and not k.startswith("cluster.")]
    if fixed:
        raise _config_error(fixed[0], "cannot change when a run is resumed (it would change the trajectory)",
                            overrides[fixed[0]], f"only {', '.join(RESUME_MAY_SET)} and cluster.* may be set "
                            "when resuming; start a new run to change anything else", argument=False)
    return load_config(run_dir / CONFIG_NAME, overrides=overrides) if overrides else stored


def prepare_search(config: Any = None, *, out: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
                   engine: str | None = None, resume: str | Path | None = None,
                   data_dir: str | Path | None = None) -> tuple["SearchConfig", Path, bool]:
    """Validate everything a search needs before anything is written: (config, run_dir, resuming)."""
    if engine is not None and engine not in ENGINES:
        raise _config_error("engine", "is not an engine", engine, f"choose one of {', '.join(ENGINES)}")
    overrides = _merged(overrides, **{"cluster.engine": engine,
                                      "grid.data_dir": None if data_dir is None else str(data_dir)})
    if resume is not None:
        if config is not None:
            raise _config_error("config", "cannot be given when resuming: the run's own config.toml is used",
                                config, "drop config, or start a new run")
        return _resume_config(Path(resume), overrides), Path(resume), True
    if config is None:
        raise _config_error("config", "is missing", None, "give a preset ('quick'), a TOML path or a dict")
    resolved = resolve_search_config(config, overrides)
    return resolved, Path(out or resolved.output.run_dir), False


def run_search_in(config: "SearchConfig", run_dir: Path, *, address: str | None = None,
                  progress: Progress | None = None, version_change: str = "") -> "SearchSummary":
    """Run the search of ``config`` in the existing ``run_dir`` on the configured engine (the caller
    holds the run's writer lock); ``version_change`` is recorded in every new row."""
    from evoloss.results.store import ParquetStore
    from evoloss.search.run_dir import run_id_of

    store = ParquetStore(run_dir)
    if config.cluster.engine == "tune":
        from evoloss.search.tune_engine import run_search_tune

        return run_search_tune(config, store, run_id=run_id_of(run_dir), run_dir=run_dir, address=address,
                               progress=progress, version_change=version_change)
    from evoloss.search.coordinator import run_search
    from evoloss.search.engine import evaluation_pool

    with evaluation_pool(config.cluster, run_dir, address=address) as pool:
        return run_search(config, pool, store, run_id=run_id_of(run_dir), progress=progress,
                          version_change=version_change)


def _check_address(address: str | None) -> None:
    """The ``address`` argument (``HOST:PORT``), checked before anything is written."""
    if address is not None:
        from evoloss.search.config import check_cluster_address

        check_cluster_address("address", address)


def search(config: Any = None, *, out: str | Path | None = None, address: str | None = None,
           overrides: Mapping[str, Any] | None = None, engine: str | None = None,
           resume: str | Path | None = None, data_dir: str | Path | None = None,
           progress: bool | Progress = True, allow_version_change: bool = False) -> SearchResult:
    """Run a CMA-ES loss search (or resume one) and return its `SearchResult`.

    Args:
        config: a preset name (``"quick"``), a TOML path, a dict of sections, or a `SearchConfig`.
        out: the run directory (default: the config's ``output.run_dir``); must be new or empty.
        address: ``HOST:PORT`` of an existing Ray cluster (default: an embedded Ray on 127.0.0.1).
        overrides: dotted keys applied last, e.g. ``{"search.popsize": 4}``.
        engine: ``"native"`` (default) or ``"tune"`` (Ray Tune); the config's ``cluster.engine`` otherwise.
        resume: a run directory to continue from its last complete generation (then no ``config``;
            ``overrides`` may only set ``search.generations``, ``grid.data_dir`` and ``cluster.*``).
        data_dir: where dataset files live (``grid.data_dir``).
        progress: True prints a progress line to stderr, False is quiet, a callable receives the lines.
        allow_version_change: resume a run written with another evoloss or torch version (the new rows
            record the change in their ``version_change`` column); refused otherwise.

    The run directory is written by one process at a time (`search.run_dir.writer_lock`); SIGTERM
    and SIGINT stop the search at a safe point (`search.engine.Stopped`, after the embedded Ray
    has been stopped). Docs: docs/RELIABILITY.md.

    Raises:
        ConfigError: an invalid config, override or argument (names the key, the value and the fix).
        ValueError: ``out`` exists and is not empty, another process writes the run, or a resume check
            failed (search.run_dir.check_resume); FileNotFoundError: a missing file or run.
        OSError: a write failed (the message names the path); a search stopped by it resumes.
    """
    from evoloss.search.config import resolved_toml
    from evoloss.search.engine import Stopped, stop_on_signals
    from evoloss.search.run_dir import (CONFIG_NAME, atomic_write_text, check_new_run_dir, check_resume,
                                        create_run_dir, probe_lock, writer_lock)

    resolved, run_dir, resuming = prepare_search(config, out=out, overrides=overrides, engine=engine,
                                                 resume=resume, data_dir=data_dir)
    _check_address(address)
    if resuming:  # every check before anything is written (then again under the lock: no race)
        probe_lock(run_dir)
        check_resume(run_dir, resolved, allow_version_change=allow_version_change)
    else:
        check_new_run_dir(run_dir)
    try:
        with stop_on_signals(), writer_lock(run_dir, "evoloss search"):
            change = ""
            if not resuming:
                create_run_dir(run_dir, resolved)
            else:
                change = check_resume(run_dir, resolved, allow_version_change=allow_version_change)
                if overrides or engine or data_dir:  # e.g. more generations: config.toml says what the run now runs
                    atomic_write_text(run_dir / CONFIG_NAME, resolved_toml(resolved))
            summary = run_search_in(resolved, run_dir, address=address, progress=_progress(progress),
                                    version_change=change)
    except Stopped as stop:
        stop.run_dir, stop.resumable = run_dir, (run_dir / CONFIG_NAME).is_file()
        raise
    return SearchResult(run_dir, summary)


# --- export --------------------------------------------------------------------------------------
def picked_spec(run: str | Path | SearchResult, pick: str = "best", *, top: int | None = None,
                reeval_seeds: int | None = None, reeval_dir: str | Path | None = None,
                progress: bool | Progress = False) -> tuple["LossSpec", dict[str, Any]]:
    """The loss a run exports and where it came from: the "best" candidate, the CMA-ES "mean", or
    ("reevaluated") the best of the ``top`` candidates and the mean re-trained on ``reeval_seeds``
    new seeds, in the new compare run ``reeval_dir`` (search/reevaluate.py, docs/export.md)."""
    from evoloss.search.reevaluate import check_pick_arguments, reevaluate

    if pick not in PICKS:
        raise _config_error("pick", "is not a choice", pick, f"choose one of {', '.join(PICKS)}")
    top, reeval_seeds = check_pick_arguments(pick, top, reeval_seeds)
    run = run if isinstance(run, SearchResult) else SearchResult(run)
    run_dir = run.run_dir
    if pick == "reevaluated":
        if reeval_dir is None:
            raise _config_error("reeval_dir", "is needed by pick='reevaluated'", None,
                                "give a new directory for the re-evaluation run (export() makes one)")
        return reevaluate(run, top=top, reeval_seeds=reeval_seeds, run_dir=Path(reeval_dir),
                          progress=_progress(progress))
    if pick == "mean":
        saved = run._store().load_state()
        if saved is None:
            raise ValueError(f"run {str(run_dir)!r} has no complete generation: no CMA-ES mean to export")
        return run.mean, {"pick": "mean", "fitness": None, "generation": saved[0], "candidate": None}
    best = run.best
    if best is None:
        raise ValueError(f"run {str(run_dir)!r} has no complete generation with a finite fitness: nothing to export")
    return best["spec"], {"pick": "best", "fitness": best["fitness"], "generation": best["generation"],
                          "candidate": best["candidate"]}


def export(source: Any, *, out: str | Path | None = None, name: str = "evolved_loss", pick: str = "best",
           overwrite: bool = False, top: int | None = None, reeval_seeds: int | None = None,
           progress: bool | Progress = True) -> Path:
    """Export a loss as a plug-in (``loss.json`` + a standalone ``NAME.py``); returns the ``loss.json`` path.

    Args:
        source: a search run directory, a `SearchResult`, or a `LossSpec`.
        out: the plug-in directory (default for a run: ``RUN_DIR/export/NAME``; required for a spec).
        name: the plug-in's name, a Python identifier (the module is ``NAME.py``).
        pick: for a run, ``"best"`` (the highest-fitness candidate, the default), ``"mean"`` (the final
            CMA-ES mean) or ``"reevaluated"`` (the best, on new seeds, of the top candidates and the mean;
            the re-evaluation run is written to ``OUT/reevaluation``). docs/export.md says which to use.
        overwrite: replace an existing export.
        top: pick="reevaluated": how many distinct top candidates to re-evaluate with the mean (1-64, default 4).
        reeval_seeds: pick="reevaluated": new seeds per task (1-16, default 2).
        progress: pick="reevaluated": True prints the re-evaluation's progress to stderr, False is quiet,
            a callable receives the lines.
    """
    from evoloss.losses import LossSpec
    from evoloss.losses.plugin import PLUGIN_FILE, export_plugin, validate_plugin_name

    validate_plugin_name(name)
    if isinstance(source, LossSpec):
        if out is None:
            raise _config_error("out", "is needed to export a LossSpec", None, "give out=DIRECTORY")
        return export_plugin(source, Path(out), name=name, overwrite=overwrite) / PLUGIN_FILE
    from evoloss.losses.versions import evoloss_version
    from evoloss.search.config import config_dict
    from evoloss.search.reevaluate import check_pick_arguments, export_reevaluated, reevaluate
    from evoloss.search.run_dir import run_id_of

    if pick not in PICKS:  # before the run is opened: the argument is wrong whatever the run holds
        raise _config_error("pick", "is not a choice", pick, f"choose one of {', '.join(PICKS)}")
    top, reeval_seeds = check_pick_arguments(pick, top, reeval_seeds)
    run = source if isinstance(source, SearchResult) else SearchResult(source)
    run_dir, cfg = run.run_dir, config_dict(run.config)
    out_dir = Path(out) if out else run_dir / "export" / name

    def provenance(origin: dict[str, Any]) -> dict[str, Any]:
        return {"run_id": run_id_of(run_dir), **origin, "metric_rule": run.config.grid.metric_rule,
                "task_grid": cfg["grid"], "train": cfg["train"], "search": cfg["search"],
                "evoloss_version": evoloss_version()}

    if pick != "reevaluated":
        spec, origin = picked_spec(run, pick)
        return export_plugin(spec, out_dir, name=name, provenance=provenance(origin), overwrite=overwrite) / PLUGIN_FILE
    if run._store().load_state() is None:  # before anything is written
        raise ValueError(f"run {str(run_dir)!r} has no complete generation: nothing to re-evaluate; wait for its "
                         f"first generation (evoloss status {run_dir})")

    def pick_in(reeval_dir: Path, recorded_dir: Path) -> tuple["LossSpec", dict[str, Any]]:
        return reevaluate(run, top=top, reeval_seeds=reeval_seeds, run_dir=reeval_dir, recorded_dir=recorded_dir,
                          progress=_progress(progress))

    return export_reevaluated(out_dir, overwrite=overwrite, pick_in=pick_in,
                              write_plugin=lambda spec, origin, d: export_plugin(
                                  spec, d, name=name, provenance=provenance(origin))) / PLUGIN_FILE


# --- compare and report --------------------------------------------------------------------------
class CompareResult:
    """A compare run: its directory, its rows and its summary table (read-only, like `SearchResult`)."""

    def __init__(self, run_dir: str | Path, summary: "CompareSummary | None" = None) -> None:
        self.run_dir = Path(run_dir)
        if not (self.run_dir / "config.toml").is_file():
            raise FileNotFoundError(f"{str(self.run_dir)!r} is not a compare run directory: config.toml is missing")
        self.summary_info = summary

    def evaluations(self) -> "pd.DataFrame":
        """Every row: one per method × task × seed (docs/records.md)."""
        from evoloss.results.store import ParquetStore

        return ParquetStore.open_read_only(self.run_dir).read(complete_only=False)

    def summary(self) -> str:
        """The summary table (clean test accuracy, %, per method and task group) as printed."""
        path = self.run_dir / SUMMARY_NAME
        if self.summary_info is not None:
            return self.summary_info.table
        if not path.is_file():
            raise FileNotFoundError(f"compare run {str(self.run_dir)!r} has no {SUMMARY_NAME}: it did not finish")
        return path.read_text(encoding="utf-8").rstrip("\n")

    def __repr__(self) -> str:
        return f"CompareResult({str(self.run_dir)!r})"


def prepare_compare(config: Any, *, out: str | Path | None = None,
                    overrides: Mapping[str, Any] | None = None) -> tuple["CompareConfig", Path]:
    """The validated compare config and its (new) run directory; raises before anything is written."""
    from evoloss.search.run_dir import check_new_run_dir

    if config is None:
        raise _config_error("config", "is missing", None, "give a compare preset ('quick'), a TOML path or a dict")
    resolved = resolve_compare_config(config, overrides)
    run_dir = Path(out or resolved.output.run_dir)
    check_new_run_dir(run_dir)
    return resolved, run_dir


def compare(config: Any, *, out: str | Path | None = None, address: str | None = None,
            overrides: Mapping[str, Any] | None = None, progress: bool | Progress = True) -> CompareResult:
    """Compare hand-designed, evolved and meta-learned losses on the same tasks; returns the run.

    ``config`` is a compare preset name, a TOML path, a dict or a `CompareConfig`; ``overrides`` take
    dotted keys (``{"methods.evolved.run_dir": "runs/s"}`` addresses a method by its name). The run
    directory gets ``config.toml`` (resolved), the rows and ``summary.txt``.
    """
    from evoloss.results.store import ParquetStore
    from evoloss.search.compare import run_compare
    from evoloss.search.compare_config import resolved_compare_toml
    from evoloss.search.engine import Stopped, evaluation_pool, stop_on_signals
    from evoloss.search.run_dir import CONFIG_NAME, atomic_write_text, check_new_run_dir, run_id_of, writer_lock

    resolved, run_dir = prepare_compare(config, out=out, overrides=overrides)
    _check_address(address)
    try:
        with stop_on_signals(), writer_lock(run_dir, "evoloss compare"):
            check_new_run_dir(run_dir)  # again, under the lock: two compares on one new directory
            atomic_write_text(run_dir / CONFIG_NAME, resolved_compare_toml(resolved))
            with evaluation_pool(resolved.cluster, run_dir, address=address) as pool:
                summary = run_compare(resolved, pool, ParquetStore(run_dir), run_id=run_id_of(run_dir),
                                      progress=_progress(progress))
            atomic_write_text(run_dir / SUMMARY_NAME, summary.table + "\n")
    except Stopped as stop:
        stop.run_dir = run_dir
        raise
    return CompareResult(run_dir, summary)


def report(run: str | Path | SearchResult | CompareResult, *, out: str | Path | None = None,
           metric: str | None = None, classes: int = 10) -> Path:
    """Write ``report.md`` and its figures for a compare or search run; returns the report's path."""
    from evoloss.results.report import REPORT_NAME, write_report

    run_dir = run.run_dir if isinstance(run, (SearchResult, CompareResult)) else Path(run)
    folder, _ = write_report(run_dir, out, metric=metric, num_classes=classes)
    return Path(folder) / REPORT_NAME

