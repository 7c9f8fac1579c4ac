from __future__ import annotations

import pytest
import torch

from evoloss.workers.protocol import batches, lr_at, resolve_optimizer
from evoloss.workers.task import Budget


def test_architecture_protocols():
    assert resolve_optimizer("mlp2", Budget()).name == "sgd"
    assert resolve_optimizer("mlp2", Budget()).lr == 0.01 and resolve_optimizer("mlp2", Budget()).momentum == 0.9
    jocor = resolve_optimizer("jocor_cnn", Budget())
    assert (jocor.name, jocor.lr) == ("adam", 1e-3)


def test_optimizer_override_takes_its_own_defaults_unless_lr_given():
    assert resolve_optimizer("mlp2", Budget(optimizer="adam")).lr == 1e-3
    assert resolve_optimizer("jocor_cnn", Budget(optimizer="sgd")).lr == 0.01
    assert resolve_optimizer("mlp2", Budget(optimizer="adam", lr=0.05)).lr == 0.05
    with pytest.raises(ValueError, match="budget.optimizer"):
        resolve_optimizer("mlp2", Budget(optimizer="rmsprop"))
    with pytest.raises(ValueError, match="budget.lr"):
        resolve_optimizer("mlp2", Budget(lr=-1.0))


def test_batches_cover_every_index_once_and_depend_on_seed_and_epoch():
    b = batches(10, 4, seed=3, epoch=0)
    assert [len(x) for x in b] == [4, 4, 2]
    assert sorted(torch.cat(b).tolist()) == list(range(10))
    assert torch.equal(torch.cat(b), torch.cat(batches(10, 4, seed=3, epoch=0)))
    assert not torch.equal(torch.cat(b), torch.cat(batches(10, 4, seed=3, epoch=1)))


def test_cosine_schedule():
    b = Budget(epochs=4, schedule="cosine")
    assert lr_at(b, 0.1, 0) == pytest.approx(0.1) and lr_at(b, 0.1, 2) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="schedule"):
        lr_at(Budget(schedule="step"), 0.1, 0)
