"""Benchmark builds on a Dask cluster whose workers share no disk with the client (issue #17).

A real ``LocalCluster`` with two single-core worker processes stands for two machines: each
worker has its own directory and cache, and inputs reach them only inside tasks. The same
4-variant sweep of the quick grid runs three times from a cold cache:

1. locally, one process (``EDGESHIP_JOBS=1``): the reference wall time and cache;
2. on the cluster: wall time, bytes each task carried, time each task spent outside its stage;
   the client's cache must hold exactly the local run's recipe ids (asserted, not only reported),
   and a local rerun afterwards must be fully cached;
3. on a fresh cluster, killing the worker that is training a student: the sweep must complete,
   and the time from the kill to the rescheduled task's end is recorded.

A round trip of no-op tasks gives the scheduler's own overhead per task.
"""

from __future__ import annotations

import logging
import os
import shutil
import statistics
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

from pipeline.bench.common import target, write_result
from pipeline.progress import NullProgress, Progress

WORKERS = 2
NOOP_TASKS = 30


class BenchFailed(AssertionError):
    """A property the bench asserts did not hold."""


def quick_grid(profile: str):
    from pipeline.sweep.grid import SweepGrid

    # 4 variants, each training its own student (two widths x two input sizes, so two teachers)
    # and pruning it: enough independent training for two workers to share.
    return SweepGrid(
        base_profile=profile, family=("mobilenet_v2",), width=(0.35, 0.5), resolution=(24, 28),
        sparsity=(0.5,), pruning_method="structured", quantization=("int8",),
    )


def bench_target():
    """The local target, profiling briefly: the bench is about building, not about the device."""
    from pipeline.config.target import load_target

    local = load_target("local")
    return local.model_copy(update={"profiling": local.profiling.model_copy(update={"runs": 20, "min_seconds": 0.2, "warmup": 2})})


def cache_entries(results: Path) -> set[str]:
    """``stage/recipe id`` of every finished artifact: what 'the same cache' means across machines."""
    return {f"{meta.parent.parent.name}/{meta.parent.name}" for meta in (results / "cache").glob("*/*/meta.json")}


def _set_environment(values: dict[str, Optional[str]]) -> None:
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@contextmanager
def environment(**values: Optional[str]) -> Iterator[None]:
    """Set (or, with None, unset) environment variables for the block."""
    saved = {key: os.environ.get(key) for key in values}
    try:
        _set_environment(values)
        yield
    finally:
        _set_environment(saved)


@contextmanager
def local_cluster(folder: Path) -> Iterator[Any]:
    from distributed import LocalCluster

    folder.mkdir(parents=True, exist_ok=True)
    with LocalCluster(
        n_workers=WORKERS, threads_per_worker=1, processes=True, resources={"cores": 1},
        dashboard_address=":0", local_directory=str(folder), silence_logs=40,
    ) as cluster:
        yield cluster


def sweep(grid, results: Path, progress: Progress, executor=None) -> tuple[float, Any]:
    from pipeline.sweep.runner import run_sweep

    with environment(EDGESHIP_RESULTS=str(results)):
        started = time.perf_counter()
        result = run_sweep(grid, bench_target(), progress=progress, executor=executor)
        wall = time.perf_counter() - started
    failed = [row for row in result.rows if row.get("error")]
    if failed:
        raise BenchFailed(f"variants failed: {[(row['name'], row['error']) for row in failed]}")
    return wall, result


def _noop(task) -> float:
    return time.monotonic()


def scheduler_round_trip(executor) -> float:
    """Median seconds from submit to result of a task that does nothing (one at a time)."""
    times = []
    for _ in range(NOOP_TASKS):
        started = time.perf_counter()
        executor.submit(_noop, label="noop", cores=0).result()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def kill_a_training_worker(cluster, executor, stop: threading.Event, out: dict) -> None:
    """Wait until a worker has been training a student for a second, then SIGKILL its process
    and time until the scheduler holds that task's result (after Dask reran it elsewhere)."""
    client = executor.client
    seen: dict[str, float] = {}
    while not stop.is_set():
        processing = client.processing()
        for worker, keys in processing.items():
            for key in keys:
                if "student" in str(key):
                    first = seen.setdefault(str(key), time.monotonic())
                    if time.monotonic() - first >= 1.0:
                        pid = client.run(os.getpid, workers=[worker])[worker]
                        os.kill(pid, 9)
                        killed = time.monotonic()
                        out.update(killed_key=str(key), killed_worker=worker)
                        while not stop.is_set():
                            state = client.run_on_scheduler(
                                lambda dask_scheduler, key=key: dask_scheduler.tasks[key].state if key in dask_scheduler.tasks else "released"
                            )
                            if state in ("memory", "released"):
                                out["recovery_seconds"] = round(time.monotonic() - killed, 2)
                                return
                            time.sleep(0.1)
                        return
        time.sleep(0.1)


def run(profile: str = "quick", progress: Optional[Progress] = None) -> dict[str, Any]:
    from pipeline.execute.dask_cluster import DaskExecutor
    from pipeline.execute.stage_runner import code_fingerprint

    progress = progress or NullProgress()
    logging.getLogger("distributed").setLevel(logging.WARNING)  # the cluster's INFO lines drown the bars
    grid = quick_grid(profile)
    scratch = Path(tempfile.mkdtemp(prefix="cluster-bench-"))
    try:
        with environment(EDGESHIP_JOBS="1"):
            local_wall, local_result = sweep(grid, scratch / "local", progress)
        local_ids = cache_entries(scratch / "local")

        with local_cluster(scratch / "workers") as cluster, DaskExecutor(cluster.scheduler_address, progress=progress) as executor:
            cluster_wall, _ = sweep(grid, scratch / "cluster", progress, executor)
            records = list(executor.task_records)
            round_trip = scheduler_round_trip(executor)
        cluster_ids = cache_entries(scratch / "cluster")
        if cluster_ids != local_ids:
            raise BenchFailed(
                f"the cluster's cache differs from the local run's: only local {sorted(local_ids - cluster_ids)}, "
                f"only cluster {sorted(cluster_ids - local_ids)}"
            )
        with environment(EDGESHIP_JOBS="1"):
            _, rerun = sweep(grid, scratch / "cluster", progress)
        if not all(row["built_from_cache"] for row in rerun.rows):
            raise BenchFailed("a local rerun after the cluster sweep rebuilt something")

        kill: dict[str, Any] = {}
        with local_cluster(scratch / "workers-kill") as cluster, DaskExecutor(cluster.scheduler_address, progress=progress) as executor:
            stop = threading.Event()
            killer = threading.Thread(target=kill_a_training_worker, args=(cluster, executor, stop, kill), daemon=True)
            killer.start()
            killed_wall, killed_result = sweep(grid, scratch / "killed", progress, executor)
            stop.set()
            killer.join(30)
        if "killed_key" not in kill:
            raise BenchFailed("no worker was killed: no student task ran long enough to be caught")
        if cache_entries(scratch / "killed") != local_ids:
            raise BenchFailed("the sweep with a killed worker left a different cache than the local run")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    ran = [r for r in records if r.ran]
    moved = [r.bytes_in + r.bytes_out for r in ran]
    overhead = [r.overhead_seconds for r in ran]
    payload = {
        "profile": profile,
        "variants": [row["name"] for row in local_result.rows],
        "workers": WORKERS,
        "code_fingerprint": code_fingerprint()[:16],
        "local_one_process_seconds": round(local_wall, 1),
        "cluster_seconds": round(cluster_wall, 1),
        "speedup": round(local_wall / cluster_wall, 2),
        "tasks": [
            {"stage": r.stage, "recipe_id": r.recipe_id[:12], "worker": r.worker, "bytes_in": r.bytes_in,
             "bytes_out": r.bytes_out, "stage_seconds": r.stage_seconds, "wall_seconds": r.wall_seconds,
             "queued_seconds": r.queued_seconds, "overhead_seconds": r.overhead_seconds}
            for r in records
        ],
        "bytes_per_task": {"mean": round(statistics.mean(moved)), "max": max(moved)} if moved else None,
        # per task: scheduling, moving and installing inputs, packing and returning the output
        # (time spent queued for a free core is not overhead and is listed per task instead)
        "overhead_seconds_per_task": {"median": round(statistics.median(overhead), 3), "max": round(max(overhead), 3)} if overhead else None,
        "scheduler_round_trip_seconds": round(round_trip, 4),
        "recipe_ids": {"local": len(local_ids), "cluster": len(cluster_ids), "match": True},
        "rerun_fully_cached": True,
        "worker_killed": {
            "task": kill["killed_key"], "recovery_seconds": kill.get("recovery_seconds"),
            "sweep_seconds": round(killed_wall, 1), "extra_seconds": round(killed_wall - cluster_wall, 1),
            "completed": all(not row.get("error") for row in killed_result.rows),
        },
        "targets": {
            "recipe_ids_match_local": {"value": True, "limit": True, "met": True},
            "rerun_fully_cached": {"value": True, "limit": True, "met": True},
            "sweep_completes_after_worker_kill": {"value": True, "limit": True, "met": True},
            "speedup_vs_one_local_process": {"value": round(local_wall / cluster_wall, 2), "limit": "report", "met": None},
            "scheduler_round_trip_s": target(round(round_trip, 4), 0.1, higher_is_better=False),
            "overhead_per_task_median_s": {"value": round(statistics.median(overhead), 3) if overhead else None, "limit": "report", "met": None},
        },
    }
    path = write_result("cluster", payload)
    progress.note(f"cluster bench written to {path}")
    return payload
