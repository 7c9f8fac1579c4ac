"""`evoloss export RUN_DIR`: the best loss of a search as a standalone plug-in."""
from __future__ import annotations

import argparse
from pathlib import Path

from losses.plugin import export_plugin, validate_plugin_name
from losses.versions import evoloss_version
from results.store import ParquetStore
from search.config import config_dict
from search.coordinator import best_candidate
from search.run_dir import load_run_config, run_id_of

NAME = "export"
HELP = "export the best candidate of a search run as a loss plug-in (loss.json + standalone .py)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="the run directory of a search")
    p.add_argument("--out", help="output directory (default: RUN_DIR/export/NAME)")
    p.add_argument("--name", default="evolved_loss", help="plug-in name: a Python identifier (default evolved_loss)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export")


def export_best(run_dir: Path, out: Path | None = None, name: str = "evolved_loss", overwrite: bool = False) -> Path:
    """Write the best candidate of the run as a plug-in; returns the plug-in directory."""
    validate_plugin_name(name)
    config = load_run_config(run_dir)
    best = best_candidate(ParquetStore(run_dir), config.grid.metric_rule)
    if best is None:
        raise ValueError(f"run {str(run_dir)!r} has no complete generation with a finite fitness: nothing to export")
    spec, fitness, generation, candidate = best
    cfg = config_dict(config)
    provenance = {
        "run_id": run_id_of(run_dir), "fitness": fitness, "generation": generation, "candidate": candidate,
        "metric_rule": config.grid.metric_rule, "task_grid": cfg["grid"], "train": cfg["train"],
        "search": cfg["search"], "evoloss_version": evoloss_version(),
    }
    out_dir = Path(out) if out else Path(run_dir) / "export" / name
    return export_plugin(spec, out_dir, name=name, provenance=provenance, overwrite=overwrite)


def run(args: argparse.Namespace) -> int:
    out = export_best(Path(args.run_dir), Path(args.out) if args.out else None, args.name, args.overwrite)
    print(f"exported {out / 'loss.json'} and {out / (args.name + '.py')}")
    print(f"load it with losses.load_loss({str(out / 'loss.json')!r}), or import {args.name}.py (needs only torch)")
    return 0
