"""Split planning: determinism, disjointness, stratification, caps and the errors users can hit."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.data.splits import allocate, plan_splits, stratified_sample, split_rng
from pipeline.errors import DataError

LABELS = np.repeat(np.arange(10), 600)  # 6000 balanced training labels
TEST = np.repeat(np.arange(10), 100)
ARGS = dict(validation_fraction=0.1, calibration_count=500, eval_count=200)


def test_allocate_is_proportional_and_exact() -> None:
    assert allocate(np.array([50, 30, 20]), 10).tolist() == [5, 3, 2]
    out = allocate(np.array([7, 7, 7]), 10)
    assert out.sum() == 10 and out.max() - out.min() <= 1
    out = allocate(np.array([1, 1000]), 500)
    assert out.sum() == 500 and out[0] <= 1
    assert allocate(np.array([3, 4]), 7).tolist() == [3, 4]
    with pytest.raises(ValueError):
        allocate(np.array([3, 4]), 8)


def test_stratified_sample_keeps_class_shares() -> None:
    labels = np.array([0] * 80 + [1] * 20)
    picked = stratified_sample(labels, 10, split_rng(1, "x"))
    assert len(picked) == 10 and len(set(picked)) == 10
    assert np.bincount(labels[picked]).tolist() == [8, 2]
    assert (np.diff(picked) > 0).all()


def test_same_seed_same_indices_and_different_seed_differs() -> None:
    a = plan_splits(LABELS, TEST, seed=7, **ARGS)
    b = plan_splits(LABELS, TEST, seed=7, **ARGS)
    c = plan_splits(LABELS, TEST, seed=8, **ARGS)
    for name in ("train", "val", "calib", "test", "eval"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    for name in ("val", "calib", "eval"):
        assert not np.array_equal(getattr(a, name), getattr(c, name)), name


def test_official_test_set_is_the_test_split_and_others_are_disjoint() -> None:
    plan = plan_splits(LABELS, TEST, seed=1, **ARGS)
    assert plan.separate_test
    np.testing.assert_array_equal(plan.test, np.arange(1000))
    train, val, calib = set(plan.train), set(plan.val), set(plan.calib)
    assert not (train & val) and not (train & calib) and not (val & calib)
    assert len(train) + len(val) + len(calib) == 6000  # nothing lost
    assert len(calib) == 500 and np.bincount(LABELS[plan.calib]).tolist() == [50] * 10
    assert len(val) == 550 and np.bincount(LABELS[plan.val]).tolist() == [55] * 10
    assert set(plan.eval) <= set(plan.test) and len(plan.eval) == 200
    assert np.bincount(TEST[plan.eval]).tolist() == [20] * 10


def test_single_pool_splits_test_off_first_stratified() -> None:
    labels = np.array([0] * 300 + [1] * 100 + [2] * 100)
    plan = plan_splits(labels, None, seed=3, test_fraction=0.2, validation_fraction=0.25, calibration_count=40, eval_count=30)
    assert not plan.separate_test
    assert np.bincount(labels[plan.test]).tolist() == [60, 20, 20]
    groups = [set(plan.train), set(plan.val), set(plan.calib), set(plan.test)]
    for i in range(4):
        for j in range(i + 1, 4):
            assert not (groups[i] & groups[j])
    assert sum(map(len, groups)) == 500
    assert set(plan.eval) <= set(plan.test)
    assert len(plan.val) == 90  # 25% of the 360 left after test (100) and calibration (40)


def test_max_train_caps_training_and_keeps_calibration() -> None:
    full = plan_splits(LABELS, TEST, seed=5, **ARGS)
    quick = plan_splits(LABELS, TEST, seed=5, max_train=900, max_test=300, **ARGS)
    assert len(quick.train) == 900 and np.bincount(LABELS[quick.train]).tolist() == [90] * 10
    assert len(quick.val) == 100  # validation stays 10% of train + validation
    np.testing.assert_array_equal(quick.calib, full.calib)  # quick runs calibrate on the same images
    assert len(quick.test) == 300 and np.bincount(TEST[quick.test]).tolist() == [30] * 10
    assert set(quick.eval) <= set(quick.test)
    assert not (set(quick.train) & set(quick.calib))


def test_max_train_larger_than_available_is_harmless() -> None:
    plan = plan_splits(LABELS, TEST, seed=5, max_train=10**6, **ARGS)
    assert len(plan.train) == 6000 - 500 - 550


def test_negative_seed_is_fine() -> None:
    plan = plan_splits(LABELS, TEST, seed=-4, **ARGS)
    assert len(plan.calib) == 500


def test_eval_count_larger_than_test() -> None:
    with pytest.raises(DataError, match=r"only 100 test images \(after dataset.max_test=100\).*eval_count=200"):
        plan_splits(LABELS, TEST, seed=1, max_test=100, what="Fashion-MNIST in /x", **ARGS)


def test_calibration_count_too_large() -> None:
    with pytest.raises(DataError, match=r"Tiny set has 60 images .*calibration_count=500"):
        plan_splits(LABELS[:60], TEST, seed=1, what="Tiny set", validation_fraction=0.1, calibration_count=500, eval_count=10)


def test_test_fraction_leaving_nothing() -> None:
    with pytest.raises(DataError, match="test_fraction"):
        plan_splits(np.array([0, 1]), None, seed=1, test_fraction=0.1, validation_fraction=0.1, calibration_count=1, eval_count=1)
