"""The build bench's wall-time rule: overlapping stages count once, separate runs add up."""

from __future__ import annotations

from pathlib import Path

from pipeline.bench.build_bench import build_wall_seconds
from pipeline.stages.base import Artifact


def artifact(finished: str, seconds: float) -> Artifact:
    return Artifact(stage="s", recipe_id="r", path=Path("."), meta={"finished": finished, "seconds": seconds})


def test_stages_in_sequence_add_up() -> None:
    stages = [artifact("2026-11-25T10:00:10Z", 10), artifact("2026-11-25T10:01:10Z", 60)]
    assert build_wall_seconds(stages) == 70


def test_side_by_side_stages_count_once() -> None:
    teacher = artifact("2026-11-25T10:05:00Z", 300)
    student = artifact("2026-11-25T10:15:00Z", 600)
    scratch = artifact("2026-11-25T10:14:30Z", 570)  # started with the student, finished 30 s earlier
    assert build_wall_seconds([teacher, student, scratch]) == 900


def test_stages_from_earlier_runs_are_laid_end_to_end() -> None:
    yesterday = artifact("2026-11-24T09:00:00Z", 500)
    today = artifact("2026-11-25T09:00:00Z", 100)
    assert build_wall_seconds([today, yesterday]) == 600
