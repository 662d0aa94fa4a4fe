"""pipeline.proc_identity: a recorded PID names our process only together with its start time."""

from __future__ import annotations

import os
import subprocess

from pipeline.proc_identity import is_same_process, start_ticks


def test_a_live_process_is_recognised_only_with_its_own_start_time() -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        ticks = start_ticks(child.pid)
        assert isinstance(ticks, int) and ticks >= start_ticks(os.getpid())
        assert is_same_process(child.pid, ticks)
        assert not is_same_process(child.pid, ticks + 1) and not is_same_process(child.pid, None)
    finally:
        child.kill()
        child.wait()
    assert start_ticks(child.pid) is None and not is_same_process(child.pid, ticks)


def test_malformed_records_name_no_process() -> None:
    ticks = start_ticks(os.getpid())
    for pid in (None, "1", True, 0, -1, 1.0):
        assert not is_same_process(pid, ticks)
