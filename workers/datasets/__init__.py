"""Datasets behind one registry: `load_dataset(name, data_dir, seed) -> RawDataset`.

No network: ``digits`` (sklearn), ``mnist1d`` (generated locally, cached as .npz), ``synthetic``
(seeded Gaussian mixture, options in the name). Files through torchvision's layouts (download only
with ``EVOLOSS_DOWNLOAD=1``): ``mnist``, ``fashion_mnist``, ``kmnist``, ``usps``, ``cifar10``,
``cifar100``. Users' files (docs/data.md): ``npz:PATH``, ``table:PATH,label=NAME``, ``folder:PATH``
and the CIFAR-N human labels ``cifar10n:PATH`` / ``cifar100n:PATH``. Adding a dataset is one module
here plus its ``@register_dataset`` and an import below.
"""
from __future__ import annotations

from evoloss.workers.datasets.registry import (
    DatasetEntry,
    DatasetOption,
    RawDataset,
    cached_dataset_keys,
    canonical_name,
    clear_dataset_cache,
    get_dataset_entry,
    list_datasets,
    load_dataset,
    parse_dataset_name,
    register_dataset,
    resolve_data_dir,
    validate_dataset_name,
)

# Each source is one module; importing it registers its datasets.
from evoloss.workers.datasets import cifar, digits, mnist1d_local, mnist_family, synthetic, usps  # noqa: F401,E402
from evoloss.workers.datasets import cifar_n, files, folder  # noqa: F401,E402

__all__ = [
    "DatasetEntry",
    "DatasetOption",
    "RawDataset",
    "cached_dataset_keys",
    "canonical_name",
    "clear_dataset_cache",
    "get_dataset_entry",
    "list_datasets",
    "load_dataset",
    "parse_dataset_name",
    "register_dataset",
    "resolve_data_dir",
    "validate_dataset_name",
]
