"""Fashion-MNIST (the default dataset) and any other directory of MNIST-format IDX files.

The default comes from the Debian package ``dataset-fashion-mnist`` so that a build never needs the
internet: the files are installed once (``make setup`` does it when run as root) and their hashes go
into every bundle's provenance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from pipeline.data.idx import read_idx
from pipeline.errors import DataError
from pipeline.fsutil import canonical_json, sha256_bytes, sha256_file

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
DEBIAN_PACKAGE = "dataset-fashion-mnist"

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

# Role -> file stem. Each may be gzip-compressed (``<stem>.gz``) or raw (``<stem>``).
IDX_STEMS: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# Optional class-name file for the generic ``idx`` source: one name per line, in label order.
CLASS_NAMES_FILES = ("labels.txt", "classes.txt")


@dataclass
class IdxDataset:
    """The four arrays of an MNIST-format directory, images as uint8 NHWC, labels as int64."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: list[str]
    files: dict[str, Path] = field(default_factory=dict)
    sha256: str = ""


def find_idx_file(directory: Path, stem: str) -> Optional[Path]:
    """``<stem>.gz`` if present, else ``<stem>``, else the ``train-images.idx3-ubyte`` spelling."""
    candidates = [stem + ".gz", stem]
    dotted = stem.replace("-idx", ".idx", 1)
    candidates += [dotted + ".gz", dotted]
    for name in candidates:
        path = Path(directory) / name
        if path.is_file():
            return path
    return None


def _images(array: np.ndarray, path: Path) -> np.ndarray:
    if array.dtype != np.uint8:
        raise DataError(f"IDX image file {path} holds {array.dtype} values; images must be unsigned bytes (IDX dtype 0x08).")
    if array.ndim == 3:
        return array[..., np.newaxis]
    if array.ndim == 4 and array.shape[-1] in (1, 3):
        return array
    raise DataError(
        f"IDX image file {path} has shape {'x'.join(map(str, array.shape))}; expected count x height x width "
        "(or count x height x width x 1|3)."
    )


def _labels(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise DataError(
            f"IDX label file {path} has shape {'x'.join(map(str, array.shape))} of {array.dtype}; "
            "expected a 1-dimensional array of integer labels."
        )
    if array.size and array.min() < 0:
        raise DataError(f"IDX label file {path} contains negative labels (minimum {int(array.min())}).")
    return array.astype(np.int64)


def read_class_names(directory: Path) -> Optional[list[str]]:
    """Class names from ``labels.txt``/``classes.txt`` in ``directory``, if one exists."""
    for name in CLASS_NAMES_FILES:
        path = Path(directory) / name
        if path.is_file():
            try:
                names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            except (OSError, UnicodeDecodeError) as exc:
                raise DataError(f"Class-name file {path} cannot be read: {exc}.") from None
            if not names:
                raise DataError(f"Class-name file {path} is empty; write one class name per line, in label order.")
            if len(set(names)) != len(names):
                raise DataError(f"Class-name file {path} lists the same class name more than once.")
            return names
    return None


def load_idx_directory(directory: Path, class_names: Optional[list[str]] = None) -> IdxDataset:
    """Read the four MNIST-format files in ``directory`` and check they belong together.

    Class names, in order of preference: ``class_names``, a ``labels.txt``/``classes.txt`` in the
    directory, else the label numbers as strings ("0" .. "max label").
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"IDX dataset directory {directory} does not exist or is not a directory.")
    files: dict[str, Path] = {}
    missing = []
    for role, stem in IDX_STEMS.items():
        found = find_idx_file(directory, stem)
        if found is None:
            missing.append(f"{stem}[.gz]")
        else:
            files[role] = found
    if missing:
        raise DataError(
            f"IDX dataset directory {directory} is missing {', '.join(missing)}; an MNIST-format directory needs "
            f"all four of {', '.join(s + '[.gz]' for s in IDX_STEMS.values())}."
        )
    train_images = _images(read_idx(files["train_images"]), files["train_images"])
    train_labels = _labels(read_idx(files["train_labels"]), files["train_labels"])
    test_images = _images(read_idx(files["test_images"]), files["test_images"])
    test_labels = _labels(read_idx(files["test_labels"]), files["test_labels"])
    for images, labels, img_role, lbl_role in (
        (train_images, train_labels, "train_images", "train_labels"),
        (test_images, test_labels, "test_images", "test_labels"),
    ):
        if len(images) != len(labels):
            raise DataError(
                f"IDX files do not match: {files[img_role]} holds {len(images)} images but {files[lbl_role]} "
                f"holds {len(labels)} labels."
            )
    if train_images.shape[1:] != test_images.shape[1:]:
        raise DataError(
            f"IDX files do not match: training images in {files['train_images']} are "
            f"{'x'.join(map(str, train_images.shape[1:]))} but test images in {files['test_images']} are "
            f"{'x'.join(map(str, test_images.shape[1:]))}."
        )
    names = class_names if class_names is not None else read_class_names(directory)
    max_label = int(max(train_labels.max(initial=0), test_labels.max(initial=0)))
    if names is None:
        names = [str(i) for i in range(max_label + 1)]
    elif max_label >= len(names):
        where = files["train_labels"] if train_labels.max(initial=0) == max_label else files["test_labels"]
        raise DataError(
            f"IDX label file {where} contains label {max_label}, but only {len(names)} class names are known "
            f"({', '.join(names[:12])}{', ...' if len(names) > 12 else ''}); labels must be 0..{len(names) - 1}."
        )
    digest = sha256_bytes(canonical_json({role: sha256_file(path) for role, path in files.items()}).encode())
    return IdxDataset(train_images, train_labels, test_images, test_labels, list(names), files, digest)


def load_fashion_mnist(directory: Path = FASHION_MNIST_DIR) -> IdxDataset:
    """Fashion-MNIST from the Debian package (60000 train + 10000 test 28x28 grey images, 10 classes)."""
    directory = Path(directory)
    missing = [stem for stem in IDX_STEMS.values() if find_idx_file(directory, stem) is None]
    if missing:
        raise DataError(
            f"The Fashion-MNIST dataset is not installed: {directory} has no {', '.join(m + '.gz' for m in missing)}. "
            f"It comes from the Debian package {DEBIAN_PACKAGE}; install it with: sudo apt-get install "
            f"{DEBIAN_PACKAGE} (`make setup` does this when run as root), or point dataset.path at a directory "
            "of MNIST-format IDX files with dataset.source: idx."
        )
    return load_idx_directory(directory, class_names=list(FASHION_MNIST_CLASSES))
