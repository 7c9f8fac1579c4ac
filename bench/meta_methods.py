"""Meta-learned trainers vs their base loss and CE: accuracy, per-step cost and memory.

Task: digits (sklearn, embedded) / MLP-2, symmetric label noise (``exact`` convention), a clean meta
set of 10 samples per class (the NARL/shu setting for small sets), batch 64, SGD lr 0.01 momentum
0.9 (the protocol of mlp2). Each row is one method over ``--seeds`` task seeds (mean ± std of the
clean test accuracy at the last and at the best-val epoch), next to the standard trainer with the
method's base loss (family defaults) and with CE on the same seeds.

Cost columns:
- ``step×``: wall seconds per optimiser step (evaluation included, after an untimed warm-up run)
  divided by the same figure of the standard trainer with the method's base loss, same seeds;
- ``saved MB/step``: bytes of tensors saved for backward per optimiser step (mean over the run,
  counted with ``torch.autograd.graph.saved_tensors_hooks``) — the activation memory a step holds,
  a device-independent proxy for peak memory (the look-ahead keeps a second-order graph);
- ``cuda peak MB``: ``torch.cuda.max_memory_allocated`` of the run (``--device cuda`` only).

Usage::

    .venv/bin/python bench/meta_methods.py --quick   # 3 epochs, 1 seed: a smoke run (~1-2 min)
    .venv/bin/python bench/meta_methods.py           # 20 epochs, 3 seeds (long: run on a quiet machine)
"""
from __future__ import annotations

import argparse
import math
import statistics
from dataclasses import dataclass

import torch

import evoloss.workers.meta.adaptive  # noqa: F401  (registration)
import evoloss.workers.meta.dynamic  # noqa: F401
import evoloss.workers.meta.l2b  # noqa: F401
import evoloss.workers.meta.mwnet  # noqa: F401
import evoloss.workers.meta.narl  # noqa: F401
import evoloss.workers.standard  # noqa: F401
from evoloss.losses import LossSpec
from evoloss.workers.materialize import materialize
from evoloss.workers.records import EvalRecord
from evoloss.workers.task import Budget, NoiseSpec, Splits, Task, TaskData
from evoloss.workers.trainer import create_trainer
from machine import cpu_model  # bench/machine.py (bench/ is the script's directory)

# method label -> (trainer name, base loss family)
METHODS: dict[str, tuple[str, str]] = {
    "adaptive-gce": ("adaptive-gce", "gce"),
    "adaptive-sl": ("adaptive-sl", "sce"),
    "adaptive-bitempered": ("adaptive-bitempered", "bitempered"),
    "adaptive-polysoft": ("adaptive-polysoft", "polysoft"),
    "narl-gce": ("narl-gce", "gce"),
    "narl-sl": ("narl-sl", "sce"),
    "narl-polysoft": ("narl-polysoft", "polysoft"),
    "narl-js": ("narl-js", "js"),
    "l2b": ("l2b", "ce"),
    "mwnet": ("mwnet", "ce"),
    "dynamic": ("dynamic", "ce"),
}


@dataclass
class Measured:
    """The records of one configuration over the seeds, and its memory figures."""

    records: list[EvalRecord]
    saved_mb_per_step: float
    cuda_peak_mb: float = math.nan

    def stat(self, field: str) -> tuple[float, float]:
        values = [getattr(r, field) for r in self.records if r.status == "ok"]
        if not values:
            return math.nan, math.nan
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    @property
    def seconds_per_step(self) -> float:
        steps = sum(r.extra.get("steps", 0) for r in self.records)
        return sum(r.wall_s for r in self.records) / max(steps, 1)


def make_task(seed: int, epochs: int, noise: float) -> Task:
    return Task(dataset="digits", arch="mlp2", noise=NoiseSpec("symmetric", noise, "exact"),
                budget=Budget(epochs=epochs, batch_size=64), splits=Splits(meta_per_class=10), seed=seed)


def measure(trainer: str, spec: LossSpec | None, tasks: list[Task], datas: list[TaskData], device: str,
            options: dict) -> Measured:
    """Run ``trainer`` on every task; count saved-for-backward bytes and the CUDA peak.

    A 2-step run first, untimed, takes the one-off costs (lazy initialisation of autograd paths,
    allocator warm-up) out of the per-step figure.
    """
    specs = [] if spec is None else [spec]
    create_trainer(trainer, **{**options, "max_steps": 2}).fit(tasks[0], specs, device=device, data=datas[0])
    saved = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[0] += t.numel() * t.element_size()
        return t

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    records = []
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        for task, data in zip(tasks, datas):
            records += create_trainer(trainer, **options).fit(task, specs, device=device, data=data)
    steps = sum(r.extra.get("steps", 0) for r in records)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else math.nan
    return Measured(records, saved[0] / 2**20 / max(steps, 1), peak)


def fmt(mean_std: tuple[float, float]) -> str:
    mean, std = mean_std
    return "   n/a     " if math.isnan(mean) else f"{100 * mean:5.1f} ± {100 * std:4.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 epochs, 1 seed (smoke run)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--noise", type=float, default=0.4, help="symmetric noise rate (default 0.4)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated method labels")
    args = parser.parse_args()
    epochs = args.epochs or (3 if args.quick else 20)
    seeds = list(range(args.seeds or (1 if args.quick else 3)))
    tasks = [make_task(s, epochs, args.noise) for s in seeds]
    datas = [materialize(t) for t in tasks]
    print(f"# digits/mlp2, symmetric {args.noise:g} (exact), meta 10/class, {epochs} epochs, seeds {seeds}, "
          f"device {args.device}, torch {torch.__version__}, {cpu_model()}, "
          f"{torch.get_num_threads()} threads")
    baseline: dict[str, Measured] = {}
    for family in sorted({"ce", *(METHODS[m][1] for m in args.methods.split(","))}):
        baseline[family] = measure("standard", LossSpec(family), tasks, datas, args.device, {})
    header = (f"{'method':<20} {'base':<10} {'test last':>11} {'test best':>11} {'base last':>11} {'CE last':>11} "
              f"{'step×':>6} {'saved MB/step':>13} {'cuda peak MB':>12}")
    print(header)
    print("-" * len(header))
    for family in sorted(baseline):
        row = baseline[family]
        print(f"{'standard':<20} {family:<10} {fmt(row.stat('test_acc_last')):>11} "
              f"{fmt(row.stat('test_acc_best')):>11} "
              f"{'':>11} {'':>11} {1.0:6.2f} {row.saved_mb_per_step:13.2f} {row.cuda_peak_mb:12.1f}")
    for label in args.methods.split(","):
        trainer, family = METHODS[label]
        options = {"warmup_epochs": 1} if trainer == "dynamic" else {}
        row = measure(trainer, None, tasks, datas, args.device, options)
        base, ce = baseline[family], baseline["ce"]
        ratio = row.seconds_per_step / base.seconds_per_step
        failed = sum(r.status != "ok" for r in row.records)
        print(f"{label:<20} {family:<10} {fmt(row.stat('test_acc_last')):>11} {fmt(row.stat('test_acc_best')):>11} "
              f"{fmt(base.stat('test_acc_last')):>11} {fmt(ce.stat('test_acc_last')):>11} {ratio:6.2f} "
              f"{row.saved_mb_per_step:13.2f} {row.cuda_peak_mb:12.1f}" + (f"  ({failed} not ok)" if failed else ""))


if __name__ == "__main__":
    main()
