"""Progress callbacks that break an upload midway, for the tests of every transport's put()."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.transport.base import ProgressCallback


def interrupt_after(limit: int) -> ProgressCallback:
    """Ctrl-C once ``limit`` bytes are sent."""

    def progress(sent: int, total: int) -> None:
        if sent >= limit:
            raise KeyboardInterrupt

    return progress


def shrink_after(src: Path, limit: int) -> ProgressCallback:
    """Truncate the file being sent once ``limit`` bytes are sent (it changes under the upload)."""

    def progress(sent: int, total: int) -> None:
        if sent >= limit and src.stat().st_size == total:
            os.truncate(src, sent)

    return progress
