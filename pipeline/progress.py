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

    def detail(self, message: str) -> None:
        """A line worth a log reader's eye (an epoch's metrics) but not a terminal's."""


class NullProgress:
    """Reports nothing, but keeps notes in the log for diagnostics."""

    @contextlib.contextmanager
    def task(self, description: str, total: Optional[float] = None) -> Iterator[Advance]:
        yield lambda amount=1: None

    def note(self, message: str) -> None:
        log.info(message)

    def detail(self, message: str) -> None:
        log.debug(message)


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

    def detail(self, message: str) -> None:
        log.info(message)  # the bars show the progress; -v shows the lines


class PlainProgress:
    """One plain line when a task starts and one when it ends, for logs and CI (no terminal).

    A rich bar redrawn in a pipe prints nothing useful until the end; a line per stage, epoch or
    finished task shows a CI log reader where a 20-minute build is. ``note`` lines (epoch
    summaries among them) are printed as they come.
    """

    def __init__(self, stream=None) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def _print(self, text: str) -> None:
        import sys

        stream = self._stream or sys.stderr
        with self._lock:
            stream.write(text + "\n")
            stream.flush()

    @contextlib.contextmanager
    def task(self, description: str, total: Optional[float] = None) -> Iterator[Advance]:
        import time

        started = time.monotonic()
        self._print(f"{description} ..." + (f" ({total:g} steps)" if total else ""))
        ok = False
        try:
            yield lambda amount=1: None
            ok = True
        finally:
            self._print(f"{description}: {'done' if ok else 'stopped'} in {time.monotonic() - started:.1f}s")

    def note(self, message: str) -> None:
        self._print(message)

    def detail(self, message: str) -> None:
        self._print(message)


def terminal_progress(console=None) -> "RichProgress | PlainProgress":
    """Bars on a terminal, plain lines otherwise (a pipe, a file, CI)."""
    import sys

    stream = getattr(console, "file", None) or sys.stderr
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        return RichProgress(console)
    return PlainProgress()
