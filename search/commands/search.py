"""`evoloss search`: launch (or resume) a CMA-ES loss search (`evoloss.search.api.search`)."""
from __future__ import annotations

import argparse

NAME = "search"
HELP = "run a CMA-ES loss search (embedded local Ray by default, or --address to join a cluster)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from evoloss.search.preset_files import preset_names

    p.add_argument("config", nargs="?", help="search config (TOML); or use --preset")
    p.add_argument("--preset", help=f"a shipped config: {', '.join(preset_names('search'))}")
    p.add_argument("--out", help="run directory (default: the config's output.run_dir)")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR (or --out) from its last complete generation")
    p.add_argument("--address", help="HOST:PORT of an existing Ray cluster to join")
    p.add_argument("--engine", choices=("native", "tune"), help="dispatch engine (default: the config's)")
    p.add_argument("--data-dir", help="where dataset files live (default: $EVOLOSS_DATA_DIR or ~/.cache/evoloss)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set search.generations=3 (repeatable)")
    p.add_argument("--allow-version-change", action="store_true",
                   help="with --resume: continue a run written with another evoloss or torch version "
                        "(recorded in the new rows' version_change column)")


def api_arguments(args: argparse.Namespace) -> dict:
    """The keyword arguments of `evoloss.search` that the command line's arguments stand for."""
    from evoloss.search.cli import config_argument, overrides_argument

    overrides = overrides_argument(args)
    if args.resume is not None:
        run_dir = args.resume if isinstance(args.resume, str) else args.out
        if not run_dir:
            raise ValueError("--resume needs the run directory: --resume RUN_DIR (or --out RUN_DIR --resume)")
        if args.config or args.preset:
            raise ValueError("--resume continues a run with the config stored in it; drop CONFIG/--preset")
        return {"resume": run_dir, "overrides": overrides, "engine": args.engine, "data_dir": args.data_dir}
    return {"config": config_argument(args, "search"), "out": args.out, "overrides": overrides, "engine": args.engine,
            "data_dir": args.data_dir}


def print_summary(summary, run_dir) -> None:
    """The closing lines of a search: how far it got, the best loss, and how to export it."""
    reasons = ", ".join(f"{k}" for k in summary.stop_reasons) or "interrupted"
    lines = [f"search {summary.run_id}: {summary.generations} generations, {summary.evaluations} evaluations in "
             f"{summary.wall_s:.1f}s (stopped: {reasons})"]
    if summary.best_spec is not None:
        params = ", ".join(f"{k}={v:.4g}" for k, v in summary.best_spec.params.items())
        lines.append(f"best fitness {summary.best_fitness:.4f}: {summary.best_spec.family}({params})")
        lines.append(f"export it with: evoloss export {run_dir}")
    else:
        lines.append("no candidate finished: see the error column of the evaluations")
    print("\n".join(lines))


def run(args: argparse.Namespace) -> int:
    from evoloss.search import api

    from evoloss.search.config_fields import ConfigError

    try:
        if args.allow_version_change and args.resume is None:
            raise ValueError("--allow-version-change applies to --resume only (a new run has no earlier version)")
        result = api.search(address=args.address, progress=api.stderr_progress(),
                            allow_version_change=args.allow_version_change, **api_arguments(args))
    except ConfigError as exc:
        if exc.key == "out" and args.resume is None:  # the run exists: say how to continue it
            raise ValueError(f"{exc}; evoloss search --resume {exc.value} continues it") from None
        raise
    print_summary(result.summary, result.run_dir)
    return 0
