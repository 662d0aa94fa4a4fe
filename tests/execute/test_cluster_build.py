"""Real builds and a real sweep on a LocalCluster whose workers share no cache with the client."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.bench.cluster_bench import cache_entries
from pipeline.build import build_profile
from pipeline.config.target import load_target
from pipeline.execute.dask_cluster import DaskExecutor
from pipeline.sweep.grid import SweepGrid
from pipeline.sweep.runner import run_sweep
from tests.helpers.profiles import TINY as BASE, merged

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

TINY = merged(BASE, name="tiny-cluster")


def write_profile(path: Path, data: dict) -> str:
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_a_cluster_build_leaves_the_cache_a_local_build_would(cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    profile = write_profile(tmp_path / "tiny.yaml", TINY)
    monkeypatch.setenv("EDGESHIP_RESULTS", str(tmp_path / "local"))
    build_profile(profile, max_jobs=1)  # the reference: one process, as plain as a build gets
    monkeypatch.setenv("EDGESHIP_RESULTS", str(tmp_path / "client"))
    with DaskExecutor(cluster.scheduler_address) as executor:
        remote = build_profile(profile, executor=executor)
        trained = {record.stage: record for record in executor.task_records}
    assert set(trained) == {"teacher", "distill"} and len(executor.task_records) == 3  # teacher, student, scratch
    assert all(record.ran and record.worker.startswith("worker ") for record in executor.task_records)
    assert not remote.artifacts["student"].cached and remote.bundle_dir is not None
    assert cache_entries(tmp_path / "client") == cache_entries(tmp_path / "local")
    rerun = build_profile(profile)  # on this machine, no cluster: nothing left to do
    assert all(artifact.cached for artifact in rerun.artifacts.values())
    assert rerun.bundle_dir == remote.bundle_dir


def test_a_sweep_on_the_cluster_trains_a_shared_teacher_once(cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGESHIP_RESULTS", str(tmp_path / "results"))
    base = write_profile(tmp_path / "base.yaml", merged(TINY, name="tiny-sweep", distillation={"scratch_baseline": False}))
    target = tmp_path / "local.yaml"
    target.write_text(yaml.safe_dump({
        "arch": "x86_64", "threads": 1, "remote_dir": "devices/local", "python": "host",
        "profiling": {"runs": 3, "min_seconds": 0.0, "warmup": 1}, "transport": {"type": "local"},
    }))
    grid = SweepGrid(base_profile=base, width=(0.25, 0.35), quantization=("int8",))
    with DaskExecutor(cluster.scheduler_address) as executor:
        result = run_sweep(grid, load_target(str(target)), executor=executor)
        stages = sorted(record.stage for record in executor.task_records)
    assert [row.get("error") for row in result.rows] == [None, None]
    assert all(row["latency_ms"] > 0 and row["bundle_id"] for row in result.rows)
    assert stages == ["distill", "distill", "teacher"], "both variants waited for one teacher task"


def test_ctrl_c_on_the_client_cancels_the_clusters_tasks(cluster, tmp_path: Path) -> None:
    long = merged(TINY, name="tiny-long", student={"training": {"epochs": 200, "batch_size": 16}}, distillation={"scratch_baseline": False})
    profile = write_profile(tmp_path / "long.yaml", long)
    env = {**os.environ, "EDGESHIP_RESULTS": str(tmp_path / "results"), "EDGESHIP_CLUSTER": cluster.scheduler_address}
    client = DaskExecutor(cluster.scheduler_address)
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "build", "--profile", profile], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

        def executing() -> int:
            return sum(client.client.run(lambda dask_worker: dask_worker.state.executing_count).values())

        deadline = time.monotonic() + 180
        while not (tmp_path / "results" / "cache" / "teacher").exists() or executing() == 0:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the student never started on the cluster"
            time.sleep(0.2)
        time.sleep(2)  # the student is training on a worker now
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 130, stderr
        assert "interrupted" in stderr and "Traceback" not in stderr
        deadline = time.monotonic() + 20
        while executing():
            assert time.monotonic() < deadline, "a worker kept training after the client's Ctrl-C"
            time.sleep(0.2)
        assert not list((tmp_path / "results" / "cache").glob("distill/*/meta.json"))
    finally:
        client.close()
