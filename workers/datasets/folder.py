"""``folder:PATH[,size=32][,channels=3]``: an image tree in torchvision's ``ImageFolder`` layout.

``PATH/train/<class>/<image>`` is required; ``PATH/val/<class>/…`` (a trusted clean set) and
``PATH/test/<class>/…`` (a clean test set) are optional. Class indices follow the sorted class folder
names of ``train/`` (torchvision's rule); ``val/`` and ``test/`` may only use those names. The
folder names are the labels as given (what noise type ``given`` trains on); they are the only labels
there are, so a ``given`` task needs ``val/`` for its clean validation split.

Every image is read by torchvision (PIL), converted to RGB (``channels=3``, default) or grayscale
(``channels=1``), resized to ``size × size`` pixels (bilinear, default 32, aspect ratio not kept)
and scaled to [0, 1]; the inputs ``[N, channels, size, size]`` are then standardised per channel
with the training images' statistics, like every built-in dataset (docs/data.md).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from evoloss.workers.datasets.registry import DatasetOption, RawDataset, register_dataset
from evoloss.workers.datasets.user_arrays import DataFileError, check_arrays, user_dataset

_OPTIONS = {
    "size": DatasetOption(int, 32, 4, 512, "images are resized to size × size pixels"),
    "channels": DatasetOption(int, 3, 1, 3, "1 = grayscale, 3 = RGB"),
}


def _read_split(path: str, folder: Path, size: int, channels: int,
                class_to_idx: Mapping[str, int] | None) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Images and labels of one split folder; labels indexed by the training classes."""
    from PIL import UnidentifiedImageError
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    steps = [transforms.Resize((size, size))]
    if channels == 1:
        steps.append(transforms.Grayscale(1))
    steps.append(transforms.ToTensor())
    try:
        tree = ImageFolder(str(folder), transform=transforms.Compose(steps))
    except (FileNotFoundError, OSError) as exc:
        raise DataFileError(path, f"folder {folder.name}/", f"has no images in ImageFolder layout ({exc})",
                            f"put images in {folder.name}/<class>/<file>.png (or .jpg)") from None
    mapping = class_to_idx or dict(tree.class_to_idx)
    extra = sorted(set(tree.classes) - set(mapping))
    if extra:
        raise DataFileError(path, f"folder {folder.name}/", f"has classes {extra[:5]} that train/ lacks",
                            "use the class folder names of train/")
    images, labels = [], []
    for i, (file, index) in enumerate(tree.samples):
        try:
            image, _ = tree[i]
        except (UnidentifiedImageError, OSError) as exc:
            raise DataFileError(path, f"image {Path(file).relative_to(Path(path))}", f"cannot be read ({exc})",
                                "remove or replace it") from None
        if channels == 3 and image.shape[0] == 1:
            image = image.expand(3, -1, -1)
        images.append(image.numpy())
        labels.append(mapping[tree.classes[index]])
    return np.stack(images).astype(np.float64), np.asarray(labels, dtype=np.int64), dict(mapping)


@register_dataset("folder", takes_path=True, options=_OPTIONS)
def load_folder(root: Path, options: Mapping[str, Any]) -> RawDataset:
    """An ImageFolder tree: train/<class>/… with optional val/ and test/."""
    path = str(options["path"])
    base = Path(path)
    if not (base / "train").is_dir():
        raise FileNotFoundError(f"dataset file {path}: has no train/ folder; lay the images out as "
                                "PATH/train/<class>/<image> (optional PATH/val/, PATH/test/)")
    size, channels = int(options["size"]), int(options["channels"])
    x, y, mapping = _read_split(path, base / "train", size, channels, None)
    arrays: dict[str, np.ndarray] = {"x_train": x, "y_train": y, "num_classes": np.int64(max(len(mapping), 2))}
    for split in ("val", "test"):
        if (base / split).is_dir():
            arrays[f"x_{split}"], arrays[f"y_{split}"], _ = _read_split(path, base / split, size, channels, mapping)
    num_classes = check_arrays(path, arrays)
    return user_dataset(f"folder:{path},channels={channels},size={size}", arrays, num_classes)
