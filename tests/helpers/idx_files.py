"""Write small IDX files and image folders byte by byte, independently of the reader under test."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

DTYPE_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B,
               np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}


def idx_bytes(array: np.ndarray) -> bytes:
    array = np.asarray(array)
    header = bytes([0, 0, DTYPE_CODES[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write ``array`` as IDX; gzip when ``compress`` is True or the name ends in .gz."""
    path = Path(path)
    data = idx_bytes(array)
    if compress or (compress is None and path.suffix == ".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def write_idx_dir(directory: Path, train_images, train_labels, test_images, test_labels, compress: bool = False) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if compress else ""
    write_idx(directory / f"train-images-idx3-ubyte{ext}", train_images, compress)
    write_idx(directory / f"train-labels-idx1-ubyte{ext}", train_labels, compress)
    write_idx(directory / f"t10k-images-idx3-ubyte{ext}", test_images, compress)
    write_idx(directory / f"t10k-labels-idx1-ubyte{ext}", test_labels, compress)
    return directory


def pattern_images(labels: np.ndarray, size: int = 12, seed: int = 0) -> np.ndarray:
    """Grey images whose brightest band encodes the label (learnable, and distinct per class)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 40, size=(len(labels), size, size), dtype=np.uint8)
    band = max(1, size // max(1, int(labels.max()) + 1))
    for i, label in enumerate(labels):
        images[i, label * band : (label + 1) * band] += 180
    return images
