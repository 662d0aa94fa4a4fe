"""The stage cache: hits, misses after a config change, and interrupted runs leave nothing behind."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from pipeline.stages.base import RunContext, Stage, run_stage


class CountingConfig(BaseModel):
    value: int
    explode: bool = False


class NoConfig(BaseModel):
    pass


class Counting(Stage[CountingConfig]):
    name = "counting"
    version = 1
    runs = 0

    def run(self, inputs, out: Path, ctx):
        type(self).runs += 1
        (out / "value.txt").write_text(str(self.config.value))
        if self.config.explode:
            raise KeyboardInterrupt("simulated Ctrl-C half-way through writing outputs")
        return {"value": self.config.value}


class Downstream(Stage[NoConfig]):
    name = "downstream"
    version = 1
    inputs = ("upstream",)

    def run(self, inputs, out: Path, ctx):
        return {"seen": (inputs["upstream"].path / "value.txt").read_text()}


@pytest.fixture(autouse=True)
def reset_counter():
    Counting.runs = 0


def test_same_recipe_is_a_cache_hit(tmp_path: Path) -> None:
    ctx = RunContext(cache_root=tmp_path)
    first = run_stage(Counting(CountingConfig(value=1)), {}, ctx)
    second = run_stage(Counting(CountingConfig(value=1)), {}, ctx)
    assert Counting.runs == 1
    assert not first.cached and second.cached
    assert first.recipe_id == second.recipe_id
    assert second.metrics == {"value": 1}
    assert first.path == tmp_path / "counting" / first.recipe_id


def test_config_change_is_a_miss_and_propagates_downstream(tmp_path: Path) -> None:
    ctx = RunContext(cache_root=tmp_path)
    a = run_stage(Counting(CountingConfig(value=1)), {}, ctx)
    b = run_stage(Counting(CountingConfig(value=2)), {}, ctx)
    assert Counting.runs == 2 and a.recipe_id != b.recipe_id
    down_a = run_stage(Downstream(NoConfig()), {"upstream": a}, ctx)
    down_b = run_stage(Downstream(NoConfig()), {"upstream": b}, ctx)
    assert down_a.recipe_id != down_b.recipe_id
    assert (down_a.metrics["seen"], down_b.metrics["seen"]) == ("1", "2")


def test_version_bump_invalidates(tmp_path: Path) -> None:
    class CountingV2(Counting):
        version = 2

    ctx = RunContext(cache_root=tmp_path)
    assert run_stage(Counting(CountingConfig(value=1)), {}, ctx).recipe_id != run_stage(CountingV2(CountingConfig(value=1)), {}, ctx).recipe_id


def test_interrupted_stage_leaves_no_entry_and_reruns_cleanly(tmp_path: Path) -> None:
    ctx = RunContext(cache_root=tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run_stage(Counting(CountingConfig(value=3, explode=True)), {}, ctx)
    stage_dir = tmp_path / "counting"
    assert list(stage_dir.iterdir()) == [], "a half-written artifact was left in the cache"
    done = run_stage(Counting(CountingConfig(value=3)), {}, ctx)
    assert not done.cached and (done.path / "value.txt").read_text() == "3"


def test_missing_input_is_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="missing inputs"):
        run_stage(Downstream(NoConfig()), {}, RunContext(cache_root=tmp_path))


def test_meta_records_when_the_stage_finished_in_utc(tmp_path: Path) -> None:
    import time

    done = run_stage(Counting(CountingConfig(value=4)), {}, RunContext(cache_root=tmp_path))
    finished = time.strptime(done.meta["finished"], "%Y-%m-%dT%H:%M:%SZ")  # the format build_bench reads back
    assert abs(time.mktime(finished) - time.mktime(time.gmtime())) < 120
