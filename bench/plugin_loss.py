"""Plug-in benchmark: forward + backward time of every exported loss against ``nn.CrossEntropyLoss``.

Each family's plug-in is exported with its default parameters (`losses.export_plugin`, plus a
one-snapshot NARL-Adjuster plug-in for GCE, seeded weights) into a temporary directory and imported
from its standalone ``.py`` file — the module a user takes home. For each loss and each shape
(``[256, 10]`` and ``[128, 1000]``, float32, class-index targets, default options) the timed step is
``loss(logits, targets).backward()`` with ``logits`` a leaf that requires grad:

- ``eager``: the module as is;
- ``compiled``: ``torch.compile(module)`` (default backend, ``dynamic=False``; compilation happens in
  the untimed warm-up, and ``torch._dynamo.reset()`` runs before each new compiled module).

Blocks of ``--steps`` steps of the loss and of ``nn.CrossEntropyLoss`` (same shape and mode) alternate,
``--blocks`` pairs; each cell is the loss's median microseconds per step, CE's, and the median of the
per-pair ratios (robust to the machine's load changing during the run). ``--device cuda`` times on
a GPU (synchronising at block ends); without CUDA it prints why and exits 0.

Usage::

    .venv/bin/python bench/plugin_loss.py                 # CPU, 1 thread, every family, eager + compiled
    .venv/bin/python bench/plugin_loss.py --steps 20 --blocks 7   # what BENCHMARKS.md's table ran
    .venv/bin/python bench/plugin_loss.py --quick         # fewer steps, eager only
    .venv/bin/python bench/plugin_loss.py --device cuda   # on a GPU (skips cleanly without one)

Timings depend on the machine's load; the output prints the load average next to the table.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from evoloss import losses
from evoloss.losses.registry import LossSpec, list_losses
from machine import cpu_model  # bench/machine.py (bench/ is the script's directory)

SHAPES = ((256, 10), (128, 1000))
MODES = ("eager", "compiled")


def import_plugin(out: Path, name: str) -> type:
    """The plug-in class of ``out/<name>.py``, imported from the file (as a user would)."""
    spec = importlib.util.spec_from_file_location(name, out / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, module.__all__[0])


def plugin_classes(root: Path, families: list[str]) -> dict[str, Callable[[], torch.nn.Module]]:
    """Label -> module factory: each family's plug-in, then the NARL-GCE plug-in."""
    makers: dict[str, Callable[[], torch.nn.Module]] = {}
    for family in families:
        losses.export_plugin(LossSpec(family), root / family, name=f"plugin_{family}")
        makers[family] = import_plugin(root / family, f"plugin_{family}")
    rng = np.random.default_rng(0)
    adjuster = {"format": "evoloss-narl-adjuster", "format_version": 1, "family": "gce", "param_names": ["q"],
                "hidden": 100, "input": "logit_margin", "w1": rng.normal(size=(100, 1)).tolist(),
                "b1": rng.normal(size=100).tolist(), "w2": (0.1 * rng.normal(size=(1, 100))).tolist(), "b2": [0.0],
                "offsets": {"q": 1e-4}, "scales": {"q": 0.9999}}
    losses.export_adjuster_plugin(adjuster, "gce", root / "narl", name="narl_gce")
    makers["narl-gce (adjuster)"] = import_plugin(root / "narl", "narl_gce")
    return makers


def prepared(make: Callable[[], torch.nn.Module], mode: str, device: str) -> torch.nn.Module:
    """The module on ``device``, wrapped by ``torch.compile`` in the compiled mode."""
    loss = make().to(device)
    return torch.compile(loss, dynamic=False) if mode == "compiled" else loss


def block_us(loss: torch.nn.Module, logits: torch.Tensor, targets: torch.Tensor, steps: int, device: str) -> float:
    """Microseconds per forward + backward over ``steps`` steps."""
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        loss(logits, targets).backward()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps * 1e6


def time_pair(make: Callable[[], torch.nn.Module], shape: tuple[int, int], mode: str, device: str,
              steps: int, blocks: int) -> tuple[float, float, float]:
    """(loss µs, CE µs, median of the per-block ratios): blocks of the loss and of nn.CrossEntropyLoss
    alternate, so a change of machine load hits both sides of each ratio."""
    generator = torch.Generator().manual_seed(0)
    logits = (2.0 * torch.randn(shape, generator=generator)).to(device).requires_grad_(True)
    targets = torch.randint(0, shape[1], (shape[0],), generator=generator).to(device)
    torch._dynamo.reset()
    loss, ce = prepared(make, mode, device), prepared(torch.nn.CrossEntropyLoss, mode, device)
    for module in (loss, ce):  # warm-up (and compilation)
        for _ in range(3):
            module(logits, targets).backward()
    pairs = [(block_us(loss, logits, targets, steps, device), block_us(ce, logits, targets, steps, device))
             for _ in range(blocks)]
    return (statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs),
            statistics.median(p[0] / p[1] for p in pairs))


def header(modes: tuple[str, ...]) -> str:
    """The markdown table's head: one column per shape and mode."""
    head = ["loss"] + [f"[{b}, {c}] {mode}" for (b, c) in SHAPES for mode in modes]
    return "| " + " | ".join(head) + " |\n" + "|" + "---|" * len(head)


def row(results: dict[tuple[str, tuple, str], tuple], label: str, modes: tuple[str, ...]) -> str:
    """One markdown row: µs per step, the paired CE µs and the median ratio, per shape and mode."""
    cells = [label]
    for shape in SHAPES:
        for mode in modes:
            value, ce, ratio = results[(label, shape, mode)]
            cells.append(f"{value:.0f} µs / CE {ce:.0f} µs = {ratio:.2f}×")
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--steps", type=int, default=50, help="steps per timed block")
    parser.add_argument("--blocks", type=int, default=5, help="timed blocks; the median is reported")
    parser.add_argument("--families", nargs="*", default=None, help="families to time (default: all)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="eager and/or compiled")
    parser.add_argument("--quick", action="store_true", help="10 steps x 3 blocks, eager only")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("plugin_loss: --device cuda: no CUDA device here (torch.cuda.is_available() is False); nothing timed")
        return 0
    torch.set_num_threads(args.threads)
    steps, blocks = (10, 3) if args.quick else (args.steps, args.blocks)
    modes = ("eager",) if args.quick else tuple(m for m in MODES if m in args.modes)
    families = args.families or list_losses()
    device = torch.cuda.get_device_name() if args.device == "cuda" else cpu_model()
    print(f"device {args.device} ({device}), torch {torch.__version__}, {args.threads} thread(s), "
          f"{steps} steps x {blocks} blocks (median), load average at start {os.getloadavg()[0]:.2f}")
    print(header(modes), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        results: dict[tuple[str, tuple, str], tuple] = {}
        for label, make in plugin_classes(Path(tmp), families).items():  # a row as soon as it is timed
            for shape in SHAPES:
                for mode in modes:
                    results[(label, shape, mode)] = time_pair(make, shape, mode, args.device, steps, blocks)
            print(row(results, label, modes), flush=True)
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
