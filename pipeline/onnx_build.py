"""ONNX conversion checked on a build profile's real images.

The ONNX package converts and checks models on whatever images it is given; taking them from a
profile means running the build's data stage, so that orchestration lives here, above both, and
``pipeline.onnx`` never depends on the build or its stages.
"""

from __future__ import annotations

from typing import Optional

from pipeline.onnx.graph import InputSize
from pipeline.onnx.to_tflite import SampleImages
from pipeline.progress import Progress


def profile_images(profile: str, samples: int, progress: Optional[Progress] = None) -> tuple[SampleImages, InputSize]:
    """Validation images, labels and calibration images of ``profile`` (its data stage, cached)."""
    from pipeline.build import build_profile
    from pipeline.stages.data_stage import Splits

    result = build_profile(profile, progress=progress, until="data")
    pre = result.profile.preprocessing
    data = Splits(result.artifacts["data"], pre)
    images = data.model_input("x_val")[:samples]
    sample = SampleImages(images=images, labels=data.raw("y_val")[: len(images)], calibration=data.model_input("x_calib"))
    return sample, InputSize(pre.height, pre.width, pre.channels)
