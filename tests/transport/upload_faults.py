"""Progress callbacks that break an upload midway (Ctrl-C, a shrinking file, a dropped link), and
waiting for the device side to settle: for the tests of every transport's put()."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from pipeline.transport.base import ProgressCallback

if TYPE_CHECKING:
    from pipeline.transport.ssh import SSHTransport


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


def wait_until(check: Callable[[], bool], seconds: float = 10.0) -> bool:
    """Poll ``check`` until it holds (a device-side process finishing is not instantaneous)."""
    deadline = time.monotonic() + seconds
    while not check() and time.monotonic() < deadline:
        time.sleep(0.02)
    return check()


def script_running(partial: Path | str) -> bool:
    """Is a device-side process still working on ``partial``? The exec upload script names it in its
    command line; the loopback servers run on this machine, so /proc shows it."""
    needle = str(partial).encode()
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and needle in (entry / "cmdline").read_bytes():
                return True
        except OSError:
            continue
    return False


def cut_once_the_script_runs(tr: "SSHTransport", partial: Path | str, after: int = 1 << 20) -> ProgressCallback:
    """Drop the SSH connection (close its socket, like a Wi-Fi link that drops) once ``after`` bytes
    are sent and the device script writing ``partial`` runs: cut earlier, the session might never
    start, which would prove nothing about cleanup."""

    def progress(sent: int, total: int) -> None:
        if sent >= after and tr.client.get_transport().is_active():
            assert wait_until(lambda: script_running(partial)), "the device script never started"
            tr.client.get_transport().sock.close()

    return progress
