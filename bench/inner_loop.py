"""Inner-loop benchmark: candidate evaluations per second, ``standard`` vs ``population`` trainer.

One evaluation = one candidate loss trained for 200 optimiser steps (batch 64) and evaluated on the
clean val and test splits after every epoch, as a search scores it. Workloads: digits / MLP-2 and a
larger synthetic Gaussian mixture (20k × 64 features, 10 classes) / MLP-2, at K = 1, 8, 32 candidates
per task (a CMA-ES generation of GCE candidates with spread q). Also measured: this machine's float32
matmul GFLOP/s and the fraction of it the population trainer reaches, counting FLOPs as
``2·MACs`` per sample for a forward pass and ``3×`` that for a training step (forward + backward),
plus the evaluation forward passes. Timings are the best of ``--repeats`` runs (wall clock) after a
warm-up run, which filters out interference from other processes.

Usage::

    .venv/bin/python bench/inner_loop.py --quick      # ~1-2 minutes
    .venv/bin/python bench/inner_loop.py              # the full table (more repeats, more standard runs)

The last line reads ``population speedup at K=8: <ratio>x`` (digits / MLP-2).
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

import evoloss.losses.gce  # noqa: F401  (registers "gce" whether or not losses/__init__ imports it)
from evoloss.losses import LossSpec
from evoloss.workers.archs import create_arch
from evoloss.workers.materialize import materialize
from evoloss.workers.population import PopulationTrainer
from evoloss.workers.standard import StandardTrainer
from evoloss.workers.task import Budget, NoiseSpec, Task, TaskData

STEPS = 200
BATCH = 64
WORKLOADS = {
    "digits/mlp2": "digits",
    "synthetic20k/mlp2": "synthetic:n=20000,c=10,d=64",
}


@dataclass(frozen=True)
class Row:
    workload: str
    k: int
    standard_eps: float
    population_eps: float
    population_gflops: float


def matmul_gflops(n: int = 1024, seconds: float = 1.0, repeats: int = 3) -> float:
    """Best float32 ``n×n @ n×n`` throughput over ``repeats`` bursts of about ``seconds`` each (GFLOP/s)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    best = 0.0
    for _ in range(repeats):
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            a @ b
            count += 1
        best = max(best, 2 * n**3 * count / (time.perf_counter() - start) / 1e9)
    return best


def forward_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of one sample's forward pass through the Linear and Conv layers."""
    macs = 0

    def count(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(module, nn.Linear):
            macs += module.in_features * module.out_features
        elif isinstance(module, (nn.Conv1d, nn.Conv2d)):
            kernel = math.prod(module.kernel_size) * module.in_channels // module.groups
            macs += output[0].numel() * kernel

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]
    with torch.no_grad():
        model.eval()(torch.zeros(1, *input_shape))
    for h in hooks:
        h.remove()
    return macs


def evaluation_flops(task: Task, data: TaskData, steps: int, epochs: int) -> float:
    """FLOPs of one candidate evaluation: training steps (3× forward) plus the per-epoch eval passes."""
    macs = forward_macs(create_arch(task.arch, tuple(data.input_shape), data.num_classes, seed=0), data.input_shape)
    train = 3 * 2 * macs * task.budget.batch_size * steps
    evaluation = 2 * macs * (len(data.y_val) + len(data.y_test)) * epochs
    return float(train + evaluation)


def candidates(k: int) -> list[LossSpec]:
    """K GCE candidates with q spread over (0, 1), as one CMA-ES generation of a GCE search."""
    return [LossSpec("gce", {"q": 0.05 + 0.9 * i / max(k - 1, 1)}) for i in range(k)]


def best_seconds(run: Callable[[], object], repeats: int) -> float:
    """Fastest of ``repeats`` timed calls of ``run`` (after one untimed warm-up call)."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def workload(name: str, dataset: str) -> tuple[Task, TaskData, int]:
    """The task of a workload (80% symmetric noise), its data and the epochs that hold ``STEPS`` steps."""
    probe = Task(dataset=dataset, arch="mlp2", noise=NoiseSpec("symmetric", 0.8, "exact"), seed=0)
    data = materialize(probe)
    epochs = math.ceil(STEPS / math.ceil(len(data.y_train) / BATCH))
    task = Task(dataset=dataset, arch="mlp2", noise=probe.noise, budget=Budget(epochs=epochs, batch_size=BATCH),
                seed=0)
    return task, data, epochs


def measure(name: str, dataset: str, ks: Sequence[int], repeats: int, standard_runs: int) -> list[Row]:
    """Rows of one workload: evaluations/s of both trainers at each K."""
    task, data, epochs = workload(name, dataset)
    flops = evaluation_flops(task, data, STEPS, epochs)
    standard, population = StandardTrainer(max_steps=STEPS), PopulationTrainer(max_steps=STEPS)
    std_specs = candidates(standard_runs)  # standard's rate does not depend on K: time a few runs
    std_eps = standard_runs / best_seconds(lambda: standard.fit(task, std_specs, data=data), repeats)
    rows = []
    for k in ks:
        specs = candidates(k)
        pop_eps = k / best_seconds(lambda: population.fit(task, specs, data=data), repeats)
        rows.append(Row(name, k, std_eps, pop_eps, pop_eps * flops / 1e9))
    return rows


def variants(repeats: int) -> list[tuple[str, float]]:
    """Population evaluations/s at K=8 on digits/MLP-2 for the design choices (loss grouping, backward)."""
    task, data, _ = workload("digits/mlp2", WORKLOADS["digits/mlp2"])
    mixed = [LossSpec("ce"), LossSpec("gce", {"q": 0.3}), LossSpec("gce", {"q": 0.7}), LossSpec("mae")] * 2
    out = []
    for label, options, specs in [
        ("gce x8, grouped by family, hand-written backward", {}, candidates(8)),
        ("gce x8, one loss call per member", {"loss_grouping": "member"}, candidates(8)),
        ("gce x8, autograd backward", {"backward": "autograd"}, candidates(8)),
        ("ce/gce/gce/mae x2, grouped by family", {}, mixed),
    ]:
        trainer = PopulationTrainer(max_steps=STEPS, **options)
        out.append((label, len(specs) / best_seconds(lambda: trainer.fit(task, specs, data=data), repeats)))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and standard runs (~1-2 minutes)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads={args.threads} must be >= 1")
        torch.set_num_threads(args.threads)
    import evoloss.losses.mae  # noqa: F401  (the mixed-family variant)

    repeats, standard_runs = (2, 2) if args.quick else (3, 8)
    peak = matmul_gflops(seconds=0.5 if args.quick else 1.0)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"float32 matmul (1024^3): {peak:.1f} GFLOP/s")
    rows = [r for name, ds in WORKLOADS.items() for r in measure(name, ds, (1, 8, 32), repeats, standard_runs)]
    print(f"{'workload':<20}{'K':>4}{'standard ev/s':>15}{'population ev/s':>17}{'speedup':>9}"
          f"{'pop GFLOP/s':>13}{'% of matmul':>13}")
    for r in rows:
        print(f"{r.workload:<20}{r.k:>4}{r.standard_eps:>15.2f}{r.population_eps:>17.2f}"
              f"{r.population_eps / r.standard_eps:>8.1f}x{r.population_gflops:>13.1f}"
              f"{100 * r.population_gflops / peak:>12.1f}%")
    for label, eps in variants(repeats):
        print(f"variant K=8 digits/mlp2: {label}: {eps:.2f} ev/s")
    k8 = next(r for r in rows if r.workload == "digits/mlp2" and r.k == 8)
    print(f"population speedup at K=8: {k8.population_eps / k8.standard_eps:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
