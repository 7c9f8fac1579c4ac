"""`evoloss compare`: hand-designed vs evolved vs meta-learned losses on the same tasks.

``evoloss compare (CONFIG.toml | --preset NAME) [--out RUN_DIR] [--address ADDR] [--set KEY=VALUE]``.
Everything is validated before the run directory is created (a bad config is one line on stderr
and exit status 2, with nothing written); the run then writes ``config.toml`` (resolved), the rows
(``evaluations/``), ``summary.txt`` and prints the summary table.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from evoloss.results.store import ParquetStore
from evoloss.search.compare import CompareSummary, run_compare
from evoloss.search.compare_config import CompareConfig, list_compare_presets, load_compare_config, resolved_compare_toml
from evoloss.search.cli import progress_writer
from evoloss.search.config import parse_override
from evoloss.search.run_dir import CONFIG_NAME, atomic_write_text, check_new_run_dir, run_id_of

NAME = "compare"
HELP = "compare hand-designed, evolved and meta-learned losses on the same tasks (rows for evoloss report)"
SUMMARY_NAME = "summary.txt"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="compare config (TOML); or use --preset")
    p.add_argument("--preset", help=f"a shipped compare config: {', '.join(list_compare_presets())}")
    p.add_argument("--out", help="run directory (default: the config's output.run_dir); must be new or empty")
    p.add_argument("--address", help="HOST:PORT of an existing Ray cluster to join")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.epochs=2 or --set methods.evolved.run_dir=runs/x")


def resolve(args: argparse.Namespace) -> tuple[CompareConfig, Path]:
    """The validated config and the (new) run directory; raises before anything is written."""
    if bool(args.config) == bool(args.preset):
        raise ValueError("give exactly one of CONFIG.toml or --preset NAME (e.g. evoloss compare --preset quick)")
    overrides = dict(parse_override(s) for s in args.set)
    config = load_compare_config(args.config, preset=args.preset, overrides=overrides)
    run_dir = Path(args.out or config.output.run_dir)
    check_new_run_dir(run_dir)
    return config, run_dir


def execute(config: CompareConfig, run_dir: Path, *, address: str | None = None) -> CompareSummary:
    """Run the compare of ``config`` into the new ``run_dir`` on the Ray actor pool."""
    from evoloss.search.engine import evaluation_pool  # imports ray: only when a compare really runs

    atomic_write_text(run_dir / CONFIG_NAME, resolved_compare_toml(config))
    with evaluation_pool(config.cluster, run_dir, address=address) as pool:
        summary = run_compare(config, pool, ParquetStore(run_dir), run_id=run_id_of(run_dir),
                              progress=progress_writer())
    atomic_write_text(run_dir / SUMMARY_NAME, summary.table + "\n")
    return summary




def print_summary(summary: CompareSummary, run_dir: Path) -> None:
    statuses = ", ".join(f"{k} {v}" for k, v in summary.statuses.items())
    print(summary.table)
    print(f"compare {summary.run_id}: {summary.rows} rows ({statuses}) from {summary.jobs} jobs "
          f"in {summary.wall_s:.1f}s; rows in {run_dir / 'evaluations'}")
    print(f"full report: evoloss report {run_dir}")


def run(args: argparse.Namespace) -> int:
    config, run_dir = resolve(args)
    summary = execute(config, run_dir, address=args.address)
    print_summary(summary, run_dir)
    return 0
