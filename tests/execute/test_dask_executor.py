"""The Dask executor on a real LocalCluster: where tasks run, what travels, faults and cancelling."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from concurrent.futures import CancelledError
from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.execute.dask_cluster import DaskExecutor
from pipeline.execute.executor import TaskContext
from pipeline.execute.stage_runner import StageRunner, remote_stage_task
from pipeline.progress import NullProgress
from pipeline.stages.base import RunContext, load_artifact
from tests.execute.stages_for_tests import ConsumerStage, ProbeConfig, ProbeStage
from tests.stages.test_side_by_side import RecordingProgress

pytestmark = pytest.mark.cluster


def ran(artifact) -> dict:
    return json.loads((artifact.path / "ran.json").read_text())


def wait_until(condition, seconds: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {seconds} s")
        time.sleep(0.05)


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_a_stage_runs_on_a_worker_and_its_output_lands_in_the_clients_cache(cluster, tmp_path: Path) -> None:
    client_cache = tmp_path / "client-cache"
    progress = RecordingProgress()
    with DaskExecutor(cluster.scheduler_address, progress=progress) as executor:
        runner = StageRunner(RunContext(progress=progress, cache_root=client_cache), executor)
        stage = ProbeStage(ProbeConfig(tag="a", seconds=0.6))
        artifact = runner.run(stage, {})
        assert not artifact.cached
        assert artifact.path == client_cache / "probe" / stage.recipe_id({})
        where = ran(artifact)
        assert where["pid"] != os.getpid()
        assert not where["cache_root"].startswith(str(client_cache)), "the worker wrote into its own cache, not ours"
        assert where["tf_threads"] == 1, "TensorFlow's pools follow the worker's cores resource"
        assert (artifact.path / "payload.bin").read_bytes() == b"a" * 1000
        assert load_artifact("probe", stage.recipe_id({}), client_cache) is not None
        # the second time the client's cache answers: no task is sent
        tasks = len(executor.task_records)
        assert runner.run(stage, {}).cached and len(executor.task_records) == tasks
        record = executor.task_records[-1]
        assert record.ran and record.bytes_out > 1000 and record.wall_seconds >= record.stage_seconds
    # the live view named the stage's task with its worker, and its epoch line
    opened = [event[1] for event in progress.events if event[0] == "open"]
    assert any(text.startswith("probing a on worker ") for text in opened), opened
    assert any(event[0] == "note" and "a epoch 1" in event[1] and event[1].startswith("[worker ") for event in progress.events)


def test_inputs_travel_with_the_task_to_a_worker_that_never_saw_them(cluster, tmp_path: Path) -> None:
    ctx = RunContext(cache_root=tmp_path / "client-cache")
    upstream = StageRunner(ctx).run(ProbeStage(ProbeConfig(tag="up", seconds=0.01)), {})  # built here, in-process
    with DaskExecutor(cluster.scheduler_address) as executor:
        consumer = StageRunner(ctx, executor).run(ConsumerStage(ProbeConfig(tag="down", seconds=0.01)), {"upstream": upstream})
        assert ran(consumer)["received"] == {"upstream": ["meta.json", "payload.bin", "ran.json"]}
        assert executor.task_records[-1].bytes_in > 1000


def test_a_user_error_reaches_the_client_as_raised_and_is_not_retried(cluster, tmp_path: Path) -> None:
    log = tmp_path / "starts.log"
    stage = ProbeStage(ProbeConfig(tag="bad", fail=True, log=str(log)))
    with DaskExecutor(cluster.scheduler_address) as executor:
        with pytest.raises(ConfigError, match="probe bad: key 'fail' is set"):
            StageRunner(RunContext(cache_root=tmp_path / "cache"), executor).run(stage, {})
    assert len(lines(log)) == 1, "a task that raised must not be retried"
    assert load_artifact("probe", stage.recipe_id({}), tmp_path / "cache") is None


def test_a_task_whose_worker_dies_is_rescheduled_and_completes(cluster, tmp_path: Path) -> None:
    log, release = tmp_path / "starts.log", tmp_path / "release"
    stage = ProbeStage(ProbeConfig(tag="survivor", log=str(log), wait_for=str(release)))
    outcome: dict = {}
    with DaskExecutor(cluster.scheduler_address) as executor:
        runner = StageRunner(RunContext(cache_root=tmp_path / "cache"), executor)
        thread = threading.Thread(target=lambda: outcome.update(artifact=runner.run(stage, {})), daemon=True)
        thread.start()
        wait_until(lambda: len(lines(log)) == 1, what="the task starting")
        first = int(lines(log)[0])
        os.kill(first, signal.SIGKILL)  # what the OOM killer does
        wait_until(lambda: len(lines(log)) == 2, what="Dask rescheduling the task")
        release.touch()
        thread.join(120)
    assert not thread.is_alive()
    artifact = outcome["artifact"]
    assert ran(artifact)["pid"] == int(lines(log)[1]) != first
    wait_until(lambda: len(cluster.scheduler_info["workers"]) == 2, what="the nanny restarting the killed worker")


def test_cancelling_stops_the_running_task_on_its_worker(cluster, tmp_path: Path) -> None:
    log = tmp_path / "starts.log"
    stage = ProbeStage(ProbeConfig(tag="long", log=str(log), seconds=90))
    outcome: dict = {}
    with DaskExecutor(cluster.scheduler_address) as executor:
        runner = StageRunner(RunContext(cache_root=tmp_path / "cache"), executor)

        def run() -> None:
            try:
                runner.run(stage, {})
            except BaseException as exc:  # noqa: BLE001 - the test inspects it
                outcome["error"] = exc

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        wait_until(lambda: len(lines(log)) == 1, what="the task starting")
        started = time.monotonic()
        executor.cancel_all()
        thread.join(30)
        assert isinstance(outcome.get("error"), CancelledError)

        def executing() -> int:
            return sum(executor.client.run(lambda dask_worker: dask_worker.state.executing_count).values())

        wait_until(lambda: executing() == 0, seconds=20, what="the worker stopping the cancelled task")
        assert time.monotonic() - started < 20, "the 90 s task stopped at its next progress report"
    assert load_artifact("probe", stage.recipe_id({}), tmp_path / "cache") is None


def test_a_worker_with_other_code_refuses_the_task(tmp_path: Path) -> None:
    task = TaskContext(NullProgress(), tmp_path, worker="worker 7")
    with pytest.raises(ConfigError, match="worker 7 runs different edgeship code"):
        remote_stage_task(task, ProbeStage(ProbeConfig(tag="x")), {}, "0" * 64)
    assert not (tmp_path / "probe").exists()


def test_a_cluster_without_the_cores_resource_is_refused_by_name(tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0", silence_logs=40) as bare:
        with pytest.raises(ConfigError, match=r"offers the 'cores' resource.*--resources cores=2") as caught:
            DaskExecutor(bare.scheduler_address)
        assert bare.scheduler_address in str(caught.value)


def test_one_build_failing_does_not_cancel_another_builds_tasks(cluster, tmp_path: Path) -> None:
    """Two sweep variants share the executor; the one whose stage fails must not stop the other."""
    outcome: dict = {}
    with DaskExecutor(cluster.scheduler_address) as executor:
        ctx = RunContext(cache_root=tmp_path / "cache")
        steady = ProbeStage(ProbeConfig(tag="steady", seconds=3.0))
        thread = threading.Thread(target=lambda: outcome.update(artifact=StageRunner(ctx, executor).run(steady, {})), daemon=True)
        thread.start()
        with pytest.raises(ConfigError, match="probe broken"):
            StageRunner(ctx, executor).run(ProbeStage(ProbeConfig(tag="broken", fail=True)), {})
        thread.join(60)
    assert ran(outcome["artifact"])["pid"] != os.getpid(), "the other build's task ran to the end"
