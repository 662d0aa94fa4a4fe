"""A remote command never outlives its timeout, even when the SSH server goes silent mid-command.

The server is a real SSH server (paramiko) on loopback that authenticates the client's key and then
stops answering at one step (tests/transport/silent_sshd.py); the client checks its host key.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable

import pytest

from pipeline.config.target import SSHTransportConfig
from pipeline.lab.sshd import sshd_available
from pipeline.transport import CommandTimeout
from pipeline.transport.ssh import SSHTransport
from tests.transport.silent_sshd import SilentSSHServer

pytestmark = pytest.mark.skipif(not sshd_available(), reason="ssh-keygen (openssh) is needed to make the keys")

TIMEOUT = 1.0
#: what "a few seconds" past the timeout means: closing the channel and the bounded kill attempt
GRACE = 8.0


def _transport(server: SilentSSHServer, **overrides: object) -> SSHTransport:
    fields: dict[str, object] = {
        "type": "ssh",
        "host": "127.0.0.1",
        "port": server.port,
        "user": server.user,
        "key_file": str(server.client_key),
        "known_hosts": str(server.write_known_hosts()),
        "connect_timeout": 5,
        "command_timeout": TIMEOUT,
        "keepalive": 0,
        "retries": 0,
    }
    cfg = SSHTransportConfig(**{**fields, **overrides})
    return SSHTransport(cfg, "/tmp/edgeship-silent", target_name="target 'silent'")


def _bounded(call: Callable[[], object], limit: float) -> tuple[float, BaseException]:
    """Run ``call`` in a thread; fail the test if it is still blocked after ``limit`` seconds."""
    caught: list[BaseException] = []

    def body() -> None:
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            caught.append(exc)

    thread = threading.Thread(target=body, daemon=True)
    start = time.monotonic()
    thread.start()
    thread.join(limit)
    elapsed = time.monotonic() - start
    assert not thread.is_alive(), f"still blocked after {limit:g} s"
    assert caught, "the call returned although the server never answered"
    return elapsed, caught[0]


@pytest.mark.parametrize("silence", ["exit", "exec", "channel"])
def test_silent_server_command_times_out_within_bound(tmp_path: Path, silence: str) -> None:
    with SilentSSHServer(tmp_path, silence) as server:
        tr = _transport(server)
        tr.connect()  # the connection itself works: the silence starts at the command
        try:
            elapsed, exc = _bounded(lambda: tr.run(["echo", "hello"]), TIMEOUT + GRACE)
        finally:
            tr.close()
    assert isinstance(exc, CommandTimeout), repr(exc)
    message = str(exc)
    assert f"127.0.0.1:{server.port}" in message and "echo hello" in message
    assert f"{TIMEOUT:g} s" in message
    assert "\n" not in message and "PRIVATE KEY" not in message
    assert elapsed >= TIMEOUT - 0.1
    if silence != "channel":
        assert any("echo hello" in c for c in server.commands)


def test_silent_server_kill_is_attempted_then_reported(tmp_path: Path) -> None:
    """The wrapper's pid line arrives, so the client tries to kill it from a second channel - which
    hangs too; the timeout still holds and the message says the kill is unconfirmed."""
    with SilentSSHServer(tmp_path, "pid") as server:
        tr = _transport(server)
        try:
            _, exc = _bounded(lambda: tr.run(["sleep", "60"]), TIMEOUT + GRACE)
        finally:
            tr.close()
    assert isinstance(exc, CommandTimeout), repr(exc)
    assert f"127.0.0.1:{server.port}" in str(exc) and "sleep 60" in str(exc)
    assert any("4242" in c for c in server.commands[1:]), server.commands  # the kill script got pid 4242
    assert "could not confirm" in str(exc)


def test_silent_server_sftp_open_times_out(tmp_path: Path) -> None:
    """Opening SFTP waits for the subsystem reply; a server that never gives it does not hang put()."""
    src = tmp_path / "payload.bin"
    src.write_bytes(b"x" * 1000)
    with SilentSSHServer(tmp_path, "exec") as server:
        tr = _transport(server, connect_timeout=1.5)
        try:
            elapsed, exc = _bounded(lambda: tr.put(src, "/tmp/edgeship-silent/payload.bin"), 1.5 + GRACE)
        finally:
            tr.close()
    assert isinstance(exc, CommandTimeout), repr(exc)
    assert f"127.0.0.1:{server.port}" in str(exc) and "SFTP" in str(exc)
