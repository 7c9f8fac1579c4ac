"""Dataset registry, name options, caching, and every loader on tiny files in the real on-disk formats."""
from __future__ import annotations

import bz2
import os
import pickle
import random
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import evoloss.workers.datasets as ds
from evoloss.workers.datasets import mnist1d_local

FILE_BACKED = ["mnist", "fashion_mnist", "kmnist", "usps", "cifar10", "cifar100"]


@pytest.fixture(autouse=True)
def _no_download(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVOLOSS_DOWNLOAD", raising=False)
    monkeypatch.delenv("EVOLOSS_DATA_DIR", raising=False)


def standardised(pixels: np.ndarray) -> np.ndarray:
    """Per-channel (axis 1) standardisation of the train pool, in float64."""
    axes = tuple(a for a in range(pixels.ndim) if a != 1)
    return (pixels - pixels.mean(axis=axes, keepdims=True)) / pixels.std(axis=axes, keepdims=True)


# --- registry and names -------------------------------------------------------------------------


def test_every_dataset_is_registered_with_its_semantic_map() -> None:
    users_files = ["npz", "table", "folder", "cifar10n", "cifar100n"]  # tests/workers/test_user_data.py
    assert ds.list_datasets() == sorted(FILE_BACKED + users_files + ["digits", "mnist1d", "synthetic"])
    maps = {n: ds.get_dataset_entry(n).semantic_map for n in ds.list_datasets()}
    assert {n for n, m in maps.items() if m == "digits10"} == {"digits", "mnist", "mnist1d", "usps"}
    assert maps["cifar10"] == "cifar10" and maps["fashion_mnist"] is maps["kmnist"] is maps["cifar100"] is None


def test_duplicate_registration_raises() -> None:
    with pytest.raises(ValueError, match="already registered"):
        ds.register_dataset("digits")(lambda root, options: None)


@pytest.mark.parametrize(
    "name, match",
    [
        ("digit", "Did you mean 'digits'"),
        ("synthetic:nn=3", "Did you mean 'n'"),
        ("synthetic:n=4e3", "not a valid int"),
        ("synthetic:c=1", r"c=1 is outside \[2, 1000\]"),
        ("synthetic:sep=nan", "sep=nan is outside"),
        ("synthetic:n=10,n=20", "given twice"),
        ("synthetic:n", "must look like key=value"),
        ("digits:n=3", "takes no options"),
    ],
)
def test_bad_dataset_names_raise_clear_errors(name: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ds.load_dataset(name)


def test_canonical_name_writes_every_option_sorted() -> None:
    assert ds.canonical_name("synthetic:d=5, n=100") == "synthetic:c=10,d=5,n=100,seed=0,sep=0.5"
    assert ds.canonical_name("digits") == "digits"


def test_data_dir_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert ds.resolve_data_dir() == (Path.home() / ".cache" / "evoloss").resolve()
    monkeypatch.setenv("EVOLOSS_DATA_DIR", str(tmp_path))
    assert ds.resolve_data_dir() == tmp_path.resolve()
    assert ds.resolve_data_dir(str(tmp_path / "x")) == (tmp_path / "x").resolve()


# --- no-network datasets ------------------------------------------------------------------------


def test_digits_shape_and_normalisation() -> None:
    from sklearn.datasets import load_digits

    raw = ds.load_dataset("digits")
    assert raw.x_train.shape == (1797, 1, 8, 8) and raw.x_train.dtype == torch.float32
    assert raw.x_test is None and raw.num_classes == 10 and raw.input_shape == (1, 8, 8)
    expect = standardised(load_digits().images[:, None].astype(np.float64))
    np.testing.assert_allclose(raw.x_train.numpy(), expect, atol=1e-5)
    assert raw.y_train.tolist() == load_digits().target.tolist()


def test_synthetic_is_seeded_balanced_and_configurable() -> None:
    a = ds.load_dataset("synthetic:n=300,c=3,d=4")
    assert a.x_train.shape == (300, 4) and a.num_classes == 3 and a.input_shape == (4,)
    assert np.bincount(a.y_train.numpy()).tolist() == [100, 100, 100]
    np.testing.assert_allclose(a.x_train.numpy().mean(0), 0, atol=1e-5)
    b = ds.load_dataset("synthetic:n=300,c=3,d=4", seed=1)
    assert ",seed=1," in b.name and not torch.equal(a.x_train, b.x_train)
    ds.clear_dataset_cache()
    assert torch.equal(ds.load_dataset("synthetic:n=300,c=3,d=4").x_train, a.x_train)
    with pytest.raises(ValueError, match="sets seed=2 but load_dataset got seed=3"):
        ds.load_dataset("synthetic:seed=2", seed=3)
    with pytest.raises(ValueError, match="n=5 must be >= c=10"):
        ds.load_dataset("synthetic:n=5")


def test_cache_is_keyed_by_canonical_name_and_data_dir(tmp_path: Path) -> None:
    ds.clear_dataset_cache()
    a = ds.load_dataset("synthetic:n=100", tmp_path)
    assert ds.load_dataset("synthetic:n=100,c=10", tmp_path) is a
    assert ds.load_dataset("synthetic:n=100", tmp_path / "other") is not a
    assert len(ds.cached_dataset_keys()) == 2


@pytest.fixture(scope="module")
def mnist1d_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir holding one small generated MNIST-1D (generated once per test session)."""
    root = tmp_path_factory.mktemp("mnist1d-data")
    ds.load_dataset("mnist1d:n=500", root)
    return root


def test_mnist1d_is_generated_locally_and_cached_as_npz(mnist1d_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = mnist1d_local.mnist1d_cache_path(mnist1d_dir, 500, 42)
    assert path.is_file()
    with np.load(path, allow_pickle=False) as f:
        x, y = f["x"], f["y"]
    ds.clear_dataset_cache()

    def no_regeneration(n: int, seed: int) -> dict:
        raise AssertionError("the .npz cache was not used")

    monkeypatch.setattr(mnist1d_local, "generate_mnist1d", no_regeneration)
    raw = ds.load_dataset("mnist1d:n=500", mnist1d_dir)
    assert raw.x_train.shape == (400, 1, 40) and raw.x_test.shape == (100, 1, 40)
    np.testing.assert_allclose(raw.x_train.numpy(), standardised(x[:, None].astype(np.float64)), atol=1e-5)
    assert raw.y_train.tolist() == y.tolist() and raw.name == "mnist1d:n=500,seed=42"


def test_mnist1d_generation_leaves_global_rngs_alone(tmp_path: Path) -> None:
    np.random.seed(5)
    random.seed(5)
    before_np, before_py = np.random.get_state()[1].copy(), random.getstate()
    ds.load_dataset("mnist1d:n=100,seed=1", tmp_path)
    assert np.array_equal(np.random.get_state()[1], before_np) and random.getstate() == before_py


# --- torchvision formats: tiny files written here -----------------------------------------------


def write_idx(path: Path, array: np.ndarray) -> None:
    """An uncompressed IDX file: magic (0, 0, 0x08 = ubyte, ndim), big-endian dims, then the bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST"), ("kmnist", "KMNIST")])
def test_mnist_family_reads_tiny_idx_files(tmp_path: Path, name: str, folder: str) -> None:
    rng = np.random.default_rng(0)
    imgs = {s: rng.integers(0, 256, (n, 28, 28)) for s, n in (("train", 12), ("t10k", 5))}
    labs = {s: rng.integers(0, 10, len(imgs[s])) for s in imgs}
    raw_dir = tmp_path / folder / "raw"
    for s in imgs:
        write_idx(raw_dir / f"{s}-images-idx3-ubyte", imgs[s])
        write_idx(raw_dir / f"{s}-labels-idx1-ubyte", labs[s])
    raw = ds.load_dataset(name, tmp_path)
    assert raw.x_train.shape == (12, 1, 28, 28) and raw.x_test.shape == (5, 1, 28, 28)
    np.testing.assert_allclose(raw.x_train.numpy(), standardised(imgs["train"][:, None] / 255.0), atol=1e-5)
    assert raw.y_train.tolist() == labs["train"].tolist() and raw.y_test.tolist() == labs["t10k"].tolist()


def test_usps_reads_tiny_bz2_libsvm_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    pixels = {"usps.bz2": rng.choice([-1.0, 1.0], (9, 256)), "usps.t.bz2": rng.choice([-1.0, 1.0], (4, 256))}
    labels = {k: rng.integers(1, 11, len(v)) for k, v in pixels.items()}  # libsvm labels are 1..10
    (tmp_path / "usps").mkdir()
    for fname, px in pixels.items():
        lines = [f"{lab} " + " ".join(f"{j + 1}:{v:g}" for j, v in enumerate(row))
                 for lab, row in zip(labels[fname], px)]
        (tmp_path / "usps" / fname).write_bytes(bz2.compress(("\n".join(lines) + "\n").encode()))
    raw = ds.load_dataset("usps", tmp_path)
    assert raw.x_train.shape == (9, 1, 16, 16) and raw.x_test.shape == (4, 1, 16, 16)
    expect = (pixels["usps.bz2"].reshape(-1, 1, 16, 16) + 1) / 2  # [-1, 1] -> {0, 255} / 255
    np.testing.assert_allclose(raw.x_train.numpy(), standardised(expect), atol=1e-5)
    assert raw.y_train.tolist() == (labels["usps.bz2"] - 1).tolist()


def write_cifar(root: Path, folder: str, batches: dict[str, int], label_key: str, rng: np.random.Generator) -> dict:
    """CIFAR python batches as torchvision reads them: pickled dicts with uint8 'data' [n, 3072]."""
    out = {}
    (root / folder).mkdir(parents=True)
    for fname, n in batches.items():
        entry = {"batch_label": fname, label_key: rng.integers(0, 10, n).tolist(),
                 "data": rng.integers(0, 256, (n, 3072)).astype(np.uint8), "filenames": [f"{i}.png" for i in range(n)]}
        (root / folder / fname).write_bytes(pickle.dumps(entry, protocol=2))
        out[fname] = entry
    return out


def test_cifar10_reads_tiny_batches_like_torchvision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets as tvd
    import torchvision.datasets.cifar as tv_cifar

    names = {f"data_batch_{i}": 2 for i in range(1, 6)} | {"test_batch": 3}
    written = write_cifar(tmp_path, "cifar-10-batches-py", names, "labels", np.random.default_rng(2))
    meta = {"label_names": [f"c{i}" for i in range(10)], "num_cases_per_batch": 2}
    (tmp_path / "cifar-10-batches-py" / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    raw = ds.load_dataset("cifar10", tmp_path)
    assert raw.x_train.shape == (10, 3, 32, 32) and raw.x_test.shape == (3, 3, 32, 32)
    # differential: torchvision's own CIFAR10 on the same (test-written, trusted) files, MD5 check off
    monkeypatch.setattr(tvd.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    tv = tvd.CIFAR10(str(tmp_path), train=True, download=False)
    pixels = tv.data.transpose(0, 3, 1, 2).astype(np.float64) / 255.0
    np.testing.assert_allclose(raw.x_train.numpy(), standardised(pixels), atol=1e-5)
    written_labels = [v for i in range(1, 6) for v in written[f"data_batch_{i}"]["labels"]]
    assert raw.y_train.tolist() == list(tv.targets) == written_labels


def test_cifar100_reads_fine_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    written = write_cifar(tmp_path, "cifar-100-python", {"train": 4, "test": 2}, "fine_labels", rng)
    raw = ds.load_dataset("cifar100", tmp_path)
    assert raw.num_classes == 100 and raw.x_train.shape == (4, 3, 32, 32)
    assert raw.y_test.tolist() == written["test"]["fine_labels"]


class _Payload:
    def __reduce__(self):  # a tampered batch: unpickling would call os.getcwd
        return (os.getcwd, ())


def test_cifar_batches_with_foreign_globals_are_refused(tmp_path: Path) -> None:
    write_cifar(tmp_path, "cifar-10-batches-py", {f"data_batch_{i}": 1 for i in range(1, 6)} | {"test_batch": 1},
                "labels", np.random.default_rng(4))
    bad = {"data": np.zeros((1, 3072), np.uint8), "labels": [0], "x": _Payload()}
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(ValueError, match=r"data_batch_3 is not a CIFAR python batch file: global .*getcwd"):
        ds.load_dataset("cifar10", tmp_path)


@pytest.mark.parametrize("name", FILE_BACKED)
def test_missing_files_name_the_path_and_the_fix(tmp_path: Path, name: str) -> None:
    with pytest.raises(FileNotFoundError) as err:
        ds.load_dataset(name, tmp_path / "empty")
    text = str(err.value)
    assert str(tmp_path / "empty") in text and "EVOLOSS_DOWNLOAD=1" in text and f"dataset {name!r}" in text


def test_download_happens_only_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets as tvd
    import torchvision.datasets.utils as tv_utils

    calls: list[tuple] = []

    class Recorder:
        resources = tvd.MNIST.resources

        def __init__(self, root: str, train: bool, download: bool) -> None:
            calls.append((root, train, download))
            raise RuntimeError("no network in tests")

    monkeypatch.setattr(tvd, "MNIST", Recorder)
    monkeypatch.setattr(tv_utils, "download_and_extract_archive", lambda *a, **k: calls.append(("cifar", a, k)))
    monkeypatch.setenv("EVOLOSS_DOWNLOAD", "1")
    with pytest.raises(RuntimeError, match="no network"):
        ds.load_dataset("mnist", tmp_path)
    assert calls == [(str(tmp_path.resolve()), True, True)]
    with pytest.raises(FileNotFoundError):  # the fake download left the folder empty
        ds.load_dataset("cifar10", tmp_path)
    assert calls[-1][0] == "cifar" and calls[-1][2]["md5"] == tvd.CIFAR10.tgz_md5
