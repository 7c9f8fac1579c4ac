"""Inner-loop benchmark: candidate evaluations per second, ``standard`` vs ``population`` trainer.

One evaluation = one candidate loss trained for 200 optimiser steps (batch 64) and evaluated on the
clean val and test splits after every epoch, as a search scores it. Workloads: digits / MLP-2, a
larger synthetic Gaussian mixture (20k × 64 features, 10 classes) / MLP-2 and digits / CNN-4, at
K = 1, 8, 32 candidates per task (a CMA-ES generation of GCE candidates with spread q). The population
trainer runs eager (``compile="off"``) and, at K = 8 and 32, compiled (``compile="on"``, Inductor); the
compile warm-up is the first fit's ``compile_s`` in this process (a warm on-disk cache makes it
smaller: run twice to see both). Also measured: this machine's float32
matmul GFLOP/s and the fraction of it the population trainer reaches, counting FLOPs as
``2·MACs`` per sample for a forward pass and ``3×`` that for a training step (forward + backward),
plus the evaluation forward passes. Timings are the best of ``--repeats`` runs (wall clock) after a
warm-up run, which filters out interference from other processes; within a workload the standard
trainer and every population variant take turns (one run of each per round), so a speedup compares
runs of the same minutes even on a machine whose speed drifts.

The process keeps the memory it frees, as every evoloss worker does (`workers.allocator`;
``--default-malloc`` measures with glibc's defaults instead).

Usage::

    .venv/bin/python bench/inner_loop.py --quick      # ~1-2 minutes
    .venv/bin/python bench/inner_loop.py              # the full table (more repeats, more standard runs)

The last lines read ``population speedup at K=8: <ratio>x`` (digits / MLP-2) and ``cnn4 population
speedup at K=8: <ratio>x`` (digits / CNN-4), each the faster of the eager and compiled population.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

import evoloss.losses.gce  # noqa: F401  (registers "gce" whether or not losses/__init__ imports it)
from evoloss.losses import LossSpec
from evoloss.workers.allocator import keep_freed_memory
from evoloss.workers.archs import create_arch
from evoloss.workers.materialize import materialize
from evoloss.workers.population import PopulationTrainer
from evoloss.workers.standard import StandardTrainer
from evoloss.workers.task import Budget, NoiseSpec, Task, TaskData
from machine import cpu_model  # bench/machine.py (bench/ is the script's directory)

STEPS = 200
BATCH = 64
WORKLOADS = {  # name -> (dataset, architecture)
    "digits/mlp2": ("digits", "mlp2"),
    "synthetic20k/mlp2": ("synthetic:n=20000,c=10,d=64", "mlp2"),
    "digits/cnn4": ("digits", "cnn4"),
}
COMPILED_KS = (8, 32)


@dataclass(frozen=True)
class Row:
    workload: str
    k: int
    standard_eps: float
    eager_eps: float
    compiled_eps: float  # NaN: not measured
    compile_s: float  # the compiled population's first fit's warm-up (NaN: not measured)
    flops: float  # of one evaluation

    @property
    def population_eps(self) -> float:
        """The faster population path."""
        return max(self.eager_eps, self.compiled_eps) if math.isfinite(self.compiled_eps) else self.eager_eps


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


def best_seconds(run: Callable[[], object], repeats: int, first: list | None = None) -> float:
    """Fastest of ``repeats`` timed calls of ``run`` (after one untimed warm-up call, whose result is
    appended to ``first`` when given)."""
    seconds, results = interleaved_best({"run": run}, repeats)
    if first is not None:
        first.append(results["run"])
    return seconds["run"]


def workload(dataset: str, arch: str = "mlp2", device: str = "cpu") -> tuple[Task, TaskData, int]:
    """The task of a workload (80% symmetric noise), its data (on ``device``) and the epochs that hold
    ``STEPS`` steps."""
    probe = Task(dataset=dataset, arch=arch, noise=NoiseSpec("symmetric", 0.8, "exact"), seed=0)
    data = materialize(probe)
    if device != "cpu":
        data = TaskData(**{k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in vars(data).items()})
    epochs = math.ceil(STEPS / math.ceil(len(data.y_train) / BATCH))
    task = Task(dataset=dataset, arch=arch, noise=probe.noise, budget=Budget(epochs=epochs, batch_size=BATCH), seed=0)
    return task, data, epochs


def population_fit(task: Task, data: TaskData, k: int, compile: str, device: str = "cpu") -> Callable[[], list]:
    """One population fit of ``k`` candidates (a zero-argument call, to be timed)."""
    trainer, specs = PopulationTrainer(max_steps=STEPS, compile=compile), candidates(k)
    return lambda: trainer.fit(task, specs, device=device, data=data)


def interleaved_best(runs: dict[str, Callable[[], object]], repeats: int) -> tuple[dict[str, float], dict[str, object]]:
    """Fastest of ``repeats`` timed calls of each run, the runs taking turns (one call of each per round)
    so that this machine's drift from minute to minute affects every one alike; one untimed warm-up
    call of each first. Returns (seconds, each warm-up call's result)."""
    first = {name: run() for name, run in runs.items()}
    best = {name: math.inf for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return best, first


def population_rate(task: Task, data: TaskData, k: int, repeats: int, compile: str,
                    device: str = "cpu") -> tuple[float, float]:
    """(evaluations/s, compile warm-up s of the first fit or NaN) of the population trainer at ``k``."""
    seconds, first = interleaved_best({"pop": population_fit(task, data, k, compile, device)}, repeats)
    return k / seconds["pop"], compile_seconds(first["pop"], compile)


def compile_seconds(records: list, compile: str) -> float:
    """The compile warm-up of a population fit's records (NaN when not compiled); raises if ``compile="on"``
    fell back to eager."""
    if compile == "on" and records[0].execution != "stacked-compiled":
        raise RuntimeError(f"the compiled population did not compile: {records[0].execution_note}")
    return float(records[0].extra.get("compile_s", math.nan))


def measure(name: str, ks: Sequence[int], repeats: int, standard_runs: int, compiled_ks: Sequence[int]) -> list[Row]:
    """Rows of one workload: evaluations/s of the standard and the (eager, compiled) population trainer,
    all timed in turns (`interleaved_best`), so each speedup compares runs of the same minutes."""
    task, data, epochs = workload(*WORKLOADS[name])
    flops = evaluation_flops(task, data, STEPS, epochs)
    standard = StandardTrainer(max_steps=STEPS)
    std_specs = candidates(standard_runs)  # standard's rate does not depend on K: time a few runs
    runs: dict[str, Callable[[], object]] = {"standard": lambda: standard.fit(task, std_specs, data=data)}
    for k in ks:
        runs[f"eager{k}"] = population_fit(task, data, k, "off")
        if k in compiled_ks:
            runs[f"compiled{k}"] = population_fit(task, data, k, "on")
    seconds, first = interleaved_best(runs, repeats)
    std_eps = standard_runs / seconds["standard"]
    rows = []
    for k in ks:
        eager = k / seconds[f"eager{k}"]
        compiled, compile_s = (k / seconds[f"compiled{k}"], compile_seconds(first[f"compiled{k}"], "on")) \
            if k in compiled_ks else (math.nan,) * 2
        rows.append(Row(name, k, std_eps, eager, compiled, compile_s, flops))
        print(f"  measured {name} K={k}: standard {std_eps:.2f}, eager {eager:.2f}, compiled {compiled:.2f} ev/s",
              file=sys.stderr, flush=True)  # progress (the table comes at the end)
    return rows


def variants(repeats: int) -> list[tuple[str, float]]:
    """Population evaluations/s at K=8 on digits/MLP-2 for the design choices (loss grouping, backward)."""
    task, data, _ = workload(*WORKLOADS["digits/mlp2"])
    mixed = [LossSpec("ce"), LossSpec("gce", {"q": 0.3}), LossSpec("gce", {"q": 0.7}), LossSpec("mae")] * 2
    out = []
    for label, options, specs in [
        ("gce x8, grouped by family, hand-written backward", {}, candidates(8)),
        ("gce x8, one loss call per member", {"loss_grouping": "member"}, candidates(8)),
        ("gce x8, autograd backward", {"backward": "autograd"}, candidates(8)),
        ("ce/gce/gce/mae x2, grouped by family", {}, mixed),
    ]:
        trainer = PopulationTrainer(max_steps=STEPS, compile="off", **options)
        out.append((label, len(specs) / best_seconds(lambda: trainer.fit(task, specs, data=data), repeats)))
    return out


def print_table(rows: Sequence[Row], peak: float) -> None:
    """The table: standard and population evaluations/s, speedups, the compile warm-up, % of matmul."""
    print(f"{'workload':<20}{'K':>4}{'standard ev/s':>15}{'eager ev/s':>12}{'compiled ev/s':>15}{'speedup':>9}"
          f"{'compile s':>11}{'pop GFLOP/s':>13}{'% of matmul':>13}")
    for r in rows:
        compiled = f"{r.compiled_eps:>15.2f}" if math.isfinite(r.compiled_eps) else f"{'-':>15}"
        warm = f"{r.compile_s:>11.1f}" if math.isfinite(r.compile_s) else f"{'-':>11}"
        gflops = r.population_eps * r.flops / 1e9
        print(f"{r.workload:<20}{r.k:>4}{r.standard_eps:>15.2f}{r.eager_eps:>12.2f}{compiled}"
              f"{r.population_eps / r.standard_eps:>8.1f}x{warm}{gflops:>13.1f}{100 * gflops / peak:>12.1f}%")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and standard runs")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled population (no warm-up)")
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc's malloc thresholds as they are (an evoloss worker raises them)")
    args = parser.parse_args(argv)
    kept = False if args.default_malloc else keep_freed_memory()  # as every evoloss worker process does
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads={args.threads} must be >= 1")
        torch.set_num_threads(args.threads)
    import evoloss.losses.mae  # noqa: F401  (the mixed-family variant)

    repeats, standard_runs = (2, 2) if args.quick else (3, 6)
    compiled_ks = () if args.no_compile else COMPILED_KS
    peak = matmul_gflops(seconds=0.5 if args.quick else 1.0)
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"freed memory {'kept (as in a worker)' if kept else 'returned (malloc defaults)'}")
    print(f"float32 matmul (1024^3): {peak:.1f} GFLOP/s")
    rows = [r for name in WORKLOADS for r in measure(name, (1, 8, 32), repeats, standard_runs, compiled_ks)]
    print_table(rows, peak)
    for label, eps in variants(repeats):
        print(f"variant K=8 digits/mlp2: {label}: {eps:.2f} ev/s")
    warm = [r.compile_s for r in rows if math.isfinite(r.compile_s)]
    if warm:
        print(f"compile warm-up (first fit per shape, this process): {min(warm):.1f}-{max(warm):.1f} s")
    k8 = next(r for r in rows if r.workload == "digits/mlp2" and r.k == 8)
    cnn = next(r for r in rows if r.workload == "digits/cnn4" and r.k == 8)
    print(f"population speedup at K=8: {k8.population_eps / k8.standard_eps:.1f}x")
    print(f"cnn4 population speedup at K=8: {cnn.population_eps / cnn.standard_eps:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
