"""A sweep grid and the build profiles it expands to.

Every variant is the base profile with a few keys changed, so all stages a variant shares with
another (the teacher, a student before pruning, a quantization of the same student) are one cache
entry: the grid costs as many trainings as it has distinct students, not as many as variants.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from pipeline.config.loader import load_model, resolve_named_yaml, validate
from pipeline.config.profile import BuildProfile, QuantMode, Strict, load_profile
from pipeline.errors import ConfigError
from pipeline.paths import builtin_profiles_dir

Family = Literal["mobilenet_v1", "mobilenet_v2", "mobilenet_v2_fused", "squeezenet"]


class SweepGrid(Strict):
    """What to vary. Empty family, width or resolution keep the base profile's value; empty
    sparsity or quantization lists are an error, since they would make the grid empty."""

    base_profile: str = Field("default", description="profile name or path every variant starts from")
    family: tuple[Family, ...] = Field((), description="student families; empty means the base profile's")
    width: tuple[float, ...] = Field((), description="width multipliers; empty means the base profile's")
    resolution: tuple[int, ...] = Field((), description="square input sizes; empty means the base profile's")
    sparsity: tuple[float, ...] = (0.0,)
    pruning_method: Literal["structured", "magnitude"] = "structured"
    quantization: tuple[QuantMode, ...] = ("float32", "int8")
    scratch_baseline: bool = Field(False, description="also train each student without a teacher (slower)")

    @field_validator("sparsity")
    @classmethod
    def _sparsity_range(cls, values: tuple[float, ...]) -> tuple[float, ...]:
        bad = [v for v in values if not 0.0 <= v < 1.0]
        if bad:
            raise ValueError(f"every sparsity must be in [0, 1); {', '.join(map(str, bad))} is not")
        return values


@dataclass(frozen=True)
class Variant:
    name: str
    settings: dict[str, Any]  # family, width, resolution, sparsity, quantization
    profile: BuildProfile


def load_grid(name_or_path: str | Path) -> SweepGrid:
    """``default`` means profiles/sweeps/default.yaml; anything with a suffix or folder is a path."""
    path = resolve_named_yaml(name_or_path, builtin_profiles_dir() / "sweeps", "sweep grid", "or pass a path to a YAML file.")
    return load_model(SweepGrid, path, "Sweep grid")


def _check_not_empty(grid: SweepGrid) -> None:
    empty = [key for key in ("sparsity", "quantization") if not getattr(grid, key)]
    if empty:
        raise ConfigError(
            f"The sweep grid would produce zero variants: {', '.join(empty)} {'is' if len(empty) == 1 else 'are'} empty. "
            "Give at least one value for each key."
        )


def _label(value: float) -> str:
    return f"{value:g}"


def expand(grid: SweepGrid, base: BuildProfile | None = None) -> list[Variant]:
    """All variants of ``grid``, each a validated build profile."""
    base = base or load_profile(grid.base_profile)
    resolutions = grid.resolution or (base.preprocessing.height,)
    _check_not_empty(grid)
    variants = []
    seen: set[str] = set()
    families = grid.family or (base.student.family,)
    widths = grid.width or (base.student.width_multiplier,)
    for family, width, size, sparsity, mode in itertools.product(families, widths, resolutions, grid.sparsity, grid.quantization):
        name = f"{family}-w{_label(width)}-r{size}-s{_label(sparsity)}-{mode}"
        if name in seen:
            continue
        seen.add(name)
        data = base.model_dump(mode="json")
        data["name"] = f"{base.name}.{name}"
        data["description"] = f"sweep variant of {base.name}: {name}"
        data["student"]["family"] = family
        data["student"]["width_multiplier"] = width
        if size != base.preprocessing.height or size != base.preprocessing.width:
            # Keep the teacher at the base input size: its soft targets are per image and carry over.
            if data["teacher"].get("preprocessing") is None:
                data["teacher"]["preprocessing"] = base.preprocessing.model_dump(mode="json")
            data["preprocessing"]["height"] = size
            data["preprocessing"]["width"] = size
        data["pruning"]["method"] = grid.pruning_method if sparsity > 0 else "none"
        data["pruning"]["sparsity"] = sparsity if sparsity > 0 else base.pruning.sparsity
        data["quantization"]["modes"] = [mode]
        data["quantization"]["ship"] = mode
        data["distillation"]["scratch_baseline"] = grid.scratch_baseline
        profile = validate(BuildProfile, data, f"Sweep variant {name} (from profile '{base.name}')")
        settings = {"family": family, "width": width, "resolution": size, "sparsity": sparsity, "quantization": mode}
        variants.append(Variant(name=name, settings=settings, profile=profile))
    return variants
