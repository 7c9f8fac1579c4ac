"""`evoloss status RUN_DIR`: how far a search got, its best loss, and what failed (read-only)."""
from __future__ import annotations

import argparse
import json

NAME = "status"
HELP = "show the progress, best candidate and failures of a search run"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="the run directory of a search")
    p.add_argument("--json", action="store_true", help="print a JSON object instead of text")


def run(args: argparse.Namespace) -> int:
    from evoloss.search.api import SearchResult

    info = SearchResult(args.run_dir).status()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"run {info['run_dir']}: family {info['family']}, "
          f"{info['generations_done']}/{info['generations_planned']} generations, {info['evaluations']} evaluations")
    print("statuses: " + (", ".join(f"{k} {v}" for k, v in info["status_counts"].items()) or "none yet"))
    if info["best"]:
        b = info["best"]
        params = ", ".join(f"{k}={v:.4g}" for k, v in b["params"].items())
        print(f"best fitness {info['best_fitness']:.4f} (gen {b['generation']}, candidate {b['candidate']}): "
              f"{b['family']}({params})")
        print(f"sigma {info['last_sigma']:.4g}, {info['evals_per_s']:.2f} evaluations/s")
    return 0
