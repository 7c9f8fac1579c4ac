"""Evaluation helpers shared by all trainers: accuracy, divergence checks, best-epoch bookkeeping and
record assembly, each against values computed by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import torch.nn.functional as F

from evoloss.losses import LossSpec, Param, list_losses, register_family
from evoloss.workers.evaluation import (
    EpochMetrics,
    EvalSplits,
    RunHistory,
    accuracy,
    divergence_reason,
    evaluate_splits,
    failed_record,
    nonfinite_state,
    record_params,
)
from evoloss.workers.task import TaskData


def _linear(seed: int = 0) -> tuple[nn.Linear, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    model = nn.Linear(5, 4)
    with torch.no_grad():
        model.weight.copy_(torch.randn(4, 5, generator=g))
        model.bias.copy_(torch.randn(4, generator=g))
    x = torch.randn(37, 5, generator=g)
    y = torch.randint(0, 4, (37,), generator=g)
    return model, x, y


def test_accuracy_matches_numpy_in_any_batch_size() -> None:
    model, x, y = _linear()
    w, b = model.weight.detach().double().numpy(), model.bias.detach().double().numpy()
    expected = float(np.mean((x.double().numpy() @ w.T + b).argmax(1) == y.numpy()))
    for batch_size in (1, 5, 36, 37, 1000):
        assert accuracy(model, x, y, batch_size=batch_size) == pytest.approx(expected, abs=1e-12)
    assert math.isnan(accuracy(model, x[:0], y[:0]))


def test_accuracy_uses_eval_mode_and_restores_it() -> None:
    model = nn.Sequential(nn.Dropout(p=0.9), nn.Linear(3, 2))
    x = torch.ones(50, 3)
    with torch.no_grad():
        expected = float((model[1](x).argmax(1) == 0).double().mean())  # dropout off
    model.train()
    assert accuracy(model, x, torch.zeros(50, dtype=torch.int64)) == expected
    assert model.training
    model.eval()
    accuracy(model, x, torch.zeros(50, dtype=torch.int64))
    assert not model.training


def _data(noisy_rows: int | None) -> TaskData:
    model, x, y = _linear(1)
    kw = {} if noisy_rows is None else {"x_noisy_val": x[:noisy_rows], "y_noisy_val": (y[:noisy_rows] + 1) % 4}
    return TaskData(x_train=x, y_train=y, y_train_clean=y, x_val=x[:20], y_val=y[:20], x_test=x[20:],
                    y_test=y[20:], num_classes=4, input_shape=(5,), **kw)


def test_evaluate_splits_with_and_without_noisy_val() -> None:
    model, _, _ = _linear(1)
    data = _data(noisy_rows=10)
    m = evaluate_splits(model, EvalSplits.from_task_data(data, "cpu"), batch_size=7)
    assert m.val == accuracy(model, data.x_val, data.y_val)
    assert m.test == accuracy(model, data.x_test, data.y_test)
    assert m.noisy_val == accuracy(model, data.x_noisy_val, data.y_noisy_val)
    for rows in (None, 0):  # absent or empty noisy val -> NaN
        splits = EvalSplits.from_task_data(_data(rows), "cpu")
        assert splits.x_noisy_val is None and math.isnan(evaluate_splits(model, splits).noisy_val)


def test_nonfinite_state_finds_parameters_and_buffers() -> None:
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    assert nonfinite_state(model) is None
    with torch.no_grad():
        model[1].running_var[1] = math.inf
    assert nonfinite_state(model) == "1.running_var"
    with torch.no_grad():
        model[0].bias[0] = math.nan
    assert nonfinite_state(model) == "0.bias"


def test_divergence_reason() -> None:
    model = nn.Linear(2, 2)
    assert divergence_reason(torch.tensor(3.5), model, 0) is None
    assert "non-finite training loss (nan) in epoch 4" == divergence_reason(torch.tensor(math.nan), model, 4)
    assert "inf" in divergence_reason(math.inf, model, 1)  # type: ignore[operator]
    with torch.no_grad():
        model.weight[0, 0] = -math.inf
    assert divergence_reason(1.0, model, 2) == "non-finite weights (weight) after epoch 2"


def _history(val: list[float], test: list[float], noisy: list[float] | None = None) -> RunHistory:
    h = RunHistory()
    noisy = noisy or [math.nan] * len(val)
    for epoch, (v, t, n) in enumerate(zip(val, test, noisy)):
        h.add_eval(epoch, EpochMetrics(val=v, test=t, noisy_val=n))
    h.epochs_run, h.steps, h.train_loss_last = len(val), 10 * len(val), 0.25
    return h


def test_best_epoch_is_earliest_highest_val_and_test_is_taken_there() -> None:
    h = _history(val=[0.5, 0.7, 0.7, 0.6], test=[0.4, 0.65, 0.9, 0.8], noisy=[0.3, 0.2, 0.35, 0.1])
    rec = h.to_record(LossSpec("ce"), trainer="standard", device="cpu", wall_s=1.5)
    assert (rec.best_epoch, rec.val_acc_best, rec.test_acc_best) == (1, 0.7, 0.65)
    assert (rec.val_acc_last, rec.test_acc_last, rec.noisy_val_acc_best) == (0.6, 0.8, 0.35)
    assert rec.test_acc_noisy == 0.9  # gao-arl Table 3: test accuracy at the best noisy-val epoch (2)
    assert rec.extra == {"steps": 40, "noisy_val_best_epoch": 2, "test_acc_at_noisy_val_best": 0.9}
    assert rec.curve_val == [0.5, 0.7, 0.7, 0.6] and rec.epochs_run == 4 and rec.train_loss_last == 0.25
    assert (rec.status, rec.error, rec.wall_s, rec.trainer) == ("ok", "", 1.5, "standard")


def test_nan_val_is_never_best_and_empty_history_gives_nan() -> None:
    h = _history(val=[math.nan, 0.2, math.nan], test=[0.9, 0.1, 0.5])
    assert h.best_index() == 1
    rec = RunHistory().to_record(LossSpec("ce"), trainer="t", device="cpu", wall_s=0.0)
    assert rec.best_epoch == -1 and math.isnan(rec.val_acc_best) and math.isnan(rec.test_acc_last)
    assert math.isnan(h.to_record(LossSpec("ce"), trainer="t", device="cpu", wall_s=0.0).test_acc_noisy)  # no noisy split
    assert rec.curve_val == [] and rec.extra == {"steps": 0}


def test_sparse_eval_epochs_are_recorded() -> None:
    h = RunHistory()
    for epoch in (1, 3, 4):
        h.add_eval(epoch, EpochMetrics(val=epoch / 10, test=0.0))
    rec = h.to_record(LossSpec("ce"), trainer="t", device="cpu", wall_s=0.0)
    assert rec.extra["eval_epochs"] == [1, 3, 4] and rec.best_epoch == 4


def test_failed_record_keeps_completed_epochs() -> None:
    h = _history(val=[0.3], test=[0.2])
    rec = failed_record(LossSpec("ce"), KeyError("x"), trainer="standard", device="cpu", wall_s=0.5, history=h)
    assert (rec.status, rec.error, rec.epochs_run, rec.val_acc_best) == ("failed", "KeyError: 'x'", 1, 0.3)
    assert failed_record(LossSpec("ce"), "boom", trainer="s", device="cpu", wall_s=0.0).error == "boom"


def _test_scaled_ce(logits: torch.Tensor, targets: torch.Tensor, scale: float | torch.Tensor) -> torch.Tensor:
    """Test-only family: scale · cross entropy (scale may be per-sample)."""
    return scale * F.cross_entropy(logits, targets, reduction="none")


def test_record_params_fill_defaults_and_are_plain_python() -> None:
    # registered at run time (after collection) so suites parametrised over list_losses() skip it
    if "_test_scaled_ce" not in list_losses():
        register_family("_test_scaled_ce", [Param("scale", default=2.0, low=0.0, high=10.0)],
                        searchable=False)(_test_scaled_ce)
    assert record_params(LossSpec("ce")) == {}
    assert record_params(LossSpec("_test_scaled_ce")) == {"scale": 2.0}
    per_sample = record_params(LossSpec("_test_scaled_ce", {"scale": torch.tensor([1.0, 3.0])}))
    assert per_sample == {"scale": [1.0, 3.0]} and isinstance(per_sample["scale"], list)
