"""Run independent stages side by side, one process each, with the cores split between them.

TensorFlow spreads the training of models this small poorly across cores: a second thread speeds
one student's training up far less than a second training at once uses it (docs/RESULTS.md,
"Measurements the code relies on"). Training the distilled student and its scratch baseline side
by side (the same epochs, so they finish together) is therefore much faster than running them in
turn, and both get identical conditions, which keeps the comparison fair.

Every worker runs the ordinary :func:`run_stage`, so the cache, recipe ids and the atomic commit
are unchanged; the parent only forwards the workers' progress to its own display. A stage that
fails in a worker raises the same exception here (ConfigError stays a ConfigError).
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import threading
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

from pipeline.errors import EdgeshipError
from pipeline.progress import Advance, Progress
from pipeline.stages.base import Artifact, RunContext, Stage, load_artifact, run_stage

log = logging.getLogger(__name__)

JOBS_ENV = "EDGESHIP_JOBS"


@dataclass(frozen=True)
class StageJob:
    """One stage to run: the result key the build uses, the stage, and its input artifacts."""

    key: str
    stage: Stage
    inputs: Mapping[str, Artifact]


def default_jobs() -> int:
    """How many stages may run at once: ``$EDGESHIP_JOBS``, else the number of cores."""
    value = os.environ.get(JOBS_ENV, "").strip()
    if value:
        try:
            return max(1, int(value))
        except ValueError:
            log.warning("ignoring %s=%r: not a whole number", JOBS_ENV, value)
    return max(1, os.cpu_count() or 1)


def run_side_by_side(jobs: Sequence[StageJob], ctx: RunContext, max_jobs: Optional[int] = None) -> dict[str, Artifact]:
    """Return each job's artifact by key: cache hits directly, misses run concurrently when allowed.

    With fewer than two misses, or ``max_jobs`` of 1, the misses run here, one after another,
    exactly as :func:`run_stage` would.
    """
    limit = default_jobs() if max_jobs is None else max(1, max_jobs)
    results: dict[str, Artifact] = {}
    misses: list[StageJob] = []
    for job in jobs:
        hit = load_artifact(job.stage.name, job.stage.recipe_id(job.inputs), ctx.root)
        if hit is not None:
            results[job.key] = hit
        else:
            misses.append(job)
    if len(misses) < 2 or limit < 2:
        for job in misses:
            results[job.key] = run_stage(job.stage, job.inputs, ctx)
        return results
    cores = os.cpu_count() or 1
    for batch in _chunks(misses, limit):
        threads = max(1, cores // len(batch))
        results.update(_run_in_workers(batch, ctx, threads))
    return {job.key: results[job.key] for job in jobs}


def _chunks(items: Sequence[StageJob], size: int) -> Iterator[Sequence[StageJob]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _run_in_workers(batch: Sequence[StageJob], ctx: RunContext, threads: int) -> dict[str, Artifact]:
    spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: TensorFlow cannot fork safely
    queue = spawn.Queue()
    forwarder = _ProgressForwarder(queue, ctx.progress)
    forwarder.start()
    log.info("running %s side by side with %d thread(s) each", ", ".join(job.key for job in batch), threads)
    try:
        with ProcessPoolExecutor(
            len(batch), mp_context=spawn, initializer=_init_worker, initargs=(threads, queue), max_tasks_per_child=1
        ) as pool:
            futures = {job.key: pool.submit(_work, job.stage, dict(job.inputs), ctx.root) for job in batch}
            try:
                _wait_for_all(list(futures.values()), pool)
            except BrokenProcessPool as exc:
                names = ", ".join(job.key for job in batch)
                raise EdgeshipError(
                    f"A worker process running {names} died without an error of its own ({exc}); the usual cause "
                    f"is running out of memory. Nothing half-written was kept: rerun, or run the stages one at a time "
                    f"with `edgeship build -j 1` (or {JOBS_ENV}=1)."
                ) from None
    finally:
        queue.put(None)
        forwarder.join()
        queue.close()
    return {key: future.result() for key, future in futures.items()}


def _wait_for_all(futures: list[Future], pool: ProcessPoolExecutor) -> None:
    """Return when every job succeeded; on the first failure stop the others and raise it.

    Stopping matters: the sibling may have minutes of training left, and the user should not wait
    for it to see the error. Its temporary directory stays behind as an ignorable ``.partial``.
    """
    try:
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for future in done:
            future.result()  # re-raises a worker's exception
        for future in futures:
            future.result()
    except KeyboardInterrupt:
        raise  # Ctrl-C reached the workers too (one process group): they clean up and stop by themselves
    except BaseException:
        processes = getattr(pool, "_processes", None) or {}  # no public API before Python 3.14's terminate_workers()
        for process in list(processes.values()):
            process.terminate()
        raise


# --- worker side -------------------------------------------------------------------------------

_queue: Any = None


def _init_worker(threads: int, queue: Any) -> None:
    """Pin TensorFlow's thread pools before anything imports it, and remember the progress queue."""
    global _queue
    _queue = queue
    os.environ["TF_NUM_INTRAOP_THREADS"] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = str(threads)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def _work(stage: Stage, inputs: Mapping[str, Artifact], root: Path) -> Artifact:
    return run_stage(stage, inputs, RunContext(progress=QueueProgress(_queue), cache_root=root))


_task_ids = itertools.count()


class QueueProgress:
    """A worker's :class:`Progress`: every event becomes a message for the parent's forwarder."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue
        self.prefix = f"{os.getpid()}:"

    def task(self, description: str, total: Optional[float] = None) -> AbstractContextManager[Advance]:
        return _QueueTask(self.queue, f"{self.prefix}{next(_task_ids)}", description, total)

    def note(self, message: str) -> None:
        self.queue.put(("note", message))

    def detail(self, message: str) -> None:
        self.queue.put(("detail", message))


class _QueueTask:
    def __init__(self, queue: Any, uid: str, description: str, total: Optional[float]) -> None:
        self.queue, self.uid, self.description, self.total = queue, uid, description, total

    def __enter__(self) -> Callable[[float], None]:
        self.queue.put(("open", self.uid, self.description, self.total))
        return lambda amount=1: self.queue.put(("advance", self.uid, amount))

    def __exit__(self, *exc: object) -> None:
        self.queue.put(("close", self.uid))


# --- parent side -------------------------------------------------------------------------------


class _ProgressForwarder(threading.Thread):
    """Replays the workers' progress messages on the parent's Progress until it reads ``None``."""

    def __init__(self, queue: Any, progress: Progress) -> None:
        super().__init__(name="stage-progress", daemon=True)
        self.queue, self.progress = queue, progress
        self.open: dict[str, tuple[AbstractContextManager[Advance], Advance]] = {}

    def run(self) -> None:
        try:
            while True:
                message = self.queue.get()
                if message is None:
                    return
                self._handle(message)
        finally:
            for manager, _ in self.open.values():
                manager.__exit__(None, None, None)
            self.open.clear()

    def _handle(self, message: tuple) -> None:
        kind = message[0]
        if kind == "open":
            _, uid, description, total = message
            manager = self.progress.task(description, total)
            self.open[uid] = (manager, manager.__enter__())
        elif kind == "advance":
            entry = self.open.get(message[1])
            if entry is not None:
                entry[1](message[2])
        elif kind == "close":
            entry = self.open.pop(message[1], None)
            if entry is not None:
                entry[0].__exit__(None, None, None)
        elif kind == "note":
            self.progress.note(message[1])
        elif kind == "detail":
            self.progress.detail(message[1])
