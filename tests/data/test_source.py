"""load_dataset end to end, for each source, and the validation a user can trip over."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.config.profile import DatasetConfig, PreprocessingConfig
from pipeline.data.source import load_dataset
from pipeline.errors import DataError
from tests.helpers.idx_files import pattern_images, write_idx_dir
from tests.data.test_idx import needs_fmnist

PRE = PreprocessingConfig()


@needs_fmnist
def test_fashion_mnist_default_profile_quick() -> None:
    cfg = DatasetConfig(max_train=2000, max_test=1000, calibration_count=100, eval_count=50)
    data = load_dataset(cfg, PRE, seed=1234)
    assert data.x_train.shape == (2000, 28, 28, 1) and data.x_train.dtype == np.uint8
    assert data.y_train.dtype == np.int64
    assert len(data.x_val) == 222 and len(data.x_calib) == 100
    assert data.x_test.shape == (1000, 28, 28, 1) and data.x_eval.shape == (50, 28, 28, 1)
    assert np.bincount(data.y_train).tolist() == [200] * 10
    assert data.num_classes == 10 and data.class_names[0] == "T-shirt/top"
    assert data.input_shape == (28, 28, 1)
    assert len(data.source_sha256) == 64
    plan = data.plan
    assert not (set(plan.train) & set(plan.val)) and not (set(plan.train) & set(plan.calib))
    assert set(plan.eval) <= set(plan.test)
    rows = {row["split"]: row for row in data.describe()}
    assert rows["train"]["images"] == 2000 and rows["train"]["classes"] == 10
    assert rows["eval"]["min_per_class"] == 5 and rows["eval"]["shape"] == "28x28x1"
    again = load_dataset(cfg, PRE, seed=1234)
    np.testing.assert_array_equal(again.x_calib, data.x_calib)
    assert again.source_sha256 == data.source_sha256
    other = load_dataset(cfg, PRE, seed=99)
    assert not np.array_equal(other.x_calib, data.x_calib)
    assert other.source_sha256 == data.source_sha256


@needs_fmnist
def test_fashion_mnist_resized_to_profile() -> None:
    cfg = DatasetConfig(max_train=50, max_test=30, calibration_count=10, eval_count=10)
    data = load_dataset(cfg, PreprocessingConfig(height=32, width=36, channels=3), seed=0)
    assert data.x_train.shape == (50, 32, 36, 3) and data.x_eval.shape == (10, 32, 36, 3)
    assert data.preprocessing.to_dict()["height"] == 32
    assert (data.x_train[..., 0] == data.x_train[..., 2]).all()


def test_missing_fashion_mnist_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="sudo apt-get install dataset-fashion-mnist"):
        load_dataset(DatasetConfig(path=str(tmp_path)), PRE, seed=0)


def _idx_dir(root: Path, n_train: int = 120, n_test: int = 45, classes: int = 3, size: int = 12) -> Path:
    y_train = (np.arange(n_train) % classes).astype(np.uint8)
    y_test = (np.arange(n_test) % classes).astype(np.uint8)
    return write_idx_dir(root, pattern_images(y_train, size, 0), y_train, pattern_images(y_test, size, 1), y_test)


def test_idx_source_resizes_to_profile(tmp_path: Path) -> None:
    _idx_dir(tmp_path)
    cfg = DatasetConfig(source="idx", path=str(tmp_path), calibration_count=12, eval_count=15)
    data = load_dataset(cfg, PRE, seed=2)
    assert data.class_names == ["0", "1", "2"]
    assert data.x_train.shape[1:] == (28, 28, 1)
    assert len(data.x_train) + len(data.x_val) + len(data.x_calib) == 120
    assert len(data.x_test) == 45 and len(data.x_eval) == 15
    # The label pattern (a bright band) survives the resize: band of class k sits in rows ~ k*28/3.
    for image, label in zip(data.x_train[:9], data.y_train[:9]):
        band = image[..., 0].mean(axis=1).argmax()
        assert int(band * 3 // 28) == label


def test_idx_not_enough_for_calibration(tmp_path: Path) -> None:
    _idx_dir(tmp_path)
    cfg = DatasetConfig(source="idx", path=str(tmp_path), calibration_count=500, eval_count=10)
    with pytest.raises(DataError) as info:
        load_dataset(cfg, PRE, seed=0)
    assert str(tmp_path) in str(info.value) and "calibration_count=500" in str(info.value)


def test_idx_not_enough_for_eval(tmp_path: Path) -> None:
    _idx_dir(tmp_path)
    cfg = DatasetConfig(source="idx", path=str(tmp_path), calibration_count=10, eval_count=500)
    with pytest.raises(DataError, match=r"only 45 test images.*eval_count=500"):
        load_dataset(cfg, PRE, seed=0)


def test_idx_single_class_is_refused(tmp_path: Path) -> None:
    _idx_dir(tmp_path, classes=1)
    cfg = DatasetConfig(source="idx", path=str(tmp_path), calibration_count=10, eval_count=10)
    with pytest.raises(DataError, match="at least 2"):
        load_dataset(cfg, PRE, seed=0)


def test_idx_labels_out_of_range_with_class_file(tmp_path: Path) -> None:
    _idx_dir(tmp_path, classes=4)
    (tmp_path / "classes.txt").write_text("a\nb\nc\n")
    cfg = DatasetConfig(source="idx", path=str(tmp_path), calibration_count=10, eval_count=10)
    with pytest.raises(DataError, match="contains label 3"):
        load_dataset(cfg, PRE, seed=0)


def _folder(root: Path, per_class: dict[str, int]) -> Path:
    rng = np.random.default_rng(0)
    for index, (name, count) in enumerate(per_class.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            size = (20 + i % 7, 16 + i % 5)
            pixels = rng.integers(0, 50, size[::-1], dtype=np.uint8) + np.uint8(60 * index)
            image = Image.fromarray(pixels)
            if i % 2:
                image.convert("RGB").save(root / name / f"{i}.jpg", quality=95)
            else:
                image.save(root / name / f"{i}.png")
    return root


def test_image_folder_source(tmp_path: Path) -> None:
    _folder(tmp_path, {"ant": 30, "bee": 20, "cow": 50})
    cfg = DatasetConfig(source="image-folder", path=str(tmp_path), test_fraction=0.2, calibration_count=10, eval_count=10)
    data = load_dataset(cfg, PreprocessingConfig(height=16, width=16, channels=3), seed=4)
    assert data.class_names == ["ant", "bee", "cow"]
    assert data.x_train.shape[1:] == (16, 16, 3)
    assert np.bincount(data.y_test).tolist() == [6, 4, 10]
    assert len(data.x_train) + len(data.x_val) + len(data.x_calib) + len(data.x_test) == 100
    plan = data.plan
    assert not (set(plan.test) & (set(plan.train) | set(plan.val) | set(plan.calib)))
    # Brightness encodes the class; check the arrays really hold the right class's pixels.
    assert data.x_train[data.y_train == 2].mean() > data.x_train[data.y_train == 0].mean() + 60


def test_image_folder_class_with_too_few_images(tmp_path: Path) -> None:
    # 9 images, half for test: the lone 'tiny' image has the largest rounding remainder and goes to test.
    _folder(tmp_path, {"a": 4, "b": 4, "tiny": 1})
    cfg = DatasetConfig(source="image-folder", path=str(tmp_path), test_fraction=0.5, calibration_count=1, eval_count=1)
    with pytest.raises(DataError, match=r"'tiny' have no images left in the training split"):
        load_dataset(cfg, PRE, seed=0)


def test_image_folder_single_class(tmp_path: Path) -> None:
    _folder(tmp_path, {"only": 20})
    cfg = DatasetConfig(source="image-folder", path=str(tmp_path), calibration_count=2, eval_count=2)
    with pytest.raises(DataError, match=r"has 1 class \(only\); a classifier needs at least 2"):
        load_dataset(cfg, PRE, seed=0)


def test_max_train_too_small_for_all_classes(tmp_path: Path) -> None:
    _idx_dir(tmp_path, classes=3)
    cfg = DatasetConfig(source="idx", path=str(tmp_path), max_train=2, calibration_count=3, eval_count=3)
    with pytest.raises(DataError, match=r"no images left in the training split.*raise dataset.max_train=2"):
        load_dataset(cfg, PRE, seed=0)
