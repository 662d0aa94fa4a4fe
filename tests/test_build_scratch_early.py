"""The scratch student trains while the teacher does: real worker process, real cache, real stages."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pipeline.build import build_profile
from pipeline.config.loader import validate
from pipeline.config.profile import BuildProfile
from pipeline.errors import ConfigError
from pipeline.execute.stage_runner import StageJob, StageRunner
from pipeline.stages.base import RunContext
from pipeline.stages.teacher_stage import TeacherStage
from tests.helpers.profiles import TINY, merged


def wait_for_scratch_to_start(cache: Path, timeout: float = 180) -> None:
    """Block until a student is being written: the teacher has not finished, so it is the scratch."""
    deadline = time.monotonic() + timeout
    while not any((cache / "distill").glob(".*.partial")):
        if time.monotonic() > deadline:
            raise TimeoutError("the scratch student did not start while the teacher was training")
        time.sleep(0.2)


@pytest.mark.slow
def test_scratch_trains_while_the_teacher_does(isolated_results: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = TeacherStage.run

    def teacher_that_waits_for_the_scratch(self, inputs, out, ctx):
        wait_for_scratch_to_start(isolated_results / "cache")
        return original(self, inputs, out, ctx)

    monkeypatch.setattr(TeacherStage, "run", teacher_that_waits_for_the_scratch)
    result = build_profile(validate(BuildProfile, TINY, "tiny"), max_jobs=2)
    art = result.artifacts
    assert {"teacher", "student", "scratch"} <= set(art) and not any(a.cached for a in art.values())
    assert art["scratch"].metrics["distilled"] is False and art["student"].metrics["distilled"] is True
    # a rebuild is all cache: the early scratch landed under the same recipe id as a serial one
    again = build_profile(validate(BuildProfile, TINY, "tiny"), max_jobs=2)
    assert again.artifacts["scratch"].cached and again.artifacts["scratch"].recipe_id == art["scratch"].recipe_id


@pytest.mark.slow
def test_a_failing_teacher_stops_the_scratch_and_leaves_nothing_half_written(isolated_results: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = isolated_results / "cache"

    def failing_teacher(self, inputs, out, ctx):
        wait_for_scratch_to_start(cache)
        raise ConfigError("teacher refuses to train")

    monkeypatch.setattr(TeacherStage, "run", failing_teacher)
    long_scratch = merged(TINY, student={**TINY["student"], "training": {"epochs": 400, "batch_size": 64}})
    with pytest.raises(ConfigError, match="refuses"):
        build_profile(validate(BuildProfile, long_scratch, "tiny"), max_jobs=2)
    leftovers = [p.name for p in (cache / "distill").iterdir()]
    assert leftovers == []  # stopped mid-training: no finished student and no .partial directory


def test_one_job_at_a_time_means_nothing_starts_early(isolated_results: Path) -> None:
    from pipeline.stages.data_stage import DataStage, DataStageConfig

    runner = StageRunner(RunContext(), None, max_jobs=1)
    stage = DataStage(DataStageConfig(dataset={"source": "fashion-mnist"}, preprocessing={}, seed=1))
    assert runner.start_early(StageJob("data", stage, {})) is False
    assert runner._early == []
