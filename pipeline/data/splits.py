"""Deterministic, stratified train / validation / calibration / test (and eval) splits.

Decisions (each split is a set of indices; all are pairwise disjoint, except eval which is a subset
of test):

* Test. IDX data (Fashion-MNIST) has an official test set and that is the test split, so results
  compare with published numbers. A single pool (image folder) first loses a stratified
  ``test_fraction`` to test, before anything else is drawn.
* Calibration is drawn next, from the training source, and is held OUT of training and
  validation. Calibration only sets activation ranges, so overlap with training would be harmless
  for int8 accuracy, but disjoint images keep every split clean: quantization error can be
  measured on calibration images without bias, and no split is ever double-counted. The cost
  (500 of 60000 images by default) is negligible.
* Validation takes ``validation_fraction`` of what is left; training gets the rest.
* ``max_train`` caps the TRAINING split at that many images (stratified); validation then shrinks
  in proportion, so it stays ``validation_fraction`` of train + validation. Calibration does not
  depend on ``max_train``: quick runs calibrate on the same images as full runs.
* ``max_test`` caps the test split (stratified). ``eval`` (the labelled images shipped in the
  bundle) is a stratified ``eval_count`` subset of the test split.

Every draw uses its own random stream derived from (seed, purpose), so the same seed gives the same
indices, and changing one setting (say ``max_train``) does not reshuffle unrelated splits.
Subsets are class-proportional (largest-remainder rounding) and returned sorted.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Optional

import numpy as np

from pipeline.errors import DataError


@dataclass(frozen=True)
class SplitPlan:
    """Indices of each split. ``train``/``val``/``calib`` index the training source; ``test`` and
    ``eval`` index the test source, which is the same array as the training source when
    ``separate_test`` is False (image folders)."""

    train: np.ndarray
    val: np.ndarray
    calib: np.ndarray
    test: np.ndarray
    eval: np.ndarray
    separate_test: bool


def split_rng(seed: int, purpose: str) -> np.random.Generator:
    """An independent, reproducible random stream for one purpose (any int seed, even negative)."""
    digest = hashlib.sha256(f"edgeship-split:{int(seed)}:{purpose}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def round_half_up(value: float) -> int:
    return int(np.floor(value + 0.5))


def allocate(counts: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` over classes in proportion to ``counts`` (largest remainder method).

    Ties in the remainder go to the larger class, then to the lower class index, so the result is
    deterministic and never exceeds a class's count.
    """
    counts = np.asarray(counts, dtype=np.int64)
    available = int(counts.sum())
    if not 0 <= total <= available:
        raise ValueError(f"cannot take {total} of {available} items")
    if available == 0:
        return np.zeros_like(counts)
    exact = counts * (total / available)
    base = np.floor(exact).astype(np.int64)
    base = np.minimum(base, counts)
    short = total - int(base.sum())
    if short > 0:
        remainder = exact - base
        order = sorted(range(len(counts)), key=lambda i: (-remainder[i], -counts[i], i))
        for i in order:
            if short == 0:
                break
            if base[i] < counts[i]:
                base[i] += 1
                short -= 1
    return base


def stratified_sample(labels: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted positions of a class-proportional random subset of ``count`` items of ``labels``."""
    labels = np.asarray(labels)
    classes = np.unique(labels)
    members = [np.flatnonzero(labels == c) for c in classes]
    take = allocate(np.array([len(m) for m in members]), count)
    chosen = [rng.permutation(m)[:k] for m, k in zip(members, take)]
    if not chosen:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def stratified_subset(indices: np.ndarray, labels: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """A stratified ``count``-subset of ``indices`` (which index ``labels``), sorted."""
    indices = np.asarray(indices, dtype=np.int64)
    if count >= len(indices):
        return np.sort(indices)
    return np.sort(indices[stratified_sample(labels[indices], count, rng)])


def plan_splits(
    labels: np.ndarray,
    test_labels: Optional[np.ndarray] = None,
    *,
    seed: int,
    validation_fraction: float,
    calibration_count: int,
    eval_count: int,
    test_fraction: float = 0.2,
    max_train: Optional[int] = None,
    max_test: Optional[int] = None,
    what: str = "the dataset",
) -> SplitPlan:
    """Plan every split (see the module docstring for the rules).

    ``labels`` are the training-source labels; ``test_labels`` those of an official test set, or
    None to carve test out of ``labels``. ``what`` names the dataset in error messages.
    """
    labels = np.asarray(labels)
    n = len(labels)
    everything = np.arange(n, dtype=np.int64)
    if test_labels is None:
        n_test = round_half_up(test_fraction * n)
        if n_test < 1 or n_test >= n:
            raise DataError(
                f"{what} has {n} images; dataset.test_fraction={test_fraction} leaves {n_test} for test and "
                f"{n - n_test} for everything else. Add images or change test_fraction."
            )
        test = stratified_sample(labels, n_test, split_rng(seed, "test"))
        source = np.setdiff1d(everything, test, assume_unique=True)
        test_pool_labels = labels
    else:
        test = np.arange(len(test_labels), dtype=np.int64)
        source = everything
        test_pool_labels = np.asarray(test_labels)
    if len(test) == 0:
        raise DataError(f"{what} has no test images.")
    if max_test is not None and max_test < len(test):
        test = stratified_subset(test, test_pool_labels, max_test, split_rng(seed, "max_test"))

    if eval_count > len(test):
        limit = f" (after dataset.max_test={max_test})" if max_test is not None and max_test < eval_count else ""
        raise DataError(
            f"{what} has only {len(test)} test images{limit}, fewer than dataset.eval_count={eval_count} "
            "labelled images to ship in the bundle. Lower eval_count, raise max_test, or add images."
        )
    evaluation = stratified_subset(test, test_pool_labels, eval_count, split_rng(seed, "eval"))

    # At least 2 images must remain besides calibration: one to train on, one to validate with.
    if calibration_count > len(source) - 2:
        raise DataError(
            f"{what} has {len(source)} images outside the test split, too few for dataset.calibration_count="
            f"{calibration_count} calibration images held out of training plus training and validation images. "
            "Lower calibration_count (and quantization.calibration_samples) or add images."
        )
    calib = stratified_subset(source, labels, calibration_count, split_rng(seed, "calibration"))
    rest = np.setdiff1d(source, calib, assume_unique=True)

    n_val = max(1, round_half_up(validation_fraction * len(rest)))
    n_train = len(rest) - n_val
    if max_train is not None and max_train < n_train:
        n_train = max_train
        n_val = max(1, round_half_up(max_train * validation_fraction / (1.0 - validation_fraction)))
    if n_train < 1:
        raise DataError(
            f"{what} leaves no training images: {len(rest)} images remain after test and calibration and "
            f"validation_fraction={validation_fraction} takes {n_val}."
        )
    val = stratified_subset(rest, labels, n_val, split_rng(seed, "validation"))
    remaining = np.setdiff1d(rest, val, assume_unique=True)
    train = stratified_subset(remaining, labels, n_train, split_rng(seed, "train"))
    return SplitPlan(train=train, val=val, calib=calib, test=test, eval=evaluation, separate_test=test_labels is not None)
