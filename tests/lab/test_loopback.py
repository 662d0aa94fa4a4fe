"""The loopback lab with real sshd servers: it starts again in the same results directory any
number of times (also after a lab killed without `lab stop`), `lab stop` signals only the processes
it started, and as root it refuses files another user could change."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.errors import EdgeshipError
from pipeline.lab.loopback import lab_dir, start_lab, stop_lab
from pipeline.lab.sshd import SSHServer, sshd_available
from pipeline.proc_identity import start_ticks

pytestmark = [pytest.mark.ssh, pytest.mark.skipif(not sshd_available(), reason="openssh-server is not installed")]
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="checks what root refuses (and needs chown)")


@pytest.fixture(autouse=True)
def _stop_the_lab(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    yield
    for pid in _recorded_pids():
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _recorded_pids() -> list[int]:
    try:
        return [entry["pid"] for entry in json.loads((lab_dir() / "state.json").read_text())["servers"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _wait_gone(pids: list[int], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while any(start_ticks(pid) is not None and _state(pid) != "Z" for pid in pids):
        assert time.monotonic() < deadline, f"lab sshd still running: {pids}"
        time.sleep(0.05)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def _run_on(target_file: Path, command: str) -> str:
    """Log in with exactly the target's key and known_hosts (strict) and run ``command``."""
    import paramiko

    transport = yaml.safe_load(target_file.read_text())["transport"]
    client = paramiko.SSHClient()
    client.load_host_keys(transport["known_hosts"])
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(transport["host"], port=transport["port"], username=transport["user"], key_filename=transport["key_file"],
                   look_for_keys=False, allow_agent=False, timeout=10, banner_timeout=10, auth_timeout=10)  # fmt: skip
    try:
        _, stdout, _ = client.exec_command(command, timeout=30)
        return stdout.read().decode().strip()
    finally:
        client.close()


def _check_lab(lab) -> None:
    assert len(lab.targets) == 2 and all(start_ticks(pid) is not None for pid in lab.pids)
    for target in lab.targets:
        assert _run_on(target, "echo up") == "up"


def test_lab_starts_again_in_the_same_directory_and_after_a_killed_lab() -> None:
    for _ in range(3):
        lab = _started()
        _check_lab(lab)
        assert stop_lab() == 2
        _wait_gone(lab.pids)
    killed = _started()
    for pid in killed.pids:  # the lab dies without `lab stop` (a crash, an OOM kill, a reboot)
        os.killpg(pid, signal.SIGKILL)
    _wait_gone(killed.pids)
    lab = _started()
    _check_lab(lab)
    assert stop_lab() == 2
    _wait_gone(lab.pids)


def _started():
    return start_lab(devices=2, python=sys.executable)


@pytest.mark.parametrize("legacy", [False, True], ids=["current", "pids-only"])
def test_lab_stop_leaves_a_process_that_reused_a_recorded_pid_alone(legacy: bool) -> None:
    """A state file whose PID now names an unrelated process group (as after a reboot or PID reuse)."""
    lab = _started()
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        for pid in lab.pids:
            os.killpg(pid, signal.SIGKILL)
        _wait_gone(lab.pids)
        state = json.loads((lab_dir() / "state.json").read_text())
        if legacy:  # the format before start times were recorded
            state = {"pids": [stranger.pid]}
        else:
            for entry in state["servers"]:
                entry["pid"] = stranger.pid  # same PID, but another process: its start time differs
        (lab_dir() / "state.json").write_text(json.dumps(state))
        assert stop_lab() == 0
        time.sleep(0.2)
        assert stranger.poll() is None, "lab stop killed an unrelated process group"
    finally:
        stranger.kill()
        stranger.wait()


def test_lab_stop_ends_the_servers_it_started() -> None:
    lab = _started()
    assert stop_lab() == 2
    _wait_gone(lab.pids)
    assert not (lab_dir() / "state.json").exists() and stop_lab() == 0


def test_a_linked_sshd_log_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("host file\n")
    server = SSHServer(tmp_path / "server")
    server.log.unlink(missing_ok=True)
    server.log.symlink_to(victim)
    try:
        with pytest.raises(EdgeshipError, match="symbolic link"):
            server.start()
    finally:
        server.kill()
    assert victim.read_text() == "host file\n"


@needs_root
def test_root_refuses_a_lab_directory_another_user_owns() -> None:
    lab_dir().mkdir(parents=True)
    os.chown(lab_dir(), 65534, 65534)
    with pytest.raises(EdgeshipError, match=rf"{lab_dir()} .*owned by uid 65534"):
        _started()
    assert not (lab_dir() / "servers").exists()


@needs_root
def test_root_sshd_refuses_keys_another_user_could_replace(tmp_path: Path) -> None:
    """StrictModes stays off in sshd_config; the server's own check takes its place."""
    user_dir = tmp_path / "user-owned"
    user_dir.mkdir()
    server = SSHServer(user_dir / "server")
    os.chown(user_dir, 65534, 65534)
    try:
        with pytest.raises(EdgeshipError, match=rf"{user_dir} is not owned by root"):
            server.start()
    finally:
        server.kill()
    assert server.proc is None


def test_the_emulated_pi_entry_builds_the_image_before_starting_it(monkeypatch: pytest.MonkeyPatch):
    """`lab start --with-emulated-pi` on a fresh clone has no image yet: it must build (or reuse)
    it first, not stop at "build it first"."""
    from pipeline import emu
    from pipeline.lab.loopback import emulated_pi_entry

    calls: list[str] = []

    class Started:
        target_file = Path("/x/emu-rpi4.yaml")

    monkeypatch.setattr(emu, "build_image", lambda layout, log=None: calls.append(f"build {layout.target_name}"))
    monkeypatch.setattr(emu, "start", lambda layout, log=None: calls.append(f"start {layout.target_name}") or Started())
    entry = emulated_pi_entry()
    assert calls == ["build emu-rpi4", "start emu-rpi4"]
    assert entry["target"] == "/x/emu-rpi4.yaml" and "emulated" in entry["tags"]


def test_the_lab_lists_both_emulated_pis_each_in_its_own_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """The nightly covers the 64-bit and the 32-bit stack: one entry per kind, distinct homes and targets."""
    from pipeline import emu
    from pipeline.lab.loopback import emulated_pi_entries

    homes: list[Path] = []

    class Started:
        def __init__(self, layout):
            self.target_file = layout.target_file

    monkeypatch.setattr(emu, "build_image", lambda layout, log=None: homes.append(layout.root))
    monkeypatch.setattr(emu, "start", lambda layout, log=None: Started(layout))
    entries = emulated_pi_entries()
    assert [e["name"] for e in entries] == ["emu-rpi4", "emu-rpi3"]
    assert len(set(homes)) == 2 and {h.name for h in homes} == {"emu", "emu-rpi3"}
    assert entries[1]["target"].endswith("emu-rpi3/targets/emu-rpi3.yaml")
    assert "armv7l" in entries[1]["tags"] and "aarch64" in entries[0]["tags"]
