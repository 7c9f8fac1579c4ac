"""`evoloss search`: launch (or resume) a CMA-ES loss search."""
from __future__ import annotations

import argparse
from pathlib import Path

from evoloss.results.store import ParquetStore
from evoloss.search.cli import progress_writer
from evoloss.search.config import SearchConfig, load_config, parse_override, resolved_toml
from evoloss.search.coordinator import SearchSummary, run_search
from evoloss.search.run_dir import atomic_write_text, create_run_dir, load_run_config, run_id_of

NAME = "search"
_RESUME_MAY_SET = ("search.generations", "grid.data_dir")  # plus cluster.*: where, not what, it runs
HELP = "run a CMA-ES loss search (embedded local Ray by default, or --address to join a cluster)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="search config (TOML); or use --preset")
    p.add_argument("--preset", help="a shipped config: quick, arl-ar, arl-dr")
    p.add_argument("--out", help="run directory (default: the config's output.run_dir)")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR (or --out) from its last complete generation")
    p.add_argument("--address", help="HOST:PORT of an existing Ray cluster to join")
    p.add_argument("--engine", choices=("native", "tune"), help="dispatch engine (default: the config's)")
    p.add_argument("--data-dir", help="where dataset files live (default: $EVOLOSS_DATA_DIR or ~/.cache/evoloss)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set search.generations=3 (repeatable)")


def resolve(args: argparse.Namespace) -> tuple[SearchConfig, Path, bool]:
    """Validate everything a run needs before anything is written: (config, run_dir, resuming)."""
    overrides = dict(parse_override(s) for s in args.set)
    if args.engine:
        overrides["cluster.engine"] = args.engine
    if args.data_dir:
        overrides["grid.data_dir"] = args.data_dir
    if args.resume is not None:
        run_dir = Path(args.resume if isinstance(args.resume, str) else (args.out or ""))
        if not str(run_dir):
            raise ValueError("--resume needs the run directory: --resume RUN_DIR (or --out RUN_DIR --resume)")
        if args.config or args.preset:
            raise ValueError("--resume continues a run with the config stored in it; drop CONFIG/--preset")
        stored = load_run_config(run_dir)
        fixed = [k for k in overrides if k not in _RESUME_MAY_SET and not k.startswith("cluster.")]
        if fixed:
            raise ValueError(f"--resume keeps the run's trajectory: {fixed[0]} cannot change; only "
                             f"{', '.join(_RESUME_MAY_SET)} and cluster.* may be set when resuming")
        config = load_config(run_dir / "config.toml", overrides=overrides) if overrides else stored
        return config, run_dir, True
    if bool(args.config) == bool(args.preset):
        raise ValueError("give exactly one of CONFIG.toml or --preset NAME (e.g. evoloss search --preset quick)")
    config = load_config(args.config, preset=args.preset, overrides=overrides)
    run_dir = Path(args.out or config.output.run_dir)
    return config, run_dir, False


def run(args: argparse.Namespace) -> int:
    config, run_dir, resuming = resolve(args)
    if not resuming:
        create_run_dir(run_dir, config)
    elif args.set or args.engine:  # e.g. more generations: the run's config.toml says what it now runs
        atomic_write_text(run_dir / "config.toml", resolved_toml(config))
    summary = execute(config, run_dir, address=args.address)
    print_summary(summary, run_dir)
    return 0


def execute(config: SearchConfig, run_dir: Path, *, address: str | None = None) -> SearchSummary:
    """Run the search of ``config`` in ``run_dir`` on the configured engine."""
    store = ParquetStore(run_dir)
    progress = progress_writer()
    if config.cluster.engine == "tune":
        from evoloss.search.tune_engine import run_search_tune

        return run_search_tune(config, store, run_id=run_id_of(run_dir), run_dir=run_dir, address=address,
                               progress=progress)
    from evoloss.search.engine import evaluation_pool

    with evaluation_pool(config.cluster, run_dir, address=address) as pool:
        return run_search(config, pool, store, run_id=run_id_of(run_dir), progress=progress)




def print_summary(s: SearchSummary, run_dir: Path) -> None:
    reasons = ", ".join(f"{k}" for k in s.stop_reasons) or "interrupted"
    lines = [
        f"search {s.run_id}: {s.generations} generations, {s.evaluations} evaluations in {s.wall_s:.1f}s "
        f"(stopped: {reasons})",
    ]
    if s.best_spec is not None:
        params = ", ".join(f"{k}={v:.4g}" for k, v in s.best_spec.params.items())
        lines.append(f"best fitness {s.best_fitness:.4f}: {s.best_spec.family}({params})")
        lines.append(f"export it with: evoloss export {run_dir}")
    else:
        lines.append("no candidate finished: see the error column of the evaluations")
    print("\n".join(lines))
