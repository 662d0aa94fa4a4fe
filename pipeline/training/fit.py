"""One training loop for teachers, scratch students and distilled students.

All three use ``kd_loss`` with packed targets: the teacher and the scratch baseline with alpha = 1
(labels only), the distilled student with the profile's alpha and temperature. Keeping one loop is
what makes "distilled vs scratch under the same budget" a fair comparison.
"""

from __future__ import annotations

import logging
import time
from typing import Optional, Sequence

import keras
import numpy as np

from pipeline.config.profile import TrainingConfig
from pipeline.progress import NullProgress, Progress
from pipeline.training.batches import Batches
from pipeline.training.callbacks import EpochProgress
from pipeline.training.fused_batchnorm import fused_batchnorm
from pipeline.training.losses import kd_loss, packed_accuracy

log = logging.getLogger(__name__)


def pack_targets(labels: np.ndarray, num_classes: int, teacher_logits: Optional[np.ndarray] = None) -> np.ndarray:
    """[one-hot labels | teacher logits (zeros when there is no teacher)] as float32."""
    onehot = np.eye(num_classes, dtype=np.float32)[labels]
    logits = np.zeros_like(onehot) if teacher_logits is None else teacher_logits.astype(np.float32)
    return np.concatenate([onehot, logits], axis=1)


def train_classifier(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    training: TrainingConfig,
    *,
    seed: int,
    label: str,
    x_val: Optional[np.ndarray] = None,
    y_val: Optional[np.ndarray] = None,
    teacher_logits: Optional[np.ndarray] = None,
    teacher_logits_flipped: Optional[np.ndarray] = None,
    temperature: float = 1.0,
    alpha: float = 1.0,
    shift: int = 0,
    progress: Progress = NullProgress(),
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> dict:
    """Train ``model`` (logits output) in place and return per-epoch history and timing.

    With ``teacher_logits`` the loss is Hinton distillation; flips are only used when the
    teacher's logits for the mirrored images are known too, so the soft targets stay exact.
    ``callbacks`` run alongside the progress callback; pruning and clustering use them to keep
    their masks or shared weights in force after every optimizer step.
    """
    keras.utils.set_random_seed(seed)
    distilling = teacher_logits is not None and alpha < 1.0
    flip = training.augment and (not distilling or teacher_logits_flipped is not None)
    targets = pack_targets(y, num_classes, teacher_logits if distilling else None)
    flipped = pack_targets(y, num_classes, teacher_logits_flipped) if distilling and flip else None
    shift = shift if training.augment else 0
    erasing = training.erasing if training.augment else 0.0
    batches = Batches(x, targets, training.batch_size, seed, flip=flip, shift=shift, flipped_targets=flipped, erasing=erasing)
    steps = len(batches) * training.epochs
    schedule = keras.optimizers.schedules.CosineDecay(training.learning_rate, decay_steps=steps, alpha=0.01)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=kd_loss(num_classes, temperature, alpha if distilling else 1.0, training.label_smoothing),
        metrics=[packed_accuracy(num_classes)],
    )
    validation = (x_val, pack_targets(y_val, num_classes)) if x_val is not None and y_val is not None else None
    started = time.perf_counter()
    with progress.task(f"training {label}", total=steps) as advance, fused_batchnorm(model):
        callback = EpochProgress(advance, label, on_epoch=progress.detail)
        model.fit(batches, epochs=training.epochs, validation_data=validation, callbacks=[callback, *callbacks], verbose=0)
    seconds = time.perf_counter() - started
    last = callback.history[-1] if callback.history else {}
    return {
        "epochs": training.epochs,
        "train_seconds": round(seconds, 2),
        "train_accuracy": last.get("accuracy"),
        "val_accuracy": last.get("val_accuracy"),
        "history": callback.history,
        "distilled": distilling,
        "augmentation": {"flip": flip, "shift": shift, "erasing": erasing},
        "label_smoothing": training.label_smoothing,
    }


def predict_logits(model: keras.Model, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0), dtype=np.float32)
