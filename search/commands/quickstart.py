"""`evoloss quickstart`: the main job on one machine, start to finish.

1. a `quick` CMA-ES search of the Taylor loss on data that needs no network (resumed if a previous
   quickstart was interrupted, reused if it finished);
2. the export of its best loss (and of the final CMA-ES mean) as standalone plug-ins;
3. a `quick` compare of that loss against hand-designed and meta-learned losses, including tasks the
   search never saw, with its summary table printed and its report written.
Everything lands in one folder (default ``runs/quickstart``): ``search/``, ``export/``, ``compare/``.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from evoloss.results.report import write_report
from evoloss.search.commands import compare as compare_cmd
from evoloss.search.commands import search as search_cmd
from evoloss.search.commands.export import export_best
from evoloss.search.compare_config import load_compare_config
from evoloss.search.config import load_config, parse_override
from evoloss.search.run_dir import create_run_dir, load_run_config

NAME = "quickstart"
HELP = "run the main job: a quick search, export of the best loss, and a comparison on held-out tasks"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/quickstart", help="folder for the three runs (default runs/quickstart)")
    p.add_argument("--address", help="HOST:PORT of an existing Ray cluster to join")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of the quick search config, e.g. --set search.generations=4")
    p.add_argument("--compare-set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of the quick compare config, e.g. --compare-set train.epochs=5")


def _search_phase(out: Path, args: argparse.Namespace) -> Path:
    run = out / "search"
    overrides = dict(parse_override(s) for s in args.set)
    if (run / "config.toml").is_file():
        config = load_run_config(run)
        print(f"[1/3] search: continuing {run} (remove it to start over)")
    else:
        config = load_config(preset="quick", overrides=overrides)
        create_run_dir(run, config)
        print(f"[1/3] search: {config.search.family} loss, popsize {config.search.popsize}, "
              f"{config.search.generations} generations -> {run}")
    summary = search_cmd.execute(config, run, address=args.address)
    search_cmd.print_summary(summary, run)
    return run


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    # validate the compare config before spending minutes on the search
    compare_overrides = {"methods.evolved.run_dir": str(out / "search"),
                         "methods.evolved-mean.path": str(out / "export" / "evolved_mean" / "loss.json"),
                         **dict(parse_override(s) for s in args.compare_set)}
    compare_config = load_compare_config(preset="quick", overrides=compare_overrides)
    search_run = _search_phase(out, args)

    plugin = export_best(search_run, out / "export" / "evolved_loss", overwrite=True)
    print(f"[2/3] export: {plugin / 'loss.json'} and {plugin / 'evolved_loss.py'} (needs only torch)")
    mean = export_best(search_run, out / "export" / "evolved_mean", name="evolved_mean", overwrite=True, pick="mean")
    print(f"      and the final CMA-ES mean: {mean / 'loss.json'}")

    compare_run = out / "compare"
    if compare_run.exists():
        shutil.rmtree(compare_run)  # a compare is cheap and must see the current search's best loss
    print(f"[3/3] compare: the evolved loss vs hand-designed and meta-learned losses -> {compare_run}")
    summary = compare_cmd.execute(compare_config, compare_run, address=args.address)
    compare_cmd.print_summary(summary, compare_run)
    report, _ = write_report(compare_run)
    print(f"report: {report / 'report.md' if report.is_dir() else report}")
    return 0
