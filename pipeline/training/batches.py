"""Mini-batches with cheap, label-preserving augmentation, built in numpy.

Teacher logits are cached once per image for two views (as-is and mirrored), so distillation can
augment with horizontal flips and still use exact cached teacher outputs. Random shifts and random
erasing change what the teacher would say a little, so a distilled student trained with them learns
the soft target of the unaltered view: the class evidence it should still find.
"""

from __future__ import annotations

import math
from typing import Optional

import keras
import numpy as np


def random_shift(batch: np.ndarray, rng: np.random.Generator, max_shift: int = 2) -> np.ndarray:
    """Pad by ``max_shift`` and crop back at a random offset per image."""
    n, h, w, _ = batch.shape
    padded = np.pad(batch, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)))
    dy = rng.integers(0, 2 * max_shift + 1, size=n)
    dx = rng.integers(0, 2 * max_shift + 1, size=n)
    out = np.empty_like(batch)
    for i in range(n):
        out[i] = padded[i, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
    return out


def random_erasing(batch: np.ndarray, rng: np.random.Generator, probability: float) -> np.ndarray:
    """Random erasing (Zhong et al., 2017): per image with ``probability``, fill one rectangle of
    2-40 % of the area and aspect ratio 0.3-3.3 with uniform noise over the batch's value range.

    A regulariser for small datasets: the model cannot rely on any one region, e.g. a collar.
    """
    n, h, w, _ = batch.shape
    out = batch.copy()
    low, high = float(batch.min()), float(batch.max())
    for i in np.flatnonzero(rng.random(n) < probability):
        area = rng.uniform(0.02, 0.4) * h * w
        aspect = np.exp(rng.uniform(np.log(0.3), np.log(1 / 0.3)))
        eh = min(h, max(1, int(round(np.sqrt(area * aspect)))))
        ew = min(w, max(1, int(round(np.sqrt(area / aspect)))))
        top, left = rng.integers(0, h - eh + 1), rng.integers(0, w - ew + 1)
        out[i, top : top + eh, left : left + ew] = rng.uniform(low, high, size=out[i, top : top + eh, left : left + ew].shape)
    return out


class Batches(keras.utils.PyDataset):
    """Shuffled batches of (images, targets), reshuffled and re-augmented every epoch.

    ``targets`` is whatever the loss expects (sparse labels or packed labels|teacher logits);
    ``flipped_targets`` is used for images that were mirrored, when given.
    """

    def __init__(
        self,
        x: np.ndarray,
        targets: np.ndarray,
        batch_size: int,
        seed: int,
        flip: bool = False,
        shift: int = 0,
        flipped_targets: Optional[np.ndarray] = None,
        erasing: float = 0.0,
    ) -> None:
        super().__init__()
        self.x, self.targets, self.flipped_targets = x, targets, flipped_targets
        self.batch_size, self.flip, self.shift, self.erasing = batch_size, flip, shift, erasing
        self.rng = np.random.default_rng(seed)
        self.on_epoch_end()

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def on_epoch_end(self) -> None:
        self.order = self.rng.permutation(len(self.x))
        self.mirror = self.rng.random(len(self.x)) < 0.5 if self.flip else np.zeros(len(self.x), bool)

    def __getitem__(self, index: int):
        idx = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        x = self.x[idx].copy()
        y = self.targets[idx].copy()
        mirror = self.mirror[idx]
        if mirror.any():
            x[mirror] = x[mirror][:, :, ::-1]
            if self.flipped_targets is not None:
                y[mirror] = self.flipped_targets[idx][mirror]
        if self.shift:
            x = random_shift(x, self.rng, self.shift)
        if self.erasing:
            x = random_erasing(x, self.rng, self.erasing)
        return x, y
