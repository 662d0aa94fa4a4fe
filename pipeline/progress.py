"""Progress reporting that the library can use without knowing who is watching.

The CLI passes a ``RichProgress``; tests and library callers get ``NullProgress``. Long work
(training epochs, calibration, evaluation, uploads, farm runs) reports through this interface.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Callable, Iterator, Optional, Protocol

log = logging.getLogger(__name__)

Advance = Callable[[float], None]


class Progress(Protocol):
    def task(self, description: str, total: Optional[float] = None) -> contextlib.AbstractContextManager[Advance]: ...

    def note(self, message: str) -> None: ...


class NullProgress:
    """Reports nothing, but keeps notes in the log for diagnostics."""

    @contextlib.contextmanager
    def task(self, description: str, total: Optional[float] = None) -> Iterator[Advance]:
        yield lambda amount=1: None

    def note(self, message: str) -> None:
        log.info(message)


class RichProgress:
    """Progress bars on stderr, one per open task, removed when the task ends.

    All tasks share one live display, so tasks may nest and stages running side by side (see
    :mod:`pipeline.stages.side_by_side`) each show their own bar; rich allows only one live display.
    """

    def __init__(self, console=None) -> None:
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self._lock = threading.Lock()
        self._bar = None
        self._open = 0

    @contextlib.contextmanager
    def task(self, description: str, total: Optional[float] = None) -> Iterator[Advance]:
        with self._lock:
            if self._bar is None:
                self._bar = self._new_bar()
                self._bar.start()
            self._open += 1
            bar = self._bar
            task_id = bar.add_task(description, total=total)
        try:
            yield lambda amount=1: bar.advance(task_id, amount)
        finally:
            with self._lock:
                bar.remove_task(task_id)
                self._open -= 1
                if self._open == 0:
                    bar.stop()
                    self._bar = None

    def _new_bar(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as _Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()]
        return _Progress(*columns, console=self.console, transient=True)

    def note(self, message: str) -> None:
        self.console.print(message)
