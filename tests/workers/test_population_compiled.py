"""The compiled population step (`workers.population.compiled`) and the record's ``execution`` column.

Compiled runs use Dynamo's ``eager`` / ``aot_eager`` backends here: they trace and guard exactly as
``inductor`` does (the same graph, the same recompiles) without generating C++, which costs 10-80 s
per graph on a 2-core machine; one ``slow`` test runs Inductor itself. Equality is checked in
float64 against the eager population trainer and the ``standard`` trainer, with the last batch of
each epoch partial (150 rows, batch 32) and K = 3 (a bucket of 4 slots, one padded).
"""
from __future__ import annotations

import math
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import evoloss.losses.gce  # noqa: F401  (registers "gce")
from evoloss.losses import LossSpec
from evoloss.losses.registry import Param, register_family, unregister_family
from evoloss.workers.population import PopulationTrainer
from evoloss.workers.population.compiled import bucket_size, compile_count, configure_cache, use_compile
from evoloss.workers.records import EvalRecord
from evoloss.workers.standard import StandardTrainer
from evoloss.workers.task import Budget, Task, TaskData

GCE3 = [LossSpec("gce", {"q": q}) for q in (0.2, 0.5, 0.8)]


pytestmark = pytest.mark.usefixtures("float64_one_thread")  # tests/workers/conftest.py


@pytest.fixture(autouse=True)
def _inductor_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "inductor"))


def _data(shape: tuple[int, ...], n_train: int = 150, classes: int = 4) -> TaskData:
    """A seeded Gaussian mixture, 30% of the training labels flipped to another class."""
    g = torch.Generator().manual_seed(3)
    means = torch.randn((classes, *shape), generator=g)
    y = torch.randint(0, classes, (n_train + 100,), generator=g)
    x = means[y] + torch.randn((n_train + 100, *shape), generator=g)
    flip = torch.rand(n_train, generator=g) < 0.3
    noisy = torch.where(flip, (y[:n_train] + torch.randint(1, classes, (n_train,), generator=g)) % classes, y[:n_train])
    return TaskData(x_train=x[:n_train], y_train=noisy, y_train_clean=y[:n_train], x_val=x[n_train:n_train + 50],
                    y_val=y[n_train:n_train + 50], x_test=x[n_train + 50:], y_test=y[n_train + 50:],
                    num_classes=classes, input_shape=shape)


def _task(arch: str, epochs: int = 2, **budget: object) -> Task:
    options = {"batch_size": 32, "lr": 0.1, **budget}
    return Task(dataset="synthetic", arch=arch, budget=Budget(epochs=epochs, **options), seed=4)


def _same(a: EvalRecord, b: EvalRecord, tol: float = 1e-9) -> None:
    assert (a.family, a.params, a.status, a.error) == (b.family, b.params, b.status, b.error)
    assert (a.curve_val, a.epochs_run, a.best_epoch, a.extra["steps"]) == (b.curve_val, b.epochs_run, b.best_epoch,
                                                                           b.extra["steps"])
    assert (a.test_acc_last, a.test_acc_best) == (b.test_acc_last, b.test_acc_best)
    assert math.isclose(a.train_loss_last, b.train_loss_last, rel_tol=tol, abs_tol=tol) or (
        math.isnan(a.train_loss_last) and math.isnan(b.train_loss_last))


def _compiled(backend: str = "eager", **options: object) -> PopulationTrainer:
    return PopulationTrainer(compile="on", compile_backend=backend, **options)


def test_bucket_sizes_and_the_compile_switch() -> None:
    assert [bucket_size(k) for k in (1, 2, 3, 4, 5, 8, 9, 32, 33)] == [1, 2, 4, 4, 8, 8, 16, 32, 64]
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert (use_compile("auto", cpu), use_compile("auto", cuda), use_compile("on", cpu), use_compile("off", cuda)) == \
        (False, True, True, False)
    with pytest.raises(ValueError, match="compile='yes'"):
        PopulationTrainer(compile="yes")
    with pytest.raises(ValueError, match="compile_backend"):
        PopulationTrainer(compile_backend="")


def test_inductor_cache_goes_under_the_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    assert configure_cache(tmp_path / "data") == str((tmp_path / "data" / "inductor").resolve())
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert configure_cache(tmp_path / "data") == str(tmp_path / "mine")  # the environment's choice stays


@pytest.mark.parametrize(("arch", "shape"), [("mlp2", (1, 6, 6)), ("cnn4", (1, 6, 6)), ("cnn1d", (1, 20))])
def test_compiled_eager_and_standard_give_the_same_records(arch: str, shape: tuple[int, ...]) -> None:
    data, task = _data(shape), _task(arch)
    compiled = _compiled().fit(task, GCE3, data=data)
    eager = PopulationTrainer(compile="off").fit(task, GCE3, data=data)
    standard = StandardTrainer().fit(task, GCE3, data=data)
    for c, e, s in zip(compiled, eager, standard):
        _same(c, e)
        _same(c, s)
        assert (c.execution, c.execution_note) == ("stacked-compiled", "")
        assert c.extra["population_slots"] == 4 and c.extra["compile_s"] >= 0
        assert (e.execution, e.execution_note) == ("stacked", "not compiled: compile='off'")
        assert s.execution == "single"
    assert len({tuple(r.curve_val) for r in standard}) > 1 or len({r.train_loss_last for r in standard}) > 1


@pytest.mark.parametrize("steps_per_call", [1, 3, 4, 7])
def test_adam_clipping_weight_decay_cosine_and_max_steps_compiled(steps_per_call: int) -> None:
    """5 batches an epoch, 13 steps: unrolled calls of 3 or 4 steps plus single-step remainders (and a
    max_steps cut inside an epoch), or only single steps (1; 7 > 5) — the records never change."""
    data = _data((8,))
    task = _task("mlp2", epochs=4, optimizer="adam", lr=3e-3, weight_decay=1e-3, grad_clip=0.5, schedule="cosine")
    options = {"max_steps": 13, "eval_every": 2}
    compiled = _compiled("aot_eager", steps_per_call=steps_per_call, **options).fit(task, GCE3, data=data)
    for c, s in zip(compiled, StandardTrainer(**options).fit(task, GCE3, data=data)):
        _same(c, s)
        assert c.execution == "stacked-compiled" and c.extra["steps"] == 13


def test_a_batch_family_leaves_the_padded_rows_out_of_its_statistic() -> None:
    """The compiled step pads the last batch (150 rows, batch 32) and K = 3 to 4 slots; ``relative_gce``
    gets the row weights as its mask, so its batch mean equals the standard trainer's on the real rows."""
    specs = [LossSpec("relative_gce", {"q": q, "a": 1.0}) for q in (0.3, 0.7, 1.1)]
    data, task = _data((1, 6, 6)), _task("mlp2", epochs=3)
    for c, s in zip(_compiled().fit(task, specs, data=data), StandardTrainer().fit(task, specs, data=data)):
        _same(c, s)
        assert c.execution == "stacked-compiled"


def test_a_second_fit_of_the_same_signature_skips_the_warm_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """The warm-up (both step functions and the prediction on copies of the state) runs once per signature
    and process: a later fit calls the compiled functions only for its own steps and evaluations."""
    import evoloss.workers.population.compiled as compiled

    data, task = _data((1, 6, 6)), _task("mlp2", epochs=2)
    trainer = _compiled(steps_per_call=2)
    first = trainer.fit(task, GCE3, data=data)
    calls: list[str] = []
    for key, fn in list(compiled._STEPS.items()):
        monkeypatch.setitem(compiled._STEPS, key,
                            lambda *a, _fn=fn, _kind=key[-1]: (calls.append(str(_kind)), _fn(*a))[1])
    second = trainer.fit(task, GCE3, data=data)
    for a, b in zip(first, second):
        _same(a, b, tol=0.0)
    steps = [c for c in calls if c != "predict"]
    # 150 rows, batch 32: 5 batches an epoch = two 2-step calls and one 1-step call; 2 epochs
    assert len(steps) == 2 * 3
    # one prediction chunk per evaluation (50 val + 100 test rows fit one chunk), 2 evaluations
    assert calls.count("predict") == 2


@pytest.mark.parametrize("steps_per_call", [0, -2, 2.0, True, "4"])
def test_steps_per_call_must_be_a_positive_int(steps_per_call: object) -> None:
    with pytest.raises(ValueError, match=f"steps_per_call={steps_per_call!r} must be a positive int"):
        PopulationTrainer(steps_per_call=steps_per_call)  # type: ignore[arg-type]


def test_no_recompile_after_the_first_generation(nan_family: str) -> None:
    """Generation 1 compiles; generations 2 and 3 (other parameters, a member that diverges and
    leaves the stack, fewer members in the same bucket) reuse the graph."""
    data, task = _data((1, 6, 6)), _task("mlp2", epochs=3, lr=0.05)
    trainer = _compiled()
    first = trainer.fit(task, [LossSpec(nan_family, {"limit": v}) for v in (100.0, 90.0, 80.0)], data=data)
    assert [r.status for r in first] == ["ok"] * 3
    after_first = compile_count()
    second_specs = [LossSpec(nan_family, {"limit": v}) for v in (100.0, 0.0, 3.0)]
    second = trainer.fit(task, second_specs, data=data)
    assert compile_count() == after_first
    third = trainer.fit(task, second_specs[:2], data=data)  # K=2: another bucket, compiled once
    after_third = compile_count()
    assert after_third > after_first
    trainer.fit(task, second_specs[1:], data=data)  # K=2 again: nothing compiles
    assert compile_count() == after_third
    eager = PopulationTrainer(compile="off").fit(task, second_specs, data=data)
    for c, e in zip(second, eager):
        _same(c, e)
    assert second[1].status == "diverged" and "non-finite training loss (nan) in epoch 0" in second[1].error
    assert second[0].status == "ok" and third[1].status == "diverged"


def test_a_compile_failure_falls_back_to_eager_with_the_reason() -> None:
    name = "_test_compiled_graph_break"

    def host_sync(logits: torch.Tensor, targets: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        if float(torch.as_tensor(scale).max()) > 10:  # a host sync on a tensor: a graph break under fullgraph
            raise ValueError("scale too large")
        return scale * F.cross_entropy(logits, targets, reduction="none")

    register_family(name, [Param("scale", default=1.0, low=0.1, high=20.0)])(host_sync)
    try:
        data, task = _data((1, 6, 6)), _task("mlp2")
        specs = [LossSpec(name, {"scale": s}) for s in (0.5, 1.0)]
        fallback = _compiled().fit(task, specs, data=data)
        eager = PopulationTrainer(compile="off").fit(task, specs, data=data)
    finally:
        unregister_family(name)
    for f, e in zip(fallback, eager):
        _same(f, e, tol=0.0)
        assert f.execution == "stacked" and f.execution_note.startswith("compile failed: ")
        assert f.extra["population_backend"] == "stacked-manual"


# --- users' model factories (MODULE:FUNCTION): stacked when they can be, one by one otherwise ----------
FACTORIES = '''
from torch import nn


def stackable(input_shape, num_classes):
    width = 1
    for d in input_shape:
        width *= d
    return nn.Sequential(nn.Flatten(), nn.Linear(width, 16), nn.Tanh(), nn.Linear(16, num_classes))


def with_layernorm(input_shape, num_classes):
    width = 1
    for d in input_shape:
        width *= d
    return nn.Sequential(nn.Flatten(), nn.Linear(width, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, num_classes))
'''


@pytest.fixture()
def factories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A user module of model factories on ``sys.path``; returns its name."""
    name = "e14_user_models"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(FACTORIES))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


@pytest.mark.parametrize("compile_mode", ["off", "on"])
def test_user_factories_stack_when_they_can(factories: str, compile_mode: str) -> None:
    data = _data((1, 6, 6))
    trainer = PopulationTrainer(compile=compile_mode, compile_backend="eager")
    stacked_task, other_task = _task(f"{factories}:stackable"), _task(f"{factories}:with_layernorm")
    stacked = trainer.fit(stacked_task, GCE3, data=data)
    reference = StandardTrainer().fit(stacked_task, GCE3, data=data)
    for p, s in zip(stacked, reference):
        _same(p, s)
        assert p.execution == ("stacked-compiled" if compile_mode == "on" else "stacked")
    one_by_one = trainer.fit(other_task, GCE3[:2], data=data)
    for p, s in zip(one_by_one, StandardTrainer().fit(other_task, GCE3[:2], data=data)):
        _same(p, s, tol=0.0)
        assert p.execution == "one-by-one"
        assert p.execution_note == "architecture not stackable: layer LayerNorm has no stacked form"


@pytest.mark.slow
def test_inductor_compiled_records_equal_eager() -> None:
    """Inductor itself (C++ code generation: tens of seconds on 2 cores, less with a warm cache)."""
    data, task = _data((1, 6, 6)), _task("mlp2")
    compiled = _compiled("inductor").fit(task, GCE3, data=data)
    for c, e in zip(compiled, PopulationTrainer(compile="off").fit(task, GCE3, data=data)):
        _same(c, e)
        assert c.execution == "stacked-compiled"


def test_gpu_benchmark_skips_cleanly_without_cuda(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture) -> None:
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "bench" / "gpu.py"
    spec = importlib.util.spec_from_file_location("_bench_gpu", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert module.main([]) == 0
    assert capsys.readouterr().out.startswith("skipped: no CUDA device")


@pytest.mark.parametrize(("module", "shape"), [
    (torch.nn.AdaptiveAvgPool1d(5), (6, 16, 10)), (torch.nn.AdaptiveAvgPool1d(4), (6, 16, 12)),
    (torch.nn.AdaptiveAvgPool1d(5), (6, 16, 11)), (torch.nn.MaxPool1d(2, ceil_mode=True), (6, 16, 9)),
    (torch.nn.AvgPool1d(3, stride=2, padding=1), (6, 16, 9)), (torch.nn.AdaptiveAvgPool2d(2), (6, 16, 2, 2)),
    (torch.nn.MaxPool2d(2, ceil_mode=True), (6, 16, 5, 5)),
])
def test_stacked_pools_give_the_modules_own_bits(module: torch.nn.Module, shape: tuple[int, ...]) -> None:
    """The faster pool forms (channels-last, equal-window sums, the identity) change no bit (float32),
    so the eager population's runs, and a search's trajectory, stay what they were."""
    from evoloss.workers.population.layers import layer_from_modules

    x = torch.randn(shape, dtype=torch.float32, generator=torch.Generator().manual_seed(0), requires_grad=True)
    g = torch.randn_like(module(x))
    out, _ = layer_from_modules([module]).forward(x, "chan", 1, True)
    assert torch.equal(out, module(x))
    (mine,), (own,) = torch.autograd.grad(out, x, g), torch.autograd.grad(module(x), x, g)
    assert torch.equal(mine, own)
