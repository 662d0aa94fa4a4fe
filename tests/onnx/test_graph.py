"""Validation of ONNX files before conversion: real onnx, no TensorFlow, fast."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import ConfigError, ConversionError
from pipeline.onnx.graph import InputSize, load_onnx, prepare
from tests.onnx.helpers import conv_classifier

KEYS = {"layout": "teacher.onnx.layout", "height": "preprocessing.height", "width": "preprocessing.width", "channels": "preprocessing.channels"}


def _prepare(path: Path, layout="NCHW", size=InputSize(), expected=None, **kwargs):
    return prepare(load_onnx(path), layout, size, expected, f"model {path.name}", KEYS, **kwargs)


def test_not_onnx_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "teacher.onnx"
    bad.write_bytes(b"\x08\x07garbage that is not a protobuf" * 20)
    with pytest.raises(ConfigError, match=r"teacher\.onnx is not a valid ONNX"):
        load_onnx(bad)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_onnx(tmp_path / "nope.onnx")


def test_unconvertible_op_is_named(tmp_path: Path) -> None:
    path = conv_classifier(tmp_path / "custom.onnx", custom_op=True)
    with pytest.raises(ConversionError, match=r"onnx2tf cannot convert: FancyOp \(domain com\.example\) at node 'fancy'"):
        load_onnx(path)


def test_static_model_is_prepared_with_dynamic_batch(tmp_path: Path) -> None:
    prepared = _prepare(conv_classifier(tmp_path / "m.onnx", dims=(1, 1, 12, 12)), expected=(12, 12, 1))
    assert prepared.input_shape == (12, 12, 1) and prepared.num_outputs == 3 and prepared.layout == "NCHW"
    dims = prepared.model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [1, 12, 12]
    assert prepared.parameters == 4 * 9 + 4 * 3 + 3
    assert prepared.macs == 12 * 12 * 4 * 9 + 4 * 3


def test_dynamic_size_needs_the_profile(tmp_path: Path) -> None:
    path = conv_classifier(tmp_path / "dyn.onnx", dims=("N", 1, "H", "W"))
    with pytest.raises(ConfigError, match=r"dynamic height and width.*Set preprocessing\.height and preprocessing\.width"):
        _prepare(path, expected=(12, 12, 1))
    prepared = _prepare(path, size=InputSize(16, 20, None), expected=(16, 20, 1))
    assert prepared.input_shape == (16, 20, 1)


def test_size_mismatch_names_the_setting(tmp_path: Path) -> None:
    path = conv_classifier(tmp_path / "m.onnx", dims=("N", 1, 12, 12))
    with pytest.raises(ConfigError, match="the data pipeline makes images with height 28"):
        _prepare(path, expected=(28, 28, 1))


def test_layout_that_only_fits_transposed_is_called_wrong(tmp_path: Path) -> None:
    path = conv_classifier(tmp_path / "m.onnx", dims=("N", 1, 12, 12))
    with pytest.raises(ConfigError, match=r"layout \(teacher\.onnx\.layout: NHWC\) looks wrong; set it to NCHW"):
        _prepare(path, layout="NHWC", expected=(12, 12, 1))
    with pytest.raises(ConfigError, match=r"layout looks wrong: set teacher\.onnx\.layout to NCHW"):
        _prepare(path, layout="NHWC")  # no data to compare with: 12 channels of 1x12 is implausible


def test_final_softmax_is_removed_for_teachers(tmp_path: Path) -> None:
    path = conv_classifier(tmp_path / "soft.onnx", softmax=True)
    prepared = _prepare(path, expected=(12, 12, 1), strip_softmax=True)
    assert prepared.softmax_removed and prepared.output_name == "logits"
    assert not any(n.op_type == "Softmax" for n in prepared.model.graph.node)
    assert not _prepare(path, expected=(12, 12, 1)).softmax_removed
