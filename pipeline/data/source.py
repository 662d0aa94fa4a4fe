"""``load_dataset``: one call from a profile's dataset + preprocessing sections to ready splits.

Whatever the source, the result is the same :class:`Dataset`: uint8 NHWC images already at the
profile's (height, width, channels), int64 labels, class names, and a hash of the raw source files
for provenance. All checks a user can fix (missing files, too few images, bad labels) happen here and
raise :class:`DataError`, so later stages can trust the arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from pipeline.config.profile import DatasetConfig, PreprocessingConfig
from pipeline.data.fashion_mnist import FASHION_MNIST_DIR, load_fashion_mnist, load_idx_directory
from pipeline.data.image_folder import load_image_folder
from pipeline.data.preprocessing import PreprocessingSpec, fit_images
from pipeline.data.splits import SplitPlan, plan_splits
from pipeline.errors import DataError


@dataclass
class Dataset:
    """Every split as raw uint8 NHWC images (preprocess with ``preprocessing.apply``) + int64 labels.

    ``x_eval``/``y_eval`` are the labelled test images shipped in the bundle (a subset of test).
    ``source_sha256`` hashes the raw source files (IDX files or image bytes), not the arrays, so it
    identifies the data a model was built from independently of preprocessing and splits.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_calib: np.ndarray
    y_calib: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_eval: np.ndarray
    y_eval: np.ndarray
    class_names: list[str]
    source_sha256: str
    source: str = ""
    location: str = ""
    seed: int = 0
    preprocessing: Optional[PreprocessingSpec] = None
    plan: Optional[SplitPlan] = field(default=None, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.x_train.shape[1:])  # type: ignore[return-value]

    def splits(self) -> dict[str, tuple[np.ndarray, Optional[np.ndarray]]]:
        return {
            "train": (self.x_train, self.y_train),
            "validation": (self.x_val, self.y_val),
            "calibration": (self.x_calib, self.y_calib),
            "test": (self.x_test, self.y_test),
            "eval": (self.x_eval, self.y_eval),
        }

    def describe(self) -> list[dict[str, Any]]:
        """One row per split (images, per-class min/max, classes present) for report tables."""
        rows = []
        for name, (x, y) in self.splits().items():
            counts = np.bincount(y, minlength=self.num_classes) if y is not None and len(y) else np.zeros(self.num_classes, int)
            rows.append(
                {
                    "split": name,
                    "images": int(len(x)),
                    "shape": "x".join(str(v) for v in x.shape[1:]),
                    "classes": int(np.count_nonzero(counts)),
                    "min_per_class": int(counts.min()) if len(counts) else 0,
                    "max_per_class": int(counts.max()) if len(counts) else 0,
                }
            )
        return rows

    def summary(self) -> dict[str, Any]:
        """Provenance facts: where the data came from and what it looks like."""
        return {
            "source": self.source,
            "location": self.location,
            "sha256": self.source_sha256,
            "seed": self.seed,
            "classes": list(self.class_names),
            "input_shape": list(self.input_shape),
            "counts": {row["split"]: row["images"] for row in self.describe()},
        }


def _check_labels(labels: np.ndarray, num_classes: int, where: str) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = int(labels.min()) if labels.min() < 0 else int(labels.max())
        raise DataError(f"{where} contains label {bad}, outside 0..{num_classes - 1} for its {num_classes} classes.")


def _check_training(y_train: np.ndarray, class_names: list[str], what: str, max_train: Optional[int]) -> None:
    counts = np.bincount(y_train, minlength=len(class_names))
    present = int(np.count_nonzero(counts))
    if present < 2:
        raise DataError(f"{what} has training images of only {present} class after splitting; at least 2 are needed.")
    empty = [class_names[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        raise DataError(
            f"{what}: class(es) {', '.join(repr(c) for c in empty[:10])} have no images left in the training split "
            "after test, calibration and validation were held out. Add images to them, or lower "
            "dataset.calibration_count / test_fraction / validation_fraction"
            + (f", or raise dataset.max_train={max_train}." if max_train is not None else ".")
        )


def load_dataset(cfg: DatasetConfig, pre: PreprocessingConfig, seed: int) -> Dataset:
    """Load, convert, resize and split the dataset named by the profile; validate it on the way."""
    spec = PreprocessingSpec.from_config(pre)
    split_args = dict(
        seed=seed,
        validation_fraction=cfg.validation_fraction,
        calibration_count=cfg.calibration_count,
        eval_count=cfg.eval_count,
        test_fraction=cfg.test_fraction,
        max_train=cfg.max_train,
        max_test=cfg.max_test,
    )
    if cfg.source in ("fashion-mnist", "idx"):
        if cfg.source == "fashion-mnist":
            directory = Path(cfg.path).expanduser() if cfg.path else FASHION_MNIST_DIR
            raw = load_fashion_mnist(directory)
            what = f"Fashion-MNIST in {directory}"
        else:
            directory = Path(str(cfg.path)).expanduser()
            raw = load_idx_directory(directory)
            what = f"IDX dataset {directory}"
        _check_labels(raw.train_labels, len(raw.class_names), str(raw.files["train_labels"]))
        _check_labels(raw.test_labels, len(raw.class_names), str(raw.files["test_labels"]))
        train_x, train_y, test_x, test_y = raw.train_images, raw.train_labels, raw.test_images, raw.test_labels
        class_names, digest, location = raw.class_names, raw.sha256, str(directory)
    elif cfg.source == "image-folder":
        root = Path(str(cfg.path)).expanduser()
        folder = load_image_folder(root, pre.height, pre.width, pre.channels)
        what = f"Image folder {root}"
        train_x = test_x = folder.images
        train_y = test_y = folder.labels
        class_names, digest, location = folder.class_names, folder.sha256, str(root)
    else:  # pragma: no cover - the profile schema only allows the three sources above
        raise DataError(f"Unknown dataset source '{cfg.source}'.")
    if len(class_names) < 2:
        raise DataError(f"{what} has {len(class_names)} class ({', '.join(class_names)}); a classifier needs at least 2.")
    separate_test = cfg.source != "image-folder"
    plan = plan_splits(train_y, test_y if separate_test else None, what=what, **split_args)

    def take(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
        # IDX images are converted/resized here, only for the images actually used.
        return fit_images(x[idx], pre.height, pre.width, pre.channels)

    dataset = Dataset(
        x_train=take(train_x, plan.train),
        y_train=train_y[plan.train],
        x_val=take(train_x, plan.val),
        y_val=train_y[plan.val],
        x_calib=take(train_x, plan.calib),
        y_calib=train_y[plan.calib],
        x_test=take(test_x, plan.test),
        y_test=test_y[plan.test],
        x_eval=take(test_x, plan.eval),
        y_eval=test_y[plan.eval],
        class_names=list(class_names),
        source_sha256=digest,
        source=cfg.source,
        location=location,
        seed=seed,
        preprocessing=spec,
        plan=plan,
    )
    _check_training(dataset.y_train, dataset.class_names, what, cfg.max_train)
    return dataset
