"""The preprocessing contract shared by host and device: ``(x * scale - mean) / std`` on uint8 NHWC.

Resizing and channel conversion happen ONCE, when the dataset is loaded on the host (PIL, bilinear),
so every split, the calibration set and the bundle's ``eval/images.npy`` are already
``height x width x channels`` uint8. The device therefore only applies the affine normalisation
recorded in the manifest; the spec records ``resize`` so nobody has to guess where that happened.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

from pipeline.config.profile import PreprocessingConfig

RESIZE_NOTE = "bilinear-at-load"  # resized on the host when the dataset is loaded (PIL bilinear)

# ITU-R 601-2 luma, the weights PIL uses for RGB -> L, so folder and IDX data convert identically.
_LUMA = np.array([299, 587, 114], dtype=np.uint32)


@dataclass(frozen=True)
class PreprocessingSpec:
    """What the manifest records; :meth:`apply` is the host-side implementation of it."""

    height: int
    width: int
    channels: int
    scale: float
    mean: float
    std: float
    layout: str = "NHWC"
    resize: str = RESIZE_NOTE

    @classmethod
    def from_config(cls, pre: PreprocessingConfig) -> "PreprocessingSpec":
        return cls(pre.height, pre.width, pre.channels, float(pre.scale), float(pre.mean), float(pre.std))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.channels)

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``preprocessing`` block."""
        return asdict(self)

    def apply(self, images: np.ndarray) -> np.ndarray:
        return apply(images, self)


def apply(images: np.ndarray, spec: PreprocessingSpec) -> np.ndarray:
    """uint8 NHWC (or a single HWC image) -> float32 ``(x * scale - mean) / std``.

    Refuses anything but uint8 of the spec's shape: normalising twice, or feeding 32x32 images to a
    28x28 model, must fail loudly rather than silently produce garbage accuracy.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"preprocessing expects raw uint8 images, got {images.dtype}")
    if images.ndim not in (3, 4) or images.shape[-3:] != spec.input_shape:
        raise ValueError(f"preprocessing expects images of shape (N, {spec.height}, {spec.width}, {spec.channels}), got {images.shape}")
    # Same arithmetic as device_agents/agent.py (float64, rounded to float32 once), so host and
    # device feed bit-identical inputs to the model and agreement can be exact.
    x = ((images.astype(np.float64) * float(spec.scale) - float(spec.mean)) / float(spec.std)).astype(np.float32)
    return x


def convert_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """uint8 NHWC with 1 or 3 channels -> ``channels`` channels (grey is replicated; RGB -> luma)."""
    have = images.shape[-1]
    if have == channels:
        return images
    if have == 1 and channels == 3:
        return np.repeat(images, 3, axis=-1)
    if have == 3 and channels == 1:
        # Same integer arithmetic as PIL's convert("L"): (R*299 + G*587 + B*114 + 500) // 1000.
        luma = (images.astype(np.uint32) @ _LUMA + 500) // 1000
        return luma.astype(np.uint8)[..., np.newaxis]
    raise ValueError(f"cannot convert {have}-channel images to {channels} channels")


def resize_images(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize uint8 NHWC images with PIL bilinear; a no-op when the size already matches."""
    if images.shape[1:3] == (height, width):
        return images
    out = np.empty((len(images), height, width, images.shape[-1]), dtype=np.uint8)
    for i, image in enumerate(images):
        out[i] = resize_one(image, height, width)
    return out


def resize_one(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """One HWC uint8 image -> (height, width, C) with PIL bilinear."""
    grey = image.shape[-1] == 1
    pil = Image.fromarray(np.ascontiguousarray(image[..., 0] if grey else image))  # uint8 2-D -> "L", HxWx3 -> "RGB"
    resized = np.asarray(pil.resize((width, height), Image.Resampling.BILINEAR), dtype=np.uint8)
    return resized[..., np.newaxis] if grey else resized


def fit_images(images: np.ndarray, height: int, width: int, channels: int) -> np.ndarray:
    """Bring uint8 NHWC images to the profile's (height, width, channels): channels, then size."""
    return resize_images(convert_channels(images, channels), height, width)
