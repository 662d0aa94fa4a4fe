"""debootstrap must verify the mirror's Release signature: --keyring and --force-check-gpg are
passed, a missing keyring is a clear error, and a Release file that cannot be verified stops the
build. The first stage runs a stand-in debootstrap script here (no network, no rootfs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.emu import host, rootfs
from pipeline.errors import EdgeshipError


@pytest.fixture
def keyring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "debian-archive-keyring.gpg"
    path.write_bytes(b"keyring")
    monkeypatch.setattr(host, "KEYRING", path)
    return path


def _fake_debootstrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, output: str, code: int) -> Path:
    """A stand-in that records its arguments, prints what debootstrap would and exits with ``code``."""
    args = tmp_path / "args"
    script = tmp_path / "debootstrap"
    script.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {args}\ncat <<'OUT'\n{output}\nOUT\nexit {code}\n")
    script.chmod(0o755)
    monkeypatch.setattr(host, "DEBOOTSTRAP", script)
    return args


def _build_log(tmp_path: Path) -> Path:
    log = tmp_path / "build.log"
    log.write_text("# edgeship emu build\n")
    return log


def test_debootstrap_checks_the_release_signature(tmp_path: Path, keyring: Path) -> None:
    argv = rootfs._debootstrap_argv(tmp_path / "rootfs", rootfs.DEFAULT_MIRROR)
    assert f"--keyring={keyring}" in argv and "--force-check-gpg" in argv
    assert argv.index("--force-check-gpg") < argv.index(rootfs.RECIPE["suite"])  # options before the suite
    assert "--no-check-gpg" not in argv


def test_a_missing_keyring_names_the_apt_get_command(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(host, "KEYRING", tmp_path / "missing.gpg")
    with pytest.raises(EdgeshipError, match=r"missing\.gpg is missing.*`sudo apt-get install -y debian-archive-keyring`"):
        rootfs._debootstrap_argv(tmp_path / "rootfs", rootfs.DEFAULT_MIRROR)


def test_the_keyring_is_a_required_host_package(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(host.PACKAGES, "debian-archive-keyring", tmp_path / "missing.gpg")
    assert "debian-archive-keyring" in host.missing_packages()
    assert "debian-archive-keyring" in host.INSTALL_COMMAND
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(EdgeshipError, match="debian-archive-keyring"):
        host.require_root("Building the emulated Raspberry Pi")


def test_an_unverifiable_release_file_stops_the_build(tmp_path: Path, keyring: Path, monkeypatch) -> None:
    output = ("I: Retrieving InRelease\nI: Checking Release signature\nE: Release signed by unknown key (key id F8D2585B8783D481)\n"
              f"   The specified keyring {keyring} may be incorrect or out of date.")  # fmt: skip
    args = _fake_debootstrap(tmp_path, monkeypatch, output, 1)
    with pytest.raises(EdgeshipError, match=r"could not be verified .*Release signed by unknown key .*unverified packages"):
        rootfs.first_stage(tmp_path / "rootfs", rootfs.DEFAULT_MIRROR, _build_log(tmp_path))
    assert "--force-check-gpg" in args.read_text().split()


def test_a_first_stage_that_never_verified_the_release_fails(tmp_path: Path, keyring: Path, monkeypatch) -> None:
    _fake_debootstrap(tmp_path, monkeypatch, "I: Retrieving Release\nI: Base system installed successfully.", 0)
    with pytest.raises(EdgeshipError, match="never reported 'Valid Release signature'"):
        rootfs.first_stage(tmp_path / "rootfs", rootfs.DEFAULT_MIRROR, _build_log(tmp_path))


def test_a_verified_first_stage_passes(tmp_path: Path, keyring: Path, monkeypatch) -> None:
    output = "I: Checking Release signature\nI: Valid Release signature (key id 4D64FEC119C2029067D6E791F8D2585B8783D481)"
    args = _fake_debootstrap(tmp_path, monkeypatch, output, 0)
    log = _build_log(tmp_path)
    rootfs.first_stage(tmp_path / "rootfs", rootfs.DEFAULT_MIRROR, log)
    assert f"--keyring={keyring}" in args.read_text().split() and "Valid Release signature" in log.read_text()
