"""The SSH transport against a real OpenSSH server on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from pipeline.errors import DeployError
from pipeline.transport import CommandTimeout, open_transport
from pipeline.transport.ssh import HostKeyError, SSHTransport
from pipeline.lab.sshd import free_port, keygen

pytestmark = pytest.mark.ssh


def _ssh_fingerprint(pub: Path) -> str:
    out = subprocess.run(["ssh-keygen", "-lf", str(pub)], check=True, capture_output=True, text=True).stdout
    return out.split()[1]  # "256 SHA256:... comment (ED25519)"


def test_ssh_run_passes_metacharacters_literally(ssh_target, tmp_path):
    canary = tmp_path / "pwned"
    nasty = [f"$(touch {canary})", f"`touch {canary}`", f"; touch {canary}", "a'b\"c", "*", "&&", "|", "\\n", "  spaced  ", ""]
    with open_transport(ssh_target()) as tr:
        result = tr.run(["printf", "%s\\n", *nasty])
        assert result.stdout.split("\n")[:-1] == nasty
        other = tr.run(["sh", "-c", "echo out; echo err >&2; exit 7"], check=False)
        assert (other.exit_code, other.stdout, other.stderr) == (7, "out\n", "err\n")
    assert not canary.exists()


def test_ssh_nonzero_exit_raises_with_stderr(ssh_target):
    with open_transport(ssh_target()) as tr:
        with pytest.raises(DeployError, match="exit code 3: boom"):
            tr.run(["sh", "-c", "echo boom >&2; exit 3"])


def test_ssh_command_timeout_kills_the_remote_process(ssh_target, tmp_path):
    pidfile = tmp_path / "pid"
    with open_transport(ssh_target()) as tr:
        start = time.monotonic()
        with pytest.raises(CommandTimeout, match="longer than 1 s"):
            tr.run(["sh", "-c", 'echo $$ > "$1"; sleep 60', "sh", str(pidfile)], timeout=1)
        assert time.monotonic() - start < 8
        pid = int(pidfile.read_text())
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.1)
        assert not Path(f"/proc/{pid}").exists(), "the timed-out command is still running on the device"
        assert tr.run(["echo", "still usable"]).stdout == "still usable\n"


def test_ssh_put_get_roundtrip_is_atomic_with_progress(ssh_target, tmp_path):
    src = tmp_path / "payload.bin"
    src.write_bytes(os.urandom(300_000))
    seen = []
    dest_dir = tmp_path / "remote dir; $(x)"
    dest_dir.mkdir()
    with open_transport(ssh_target()) as tr:
        tr.put(src, str(dest_dir / "payload.bin"), progress=lambda sent, total: seen.append((sent, total)))
        back = tmp_path / "back" / "payload.bin"
        tr.get(str(dest_dir / "payload.bin"), back)
        with pytest.raises(DeployError, match="does not exist"):
            tr.get(str(dest_dir / "nope"), tmp_path / "nope")
    assert (dest_dir / "payload.bin").read_bytes() == src.read_bytes() == back.read_bytes()
    assert not (dest_dir / "payload.bin.partial").exists()
    assert seen and seen[-1] == (300_000, 300_000)
    assert [s for s, _ in seen] == sorted(s for s, _ in seen)
    assert not list((tmp_path / "back").glob(".*tmp"))


def test_ssh_upload_failing_midway_leaves_no_partial(ssh_target, tmp_path):
    """Ctrl-C mid-upload, and a local file that shrinks mid-upload (paramiko would install the short
    copy): the old file stays and no .partial is left on the device."""
    dest_dir = tmp_path / "remote"
    dest_dir.mkdir()
    dest = dest_dir / "payload.bin"
    dest.write_bytes(b"old")
    src = tmp_path / "payload.bin"

    def interrupt(sent: int, total: int) -> None:
        if sent >= 65536:
            raise KeyboardInterrupt

    def shrink(sent: int, total: int) -> None:
        if sent >= 65536 and src.stat().st_size == total:
            os.truncate(src, sent)

    with open_transport(ssh_target()) as tr:
        for progress, error in ((interrupt, KeyboardInterrupt), (shrink, DeployError)):
            src.write_bytes(os.urandom(1_000_000))
            with pytest.raises(error) as err:
                tr.put(src, str(dest), progress=progress)
            assert dest.read_bytes() == b"old"
            assert not (dest_dir / "payload.bin.partial").exists()
        assert "changed while it was being uploaded" in str(err.value)
        tr.put(src, str(dest))  # the session is still usable
    assert dest.read_bytes() == src.read_bytes()


def test_ssh_remote_dir_relative_and_tilde_resolve_to_home(ssh_target):
    home = os.path.expanduser("~")
    with open_transport(ssh_target(remote_dir="edgeship-test-rel")) as tr:
        assert tr.remote_dir == f"{home}/edgeship-test-rel"
    with open_transport(ssh_target(remote_dir="~/x/y")) as tr:
        assert tr.remote_dir == f"{home}/x/y"


# ------------------------------------------------------------------------------ connection errors
def test_ssh_refused_connection_is_retried_with_backoff(ssh_target):
    port = free_port()  # nothing listens here
    target = ssh_target(transport={"port": port, "retries": 2, "retry_backoff": 0.3})
    transport = SSHTransport(target.transport, target.remote_dir, target_name="target 'loopback'")
    start = time.monotonic()
    with pytest.raises(DeployError) as err:
        transport.connect()
    elapsed = time.monotonic() - start
    message = str(err.value)
    assert f"127.0.0.1:{port} refused" in message and "tried 3 times" in message
    assert transport.attempts == 3
    assert 0.9 - 0.1 <= elapsed < 5  # backoff 0.3 + 0.6


@pytest.fixture
def silent_server():
    """Accepts TCP connections but never speaks SSH (a hung device / black hole behind a NAT)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    conns = []
    stop = threading.Event()

    def accept():
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(sock.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield sock.getsockname()[1]
    stop.set()
    thread.join()
    for c in conns:
        c.close()
    sock.close()


def test_ssh_unresponsive_host_fails_within_connect_timeout(ssh_target, silent_server):
    target = ssh_target(transport={"port": silent_server, "connect_timeout": 1.5, "retries": 0})
    start = time.monotonic()
    with pytest.raises(DeployError) as err:
        open_transport(target)
    elapsed = time.monotonic() - start
    assert elapsed < 1.5 + 2.0
    assert f"127.0.0.1:{silent_server}" in str(err.value) and "1.5 s" in str(err.value)


@pytest.fixture
def black_hole_port():
    """A port whose SYNs are silently dropped: a listener with a full accept queue (like a dead host)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(0)
    port = sock.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        try:
            filler.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(filler)
    time.sleep(0.2)
    probe = socket.socket()
    probe.settimeout(0.5)
    try:
        probe.connect(("127.0.0.1", port))
        pytest.skip("this kernel accepts connections beyond the listen backlog; cannot simulate a dead host")
    except OSError:
        pass
    finally:
        probe.close()
    yield port
    for filler in fillers:
        filler.close()
    sock.close()


def test_ssh_unreachable_host_tcp_timeout_within_connect_timeout(ssh_target, black_hole_port):
    target = ssh_target(transport={"port": black_hole_port, "connect_timeout": 1.0, "retries": 0})
    start = time.monotonic()
    with pytest.raises(DeployError) as err:
        open_transport(target)
    elapsed = time.monotonic() - start
    assert 0.9 <= elapsed < 1.0 + 1.5
    assert f"Connecting to 127.0.0.1:{black_hole_port} timed out after 1 s" in str(err.value)


def test_ssh_timeouts_are_retried_then_reported(ssh_target, black_hole_port):
    target = ssh_target(transport={"port": black_hole_port, "connect_timeout": 0.5, "retries": 1, "retry_backoff": 0.2})
    transport = SSHTransport(target.transport, target.remote_dir)
    start = time.monotonic()
    with pytest.raises(DeployError, match="tried 2 times"):
        transport.connect()
    assert transport.attempts == 2
    assert time.monotonic() - start < 2 * 0.5 + 0.2 + 1.5


def test_ssh_wrong_user_is_an_auth_error_without_retries(ssh_target, sshd):
    target = ssh_target(transport={"user": "edgeship-no-such-user", "retries": 3, "retry_backoff": 5})
    transport = SSHTransport(target.transport, target.remote_dir)
    start = time.monotonic()
    with pytest.raises(DeployError) as err:
        transport.connect()
    assert time.monotonic() - start < 4, "authentication failures must not be retried"
    assert transport.attempts == 1
    message = str(err.value)
    assert "authentication as user 'edgeship-no-such-user'" in message and str(sshd.client_key) in message
    secret = sshd.client_key.read_text()
    assert not any(line in message for line in secret.splitlines()[1:-1])


def test_ssh_wrong_key_is_an_auth_error(ssh_target, tmp_path):
    other = keygen(tmp_path / "other_key")
    target = ssh_target(transport={"key_file": str(other), "retries": 3, "retry_backoff": 5})
    start = time.monotonic()
    with pytest.raises(DeployError, match="SSH authentication as user") as err:
        open_transport(target)
    assert time.monotonic() - start < 4
    assert str(other) in str(err.value)
    assert "PRIVATE KEY" not in str(err.value)


def test_ssh_missing_key_file_is_named(ssh_target, tmp_path):
    with pytest.raises(DeployError, match=r"key file .*nonexistent_key.* does not exist"):
        open_transport(ssh_target(transport={"key_file": str(tmp_path / "nonexistent_key")}))


# ------------------------------------------------------------------------------ host keys
def test_ssh_changed_host_key_is_refused_even_with_accept_new(ssh_target, sshd, tmp_path):
    old_fp = _ssh_fingerprint(Path(f"{sshd.host_key}.pub"))
    sshd.regenerate_host_key()
    sshd.restart()
    new_fp = _ssh_fingerprint(Path(f"{sshd.host_key}.pub"))
    before = sshd.known_hosts.read_text()
    for policy in ("strict", "accept-new"):
        with pytest.raises(HostKeyError) as err:
            open_transport(ssh_target(transport={"host_key_policy": policy, "retries": 2}))
        message = str(err.value)
        name = f"[127.0.0.1]:{sshd.port}"
        assert "CHANGED" in message and name in message
        assert old_fp in message and new_fp in message
        assert f"ssh-keygen -R '{name}' -f {sshd.known_hosts}" in message
        assert f"ssh-keygen -F '{name}' -f {sshd.known_hosts}" in message
    assert sshd.known_hosts.read_text() == before


def test_ssh_unknown_host_is_refused_under_strict(ssh_target, sshd, tmp_path):
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(HostKeyError) as err:
        open_transport(ssh_target(transport={"known_hosts": str(empty)}))
    message = str(err.value)
    assert f"ssh-keyscan -p {sshd.port} 127.0.0.1 >> {empty}" in message
    assert _ssh_fingerprint(Path(f"{sshd.host_key}.pub")) in message
    assert "accept-new" in message
    assert empty.read_text() == ""


def test_ssh_accept_new_records_the_key_then_strict_works(ssh_target, sshd, tmp_path):
    known = tmp_path / "fresh" / ".ssh" / "known_hosts"  # does not exist yet
    with open_transport(ssh_target(transport={"known_hosts": str(known), "host_key_policy": "accept-new"})) as tr:
        assert tr.run(["echo", "hi"]).stdout == "hi\n"
    lines = known.read_text().splitlines()
    assert lines == [f"[127.0.0.1]:{sshd.port} {sshd.host_public_key()}"]
    assert oct(known.stat().st_mode & 0o777) == oct(0o600)
    # OpenSSH itself agrees with the recorded entry
    found = subprocess.run(["ssh-keygen", "-F", f"[127.0.0.1]:{sshd.port}", "-f", str(known)], capture_output=True, text=True)
    assert found.returncode == 0
    with open_transport(ssh_target(transport={"known_hosts": str(known), "host_key_policy": "strict"})) as tr:
        assert tr.run(["true"]).ok
    assert known.read_text().splitlines() == lines  # not appended twice


def test_ssh_hashed_known_hosts_entries_are_understood(ssh_target, sshd):
    subprocess.run(["ssh-keygen", "-H", "-f", str(sshd.known_hosts)], check=True, capture_output=True)
    assert sshd.known_hosts.read_text().startswith("|1|")
    with open_transport(ssh_target()) as tr:
        assert tr.run(["true"]).ok
