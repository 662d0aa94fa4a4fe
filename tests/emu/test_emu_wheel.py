"""The tflite-runtime wheel is installed only when it hashes to the pinned sha256; a file in
downloads/ that does not (planted, truncated, a link) is deleted and downloaded again, never used."""

from __future__ import annotations

import hashlib
import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from pipeline.emu import wheel
from pipeline.errors import EdgeshipError


def _fake_wheel(path: Path) -> Path:
    """A real, installable wheel archive that is not the pinned one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("tflite_runtime/__init__.py", "print('not the real tflite_runtime')\n")
        archive.writestr("tflite_runtime-2.14.0.dist-info/METADATA", "Name: tflite-runtime\nVersion: 2.14.0\n")
    return path


def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_EXTRA_INDEX_URL": "", "PIP_FIND_LINKS": "",
                        "PIP_RETRIES": "0", "PIP_TIMEOUT": "2", "PIP_CONFIG_FILE": os.devnull}.items():  # fmt: skip
        monkeypatch.setenv(name, value)


def _pin_to(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    monkeypatch.setitem(wheel.SPEC, "sha256", hashlib.sha256(path.read_bytes()).hexdigest())


def test_the_pin_names_the_wheel_pip_is_asked_for() -> None:
    name, version = wheel.SPEC["requirement"].split("==")
    assert wheel.SPEC["file"].startswith(f"{name.replace('-', '_')}-{version}-{wheel.SPEC['abi']}-{wheel.SPEC['abi']}-")
    assert wheel.SPEC["file"].endswith(f"{wheel.SPEC['platform']}.whl") and len(wheel.SPEC["sha256"]) == 64


def test_a_wheel_with_the_wrong_hash_in_downloads_is_deleted_and_fetched_again(tmp_path: Path, monkeypatch) -> None:
    planted = _fake_wheel(tmp_path / "downloads" / wheel.SPEC["file"])
    _offline(monkeypatch)
    expected = rf"Cannot download the tflite-runtime==2.14.0 wheel .*`pip download .*manylinux_2_34_aarch64.*sha256 {wheel.SPEC['sha256']}"
    with pytest.raises(EdgeshipError, match=expected):
        wheel.fetch_wheel(planted.parent, lambda _: None)
    assert not planted.exists()


def test_a_wheel_with_the_wrong_hash_is_never_installed(tmp_path: Path) -> None:
    planted = _fake_wheel(tmp_path / "fake.whl")
    with pytest.raises(EdgeshipError, match="pinned"):
        wheel.install_wheel(planted, tmp_path / "rootfs")
    assert not (tmp_path / "rootfs").exists()


def test_the_pinned_wheel_is_installed(tmp_path: Path, monkeypatch) -> None:
    good = _fake_wheel(tmp_path / "good.whl")
    _pin_to(monkeypatch, good)
    wheel.install_wheel(good, tmp_path / "rootfs")
    site = tmp_path / "rootfs" / wheel.SITE_PACKAGES.lstrip("/")
    assert (site / "tflite_runtime" / "__init__.py").is_file()
    assert (site / "tflite_runtime-2.14.0.dist-info" / "INSTALLER").read_text() == "edgeship-emu\n"


def test_a_matching_wheel_is_reused_without_downloading(tmp_path: Path, monkeypatch) -> None:
    good = _fake_wheel(tmp_path / "downloads" / wheel.SPEC["file"])
    _pin_to(monkeypatch, good)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("downloaded although the wheel matched"))
    assert wheel.fetch_wheel(good.parent, lambda _: None) == good


def test_a_linked_wheel_is_not_used_even_if_its_target_matches(tmp_path: Path, monkeypatch) -> None:
    target = _fake_wheel(tmp_path / "elsewhere.whl")
    _pin_to(monkeypatch, target)
    link = tmp_path / "downloads" / wheel.SPEC["file"]
    link.parent.mkdir()
    link.symlink_to(target)
    _offline(monkeypatch)
    with pytest.raises(EdgeshipError, match="Cannot download"):
        wheel.fetch_wheel(link.parent, lambda _: None)
    assert not os.path.lexists(link) and target.is_file()
    with pytest.raises(EdgeshipError, match="pinned"):
        wheel.install_wheel(link, tmp_path / "rootfs")
