"""Tasks on a Dask distributed cluster (``--cluster tcp://host:8786``), machines with no shared disk.

Dask does the scheduling, data movement and retries; this module only adapts it to the seam:
- a task asking for ``cores`` asks the scheduler for that many of a worker's ``cores`` resource
  (workers start with ``--resources cores=N``), so a 2-core worker never trains four models at once;
- a worker process's TensorFlow thread pools are sized to the worker's cores before its first
  training task;
- progress travels as Dask events (``log_event``/``subscribe_topic``) to the client's display;
- a task whose worker dies is rescheduled by Dask itself (``distributed.scheduler.allowed-failures``);
  an exception raised by the task (a bad config) is not retried and reaches the client as raised;
- a cancelled task stops at its next progress report, when it finds its key cancelled on its worker.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, TypeVar

from pipeline.errors import ConfigError, EdgeshipError
from pipeline.execute.executor import Executor, TaskCancelled, TaskContext, cancel_future
from pipeline.execute.local_pool import pin_tensorflow_threads
from pipeline.execute.progress_relay import ProgressReplay
from pipeline.progress import NullProgress, Progress

log = logging.getLogger(__name__)

T = TypeVar("T")
CLUSTER_ENV = "EDGESHIP_CLUSTER"  # read by the CLI (pipeline.execute.choose); named in messages here
WORKER_CACHE_ENV = "EDGESHIP_WORKER_CACHE"
TOPIC = "edgeship-progress"
INSTALL_HINT = "pip install 'edgeship[cluster]' (in a checkout: .venv/bin/pip install -e '.[cluster]')"
WORKER_HINT = "dask worker tcp://SCHEDULER:8786 --nthreads 2 --resources cores=2"


def _distributed():
    try:
        import distributed
    except ImportError:
        raise ConfigError(f"--cluster needs Dask's distributed package, which is not installed here: {INSTALL_HINT}.") from None
    return distributed


class DaskExecutor(Executor):
    """A connected Dask client. ``builds_at_once`` lets a sweep drive every variant at once; the
    scheduler, not the client, decides how many train."""

    shares_cache = False

    def __init__(self, address: str, progress: Optional[Progress] = None, connect_timeout: float = 10.0, worker_timeout: float = 60.0) -> None:
        distributed = _distributed()
        self.address = address
        try:
            self.client = distributed.Client(address, timeout=f"{connect_timeout}s", set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise EdgeshipError(
                f"Cannot reach the Dask scheduler at {address} ({exc}). Start one with `dask scheduler` on that "
                f"machine and workers with `{WORKER_HINT}`, or unset {CLUSTER_ENV} / drop --cluster to build here."
            ) from None
        try:
            self._check_workers(worker_timeout)
        except BaseException:
            self.client.close()
            raise
        self.builds_at_once = 16
        self._replay = ProgressReplay(progress or NullProgress())
        self.client.subscribe_topic(TOPIC, lambda event: self._replay.handle(tuple(event[1])))
        self._futures: dict[str, Any] = {}  # key -> Dask future, while running
        self._keys: dict[Future, str] = {}  # the caller's future -> its key
        self._shared: dict[str, Any] = {}
        self.task_records: list[Any] = []  # what each stage task cost, in finishing order
        self._lock = threading.Lock()
        self._closed = False

    def _check_workers(self, timeout: float) -> None:
        try:
            self.client.wait_for_workers(1, timeout=timeout)
        except TimeoutError:
            raise EdgeshipError(
                f"The Dask scheduler at {self.address} has no workers after {timeout:.0f} s. Start one on each "
                f"machine with `{WORKER_HINT}` (each needs {INSTALL_HINT})."
            ) from None
        workers = self.client.scheduler_info(n_workers=-1)["workers"]
        if not any(info.get("resources", {}).get("cores") for info in workers.values()):
            names = ", ".join(sorted(str(info.get("name", address)) for address, info in workers.items()))
            raise ConfigError(
                f"No worker of the Dask scheduler at {self.address} offers the 'cores' resource (workers: {names}), "
                f"so no training task could ever start. Restart the workers with it, e.g. `{WORKER_HINT}`."
            )

    def record(self, entry: Any) -> None:
        with self._lock:
            self.task_records.append(entry)

    def share(self, name: str, make: Callable[[], Any]) -> Any:
        """Scatter ``make()`` once; tasks given the returned future receive the value (once per worker)."""
        with self._lock:
            if name not in self._shared:
                self._shared[name] = self.client.scatter(make(), hash=False)
            return self._shared[name]

    def submit(self, fn: Callable[..., T], /, *args: Any, label: str = "", cores: int = 1) -> "Future[T]":
        key = f"edgeship-{label or getattr(fn, '__name__', 'task')}-{uuid.uuid4().hex[:12]}"
        remote = self.client.submit(
            _dask_call, fn, args, cores, key=key, pure=False, retries=0,
            resources={"cores": cores} if cores > 0 else None,
        )
        outer: Future[T] = Future()
        with self._lock:
            self._futures[key] = remote
            self._keys[outer] = key
        remote.add_done_callback(lambda done: self._settle(key, label, done, outer))
        return outer

    def _settle(self, key: str, label: str, remote: Any, outer: "Future[T]") -> None:
        with self._lock:
            self._futures.pop(key, None)
            self._keys.pop(outer, None)
        self._replay.close_matching(key)  # bars of a task whose worker died are never closed by it
        if outer.done():
            return
        if remote.cancelled():  # Dask's cancelled futures raise asyncio's CancelledError, a BaseException
            cancel_future(outer)
            return
        try:
            outer.set_result(remote.result())
        except Exception as exc:  # noqa: BLE001 - every outcome must reach the caller's future
            distributed = _distributed()
            if isinstance(exc, distributed.KilledWorker):
                exc = EdgeshipError(
                    f"The Dask task {label or key} was running on a worker that died, and on the workers Dask retried "
                    f"it on ({exc}). The usual cause is running out of memory on {self.address}'s workers: give them "
                    f"more memory or fewer cores, then rerun (finished stages are kept)."
                )
            outer.set_exception(exc)
        except BaseException:  # cancelled between the check and result()
            cancel_future(outer)

    def cancel(self, futures: Sequence["Future[Any]"]) -> None:
        with self._lock:
            remote = [self._futures[key] for key in (self._keys.get(f) for f in futures) if key in self._futures]
        try:
            if remote:
                self.client.cancel(remote, force=True)  # running ones see it at their next progress report
        except Exception as exc:  # noqa: BLE001 - cancelling must not hide the error that caused it
            log.warning("could not cancel tasks on the cluster at %s: %s", self.address, exc)

    def cancel_all(self) -> None:
        with self._lock:
            outers = list(self._keys)
        self.cancel(outers)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.client.unsubscribe_topic(TOPIC)
        except Exception:  # noqa: BLE001
            pass
        self._replay.close_matching()
        self.client.close()


# --- worker side -------------------------------------------------------------------------------


_pinned = False
_pin_lock = threading.Lock()


def _pin_threads_once(worker: Any) -> None:
    """Size this worker process's TensorFlow pools to the worker's ``cores`` before a training task
    first imports TensorFlow; tasks running at once in one worker share those pools."""
    global _pinned
    with _pin_lock:
        if _pinned:
            return
        _pinned = True
        cores = int(worker.state.total_resources.get("cores") or worker.state.nthreads)
        pin_tensorflow_threads(cores)


def worker_cache_root(worker: Any) -> Path:
    """``$EDGESHIP_WORKER_CACHE``, else a folder in the worker's own local directory."""
    configured = os.environ.get(WORKER_CACHE_ENV, "").strip()
    return Path(configured) if configured else Path(worker.local_directory) / "edgeship-cache"


def _dask_call(fn: Callable[..., T], args: tuple, cores: int) -> T:
    distributed = _distributed()
    worker = distributed.get_worker()
    if cores > 0:
        _pin_threads_once(worker)
    key = worker.get_current_task()
    name = str(worker.name if worker.name is not None else worker.address)
    name = f"worker {name}" if name.isdigit() else name  # LocalCluster numbers its workers
    progress = TopicProgress(worker, str(key), name, lambda: _cancelled(worker, key))
    try:
        return fn(TaskContext(progress, worker_cache_root(worker), worker=name), *args)
    finally:
        progress.flush()


def _cancelled(worker: Any, key: Any) -> bool:
    """Whether the scheduler released this running task (the client cancelled it): the worker then
    marks it cancelled but cannot stop the thread running it; the task checks and stops itself."""
    state = worker.state.tasks.get(key)
    return state is None or state.state in ("cancelled", "released", "forgotten")


class TopicProgress:
    """A Dask task's :class:`Progress`: batched events to the client, and the cancel check.

    Training advances once per batch; sending each would flood the scheduler, so advances are
    summed and sent at most every ``interval`` seconds, when the cancel event is also read.
    """

    def __init__(self, worker: Any, key: str, name: str, cancelled: Callable[[], bool], interval: float = 0.5) -> None:
        self.worker, self.key, self.name, self.cancelled, self.interval = worker, key, name, cancelled, interval
        self._ids = 0
        self._pending: dict[str, float] = {}
        self._last = time.monotonic()

    def _send(self, *message: Any) -> None:
        self.worker.log_event(TOPIC, list(message))

    def task(self, description: str, total: Optional[float] = None):
        import contextlib

        self._ids += 1
        uid = f"{self.key}:{self._ids}"

        @contextlib.contextmanager
        def manager():
            self._send("open", uid, f"{description} on {self.name}", total)
            try:
                yield lambda amount=1: self._advance(uid, amount)
            finally:
                self.flush()
                self._send("close", uid)

        return manager()

    def _advance(self, uid: str, amount: float) -> None:
        self._pending[uid] = self._pending.get(uid, 0.0) + amount
        if time.monotonic() - self._last >= self.interval:
            self.flush()
            if self.cancelled():
                raise TaskCancelled(f"cancelled by the client while running on {self.name}")

    def flush(self) -> None:
        for uid, amount in self._pending.items():
            self._send("advance", uid, amount)
        self._pending.clear()
        self._last = time.monotonic()

    def note(self, message: str) -> None:
        self._send("note", f"[{self.name}] {message}")

    def detail(self, message: str) -> None:
        # epoch lines: what a person watching a remote training wants to see, so shown as notes
        self._send("note", f"[{self.name}] {message}")


