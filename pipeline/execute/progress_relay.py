"""Progress made elsewhere (worker processes, Dask workers), replayed on the client's display."""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager

from pipeline.progress import Advance, Progress


class ProgressReplay:
    """Replays progress events from elsewhere (worker processes, Dask workers) on a local Progress."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.open: dict[str, tuple[AbstractContextManager[Advance], Advance]] = {}
        self._finished: set[str] = set()
        self._lock = threading.Lock()

    def handle(self, message: tuple) -> None:
        kind = message[0]
        with self._lock:
            if kind == "open":
                _, uid, description, total = message
                if uid.rsplit(":", 1)[0] in self._finished:
                    return  # a late event of a task that already ended
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

    def close_matching(self, prefix: str = "") -> None:
        """Close the bars whose id starts with ``prefix`` (all by default): a task that died never will.
        Later events of a task ``prefix`` names are ignored."""
        with self._lock:
            if prefix:
                self._finished.add(prefix)
            for uid in [uid for uid in self.open if uid.startswith(prefix)]:
                manager, _ = self.open.pop(uid)
                manager.__exit__(None, None, None)
