"""`evoloss export RUN_DIR`: the best loss of a search as a standalone plug-in."""
from __future__ import annotations

import argparse
from pathlib import Path

from evoloss.losses.plugin import export_plugin, validate_plugin_name
from evoloss.losses import LossSpec
from evoloss.losses.versions import evoloss_version
from evoloss.results.store import ParquetStore
from evoloss.search.config import config_dict
from evoloss.search.coordinator import best_candidate, decode_candidates
from evoloss.search.strategy import CMAStrategy
from evoloss.search.run_dir import load_run_config, run_id_of

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


PICKS = ("best", "mean")


def picked_spec(run_dir: Path, pick: str = "best") -> tuple[LossSpec, dict]:
    """The loss a run exports and where it came from (``pick``: "best" candidate or CMA-ES "mean")."""
    if pick not in PICKS:
        raise ValueError(f"pick={pick!r} is not one of {PICKS}")
    config = load_run_config(run_dir)
    store = ParquetStore(run_dir)
    if pick == "mean":
        saved = store.load_state()
        if saved is None:
            raise ValueError(f"run {str(run_dir)!r} has no complete generation: no CMA-ES mean to export")
        generation, state = saved
        mean = CMAStrategy.from_state(state["strategy"]).mean
        spec = decode_candidates(config.search.family, mean[None, :])[0]
        return spec, {"pick": "mean", "fitness": None, "generation": generation, "candidate": None}
    best = best_candidate(store, config.grid.metric_rule)
    if best is None:
        raise ValueError(f"run {str(run_dir)!r} has no complete generation with a finite fitness: nothing to export")
    spec, fitness, generation, candidate = best
    return spec, {"pick": "best", "fitness": fitness, "generation": generation, "candidate": candidate}


def export_best(run_dir: Path, out: Path | None = None, name: str = "evolved_loss", overwrite: bool = False,
                pick: str = "best") -> Path:
    """Write the picked loss of the run as a plug-in; returns the plug-in directory."""
    validate_plugin_name(name)
    config = load_run_config(run_dir)
    spec, origin = picked_spec(run_dir, pick)
    cfg = config_dict(config)
    provenance = {
        "run_id": run_id_of(run_dir), **origin,
        "metric_rule": config.grid.metric_rule, "task_grid": cfg["grid"], "train": cfg["train"],
        "search": cfg["search"], "evoloss_version": evoloss_version(),
    }
    out_dir = Path(out) if out else Path(run_dir) / "export" / name
    return export_plugin(spec, out_dir, name=name, provenance=provenance, overwrite=overwrite)


def run(args: argparse.Namespace) -> int:
    out = export_best(Path(args.run_dir), Path(args.out) if args.out else None, args.name, args.overwrite, args.pick)
    print(f"exported {out / 'loss.json'} and {out / (args.name + '.py')}")
    print(f"load it with losses.load_loss({str(out / 'loss.json')!r}), or import {args.name}.py (needs only torch)")
    return 0
