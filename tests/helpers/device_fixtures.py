"""Fixtures shared by every test folder (loaded by tests/conftest.py as a pytest plugin): a real sshd on loopback, device Pythons, bundle variants.

* ``sshd``          - a fresh OpenSSH server (function scope: tests kill, restart and re-key it)
* ``device_python`` - a device-like interpreter: .venv-agent (numpy 1.x + tflite-runtime 2.14, no TF)
* ``numpy_only_python`` - a venv with numpy but no TFLite runtime
* ``make_variant``  - a new, real bundle (new id) derived from a tiny bundle, optionally with a large payload
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable

import pytest

from pipeline.bundle.manifest import MANIFEST, finalize_bundle, read_manifest
from pipeline.config.target import TargetConfig, parse_target
from pipeline.paths import PROJECT_ROOT
from pipeline.lab.sshd import SSHServer, sshd_available

AGENT_VENV_PYTHON = PROJECT_ROOT / ".venv-agent" / "bin" / "python"


@pytest.fixture(autouse=True)
def _no_ssh_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    """Authentication must come from the target's key file only, never from a developer's agent."""
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


@pytest.fixture
def sshd(tmp_path_factory: pytest.TempPathFactory):
    if not sshd_available():
        pytest.skip("OpenSSH server not installed (/usr/sbin/sshd missing; apt install openssh-server)")
    server = SSHServer(tmp_path_factory.mktemp("sshd")).start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="session")
def device_python() -> str:
    """The "device" interpreter: numpy 1.x + tflite-runtime 2.14 and no TensorFlow (like a Pi)."""
    if not AGENT_VENV_PYTHON.exists():
        pytest.skip(f"{AGENT_VENV_PYTHON} missing: run `make agent-venv`")
    return str(AGENT_VENV_PYTHON)


@pytest.fixture(scope="session")
def numpy_only_python(tmp_path_factory: pytest.TempPathFactory, device_python: str) -> str:
    """A real venv whose Python imports numpy (borrowed from .venv-agent) but no TFLite runtime."""
    root = tmp_path_factory.mktemp("numpy-only")
    base = os.path.realpath(device_python)
    subprocess.run([base, "-m", "venv", "--without-pip", str(root / "venv")], check=True)
    site = subprocess.run(
        [device_python, "-c", "import numpy, os; print(os.path.dirname(os.path.dirname(numpy.__file__)))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    shelf = root / "numpy-shelf"
    shelf.mkdir()
    for name in ("numpy", "numpy.libs"):
        if (Path(site) / name).exists():
            (shelf / name).symlink_to(Path(site) / name)
    python = root / "venv" / "bin" / "python"
    venv_site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True, capture_output=True, text=True
    ).stdout.strip()
    Path(venv_site, "numpy-shelf.pth").write_text(f"{shelf}\n")
    check = subprocess.run(
        [str(python), "-c", "import numpy\ntry:\n import tflite_runtime\nexcept ImportError:\n print('ok')"],
        capture_output=True,
        text=True,
    )
    assert check.stdout.strip() == "ok", check.stderr
    return str(python)


def make_variant_bundle(source: Path, root: Path, tag: str, payload_bytes: int = 0) -> Path:
    """A genuine bundle with a new id: ``source``'s files plus ``extra/<tag>.bin``, re-hashed."""
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".staging-{tag}"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    (staging / MANIFEST).unlink()
    (staging / "extra").mkdir(exist_ok=True)
    data = tag.encode() + (os.urandom(payload_bytes) if payload_bytes else b"")
    (staging / "extra" / f"{tag}.bin").write_bytes(data)
    manifest = {k: v for k, v in read_manifest(source).items() if k not in ("files", "bundle_id", "schema_version")}
    return finalize_bundle(staging, manifest, root)


@pytest.fixture
def make_variant(tmp_path: Path, tiny_bundle_int8: Path) -> Callable[..., Path]:
    def make(tag: str, payload_bytes: int = 0, source: Path = tiny_bundle_int8) -> Path:
        return make_variant_bundle(source, tmp_path / "variants", tag, payload_bytes)

    return make


@pytest.fixture
def ssh_target(sshd: SSHServer, tmp_path: Path, device_python: str) -> Callable[..., TargetConfig]:
    """``ssh_target(name=..., remote_dir=..., python=..., **overrides)`` -> TargetConfig for the sshd."""

    def make(name: str = "loopback", remote_dir: str | Path | None = None, python: str | None = None, **overrides) -> TargetConfig:
        data = sshd.target_dict(name, remote_dir or (tmp_path / "device"), python or device_python, **overrides)
        return parse_target(data, f"test target {name}")

    return make


@pytest.fixture
def local_target(tmp_path: Path) -> Callable[..., TargetConfig]:
    def make(name: str = "localdev", python: str = "host", remote_dir: str | Path | None = None, **overrides) -> TargetConfig:
        data = {
            "name": name,
            "arch": os.uname().machine if os.uname().machine in ("aarch64", "armv7l", "x86_64") else "x86_64",
            "os": "debian",
            "threads": 1,
            "python": python,
            "remote_dir": str(remote_dir or (tmp_path / "localdev")),
            "profiling": {"runs": 5, "min_seconds": 0.0, "warmup": 1},
            "transport": {"type": "local", "command_timeout": 120},
        }
        data.update(overrides)
        return parse_target(data, f"test target {name}")

    return make


def current_of(device_dir: Path) -> str | None:
    link = Path(device_dir) / "current"
    return os.readlink(link).split("/")[-1] if link.is_symlink() else None


