"""GPU benchmark, one command: population speedups at K = 8, 32, 128 and the quick search's inner loop.

Usage::

    .venv/bin/python bench/gpu.py              # sized for < 5 minutes on one GPU; a skip line without CUDA

On ``cuda:0`` (float32, the default TF32 settings left alone) it measures, like `bench/inner_loop.py`
(200 SGD steps per evaluation, batch 64, clean val + test after every epoch):

1. digits / MLP-2 (``--cnn4`` adds digits / CNN-4): the ``standard`` trainer's evaluations/s (a few
   runs) against the ``population`` trainer's, compiled (``compile="on"``: ``torch.compile`` with
   Inductor), at K = 8, 32 and 128; each population figure is the best of 2 fits after a warm-up
   fit, whose compile time is printed (``compile s``);
2. the quick search's inner loop (``search/presets/quick.toml``): the 6 tasks of generation 0 with
   ``popsize`` candidates of its family each (the family defaults plus seeded genome noise of the preset's
   sigma0), full budget, compiled population; evaluations/s of a second generation's worth of fits
   after the first (which pays the compiles). Dispatch, Ray and the store are not included: that is
   the inner loop the quick search spends 98% of its wall time in.

Without CUDA it prints ``skipped: no CUDA device`` and exits 0 (CI runs it that way).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

KS = (8, 32, 128)
WORKLOADS = ("digits/mlp2",)
CNN_WORKLOAD = "digits/cnn4"  # with --cnn4 (more compiles: past the 5-minute budget on a slow compile host)


def speedups(device: str, ks: Sequence[int], standard_runs: int,
             workloads: Sequence[str] = WORKLOADS) -> list[tuple[str, int, float, float, float]]:
    """(workload, K, standard ev/s, population ev/s, compile s) for every workload and K."""
    import inner_loop as il  # bench/inner_loop.py: the same workloads and candidates

    from evoloss.workers.standard import StandardTrainer

    rows = []
    for name in workloads:
        task, data, _ = il.workload(*il.WORKLOADS[name], device=device)
        specs = il.candidates(standard_runs)
        standard = StandardTrainer(max_steps=il.STEPS)
        std_eps = standard_runs / il.best_seconds(lambda: standard.fit(task, specs, device=device, data=data), 1)
        for k in ks:
            eps, compile_s = il.population_rate(task, data, k, 2, "on", device=device)
            rows.append((name, k, std_eps, eps, compile_s))
            print(f"{name:<14}K={k:<4} standard {std_eps:8.2f} ev/s  population {eps:9.2f} ev/s  "
                  f"speedup {eps / std_eps:6.1f}x  compile {compile_s:5.1f} s", flush=True)
    return rows


def quick_search_rate(device: str) -> tuple[int, float, float]:
    """(evaluations per generation, first generation s, evaluations/s of the second) of the quick search."""
    import numpy as np

    from evoloss import losses
    from evoloss.losses import LossSpec
    from evoloss.search.config import load_config
    from evoloss.search.grid import grid_from_config
    from evoloss.workers.materialize import materialize
    from evoloss.workers.population import PopulationTrainer

    config = load_config(preset="quick")
    family = losses.get_family(config.search.family)
    tasks = grid_from_config(config).tasks_for_generation(0)
    data = [materialize(t) for t in tasks]
    rng = np.random.default_rng(0)
    x0 = family.encode(family.validate({}))
    trainer = PopulationTrainer(compile="on")

    def generation() -> float:
        genomes = x0 + config.search.sigma0 * rng.standard_normal((config.search.popsize, family.dim))
        specs = [LossSpec(family.name, family.decode(g)) for g in genomes]
        start = time.perf_counter()
        for task, d in zip(tasks, data):
            trainer.fit(task, specs, device=device, data=d)
        torch.cuda.synchronize()
        return time.perf_counter() - start

    first = generation()
    evaluations = config.search.popsize * len(tasks)
    return evaluations, first, evaluations / generation()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ks", default=",".join(map(str, KS)), help="population sizes (default 8,32,128)")
    parser.add_argument("--standard-runs", type=int, default=4, help="standard runs timed per workload")
    parser.add_argument("--cnn4", action="store_true", help="also digits/CNN-4 (more compile time)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("skipped: no CUDA device (torch.cuda.is_available() is False)")
        return 0
    try:
        ks = tuple(int(k) for k in args.ks.split(","))
    except ValueError:
        parser.error(f"--ks={args.ks!r} must be comma-separated integers, e.g. 8,32,128")
    if not ks or min(ks) < 1 or args.standard_runs < 1:
        parser.error("--ks and --standard-runs must be positive")
    device = "cuda"
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    start = time.perf_counter()
    rows = speedups(device, ks, args.standard_runs, WORKLOADS + ((CNN_WORKLOAD,) if args.cnn4 else ()))
    evaluations, first, rate = quick_search_rate(device)
    print(f"quick search inner loop: {evaluations} evaluations per generation, first generation {first:.1f} s "
          f"(compiles), then {rate:.2f} evaluations/s")
    for name, k, std, pop, _ in rows:
        print(f"{name.split('/')[1]} population speedup at K={k}: {pop / std:.1f}x")
    print(f"total {time.perf_counter() - start:.0f} s")
    return 0 if all(math.isfinite(r[3]) for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
