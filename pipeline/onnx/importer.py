"""ONNX → TensorFlow with onnx2tf (the maintained converter; onnx-tf no longer imports with current onnx).

onnx2tf turns an NCHW graph into an NHWC one (the layout TFLite and this pipeline use) and writes a
SavedModel. :func:`load_converted` wraps that SavedModel in a Keras 3 model, so the imported
teacher predicts, and converts to .tflite, like any Keras model here.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from pipeline.errors import ConversionError
from pipeline.onnx.graph import InputSize, PreparedModel, load_onnx, need, prepare

log = logging.getLogger(__name__)

SAVED_MODEL_DIR = "saved_model"
PREPARED_ONNX = "model.onnx"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class ImportedModel:
    """What an import wrote into its directory, and the facts about it worth recording."""

    directory: Path
    input_name: str
    input_shape: tuple[int, int, int]  # (height, width, channels) of the converted NHWC model
    layout: str  # of the ONNX input
    num_outputs: int
    softmax_removed: bool
    parameters: int
    macs: int
    onnx2tf_version: str

    @property
    def saved_model(self) -> Path:
        return self.directory / SAVED_MODEL_DIR

    @property
    def onnx_path(self) -> Path:
        """The prepared ONNX (fixed size, dynamic batch) that the converted model must agree with."""
        return self.directory / PREPARED_ONNX

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("directory")
        data["input_shape"] = list(self.input_shape)
        return data


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


@contextlib.contextmanager
def _offline_onnx2tf() -> Iterator[None]:
    """onnx2tf downloads sample images from GitHub to self-test small fixed-batch RGB models; a
    build host may have no network, so it gets deterministic local noise instead."""
    import numpy as np
    import onnx2tf.onnx2tf as core

    original = core.download_test_image_data
    core.download_test_image_data = lambda: np.random.default_rng(0).random((20, 128, 128, 3), dtype=np.float32)
    try:
        yield
    finally:
        core.download_test_image_data = original


def convert_prepared(prepared: PreparedModel, out_dir: Path, source: str) -> ImportedModel:
    """Run onnx2tf on ``prepared`` and write ``out_dir/saved_model`` and ``out_dir/model.onnx``.

    ConversionError naming ``source`` and onnx2tf's last words if it fails (it reports errors as log
    lines and exits, so both SystemExit and exceptions are caught here).
    """
    import onnx

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx.save(prepared.model, str(out_dir / PREPARED_ONNX))
    chatter = io.StringIO()
    keep_nhwc = [prepared.input_name] if prepared.layout == "NHWC" else None
    failure: Optional[str] = None
    onnx2tf = need("onnx2tf")
    need("tf_keras")  # onnx2tf imports it; its wheel wants `tensorflow`, so it is installed with --no-deps
    try:
        with _offline_onnx2tf(), contextlib.redirect_stdout(chatter):
            onnx2tf.convert(
                onnx_graph=prepared.model,
                output_folder_path=str(out_dir / SAVED_MODEL_DIR),
                output_signaturedefs=True,
                not_use_onnxsim=True,  # onnxsim is optional and the prepared graph already has fixed shapes
                keep_nwc_or_nhwc_or_ndhwc_input_names=keep_nhwc,
                non_verbose=True,
            )
    except SystemExit:
        failure = "onnx2tf stopped"
    except Exception as exc:  # onnx2tf raises whatever the failing op raised
        failure = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    log.debug("onnx2tf output:\n%s", chatter.getvalue())
    if failure is None and not (out_dir / SAVED_MODEL_DIR / "saved_model.pb").is_file():
        failure = "onnx2tf wrote no SavedModel"
    if failure is not None:
        said = [line.strip() for line in ANSI.sub("", chatter.getvalue()).splitlines() if "ERROR" in line or "error" in line]
        detail = f" onnx2tf said: {' | '.join(said[-3:])}" if said else ""
        raise ConversionError(f"onnx2tf could not convert {source} ({failure}).{detail}")
    for leftover in (out_dir / SAVED_MODEL_DIR).glob("*.tflite"):
        leftover.unlink()  # onnx2tf's own float32/float16 files; .tflite conversion happens in pipeline.quantize
    return ImportedModel(
        directory=out_dir,
        input_name=prepared.input_name,
        input_shape=prepared.input_shape,
        layout=prepared.layout,
        num_outputs=prepared.num_outputs,
        softmax_removed=prepared.softmax_removed,
        parameters=prepared.parameters,
        macs=prepared.macs,
        onnx2tf_version=_version("onnx2tf"),
    )


def import_onnx(
    path: Path,
    out_dir: Path,
    *,
    layout: str,
    size: InputSize = InputSize(),
    expected: Optional[tuple[int, int, int]] = None,
    keys: Optional[dict[str, str]] = None,
    strip_softmax: bool = False,
    what: str = "ONNX model",
) -> tuple[ImportedModel, PreparedModel]:
    """Validate ``path`` (see :func:`pipeline.onnx.graph.prepare`) and convert it into ``out_dir``."""
    keys = keys or {"layout": "--layout", "height": "--height", "width": "--width", "channels": "--channels"}
    source = f"{what} {path}"
    model = load_onnx(Path(path), what)
    prepared = prepare(model, layout, size, expected, source, keys, strip_softmax=strip_softmax)
    return convert_prepared(prepared, out_dir, source), prepared


def load_converted(directory: Path, input_shape: tuple[int, int, int], name: str = "onnx_model"):
    """A Keras 3 model (``keras.layers.TFSMLayer`` over the SavedModel) taking NHWC float32 images.

    The SavedModel holds the weights as constants, so Keras sees no weights: parameter and MAC
    counts come from the ONNX graph (:class:`ImportedModel`).
    """
    import keras

    layer = keras.layers.TFSMLayer(str(Path(directory) / SAVED_MODEL_DIR), call_endpoint="serving_default", name=f"{name}_savedmodel")
    inputs = keras.Input(tuple(input_shape), name="image")
    outputs = layer(inputs)
    if isinstance(outputs, dict):
        if len(outputs) != 1:
            raise ConversionError(f"The converted model in {directory} has {len(outputs)} outputs; expected one.")
        outputs = next(iter(outputs.values()))
    return keras.Model(inputs, outputs, name=name)


def read_imported(directory: Path, meta: dict[str, Any]) -> ImportedModel:
    """Rebuild the :class:`ImportedModel` record of a cached import from its stage metrics."""
    fields = {k: meta[k] for k in ImportedModel.__dataclass_fields__ if k != "directory"}
    fields["input_shape"] = tuple(fields["input_shape"])
    return ImportedModel(directory=Path(directory), **fields)
