"""The lock's heartbeat (over a real sshd) and the race-free break: two runs never both hold a device."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from pipeline.deploy.lock import DeviceLock, LockHeld, LockLost
from pipeline.transport import open_transport
from pipeline.transport.local import LocalTransport

ANOTHER_BOOT = "00000000-0000-0000-0000-000000000000"


def _elsewhere(lock: DeviceLock) -> DeviceLock:
    """Make ``lock`` look as if its holder ran on another host, so only its heartbeat keeps it."""
    owner = json.loads(lock.owner)
    lock.owner = json.dumps({**owner, "host": "build-server-7", "boot_id": ANOTHER_BOOT}, sort_keys=True)
    return lock


def _owner_token(device: Path) -> str:
    return json.loads((device / ".lock" / "owner").read_text())["token"]


@pytest.mark.ssh
def test_heartbeat_over_ssh_keeps_a_long_held_lock_and_a_silent_one_is_broken(ssh_target, tmp_path):
    device = tmp_path / "device"
    target = ssh_target(remote_dir=device)
    with open_transport(target) as holder_tr, open_transport(target) as other_tr:
        holder = _elsewhere(DeviceLock(holder_tr, "long deploy", stale_after=2, heartbeat=0.2)).acquire()
        try:
            begin = time.monotonic()
            while time.monotonic() - begin < 5:  # 2.5 x stale_after
                with pytest.raises(LockHeld, match="long deploy"):
                    DeviceLock(other_tr, "deploy", stale_after=2).acquire()
                time.sleep(0.5)
            assert _owner_token(device) == holder.token
            holder.ensure_held()
        finally:
            holder.release()
        assert not (device / ".lock").exists()

        silent = _elsewhere(DeviceLock(holder_tr, "hung deploy", stale_after=2, heartbeat=600)).acquire()
        try:
            taker = DeviceLock(other_tr, "deploy", stale_after=2, wait=10, poll=0.2).acquire()
            assert _owner_token(device) == taker.token
            with pytest.raises(LockLost, match="was broken by another run"):
                silent.ensure_held()
        finally:
            silent.release()  # not ours any more: must leave the taker's lock alone
        assert _owner_token(device) == taker.token
        taker.release()
        assert not (device / ".lock").exists() and not list(device.glob(".lock.*"))


_MV_PAUSE = """#!/bin/sh
# Pauses the first move of a lock directory to its condemned name until the test says go.
for a in "$@"; do last=$a; done
case "$last" in
  */.lock.broken.*|*/.lock.dead.*)
    if mkdir "$RACE_DIR/triggered" 2>/dev/null; then
      : > "$RACE_DIR/waiting"
      i=0
      while [ ! -e "$RACE_DIR/go" ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done
    fi;;
esac
exec REAL_MV "$@"
"""


def test_a_fresh_lock_that_replaces_a_stale_one_during_the_break_survives(tmp_path, monkeypatch):
    """The stale holder releases and a fresh run takes the lock just before the breaker's move."""
    device = tmp_path / "localdev"
    race, bin_dir = tmp_path / "race", tmp_path / "bin"
    race.mkdir()
    bin_dir.mkdir()
    (bin_dir / "mv").write_text(_MV_PAUSE.replace("REAL_MV", shutil.which("mv")))
    (bin_dir / "mv").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("RACE_DIR", str(race))

    tr = LocalTransport(str(device))
    stale = _elsewhere(DeviceLock(tr, "stale deploy", heartbeat=600)).acquire()
    time.sleep(2.2)  # its heartbeat is now over 1 s old
    breaker = DeviceLock(tr, "breaker", stale_after=1, wait=20, poll=0.2)
    outcome: list = []
    thread = threading.Thread(target=lambda: outcome.append(breaker.acquire()))
    thread.start()
    fresh = DeviceLock(tr, "fresh deploy", stale_after=600)
    try:
        for _ in range(400):
            if (race / "waiting").exists():
                break
            time.sleep(0.05)
        assert (race / "waiting").exists(), "the breaker never tried to move the stale lock"
        stale.release()  # the stale holder finishes after all, and a fresh run comes along
        try:
            fresh.acquire()
        except LockHeld:
            pass  # a condemned lock stays in place until the breaker has moved it away
    finally:
        (race / "go").write_text("")
        thread.join(30)
    assert outcome == [breaker]
    assert not (fresh.held and breaker.held), "the fresh lock was moved away: two runs hold the device"
    assert _owner_token(device) == breaker.token
    breaker.release()
    fresh.release()
