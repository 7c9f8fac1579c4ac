"""How fast can a population fit be on this machine? Its GEMMs alone, against the fit and ``standard``.

`bench/inner_loop.py` reports the population trainer's speedup over the standard trainer. That ratio
depends on the machine as much as on the code: the standard trainer of a small MLP is bound by the
cost of dispatching small operators, the population by float32 GEMM throughput. This benchmark
separates the two for one MLP workload (default digits / MLP-2 at K = 8, the issue's target case):

- the standard trainer's evaluations/s and the compiled population fit's time (as `inner_loop.py`);
- the same fit's GEMMs alone, in the population's own layouts (feature-major activations, one
  ``addmm`` on the shared input, ``baddbmm``/``bmm`` per member after it; `workers.population.layers`),
  each shape timed in a tight loop and multiplied by how often one fit runs it (200 steps: forward,
  weight gradient and, after the first layer, input gradient; every epoch's evaluation chunks);
- the fit time a target speedup needs, and the float32 rate it would take.

A fit can be faster than its GEMMs alone only by doing different arithmetic; when the target needs
the fit faster than that, no implementation of the same float32 training reaches it on this machine.
Timings are the best of ``--rounds`` rounds, every measurement once per round (drift hits all alike).

Usage::

    .venv/bin/python bench/gemm_bound.py                # digits/mlp2, K = 8, target 8x (~20 s; ~1 min cold)
    .venv/bin/python bench/gemm_bound.py --k 32 --target 10
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from evoloss.workers.allocator import keep_freed_memory
from evoloss.workers.archs import create_arch
from evoloss.workers.evaluation import EVAL_BATCH_SIZE
from evoloss.workers.population.run import eval_chunk_rows
from evoloss.workers.standard import StandardTrainer

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/: inner_loop, machine
from inner_loop import STEPS, WORKLOADS, candidates, matmul_gflops, population_fit, workload  # noqa: E402
from machine import cpu_model  # noqa: E402

Op = tuple[str, Callable[[], torch.Tensor], int, float]  # (label, call, calls per fit, FLOPs per call)


def fit_gemms(widths: Sequence[int], k: int, batch: int, steps: int, epochs: int, eval_n: int) -> list[Op]:
    """The GEMMs of one population fit of an MLP with layer widths ``widths`` (input first), in the
    stacked layouts of `workers.population.layers.Linear`."""
    g = torch.Generator().manual_seed(0)
    rows = eval_chunk_rows(k, eval_n, EVAL_BATCH_SIZE)
    chunks = math.ceil(eval_n / rows) * epochs

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g)

    ops: list[Op] = []
    for i, (f_in, f_out) in enumerate(zip(widths[:-1], widths[1:])):
        kf = k * f_out
        if i == 0:  # shared input: [K·out, in] @ [in, B]; dW = [K·out, B] @ [B, in]; no input gradient
            w, b, x, gr, xe = r(kf, f_in), r(kf, 1), r(batch, f_in), r(kf, batch), r(rows, f_in)
            ops += [
                (f"layer {i} forward addmm [{kf},{f_in}]x[{f_in},{batch}]",
                 lambda w=w, b=b, x=x: torch.addmm(b, w, x.t()), steps, 2.0 * kf * f_in * batch),
                (f"layer {i} weight grad mm [{kf},{batch}]x[{batch},{f_in}]",
                 lambda gr=gr, x=x: torch.mm(gr, x), steps, 2.0 * kf * batch * f_in),
                (f"layer {i} eval addmm [{kf},{f_in}]x[{f_in},{rows}]",
                 lambda w=w, b=b, xe=xe: torch.addmm(b, w, xe.t()), chunks, 2.0 * kf * f_in * rows)]
        else:  # feature-major activations: [K, out, in] @ [K, in, B]
            w, b, h, gr, he = r(k, f_out, f_in), r(k, f_out, 1), r(k, f_in, batch), r(k, f_out, batch), r(k, f_in, rows)
            per = 2.0 * kf * f_in * batch
            ops += [
                (f"layer {i} forward baddbmm {k}x[{f_out},{f_in}]x[{f_in},{batch}]",
                 lambda w=w, b=b, h=h: torch.baddbmm(b, w, h), steps, per),
                (f"layer {i} weight grad bmm {k}x[{f_out},{batch}]x[{batch},{f_in}]",
                 lambda gr=gr, h=h: torch.bmm(gr, h.transpose(1, 2)), steps, per),
                (f"layer {i} input grad bmm {k}x[{f_in},{f_out}]x[{f_out},{batch}]",
                 lambda w=w, gr=gr: torch.bmm(w.transpose(1, 2), gr), steps, per),
                (f"layer {i} eval baddbmm {k}x[{f_out},{f_in}]x[{f_in},{rows}]",
                 lambda w=w, b=b, he=he: torch.baddbmm(b, w, he), chunks, 2.0 * kf * f_in * rows)]
    return ops


def per_call_seconds(call: Callable[[], torch.Tensor], n: int = 400) -> float:
    call()
    start = time.perf_counter()
    for _ in range(n):
        call()
    return (time.perf_counter() - start) / n


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", default="digits/mlp2", choices=[w for w in WORKLOADS if w.endswith("mlp2")])
    parser.add_argument("--k", type=int, default=8, help="population size (default 8)")
    parser.add_argument("--target", type=float, default=8.0, help="the speedup to test (default 8)")
    parser.add_argument("--rounds", type=int, default=6, help="rounds; every timing is the best of them")
    args = parser.parse_args(argv)
    for name in ("k", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name}={getattr(args, name)} must be >= 1")
    if not args.target > 0:
        parser.error(f"--target={args.target} must be > 0")
    keep_freed_memory()  # as every evoloss worker process does
    task, data, epochs = workload(*WORKLOADS[args.workload])
    model = create_arch(task.arch, tuple(data.input_shape), data.num_classes, seed=0)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    widths = [linears[0].in_features] + [m.out_features for m in linears]
    eval_n = len(data.y_val) + len(data.y_test) + (0 if data.y_noisy_val is None else len(data.y_noisy_val))
    ops = fit_gemms(widths, args.k, task.budget.batch_size, STEPS, epochs, eval_n)

    fit = population_fit(task, data, args.k, "on")
    first = fit()  # compiles (or loads the compiled step from the on-disk cache)
    if first[0].execution != "stacked-compiled":
        raise SystemExit(f"the compiled population did not compile: {first[0].execution_note}")
    standard, specs = StandardTrainer(max_steps=STEPS), candidates(2)
    standard.fit(task, specs, data=data)
    best = {"fit": math.inf, "standard": math.inf}
    per_op = {op[0]: math.inf for op in ops}
    peak = 0.0
    for _ in range(args.rounds):
        start = time.perf_counter()
        fit()
        best["fit"] = min(best["fit"], time.perf_counter() - start)
        start = time.perf_counter()
        standard.fit(task, specs, data=data)
        best["standard"] = min(best["standard"], (time.perf_counter() - start) / len(specs))
        for label, call, _, _ in ops:
            per_op[label] = min(per_op[label], per_call_seconds(call))
        peak = max(peak, matmul_gflops(seconds=0.5, repeats=1))

    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; {args.workload}, K={args.k}, {STEPS} steps, {epochs} epochs, "
          f"{eval_n} eval rows")
    print(f"float32 matmul (1024^3): {peak:.1f} GFLOP/s")
    total_s = total_flops = 0.0
    for label, _, count, call_flops in ops:
        seconds, flops = per_op[label] * count, call_flops * count
        total_s, total_flops = total_s + seconds, total_flops + flops
        print(f"  {label:<52} {per_op[label] * 1e6:8.1f} us x {count:4d} = {seconds * 1e3:6.1f} ms "
              f"({call_flops / per_op[label] / 1e9:5.1f} GFLOP/s)")
    std_eps, fit_s, k = 1 / best["standard"], best["fit"], args.k
    need_s = k / (args.target * std_eps)
    print(f"standard: {std_eps:.2f} ev/s")
    print(f"compiled population fit: {fit_s * 1e3:.1f} ms = {k / fit_s:.1f} ev/s = {k / fit_s / std_eps:.2f}x "
          f"({total_flops / fit_s / 1e9:.0f} GFLOP/s of GEMMs)")
    print(f"its GEMMs alone: {total_s * 1e3:.1f} ms ({total_flops / 1e9:.2f} GFLOP) = {k / total_s:.1f} ev/s "
          f"= {k / total_s / std_eps:.2f}x")
    left = need_s - total_s
    verdict = (f"its GEMMs take {total_s / need_s:.0%} of that, leaving {left * 1e3:.1f} ms for everything else "
               f"(the fit spends {(fit_s - total_s) * 1e3:.1f} ms on it now)") if left > 0 else \
        f"{-left * 1e3:.1f} ms less than its GEMMs alone: out of reach with this arithmetic on this machine"
    print(f"{args.target:g}x needs a fit in {need_s * 1e3:.1f} ms "
          f"({total_flops / need_s / 1e9:.0f} GFLOP/s, {total_flops / need_s / 1e9 / peak:.0%} of the 1024^3 rate): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
