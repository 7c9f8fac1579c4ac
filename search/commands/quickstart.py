"""`evoloss quickstart`: the main job on one machine, start to finish.

1. a `quick` CMA-ES search of a batch-relative GCE on data that needs no network (resumed if a previous
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

NAME = "quickstart"
HELP = "run the main job: a quick search, export of the best loss, and a comparison on held-out tasks"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/quickstart", help="folder for the three runs (default runs/quickstart)")
    p.add_argument("--address", help="HOST:PORT of an existing Ray cluster to join")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of the quick search config, e.g. --set search.generations=4")
    p.add_argument("--compare-set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of the quick compare config, e.g. --compare-set train.epochs=5")


def grid_line(config) -> str:
    """What the search trains on and how it scores, in a few words (for the first progress line)."""
    g, s = config.grid, config.search
    tasks = f"{g.subset_size} tasks per generation" if g.subset_size else "every task"
    if g.subset_size and g.stratify == "arch":
        tasks += " (stratified by arch)"
    less = f" less {len(g.exclude)} excluded pair(s)" if g.exclude else ""
    agg = "mean" if g.aggregate == "mean" else f"q{g.quantile:g}"
    halving = f", successive halving {s.low_fidelity:g}/{s.finish_share:g}" if s.low_fidelity is not None else ""
    return (f"{len(g.datasets)} datasets x {len(g.archs)} archs x {len(g.noise)} noise types{less}, {tasks}, "
            f"fitness {g.fitness}/{agg}{halving}")


def run(args: argparse.Namespace) -> int:
    from evoloss.search import api
    from evoloss.search.commands.compare import print_summary as print_compare
    from evoloss.search.commands.search import print_summary as print_search
    from evoloss.search.config import parse_override

    out = Path(args.out)
    search_run, compare_run = out / "search", out / "compare"
    compare_overrides = {"methods.evolved.run_dir": str(search_run),
                         "methods.evolved-mean.path": str(out / "export" / "evolved_mean" / "loss.json"),
                         **dict(parse_override(s) for s in args.compare_set)}
    api.resolve_compare_config("quick", compare_overrides)  # validated before minutes go into the search
    progress = api.stderr_progress()
    if (search_run / "config.toml").is_file():
        print(f"[1/3] search: continuing {search_run} (remove it to start over)")
        result = api.search(resume=search_run, address=args.address, progress=progress)
    else:
        config = api.resolve_search_config("quick", dict(parse_override(s) for s in args.set))
        print(f"[1/3] search: {config.search.family} loss, popsize {config.search.popsize}, "
              f"{config.search.generations} generations, {grid_line(config)} -> {search_run}")
        result = api.search(config, out=search_run, address=args.address, progress=progress)
    print_search(result.summary, search_run)

    plugin = api.export(result, out=out / "export" / "evolved_loss", overwrite=True)
    print(f"[2/3] export: {plugin} and {plugin.parent / 'evolved_loss.py'} (needs only torch)")
    mean = api.export(result, out=out / "export" / "evolved_mean", name="evolved_mean", overwrite=True, pick="mean")
    print(f"      and the final CMA-ES mean: {mean}")

    if compare_run.exists():
        shutil.rmtree(compare_run)  # a compare is cheap and must see the current search's best loss
    print(f"[3/3] compare: the evolved loss vs hand-designed and meta-learned losses -> {compare_run}")
    comparison = api.compare("quick", out=compare_run, address=args.address, overrides=compare_overrides,
                             progress=progress)
    print_compare(comparison)
    print(f"report: {api.report(comparison)}")
    return 0
