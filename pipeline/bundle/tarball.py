"""``<bundle id>.tar.gz``: the form a bundle travels in, rebuilt whenever it stops matching its directory.

Several builds or deploys may ask for the same tarball at once, so each writes its own temporary
file (fsynced, then renamed into place: the last rename wins and every copy is complete). A bundle
is a model and an eval subset, small enough to build its archive in memory first. An
existing tarball is only reused if its members are exactly the directory's files with the same
contents; a truncated, stale or tampered one is replaced.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import tarfile
import zlib
from pathlib import Path
from typing import Optional

from pipeline.fsutil import atomic_write_bytes, sha256_file

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


def tarball_path(bundle_dir: Path) -> Path:
    return Path(bundle_dir).with_name(f"{Path(bundle_dir).name}.tar.gz")


def expected_members(bundle_dir: Path) -> dict[str, Optional[str]]:
    """Archive name -> sha256 (None for a folder), under one top-level folder named like the bundle."""
    bundle_dir = Path(bundle_dir)
    members: dict[str, Optional[str]] = {}
    for path in sorted(bundle_dir.rglob("*")):
        name = f"{bundle_dir.name}/{path.relative_to(bundle_dir).as_posix()}"
        members[name] = None if path.is_dir() else sha256_file(path)
    return members


def _stream_sha256(handle: io.BufferedIOBase) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: handle.read(_CHUNK), b""):
        digest.update(block)
    return digest.hexdigest()


def archive_members(tarball: Path) -> Optional[dict[str, Optional[str]]]:
    """The tarball's members as :func:`expected_members` gives them, or None if it cannot be trusted
    (unreadable, truncated, a duplicate name, or anything but folders and regular files)."""
    found: dict[str, Optional[str]] = {}
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            for member in tar:
                if member.name in found or not (member.isdir() or member.isreg()):
                    return None
                handle = tar.extractfile(member) if member.isreg() else None
                found[member.name] = _stream_sha256(handle) if handle else None
    except (tarfile.TarError, OSError, EOFError, zlib.error):
        return None
    return found


def make_tarball(bundle_dir: Path) -> Path:
    """``<bundle id>.tar.gz`` beside the directory, with the id as its single top-level folder."""
    bundle_dir = Path(bundle_dir)
    out = tarball_path(bundle_dir)
    expected = expected_members(bundle_dir)
    if out.is_file() and not out.is_symlink():
        if archive_members(out) == expected:
            return out
        log.warning("%s does not match %s; rebuilding it", out, bundle_dir)
    buffer = io.BytesIO()
    # The gzip header would otherwise name the temporary file.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for name in expected:
            path = bundle_dir / name.split("/", 1)[1]
            tar.add(path, arcname=name, recursive=False)
    atomic_write_bytes(out, buffer.getvalue(), mode=0o644)
    return out
