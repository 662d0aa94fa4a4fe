"""Tasks in local worker processes, one per task, with this machine's cores split between them.

TensorFlow spreads the training of models this small poorly across cores: a second thread speeds
one student's training up far less than a second training at once uses it (docs/RESULTS.md,
"Measurements the code relies on"). So the distilled student and its scratch baseline train side
by side, each in a fresh interpreter whose TensorFlow thread pools are pinned to its share.
Workers share this machine's cache; their progress is forwarded to the parent's display.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import signal
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, TypeVar

from pipeline.errors import EdgeshipError
from pipeline.execute.executor import Executor, TaskContext, cancel_future
from pipeline.execute.progress_relay import ProgressReplay
from pipeline.paths import cache_dir
from pipeline.progress import Advance, NullProgress, Progress

log = logging.getLogger(__name__)

T = TypeVar("T")
JOBS_ENV = "EDGESHIP_JOBS"


class LocalPoolExecutor(Executor):
    """``workers`` spawned processes (TensorFlow cannot fork safely), ``threads`` each."""

    def __init__(self, workers: int, threads: int, progress: Optional[Progress] = None, cache_root: Optional[Path] = None) -> None:
        spawn = multiprocessing.get_context("spawn")
        self._queue = spawn.Queue()
        self._forwarder = _ProgressForwarder(self._queue, progress or NullProgress())
        self._forwarder.start()
        root = cache_root or cache_dir()
        self._pool = ProcessPoolExecutor(
            workers, mp_context=spawn, initializer=_init_worker, initargs=(threads, self._queue, str(root)), max_tasks_per_child=1
        )
        self._labels: list[str] = []
        self._closed = False
        log.info("local pool: %d worker(s), %d TensorFlow thread(s) each", workers, threads)

    def submit(self, fn: Callable[..., T], /, *args: Any, label: str = "", cores: int = 1) -> "Future[T]":
        self._labels.append(label or getattr(fn, "__name__", "task"))
        outer: Future[T] = Future()
        inner = self._pool.submit(_call, fn, args)
        outer.add_done_callback(lambda f: inner.cancel() if f.cancelled() else None)
        inner.add_done_callback(lambda f: _settle(f, outer, self._labels))
        return outer

    def cancel(self, futures: Sequence["Future[Any]"]) -> None:
        """A pool serves one batch of one build, so stopping some of its tasks stops them all."""
        self.cancel_all()

    def cancel_all(self) -> None:
        """Terminate the workers: a sibling may have minutes of training left. Each removes its
        temporary directory on the way out (see ``_init_worker``)."""
        processes = getattr(self._pool, "_processes", None) or {}  # no public API before Python 3.14's terminate_workers()
        for process in list(processes.values()):
            process.terminate()

    def interrupted(self) -> None:
        """Nothing to do: a terminal's Ctrl-C reached the workers too (one process group), and they
        remove their temporary directories as they stop; terminating them would leave those behind."""

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._pool.shutdown(wait=True, cancel_futures=True)
        finally:
            self._queue.put(None)
            self._forwarder.join()
            self._queue.close()


def _settle(inner: "Future[T]", outer: "Future[T]", labels: list[str]) -> None:
    """Copy the worker's outcome onto the caller's future; a dead worker becomes a clear error."""
    if outer.done():
        return
    if inner.cancelled():
        cancel_future(outer)
        return
    exc = inner.exception()
    if isinstance(exc, BrokenProcessPool):
        names = ", ".join(labels)
        exc = EdgeshipError(
            f"A worker process running {names} died without an error of its own ({exc}); the usual cause "
            f"is running out of memory. Nothing half-written was kept: rerun, or run the stages one at a time "
            f"with `edgeship build -j 1` (or {JOBS_ENV}=1)."
        )
    if exc is not None:
        outer.set_exception(exc)
    else:
        outer.set_result(inner.result())


def default_jobs() -> int:
    """How many stages may run at once: ``$EDGESHIP_JOBS``, else the number of cores."""
    value = os.environ.get(JOBS_ENV, "").strip()
    if value:
        try:
            return max(1, int(value))
        except ValueError:
            log.warning("ignoring %s=%r: not a whole number", JOBS_ENV, value)
    return max(1, os.cpu_count() or 1)


# --- worker side -------------------------------------------------------------------------------

_queue: Any = None
_cache_root: Optional[Path] = None


def _init_worker(threads: int, queue: Any, cache_root: str) -> None:
    """Pin TensorFlow's thread pools before anything imports it, and remember the progress queue.

    ``cancel_all`` terminates workers; SIGTERM becomes SystemExit here so that the stage's
    ``atomic_directory`` removes its temporary directory on the way out.
    """
    global _queue, _cache_root
    _queue, _cache_root = queue, Path(cache_root)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    pin_tensorflow_threads(threads)


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def pin_tensorflow_threads(threads: int) -> None:
    """Size TensorFlow's pools for this process; only possible before it first runs an op."""
    os.environ["TF_NUM_INTRAOP_THREADS"] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = str(threads)
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # TensorFlow already ran here: its pools keep their size
        log.warning("TensorFlow was already initialised in process %d; its thread pools keep their size", os.getpid())


def _call(fn: Callable[..., T], args: tuple) -> T:
    assert _cache_root is not None
    return fn(TaskContext(QueueProgress(_queue), _cache_root, worker=f"pid {os.getpid()}"), *args)


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
        self.queue = queue
        self.replay = ProgressReplay(progress)

    def run(self) -> None:
        try:
            while True:
                message = self.queue.get()
                if message is None:
                    return
                self.replay.handle(message)
        finally:
            self.replay.close_matching()
