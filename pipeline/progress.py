"""Progress reporting that the library can use without knowing who is watching.

The CLI passes a ``RichProgress``; tests and library callers get ``NullProgress``. Long work
(training epochs, calibration, evaluation, uploads, farm runs) reports through this interface.
"""

from __future__ import annotations

import contextlib
import logging
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
    """Progress bars on stderr, one per task, removed when the task ends."""

    def __init__(self, console=None) -> None:
        from rich.console import Console

        self.console = console or Console(stderr=True)

    @contextlib.contextmanager
    def task(self, description: str, total: Optional[float] = None) -> Iterator[Advance]:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as _Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()]
        with _Progress(*columns, console=self.console, transient=True) as bar:
            task_id = bar.add_task(description, total=total)
            yield lambda amount=1: bar.advance(task_id, amount)

    def note(self, message: str) -> None:
        self.console.print(message)
