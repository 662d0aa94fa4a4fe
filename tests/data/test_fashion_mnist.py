"""Fashion-MNIST from the Debian package, and generic MNIST-format directories (the idx source)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist, load_idx_directory
from pipeline.errors import DataError
from tests.helpers.idx_files import write_idx, write_idx_dir
from tests.data.test_idx import FMNIST, needs_fmnist


@needs_fmnist
def test_load_fashion_mnist_from_debian_package() -> None:
    data = load_fashion_mnist()
    assert data.train_images.shape == (60000, 28, 28, 1) and data.train_images.dtype == np.uint8
    assert data.test_images.shape == (10000, 28, 28, 1)
    assert data.train_labels.dtype == np.int64 and data.train_labels.shape == (60000,)
    assert np.bincount(data.test_labels).tolist() == [1000] * 10
    assert data.class_names == list(FASHION_MNIST_CLASSES) and len(data.class_names) == 10
    assert data.class_names[0] == "T-shirt/top" and data.class_names[9] == "Ankle boot"
    assert len(data.sha256) == 64
    assert set(data.files) == {"train_images", "train_labels", "test_images", "test_labels"}
    assert all(p.parent == FMNIST for p in data.files.values())


def test_missing_package_tells_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_fashion_mnist(tmp_path / "nowhere")
    message = str(info.value)
    assert "sudo apt-get install dataset-fashion-mnist" in message
    assert "make setup" in message
    assert str(tmp_path / "nowhere") in message
    assert "\n" not in message


def _small(n_train: int = 30, n_test: int = 12, classes: int = 3, size: int = 6) -> tuple:
    rng = np.random.default_rng(1)
    y_train = (np.arange(n_train) % classes).astype(np.uint8)
    y_test = (np.arange(n_test) % classes).astype(np.uint8)
    x_train = rng.integers(0, 256, (n_train, size, size), dtype=np.uint8)
    x_test = rng.integers(0, 256, (n_test, size, size), dtype=np.uint8)
    return x_train, y_train, x_test, y_test


@pytest.mark.parametrize("compress", [False, True])
def test_generic_idx_directory(tmp_path: Path, compress: bool) -> None:
    x_train, y_train, x_test, y_test = _small()
    write_idx_dir(tmp_path, x_train, y_train, x_test, y_test, compress=compress)
    data = load_idx_directory(tmp_path)
    np.testing.assert_array_equal(data.train_images[..., 0], x_train)
    np.testing.assert_array_equal(data.test_labels, y_test)
    assert data.class_names == ["0", "1", "2"]
    assert data.files["train_images"].name.endswith(".gz") == compress


def test_hash_identifies_the_contents(tmp_path: Path) -> None:
    x_train, y_train, x_test, y_test = _small()
    a = load_idx_directory(write_idx_dir(tmp_path / "a", x_train, y_train, x_test, y_test)).sha256
    b = load_idx_directory(write_idx_dir(tmp_path / "b", x_train, y_train, x_test, y_test)).sha256
    x_test[0, 0, 0] ^= 1
    c = load_idx_directory(write_idx_dir(tmp_path / "c", x_train, y_train, x_test, y_test)).sha256
    assert a == b  # independent of where the files live
    assert a != c


def test_class_names_from_labels_txt(tmp_path: Path) -> None:
    write_idx_dir(tmp_path, *_small())
    (tmp_path / "labels.txt").write_text("ant\nbee\ncat\n")
    assert load_idx_directory(tmp_path).class_names == ["ant", "bee", "cat"]


def test_label_beyond_class_names(tmp_path: Path) -> None:
    write_idx_dir(tmp_path, *_small(classes=3))
    (tmp_path / "labels.txt").write_text("ant\nbee\n")
    with pytest.raises(DataError, match=r"contains label 2, but only 2 class names"):
        load_idx_directory(tmp_path)


def test_image_and_label_counts_must_match(tmp_path: Path) -> None:
    x_train, y_train, x_test, y_test = _small()
    write_idx_dir(tmp_path, x_train, y_train[:-1], x_test, y_test)
    with pytest.raises(DataError) as info:
        load_idx_directory(tmp_path)
    message = str(info.value)
    assert "30 images" in message and "29 labels" in message
    assert "train-images-idx3-ubyte" in message and "train-labels-idx1-ubyte" in message


def test_missing_file_is_named(tmp_path: Path) -> None:
    write_idx_dir(tmp_path, *_small())
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match=r"missing t10k-labels-idx1-ubyte\[\.gz\]"):
        load_idx_directory(tmp_path)


def test_images_must_be_bytes(tmp_path: Path) -> None:
    x_train, y_train, x_test, y_test = _small()
    write_idx_dir(tmp_path, x_train, y_train, x_test, y_test)
    write_idx(tmp_path / "train-images-idx3-ubyte", x_train.astype(np.float32))
    with pytest.raises(DataError, match="float32"):
        load_idx_directory(tmp_path)


def test_labels_must_be_one_dimensional(tmp_path: Path) -> None:
    x_train, y_train, x_test, y_test = _small()
    write_idx_dir(tmp_path, x_train, y_train.reshape(-1, 1), x_test, y_test)
    with pytest.raises(DataError, match="1-dimensional"):
        load_idx_directory(tmp_path)


def test_train_and_test_sizes_must_agree(tmp_path: Path) -> None:
    x_train, y_train, _, y_test = _small()
    write_idx_dir(tmp_path, x_train, y_train, np.zeros((12, 7, 7), np.uint8), y_test)
    with pytest.raises(DataError, match=r"6x6x1 but test images .* 7x7x1"):
        load_idx_directory(tmp_path)
