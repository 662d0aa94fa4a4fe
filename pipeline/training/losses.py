"""Hinton knowledge distillation as a plain Keras loss.

The label and the teacher's logits travel together in one "packed" target of width 2K
(one-hot labels | teacher logits), so the ordinary ``model.fit`` loop, callbacks and progress all
work unchanged. A scratch baseline is the same loss with alpha = 1, so both students are trained by
literally the same code and only the teacher term differs.
"""

from __future__ import annotations

from typing import Callable

import keras
from keras import ops


def kd_loss(num_classes: int, temperature: float, alpha: float, label_smoothing: float = 0.0) -> Callable:
    """loss = alpha * CE(labels, student) + (1 - alpha) * T^2 * KL(teacher_T || student_T).

    ``label_smoothing`` softens the labels' term only: it is the teacher-free way to soft targets,
    which is what a scratch student is compared with when one asks what distillation adds.
    """
    t = float(temperature)
    smoothing = float(label_smoothing)

    def loss(packed, logits):
        labels = packed[:, :num_classes]
        teacher = packed[:, num_classes:]
        hard = keras.losses.categorical_crossentropy(labels, logits, from_logits=True, label_smoothing=smoothing)
        if alpha >= 1.0:
            return hard
        teacher_log_p = ops.log_softmax(teacher / t, axis=-1)
        student_log_p = ops.log_softmax(logits / t, axis=-1)
        kl = ops.sum(ops.exp(teacher_log_p) * (teacher_log_p - student_log_p), axis=-1)
        return alpha * hard + (1.0 - alpha) * (t * t) * kl

    loss.__name__ = "kd_loss"
    return loss


def packed_accuracy(num_classes: int) -> Callable:
    def accuracy(packed, logits):
        return ops.cast(ops.equal(ops.argmax(packed[:, :num_classes], axis=-1), ops.argmax(logits, axis=-1)), "float32")

    accuracy.__name__ = "accuracy"
    return accuracy
