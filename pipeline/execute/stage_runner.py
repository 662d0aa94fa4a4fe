"""The client side of the seam: a stage's artifact from the cache, else from where it can run.

- One stage at a time runs here (``run``), unless a cluster is given and the stage trains.
- Independent stages (``run_all``: the distilled and scratch students) run side by side in
  local worker processes with the cores split, or all on the cluster.
- On a cluster, a task carries its input artifacts packed (the executor sends each once) and
  returns its output packed; the client installs it into its own cache atomically, exactly where
  a local run would have written it. The recipe ids are computed here, so both caches agree.
- One process never runs the same recipe twice at once: a second caller (another sweep variant
  that needs the same teacher) waits for the first.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import threading
import time
from concurrent.futures import CancelledError, Future
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ContextManager, Mapping, Optional, Sequence

from pipeline.errors import ConfigError
from pipeline.execute.artifact_transfer import PackedArtifact, install_artifact, pack_artifact
from pipeline.execute.executor import Executor, TaskContext, wait_all
from pipeline.execute.local_pool import LocalPoolExecutor, default_jobs
from pipeline.paths import PROJECT_ROOT
from pipeline.stages.base import Artifact, RunContext, Stage, load_artifact, run_stage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageJob:
    """One stage to run: the result key the build uses, the stage, and its input artifacts."""

    key: str
    stage: Stage
    inputs: Mapping[str, Artifact]


@dataclass(frozen=True)
class TaskRecord:
    """What one cluster task cost: for ``make bench`` (bytes moved, scheduler overhead)."""

    stage: str
    recipe_id: str
    worker: str
    ran: bool  # False: the worker's own cache had it
    bytes_in: int
    bytes_out: int
    stage_seconds: float  # the stage's own run on the worker
    wall_seconds: float  # submit to result, as the client saw it
    queued_seconds: float  # submit to the task starting on its worker (waiting for a free core)
    overhead_seconds: float  # the rest: scheduling, moving and installing inputs, packing and returning the output


@dataclass(frozen=True)
class RemoteResult:
    packed: PackedArtifact
    ran: bool
    worker: str
    bytes_in: int
    seconds: float  # the stage's run
    started_at: float  # wall clock on the worker when the task began (bench bookkeeping only)


_inflight: dict[tuple[str, str, str], "Future[Artifact]"] = {}
_inflight_lock = threading.Lock()
# With a cluster, several builds drive their stages from client threads; the stages that stay on
# the client (TensorFlow's converter among them, which is not documented as thread-safe) take turns.
_client_stage_lock = threading.Lock()


@dataclass
class StageRunner:
    ctx: RunContext
    executor: Optional[Executor] = None  # None: this machine (side by side for run_all)
    max_jobs: Optional[int] = None
    _early: list[LocalPoolExecutor] = field(default_factory=list, repr=False)

    @property
    def _job_limit(self) -> int:
        return default_jobs() if self.max_jobs is None else max(1, self.max_jobs)

    def _claim_key(self, stage: Stage, recipe: str) -> tuple[str, str, str]:
        return (str(self.ctx.root), stage.name, recipe)

    @property
    def _remote(self) -> bool:
        return self.executor is not None and not self.executor.shares_cache

    def run(self, stage: Stage, inputs: Mapping[str, Artifact]) -> Artifact:
        """The artifact of ``stage`` on ``inputs``: cached, or run now (here or on the cluster)."""
        return self.run_all([StageJob(stage.name, stage, inputs)], concurrent=False)[stage.name]

    def is_cached(self, stage: Stage, inputs: Mapping[str, Artifact]) -> bool:
        return load_artifact(stage.name, stage.recipe_id(inputs), self.ctx.root) is not None

    def start_early(self, job: StageJob, threads: int = 1) -> bool:
        """Start ``job`` now in a worker process of its own, ahead of the step that needs it.

        The build uses this for the scratch student, which needs no teacher: it trains while the
        teacher does instead of after it. The job is claimed like any in-flight stage, so the
        ``run_all`` that later asks for it waits for this run instead of starting another. Only on
        this machine, and only for a cache miss no one else is running; returns whether it started.
        """
        if self.executor is not None or self._job_limit < 2:
            return False
        recipe = job.stage.recipe_id(job.inputs)
        if load_artifact(job.stage.name, recipe, self.ctx.root) is not None:
            return False
        claim = self._claim_key(job.stage, recipe)
        with _inflight_lock:
            if claim in _inflight:
                return False
            _inflight[claim] = claimed = Future()
        pool = LocalPoolExecutor(1, threads, self.ctx.progress, self.ctx.root)
        self._early.append(pool)

        def settle(task: "Future[Artifact]") -> None:
            with _inflight_lock:
                _inflight.pop(claim, None)
            if task.cancelled():
                claimed.set_exception(CancelledError(f"{job.key} was stopped"))
            elif task.exception() is not None:
                claimed.set_exception(task.exception())
            else:
                claimed.set_result(task.result())

        log.info("starting %s early, in its own process with %d thread(s)", job.key, threads)
        pool.submit(local_stage_task, job.stage, dict(job.inputs), label=job.key).add_done_callback(settle)
        return True

    def finish_early(self, failed: bool = False, interrupted: bool = False) -> None:
        """Close the pools of early jobs; after a failure, stop them first (minutes of training).

        After Ctrl-C they are not terminated: the signal reached them too, and a SIGTERM in the
        middle of removing their temporary directory would leave it behind.
        """
        pools, self._early = self._early, []
        for pool in pools:
            if interrupted:
                pool.interrupted()
            elif failed:
                pool.cancel_all()
            pool.close()

    def run_all(self, jobs: Sequence[StageJob], concurrent: bool = True) -> dict[str, Artifact]:
        """Each job's artifact by key; misses run at once where the executor allows."""
        results: dict[str, Artifact] = {}
        mine: list[tuple[StageJob, Future[Artifact]]] = []
        theirs: dict[str, Future[Artifact]] = {}
        for job in jobs:
            recipe = job.stage.recipe_id(job.inputs)
            hit = load_artifact(job.stage.name, recipe, self.ctx.root)
            if hit is not None:
                log.info("%s: cache hit %s", job.stage.name, recipe[:12])
                results[job.key] = hit
                continue
            claim = self._claim_key(job.stage, recipe)
            with _inflight_lock:
                running = _inflight.get(claim)
                if running is None:
                    _inflight[claim] = running = Future()
                    mine.append((job, running))
                else:
                    theirs[job.key] = running
        try:
            results.update(self._run_misses([job for job, _ in mine], concurrent))
        except BaseException as exc:
            for _, claimed in mine:
                claimed.set_exception(exc)
            raise
        finally:
            with _inflight_lock:
                for job, claimed in mine:
                    _inflight.pop(self._claim_key(job.stage, job.stage.recipe_id(job.inputs)), None)
        for job, claimed in mine:
            claimed.set_result(results[job.key])
        for key, future in theirs.items():
            results[key] = future.result()
        return {job.key: results[job.key] for job in jobs}

    def _run_misses(self, misses: Sequence[StageJob], concurrent: bool) -> dict[str, Artifact]:
        if not misses:
            return {}
        if self._remote:
            here = [job for job in misses if job.stage.task_cores() == 0]
            there = [job for job in misses if job.stage.task_cores() > 0]
            built = {}
            for job in here:
                with _client_stage_lock:
                    built[job.key] = run_stage(job.stage, job.inputs, self.ctx)
            built.update(self._on_cluster(there))
            return built
        limit = self._job_limit
        if not concurrent or len(misses) < 2 or limit < 2:
            return {job.key: run_stage(job.stage, job.inputs, self.ctx) for job in misses}
        built = {}
        for start in range(0, len(misses), limit):
            batch = misses[start : start + limit]
            log.info("running %s side by side", ", ".join(job.key for job in batch))
            with self._side_by_side_executor(len(batch)) as executor:
                futures = [executor.submit(local_stage_task, job.stage, dict(job.inputs), label=job.key) for job in batch]
                built.update(zip((job.key for job in batch), wait_all(futures, executor)))
        return built

    def _side_by_side_executor(self, workers: int) -> ContextManager[Executor]:
        if self.executor is not None:
            return nullcontext(self.executor)
        threads = max(1, (os.cpu_count() or 1) // workers)
        return LocalPoolExecutor(workers, threads, self.ctx.progress, self.ctx.root)

    def _on_cluster(self, jobs: Sequence[StageJob]) -> dict[str, Artifact]:
        assert self.executor is not None
        executor = self.executor
        futures, submitted, finished = [], [], {}
        for index, job in enumerate(jobs):
            packed = {
                name: executor.share(f"{a.stage}/{a.recipe_id}", functools.partial(_pack_cached, a))
                for name, a in job.inputs.items()
            }
            submitted.append(time.time())
            future = executor.submit(
                remote_stage_task, job.stage, packed, code_fingerprint(), label=job.key, cores=job.stage.task_cores()
            )
            future.add_done_callback(lambda _, index=index: finished.setdefault(index, time.time()))
            futures.append(future)
        outcomes: list[RemoteResult] = wait_all(futures, executor)
        built = {}
        for index, (job, outcome) in enumerate(zip(jobs, outcomes)):
            artifact = install_artifact(outcome.packed, self.ctx.root)
            built[job.key] = replace(artifact, cached=not outcome.ran)
            wall = finished.get(index, time.time()) - submitted[index]
            queued = max(0.0, outcome.started_at - submitted[index])  # clocks of one host, or NTP-close ones
            executor.record(TaskRecord(
                job.stage.name, outcome.packed.recipe_id, outcome.worker, outcome.ran, outcome.bytes_in,
                outcome.packed.size, outcome.seconds, round(wall, 3), round(queued, 3),
                round(max(0.0, wall - queued - outcome.seconds), 3),
            ))
        return built


@functools.lru_cache(maxsize=8)
def _pack_cached_by_path(stage: str, recipe_id: str, path: str) -> PackedArtifact:
    return pack_artifact(Artifact(stage=stage, recipe_id=recipe_id, path=Path(path), meta={}))


def _pack_cached(artifact: Artifact) -> PackedArtifact:
    return _pack_cached_by_path(artifact.stage, artifact.recipe_id, str(artifact.path))


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """sha256 of edgeship's own source: a worker with other code would cache other models under
    the same recipe ids, so it must refuse the task instead."""
    digest = hashlib.sha256()
    package = PROJECT_ROOT / "pipeline"
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


# --- where the task runs -------------------------------------------------------------------------


def local_stage_task(task: TaskContext, stage: Stage, inputs: Mapping[str, Artifact]) -> Artifact:
    """A stage in a worker that shares this machine's cache."""
    return run_stage(stage, inputs, RunContext(progress=task.progress, cache_root=task.cache_root))


def remote_stage_task(task: TaskContext, stage: Stage, packed: Mapping[str, PackedArtifact], fingerprint: str) -> RemoteResult:
    """A stage on a machine without the client's cache: install the inputs, run, pack the output."""
    if fingerprint != code_fingerprint():
        raise ConfigError(
            f"Dask worker {task.worker} runs different edgeship code than the client (source fingerprint "
            f"{code_fingerprint()[:12]}, client {fingerprint[:12]}), so its {stage.name} artifact could not be trusted "
            f"under the client's recipe id. Install the client's checkout on every worker and restart them."
        )
    started_at = time.time()
    inputs = {name: install_artifact(item, task.cache_root) for name, item in packed.items()}
    started = time.monotonic()
    artifact = run_stage(stage, inputs, RunContext(progress=task.progress, cache_root=task.cache_root))
    return RemoteResult(
        pack_artifact(artifact), ran=not artifact.cached, worker=task.worker,
        bytes_in=sum(item.size for item in packed.values()), seconds=round(time.monotonic() - started, 3), started_at=started_at,
    )
