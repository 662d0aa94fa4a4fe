"""accept-new against a real sshd: a symlinked known_hosts stays a link, and a key another process
recorded for the host while this one connected is re-checked under the lock, never appended beside."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

import pytest

from pipeline.lab.sshd import keygen
from pipeline.transport import open_transport
from pipeline.transport.ssh import HostKeyError

pytestmark = pytest.mark.ssh


def test_accept_new_writes_through_a_symlinked_known_hosts(ssh_target, sshd, tmp_path):
    real = tmp_path / "dotfiles" / "known_hosts"
    real.parent.mkdir()
    real.write_text("# managed by a dotfile manager\n")
    real.chmod(0o644)
    link = tmp_path / "ssh" / "known_hosts"
    link.parent.mkdir()
    link.symlink_to(Path("..") / "dotfiles" / "known_hosts")
    with open_transport(ssh_target(transport={"known_hosts": str(link), "host_key_policy": "accept-new"})) as tr:
        assert tr.run(["true"]).ok
    assert link.is_symlink() and os.readlink(link) == str(Path("..") / "dotfiles" / "known_hosts")
    entry = f"[127.0.0.1]:{sshd.port} {sshd.host_public_key()}"
    assert real.read_text().splitlines() == ["# managed by a dotfile manager", entry]
    assert real.stat().st_mode & 0o777 == 0o644
    with open_transport(ssh_target(transport={"known_hosts": str(link), "host_key_policy": "strict"})) as tr:
        assert tr.run(["true"]).ok


def _wait_for_flock_waiter(path: Path, limit: float = 20.0) -> None:
    """Until some process is blocked in flock() on ``path`` (a "->" line in /proc/locks)."""
    inode = os.stat(path).st_ino
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        with open("/proc/locks") as locks:
            if any("->" in line and f":{inode} " in line for line in locks):
                return
        time.sleep(0.02)
    pytest.fail(f"nothing waited for the lock {path} within {limit:g} s")


@pytest.mark.parametrize("meanwhile", ["different key", "same key"])
def test_accept_new_rechecks_under_the_lock(ssh_target, sshd, tmp_path, meanwhile):
    """Another process holds the known_hosts lock and records a key for this host while our connect
    waits for it: a different key is refused as a changed key, the same key is not added twice."""
    if not Path("/proc/locks").exists():
        pytest.skip("/proc/locks is needed to see the connect wait for the lock")
    known = tmp_path / "known_hosts"  # absent: paramiko finds no entry and asks the policy
    lock = known.with_name(f".{known.name}.edgeship-lock")
    if meanwhile == "same key":
        recorded = f"[127.0.0.1]:{sshd.port} {sshd.host_public_key()}\n"
    else:
        other = keygen(tmp_path / "other_host_key")
        recorded = f"[127.0.0.1]:{sshd.port} " + " ".join(Path(f"{other}.pub").read_text().split()[:2]) + "\n"
    target = ssh_target(transport={"known_hosts": str(known), "host_key_policy": "accept-new"})
    outcome: list[object] = []

    def connect() -> None:
        try:
            with open_transport(target) as tr:
                outcome.append(tr.run(["echo", "in"]).stdout)
        except Exception as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)

    with open(lock, "a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        thread = threading.Thread(target=connect, daemon=True)
        thread.start()
        _wait_for_flock_waiter(lock)
        known.write_text(recorded)
        fcntl.flock(held.fileno(), fcntl.LOCK_UN)
    thread.join(30)
    assert not thread.is_alive()
    assert known.read_text() == recorded  # nothing appended beside the other process's entry
    if meanwhile == "same key":
        assert outcome == ["in\n"]
        return
    (exc,) = outcome
    assert isinstance(exc, HostKeyError), repr(exc)
    message = str(exc)
    assert "CHANGED" in message and "another process recorded a different key meanwhile" in message
    assert f"[127.0.0.1]:{sshd.port}" in message and str(known) in message
