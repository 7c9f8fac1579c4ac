"""`evoloss status RUN_DIR`: how far a search got, its best loss, and what failed."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from evoloss.results.store import ParquetStore
from evoloss.search.coordinator import best_candidate
from evoloss.search.run_dir import load_run_config

NAME = "status"
HELP = "show the progress, best candidate and failures of a search run"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="the run directory of a search")
    p.add_argument("--json", action="store_true", help="print a JSON object instead of text")


def status(run_dir: Path) -> dict:
    config = load_run_config(run_dir)
    store = ParquetStore(run_dir)
    done = store.generations_done()
    gens = store.read_generations(complete_only=True)
    evals = store.read(complete_only=True)
    best = best_candidate(store, config.grid.metric_rule)
    counts = evals["status"].value_counts().to_dict() if len(evals) else {}
    return {
        "run_dir": str(run_dir),
        "family": config.search.family,
        "generations_done": len(done),
        "generations_planned": config.search.generations,
        "evaluations": int(len(evals)),
        "status_counts": {k: int(v) for k, v in sorted(counts.items())},
        "best_fitness": None if best is None else best[1],
        "best": None if best is None else {"generation": best[2], "candidate": best[3], **best[0].to_dict()},
        "last_sigma": None if gens.empty else float(gens["sigma"].iloc[-1]),
        "evals_per_s": None if gens.empty else float(gens["evaluations"].sum() / gens["wall_s"].sum()),
        "metric_rule": config.grid.metric_rule,
    }


def run(args: argparse.Namespace) -> int:
    info = status(Path(args.run_dir))
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
