"""Keras callbacks that feed edgeship's progress reporting."""

from __future__ import annotations

import logging
from typing import Callable, Optional

import keras

log = logging.getLogger(__name__)


class EpochProgress(keras.callbacks.Callback):
    """Advances a progress bar per batch and records one line of metrics per epoch."""

    def __init__(self, advance: Callable[[float], None], label: str, on_epoch: Optional[Callable[[str], None]] = None) -> None:
        super().__init__()
        self.advance, self.label, self.on_epoch = advance, label, on_epoch
        self.history: list[dict[str, float]] = []

    def on_train_batch_end(self, batch, logs=None) -> None:
        self.advance(1)

    def on_epoch_end(self, epoch, logs=None) -> None:
        logs = {k: float(v) for k, v in (logs or {}).items()}
        self.history.append(logs)
        text = f"{self.label} epoch {epoch + 1}: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(logs.items()) if k != "learning_rate")
        if self.on_epoch:
            self.on_epoch(text)
        else:
            log.info(text)
