"""Random erasing and the batches that apply it: what reaches the model, and what must not change."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.training.batches import Batches, random_erasing


def checkerboard(n: int = 64, size: int = 28) -> np.ndarray:
    """Values 0 and 1 only, so any uniform noise written over it differs from it everywhere."""
    board = (np.indices((size, size)).sum(axis=0) % 2).astype(np.float32)
    return np.repeat(board[None, :, :, None], n, axis=0)


def erased_boxes(before: np.ndarray, after: np.ndarray) -> list[tuple[int, int] | None]:
    """Per image: (height, width) of the box around the changed pixels, after checking that the
    box is filled completely (one rectangle, not scattered pixels); None when nothing changed."""
    boxes: list[tuple[int, int] | None] = []
    for a, b in zip(before, after):
        changed = np.argwhere((a != b)[..., 0])
        if len(changed) == 0:
            boxes.append(None)
            continue
        (top, left), (bottom, right) = changed.min(axis=0), changed.max(axis=0)
        assert len(changed) == (bottom - top + 1) * (right - left + 1)
        boxes.append((bottom - top + 1, right - left + 1))
    return boxes


def test_every_image_gets_one_rectangle_of_2_to_40_percent_at_probability_1() -> None:
    batch = checkerboard()
    out = random_erasing(batch, np.random.default_rng(0), probability=1.0)
    boxes = erased_boxes(batch, out)
    assert all(box is not None for box in boxes)
    areas = [h * w / 28**2 for h, w in boxes]  # type: ignore[misc]
    # rounding each side to whole pixels moves the area a little past the sampled 2-40 %
    assert min(areas) >= 0.01 and max(areas) <= 0.45
    assert len({box for box in boxes}) > 10  # sizes vary from image to image
    assert out.min() >= 0.0 and out.max() <= 1.0  # the fill stays in the batch's value range
    np.testing.assert_array_equal(batch, checkerboard())  # the input is not written to


def test_probability_sets_the_share_of_erased_images() -> None:
    batch = checkerboard(2000)
    boxes = erased_boxes(batch, random_erasing(batch, np.random.default_rng(1), probability=0.3))
    share = sum(box is not None for box in boxes) / len(boxes)
    assert 0.25 < share < 0.35
    assert erased_boxes(batch, random_erasing(batch, np.random.default_rng(1), probability=0.0)) == [None] * 2000


def test_batches_erase_images_but_never_touch_targets() -> None:
    x = checkerboard(256)
    targets = np.arange(256 * 3, dtype=np.float32).reshape(256, 3)
    batches = Batches(x, targets, batch_size=64, seed=3, erasing=1.0)
    seen = 0
    for i in range(len(batches)):
        images, y = batches[i]
        idx = batches.order[i * 64 : (i + 1) * 64]
        np.testing.assert_array_equal(y, targets[idx])
        assert all(box is not None for box in erased_boxes(x[idx], images))
        seen += len(images)
    assert seen == 256


@pytest.mark.parametrize("erasing", [0.0, 0.5])
def test_the_same_seed_gives_the_same_batches(erasing: float) -> None:
    x = np.random.default_rng(5).random((100, 28, 28, 1), dtype=np.float32)
    targets = np.zeros((100, 2), np.float32)
    first = Batches(x, targets, 32, seed=9, flip=True, shift=1, erasing=erasing)
    second = Batches(x, targets, 32, seed=9, flip=True, shift=1, erasing=erasing)
    for i in range(len(first)):
        np.testing.assert_array_equal(first[i][0], second[i][0])
