"""`evoloss export RUN_DIR`: the best loss of a search as a standalone plug-in (`evoloss.export`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from evoloss.search.api import PICKS  # a light module: its heavy imports happen inside its functions

NAME = "export"
HELP = "export the best candidate of a search run as a loss plug-in (loss.json + standalone .py)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="the run directory of a search")
    p.add_argument("--out", help="output directory (default: RUN_DIR/export/NAME)")
    p.add_argument("--name", default="evolved_loss", help="plug-in name: a Python identifier (default evolved_loss)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export")
    p.add_argument("--pick", choices=PICKS, default="best",
                   help="best: the candidate with the highest fitness (default); mean: the CMA-ES mean after the "
                        "last complete generation (never scored itself, but free of the winner's curse)")


def run(args: argparse.Namespace) -> int:
    from evoloss.search import api

    path = api.export(Path(args.run_dir), out=args.out, name=args.name, pick=args.pick, overwrite=args.overwrite)
    print(f"exported {path} and {path.parent / (args.name + '.py')}")
    print(f"load it with evoloss.load_loss({str(path)!r}), or import {args.name}.py (needs only torch)")
    return 0
