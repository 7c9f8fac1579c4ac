"""`evoloss export RUN_DIR`: a loss of a search as a standalone plug-in (`evoloss.export`, docs/export.md)."""
from __future__ import annotations

import argparse
from pathlib import Path

from evoloss.search.api import PICKS  # a light module: its heavy imports happen inside its functions

NAME = "export"
HELP = "export a loss of a search run (the best candidate by default) as a loss plug-in (loss.json + standalone .py)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="the run directory of a search")
    p.add_argument("--out", help="output directory (default: RUN_DIR/export/NAME)")
    p.add_argument("--name", default="evolved_loss", help="plug-in name: a Python identifier (default evolved_loss)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export")
    p.add_argument("--pick", choices=PICKS, default="best",
                   help="best: the candidate with the highest fitness (default); mean: the CMA-ES mean after the "
                        "last complete generation (never scored itself, but free of the winner's curse); "
                        "reevaluated: the top candidates and the mean trained again on new seeds, the best on "
                        "clean validation exported (the run goes to OUT/reevaluation; docs/export.md)")
    p.add_argument("--top", type=int, default=None, metavar="N",
                   help="--pick reevaluated: distinct top candidates re-evaluated with the mean (1-64, default 4)")
    p.add_argument("--reeval-seeds", dest="reeval_seeds", type=int, default=None, metavar="N",
                   help="--pick reevaluated: new seeds per task, after the search's largest (1-16, default 2)")


def run(args: argparse.Namespace) -> int:
    from evoloss.search import api

    path = api.export(Path(args.run_dir), out=args.out, name=args.name, pick=args.pick, overwrite=args.overwrite,
                      top=args.top, reeval_seeds=args.reeval_seeds)
    print(f"exported {path} and {path.parent / (args.name + '.py')}")
    if args.pick == "reevaluated":
        from evoloss.losses.plugin import read_plugin

        reeval = read_plugin(path)[1]["provenance"]["reevaluation"]
        scores = ", ".join(f"{c['id']} {c['score']:.4f}" if c["score"] is not None else f"{c['id']} -"
                           for c in reeval["candidates"])
        print(f"picked {reeval['chosen']} by mean {reeval['selected_on']} on seeds {reeval['seeds']}: {scores}")
        print(f"re-evaluation run: {reeval['run_dir']} (evoloss report {reeval['run_dir']})")
    print(f"load it with evoloss.load_loss({str(path)!r}), or import {args.name}.py (needs only torch)")
    return 0
