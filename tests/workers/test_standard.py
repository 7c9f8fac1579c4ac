"""The `standard` trainer: learns clean digits, shows CE's memorisation under 80% symmetric noise,
matches an independent hand-written training loop, turns NaN losses into `diverged` records and
exceptions into `failed` ones, is deterministic, and rejects bad input before training."""
from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evoloss.losses import LossSpec, Param, list_losses, register_family
from evoloss.workers.archs import create_arch
from evoloss.workers.protocol import batches
from evoloss.workers.standard import StandardTrainer
from evoloss.workers.task import Budget, Task, TaskData
from evoloss.workers.trainer import Trainer, create_trainer

# --- test-only loss families (names prefixed `_test_` so contract suites can skip them) ----------
# Registered by a fixture at run time, after collection, so suites parametrised over list_losses()
# at import time never see them.
_CALLS = {"nan": 0, "raise": 0}


def _test_nan_after(logits: torch.Tensor, targets: torch.Tensor, steps: float) -> torch.Tensor:
    """Cross entropy for ``steps`` calls, NaN afterwards (counts calls across the test session)."""
    _CALLS["nan"] += 1
    ce = F.cross_entropy(logits, targets, reduction="none")
    return ce * math.nan if _CALLS["nan"] > steps else ce


def _test_raise_after(logits: torch.Tensor, targets: torch.Tensor, steps: float) -> torch.Tensor:
    """Cross entropy for ``steps`` calls, then a RuntimeError."""
    _CALLS["raise"] += 1
    if _CALLS["raise"] > steps:
        raise RuntimeError("test family exploded on purpose")
    return F.cross_entropy(logits, targets, reduction="none")


def _register_test_families() -> None:
    if "_test_nan_after" in list_losses():
        return
    steps = [Param("steps", default=3.0, low=0.0, high=1e9)]
    register_family("_test_nan_after", steps, searchable=False)(_test_nan_after)
    register_family("_test_raise_after", steps, searchable=False)(_test_raise_after)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", autouse=True)
def _load_digits_once() -> None:
    """One-off per-process costs outside the timed tests: importing scikit-learn and loading digits,
    and the first `torch.optim` optimiser (it imports torch._dynamo: seconds on a busy machine)."""
    _register_test_families()
    digits(0.0)
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)


# --- data: sklearn digits, a seeded split and seeded exact-rate symmetric noise ------------------
@functools.lru_cache(maxsize=None)
def digits(noise: float = 0.0, seed: int = 0, n_train: int | None = None, noisy_val: int = 0) -> TaskData:
    """Digits (8×8, 10 classes) split 360 val / 360 test / rest train; ``noise`` of the training labels
    flipped to a uniformly chosen *other* class (exact rate, APL convention)."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    x, y = x[order] / 16.0, y[order]
    x_val, y_val, x_test, y_test = x[:360], y[:360], x[360:720], y[360:720]
    x_tr, y_tr = x[720:], y[720:]
    if n_train is not None:
        x_tr, y_tr = x_tr[:n_train], y_tr[:n_train]
    flips = rng.choice(len(y_tr), size=int(round(noise * len(y_tr))), replace=False)
    y_noisy = y_tr.copy()
    y_noisy[flips] = (y_tr[flips] + rng.integers(1, 10, size=len(flips))) % 10
    img = lambda a: torch.tensor(a, dtype=torch.float32).reshape(-1, 1, 8, 8)  # noqa: E731
    lab = lambda a: torch.tensor(a, dtype=torch.int64)  # noqa: E731
    extra = {}
    if noisy_val:
        extra = {"x_noisy_val": img(x_tr[:noisy_val]), "y_noisy_val": lab(y_noisy[:noisy_val])}
        x_tr, y_tr, y_noisy = x_tr[noisy_val:], y_tr[noisy_val:], y_noisy[noisy_val:]
    return TaskData(
        x_train=img(x_tr), y_train=lab(y_noisy), y_train_clean=lab(y_tr), x_val=img(x_val), y_val=lab(y_val),
        x_test=img(x_test), y_test=lab(y_test), num_classes=10, input_shape=(1, 8, 8),
        noise_rate=float(np.mean(y_noisy != y_tr)), **extra,
    )


def _task(arch: str = "mlp2", seed: int = 0, **budget: object) -> Task:
    return Task(dataset="digits", arch=arch, budget=Budget(**budget), seed=seed)  # type: ignore[arg-type]


CE = LossSpec("ce")


def test_registered_and_satisfies_protocol() -> None:
    trainer = create_trainer("standard", eval_every=2)
    assert isinstance(trainer, StandardTrainer) and isinstance(trainer, Trainer)
    assert trainer.name == "standard" and trainer.eval_every == 2


def test_clean_digits_mlp2_learns() -> None:
    data = digits(0.0)
    [rec] = StandardTrainer().fit(_task(epochs=5, lr=0.1), [CE], data=data)
    assert rec.status == "ok" and rec.error == ""
    assert rec.val_acc_last > 0.9 and rec.test_acc_last > 0.85
    assert rec.epochs_run == 5 and len(rec.curve_val) == 5
    assert rec.val_acc_best == max(rec.curve_val) >= rec.val_acc_last
    assert rec.curve_val[rec.best_epoch] == rec.val_acc_best
    assert rec.extra["steps"] == 5 * math.ceil(len(data.y_train) / 64)
    assert math.isfinite(rec.train_loss_last) and rec.train_loss_last < 0.5
    assert (rec.family, rec.params, rec.trainer, rec.device) == ("ce", {}, "standard", "cpu")
    assert math.isnan(rec.noisy_val_acc_best) and rec.wall_s > 0


def test_ce_at_80_percent_symmetric_noise_best_epoch_beats_last_epoch() -> None:
    data = digits(0.8, seed=0)
    assert data.noise_rate == pytest.approx(0.8, abs=1e-3)
    [rec] = StandardTrainer().fit(_task(epochs=30, lr=0.1, batch_size=32), [CE], data=data)
    assert rec.status == "ok"
    assert rec.val_acc_best > 0.45  # the clean signal (20% right, 8.9% per wrong class) is learnable ...
    assert rec.val_acc_last < rec.val_acc_best - 0.15  # ... then CE fits the noise
    assert rec.best_epoch < 15 and rec.test_acc_best > rec.test_acc_last


@pytest.mark.slow
def test_ce_memorises_80_percent_noise_under_the_paper_protocol() -> None:
    """gao-arl §4 protocol (SGD 0.01, momentum 0.9), MLP-3, 200 epochs: the training loss of the noisy
    labels goes to ~0 while the clean accuracy falls far from its peak (measured: 0.49 -> 0.21)."""
    [rec] = StandardTrainer().fit(_task("mlp3", epochs=200, batch_size=32), [CE], data=digits(0.8, seed=0))
    assert rec.train_loss_last < 0.2
    assert rec.val_acc_best > 0.4 and rec.val_acc_last < rec.val_acc_best - 0.15


def _reference_run(data: TaskData, task: Task, optimizer: str, clip: float | None) -> tuple[list[float], float]:
    """An independent loop: init under manual_seed, lr by the cosine formula, clip by hand."""
    b = task.budget
    torch.manual_seed(task.seed)
    model = create_arch(task.arch, data.input_shape, data.num_classes)
    params = list(model.parameters())
    opt: torch.optim.Optimizer
    if optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=b.lr, momentum=0.9, weight_decay=b.weight_decay)
    else:
        opt = torch.optim.Adam(params, lr=b.lr, weight_decay=b.weight_decay)
    curve, losses = [], []
    for epoch in range(b.epochs):
        base_lr = b.lr
        for g in opt.param_groups:
            g["lr"] = 0.5 * base_lr * (1 + math.cos(math.pi * epoch / b.epochs))
        losses = []
        for idx in batches(len(data.y_train), b.batch_size, seed=task.seed, epoch=epoch):
            loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            opt.zero_grad()
            loss.backward()
            if clip is not None:
                norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in params))
                scale = min(1.0, clip / (float(norm) + 1e-6))
                for p in params:
                    p.grad.mul_(scale)
            opt.step()
            losses.append(float(loss.detach()))
        with torch.no_grad():
            curve.append(float((model(data.x_val).argmax(1) == data.y_val).double().mean()))
    return curve, float(np.mean(losses))


@pytest.mark.parametrize(("optimizer", "clip"), [("sgd", None), ("sgd", 0.5), ("adam", None)])
def test_matches_hand_written_loop(optimizer: str, clip: float | None) -> None:
    data = digits(0.4, seed=3, n_train=300)
    lr = 0.01 if optimizer == "sgd" else 1e-3
    task = _task(seed=3, epochs=3, batch_size=50, optimizer=optimizer, lr=lr, schedule="cosine",
                 weight_decay=1e-3, grad_clip=clip)
    [rec] = StandardTrainer().fit(task, [CE], data=data)
    curve, loss = _reference_run(data, task, optimizer, clip)
    assert rec.curve_val == pytest.approx(curve, abs=1 / 360 + 1e-9)  # at most one argmax flip
    assert rec.train_loss_last == pytest.approx(loss, rel=1e-4)


def test_nan_loss_gives_diverged_and_other_specs_still_train() -> None:
    data = digits(0.0, n_train=256)
    steps_per_epoch = math.ceil(256 / 64)
    _CALLS["nan"] = 0
    nan_spec = LossSpec("_test_nan_after", {"steps": 2 * steps_per_epoch + 1})  # NaN in epoch 2
    recs = StandardTrainer().fit(_task(epochs=4, lr=0.1), [CE, nan_spec, CE], data=data)
    assert [r.status for r in recs] == ["ok", "diverged", "ok"]
    bad = recs[1]
    assert "non-finite training loss" in bad.error and "epoch 2" in bad.error
    assert bad.epochs_run == 2 and len(bad.curve_val) == 2 and bad.params == {"steps": 2.0 * steps_per_epoch + 1}
    assert bad.val_acc_best == max(bad.curve_val)
    assert recs[0].to_dict() | {"wall_s": 0} == recs[2].to_dict() | {"wall_s": 0}


def test_exploding_learning_rate_diverges() -> None:
    [rec] = StandardTrainer().fit(_task(epochs=3, lr=1e30), [CE], data=digits(0.0, n_train=128))
    assert rec.status == "diverged" and "non-finite" in rec.error


def test_exception_in_a_run_gives_failed_record() -> None:
    _CALLS["raise"] = 0
    recs = StandardTrainer().fit(_task(epochs=2), [LossSpec("_test_raise_after", {"steps": 5}), CE],
                                 data=digits(0.0, n_train=256))
    assert [r.status for r in recs] == ["failed", "ok"]
    assert recs[0].error == "RuntimeError: test family exploded on purpose"
    assert recs[0].epochs_run == 1 and len(recs[0].curve_val) == 1  # epoch 0 (4 steps) completed


def test_deterministic_and_independent_of_global_rng() -> None:
    full = digits(0.3, n_train=24)  # small val/test too: the 9-layer CNN is costly on one CPU thread
    data = dataclasses.replace(full, x_val=full.x_val[:16], y_val=full.y_val[:16], x_test=full.x_test[:16],
                               y_test=full.y_test[:16])
    task = _task("jocor_cnn", epochs=2, batch_size=8)  # BatchNorm and dropout; 3 steps + 1 step
    trainer = StandardTrainer(max_steps=4)
    torch.manual_seed(1)
    first = trainer.fit(task, [CE], data=data)[0].to_dict()
    torch.manual_seed(2)
    state = torch.get_rng_state()
    second = trainer.fit(task, [CE], data=data)[0].to_dict()
    assert torch.equal(torch.get_rng_state(), state), "fit must not consume the caller's RNG"
    first.pop("wall_s"), second.pop("wall_s")
    assert first == second and first["status"] == "ok"
    assert torch.are_deterministic_algorithms_enabled() is False  # restored after fit


def test_seed_changes_the_run() -> None:
    data = digits(0.3, n_train=200)
    a = StandardTrainer().fit(_task(epochs=2, seed=0), [CE], data=data)[0]
    b = StandardTrainer().fit(_task(epochs=2, seed=1), [CE], data=data)[0]
    assert a.train_loss_last != b.train_loss_last


def test_eval_every_and_max_steps() -> None:
    data = digits(0.0, n_train=256)  # 4 steps per epoch at batch 64
    rec = StandardTrainer(eval_every=2).fit(_task(epochs=5), [CE], data=data)[0]
    assert rec.extra["eval_epochs"] == [1, 3, 4] and len(rec.curve_val) == 3 and rec.epochs_run == 5
    assert rec.best_epoch in (1, 3, 4)
    capped = StandardTrainer(max_steps=6).fit(_task(epochs=5), [CE], data=data)[0]
    assert capped.extra["steps"] == 6 and capped.epochs_run == 2 and len(capped.curve_val) == 2


def test_noisy_validation_split_is_evaluated() -> None:
    data = digits(0.4, n_train=400, noisy_val=100)
    rec = StandardTrainer().fit(_task(epochs=3, lr=0.1), [CE], data=data)[0]
    assert 0.0 <= rec.noisy_val_acc_best <= 1.0
    assert rec.extra["noisy_val_best_epoch"] in (0, 1, 2)
    assert 0.0 <= rec.extra["test_acc_at_noisy_val_best"] <= 1.0


@pytest.mark.parametrize(
    ("task", "specs", "error", "match"),
    [
        (_task("resnet19"), [CE], ValueError, r"unknown architecture 'resnet19'.*Did you mean 'resnet18'"),
        (_task(), [LossSpec("cee")], ValueError, r"unknown loss family 'cee'"),
        (_task(), [LossSpec("_test_nan_after", {"steps": -1.0})], ValueError, "steps"),
        (_task(), [LossSpec("ce", {"q": 0.5})], ValueError, "unknown parameter 'q'"),
        (_task(), CE, TypeError, "sequence of LossSpec"),
        (_task(), ["ce"], TypeError, r"specs\[0\] must be a LossSpec"),
        (_task("cnn1d"), [CE], ValueError, r"architecture 'cnn1d' takes sequences"),
        (_task(epochs=0), [CE], ValueError, r"budget.epochs=0"),
        (_task(schedule="step"), [CE], ValueError, "schedule"),
        (_task(optimizer="rmsprop"), [CE], ValueError, "optimizer"),
        (_task(grad_clip=0.0), [CE], ValueError, "grad_clip"),
    ],
)
def test_bad_input_raises_before_training(task: Task, specs: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        StandardTrainer().fit(task, specs, data=digits(0.0, n_train=64))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "match"),
    [({"eval_every": 0}, "eval_every"), ({"max_steps": 0}, "max_steps"), ({"deterministic": 1}, "deterministic"),
     ({"eval_batch_size": 2.5}, "eval_batch_size")],
)
def test_bad_options(options: dict, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        StandardTrainer(**options)


def test_record_is_json_serialisable() -> None:
    import json

    rec = StandardTrainer().fit(_task(epochs=1), [LossSpec("_test_nan_after", {"steps": 1e9})],
                                data=digits(0.0, n_train=64))[0]
    back = json.loads(json.dumps(dataclasses.asdict(rec)))
    assert back["params"] == {"steps": 1e9} and back["status"] == "ok"


def test_materialises_the_task_when_no_data_is_given() -> None:
    from evoloss.workers.materialize import materialize
    from evoloss.workers.task import NoiseSpec

    task = Task("digits", "mlp2", noise=NoiseSpec("symmetric", 0.4, "exact"), budget=Budget(epochs=2), seed=4)
    trainer = StandardTrainer(max_steps=8)
    own = trainer.fit(task, [CE])[0].to_dict()
    given = trainer.fit(task, [CE], data=materialize(task))[0].to_dict()
    own.pop("wall_s"), given.pop("wall_s")
    assert own == given and own["status"] == "ok" and own["extra"]["steps"] == 8


def test_labels_outside_the_classes_are_rejected() -> None:
    data = digits(0.0, n_train=64)
    bad = dataclasses.replace(data, y_val=data.y_val.clone().fill_(10))
    with pytest.raises(ValueError, match=r"TaskData.y_val has labels in \[10, 10\]"):
        StandardTrainer().fit(_task(), [CE], data=bad)


def test_deterministic_mode_sets_and_restores_cuda_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA branch without a GPU: the global setter is recorded instead of called (its first
    call imports torch._inductor, seconds)."""
    from evoloss.workers.standard import deterministic_mode

    calls: list[tuple[bool, bool]] = []
    def record(mode: bool, warn_only: bool = False) -> None:
        calls.append((mode, warn_only))

    monkeypatch.setattr(torch, "use_deterministic_algorithms", record)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    with deterministic_mode(True, torch.device("cpu")):
        assert calls == []
    with deterministic_mode(True, torch.device("cuda:0")):
        assert calls == [(True, True)]
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert calls[-1] == (False, False) and torch.backends.cudnn.benchmark
    with deterministic_mode(False, torch.device("cuda:0")):
        assert len(calls) == 2
