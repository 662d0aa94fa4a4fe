"""TensorFlow's chatter goes to a log file, so a build prints only edgeship's own lines.

TensorFlow, absl, oneDNN and the TFLite converter write from C++ straight to file descriptor 2,
where no Python setting reaches them. So fd 2 becomes the log file and ``sys.stderr`` a new
stream on a copy of the real stderr: Python's tracebacks, logging and rich still reach the user;
native writes, Python warnings and the ``tensorflow``/``absl`` loggers land in the file. Child
processes (the side-by-side stage workers) inherit the same fd 2.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Optional, TextIO

from pipeline.clock import utc_stamp

CHATTY_LOGGERS = ("tensorflow", "absl", "h5py", "jax", "py.warnings", "onnx2tf", "tf2onnx")
KEEP_LOGS = 20  # the newest logs kept in results/logs/


class Chatter:
    """Route native stderr and the chatty loggers into ``path`` until the process ends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.user_stderr: Optional[TextIO] = None
        self._saved_fd: Optional[int] = None
        self._handler: Optional[logging.Handler] = None

    def start(self) -> bool:
        """Start routing; False (and nothing changed) when stderr is not a real file descriptor."""
        try:
            if sys.stderr is None or sys.stderr.fileno() != 2:
                return False
        except (AttributeError, OSError, ValueError):  # a test runner's in-memory stream
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        sys.stderr.flush()
        log_fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._saved_fd = os.dup(2)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        self.user_stderr = open(self._saved_fd, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)
        sys.stderr = self.user_stderr
        logging.captureWarnings(True)
        self._handler = logging.FileHandler(self.path, encoding="utf-8")
        self._handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        for name in CHATTY_LOGGERS:
            chatty = logging.getLogger(name)
            chatty.addHandler(self._handler)
            chatty.propagate = False
        return True

    def has_content(self) -> bool:
        try:
            return self.path.stat().st_size > 0
        except OSError:
            return False

    def stop(self) -> None:
        """Give fd 2 and ``sys.stderr`` back; drop the log when nothing was written to it."""
        if self._saved_fd is None:
            return
        sys.stderr.flush()
        os.dup2(self._saved_fd, 2)
        self._saved_fd = None  # left open: handlers made during the run still hold a stream on it
        sys.stderr = sys.__stderr__
        for name in CHATTY_LOGGERS:
            chatty = logging.getLogger(name)
            if self._handler is not None:
                chatty.removeHandler(self._handler)
            chatty.propagate = True
        if self._handler is not None:
            self._handler.close()
        logging.captureWarnings(False)
        if not self.has_content():
            self.path.unlink(missing_ok=True)


def chatter_log_path(logs_dir: Path, command: str) -> Path:
    """A new log file name in ``logs_dir``; older logs beyond the newest KEEP_LOGS are removed."""
    logs_dir.mkdir(parents=True, exist_ok=True)
    old = sorted(logs_dir.glob("*.log"), key=lambda p: p.stat().st_mtime)
    for stale in old[: max(len(old) - KEEP_LOGS + 1, 0)]:
        stale.unlink(missing_ok=True)
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in command) or "edgeship"
    return logs_dir / f"{utc_stamp()}-{safe}-{os.getpid()}.log"
