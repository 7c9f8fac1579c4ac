"""Users' files as datasets (npz, table, folder, CIFAR-N) and the noise type "given", on files written here."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import evoloss.workers.datasets as ds
from evoloss.workers.datasets.user_arrays import DataFileError
from evoloss.workers.materialize import materialize
from evoloss.workers.task import NoiseSpec, Splits, Task
from tests.workers.test_datasets import write_cifar

GIVEN = NoiseSpec("given", 0.0)


def noisy_arrays(n: int = 200, c: int = 3, d: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """Clean labels, a 30% uniform flip to another class, and Gaussian inputs (float64 reference)."""
    rng = np.random.default_rng(seed)
    clean = rng.integers(0, c, n)
    flip = rng.random(n) < 0.3
    given = np.where(flip, (clean + rng.integers(1, c, n)) % c, clean)
    return {"x_train": rng.normal(2.0, 3.0, (n, d)), "y_train": given, "y_train_clean": clean}


def standardised(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per-feature standardisation of ``x`` with the statistics of ``ref`` (axis 1 = feature)."""
    axes = tuple(a for a in range(ref.ndim) if a != 1)
    return (x - ref.mean(axis=axes, keepdims=True)) / ref.std(axis=axes, keepdims=True)


def test_npz_reads_arrays_standardised_with_the_training_statistics(tmp_path: Path, monkeypatch) -> None:
    a = noisy_arrays()
    x_test = np.random.default_rng(1).normal(size=(7, 4))
    np.savez(tmp_path / "d.npz", **a, x_test=x_test, y_test=np.arange(7) % 3)
    monkeypatch.chdir(tmp_path)
    raw = ds.load_dataset("npz:d.npz")  # relative to the working directory
    assert raw.name == f"npz:{tmp_path.resolve() / 'd.npz'}" and raw.num_classes == 3 and raw.input_shape == (4,)
    np.testing.assert_allclose(raw.x_train.numpy(), standardised(a["x_train"], a["x_train"]), atol=1e-5)
    np.testing.assert_allclose(raw.x_test.numpy(), standardised(x_test, a["x_train"]), atol=1e-5)
    assert raw.y_train.tolist() == a["y_train_clean"].tolist() and raw.y_given.tolist() == a["y_train"].tolist()
    assert raw.clean_known and raw.clean_pool == 0


def test_given_noise_trains_on_the_file_labels_and_records_the_realised_matrix(tmp_path: Path) -> None:
    a = noisy_arrays()
    np.savez(tmp_path / "d.npz", **a)
    data = materialize(Task(f"npz:{tmp_path / 'd.npz'}", "mlp2", noise=GIVEN, splits=Splits(val=0.2, test=0.2)))
    clean, given = data.y_train_clean.numpy(), data.y_train.numpy()
    # every training row keeps its file label; the clean labels are the file's y_train_clean of the same rows
    pairs = {tuple(r) for r in np.stack([a["y_train_clean"], a["y_train"]], 1)}
    assert {tuple(r) for r in np.stack([clean, given], 1)} <= pairs
    expected = np.zeros((3, 3))
    for i, j in zip(clean, given):
        expected[i, j] += 1
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(data.transition, expected)
    assert data.noise_rate == pytest.approx(float(np.mean(clean != given))) and data.noise_convention == "given/file"
    assert data.info["clean_labels_known"] is True
    assert len(data.y_val) == 40 and len(data.y_test) == 40


def test_x_val_is_the_clean_pool_for_val_and_meta_and_train_is_every_training_row(tmp_path: Path) -> None:
    a = noisy_arrays(n=120)
    x_val, y_val = np.random.default_rng(5).normal(size=(30, 4)), np.arange(30) % 3
    np.savez(tmp_path / "v.npz", x_train=a["x_train"], y_train=a["y_train"], x_val=x_val, y_val=y_val)
    task = Task(f"npz:{tmp_path / 'v.npz'}", "mlp2", noise=GIVEN, splits=Splits(val=0.2, test=0.2, meta_per_class=2))
    data = materialize(task)
    assert data.info["sizes"] == {"pool": 150, "train": 120, "val": 18, "test": 6, "meta": 6, "noisy_val": 0,
                                  "dropped_longtail": 0, "dropped_max_train": 0}
    val_rows = standardised(x_val, a["x_train"]).astype(np.float32)
    for x, y in ((data.x_val, data.y_val), (data.x_meta, data.y_meta), (data.x_test, data.y_test)):
        idx = [int(np.argmin(np.abs(val_rows - row).sum(1))) for row in x.numpy()]
        np.testing.assert_allclose(x.numpy(), val_rows[idx], atol=1e-6)
        assert y.tolist() == y_val[idx].tolist()
    assert sorted(data.y_train.tolist()) == sorted(a["y_train"].tolist())
    assert np.isnan(data.noise_rate) and data.transition is None and data.info["clean_labels_known"] is False
    assert materialize(task).y_meta.tolist() == data.y_meta.tolist()  # seeded


def test_table_csv_and_parquet_with_text_labels_and_a_split_column(tmp_path: Path) -> None:
    import pandas as pd

    frame = pd.DataFrame({"f1": [0.0, 1, 2, 3, 4, 5], "f2": [1.0, 0, 1, 0, 1, 0],
                          "kind": ["cat", "dog", "cat", "dog", "cat", "dog"],
                          "truth": ["cat", "dog", "dog", "dog", "cat", "dog"],
                          "part": ["train", "train", "train", "train", "val", "test"]})
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.to_parquet(tmp_path / "t.parquet")
    for file in ("t.csv", "t.parquet"):
        raw = ds.load_dataset(f"table:{tmp_path / file},label=kind,clean=truth,split=part")
        assert raw.num_classes == 2 and raw.input_shape == (2,) and raw.clean_pool == 1
        assert raw.y_given.tolist() == [0, 1, 0, 1, 0] and raw.y_train.tolist() == [0, 1, 1, 1, 0]
        assert raw.y_test.tolist() == [1] and len(raw.x_test) == 1


def test_folder_reads_an_image_folder_tree_resized_and_standardised(tmp_path: Path) -> None:
    from PIL import Image

    for split, count in (("train", 3), ("val", 1)):
        for k, colour in enumerate([(255, 0, 0), (0, 0, 255)]):
            (tmp_path / split / f"class{k}").mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (10 + i, 6), colour).save(tmp_path / split / f"class{k}" / f"{i}.png")
    raw = ds.load_dataset(f"folder:{tmp_path},size=8")
    assert raw.input_shape == (3, 8, 8) and raw.num_classes == 2 and raw.clean_pool == 2
    assert raw.y_given.tolist() == [0, 0, 0, 1, 1, 1, 0, 1]
    red = raw.x_train[0, 0]  # class0 is red: channel 0 at +1 std, class1 at -1 std (3 vs 3 images)
    assert torch.allclose(red, torch.ones_like(red), atol=1e-5)
    gray = ds.load_dataset(f"folder:{tmp_path},size=4,channels=1")
    assert gray.input_shape == (1, 4, 4)


def test_cifar10n_label_file_is_applied_to_cifar(tmp_path: Path) -> None:
    batches = {f"data_batch_{i}": 2 for i in range(1, 6)} | {"test_batch": 2}
    written = write_cifar(tmp_path, "cifar-10-batches-py", batches, "labels", np.random.default_rng(0))
    clean = np.array([v for i in range(1, 6) for v in written[f"data_batch_{i}"]["labels"]])
    worse = (clean + 1) % 10
    torch.save({"clean_label": clean, "worse_label": worse, "aggre_label": torch.from_numpy(clean)}, tmp_path / "n.pt")
    raw = ds.load_dataset(f"cifar10n:{tmp_path / 'n.pt'}", tmp_path)
    assert raw.y_given.tolist() == worse.tolist() and raw.y_train.tolist() == clean.tolist()
    aggre = ds.load_dataset(f"cifar10n:{tmp_path / 'n.pt'},label=aggre_label", tmp_path)
    assert aggre.y_given.tolist() == clean.tolist()
    task = Task(f"cifar10n:{tmp_path / 'n.pt'}", "mlp2", noise=GIVEN, splits=Splits(val=2, test=0), data_dir=str(tmp_path))
    assert materialize(task).noise_rate == 1.0
    torch.save({"clean_label": worse, "worse_label": worse}, tmp_path / "other.pt")
    with pytest.raises(DataFileError, match="clean_label' differs from the CIFAR training labels in 10 rows"):
        ds.load_dataset(f"cifar10n:{tmp_path / 'other.pt'}", tmp_path)


class _Payload:
    def __reduce__(self):  # unpickling would call os.getcwd
        import os

        return (os.getcwd, ())


def test_cifar_n_files_are_read_with_weights_only(tmp_path: Path) -> None:
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"worse_label": _Payload()}, f)
    with pytest.raises(DataFileError, match="weights_only"):
        ds.load_dataset(f"cifar10n:{tmp_path / 'evil.pt'}", tmp_path)


def test_given_noise_on_a_dataset_without_its_own_labels_is_refused() -> None:
    with pytest.raises(ValueError, match="needs labels that come with the dataset"):
        materialize(Task("digits", "mlp2", noise=GIVEN))


def test_file_dataset_names_resolve_paths_and_parse_trailing_options(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    absolute = tmp_path.resolve()
    assert ds.canonical_name("table:sub/t.csv,label=y") == f"table:{absolute}/sub/t.csv,clean=-,label=y,split=-"
    assert ds.canonical_name("npz:a,b.npz") == f"npz:{absolute}/a,b.npz"  # a comma inside the path stays
    with pytest.raises(ValueError, match="Did you mean 'label'"):
        ds.canonical_name("table:t.csv,lable=y")
    with pytest.raises(ValueError, match="needs a path"):
        ds.canonical_name("npz:")
    with pytest.raises(ValueError, match=r"size=2 is outside \[4, 512\]"):
        ds.canonical_name("folder:imgs,size=2")


def test_a_changed_file_is_read_again(tmp_path: Path) -> None:
    a = noisy_arrays()
    np.savez(tmp_path / "d.npz", **a)
    first = ds.load_dataset(f"npz:{tmp_path / 'd.npz'}")
    np.savez(tmp_path / "d.npz", **{**a, "y_train": np.zeros(200, dtype=np.int64)})
    os.utime(tmp_path / "d.npz", ns=(1, 1))
    assert ds.load_dataset(f"npz:{tmp_path / 'd.npz'}").y_given.sum() == 0 != first.y_given.sum()
