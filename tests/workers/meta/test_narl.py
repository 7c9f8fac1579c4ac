"""NARL-Adjuster (ding Eqs. 8–13): margin, adjuster formula and export, meta-gradient vs central
differences, meta-train with snapshots, meta-test without a meta set, multi-task grid."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from evoloss.losses import LossSpec, Param, register_family
from tests.workers.meta.conftest import (
    central_difference, directional_difference, oracle_step_meta_loss, tiny_batches, tiny_mlp, tiny_task,
    tiny_task_data,
)
from evoloss.workers.meta.method import Batch
from evoloss.workers.meta.narl import NARL_TRAINERS, NarlLoss, NarlTrainer
from evoloss.workers.meta.narl_adjuster import Adjuster, adjuster_from_dict, adjuster_to_dict, logit_margin, output_ranges
from evoloss.workers.trainer import create_trainer, list_trainers


@register_family("_test_narl_nan", [Param("q", 0.5, low=0.0, high=1.0)])
def _nan_loss(logits, targets, q):
    return F.cross_entropy(logits, targets, reduction="none") * float("nan") * q


def margin_formula(logits, y):
    out = []
    for row, label in zip(logits.tolist(), y.tolist()):
        out.append(row[label] - max(v for j, v in enumerate(row) if j != label))
    return torch.tensor(out, dtype=logits.dtype)


def adjuster_formula(m, flat, offsets, scales, hidden=100):
    """Λ = offset + s·σ(W2 ReLU(W1 m + b1) + b2), from the flat parameter vector (w1, b1, w2, b2)."""
    p = len(offsets)
    w1, b1 = flat[:hidden], flat[hidden: 2 * hidden]
    w2 = flat[2 * hidden: 2 * hidden + p * hidden].reshape(p, hidden)
    b2 = flat[2 * hidden + p * hidden:]
    h = torch.relu(m[:, None] * w1[None, :] + b1[None, :])
    return torch.tensor(offsets, dtype=m.dtype) + torch.tensor(scales, dtype=m.dtype) * torch.sigmoid(h @ w2.T + b2)


def gce_formula(logits, y, q):
    p_y = logits.softmax(1)[torch.arange(len(y)), y]
    return ((1 - p_y**q) / q).mean()


def poly_formula(logits, y, lam, d):
    ce = -logits.log_softmax(1)[torch.arange(len(y)), y]
    inner = torch.where(ce < lam, 1 - ce / lam, torch.zeros_like(ce))
    return ((d - 1) * lam / d * (1 - inner ** (d / (d - 1)))).mean()


def test_logit_margin_matches_its_definition():
    logits = torch.tensor([[2.0, 1.0, -1.0], [0.0, 3.0, 1.0], [5.0, 5.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1])
    torch.testing.assert_close(logit_margin(logits, y), margin_formula(logits, y))


@pytest.mark.parametrize("family,formula", [("gce", "gce"), ("polysoft", "poly")])
def test_meta_gradient_matches_central_difference(family, formula):
    model = tiny_mlp(0)
    x, y, xm, ym = tiny_batches(1)
    learned = NARL_TRAINERS[f"narl-{family}"][1]
    method = NarlLoss(LossSpec(family), learned)
    method.init_meta_parameters(7, torch.float64, "cpu")
    got = method.meta_gradient(model, Batch(x, y, torch.arange(len(y))), xm, ym, 0.5)
    got_flat = torch.cat([g.reshape(-1) for g in got.grads])
    theta = torch.cat([p.detach().reshape(-1) for p in method.adjuster.parameters()])
    offsets = [method.offsets[n] for n in learned]
    scales = [method.scales[n] for n in learned]

    def meta_loss(flat):
        def train_loss(twin):
            logits = twin(x)
            lam = adjuster_formula(margin_formula(logits.detach(), y), flat, offsets, scales)
            if formula == "gce":
                return gce_formula(logits, y, lam[:, 0])
            return poly_formula(logits, y, lam[:, 0], lam[:, 1])
        return oracle_step_meta_loss(model, train_loss, xm, ym, 0.5)

    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        v = torch.randn(theta.shape, generator=g, dtype=torch.float64)
        assert float(got_flat @ v) == pytest.approx(directional_difference(meta_loss, theta, v), rel=1e-6, abs=1e-10)
    k = len(learned)
    fd = central_difference(lambda b2: meta_loss(torch.cat([theta[:-k], b2])), theta[-k:])
    torch.testing.assert_close(got_flat[-k:], fd, rtol=1e-6, atol=1e-10)
    assert float(fd.abs().max()) > 1e-8


def test_adjuster_outputs_stay_in_range_and_start_at_the_spec_values():
    offsets, scales = output_ranges("polysoft", ("lam", "d"))
    assert offsets["d"] > 1.0 and scales["lam"] == 10.0
    adjuster = Adjuster("polysoft", ("lam", "d"), offsets, scales, seed=0).double()
    adjuster.start_at({"lam": 2.3, "d": 2.0})
    at_zero = adjuster.hyperparameters(torch.zeros(1, dtype=torch.float64))
    assert float(at_zero["lam"].detach()) == pytest.approx(2.3) and float(at_zero["d"].detach()) == pytest.approx(2.0)
    values = adjuster(torch.tensor([-1e6, 0.0, 1e6], dtype=torch.float64))
    assert bool((values[:, 1] > 1.0).all()) and bool((values[:, 0] > 0).all())
    with pytest.raises(ValueError, match="scale"):
        output_ranges("gce", ("q",), {"q": 5.0})


def test_adjuster_dict_round_trip_is_json_and_exact():
    offsets, scales = output_ranges("js", ("pi1",))
    adjuster = Adjuster("js", ("pi1",), offsets, scales, seed=3)
    data = json.loads(json.dumps(adjuster_to_dict(adjuster)))
    assert data["format"] == "evoloss-narl-adjuster" and data["input"] == "logit_margin"
    rebuilt = adjuster_from_dict(data)
    m = torch.linspace(-4, 4, 9)
    torch.testing.assert_close(rebuilt(m), adjuster(m))


@pytest.mark.parametrize("field,value,match", [
    ("format", "pickle", "not an adjuster"),
    ("format_version", 2, "format_version"),
    ("w2", [[0.0]], "'w2'"),
    ("b1", "x", "'b1'"),
    ("param_names", ["nope"], "param_names"),
    ("scales", {"other": 1.0}, "'scales'"),
])
def test_adjuster_from_dict_rejects_bad_fields(field, value, match):
    offsets, scales = output_ranges("gce", ("q",))
    data = adjuster_to_dict(Adjuster("gce", ("q",), offsets, scales))
    data[field] = value
    with pytest.raises(ValueError, match=match):
        adjuster_from_dict(data)


def test_meta_train_records_snapshots_and_meta_test_uses_them(tmp_path):
    task, data = tiny_task(epochs=3), tiny_task_data()
    (trained,) = create_trainer("narl-gce", meta_every=2, meta_lr=1e-2).fit(task, [], data=data)
    assert trained.status == "ok", trained.error
    assert trained.trainer == "narl-gce" and trained.extra["mode"] == "meta-train"
    assert trained.extra["meta_steps"] == 5 and trained.extra["steps"] == 9  # steps 0, 2, 4, 6, 8
    snapshots = trained.extra["adjuster_snapshots"]
    assert len(snapshots) == 3 and trained.extra["snapshot_rounds"] == [3, 6, 9]
    assert snapshots[0]["b2"] != snapshots[2]["b2"]  # the adjuster learned between snapshots
    curve = trained.extra["per_epoch"]["lambda_curve"]
    assert len(curve) == 3 and all(0 < q <= 1 for q in curve[-1]["q"])
    path = tmp_path / "adjuster.json"
    path.write_text(json.dumps(snapshots))
    no_meta = tiny_task_data(seed=5, n_meta=0)
    (tested,) = create_trainer("narl-gce", adjuster=str(path)).fit(tiny_task(seed=5, epochs=3), [], data=no_meta)
    assert tested.status == "ok", tested.error
    assert tested.extra["mode"] == "meta-test" and tested.extra["meta_steps"] == 0
    curves = tested.extra["per_epoch"]["lambda_curve"]  # epoch k ran with snapshot k
    reader = NarlLoss(LossSpec("gce"), ("q",))
    for k in range(3):
        assert curves[k]["q"] == pytest.approx(reader.lambda_curve(adjuster_from_dict(snapshots[k]))["q"])


def test_multi_task_meta_train_shares_one_adjuster_and_is_deterministic():
    trainer = NarlTrainer(name="narl-gce", family="gce", learned=("q",), meta_every=2)
    tasks = [tiny_task(seed=0), tiny_task(seed=1)]
    datas = [tiny_task_data(0), tiny_task_data(1)]
    a = trainer.meta_train(tasks, datas=datas)
    b = trainer.meta_train(tasks, datas=datas)
    assert [r.status for r in a.records] == ["ok", "ok"]
    assert a.snapshots == b.snapshots and len(a.snapshots) == 3
    assert a.records[0].extra["task_grid"] == [t.key() for t in tasks]
    assert a.records[0].extra["adjuster_snapshots"] is a.records[1].extra["adjuster_snapshots"]
    assert [r.extra["meta_steps"] for r in a.records] == [3, 3]
    assert a.records[0].val_acc_last == b.records[0].val_acc_last


def test_nan_loss_is_diverged_and_bad_input_raises():
    trainer = NarlTrainer(name="narl-test", family="_test_narl_nan", learned=("q",))
    (record,) = trainer.fit(tiny_task(), [], data=tiny_task_data())
    assert record.status == "diverged" and "non-finite" in record.error
    with pytest.raises(ValueError, match="meta set"):
        create_trainer("narl-gce").fit(tiny_task(), [], data=tiny_task_data(n_meta=0))
    with pytest.raises(ValueError, match="adjusts the 'gce' loss"):
        create_trainer("narl-gce").fit(tiny_task(), [LossSpec("js")], data=tiny_task_data())
    offsets, scales = output_ranges("js", ("pi1",))
    with pytest.raises(ValueError, match="family 'js'"):
        create_trainer("narl-gce", adjuster=adjuster_to_dict(Adjuster("js", ("pi1",), offsets, scales)))


@pytest.mark.parametrize("name", sorted(NARL_TRAINERS))
def test_every_narl_trainer_is_registered_and_runs(name):
    assert name in list_trainers()
    (record,) = create_trainer(name, max_steps=3, meta_every=1).fit(tiny_task(), [], data=tiny_task_data())
    assert record.status == "ok", record.error
    for param in NARL_TRAINERS[name][1]:
        assert math.isfinite(record.extra["per_epoch"][f"{param}_mean"][0])


def test_stage_adjuster_splits_training_into_equal_thirds():
    offsets, scales = output_ranges("gce", ("q",))
    snaps = [Adjuster("gce", ("q",), offsets, scales, seed=s) for s in range(3)]
    method = NarlLoss(LossSpec("gce"), ("q",), adjusters=snaps)
    assert [snaps.index(method.stage_adjuster(t, 9)) for t in range(9)] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert method.stage_adjuster(20, 9) is snaps[2] and not method.needs_clean_meta
