"""Files over exec channels (exec_files.py) against a real OpenSSH server that refuses SFTP.

``SSHServer(sftp=False)`` has no ``Subsystem sftp`` line, so the transport must fall back; ``env``
sets the sessions' PATH, which is how a device without sha256sum, or with a lying one, is made.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
from pathlib import Path
from typing import Optional

import paramiko
import pytest

from pipeline.config.target import TargetConfig, parse_target
from pipeline.errors import DeployError
from pipeline.lab.sshd import SSHServer, sshd_available
from pipeline.transport import CommandTimeout, open_transport
from tests.transport.upload_faults import cut_once_the_script_runs, interrupt_after, script_running, shrink_after, wait_until

pytestmark = pytest.mark.ssh


@pytest.fixture
def no_sftp_sshd(tmp_path_factory: pytest.TempPathFactory):
    """``no_sftp_sshd(path=None, sftp=False)``: a started OpenSSH server, its sessions' PATH set to ``path``."""
    if not sshd_available():
        pytest.skip("OpenSSH server not installed (/usr/sbin/sshd missing; apt install openssh-server)")
    servers: list[SSHServer] = []

    def make(path: Optional[str] = None, sftp: bool = False) -> SSHServer:
        server = SSHServer(tmp_path_factory.mktemp("sshd"), sftp=sftp, env={"PATH": path} if path else None)
        servers.append(server.start())
        return server

    yield make
    for server in servers:
        server.kill()


@pytest.fixture
def device(tmp_path: Path) -> Path:
    """The device directory the tests upload into (the server runs on this machine)."""
    path = tmp_path / "device"
    path.mkdir()
    return path


def _target(server: SSHServer, device: Path, **transport) -> TargetConfig:
    data = server.target_dict("no-sftp", device, "/usr/bin/python3", transport=transport)
    return parse_target(data, "test target no-sftp")


def _tool_dir(root: Path, *programs: str) -> str:
    """A PATH directory holding only ``sh`` and ``programs`` (links to the real ones)."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("sh", *programs):
        (root / name).symlink_to(shutil.which(name, path="/usr/bin:/bin"))
    return str(root)


def _lying_sha256sum(root: Path) -> str:
    """A PATH whose ``sha256sum`` reports a wrong digest (a corrupted copy, as the device sees it)."""
    root.mkdir(parents=True, exist_ok=True)
    shim = root / "sha256sum"
    shim.write_text("#!/bin/sh\ncat >/dev/null\necho '" + "0" * 64 + "  -'\n")
    shim.chmod(0o755)
    return f"{root}:/usr/bin:/bin"


def _old_file(device: Path) -> Path:
    """``device/payload.bin`` holding b"old": what a failed upload must leave as it was."""
    dest = device / "payload.bin"
    dest.write_bytes(b"old")
    return dest


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".partial"))


def test_ssh_without_sftp_put_get_roundtrip_over_exec_with_progress(no_sftp_sshd, device, tmp_path):
    server = no_sftp_sshd()
    src = tmp_path / "payload.bin"
    src.write_bytes(os.urandom(700_000))
    dest_dir = tmp_path / "remote dir; $(touch pwned) 'q'"
    dest_dir.mkdir()
    dest = dest_dir / "payload.bin"
    dest.write_bytes(b"old")
    seen: list[tuple[int, int]] = []
    with open_transport(_target(server, device)) as tr:
        tr.put(src, str(dest), progress=lambda sent, total: seen.append((sent, total)))
        assert tr.file_transfer == "exec"
        back = tmp_path / "back" / "payload.bin"
        tr.get(str(dest), back)
        with pytest.raises(DeployError, match="does not exist"):
            tr.get(str(dest_dir / "nope"), tmp_path / "nope")
        empty = tmp_path / "empty"
        empty.write_bytes(b"")
        tr.put(empty, str(dest_dir / "empty"), progress=lambda sent, total: seen.append((sent, total)))
        assert tr.run(["echo", "commands still work"]).stdout == "commands still work\n"
    assert dest.read_bytes() == src.read_bytes() == back.read_bytes()
    assert (dest_dir / "empty").read_bytes() == b""
    assert _leftovers(dest_dir) == [] and not (tmp_path / "pwned").exists()
    assert seen[-2] == (700_000, 700_000) and seen[-1] == (0, 0)
    assert [s for s, _ in seen[:-1]] == sorted(s for s, _ in seen[:-1])
    assert not list((tmp_path / "back").glob(".*tmp"))


def test_ssh_with_sftp_keeps_using_sftp(no_sftp_sshd, device, tmp_path):
    server = no_sftp_sshd(sftp=True)
    src = tmp_path / "f"
    src.write_bytes(b"x" * 1000)
    with open_transport(_target(server, device)) as tr:
        tr.put(src, str(device / "f"))
        assert tr.file_transfer == "sftp"


def test_ssh_exec_upload_with_wrong_checksum_is_refused(no_sftp_sshd, device, tmp_path):
    """The device's sha256 disagrees with the one sent: the copy is removed and the old file stays."""
    server = no_sftp_sshd(path=_lying_sha256sum(tmp_path / "shim"))
    (device / "agent.py").write_text("old agent\n")
    src = tmp_path / "agent.py"
    src.write_text("new agent\n")
    with open_transport(_target(server, device)) as tr:
        with pytest.raises(DeployError) as err:
            tr.put(src, str(device / "agent.py"))
    message = str(err.value)
    assert "was refused" in message and "did not match" in message and "0" * 64 in message
    assert f"target 'no-sftp' ({server.user}@127.0.0.1:{server.port}:{device / 'agent.py'})" in message
    assert (device / "agent.py").read_text() == "old agent\n"
    assert _leftovers(device) == []
    with open_transport(_target(server, device)) as tr:
        with pytest.raises(DeployError, match=r"do not match the file's sha256 on the device \(0{64}\)"):
            tr.get(str(device / "agent.py"), tmp_path / "fetched.py")  # a download is checked the same way
    assert not (tmp_path / "fetched.py").exists() and not list(tmp_path.glob(".fetched.py.*"))


def test_ssh_exec_upload_corrupted_on_the_way_is_refused(no_sftp_sshd, device, tmp_path, monkeypatch):
    """A byte flipped in the stream (after the sha256 was taken here) is caught by the device's real sha256sum."""
    server = no_sftp_sshd()
    src = tmp_path / "model.bin"
    src.write_bytes(os.urandom(200_000))
    real_sendall = paramiko.Channel.sendall
    flipped: list[int] = []

    def corrupting_sendall(chan: paramiko.Channel, data: bytes) -> None:
        if not flipped and len(data) > 10:
            flipped.append(len(data))
            data = data[:10] + bytes([data[10] ^ 0xFF]) + data[11:]
        real_sendall(chan, data)

    with open_transport(_target(server, device)) as tr:
        monkeypatch.setattr(paramiko.Channel, "sendall", corrupting_sendall)
        with pytest.raises(DeployError, match="was refused: its sha256 on the device"):
            tr.put(src, str(device / "model.bin"))
        monkeypatch.setattr(paramiko.Channel, "sendall", real_sendall)
        assert flipped
        assert _leftovers(device) == [] and not (device / "model.bin").exists()
        tr.put(src, str(device / "model.bin"))  # a retry goes through
    assert (device / "model.bin").read_bytes() == src.read_bytes()


@pytest.mark.parametrize("tool", ["openssl", "python3"])
def test_ssh_exec_fallback_checks_with_openssl_or_python_when_sha256sum_is_missing(no_sftp_sshd, device, tmp_path, tool, caplog):
    server = no_sftp_sshd(path=_tool_dir(tmp_path / "bin", "cat", "mv", "rm", tool))
    src = tmp_path / "payload.bin"
    src.write_bytes(os.urandom(150_000))
    caplog.set_level(logging.INFO, logger="pipeline.transport.exec_files")
    with open_transport(_target(server, device)) as tr:
        tr.put(src, str(device / "payload.bin"))
        tr.get(str(device / "payload.bin"), tmp_path / "back.bin")
    assert (device / "payload.bin").read_bytes() == src.read_bytes() == (tmp_path / "back.bin").read_bytes()
    assert f"checked with {tool}" in caplog.text
    assert _leftovers(device) == []


def test_ssh_no_sftp_and_no_tools_names_the_refused_subsystem(no_sftp_sshd, device, tmp_path):
    server = no_sftp_sshd(path=_tool_dir(tmp_path / "bin", "cat"))
    src = tmp_path / "f"
    src.write_text("x")
    with open_transport(_target(server, device)) as tr:
        for attempt in (lambda: tr.put(src, str(device / "f")), lambda: tr.get(str(device / "f"), tmp_path / "g")):
            with pytest.raises(DeployError) as err:
                attempt()
            message = str(err.value)
            assert message.startswith(
                f"The SSH server of target 'no-sftp' ({server.user}@127.0.0.1:{server.port}) refused the sftp subsystem"
            )
            assert "(it refused the sftp subsystem request)" in message
            assert "it lacks `mv`, `rm`, a sha256 tool (`sha256sum`, `openssl`, `python3`, `python`)" in message
            assert "EOF during negotiation" not in message and "connection" not in message
    assert list(device.iterdir()) == []


def test_ssh_exec_upload_failing_midway_leaves_no_partial(no_sftp_sshd, device, tmp_path):
    """Ctrl-C mid-upload, a local file that shrinks mid-upload, a device directory that does not exist."""
    server = no_sftp_sshd()
    dest = _old_file(device)
    src = tmp_path / "payload.bin"
    with open_transport(_target(server, device)) as tr:
        for progress, error in ((interrupt_after(65536), KeyboardInterrupt), (shrink_after(src, 65536), DeployError)):
            src.write_bytes(os.urandom(1_000_000))
            with pytest.raises(error) as err:
                tr.put(src, str(dest), progress=progress)
            assert dest.read_bytes() == b"old"
            assert _leftovers(device) == []
        assert "changed while it was being uploaded" in str(err.value)
        with pytest.raises(DeployError, match=r"writing .*/missing/payload.bin.partial failed \(.*(No such file|nonexistent)"):
            tr.put(src, str(device / "missing" / "payload.bin"))
        tr.put(src, str(dest))  # the connection is still usable
    assert dest.read_bytes() == src.read_bytes()


def test_ssh_exec_upload_cut_with_the_connection_cleans_up_on_the_device(no_sftp_sshd, device, tmp_path):
    """The connection dies mid-upload: the device script sees the end of its input, cannot match the
    sha256 and removes the partial itself; the old file stays and the next put completes."""
    server = no_sftp_sshd()
    dest = _old_file(device)
    src = tmp_path / "payload.bin"
    src.write_bytes(os.urandom(3_000_000))
    target = _target(server, device)
    partial = device / "payload.bin.partial"
    with open_transport(target) as tr:
        with pytest.raises(DeployError, match="was lost while uploading"):
            tr.put(src, str(dest), progress=cut_once_the_script_runs(tr, partial))
    assert wait_until(lambda: not script_running(partial)), "the device script is still running"
    assert _leftovers(device) == []
    assert dest.read_bytes() == b"old"
    with open_transport(target) as tr:
        tr.put(src, str(dest))
    assert dest.read_bytes() == src.read_bytes() and _leftovers(device) == []


def test_ssh_sftp_upload_cut_leaves_a_partial_that_remove_partials_and_the_next_put_clear(no_sftp_sshd, device, tmp_path):
    """Over SFTP nothing on the device can clean up after a cut: the documented remedies work."""
    server = no_sftp_sshd(sftp=True)
    src = tmp_path / "payload.bin"
    src.write_bytes(os.urandom(3_000_000))
    target = _target(server, device)
    for remedy in ("remove_partials", "put again"):
        with open_transport(target) as tr:

            def cut_the_connection(sent: int, total: int) -> None:
                if sent >= (1 << 20) and tr.client.get_transport().is_active():
                    tr.client.get_transport().sock.close()

            with pytest.raises(DeployError, match="was lost while uploading"):
                tr.put(src, str(device / "payload.bin"), progress=cut_the_connection)
        assert wait_until(lambda: _leftovers(device) == ["payload.bin.partial"])
        with open_transport(target) as tr:
            if remedy == "remove_partials":
                tr.remove_partials([str(device / "payload.bin"), str(device / "never-uploaded")])
            else:
                tr.put(src, str(device / "payload.bin"))
        assert _leftovers(device) == [], remedy


def test_ssh_exec_upload_that_stalls_times_out_and_removes_its_partial(no_sftp_sshd, device, tmp_path):
    """The device stops reading (its `cat` is stopped): each stall is bounded by command_timeout."""
    server = no_sftp_sshd()
    src = tmp_path / "payload.bin"
    src.write_bytes(os.urandom(20_000_000))  # more than the SSH windows and pipe buffers hold
    stopped: list[int] = []

    def stop_the_remote_cat(sent: int, total: int) -> None:
        if stopped or sent < (1 << 20):
            return
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and (entry / "cmdline").read_bytes() == b"cat\0":
                    parent = (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                    if str(device / "payload.bin.partial") in Path(f"/proc/{parent}/cmdline").read_text():
                        os.kill(int(entry.name), signal.SIGSTOP)
                        stopped.append(int(entry.name))
            except OSError:
                continue

    try:
        with open_transport(_target(server, device, command_timeout=2)) as tr:
            with pytest.raises(CommandTimeout, match=r"stalled: the SSH server did not take more data within 2 s"):
                tr.put(src, str(device / "payload.bin"), progress=stop_the_remote_cat)
            assert stopped, "the remote cat was not found"
            assert _leftovers(device) == []
            assert tr.run(["echo", "ok"]).stdout == "ok\n"
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)  # it then reads the end of its input and exits
    assert not (device / "payload.bin").exists()
