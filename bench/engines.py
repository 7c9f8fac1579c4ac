"""Engine benchmark: the native Ray actor pool vs Ray Tune on the same small search, side by side.

Both engines run the same search on one embedded Ray started once: `WORKLOAD` (Taylor loss, popsize
8, digits / MLP-2 and MLP-3 × task seeds 0 and 1 = 4 tasks, 80% symmetric noise, 1,000 training
samples, the ``population`` trainer), written out here so that preset edits do not move it. Each
engine starts its own actors (native: `search.dispatch.ActorPool`, created inside the timed span;
Tune: `search.tune_engine.run_search_tune`, whose trials start theirs).

Columns:
- ``evals/s``: evaluation rows (candidate × task) per second of the engine's wall time;
- ``outside training``: 1 − Σ train wall_s / (wall × actors): the share of the actors' time not
  spent inside a trainer's ``fit`` — actor start-up and imports, data materialisation, dispatch,
  coordination (ask/tell, rows, Parquet writes), Tune's bookkeeping and logging, barrier idling;
- ``gen 0 s`` / ``later gen s``: wall time of the first generation and the mean of the later ones
  (what a long search pays per generation; the native pool starts its actors before generation 0);
- ``actor starts``: evaluation processes started (native: the pool's actors plus replacements;
  Tune: distinct trial-actor pids in Tune's result files — more than ``actors`` means Tune did not
  reuse an actor, e.g. across a generation barrier).

Each engine runs ``--repeats`` times, in alternating order (native, tune, tune, native, ...), and
the table shows the run with the median wall time.

Usage::

    .venv/bin/python bench/engines.py --quick     # 3 generations, 5 epochs, 1 repeat (~1-2 minutes on 2 cores)
    .venv/bin/python bench/engines.py             # 6 generations, 20 epochs, 3 repeats

Timings depend on the machine's load; the output prints the load average next to the table.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import ray

from evoloss.results.store import ParquetStore
from evoloss.search.config import SearchConfig, load_config
from evoloss.search.coordinator import SearchSummary, run_search
from evoloss.search.dispatch import ActorPool, PoolConfig, actor_count
from evoloss.search.ray_runtime import start_ray
from evoloss.search.run_dir import create_run_dir
from evoloss.search.tune_engine import run_search_tune
from machine import cpu_model  # bench/machine.py (bench/ is the script's directory)

ENGINES = ("native", "tune")
WORKLOAD = {
    "search.family": "taylor", "search.popsize": 8, "search.sigma0": 1.0, "search.seed": 0, "search.x0": "default",
    "grid.datasets": ["digits"], "grid.archs": ["mlp2", "mlp3"], "grid.seeds": [0, 1], "grid.mode": "ar",
    "grid.noise": [{"type": "symmetric", "rate": 0.8, "convention": "exact"}], "grid.metric_rule": "last",
    "train.batch_size": 64, "train.max_train": 1000, "train.trainer": "population",
}


@dataclass(frozen=True)
class EngineRow:
    engine: str
    generations: int
    evaluations: int
    failed: int
    wall_s: float
    train_s: float
    actors: int
    first_generation_s: float
    later_generation_s: float
    actor_starts: int

    @property
    def evals_per_s(self) -> float:
        return self.evaluations / self.wall_s if self.wall_s > 0 else math.nan

    @property
    def outside_training(self) -> float:
        """1 − Σ train wall_s / (wall × actors)."""
        return 1.0 - self.train_s / (self.wall_s * self.actors) if self.wall_s > 0 else math.nan


def bench_config(*, generations: int, epochs: int, engine: str, cpus_per_actor: float) -> SearchConfig:
    """`WORKLOAD` with this budget, on ``engine``."""
    return load_config(overrides={**WORKLOAD, "search.generations": generations, "train.epochs": epochs,
                                  "cluster.engine": engine, "cluster.cpus_per_actor": cpus_per_actor})


def run_engine(engine: str, config: SearchConfig, run_dir: Path) -> tuple[SearchSummary, float, int, int]:
    """One search on ``engine`` in a fresh run directory: (summary, wall seconds, actors, actor starts)."""
    create_run_dir(run_dir, config)
    store = ParquetStore(run_dir)
    start = time.perf_counter()
    if engine == "native":
        with ActorPool(PoolConfig(cpus_per_actor=config.cluster.cpus_per_actor)) as pool:
            summary = run_search(config, pool, store, run_id=run_dir.name)
            actors, starts = pool.size, pool.size + pool.counters["actor_deaths"] + pool.counters["timeouts"]
    else:
        summary = run_search_tune(config, store, run_id=run_dir.name, run_dir=run_dir)
        actors = actor_count(ray.cluster_resources(), config.cluster.cpus_per_actor, config.cluster.gpus_per_actor)
        starts = len(tune_actor_pids(run_dir / "tune"))
    return summary, time.perf_counter() - start, actors, starts


def tune_actor_pids(tune_dir: Path) -> set[int]:
    """The ``pid`` of every trial result Tune wrote under ``tune_dir`` (JSON lines, one file per trial)."""
    pids = set()
    for path in tune_dir.glob("*/*/result.json"):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                pids.add(int(json.loads(line)["pid"]))
    return pids


def measure(engine: str, config: SearchConfig, run_dir: Path) -> EngineRow:
    """Run ``engine`` once and read its numbers back from the run's store."""
    summary, wall, actors, starts = run_engine(engine, config, run_dir)
    gens = ParquetStore(run_dir).read_generations(complete_only=True)
    evals = ParquetStore(run_dir).read(complete_only=True)
    gen_walls = gens["wall_s"].tolist()
    return EngineRow(
        engine=engine, generations=summary.generations, evaluations=len(evals),
        failed=int((evals["status"] != "ok").sum()), wall_s=wall, train_s=float(evals["wall_s"].sum()),
        actors=actors, first_generation_s=gen_walls[0] if gen_walls else math.nan,
        later_generation_s=statistics.fmean(gen_walls[1:]) if len(gen_walls) > 1 else math.nan,
        actor_starts=starts,
    )


def machine_line(cpus: int | None) -> str:
    """nproc, the CPU model from /proc/cpuinfo, and the CPUs given to Ray."""
    model = cpu_model()
    return f"machine: nproc={os.cpu_count()}, {model}; Ray num_cpus={cpus or os.cpu_count()}; load average " \
           f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"


def format_table(rows: list[EngineRow]) -> str:
    """A Markdown table of the rows."""
    head = ("| engine | generations | evaluations | failed | actors | actor starts | wall s | evals/s | train s "
            "| outside training | gen 0 s | later gen s |")
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        lines.append(f"| {r.engine} | {r.generations} | {r.evaluations} | {r.failed} | {r.actors} | {r.actor_starts} "
                     f"| {r.wall_s:.1f} | {r.evals_per_s:.2f} | {r.train_s:.1f} | {r.outside_training:.0%} "
                     f"| {r.first_generation_s:.1f} | {r.later_generation_s:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None, say: Callable[[str], None] = print) -> list[EngineRow]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="3 generations of 5 epochs, 1 repeat (a short run)")
    p.add_argument("--generations", type=int, help="generations per search (default 6; --quick 3)")
    p.add_argument("--epochs", type=int, help="training epochs per evaluation (default 20; --quick 5)")
    p.add_argument("--repeats", type=int, help="runs per engine, the median is shown (default 3; --quick 1)")
    p.add_argument("--cpus", type=int, help="CPUs of the embedded Ray (default: the machine's)")
    p.add_argument("--cpus-per-actor", type=float, default=1.0)
    p.add_argument("--engines", default="native,tune", help="comma-separated, run in this order")
    p.add_argument("--keep", metavar="DIR", help="keep the run directories under DIR (default: a temp dir, removed)")
    args = p.parse_args(argv)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in engines if e not in ENGINES]
    if unknown or not engines:
        raise SystemExit(f"--engines must list some of {ENGINES}; got {args.engines!r}")
    generations = args.generations or (3 if args.quick else 6)
    epochs = args.epochs or (5 if args.quick else 20)
    repeats = args.repeats or (1 if args.quick else 3)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="evl-bench-", dir="/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[EngineRow]] = {e: [] for e in engines}
    try:
        with start_ray(num_cpus=args.cpus, temp_dir=work / "ray"):
            for r in range(repeats):
                for engine in engines if r % 2 == 0 else engines[::-1]:
                    config = bench_config(generations=generations, epochs=epochs, engine=engine,
                                          cpus_per_actor=args.cpus_per_actor)
                    runs[engine].append(measure(engine, config, work / f"run-{engine}-{r}"))
                    say(f"{engine} #{r}: {runs[engine][-1].wall_s:.1f}s")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    rows = [sorted(runs[e], key=lambda row: row.wall_s)[len(runs[e]) // 2] for e in engines]
    say(f"search: {generations} generations x popsize 8 x 4 tasks (digits, mlp2+mlp3, seeds 0-1), {epochs} epochs, "
        f"population trainer; median of {repeats} run(s) per engine")
    say(machine_line(args.cpus))
    say(format_table(rows))
    return rows


if __name__ == "__main__":
    main()
