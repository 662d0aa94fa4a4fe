"""The README's recipe, as a user follows it: `dask scheduler`, `dask worker ... --resources cores=1`
in their own directories, then `edgeship build --cluster` and a local rerun that is fully cached."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.bench.cluster_bench import cache_entries
from tests.execute.test_cluster_build import TINY

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

DASK = Path(sys.executable).with_name("dask")


@pytest.fixture()
def dask_cli_cluster(tmp_path: Path):
    if not DASK.exists():
        pytest.skip(f"{DASK} missing: `make setup` installs the cluster extra")
    scheduler_file = tmp_path / "scheduler.json"
    logs = tmp_path / "logs"
    logs.mkdir()
    processes = [subprocess.Popen(
        [str(DASK), "scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address", ":0", "--scheduler-file", str(scheduler_file)],
        stdout=subprocess.DEVNULL, stderr=open(logs / "scheduler.log", "w"),
    )]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists():
            assert time.monotonic() < deadline, (logs / "scheduler.log").read_text()
            time.sleep(0.1)
        for name in ("box-a", "box-b"):  # two "machines": separate directories, nothing shared
            home = tmp_path / name
            home.mkdir()
            processes.append(subprocess.Popen(
                [str(DASK), "worker", "--scheduler-file", str(scheduler_file), "--name", name, "--nthreads", "1",
                 "--resources", "cores=1", "--local-directory", str(home), "--dashboard-address", ":0"],
                cwd=home, stdout=subprocess.DEVNULL, stderr=open(logs / f"{name}.log", "w"),
            ))
        yield json.loads(scheduler_file.read_text())["address"], tmp_path
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def edgeship(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], env=env, capture_output=True, text=True, timeout=600)


def test_edgeship_build_on_a_cluster_started_with_the_dask_cli(dask_cli_cluster) -> None:
    address, root = dask_cli_cluster
    profile = root / "tiny.yaml"
    profile.write_text(yaml.safe_dump(TINY))
    results = root / "client-results"
    env = {**os.environ, "EDGESHIP_RESULTS": str(results)}
    built = edgeship("build", "--profile", str(profile), "--cluster", address, env=env)
    assert built.returncode == 0, built.stderr[-3000:]
    shown = built.stdout + built.stderr
    assert "[box-a]" in shown or "[box-b]" in shown, "epoch lines name the worker that trained"
    assert "epoch 1" in shown
    # the workers cached in their own directories; the client's cache came back over the wire
    assert any((root / "box-a").rglob("edgeship-cache")) or any((root / "box-b").rglob("edgeship-cache"))
    assert {entry.split("/")[0] for entry in cache_entries(results)} >= {"data", "teacher", "distill", "quantize", "package"}
    again = edgeship("build", "--profile", str(profile), env=env)  # no cluster: everything from the cache
    assert again.returncode == 0, again.stderr[-3000:]
    stage_lines = [line for line in (again.stdout + again.stderr).splitlines() if "[stage]" in line]
    assert stage_lines and all(line.rstrip().endswith("cached") for line in stage_lines), stage_lines
