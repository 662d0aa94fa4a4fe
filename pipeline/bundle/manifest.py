"""The bundle contract (ARCHITECTURE.md): content-addressed directory plus manifest.json.

``bundle id`` = first 16 hex digits of sha256 over the sorted "path sha256" lines of every file
except manifest.json itself. The device agent re-implements ``verify`` with the standard library
only; tests check that both sides agree.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from pipeline.bundle.tarball import make_tarball  # noqa: F401  (callers import it from here)
from pipeline.errors import BundleError
from pipeline.fsutil import atomic_directory, atomic_write_json, sha256_file

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


def hash_files(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` except the top-level manifest, keyed by posix path.

    Links and special files are refused, as the device agent refuses them: a bundle must mean the
    same thing on both sides.
    """
    root = Path(root)
    files = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink() or not (path.is_dir() or path.is_file()):
            raise BundleError(f"Bundle {root} contains {rel}, which is a link or special file; bundles hold regular files only.")
        if path.is_file() and rel != MANIFEST:
            files[rel] = sha256_file(path)
    return files


def compute_bundle_id(files: dict[str, str]) -> str:
    lines = "".join(f"{path} {digest}\n" for path, digest in sorted(files.items()))
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()[:16]


def read_manifest(bundle_dir: Path) -> dict[str, Any]:
    path = Path(bundle_dir) / MANIFEST
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"Bundle {bundle_dir} has no {MANIFEST}.") from None
    except (OSError, ValueError) as exc:
        raise BundleError(f"Bundle manifest {path} is unreadable or not JSON: {exc}.") from None


def verify_bundle(bundle_dir: Path) -> dict[str, Any]:
    """Return the manifest if every file matches its hash and nothing extra is present."""
    bundle_dir = Path(bundle_dir)
    manifest = read_manifest(bundle_dir)
    expected = manifest.get("files") or {}
    actual = hash_files(bundle_dir)
    problems = []
    for path, digest in sorted(expected.items()):
        if path not in actual:
            problems.append(f"{path} is missing")
        elif actual[path] != digest:
            problems.append(f"{path} has sha256 {actual[path][:12]}... but the manifest says {digest[:12]}...")
    for path in sorted(set(actual) - set(expected)):
        problems.append(f"{path} is not listed in the manifest")
    if compute_bundle_id(expected) != manifest.get("bundle_id"):
        problems.append(f"bundle_id {manifest.get('bundle_id')} does not match the listed files")
    if problems:
        raise BundleError(f"Bundle {bundle_dir} failed verification and must not be trusted: " + "; ".join(problems) + ".")
    return manifest


def finalize_bundle(staging: Path, manifest: dict[str, Any], bundles_root: Path) -> Path:
    """Hash ``staging``, write its manifest and move it to ``bundles_root/<bundle id>`` atomically.

    ``manifest`` carries everything but ``files``, ``bundle_id`` and ``schema_version``, which are
    computed here so they can never disagree with the contents.
    """
    files = hash_files(staging)
    bundle_id = compute_bundle_id(files)
    full = dict(manifest, schema_version=SCHEMA_VERSION, bundle_id=bundle_id, files=files)
    final = Path(bundles_root) / bundle_id
    if final.is_dir():
        shutil.rmtree(staging, ignore_errors=True)
        return final
    atomic_write_json(Path(staging) / MANIFEST, full)
    with atomic_directory(final) as tmp:
        for item in Path(staging).iterdir():
            shutil.move(str(item), tmp / item.name)
    shutil.rmtree(staging, ignore_errors=True)
    return final
