"""Student families by name, as the profile's ``student.family`` spells them.

Builders are imported inside :func:`build_student`, so listing the families costs no TensorFlow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from pipeline.errors import ConfigError
from pipeline.models.common import model_name

if TYPE_CHECKING:  # pragma: no cover
    import keras

FAMILIES: tuple[str, ...] = ("mobilenet_v1", "mobilenet_v2", "mobilenet_v2_fused", "squeezenet")


def student_name(family: str, width_multiplier: float = 1.0) -> str:
    """The model name and provenance ``student architecture``, e.g. ``mobilenet_v2_w1.0``."""
    return model_name(family, width_multiplier)


def build_student(family: str, input_shape: Sequence[int], num_classes: int, width_multiplier: float = 1.0) -> "keras.Model":
    """A freshly initialised student of ``family`` that outputs logits; named ``<family>_w<width>``."""
    if family == "mobilenet_v1":
        from pipeline.models.mobilenet import build_mobilenet_v1 as builder
    elif family == "mobilenet_v2":
        from pipeline.models.mobilenet import build_mobilenet_v2 as builder
    elif family == "mobilenet_v2_fused":
        from pipeline.models.mobilenet import build_mobilenet_v2_fused as builder
    elif family == "squeezenet":
        from pipeline.models.squeezenet import build_squeezenet as builder
    else:
        raise ConfigError(f"Unknown student family '{family}' (student.family); known families: {', '.join(FAMILIES)}.")
    return builder(input_shape, num_classes, width_multiplier=width_multiplier)
