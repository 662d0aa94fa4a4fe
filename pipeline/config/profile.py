"""The build profile: a YAML recipe saying what to build and how good it must be.

Every section forbids unknown keys, so a misspelled key is an error that names it, rather than a
silently ignored setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import Field, SerializerFunctionWrapHandler, field_validator, model_serializer, model_validator

from pipeline.config.loader import Strict, load_model, resolve_named_yaml
from pipeline.paths import builtin_profiles_dir


class DatasetConfig(Strict):
    """Where the images come from and how they are split."""

    source: Literal["fashion-mnist", "idx", "image-folder"] = "fashion-mnist"
    path: Optional[str] = Field(None, description="directory for idx and image-folder sources")
    max_train: Optional[int] = Field(None, gt=0, description="use only this many training images")
    max_test: Optional[int] = Field(None, gt=0, description="use only this many test images")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="image-folder only: share held out for test")
    validation_fraction: float = Field(0.1, gt=0, lt=1)
    calibration_count: int = Field(500, gt=0, description="images set aside for int8 calibration")
    eval_count: int = Field(500, gt=0, description="labelled test images shipped in the bundle")

    @model_validator(mode="after")
    def _path_needed(self) -> "DatasetConfig":
        if self.source != "fashion-mnist" and not self.path:
            raise ValueError(f"source '{self.source}' needs dataset.path")
        return self


class PreprocessingConfig(Strict):
    """Applied identically on the host and, from the manifest, on the device."""

    height: int = Field(28, gt=0)
    width: int = Field(28, gt=0)
    channels: Literal[1, 3] = 1
    scale: float = Field(1.0 / 255.0, gt=0)
    mean: float = 0.0
    std: float = Field(1.0, gt=0)


# TrainingConfig options added after trained models were cached; off (0.0), they are not dumped.
LATER_TRAINING_OPTIONS = ("erasing", "label_smoothing")


class TrainingConfig(Strict):
    epochs: int = Field(10, gt=0)
    batch_size: int = Field(128, gt=0)
    learning_rate: float = Field(2e-3, gt=0)
    augment: bool = Field(True, description="random horizontal flips (and the teacher's shifts, teacher.shift)")
    erasing: float = Field(
        0.0, ge=0, le=1, description="share of training images that get one random rectangle erased (random erasing); "
        "needs augment",
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="label smoothing of the labels' loss term")

    @model_serializer(mode="wrap")
    def _omit_later_options_while_off(self, handler: SerializerFunctionWrapHandler) -> dict:
        """Options added after trained models were cached stay out of dumps while off: the dump is
        what recipe ids and bundle provenance hash, so adding them retrained nothing."""
        dumped = handler(self)
        for key in LATER_TRAINING_OPTIONS:
            if dumped.get(key) == 0.0:
                del dumped[key]
        return dumped


class OnnxTeacherConfig(Strict):
    """Kind ``onnx-file``: how the ONNX teacher is converted (onnx2tf) and checked against onnxruntime."""

    layout: Literal["NCHW", "NHWC"] = Field("NCHW", description="input layout of the ONNX model (PyTorch exports are NCHW)")
    max_abs_error: float = Field(1e-3, gt=0, description="largest allowed |converted - onnxruntime| output difference")
    min_top1_agreement: float = Field(0.999, ge=0, le=1, description="share of images with the same top-1 class")
    check_samples: int = Field(1000, gt=0, description="validation images the check runs on")


class TeacherConfig(Strict):
    kind: Literal["resnet", "keras-file", "onnx-file"] = "resnet"
    path: Optional[str] = Field(None, description="a .keras model file (keras-file) or an .onnx file (onnx-file)")
    base_width: int = Field(32, gt=0)
    blocks_per_stage: tuple[int, ...] = (2, 2, 2)
    training: TrainingConfig = TrainingConfig()
    shift: int = Field(
        0, ge=0, le=4,
        description="random shifts of up to this many pixels while training a resnet teacher; in a short budget "
        "they cost accuracy (docs/RESULTS.md), so 0 is the default",
    )
    preprocessing: Optional[PreprocessingConfig] = Field(
        None,
        description="train and run the teacher at its own input size; soft targets are per image, so a "
        "student at another resolution still gets them (default: the profile's preprocessing)",
    )
    onnx: Optional[OnnxTeacherConfig] = Field(None, description="kind onnx-file: layout and agreement tolerances")

    @model_validator(mode="after")
    def _path_needed(self) -> "TeacherConfig":
        if self.kind in ("keras-file", "onnx-file") and not self.path:
            raise ValueError(f"teacher kind '{self.kind}' needs teacher.path")
        if self.onnx is not None and self.kind != "onnx-file":
            raise ValueError("teacher.onnx only applies to kind 'onnx-file'")
        return self


class StudentConfig(Strict):
    family: Literal["mobilenet_v1", "mobilenet_v2", "mobilenet_v2_fused", "squeezenet"] = "mobilenet_v2"
    width_multiplier: float = Field(1.0, gt=0, le=4)
    training: TrainingConfig = TrainingConfig()
    seed: Optional[int] = Field(
        None,
        description="initialisation and batch order of the distilled and scratch students (default: the profile's "
        "seed); the data split stays with the profile's seed, so seeds can be compared image by image",
    )


class DistillationConfig(Strict):
    """Hinton KD: loss = alpha*CE(labels) + (1-alpha)*T^2*KL(teacher_T || student_T)."""

    enabled: bool = True
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.1, ge=0, le=1)
    scratch_baseline: bool = Field(True, description="also train the student without a teacher")
    flip_average: bool = Field(
        False,
        description="soft targets average each teacher over the image and its mirror (test-time augmentation): "
        "a stronger teacher for the cost of the logits already cached for flips",
    )
    teacher_weight: float = Field(1.0, gt=0, description="weight of `teacher` when extra_teachers are given")
    extra_teachers: tuple["WeightedTeacher", ...] = Field(
        (), description="multi-teacher distillation: soft targets are the weighted average over all teachers"
    )


class WeightedTeacher(Strict):
    """One more teacher for multi-teacher distillation."""

    weight: float = Field(1.0, gt=0)
    teacher: TeacherConfig


QuantMode = Literal["float32", "float16", "dynamic", "int8", "mixed"]


class MixedPrecisionConfig(Strict):
    """Mode ``mixed``: full int8, except the layers most sensitive to it, which stay float."""

    max_accuracy_drop: float = Field(0.005, ge=0, lt=1, description="allowed validation accuracy loss vs float32")
    max_float_layers: Optional[int] = Field(None, gt=0, description="give up after keeping this many layers in float")


class QuantizationConfig(Strict):
    modes: tuple[QuantMode, ...] = ("float32", "float16", "dynamic", "int8")
    ship: QuantMode = "int8"
    calibration_samples: int = Field(300, description="representative images for int8 calibration")
    int8_io: bool = Field(True, description="int8 model input/output; false keeps float I/O")
    mixed: MixedPrecisionConfig = MixedPrecisionConfig()

    @field_validator("calibration_samples")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value <= 0:
            raise ValueError("int8 calibration needs at least 1 sample")
        return value

    @model_validator(mode="after")
    def _ship_built(self) -> "QuantizationConfig":
        if not self.modes:
            raise ValueError("quantization.modes is empty")
        if self.ship not in self.modes:
            raise ValueError(f"ship mode '{self.ship}' is not among modes {list(self.modes)}")
        return self


class PruningConfig(Strict):
    """Prune the distilled student, then fine-tune it (with the teacher when there is one).

    ``magnitude`` zeroes the smallest weights (the file shrinks only once compressed);
    ``structured`` removes whole channels and rebuilds narrower layers, so the model gets smaller
    and faster. ``sparsity`` is the share of weights (magnitude) or channels (structured) removed.
    """

    method: Literal["none", "magnitude", "structured"] = "none"
    sparsity: float = Field(0.5, description="share removed, in [0, 1)")
    scope: Literal["per_layer", "global"] = Field("per_layer", description="magnitude: one threshold per layer or one for all")
    importance: Literal["l1", "l2", "bn"] = Field("l1", description="structured: filter norm or BatchNorm scale")
    schedule_power: float = Field(3.0, gt=0, description="magnitude: polynomial sparsity schedule exponent")
    skip_layers: tuple[str, ...] = Field((), description="layer names never pruned")
    fallback_unstructured: bool = Field(True, description="structured: prune by magnitude when no channel can be removed")
    distill: bool = Field(True, description="fine-tune on the teacher's soft targets when the profile distils")
    # Half the channels gone is a new, smaller network: it needs most of a training run to recover
    # (2 epochs at 5e-4 left the default student 2.4 points down; see README, Benchmarks).
    fine_tune: TrainingConfig = TrainingConfig(epochs=6, learning_rate=1e-3)

    @field_validator("sparsity")
    @classmethod
    def _sparsity_range(cls, value: float) -> float:
        if not 0.0 <= value < 1.0:
            raise ValueError("sparsity must be in [0, 1): 0 prunes nothing, 1 would remove everything")
        return value


class ClusteringConfig(Strict):
    """Deep Compression weight sharing: each layer's weights snap to ``clusters`` k-means centroids."""

    enabled: bool = False
    clusters: int = Field(16, ge=2, le=256)
    min_params: int = Field(256, ge=1, description="leave smaller layers alone")
    fine_tune_epochs: int = Field(1, ge=0, description="centroid fine-tuning with fixed assignments")
    learning_rate: float = Field(2e-4, gt=0)


class AcceptanceConfig(Strict):
    """Thresholds the shipped model must meet; a build that misses them warns loudly."""

    min_accuracy: Optional[float] = Field(None, ge=0, le=1)
    max_tflite_kb: Optional[float] = Field(None, gt=0)
    max_parameters: Optional[int] = Field(None, gt=0)


DistillationConfig.model_rebuild()


class ExportConfig(Strict):
    """Extra model files shipped in the bundle next to model.tflite (listed in manifest ``extra_models``)."""

    onnx: bool = Field(False, description="also export the student to ONNX (tf2onnx) as model.onnx")
    opset: int = Field(17, ge=13, le=18, description="ONNX opset of the export")
    max_abs_error: float = Field(1e-3, gt=0, description="largest allowed |onnxruntime - Keras| output difference")
    min_top1_agreement: float = Field(0.999, ge=0, le=1)
    check_samples: int = Field(1000, gt=0, description="test images the export is checked on")


class BuildProfile(Strict):
    """A whole build recipe.

    The defaults in this module are deliberately not those of ``profiles/default.yaml``: they are
    the generic starting point for any dataset (``mobilenet_v2``, T=4, α=0.1, no acceptance
    thresholds), while ``default.yaml`` states in full the recipe tuned for Fashion-MNIST (see
    docs/RESULTS.md). Aligning them would silently change the model, and every cache id, of each
    profile that leaves a key out (``quick``, sweep variants, users' own profiles).
    """

    name: str
    description: str = ""
    seed: int = 1234
    dataset: DatasetConfig = DatasetConfig()
    preprocessing: PreprocessingConfig = PreprocessingConfig()
    teacher: TeacherConfig = TeacherConfig()
    student: StudentConfig = StudentConfig()
    distillation: DistillationConfig = DistillationConfig()
    pruning: PruningConfig = PruningConfig()
    clustering: ClusteringConfig = ClusteringConfig()
    quantization: QuantizationConfig = QuantizationConfig()
    acceptance: AcceptanceConfig = AcceptanceConfig()
    export: ExportConfig = ExportConfig()

    @model_validator(mode="after")
    def _calibration_fits(self) -> "BuildProfile":
        if self.quantization.calibration_samples > self.dataset.calibration_count:
            raise ValueError(
                f"quantization.calibration_samples ({self.quantization.calibration_samples}) exceeds "
                f"dataset.calibration_count ({self.dataset.calibration_count})"
            )
        return self


def resolve_profile_path(name_or_path: str) -> Path:
    """Accept ``quick``, ``quick.yaml`` or a path, so ``make build PROFILE=quick`` just works."""
    return resolve_named_yaml(name_or_path, builtin_profiles_dir(), "profile", "or pass a path to a YAML file.")


def load_profile(name_or_path: str | Path) -> BuildProfile:
    return load_model(BuildProfile, resolve_profile_path(str(name_or_path)), "Build profile")
