"""The execution seam: where independent stage work runs, behind one ``concurrent.futures``-like API.

A submitted task is ``fn(task, *args)``: ``task`` is a :class:`TaskContext` made where the task
runs, so the task reports progress and finds a cache without knowing whether it is in this
process, a local worker process or a Dask worker on another machine. Every ``submit`` returns a
plain :class:`concurrent.futures.Future`, so callers wait on all executors the same way.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from concurrent.futures import FIRST_EXCEPTION, CancelledError, Future, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional, Sequence, TypeVar

from pipeline.paths import cache_dir
from pipeline.progress import NullProgress, Progress

log = logging.getLogger(__name__)

T = TypeVar("T")


class TaskCancelled(Exception):
    """Raised inside a task (at its next progress report) once the client cancelled it."""


@dataclass
class TaskContext:
    """What a task gets where it runs: a progress display that reaches the client, a stage cache
    of that machine, and the name of the worker (for the client's live view)."""

    progress: Progress
    cache_root: Path
    worker: str = "local"


class Executor(ABC):
    """Runs tasks somewhere; ``shares_cache`` says whether they see the client's ``results/cache``.

    ``builds_at_once`` is how many whole builds (sweep variants, nightly profiles) the client may
    drive at once: 1 when the work shares this machine's cores, more when a cluster's scheduler
    decides what runs where.
    """

    shares_cache: ClassVar[bool] = True
    builds_at_once: int = 1

    @abstractmethod
    def submit(self, fn: Callable[..., T], /, *args: Any, label: str = "", cores: int = 1) -> "Future[T]":
        """Run ``fn(task, *args)``; ``cores`` is what the task asks of the worker (0: almost nothing)."""

    def share(self, name: str, make: Callable[[], T]) -> T:
        """``make()``, to pass to tasks; a cluster sends it once under ``name`` and hands tasks a
        reference, so many tasks needing the same input do not each carry a copy."""
        return make()

    def record(self, entry: Any) -> None:
        """Keep what a task cost (a cluster executor lists them for ``make bench``)."""

    def cancel(self, futures: Sequence["Future[Any]"]) -> None:
        """Stop these tasks (queued or running), and only these: one failing build of a sweep
        must not take its sibling builds down with it."""
        for future in futures:
            cancel_future(future)

    def cancel_all(self) -> None:
        """Stop every task still queued or running (Ctrl-C)."""

    def interrupted(self) -> None:
        """Ctrl-C reached the client: by default, the same as ``cancel_all``."""
        self.cancel_all()

    def close(self) -> None:
        """Release workers and connections; safe to call twice."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InProcessExecutor(Executor):
    """Runs each task at once, here: the default for single stages and for ``-j 1``."""

    def __init__(self, progress: Optional[Progress] = None, cache_root: Optional[Path] = None) -> None:
        self.progress = progress or NullProgress()
        self.cache_root = cache_root

    def submit(self, fn: Callable[..., T], /, *args: Any, label: str = "", cores: int = 1) -> "Future[T]":
        future: Future[T] = Future()
        try:
            future.set_result(fn(TaskContext(self.progress, self.cache_root or cache_dir()), *args))
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # the caller sees it from result(), as with any executor
            future.set_exception(exc)
        return future


def cancel_future(future: "Future[Any]") -> None:
    """Cancel ``future`` so that ``concurrent.futures.wait`` sees it: ``Future.cancel()`` alone
    does not wake the waiters ``wait`` installed; ``set_running_or_notify_cancel`` does."""
    if future.cancel():
        future.set_running_or_notify_cancel()


def wait_all(futures: Sequence["Future[T]"], executor: Executor) -> list[T]:
    """Every future's result, in order; the first failure (or Ctrl-C) cancels the rest and is raised.

    Stopping the others matters: a sibling may have minutes of training left, and the user should
    not wait for it to see the error.
    """
    try:
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for future in done:
            if not future.cancelled():
                future.result()  # re-raises a task's exception
        return [future.result() for future in futures]
    except KeyboardInterrupt:
        executor.interrupted()
        raise
    except (Exception, CancelledError):
        log.info("cancelling %d task(s)", sum(1 for f in futures if not f.done()))
        executor.cancel(futures)
        raise
