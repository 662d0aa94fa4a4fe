"""The emulated Raspberry Pi: a real arm64 Debian rootfs under qemu-user, reached over its own sshd.

The ``arm`` tests walk the full path: build (cached under the real results/emu, minutes the first
time) -> start -> paramiko with strict host keys -> agent.py and an int8 bundle over SFTP -> doctor
and profile under emulation -> ``edgeship deploy`` of the generated target -> stop. They need root
and skip with the reason when the rootfs cannot be built here. The unmarked tests check the fault
messages and the generated target without root or emulation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from pipeline.config.target import load_target, parse_target
from pipeline.emu import EmuLayout, build_image, host, mounts, rootfs, start, status, stop
from pipeline.emu.device import target_dict
from pipeline.errors import EdgeshipError
from pipeline.paths import PROJECT_ROOT
from tests.helpers.emu_devices import connect, doctor_and_profile_by_hand, run, running_device

# Computed at import time, before the autouse fixture points EDGESHIP_RESULTS at a tmp dir: the
# rootfs is built once and shared with `make emu-device` instead of being rebuilt for every test.
EMU = EmuLayout.default()
REMOTE_TEST_DIR = "/root/edgeship-arm-test"


# -- the emulated device ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def emu_device() -> Iterator[EmuLayout]:
    """The running device; started here (and stopped afterwards) unless it already ran."""
    yield from running_device(EMU)


@pytest.fixture(autouse=True)
def _no_ssh_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    """Authentication must come from the generated key only, never from a developer's ssh-agent."""
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


def _expect_arm_stack(doctor: dict) -> None:
    assert doctor["machine"] == "aarch64"
    assert doctor["runtimes"]["tflite_runtime"] == "2.14.0"
    assert doctor["numpy"].startswith("1.24.")
    assert doctor["python"].startswith("3.11.")


@pytest.mark.arm
def test_arm_sshd_accepts_only_its_own_host_key(emu_device: EmuLayout, tmp_path: Path) -> None:
    import paramiko

    client = connect(emu_device, emu_device.known_hosts)
    try:
        assert run(client, ["uname", "-m"])[1].strip() == "aarch64"
    finally:
        client.close()
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        connect(emu_device, empty)


@pytest.mark.arm
def test_arm_agent_doctor_and_profile_over_sftp(emu_device: EmuLayout, tiny_bundle_int8: Path) -> None:
    """agent.py and an int8 bundle uploaded by hand: the ARM kernels must agree with the x86 host."""
    doctor, record = doctor_and_profile_by_hand(emu_device, tiny_bundle_int8, REMOTE_TEST_DIR)
    _expect_arm_stack(doctor)
    assert record["device"]["machine"] == "aarch64" and record["device"]["emulated"] is True
    assert record["runtime"]["name"] == "tflite_runtime" and record["runtime"]["version"] == "2.14.0"
    assert record["accuracy"]["agreement_with_host"] == 1.0, record["accuracy"]["disagreements"]
    assert any("emulation" in warning for warning in record["warnings"])


@pytest.mark.arm
def test_arm_edgeship_deploy_of_the_generated_target(emu_device: EmuLayout, tiny_bundle_int8: Path) -> None:
    """`edgeship deploy <generated target> --bundle DIR`: upload, install, switch, profile, all on ARM."""
    target = load_target(emu_device.target_file)
    assert target.emulated and target.arch == "aarch64" and target.transport.host_key_policy == "strict"
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "deploy", str(emu_device.target_file), "--bundle", str(tiny_bundle_int8), "--json"],
        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=1800,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)["profile"]
    assert record["target"] == "emu-rpi4" and record["bundle_id"] == tiny_bundle_int8.name
    assert record["device"]["machine"] == "aarch64" and record["device"]["emulated"] is True
    assert record["runtime"]["version"] == "2.14.0" and record["runtime"]["numpy"].startswith("1.")
    assert record["accuracy"]["agreement_with_host"] == 1.0, record["accuracy"]["disagreements"]


@pytest.mark.arm
def test_arm_stop_tears_down_and_start_comes_back(emu_device: EmuLayout) -> None:
    before = status(emu_device)
    after = stop(emu_device)
    assert not after.running and after.mounts == [] and after.processes == []
    assert not emu_device.target_file.exists() and not emu_device.client_key.exists()
    assert emu_device.rootfs.is_dir() and rootfs.cached_image(emu_device) is not None  # the cache stays
    again = start(emu_device)
    assert again.running and again.pid != before.pid
    assert [Path(p).name for p in again.mounts] == ["proc", "sys", "dev", "pts"]


# -- faults and the generated target (no root, no emulation) ----------------------------------------
def test_emu_build_without_root_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(host, "PACKAGES", {"qemu-user-static": tmp_path / "no-qemu", "debootstrap": tmp_path / "no-debootstrap"})
    with pytest.raises(EdgeshipError) as caught:
        build_image(EmuLayout(tmp_path / "emu"))
    message = str(caught.value)
    assert "needs root" in message and "sudo" in message
    assert "qemu-user-static, debootstrap" in message and host.INSTALL_COMMAND in message
    assert not (tmp_path / "emu" / "image").exists()


def test_emu_unreachable_mirror_names_the_fix() -> None:
    with pytest.raises(EdgeshipError, match=r"Cannot reach the Debian mirror .*--mirror"):
        rootfs.check_mirror("http://127.0.0.1:9/debian")


@pytest.mark.skipif(os.geteuid() != 0, reason="without root the error is 'needs root' (tested above)")
def test_emu_start_without_an_image_says_build_first(tmp_path: Path) -> None:
    with pytest.raises(EdgeshipError, match=r"edgeship emu build"):
        start(EmuLayout(tmp_path / "emu"))


def test_emu_generated_target_is_valid_strict_and_emulated(tmp_path: Path) -> None:
    data = target_dict(EmuLayout(tmp_path), 2222)
    target = parse_target(data, "generated")
    assert target.emulated is True and target.arch == "aarch64" and target.os == "debian"
    assert target.runtime == ["tflite_runtime"] and target.python == "python3"
    assert target.transport.host_key_policy == "strict"
    assert target.transport.known_hosts == str((tmp_path / "run" / "known_hosts").resolve())


def test_emu_status_of_nothing(tmp_path: Path) -> None:
    found = status(EmuLayout(tmp_path))
    assert not found.running and found.image is None and found.problems == []


@pytest.mark.skipif(os.geteuid() != 0, reason="bind mounts need root")
def test_emu_remove_tree_unmounts_instead_of_deleting_through_binds(tmp_path: Path) -> None:
    """The safety net for the rootfs: deleting it must never reach into a bound host directory."""
    outside = tmp_path / "host-dir"
    outside.mkdir()
    (outside / "precious").write_text("keep me")
    tree = tmp_path / "rootfs"
    (tree / "dev").mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(outside), str(tree / "dev")], check=True)
    try:
        assert mounts.mounts_under(tree) == [tree / "dev"]
        mounts.remove_tree(tree, within=tmp_path)
    finally:
        subprocess.run(["umount", str(tree / "dev")], capture_output=True)
    assert not tree.exists()
    assert (outside / "precious").read_text() == "keep me"
