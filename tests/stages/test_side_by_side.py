"""Stages side by side: real worker processes, the real cache, progress forwarded to the parent."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Mapping

import pytest
from pydantic import BaseModel

from pipeline.errors import ConfigError, EdgeshipError
from pipeline.stages.base import Artifact, RunContext, Stage, load_artifact
from pipeline.stages.side_by_side import StageJob, default_jobs, run_side_by_side


class RecordingConfig(BaseModel):
    tag: str
    fail: bool = False
    die: bool = False
    meet: str = ""
    others: list[str] = []


class RecordingStage(Stage[RecordingConfig]):
    """Writes which process ran it and how many threads TensorFlow had there."""

    name = "record"
    version = 1

    def run(self, inputs: Mapping[str, Artifact], out: Path, ctx: RunContext) -> dict[str, Any]:
        cfg = self.config
        if cfg.fail:
            raise ConfigError(f"stage {cfg.tag} refuses to run")
        if cfg.die:
            os._exit(9)  # what the kernel's OOM killer looks like from the parent
        if cfg.meet:
            meet(Path(cfg.meet), cfg.tag, cfg.others)
        with ctx.progress.task(f"working {cfg.tag}", total=3) as advance:
            for _ in range(3):
                advance(1)
        ctx.progress.note(f"note from {cfg.tag}")
        threads = None
        if os.environ.get("TF_NUM_INTRAOP_THREADS"):
            import tensorflow as tf

            threads = tf.config.threading.get_intra_op_parallelism_threads()
        (out / "pid.json").write_text(json.dumps({"pid": os.getpid(), "threads": threads}))
        return {"tag": cfg.tag}


def meet(rendezvous: Path, tag: str, everyone: list[str]) -> None:
    """Return once every job has started: proves they run at the same time, not one after another."""
    (rendezvous / tag).touch()
    deadline = time.monotonic() + 120
    while not all((rendezvous / other).exists() for other in everyone):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{tag} waited 120 s for {everyone} to start alongside it")
        time.sleep(0.05)


class RecordingProgress:
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def task(self, description: str, total=None):
        import contextlib

        @contextlib.contextmanager
        def manager():
            self.events.append(("open", description, total))
            yield lambda amount=1: self.events.append(("advance", description, amount))
            self.events.append(("close", description))

        return manager()

    def note(self, message: str) -> None:
        self.events.append(("note", message))

    def detail(self, message: str) -> None:
        self.events.append(("detail", message))


def jobs(*tags: str, fail: str = "", die: str = "", meet_in: Path | None = None) -> list[StageJob]:
    def config(tag: str) -> RecordingConfig:
        return RecordingConfig(tag=tag, fail=tag == fail, die=tag == die, meet=str(meet_in) if meet_in else "", others=list(tags))

    return [StageJob(tag, RecordingStage(config(tag)), {}) for tag in tags]


def pid_of(artifact: Artifact) -> dict:
    return json.loads((artifact.path / "pid.json").read_text())


def test_misses_run_in_separate_workers_with_the_cores_split(tmp_path: Path) -> None:
    progress = RecordingProgress()
    ctx = RunContext(progress=progress, cache_root=tmp_path / "cache")
    (tmp_path / "meet").mkdir()
    built = run_side_by_side(jobs("a", "b", meet_in=tmp_path / "meet"), ctx, max_jobs=2)
    assert set(built) == {"a", "b"}
    pids = {pid_of(built[k])["pid"] for k in ("a", "b")}
    assert len(pids) == 2 and os.getpid() not in pids
    expected_threads = max(1, (os.cpu_count() or 1) // 2)
    assert all(pid_of(built[k])["threads"] == expected_threads for k in ("a", "b"))
    assert not any(a.cached for a in built.values())
    assert built["a"].metrics == {"tag": "a"}
    # Each worker's bar was opened, advanced three times and closed on the parent's progress.
    for tag in ("a", "b"):
        assert ("open", f"working {tag}", 3) in progress.events
        assert sum(1 for e in progress.events if e == ("advance", f"working {tag}", 1)) == 3
        assert ("close", f"working {tag}") in progress.events
        assert ("note", f"note from {tag}") in progress.events


def test_a_second_run_reuses_the_cache_and_starts_no_worker(tmp_path: Path) -> None:
    ctx = RunContext(cache_root=tmp_path)
    first = run_side_by_side(jobs("a", "b"), ctx, max_jobs=2)
    again = run_side_by_side(jobs("a", "b"), ctx, max_jobs=2)
    assert all(a.cached for a in again.values())
    assert {k: a.recipe_id for k, a in again.items()} == {k: a.recipe_id for k, a in first.items()}


def test_one_job_at_a_time_runs_in_this_process(tmp_path: Path) -> None:
    built = run_side_by_side(jobs("a", "b"), RunContext(cache_root=tmp_path), max_jobs=1)
    assert {pid_of(a)["pid"] for a in built.values()} == {os.getpid()}


def test_a_failing_worker_raises_its_error_and_caches_nothing_for_it(tmp_path: Path) -> None:
    failing = jobs("a", "b", fail="b")
    with pytest.raises(ConfigError, match="stage b refuses to run"):
        run_side_by_side(failing, RunContext(cache_root=tmp_path), max_jobs=2)
    job = failing[1]
    assert load_artifact(job.stage.name, job.stage.recipe_id({}), tmp_path) is None
    # ``a`` may have been stopped mid-run (an ignorable .partial); ``b`` failed cleanly and left nothing.
    assert not list((tmp_path / "record").glob(f".{job.stage.recipe_id({})}*")), "no temporary directory left"


def test_a_failure_stops_the_sibling_instead_of_waiting_for_it(tmp_path: Path) -> None:
    """``a`` waits up to 120 s for a partner that never comes; ``b`` fails at once."""
    (tmp_path / "meet").mkdir()
    stuck = jobs("a", "b", fail="b", meet_in=tmp_path / "meet")
    stuck[0].stage.config.others = ["a", "nobody"]
    started = time.monotonic()
    with pytest.raises(ConfigError, match="stage b refuses to run"):
        run_side_by_side(stuck, RunContext(cache_root=tmp_path / "cache"), max_jobs=2)
    assert time.monotonic() - started < 90, "the parent waited for the stuck sibling"
    assert load_artifact("record", stuck[0].stage.recipe_id({}), tmp_path / "cache") is None
    # the stopped sibling removed its temporary directory on its way out (SIGTERM -> SystemExit)
    assert not list((tmp_path / "cache" / "record").glob(".*.partial"))


def test_a_worker_that_dies_gets_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    dying = jobs("a", "b", die="b")
    with pytest.raises(EdgeshipError, match=r"running a, b died.*-j 1"):
        run_side_by_side(dying, RunContext(cache_root=tmp_path), max_jobs=2)
    assert load_artifact(dying[1].stage.name, dying[1].stage.recipe_id({}), tmp_path) is None


def test_jobs_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGESHIP_JOBS", "1")
    assert default_jobs() == 1
    monkeypatch.setenv("EDGESHIP_JOBS", "three")
    assert default_jobs() == max(1, os.cpu_count() or 1)
