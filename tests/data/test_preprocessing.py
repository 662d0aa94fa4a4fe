"""The preprocessing contract: the affine math, the recorded spec, channel conversion and resizing."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipeline.config.profile import PreprocessingConfig
from pipeline.data.preprocessing import PreprocessingSpec, apply, convert_channels, fit_images, resize_images


def test_apply_math() -> None:
    spec = PreprocessingSpec(height=2, width=2, channels=1, scale=1 / 255, mean=0.5, std=0.25)
    images = np.array([[[[0], [255]], [[128], [51]]]], dtype=np.uint8)
    out = apply(images, spec)
    assert out.dtype == np.float32 and out.shape == (1, 2, 2, 1)
    np.testing.assert_allclose(out[0, :, :, 0], [[-2.0, 2.0], [(128 / 255 - 0.5) / 0.25, (0.2 - 0.5) / 0.25]], atol=1e-6)
    np.testing.assert_array_equal(spec.apply(images), out)


def test_apply_default_profile_is_unit_range() -> None:
    spec = PreprocessingSpec.from_config(PreprocessingConfig())
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28, 1), dtype=np.uint8)
    out = spec.apply(images)
    np.testing.assert_allclose(out, images / 255.0, atol=1e-7)
    assert out.min() >= 0 and out.max() <= 1


def test_apply_refuses_floats_and_wrong_shapes() -> None:
    spec = PreprocessingSpec.from_config(PreprocessingConfig())
    with pytest.raises(ValueError, match="uint8"):
        spec.apply(np.zeros((1, 28, 28, 1), np.float32))
    with pytest.raises(ValueError, match=r"\(N, 28, 28, 1\)"):
        spec.apply(np.zeros((1, 32, 32, 1), np.uint8))


def test_spec_records_everything_the_device_needs() -> None:
    spec = PreprocessingSpec.from_config(PreprocessingConfig(height=32, width=24, channels=3, mean=0.5, std=0.2))
    record = spec.to_dict()
    assert record == {
        "height": 32, "width": 24, "channels": 3, "scale": pytest.approx(1 / 255), "mean": 0.5, "std": 0.2,
        "layout": "NHWC", "resize": "bilinear-at-load",
    }
    assert spec.input_shape == (32, 24, 3)


def test_rgb_to_grey_matches_pil() -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (4, 9, 7, 3), dtype=np.uint8)
    grey = convert_channels(rgb, 1)
    assert grey.shape == (4, 9, 7, 1)
    for image, converted in zip(rgb, grey):
        np.testing.assert_array_equal(converted[..., 0], np.asarray(Image.fromarray(image).convert("L")))


def test_grey_to_rgb_replicates() -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(1, 3, 4, 1)
    rgb = convert_channels(grey, 3)
    assert rgb.shape == (1, 3, 4, 3)
    for c in range(3):
        np.testing.assert_array_equal(rgb[..., c], grey[..., 0])


def test_resize_matches_pil_bilinear_and_is_noop_at_size() -> None:
    images = np.random.default_rng(2).integers(0, 256, (2, 28, 28, 1), dtype=np.uint8)
    assert resize_images(images, 28, 28) is images
    out = resize_images(images, 32, 16)
    assert out.shape == (2, 32, 16, 1) and out.dtype == np.uint8
    expected = np.asarray(Image.fromarray(images[1, ..., 0]).resize((16, 32), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(out[1, ..., 0], expected)


def test_fit_images_converts_then_resizes() -> None:
    images = np.full((1, 10, 10, 1), 77, dtype=np.uint8)
    out = fit_images(images, 20, 20, 3)
    assert out.shape == (1, 20, 20, 3) and (out == 77).all()
