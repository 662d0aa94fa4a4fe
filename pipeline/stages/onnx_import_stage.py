"""Stage ``onnx_import``: convert an ONNX teacher (teacher kind ``onnx-file``) with onnx2tf and
check it against onnxruntime on real validation images.

The ONNX file's sha256 is part of the recipe, so editing the file reruns the import (and, through
its recipe id, the teacher and everything downstream). The teacher stage loads the converted
model from this artifact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

from pipeline.config.profile import OnnxTeacherConfig, PreprocessingConfig, Strict, TeacherConfig
from pipeline.errors import ConfigError
from pipeline.stages.base import Artifact, RunContext, Stage
from pipeline.stages.data_stage import Splits
from pipeline.stages.registry import register_stage

KEYS = {
    "layout": "teacher.onnx.layout",
    "height": "preprocessing.height",
    "width": "preprocessing.width",
    "channels": "preprocessing.channels",
}


class OnnxImportStageConfig(Strict):
    path: str
    onnx_sha256: str
    onnx: OnnxTeacherConfig
    preprocessing: PreprocessingConfig
    # (height, width, channels) the profile states explicitly; only these may fill dynamic dims
    size: tuple[Optional[int], Optional[int], Optional[int]] = (None, None, None)


def onnx_import_config(teacher: TeacherConfig, preprocessing: PreprocessingConfig) -> Optional[OnnxImportStageConfig]:
    """The import stage's config for an ``onnx-file`` teacher (None for other kinds)."""
    from pipeline.fsutil import sha256_file

    if teacher.kind != "onnx-file":
        return None
    path = Path(str(teacher.path)).expanduser()
    if not path.is_file():
        raise ConfigError(f"Teacher ONNX file {path} (teacher.path) does not exist.")
    given = preprocessing.model_fields_set
    size = tuple(getattr(preprocessing, axis) if axis in given else None for axis in ("height", "width", "channels"))
    return OnnxImportStageConfig(
        path=str(path),
        onnx_sha256=sha256_file(path),
        onnx=teacher.onnx or OnnxTeacherConfig(),
        preprocessing=preprocessing,
        size=size,  # type: ignore[arg-type]
    )


@register_stage
class OnnxImportStage(Stage[OnnxImportStageConfig]):
    name = "onnx_import"
    description = "Convert an ONNX teacher with onnx2tf and check it against onnxruntime."
    version = 1
    inputs = ("data",)

    def run(self, inputs: Mapping[str, Artifact], out: Path, ctx: RunContext) -> dict[str, Any]:
        from pipeline.onnx.check import Tolerance, check_conversion, onnx_session
        from pipeline.onnx.graph import InputSize
        from pipeline.onnx.importer import import_onnx, load_converted
        from pipeline.training.fit import predict_logits

        cfg = self.config
        data = Splits(inputs["data"], cfg.preprocessing)
        source = f"Teacher ONNX file {cfg.path}"
        with ctx.progress.task("converting ONNX teacher (onnx2tf)", total=None):
            imported, _ = import_onnx(
                Path(cfg.path), out, layout=cfg.onnx.layout, size=InputSize(*cfg.size),
                expected=data.input_shape, keys=KEYS, strip_softmax=True, what="Teacher ONNX file",
            )
        classes = len(data.class_names)
        if imported.num_outputs != classes:
            raise ConfigError(
                f"{source} outputs {imported.num_outputs} values, but the dataset has {classes} classes; the "
                f"teacher must output one logit per class."
            )
        images = data.model_input("x_val")[: cfg.onnx.check_samples]
        labels = data.raw("y_val")[: len(images)]
        model = load_converted(out, imported.input_shape, name="onnx_teacher")
        with ctx.progress.task("checking against onnxruntime", total=None):
            report = check_conversion(
                onnx_session(str(imported.onnx_path)), lambda x: predict_logits(model, x), images, cfg.onnx.layout,
                Tolerance(cfg.onnx.max_abs_error, cfg.onnx.min_top1_agreement),
                labels=labels, source=source, layout_key=KEYS["layout"],
            )
        return {**imported.as_dict(), "check": report.as_dict(), "source": cfg.path}


def load_imported_teacher(artifact: Artifact):
    """The converted teacher of a finished ``onnx_import`` artifact, as a Keras model."""
    from pipeline.onnx.importer import load_converted

    return load_converted(artifact.path, tuple(artifact.metrics["input_shape"]), name="onnx_teacher")
