"""Grid expansion into validated build profiles, and the grid's bad-input errors."""

from __future__ import annotations

import pytest

from pipeline.config.loader import validate
from pipeline.config.profile import load_profile
from pipeline.errors import ConfigError
from pipeline.sweep.grid import SweepGrid, expand, load_grid


def test_expansion_is_the_cartesian_product_of_profiles() -> None:
    grid = SweepGrid(base_profile="quick", family=("mobilenet_v1", "mobilenet_v2"), width=(0.5,), resolution=(24, 28),
                     sparsity=(0.0, 0.5), quantization=("float32", "int8", "mixed"))
    variants = expand(grid)
    assert len(variants) == 2 * 1 * 2 * 2 * 3
    assert len({v.name for v in variants}) == len(variants)
    v = next(v for v in variants if v.name == "mobilenet_v1-w0.5-r24-s0.5-mixed")
    p = v.profile
    assert (p.student.family, p.student.width_multiplier) == ("mobilenet_v1", 0.5)
    assert (p.preprocessing.height, p.preprocessing.width) == (24, 24)
    # The teacher stays at the base size, so every resolution shares one trained teacher.
    assert p.teacher.preprocessing is not None and p.teacher.preprocessing.height == 28
    assert (p.pruning.method, p.pruning.sparsity) == ("structured", 0.5)
    assert p.quantization.modes == ("mixed",) and p.quantization.ship == "mixed"
    assert p.distillation.scratch_baseline is False
    unpruned = next(v for v in variants if v.name == "mobilenet_v1-w0.5-r28-s0-int8").profile
    assert unpruned.pruning.method == "none" and unpruned.teacher.preprocessing is None


def test_variants_of_one_student_share_every_setting_but_quantization() -> None:
    a, b = expand(SweepGrid(base_profile="quick", quantization=("float32", "int8")))
    da, db = a.profile.model_dump(), b.profile.model_dump()
    for key in ("dataset", "preprocessing", "teacher", "student", "distillation", "pruning", "clustering"):
        assert da[key] == db[key]


def test_empty_grid_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError, match="zero variants: quantization is empty"):
        expand(SweepGrid(base_profile="quick", quantization=()))


def test_bad_sparsity_and_mode_name_the_key(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"key 'sparsity'.*\[0, 1\)"):
        validate(SweepGrid, {"sparsity": [0.0, 1.0]}, "grid.yaml")
    path = tmp_path / "g.yaml"
    path.write_text("quantization: [int4]\n")
    with pytest.raises(ConfigError, match=r"g.yaml.*quantization"):
        load_grid(path)


def test_builtin_grids_expand() -> None:
    from pipeline.paths import builtin_profiles_dir

    grids = sorted((builtin_profiles_dir() / "sweeps").glob("*.yaml"))
    assert grids, "ship at least one sweep grid in profiles/sweeps/"
    for path in grids:
        grid = load_grid(path)
        assert len(expand(grid, load_profile(grid.base_profile))) >= 1


def test_a_variant_reuses_the_base_profiles_distilled_student() -> None:
    """Skipping the scratch baseline must not change the distilled student's recipe."""
    from pipeline.stages.student_stage import StudentStage, StudentStageConfig

    base = load_profile("default")
    variant = expand(SweepGrid(base_profile="default", quantization=("int8",)))[0].profile
    assert variant.distillation.scratch_baseline != base.distillation.scratch_baseline

    def recipe(p):
        cfg = StudentStageConfig(student=p.student, preprocessing=p.preprocessing, distillation=p.distillation, seed=p.seed)
        return StudentStage(cfg).config_json()

    assert recipe(variant) == recipe(base)
