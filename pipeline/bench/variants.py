"""Bundles of one build profile in another quantization mode, for like-for-like comparisons.

Only the package stage reruns: data, teacher, student and every .tflite come from the cache.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.build import build_profile
from pipeline.config.profile import BuildProfile, load_profile
from pipeline.progress import Progress


def bundle_for_mode(profile: str | BuildProfile, mode: str, progress: Progress | None = None) -> Path:
    base = profile if isinstance(profile, BuildProfile) else load_profile(profile)
    quant = base.quantization.model_copy(update={"ship": mode})
    variant = base.model_copy(update={"quantization": quant})
    result = build_profile(variant, progress=progress)
    assert result.bundle_dir is not None
    return result.bundle_dir
