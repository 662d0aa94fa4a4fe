"""Upload progress as one line of text, for watchers without a progress bar.

The farm's live view, CI logs and the library's log get "uploading 1.2/3.4 MB at 0.5 MB/s" from
:class:`UploadMeter`, a ``put()`` progress callback. It stays quiet for uploads that finish within
a second (most redeploys on a LAN), then reports at most every ``every`` seconds, and once more
when the upload completes, so a watcher sees the last figure. The bytes are those handed to the
connection: the host's kernel buffers up to about a megabyte, so on a slow link the figure runs
ahead of the device by that much, and the last megabyte is the wait for the device's confirmation.
"""

from __future__ import annotations

import time
from typing import Callable


def _unit(total: int) -> tuple[float, str]:
    return (1e6, "MB") if total >= 1e6 else (1e3, "kB")


def upload_text(sent: int, total: int, seconds: float) -> str:
    """``uploading 1.2/3.4 MB at 0.5 MB/s`` (the rate is the average since the upload began)."""
    scale, unit = _unit(max(total, sent))
    rate = (sent / seconds if seconds > 0 else 0.0) / scale  # in the sizes' unit, so the two compare at a glance
    digits = 1 if unit == "MB" else 0
    return f"uploading {sent / scale:.{digits}f}/{total / scale:.{digits}f} {unit} at {rate:.{1 if rate >= 0.1 else 2}f} {unit}/s"


class UploadMeter:
    """``meter(sent, total)``: calls ``show(text)`` once the upload has run ``after`` seconds, then
    at most every ``every`` seconds, and at completion (when that is past ``after`` too).

    One meter follows one upload; its clock starts at the first call (the first block sent), so
    the time spent connecting or checking the device before the upload does not count.
    """

    def __init__(self, show: Callable[[str], None], after: float = 1.0, every: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.show, self.after, self.every, self.clock = show, after, every, clock
        self.started: float | None = None
        self._last_shown: float | None = None

    def __call__(self, sent: int, total: int) -> None:
        now = self.clock()
        if self.started is None:
            self.started = now
        elapsed = now - self.started
        done = total > 0 and sent >= total
        if elapsed < self.after:
            return
        if self._last_shown is not None and now - self._last_shown < self.every and not done:
            return
        self._last_shown = now
        self.show(upload_text(sent, total, elapsed))
