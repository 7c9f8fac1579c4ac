"""The ``population`` trainer against the ``standard`` trainer, member by member, for the same seeds.

The equality tests run in float64 (default dtype and data): in float32 the stacked kernels sum in
another order than one network's (one wide matmul for all members' first layer), and such 1e-7
differences can flip an argmax after many steps. In float64 records agree to ~1e-12.
"""
from __future__ import annotations

import math
from typing import Iterator

import pytest
import torch
import torch.nn.functional as F

import evoloss.losses.gce  # noqa: F401  (registers "gce" whether or not losses/__init__ imports it yet)
import evoloss.losses.sce  # noqa: F401
from evoloss.losses import LossSpec
from evoloss.losses.registry import Param, register_family, unregister_family
from evoloss.workers.evaluation import EVAL_BATCH_SIZE
from evoloss.workers.population import PopulationTrainer
from evoloss.workers.records import EvalRecord
from evoloss.workers.standard import StandardTrainer
from evoloss.workers.task import Budget, Task, TaskData
from evoloss.workers.trainer import create_trainer, list_trainers

MIXED = [
    LossSpec("ce"),
    LossSpec("gce", {"q": 0.3}),
    LossSpec("sce", {"alpha": 0.5, "beta": 1.0}),
    LossSpec("gce", {"q": 0.8}),
]


pytestmark = pytest.mark.usefixtures("float64_one_thread")  # tests/workers/conftest.py


def _mixture(n: int, shape: tuple[int, ...], classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded Gaussian mixture: class means N(0, 1) per input entry, unit noise."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn((classes, *shape), generator=g, dtype=torch.float64)
    y = torch.randint(0, classes, (n,), generator=g)
    return means[y] + torch.randn((n, *shape), generator=g, dtype=torch.float64), y


def _task_data(shape: tuple[int, ...], n_train: int = 160, classes: int = 4, noise: float = 0.3) -> TaskData:
    """Train / val / test splits of one mixture; ``noise`` of the training labels flipped to another class."""
    x, y = _mixture(n_train + 120, shape, classes, seed=17)
    g = torch.Generator().manual_seed(18)
    flip = torch.rand(n_train, generator=g) < noise
    noisy = torch.where(flip, (y[:n_train] + torch.randint(1, classes, (n_train,), generator=g)) % classes, y[:n_train])
    return TaskData(
        x_train=x[:n_train], y_train=noisy, y_train_clean=y[:n_train],
        x_val=x[n_train:n_train + 60], y_val=y[n_train:n_train + 60],
        x_test=x[n_train + 60:], y_test=y[n_train + 60:],
        num_classes=classes, input_shape=shape,
    )


def _task(arch: str, *, epochs: int = 3, batch_size: int = 32, seed: int = 5, lr: float = 0.1, **budget: object) -> Task:
    return Task(dataset="synthetic", arch=arch, budget=Budget(epochs=epochs, batch_size=batch_size, lr=lr, **budget),
                seed=seed)


def _assert_same_run(pop: EvalRecord, ref: EvalRecord, tol: float = 1e-9) -> None:
    """Same outcome, same accuracies and curve, same epoch counts; losses equal within ``tol``."""
    assert (pop.family, pop.params, pop.status) == (ref.family, ref.params, ref.status), (pop.error, ref.error)
    assert pop.trainer == "population"
    for name in ("val_acc_last", "val_acc_best", "test_acc_last", "test_acc_best", "best_epoch", "epochs_run"):
        a, b = getattr(pop, name), getattr(ref, name)
        assert a == b or (math.isnan(a) and math.isnan(b)), (name, a, b)
    assert pop.curve_val == ref.curve_val
    assert pop.extra["steps"] == ref.extra["steps"]
    assert math.isclose(pop.train_loss_last, ref.train_loss_last, rel_tol=tol, abs_tol=tol) or (
        math.isnan(pop.train_loss_last) and math.isnan(ref.train_loss_last)
    )


@pytest.mark.parametrize(
    ("arch", "shape"), [("mlp2", (1, 8, 8)), ("cnn1d", (1, 24)), ("mlp3", (10,)), ("cnn4", (1, 6, 6))]
)
def test_population_equals_standard_member_by_member(arch: str, shape: tuple[int, ...]) -> None:
    data, task = _task_data(shape), _task(arch)
    ref = StandardTrainer().fit(task, MIXED, data=data)
    pop = PopulationTrainer().fit(task, MIXED, data=data)
    assert len(pop) == len(MIXED)
    for p, r in zip(pop, ref):
        _assert_same_run(p, r)
        assert p.extra["population_size"] == 4 and p.extra["member_seed"] == task.seed
        assert p.extra["population_backend"] == ("stacked-manual" if arch.startswith("mlp") else "stacked-autograd")
    assert len({tuple(r.curve_val) for r in ref}) > 1  # the losses do train differently


def test_adam_weight_decay_clipping_cosine_max_steps_eval_every_match_standard() -> None:
    data = _task_data((12,))
    task = _task("mlp2", epochs=4, batch_size=16, optimizer="adam", lr=3e-3, weight_decay=1e-3,
                 grad_clip=0.5, schedule="cosine")
    options = {"max_steps": 27, "eval_every": 2}  # 10 steps per epoch: the cap ends epoch 2 early
    ref = StandardTrainer(**options).fit(task, MIXED, data=data)
    pop = PopulationTrainer(**options).fit(task, MIXED, data=data)
    for p, r in zip(pop, ref):
        _assert_same_run(p, r)
        assert p.epochs_run == 3 and p.extra["steps"] == 27 and p.extra["eval_epochs"] == [1, 2]
    sgd = _task("mlp2", epochs=2, weight_decay=5e-3, grad_clip=0.1, momentum=0.5)
    for p, r in zip(PopulationTrainer().fit(sgd, MIXED, data=data), StandardTrainer().fit(sgd, MIXED, data=data)):
        _assert_same_run(p, r)


@pytest.mark.parametrize("options", [{"backward": "autograd"}, {"loss_grouping": "member"}])
def test_backward_and_grouping_choices_give_the_same_records(options: dict) -> None:
    data, task = _task_data((1, 8, 8)), _task("mlp2", epochs=2)
    base = PopulationTrainer().fit(task, MIXED, data=data)
    other = PopulationTrainer(**options).fit(task, MIXED, data=data)
    for a, b in zip(other, base):
        _assert_same_run(a, b, tol=1e-12)
    if "backward" in options:
        assert other[0].extra["population_backend"] == "stacked-autograd"


BATCH_FAMILY = [LossSpec("relative_gce", {"q": q, "a": a}) for q, a in ((0.5, 1.0), (1.2, 0.6), (0.0, 1.0))] + \
    [LossSpec("gce", {"q": 0.5})]


@pytest.mark.parametrize("grouping", ["family", "member"])
def test_a_batch_family_keeps_each_members_statistic_to_its_own_batch(grouping: str) -> None:
    """``relative_gce`` reads its batch's mean weight: grouped ([g, B, C]) or member by member, each
    member's records equal one network trained alone (150 rows, batch 32: a short last batch)."""
    data, task = _task_data((1, 8, 8), n_train=150), _task("mlp2", epochs=3)
    ref = StandardTrainer().fit(task, BATCH_FAMILY, data=data)
    for p, r in zip(PopulationTrainer(loss_grouping=grouping).fit(task, BATCH_FAMILY, data=data), ref):
        _assert_same_run(p, r)
    assert len({r.train_loss_last for r in ref}) == len(ref)


def test_float32_runs_match_standard_within_rounding() -> None:
    """The production dtype: accumulation order differs (see the module docstring), so compare with a
    tolerance — at most one validation row flips per epoch and the losses agree to 1e-4."""
    torch.set_default_dtype(torch.float32)
    data64 = _task_data((1, 8, 8))
    data = TaskData(**{k: (v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
                       for k, v in vars(data64).items()})
    task = _task("mlp2", epochs=3)
    ref = StandardTrainer().fit(task, MIXED, data=data)
    pop = PopulationTrainer().fit(task, MIXED, data=data)
    for p, r in zip(pop, ref):
        assert p.status == r.status == "ok" and p.epochs_run == r.epochs_run
        assert max(abs(a - b) for a, b in zip(p.curve_val, r.curve_val)) <= 1 / len(data.y_val) + 1e-12
        assert math.isclose(p.train_loss_last, r.train_loss_last, rel_tol=1e-4)


def test_an_error_outside_the_losses_fails_every_member(monkeypatch: pytest.MonkeyPatch) -> None:
    from evoloss.workers.population.stack import StackedNet

    calls = {"n": 0}
    original = StackedNet.train_step_grads

    def breaks_on_third_step(self: StackedNet, *args: object) -> object:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("out of memory")
        return original(self, *args)

    monkeypatch.setattr(StackedNet, "train_step_grads", breaks_on_third_step)
    records = PopulationTrainer().fit(_task("mlp2", epochs=2), MIXED[:2], data=_task_data((1, 8, 8)))
    for r in records:
        assert (r.status, r.error, r.extra["steps"], r.epochs_run) == ("failed", "RuntimeError: out of memory", 2, 0)


def test_population_of_one() -> None:
    data, task = _task_data((1, 8, 8)), _task("mlp2", epochs=2)
    (pop,) = PopulationTrainer().fit(task, [LossSpec("gce", {"q": 0.5})], data=data)
    (ref,) = StandardTrainer().fit(task, [LossSpec("gce", {"q": 0.5})], data=data)
    _assert_same_run(pop, ref)
    assert PopulationTrainer().fit(task, [], data=data) == []


# --- per-member divergence and failure -----------------------------------------------------------------


@pytest.fixture()
def raising_family() -> Iterator[str]:
    """``_test_population_raise``: cross entropy that raises when its ``switch`` parameter exceeds 0.5."""
    name = "_test_population_raise"

    def raise_when_switched(logits: torch.Tensor, targets: torch.Tensor, switch: float = 0.0) -> torch.Tensor:
        if float(torch.as_tensor(switch).max()) > 0.5:
            raise RuntimeError("switched on")
        return F.cross_entropy(logits, targets, reduction="none")

    register_family(name, [Param("switch", default=0.0, low=0.0, high=1.0)])(raise_when_switched)
    yield name
    unregister_family(name)


@pytest.mark.parametrize("limit", [0.0, 3.0])  # NaN from the first step; NaN once the logits grow (later epoch)
def test_one_member_diverges_the_others_are_untouched(nan_family: str, limit: float) -> None:
    data, task = _task_data((1, 8, 8)), _task("mlp2", epochs=4, lr=0.05)
    specs = MIXED[:2] + [LossSpec(nan_family, {"limit": limit})] + MIXED[2:]
    with_nan = PopulationTrainer().fit(task, specs, data=data)
    without = PopulationTrainer().fit(task, MIXED, data=data)
    (ref_nan,) = StandardTrainer().fit(task, [specs[2]], data=data)
    assert with_nan[2].status == "diverged" and "non-finite training loss (nan)" in with_nan[2].error
    _assert_same_run(with_nan[2], ref_nan)
    assert with_nan[2].error == ref_nan.error
    assert (with_nan[2].epochs_run == 0) == (limit == 0.0)
    for a, b in zip(with_nan[:2] + with_nan[3:], without):  # bit for bit: nothing mixes members
        assert a.status == "ok"
        assert (a.curve_val, a.train_loss_last, a.test_acc_best) == (b.curve_val, b.train_loss_last, b.test_acc_best)


def test_nonfinite_weights_diverge_with_the_parameter_name() -> None:
    data = _task_data((1, 8, 8))
    task = _task("mlp2", epochs=2, lr=1e308, momentum=0.0)  # one step: finite loss, then weights overflow
    specs = [LossSpec("ce"), LossSpec("sce", {"alpha": 20.0, "beta": 20.0})]
    ref = StandardTrainer(max_steps=1).fit(task, specs, data=data)
    pop = PopulationTrainer(max_steps=1).fit(task, specs, data=data)
    assert [r.status for r in pop] == [r.status for r in ref] == ["ok", "diverged"]
    assert pop[1].error == ref[1].error == "non-finite weights (1.weight) after epoch 0"
    assert pop[1].epochs_run == 0 and pop[1].curve_val == [] and pop[1].extra["steps"] == 1


def test_a_raising_loss_fails_only_its_member(raising_family: str) -> None:
    data, task = _task_data((1, 8, 8)), _task("mlp2", epochs=2)
    specs = [MIXED[0], LossSpec(raising_family, {"switch": 1.0}), LossSpec(raising_family, {"switch": 0.0})]
    pop = PopulationTrainer().fit(task, specs, data=data)
    ref = StandardTrainer().fit(task, specs, data=data)
    assert pop[1].status == ref[1].status == "failed"
    assert "RuntimeError: switched on" in pop[1].error and pop[1].extra["steps"] == 0
    _assert_same_run(pop[0], ref[0])
    _assert_same_run(pop[2], ref[2])


# --- seeds, fallback, registration, bad input ------------------------------------------------------------
def test_member_seeds_initialise_each_member() -> None:
    data, task = _task_data((1, 8, 8)), _task("mlp2", epochs=2)
    specs = [MIXED[0], MIXED[0], MIXED[1]]
    seeded = PopulationTrainer(member_seeds=[5, 9, 9]).fit(task, specs, data=data)
    default = PopulationTrainer().fit(task, specs, data=data)
    alone = PopulationTrainer(member_seeds=[9]).fit(task, specs[1:2], data=data)
    _assert_same_run(seeded[0], default[0], tol=0.0)  # seed 5 is the task seed: the standard init
    _assert_same_run(seeded[1], alone[0], tol=0.0)
    assert seeded[1].extra["member_seed"] == 9
    assert seeded[1].curve_val != seeded[0].curve_val or seeded[1].train_loss_last != seeded[0].train_loss_last
    with pytest.raises(ValueError, match="member_seeds has 2 entries for 3 specs"):
        PopulationTrainer(member_seeds=[1, 2]).fit(task, specs, data=data)
    with pytest.raises(ValueError, match="non-negative ints"):
        PopulationTrainer(member_seeds=[1, -2])
    with pytest.raises(TypeError, match="must hold ints"):
        PopulationTrainer(member_seeds=[1, 2.0])  # type: ignore[list-item]


def test_unstackable_architecture_falls_back_to_standard() -> None:
    data, task = _task_data((3, 4, 4), n_train=24), _task("resnet32", epochs=1, batch_size=12)
    specs = MIXED[:2]
    pop = PopulationTrainer(max_steps=2).fit(task, specs, data=data)
    ref = StandardTrainer(max_steps=2).fit(task, specs, data=data)
    for p, r in zip(pop, ref):
        _assert_same_run(p, r, tol=0.0)
        assert p.extra["population_backend"] == "standard" and "own forward" in p.extra["population_fallback_reason"]
    with pytest.raises(ValueError, match="cannot be stacked"):
        PopulationTrainer(member_seeds=[1, 2], max_steps=2).fit(task, specs, data=data)


def test_registered_and_rejects_bad_input() -> None:
    assert "population" in list_trainers()
    trainer = create_trainer("population", eval_every=2, max_steps=3, eval_batch_size=EVAL_BATCH_SIZE)
    assert isinstance(trainer, PopulationTrainer)
    data = _task_data((1, 8, 8))
    with pytest.raises(ValueError, match="unknown architecture"):
        PopulationTrainer().fit(_task("mlp9"), MIXED, data=data)
    with pytest.raises(ValueError, match="unknown loss family"):
        PopulationTrainer().fit(_task("mlp2"), [LossSpec("gcee")], data=data)
    with pytest.raises(ValueError, match="outside its valid range"):
        PopulationTrainer().fit(_task("mlp2"), [LossSpec("gce", {"q": 2.0})], data=data)
    with pytest.raises(TypeError, match="float parameters only"):
        PopulationTrainer().fit(_task("mlp2"), [LossSpec("gce", {"q": torch.tensor(0.5)})], data=data)
    with pytest.raises(TypeError, match="sequence of LossSpec"):
        PopulationTrainer().fit(_task("mlp2"), LossSpec("ce"), data=data)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no hand-written backward"):
        PopulationTrainer(backward="manual").fit(_task("cnn4"), MIXED, data=_task_data((1, 6, 6)))
    with pytest.raises(ValueError, match="backward='fast'"):
        PopulationTrainer(backward="fast")
    with pytest.raises(ValueError, match="loss_grouping"):
        PopulationTrainer(loss_grouping="batch")
    with pytest.raises(ValueError, match="eval_every"):
        PopulationTrainer(eval_every=0)
