"""`materialize(task)`: deterministic, clean labels where they must be clean, noise recorded."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from evoloss.workers.datasets import clear_dataset_cache, load_dataset
from evoloss.workers.materialize import materialize
from evoloss.workers.splits import make_splits
from evoloss.workers.task import NoiseSpec, Splits, Task, TaskData

REPO = Path(__file__).resolve().parents[2]
TENSOR_FIELDS = ("x_train", "y_train", "y_train_clean", "x_val", "y_val", "x_test", "y_test",
                 "x_meta", "y_meta", "x_noisy_val", "y_noisy_val")


def digest(data: TaskData) -> str:
    h = hashlib.sha256()
    for name in TENSOR_FIELDS:
        t = getattr(data, name)
        h.update(name.encode() + (b"-" if t is None else t.numpy().tobytes()))
    h.update(np.ascontiguousarray(data.transition).tobytes())
    return h.hexdigest()


def digits_task(seed: int = 0, noise: NoiseSpec = NoiseSpec("symmetric", 0.6), **splits) -> Task:
    return Task("digits", "mlp2", noise=noise, splits=Splits(**{"meta_per_class": 4, "noisy_val": 0.1, **splits}),
                seed=seed)


def test_same_task_twice_is_identical_and_another_seed_differs() -> None:
    task = digits_task(seed=3)
    a = materialize(task)
    clear_dataset_cache()
    b = materialize(Task.from_dict(json.loads(json.dumps(task.to_dict()))))
    assert digest(a) == digest(b)
    c = materialize(digits_task(seed=4))
    assert not torch.equal(a.y_val, c.y_val) and not torch.equal(a.y_train, c.y_train[: len(a.y_train)])


@pytest.mark.slow  # a fresh interpreter imports torch (~3-5 s on this machine)
def test_same_task_gives_identical_tensors_in_a_fresh_process() -> None:
    task = digits_task(seed=9, noise=NoiseSpec("instance", 0.4))
    code = (
        "import json, sys\n"
        "from tests.workers.test_materialize import digest\n"
        "from evoloss.workers.materialize import materialize\n"
        "from evoloss.workers.task import Task\n"
        "print(digest(materialize(Task.from_dict(json.loads(sys.argv[1])))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, json.dumps(task.to_dict())], cwd=REPO, capture_output=True,
                         text=True, check=True, timeout=120)
    assert out.stdout.strip() == digest(materialize(task))


def test_clean_splits_keep_clean_labels_and_match_the_split_indices() -> None:
    task = digits_task(seed=1)
    data = materialize(task)
    raw = load_dataset("digits")
    idx = make_splits(raw.y_train.numpy(), 10, task.splits, seed=task.seed)
    for name, rows in (("val", idx.val), ("test", idx.test), ("meta", idx.meta)):
        assert torch.equal(getattr(data, f"y_{name}"), raw.y_train[rows]), name
        assert torch.equal(getattr(data, f"x_{name}"), raw.x_train[rows]), name
    assert torch.equal(data.y_train_clean, raw.y_train[idx.train]) and torch.equal(data.x_train, raw.x_train[idx.train])
    assert torch.equal(data.x_noisy_val, raw.x_train[idx.noisy_val])
    assert not torch.equal(data.y_noisy_val, raw.y_train[idx.noisy_val])  # noisy-val keeps noisy labels


def test_noise_is_recorded() -> None:
    data = materialize(digits_task(seed=2, noise=NoiseSpec("symmetric", 0.6, "exact")))
    flipped = (data.y_train != data.y_train_clean).double().mean().item()
    assert data.noise_rate == flipped and abs(flipped - 0.6) <= 0.5 / len(data.y_train)
    assert data.noise_convention == "symmetric/exact"
    assert data.transition.shape == (10, 10)
    np.testing.assert_allclose(data.transition.sum(axis=1), 1.0)
    info = data.info
    assert info["sizes"]["train"] == len(data.y_train) and info["test_source"] == "pool"
    assert info["noise_rate_nominal"] == 0.6 and info["dataset"] == "digits"
    json.dumps(info)  # records need JSON-able info


def test_clean_task_has_no_noise_and_optional_splits_are_none() -> None:
    data = materialize(Task("synthetic:n=600,c=4,d=3", "mlp2", seed=0))
    assert torch.equal(data.y_train, data.y_train_clean) and data.noise_rate == 0.0
    assert data.noise_convention == "none" and data.x_meta is None and data.x_noisy_val is None
    assert data.input_shape == (3,) and data.num_classes == 4 and data.y_train.dtype == torch.int64


def test_official_test_set_and_dataset_options_are_recorded(tmp_path: Path) -> None:
    task = Task("mnist1d:n=200", "cnn1d", noise=NoiseSpec("asymmetric", 0.4, "semantic"), seed=0,
                data_dir=str(tmp_path))
    data = materialize(task)
    assert data.info["test_source"] == "official" and len(data.y_test) == 40
    assert data.info["dataset_options"] == {"n": 200, "seed": 42} and data.x_train.shape[1:] == (1, 40)
    assert data.noise_convention == "asymmetric/semantic"


def test_longtail_task_subsamples_train_only() -> None:
    task = Task("synthetic:n=3000,c=5,d=4", "mlp2", noise=NoiseSpec("longtail", 0.2, imbalance=10), seed=0)
    data = materialize(task)
    counts = data.info["train_class_counts"]
    assert counts == sorted(counts, reverse=True) and counts[0] / counts[-1] == pytest.approx(10, rel=0.05)
    assert sorted(np.bincount(data.y_val.numpy()).tolist()) != sorted(counts)
    assert data.noise_convention == "longtail/jiang"


def test_semantic_noise_on_a_dataset_without_a_map_names_the_alternatives() -> None:
    with pytest.raises(ValueError, match=r"no semantic class map \(datasets with one: cifar10, digits"):
        materialize(Task("synthetic:n=200", "mlp2", noise=NoiseSpec("asymmetric", 0.4, "semantic")))


@pytest.mark.parametrize(
    "task, exc, match",
    [
        (Task("digitz", "mlp2"), ValueError, "Did you mean 'digits'"),
        (Task("digits", "mlp2", noise=NoiseSpec("symmetric", float("nan"))), ValueError, "noise.rate=nan"),
        (Task("digits", "mlp2", noise=NoiseSpec("symmetric", 1.2)), ValueError, "noise.rate=1.2"),
        (Task("digits", "mlp2", noise=NoiseSpec("symmetric", -0.2)), ValueError, "noise.rate=-0.2"),
        (Task("digits", "mlp2", noise=NoiseSpec("gaussian", 0.2)), ValueError, "unknown noise.kind"),
        (Task("digits", "mlp2", seed=-1), ValueError, "task.seed=-1"),
        (Task("digits", "mlp2", splits=Splits(val=0.9)), ValueError, "no training data"),
    ],
)
def test_bad_tasks_raise_clear_errors(task: Task, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        materialize(task)
