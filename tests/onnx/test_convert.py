"""Keras → ONNX (tf2onnx) → TensorFlow (onnx2tf) → .tflite, with real onnxruntime and LiteRT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.errors import ConfigError, ConversionError
from pipeline.onnx.check import Tolerance, onnx_session, run_onnx
from pipeline.onnx.to_tflite import SampleImages, onnx_to_tflite
from tests.onnx.helpers import conv_classifier, export_nchw, keras_classifier

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory):
    model = keras_classifier()
    path = export_nchw(model, tmp_path_factory.mktemp("onnx") / "teacher.onnx")
    return model, path


def _images(count: int = 48, shape=(12, 12, 1), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((count, *shape), dtype=np.float32)


def test_keras_onnx_tflite_round_trip_agrees(teacher, tmp_path: Path) -> None:
    from pipeline.quantize.litert_eval import predict

    model, path = teacher
    x = _images()
    keras_out = np.asarray(model.predict(x, verbose=0))
    ort_out = run_onnx(onnx_session(str(path)), x.transpose(0, 3, 1, 2))
    assert np.abs(ort_out - keras_out).max() < 1e-4  # tf2onnx export is faithful

    result = onnx_to_tflite(path, tmp_path / "teacher.tflite", layout="NCHW", samples=SampleImages(images=x))
    conversion, tflite_check = result.reports
    assert conversion.passed and conversion.top1_agreement == 1.0 and conversion.max_abs_error < 1e-4
    assert tflite_check.passed and tflite_check.top1_agreement == 1.0
    assert result.input_shape == (12, 12, 1)
    tflite_out = predict(result.out.read_bytes(), x)  # NHWC in, as on the device
    assert np.abs(tflite_out - keras_out).max() < 1e-4
    assert np.mean(tflite_out.argmax(1) == keras_out.argmax(1)) == 1.0


def test_int8_conversion_is_reported_not_enforced(teacher, tmp_path: Path) -> None:
    _, path = teacher
    x = _images(64)
    result = onnx_to_tflite(path, tmp_path / "t8.tflite", quantization="int8", samples=SampleImages(images=x, calibration=x))
    assert result.reports[0].passed and result.reports[1].max_abs_error_limit is None
    assert result.out.is_file() and result.quantization == "int8"


def test_wrong_layout_is_caught_by_the_agreement_check(tmp_path: Path) -> None:
    """4x4x4 inputs fit both layouts, so only the outputs can tell: onnxruntime's top-1 against the
    labels is far better with the images transposed, and the error says to switch the layout."""
    model = keras_classifier(shape=(4, 4, 4), classes=5, flatten=True)
    path = export_nchw(model, tmp_path / "square.onnx")
    x = _images(300, shape=(4, 4, 4), seed=3)
    labels = np.asarray(model.predict(x, verbose=0)).argmax(1)  # what a well-trained model would say
    with pytest.raises(ConfigError, match=r"layout looks wrong.*set --layout to NCHW"):
        onnx_to_tflite(path, tmp_path / "x.tflite", layout="NHWC", samples=SampleImages(images=x, labels=labels))
    assert not (tmp_path / "x.tflite").exists()
    ok = onnx_to_tflite(path, tmp_path / "x.tflite", layout="NCHW", samples=SampleImages(images=x, labels=labels))
    assert ok.reports[0].reference_top1 == 1.0 and ok.reports[0].candidate_top1 == 1.0


def test_disagreement_above_tolerance_fails(teacher, tmp_path: Path) -> None:
    _, path = teacher
    with pytest.raises(ConversionError, match="does not agree with onnxruntime: max abs error"):
        onnx_to_tflite(path, tmp_path / "t.tflite", tolerance=Tolerance(max_abs_error=1e-12), samples=SampleImages(images=_images()))
    assert not (tmp_path / "t.tflite").exists()


def test_cli_convert_onnx2tflite(teacher, tmp_path: Path) -> None:
    from pipeline.cli import main

    _, path = teacher
    out = tmp_path / "cli.tflite"
    result = CliRunner().invoke(main, ["convert", "onnx2tflite", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert out.is_file() and "onnx2tf vs" in text and "random images" in text and "wrote" in text


@pytest.mark.parametrize(
    "make, args, message",
    [
        (lambda d: (d / "junk.onnx").write_bytes(b"not onnx at all" * 9) and d / "junk.onnx", [], "junk.onnx is not a valid ONNX"),
        (lambda d: conv_classifier(d / "custom.onnx", custom_op=True), [], "cannot convert: FancyOp (domain com.example)"),
        (lambda d: conv_classifier(d / "dyn.onnx", dims=("N", 1, "H", "W")), [], "dynamic height and width"),
        (lambda d: conv_classifier(d / "m.onnx", dims=("N", 1, 12, 12)), ["--layout", "NHWC"], "set --layout to NCHW"),
    ],
    ids=["not-onnx", "unsupported-op", "dynamic-size", "wrong-layout"],
)
def test_cli_bad_input_is_a_clean_error(make, args, message: str, tmp_path: Path) -> None:
    from pipeline.cli import main

    path = make(tmp_path)
    result = CliRunner().invoke(main, ["convert", "onnx2tflite", str(path), *args])
    assert result.exit_code == 1, result.output
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output
    assert result.output.startswith("error: ")


def test_cli_dynamic_size_from_flags(tmp_path: Path) -> None:
    from pipeline.cli import main

    path = conv_classifier(tmp_path / "dyn.onnx", dims=("N", 1, "H", "W"))
    result = CliRunner().invoke(main, ["convert", "onnx2tflite", str(path), "--height", "10", "--width", "14"])
    assert result.exit_code == 0, result.output
    assert "input 10x14x1 NHWC" in " ".join(result.output.split())
