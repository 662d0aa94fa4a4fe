"""Mini-batches with cheap, label-preserving augmentation, built in numpy.

Teacher logits are cached once per image for two views (as-is and mirrored), so distillation can
augment with horizontal flips and still use exact cached teacher outputs. The teacher itself also
trains with small random shifts.
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
    ) -> None:
        super().__init__()
        self.x, self.targets, self.flipped_targets = x, targets, flipped_targets
        self.batch_size, self.flip, self.shift = batch_size, flip, shift
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
        return x, y
