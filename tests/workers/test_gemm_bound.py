"""`bench/gemm_bound.py` times the GEMMs a population fit runs; these tests hold its list of GEMMs to the
trainer's: the same FLOPs as a step of the stacked layers (counted by torch's FLOP counter) and as the
closed-form count of forward, weight gradient and input gradient plus the evaluation chunks."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from evoloss.workers.archs import create_arch
from evoloss.workers.evaluation import EVAL_BATCH_SIZE
from evoloss.workers.population.run import eval_chunk_rows
from evoloss.workers.population.stack import StackedNet


def _bench():
    path = Path(__file__).resolve().parents[2] / "bench" / "gemm_bound.py"
    spec = importlib.util.spec_from_file_location("_bench_gemm_bound", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_gemm_list_has_the_closed_form_flops() -> None:
    bench = _bench()
    widths, k, batch, steps, epochs, n = (64, 256, 10), 8, 64, 200, 12, 718
    ops = bench.fit_gemms(widths, k, batch, steps, epochs, n)
    rows = eval_chunk_rows(k, n, EVAL_BATCH_SIZE)
    padded = math.ceil(n / rows) * rows  # the compiled path pads the last chunk: these rows are computed
    assert padded >= n and padded - n < math.ceil(n / rows)
    train = steps * batch * k * 2 * (2 * 64 * 256 + 3 * 256 * 10)  # layer 0: no input gradient
    evaluation = epochs * padded * k * 2 * (64 * 256 + 256 * 10)
    assert sum(count * flops for _, _, count, flops in ops) == train + evaluation
    for label, call, _, flops in ops:  # each call runs and its output has the counted size
        out = call()
        inner = flops / 2 / out.numel()
        assert inner in (64, 256, 10), (label, inner)


def test_the_gemm_list_matches_a_step_of_the_stacked_layers() -> None:
    bench = _bench()
    k, batch = 8, 64
    members = [create_arch("mlp2", (64,), 10, seed=s) for s in range(k)]
    net = StackedNet(members)
    x = torch.randn(batch, 64, generator=torch.Generator().manual_seed(0))

    def loss_grad(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return logits.sum(dim=(1, 2)), torch.ones_like(logits)

    with FlopCounterMode(display=False) as counter:
        net.train_step_grads(x, loss_grad)
    ops = bench.fit_gemms((64, 256, 10), k, batch, steps=1, epochs=0, eval_n=1)
    assert counter.get_total_flops() == sum(count * flops for _, _, count, flops in ops)
