"""Night after night, as a cron job runs it: `edgeship lab start`, `nightly`, `lab stop` in one results
directory, three times, then again after a lab that was killed without `lab stop`.

Everything is real and run as the user runs it (the `edgeship` command in a subprocess): loopback
sshd devices with strict host keys, the agent under the device-like Python, the SQLite store. The
bundle is a tiny real one (`--bundle`), so no model is trained.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.lab.sshd import sshd_available
from pipeline.paths import PROJECT_ROOT
from pipeline.proc_identity import start_ticks

pytestmark = [pytest.mark.ssh, pytest.mark.agent_venv]
EDGESHIP = [sys.executable, "-m", "pipeline"]


def _edgeship(results: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, EDGESHIP_RESULTS=str(results))
    return subprocess.run([*EDGESHIP, *args], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _ok(proc: subprocess.CompletedProcess, codes: tuple[int, ...] = (0,)) -> str:
    both = proc.stdout + proc.stderr
    assert "Traceback" not in both, both
    assert proc.returncode in codes, both
    return proc.stdout


def _night(results: Path, bundle: Path, device_python: str) -> tuple[int, str]:
    _ok(_edgeship(results, "lab", "start", "--devices", "2", "--python", device_python))
    inventory = results / "lab" / "farm.yaml"
    # 0 all well or 1 a regression (loopback latency is this busy host's): both mean the job ran.
    out = _ok(_edgeship(results, "nightly", "--inventory", str(inventory), "--bundle", str(bundle)), codes=(0, 1))
    assert "stopped 2 loopback devices" in _ok(_edgeship(results, "lab", "stop"))
    run = re.search(r"^run (\d+): ", out, re.MULTILINE)
    assert run, out
    return int(run.group(1)), out


def _server_pids(results: Path) -> list[int]:
    return [entry["pid"] for entry in json.loads((results / "lab" / "state.json").read_text())["servers"]]


def _wait_gone(pids: list[int]) -> None:
    deadline = time.monotonic() + 10
    while any(start_ticks(pid) is not None for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.mark.skipif(not sshd_available(), reason="needs OpenSSH's sshd (apt install openssh-server)")
def test_three_nights_then_a_killed_lab_ssh(isolated_results: Path, tiny_bundle_int8: Path, device_python: str) -> None:
    results = isolated_results
    first, out = _night(results, tiny_bundle_int8, device_python)
    assert f"edgeship baseline accept {first}" in out  # the exact command, not just "accept one"
    _ok(_edgeship(results, "baseline", "accept", str(first)))
    runs = [first]
    for _ in range(2):
        run, out = _night(results, tiny_bundle_int8, device_python)
        assert "no baseline" not in out and "baseline accept" not in out, out  # compared with night 1
        assert run > runs[-1]
        runs.append(run)

    # A lab killed without `lab stop` (a crash, an OOM kill, a reboot): its pids and pid files stay.
    _ok(_edgeship(results, "lab", "start", "--devices", "2", "--python", device_python))
    stale = _server_pids(results)
    for pid in stale:
        os.killpg(pid, signal.SIGKILL)
    _wait_gone(stale)
    assert list((results / "lab" / "servers").glob("*/sshd.pid")), "the killed servers should leave pid files"
    run, out = _night(results, tiny_bundle_int8, device_python)
    assert run > runs[-1] and "loop-0" in out and "loop-1" in out
    assert "unreachable" not in out and "failed" not in out, out
