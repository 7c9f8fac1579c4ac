"""Every exported loss compiles whole and never waits for the device.

Each family's standalone plug-in module (and an adjusted NARL plug-in) traced with
``torch._dynamo.explain``: one graph and zero graph breaks — no ``.item()``, ``torch.unique`` or
data-dependent shape in the forward — with the default options and with weight, ignore_index and
label smoothing. On a CUDA machine the forward + backward also runs under
``torch.cuda.set_sync_debug_mode("error")`` (no host synchronisation) and inside a CUDA graph.
"""
from __future__ import annotations

import importlib.util
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from evoloss import losses
from evoloss.losses.registry import LossSpec, get_family, list_losses

ALL = list_losses()


def plugin_class(spec: LossSpec, out: Path, name: str) -> type:
    losses.export_plugin(spec, out, name=name)
    module_spec = importlib.util.spec_from_file_location(name, out / f"{name}.py")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return getattr(module, module.__all__[0])


def adjusted_class(out: Path) -> type:
    """A one-snapshot NARL-Adjuster plug-in for GCE (seeded weights)."""
    rng = np.random.default_rng(0)
    adjuster = {"format": "evoloss-narl-adjuster", "format_version": 1, "family": "gce", "param_names": ["q"],
                "hidden": 4, "input": "logit_margin", "w1": rng.normal(size=(4, 1)).tolist(),
                "b1": rng.normal(size=4).tolist(), "w2": rng.normal(size=(1, 4)).tolist(), "b2": [0.1],
                "offsets": {"q": 1e-4}, "scales": {"q": 0.9999}}
    losses.export_adjuster_plugin(adjuster, "gce", out, name="narl_gce")
    module_spec = importlib.util.spec_from_file_location("narl_gce", out / "narl_gce.py")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.NarlGce


def spec_of(name: str) -> LossSpec:
    family = get_family(name)
    return LossSpec(name, family.decode(np.random.default_rng(zlib.crc32(name.encode())).normal(size=family.dim)))


OPTIONS = [{}, {"weight": torch.linspace(0.5, 2.0, 10), "ignore_index": 3, "label_smoothing": 0.1}]


def graph_breaks(loss: torch.nn.Module, logits: torch.Tensor, targets: torch.Tensor) -> tuple[int, int, list]:
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(loss)(logits, targets)
    return explanation.graph_count, explanation.graph_break_count, explanation.break_reasons


@pytest.mark.parametrize("name", ALL)
def test_every_family_plugin_has_no_graph_break(name: str, tmp_path: Path) -> None:
    cls = plugin_class(spec_of(name), tmp_path / "p", f"plugin_{name}")
    logits, targets = torch.randn(16, 10), torch.randint(0, 10, (16,))
    soft = get_family(name).soft_targets  # without: no label smoothing, no probability targets
    for options in OPTIONS:
        options = options if soft else {k: v for k, v in options.items() if k != "label_smoothing"}
        graphs, breaks, reasons = graph_breaks(cls(**options), logits, targets)
        assert (graphs, breaks) == (1, 0), (options, reasons)
    if soft:
        graphs, breaks, reasons = graph_breaks(cls(), logits, torch.softmax(torch.randn(16, 10), dim=1))
        assert (graphs, breaks) == (1, 0), reasons


def test_adjusted_plugin_has_no_graph_break(tmp_path: Path) -> None:
    cls = adjusted_class(tmp_path / "narl")
    logits, targets = torch.randn(16, 10), torch.randint(0, 10, (16,))
    for options in OPTIONS:
        graphs, breaks, reasons = graph_breaks(cls(**options), logits, targets)
        assert (graphs, breaks) == (1, 0), (options, reasons)
    with pytest.raises(ValueError, match="class-probability targets are not supported"):
        cls()(logits, torch.softmax(logits, dim=1))


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none on this machine)")


@needs_cuda
@pytest.mark.parametrize("name", ALL)
def test_forward_and_backward_never_synchronise_and_capture_in_a_cuda_graph(name: str, tmp_path: Path) -> None:
    cls = plugin_class(spec_of(name), tmp_path / "p", f"plugin_{name}")
    smoothing = 0.1 if get_family(name).soft_targets else 0.0
    loss = cls(weight=torch.linspace(0.5, 2.0, 10), ignore_index=3, label_smoothing=smoothing).cuda()
    logits = torch.randn(32, 10, device="cuda", requires_grad=True)
    targets = torch.randint(0, 10, (32,), device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss(logits, targets).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    want = loss(logits, targets).detach()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the default stream, as torch.cuda.graph asks
        for _ in range(2):
            loss(logits, targets)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        value = loss(logits, targets)
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(value, want)
