"""The tflite-runtime wheel of the emulated device: fetched once with pip, installed only when its
sha256 is the pinned one.

``downloads/`` lies in the user's results tree and the wheel is unpacked into a rootfs whose
programs run as root, so a file found there is never trusted by its name: it must hash to
its kind's pinned ``sha256``, the digest PyPI publishes for exactly that file. The hash is computed on a
descriptor opened without following a link, and the unpack reads that same descriptor, so the
bytes installed are the bytes checked. A file that does not match is deleted and downloaded again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import BinaryIO, Callable, Optional

from pipeline.emu.kinds import DEFAULT_KIND
from pipeline.errors import EdgeshipError
from pipeline.safe_paths import open_nofollow

logger = logging.getLogger(__name__)
Log = Callable[[str], None]

#: the rpi4 kind's wheel; every kind pins its own (:mod:`pipeline.emu.kinds`), ``sha256`` being PyPI's
#: published digest of ``file`` (https://pypi.org/simple/tflite-runtime/, the same as `pip download` gives)
SPEC: dict[str, str] = DEFAULT_KIND.wheel
SITE_PACKAGES = DEFAULT_KIND.site_packages


def open_verified(path: Path, spec: dict[str, str] = SPEC) -> Optional[BinaryIO]:
    """``path`` opened for reading, positioned at 0, if its content hashes to the pin; else None."""
    try:
        handle = os.fdopen(open_nofollow(Path(path), os.O_RDONLY), "rb")
    except (OSError, EdgeshipError) as exc:
        logger.info("cannot use %s as the wheel: %s", path, exc)
        return None
    digest = hashlib.sha256()
    for block in iter(lambda: handle.read(1 << 20), b""):
        digest.update(block)
    if digest.hexdigest() != spec["sha256"]:
        logger.info("%s has sha256 %s, not the pinned %s", path, digest.hexdigest(), spec["sha256"])
        handle.close()
        return None
    handle.seek(0)
    return handle


def _matches(path: Path, spec: dict[str, str]) -> bool:
    handle = open_verified(path, spec)
    if handle is None:
        return False
    handle.close()
    return True


def _discard(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _pip_argv(dest: Path, spec: dict[str, str]) -> list[str]:
    return [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
        "--platform", spec["platform"], "--python-version", spec["python_version"],
        "--implementation", "cp", "--abi", spec["abi"], "--dest", str(dest), spec["requirement"],
    ]  # fmt: skip


def fetch_wheel(downloads: Path, log: Log, spec: dict[str, str] = SPEC) -> Path:
    """``downloads/<spec file>`` with the pinned hash: the one already there, or a fresh download."""
    path = Path(downloads) / spec["file"]
    if os.path.lexists(path):
        if _matches(path, spec):
            return path
        log(f"{path} is not the pinned tflite-runtime wheel (sha256 {spec['sha256']}); deleting it and downloading it again")
        _discard(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=path.parent))
    try:
        argv = _pip_argv(staging, spec)
        log(f"downloading {spec['requirement']} for {spec['platform']} from PyPI")
        result = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600)
        got = staging / spec["file"]
        if result.returncode != 0 or not got.is_file():
            detail = " ".join((result.stderr or result.stdout).strip().splitlines()[-2:])
            manual = " ".join([*argv[2:-3], "--dest", str(path.parent), spec["requirement"]])
            raise EdgeshipError(
                f"Cannot download the {spec['requirement']} wheel for {spec['platform']} from PyPI ({detail or 'no wheel'}). "
                f"Check the network or proxy to pypi.org, or download it elsewhere with `{manual}` and put the file "
                f"{spec['file']} (sha256 {spec['sha256']}) into {path.parent}."
            )
        if not _matches(got, spec):
            raise EdgeshipError(
                f"The {spec['file']} that pip downloaded does not have the pinned sha256 {spec['sha256']}; it is not "
                "installed. A proxy or index (pip config, PIP_INDEX_URL) may serve a different file; check it and retry."
            )
        os.replace(got, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def install_wheel(wheel: Path, rootfs: Path, spec: dict[str, str] = SPEC, site_packages: str = SITE_PACKAGES) -> None:
    """Unpack the pinned wheel into the rootfs's site-packages: all pip does for a plain (purelib/platlib) wheel."""
    handle = open_verified(wheel, spec)
    if handle is None:
        raise EdgeshipError(
            f"{wheel} is not the pinned {spec['file']} (sha256 {spec['sha256']}); refusing to install it into the "
            "emulated device. Delete it; the next `edgeship emu build` downloads it again."
        )
    target = rootfs / site_packages.lstrip("/")
    target.mkdir(parents=True, exist_ok=True)
    with handle, zipfile.ZipFile(handle) as archive:
        for info in archive.infolist():
            parts = Path(info.filename).parts
            if info.filename.startswith("/") or ".." in parts or (parts and parts[0].endswith(".data")):
                raise EdgeshipError(f"The wheel {wheel} has an entry {info.filename!r} that a plain unpack cannot install.")
            extracted = archive.extract(info, target)
            mode = (info.external_attr >> 16) & 0o777
            if mode and not info.is_dir():
                os.chmod(extracted, mode & 0o755 | 0o644)
        dist_info = next(p for p in {Path(n).parts[0] for n in archive.namelist()} if p.endswith(".dist-info"))
    (target / dist_info / "INSTALLER").write_text("edgeship-emu\n")
