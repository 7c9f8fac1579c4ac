"""`evoloss compare`: hand-designed vs evolved vs meta-learned losses on the same tasks (`evoloss.compare`).

``evoloss compare (CONFIG.toml | --preset NAME) [--out RUN_DIR] [--address ADDR] [--set KEY=VALUE]``.
Everything is validated before the run directory is created (a bad config is one line on stderr
and exit status 2, with nothing written); the run then writes ``config.toml`` (resolved), the rows
(``evaluations/``), ``summary.txt`` and prints the summary table.
"""
from __future__ import annotations

import argparse

NAME = "compare"
HELP = "compare hand-designed, evolved and meta-learned losses on the same tasks (rows for evoloss report)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from evoloss.search.preset_files import preset_names

    p.add_argument("config", nargs="?", help="compare config (TOML); or use --preset")
    p.add_argument("--preset", help=f"a shipped compare config: {', '.join(preset_names('compare'))}")
    p.add_argument("--out", help="run directory (default: the config's output.run_dir); must be new or empty")
    p.add_argument("--address", help="HOST:PORT of an existing Ray cluster to join")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.epochs=2 or --set methods.evolved.run_dir=runs/x")


def print_summary(result) -> None:
    """The summary table, the row counts and where the full report comes from."""
    summary = result.summary_info
    statuses = ", ".join(f"{k} {v}" for k, v in summary.statuses.items())
    print(summary.table)
    print(f"compare {summary.run_id}: {summary.rows} rows ({statuses}) from {summary.jobs} jobs "
          f"in {summary.wall_s:.1f}s; rows in {result.run_dir / 'evaluations'}")
    print(f"full report: evoloss report {result.run_dir}")


def run(args: argparse.Namespace) -> int:
    from evoloss.search import api
    from evoloss.search.cli import config_argument, overrides_argument

    result = api.compare(config_argument(args, "compare"), out=args.out, address=args.address,
                         overrides=overrides_argument(args), progress=api.stderr_progress())
    print_summary(result)
    return 0
