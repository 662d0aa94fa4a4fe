"""Stage ``data``: load the dataset once, split it deterministically, store raw uint8 arrays."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from pipeline.config.profile import DatasetConfig, PreprocessingConfig, Strict
from pipeline.stages.base import Artifact, RunContext, Stage
from pipeline.stages.registry import register_stage

SPLITS = ("x_train", "y_train", "x_val", "y_val", "x_calib", "x_test", "y_test")


class DataStageConfig(Strict):
    dataset: DatasetConfig
    preprocessing: PreprocessingConfig
    seed: int


@register_stage
class DataStage(Stage[DataStageConfig]):
    name = "data"
    description = "Load the dataset once, split it by seed and store the raw images."
    version = 1

    def run(self, inputs: Mapping[str, Artifact], out: Path, ctx: RunContext) -> dict[str, Any]:
        from pipeline.data.source import load_dataset

        cfg = self.config
        with ctx.progress.task("loading dataset", total=None):
            dataset = load_dataset(cfg.dataset, cfg.preprocessing, cfg.seed)
        for name in SPLITS:
            np.save(out / f"{name}.npy", getattr(dataset, name), allow_pickle=False)
        (out / "classes.json").write_text(json.dumps(list(dataset.class_names)), encoding="utf-8")
        return {
            "source": cfg.dataset.source,
            "source_sha256": dataset.source_sha256,
            "classes": len(dataset.class_names),
            "counts": {name: int(len(getattr(dataset, name))) for name in SPLITS if name.startswith("x_")},
        }


@dataclass(frozen=True)
class Splits:
    """Read access to a finished data artifact, with the model-input transform applied on demand."""

    artifact: Artifact
    preprocessing: PreprocessingConfig

    def raw(self, name: str) -> np.ndarray:
        return np.load(self.artifact.path / f"{name}.npy", allow_pickle=False)

    def model_input(self, name: str) -> np.ndarray:
        from pipeline.data.preprocessing import PreprocessingSpec

        return PreprocessingSpec.from_config(self.preprocessing).apply(self.raw(name))

    @property
    def class_names(self) -> list[str]:
        return json.loads((self.artifact.path / "classes.json").read_text(encoding="utf-8"))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        p = self.preprocessing
        return (p.height, p.width, p.channels)
