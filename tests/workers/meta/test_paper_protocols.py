"""``protocol = "paper"``: every table value against the number its paper states, and the wiring."""
from __future__ import annotations

import math

import pytest

import evoloss.workers.meta.adaptive  # noqa: F401  (registration)
import evoloss.workers.meta.dynamic  # noqa: F401
import evoloss.workers.meta.l2b  # noqa: F401
import evoloss.workers.meta.mwnet  # noqa: F401
import evoloss.workers.meta.narl  # noqa: F401
from evoloss.losses import LossSpec
from evoloss.workers.meta.paper_protocols import PAPER_PROTOCOLS, paper_protocol, step_factor
from evoloss.workers.task import Budget
from evoloss.workers.trainer import create_trainer
from tests.workers.meta.conftest import tiny_task, tiny_task_data

# (key, field) -> the number as the paper prints it, with where it says so
CITED = {
    # shu-adaptive-robust-loss §4.1 "Experimental setup" / "Datasets"
    ("adaptive", "optimizer"): "sgd", ("adaptive", "lr"): 0.1, ("adaptive", "momentum"): 0.9,
    ("adaptive", "weight_decay"): 1e-3, ("adaptive", "batch_size"): 100,
    ("adaptive", "milestones"): (40 / 60, 50 / 60), ("adaptive", "gamma"): 0.1,
    ("adaptive", "meta_set_size"): 1000, ("adaptive", "meta_optimizer"): "sgd", ("adaptive", "meta_lr"): None,
    ("adaptive", "warmup_epochs"): 0, ("adaptive", "grad_clip"): None,
    # ding-narl-adjuster §4.1 "Experimental setup" (CIFAR-10)
    ("narl", "optimizer"): "sgd", ("narl", "lr"): 0.1, ("narl", "momentum"): 0.9, ("narl", "weight_decay"): 5e-4,
    ("narl", "batch_size"): 100, ("narl", "milestones"): (80 / 120, 100 / 120), ("narl", "gamma"): 0.1,
    ("narl", "meta_optimizer"): "adam", ("narl", "meta_lr"): 1e-3, ("narl", "meta_weight_decay"): 1e-4,
    ("narl", "meta_set_size"): 1000,
    # zhou-l2b §4.2 "Implementation Details" (CIFAR-10), §4.1 (1,000 clean images)
    ("l2b", "optimizer"): "sgd", ("l2b", "lr"): 0.15, ("l2b", "momentum"): 0.9, ("l2b", "weight_decay"): 5e-4,
    ("l2b", "batch_size"): 512, ("l2b", "schedule"): "cosine", ("l2b", "warmup_epochs"): 10,
    ("l2b", "meta_set_size"): 1000, ("l2b", "lookahead"): "optimizer",
    # jiang-dynamic-loss Table 7 (CIFAR-10 column)
    ("dynamic", "optimizer"): "sgd", ("dynamic", "lr"): 0.1, ("dynamic", "momentum"): 0.9,
    ("dynamic", "weight_decay"): 5e-4, ("dynamic", "batch_size"): 512, ("dynamic", "schedule"): "cosine",
    ("dynamic", "warmup_epochs"): 5, ("dynamic", "meta_optimizer"): "adam", ("dynamic", "meta_lr"): 3e-3,
    ("dynamic", "meta_weight_decay"): 0.0,
    # Meta-Weight-Net as shu §4.1 ran it (its shared set-up)
    ("mwnet", "lr"): 0.1, ("mwnet", "momentum"): 0.9, ("mwnet", "weight_decay"): 1e-3, ("mwnet", "batch_size"): 100,
    ("mwnet", "meta_optimizer"): "adam", ("mwnet", "meta_lr"): 1e-3, ("mwnet", "meta_weight_decay"): 1e-4,
}
CITED_OPTIONS = {
    ("l2b", "warmup_epochs"): 10,  # zhou §4.2
    ("dynamic", "warmup_epochs"): 5, ("dynamic", "rank_bins"): 100,  # jiang Table 7 (CIFAR-10)
    ("dynamic", "primary_fraction"): 0.5, ("dynamic", "meta_fraction"): 0.25,  # jiang Table 7: M0, M1
    ("narl", "meta_every"): 10,  # ding §4.1: T_meta = 10
}


@pytest.mark.parametrize("key_field", sorted(CITED), ids=lambda kf: f"{kf[0]}.{kf[1]}")
def test_protocol_table_matches_the_cited_number(key_field):
    key, name = key_field
    got, want = getattr(PAPER_PROTOCOLS[key], name), CITED[key_field]
    if isinstance(want, float):
        assert got == pytest.approx(want, rel=1e-12)
    elif isinstance(want, tuple):
        assert got == pytest.approx(want, rel=1e-12)
    else:
        assert got == want


@pytest.mark.parametrize("key_field", sorted(CITED_OPTIONS), ids=lambda kf: f"{kf[0]}.{kf[1]}")
def test_protocol_method_options_match_the_cited_number(key_field):
    key, name = key_field
    assert PAPER_PROTOCOLS[key].method_options[name] == CITED_OPTIONS[key_field]


def test_every_row_cites_a_source_for_each_classifier_setting():
    for key, proto in PAPER_PROTOCOLS.items():
        for name in ("optimizer", "lr", "momentum", "weight_decay", "batch_size", "meta_set_size", "grad_clip"):
            assert proto.source.get(name), f"{key}.{name} has no source"


def test_step_schedule_multiplies_by_gamma_after_each_milestone():
    # shu: ×0.1 at 40 and 50 of 60 epochs; at 6 epochs: from epochs 4 and 5
    factors = [step_factor((40 / 60, 50 / 60), 0.1, e, 6) for e in range(6)]
    assert factors == pytest.approx([1, 1, 1, 1, 0.1, 0.01])


def test_paper_protocol_replaces_the_budget_but_keeps_the_epochs():
    task = tiny_task(epochs=3)
    new = paper_protocol("l2b").task(task)
    assert new.budget == Budget(epochs=3, batch_size=512, optimizer="sgd", lr=0.15, momentum=0.9,
                                weight_decay=5e-4, schedule="cosine", grad_clip=5.0)
    assert (new.dataset, new.seed, new.splits) == (task.dataset, task.seed, task.splits)


@pytest.mark.parametrize("trainer", ["adaptive-gce", "l2b", "mwnet", "dynamic", "narl-gce"])
def test_records_say_which_protocol_ran_and_the_clean_labels_used(trainer):
    data = tiny_task_data()
    for protocol in ("default", "paper"):
        (record,) = create_trainer(trainer, protocol=protocol, max_steps=2).fit(tiny_task(epochs=1), [], data=data)
        assert record.status == "ok", record.error
        assert record.protocol == protocol
        assert record.clean_labels_used == (0 if trainer == "dynamic" else len(data.y_meta))
        assert ("protocol_settings" in record.extra) == (protocol == "paper")
        assert record.execution == "single"  # one model (with its meta steps), as the standard trainer's


def test_paper_protocol_sets_warmup_and_refuses_a_conflicting_option():
    assert create_trainer("l2b", protocol="paper").warmup_epochs == 10
    assert create_trainer("l2b").warmup_epochs == 0
    assert create_trainer("dynamic", protocol="paper").method_options["rank_bins"] == 100
    with pytest.raises(ValueError, match="protocol='paper' sets warmup_epochs=10"):
        create_trainer("l2b", protocol="paper", warmup_epochs=3)
    with pytest.raises(ValueError, match="protocol="):
        create_trainer("mwnet", protocol="papers")


def test_l2b_warmup_epochs_take_no_meta_step():
    data = tiny_task_data()
    (record,) = create_trainer("l2b", warmup_epochs=2).fit(tiny_task(epochs=3), [LossSpec("ce")], data=data)
    assert record.status == "ok", record.error
    steps_per_epoch = math.ceil(len(data.y_train) / 16)
    assert record.extra["meta_steps"] == steps_per_epoch  # only the third epoch meta-steps


def test_meta_source_val_uses_the_validation_split_as_meta_set():
    data = tiny_task_data(n_meta=0)
    (record,) = create_trainer("mwnet", meta_source="val", max_steps=2).fit(tiny_task(epochs=1), [], data=data)
    assert record.status == "ok", record.error
    assert record.clean_labels_used == len(data.y_val)
