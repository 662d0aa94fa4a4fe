"""Tell a process we started from a later one that got its PID: the PID plus its start time.

A PID stored in a state file names someone else once that process ends (PIDs are reused, and
restart from 1 after a reboot). The start time (clock ticks after boot, field 22 of
``/proc/PID/stat``) recorded next to it makes the pair name one process only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional


def start_ticks(pid: int) -> Optional[int]:
    """Start time of ``pid`` in clock ticks since boot, or None when there is no such process."""
    try:
        # the command name (field 2) may contain spaces and ')': split after its last ')'
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def is_same_process(pid: Any, ticks: Any) -> bool:
    """True only if ``pid`` runs now and started at ``ticks`` (both as recorded when we started it)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or not isinstance(ticks, int):
        return False
    return start_ticks(pid) == ticks


def pid_alive(pid: int, recorded_ticks: Optional[int] = None) -> bool:
    """True if ``pid`` exists (any user's) and, when its start time was recorded, still has it:
    a pid reused by another process is not alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, another user's
    if recorded_ticks is None:
        return True
    current = start_ticks(pid)
    return current is None or current == recorded_ticks
