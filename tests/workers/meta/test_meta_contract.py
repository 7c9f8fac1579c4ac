"""Every meta-learned trainer, through the registry: the Trainer contract on a tiny task."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evoloss.losses import LossSpec
from tests.workers.meta.conftest import tiny_task, tiny_task_data
from evoloss.workers.meta import adaptive, dynamic, l2b, mwnet, narl  # noqa: F401  (registration)
from evoloss.workers.records import EVAL_RECORD_FIELDS
from evoloss.workers.trainer import Trainer, create_trainer, list_trainers

META_TRAINERS = sorted([*adaptive.ADAPTIVE_TRAINERS, *narl.NARL_TRAINERS, "l2b", "dynamic", "mwnet"])
BASE_LOSS_TRAINERS = ["dynamic", "l2b", "mwnet"]


def test_all_eleven_names_are_registered():
    assert len(META_TRAINERS) == 11 and set(META_TRAINERS) <= set(list_trainers())


@pytest.mark.parametrize("name", META_TRAINERS)
def test_trainer_contract_on_a_tiny_task(name):
    trainer = create_trainer(name, max_steps=3)
    assert isinstance(trainer, Trainer) and trainer.name == name
    (record,) = trainer.fit(tiny_task(epochs=2), [], data=tiny_task_data())
    assert record.status == "ok", record.error
    assert record.trainer == name and tuple(record.to_dict()) == EVAL_RECORD_FIELDS
    assert record.epochs_run == 1 and record.extra["steps"] == 3  # max_steps ends the run after its epoch
    assert 0.0 <= record.val_acc_last <= 1.0 and len(record.curve_val) == 1
    assert record.extra["per_epoch"] and record.extra["lookahead"]["mode"] == "sgd"
    json.dumps(record.to_dict())


@pytest.mark.parametrize("name", META_TRAINERS)
@pytest.mark.parametrize("mode,head_only", [("optimizer", False), ("sgd", True)])
def test_lookahead_switches_reach_every_trainer(name, mode, head_only):
    extra_options = {"warmup_epochs": 0} if name == "dynamic" else {}
    trainer = create_trainer(name, max_steps=2, lookahead=mode, head_only=head_only, meta_every=1, **extra_options)
    (record,) = trainer.fit(tiny_task(), [], data=tiny_task_data())
    assert record.status == "ok", record.error
    assert record.extra["lookahead"] == {"mode": mode, "head_only": head_only, "every": 1}
    assert record.extra["meta_steps"] == 2


@pytest.mark.parametrize("name", BASE_LOSS_TRAINERS)
def test_specs_are_base_losses_one_record_each(name):
    specs = [LossSpec("ce"), LossSpec("gce", {"q": 0.5})]
    records = create_trainer(name, max_steps=2).fit(tiny_task(), specs, data=tiny_task_data())
    assert [r.family for r in records] == ["ce", "gce"] and records[1].params == {"q": 0.5}


@pytest.mark.parametrize("name", META_TRAINERS)
def test_bad_architecture_raises_before_training(name):
    with pytest.raises(ValueError, match="architecture"):
        create_trainer(name).fit(tiny_task(arch="no_such_net"), [], data=tiny_task_data())


SCRIPT = """
import json, sys
sys.path.insert(0, {root!r})
from tests.workers.meta.conftest import tiny_task, tiny_task_data
from evoloss.workers.meta import l2b, narl
from evoloss.workers.trainer import create_trainer
out = {{}}
for name in ("l2b", "narl-gce"):
    (r,) = create_trainer(name, max_steps=4).fit(tiny_task(seed=9), [], data=tiny_task_data(9))
    d = r.to_dict(); d.pop("wall_s")
    out[name] = d
print(json.dumps(out, sort_keys=True))
"""


@pytest.mark.slow
def test_same_seed_same_records_in_fresh_processes():
    root = str(Path(__file__).resolve().parents[3])
    env = {**os.environ, "PYTHONHASHSEED": "random"}
    runs = [subprocess.run([sys.executable, "-c", SCRIPT.format(root=root)], capture_output=True, text=True,
                           check=True, env=env, timeout=300).stdout for _ in range(2)]
    assert runs[0] == runs[1] and json.loads(runs[0])["l2b"]["status"] == "ok"


def test_lookahead_configs_the_task_cannot_take_raise_before_training():
    import dataclasses

    from evoloss.workers.task import Budget

    adam_task = dataclasses.replace(tiny_task(), budget=Budget(epochs=1, batch_size=16, optimizer="adam"))
    with pytest.raises(ValueError, match="lookahead='optimizer'"):
        create_trainer("mwnet", lookahead="optimizer").fit(adam_task, [], data=tiny_task_data())
    (record,) = create_trainer("mwnet", max_steps=2).fit(adam_task, [], data=tiny_task_data())
    assert record.status == "ok"  # the plain-SGD look-ahead works for any optimiser
