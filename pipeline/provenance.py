"""What produced a bundle or a farm run: tool versions and the git checkout, one place for both.

A bundle's manifest keeps :func:`tool_versions` (the installed distributions that shape the model);
a farm run keeps :func:`tool_info` (interpreter, numpy, SQLite and the commit it ran from), so a
result can be traced to the code that measured it.
"""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from pipeline.paths import PROJECT_ROOT

logger = logging.getLogger(__name__)

# The distributions a bundle records; one that is not installed is left out.
DISTRIBUTIONS = ("edgeship", "tensorflow-cpu", "tensorflow", "keras", "ai-edge-litert", "numpy")
GIT_TIMEOUT_S = 5


def tool_versions() -> dict[str, str]:
    """Installed version of each of :data:`DISTRIBUTIONS` that is installed."""
    versions = {}
    for dist in DISTRIBUTIONS:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_state(checkout: Union[str, Path] = PROJECT_ROOT) -> tuple[Optional[str], Optional[bool]]:
    """(HEAD commit, whether tracked files differ from it) of the checkout at ``checkout``.

    Each is None when git cannot say: not a checkout, no git installed, or git timed out. Untracked
    files do not make a checkout dirty: they are not part of what was built or measured.
    """
    commit: Optional[str] = None
    dirty: Optional[bool] = None
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True, text=True, timeout=GIT_TIMEOUT_S
        )
        if head.returncode == 0:
            commit = head.stdout.strip()
            status = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=checkout, capture_output=True, text=True, timeout=GIT_TIMEOUT_S,
            )
            dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.SubprocessError) as exc:
        logger.debug("git state of %s unknown: %s", checkout, exc)
    return commit, dirty


def tool_info(checkout: Union[str, Path] = PROJECT_ROOT) -> dict[str, Any]:
    """What produced a run: edgeship version, Python, numpy, SQLite, git commit (when in a checkout)."""
    from pipeline import __version__

    commit, dirty = git_state(checkout)
    return {
        "edgeship": __version__,
        "python": ".".join(str(v) for v in sys.version_info[:3]),
        "numpy": np.__version__,
        "sqlite": sqlite3.sqlite_version,
        "git_commit": commit,
        "git_dirty": dirty,
    }
