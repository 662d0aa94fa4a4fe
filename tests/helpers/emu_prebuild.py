"""Build the emulated devices' root filesystems in the background while the rest of the suite runs.

A cold build is minutes of dpkg under qemu, on about one core; most of the suite also runs on one.
When ``arm`` tests are selected, we run as root and an image is missing, this plugin starts
``python -m pipeline emu build --device all`` as soon as collection is done, so on a fresh checkout
(CI) the two builds overlap the earlier test folders instead of adding to the wall time. The arm
fixtures then call ``build_image`` as usual: it waits for the build's lock and finds the image cached.
The build's output goes to ``<results>/emu-prebuild.log``; a failure there surfaces in the arm
fixtures, which build again themselves (and skip with the reason if that fails too).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Optional

import pytest

from pipeline.paths import PROJECT_ROOT, results_dir

_build: Optional[subprocess.Popen] = None


def _missing_images() -> list[str]:
    from pipeline.emu import KINDS, EmuLayout, cached_image

    return [name for name, kind in KINDS.items() if cached_image(EmuLayout.default(kind=kind)) is None]


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Runs after ``-m``/``-k`` deselection (trylast), so only a run that will use the devices builds."""
    global _build
    if os.geteuid() != 0 or not any(item.get_closest_marker("arm") for item in items):
        return
    if not _missing_images() or os.environ.get("EDGESHIP_NO_EMU_PREBUILD"):
        return
    results = results_dir()  # the real tree: the autouse tmp results fixture has not run yet
    results.mkdir(parents=True, exist_ok=True)
    log = open(results / "emu-prebuild.log", "wb")
    _build = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "emu", "build", "--device", "all"],
        cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    log.close()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A build still running (no arm test waited for it: -x stopped early, say) is interrupted so
    that it cleans up its half-built image and mounts itself."""
    if _build is None or _build.poll() is not None:
        return
    _build.send_signal(signal.SIGINT)
    try:
        _build.wait(timeout=120)
    except subprocess.TimeoutExpired:
        _build.kill()
