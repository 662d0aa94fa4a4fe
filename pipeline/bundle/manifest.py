"""The bundle contract (docs/ARCHITECTURE.md): a content-addressed directory plus manifest.json.

``bundle id`` = first 16 hex digits of sha256 over the canonical manifest: the manifest without
``bundle_id`` and ``created``, as JSON with sorted keys, no whitespace and ASCII escapes. The
manifest's ``files`` lists the sha256 of every other file, so the id covers the files and
everything the manifest says about them (preprocessing, eval, labels, model). The device agent
re-implements this with the standard library only; tests check that both sides agree.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path
from typing import Any, Iterator, Mapping

from pipeline.bundle.tarball import make_tarball  # noqa: F401  (callers import it from here)
from pipeline.errors import BundleError
from pipeline.fsutil import atomic_directory, atomic_write_json, sha256_file

SCHEMA_VERSION = 2
MANIFEST = "manifest.json"
# Not hashed: ``bundle_id`` is the hash itself; ``created`` changes on every build, and the same
# model and data must give the same id so that a redeploy of an unchanged bundle is skipped.
UNHASHED_KEYS = ("bundle_id", "created")


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


def canonical_manifest(manifest: Mapping[str, Any]) -> bytes:
    """The bytes the id hashes; strict JSON, so a NaN or infinity cannot be part of a bundle."""
    body = {key: value for key, value in manifest.items() if key not in UNHASHED_KEYS}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")


def compute_bundle_id(manifest: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_manifest(manifest)).hexdigest()[:16]


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is not a finite number")
    return value


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def parse_manifest(text: str) -> Any:
    """``json.loads`` that refuses NaN and infinities (the agent parses the same way)."""
    return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)


def read_manifest(bundle_dir: Path) -> dict[str, Any]:
    path = Path(bundle_dir) / MANIFEST
    try:
        manifest = parse_manifest(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"Bundle {bundle_dir} has no {MANIFEST}.") from None
    except (OSError, ValueError) as exc:
        raise BundleError(f"Bundle manifest {path} is unreadable or not strict JSON: {exc}.") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"Bundle manifest {path} is not a JSON object.")
    return manifest


def schema_problem(version: Any) -> str | None:
    """Why this edgeship cannot read a bundle of ``version``, or None if it can."""
    if type(version) is int and version == SCHEMA_VERSION:
        return None
    if type(version) is int and version < SCHEMA_VERSION:
        return (
            f"its schema_version is {version} but this edgeship reads {SCHEMA_VERSION}: it was built by an older "
            "edgeship, whose bundle id did not cover the manifest. Rebuild it with `edgeship build`"
        )
    return f"its schema_version is {version!r} but this edgeship reads {SCHEMA_VERSION}; update edgeship or rebuild the bundle"


def verify_bundle(bundle_dir: Path) -> dict[str, Any]:
    """Return the manifest if every file matches its hash, nothing extra is present, the id fits
    the manifest, and the directory is named by that id (a release is found by its name)."""
    bundle_dir = Path(bundle_dir)
    manifest = read_manifest(bundle_dir)
    schema = schema_problem(manifest.get("schema_version"))
    if schema:
        raise BundleError(f"Bundle {bundle_dir} cannot be used: {schema}.")
    problems = []
    expected = manifest.get("files")
    if not isinstance(expected, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in expected.items()):
        problems.append("manifest 'files' is not a {path: sha256} object")
        expected = {}
    actual = hash_files(bundle_dir)
    for path, digest in sorted(expected.items()):
        if path not in actual:
            problems.append(f"{path} is missing")
        elif actual[path] != digest:
            problems.append(f"{path} has sha256 {actual[path][:12]}... but the manifest says {digest[:12]}...")
    for path in sorted(set(actual) - set(expected)):
        problems.append(f"{path} is not listed in the manifest")
    bundle_id = manifest.get("bundle_id")
    if compute_bundle_id(manifest) != bundle_id:
        problems.append(f"bundle_id {bundle_id} does not match the manifest and its files")
    if bundle_id != bundle_dir.name:
        problems.append(f"the directory is named {bundle_dir.name} but holds bundle {bundle_id} (a bundle directory is named by its id)")
    if problems:
        raise BundleError(f"Bundle {bundle_dir} failed verification and must not be trusted: " + "; ".join(problems) + ".")
    return manifest


def _non_finite(value: Any, where: str) -> Iterator[str]:
    if isinstance(value, float) and not math.isfinite(value):
        yield where
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _non_finite(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _non_finite(item, f"{where}[{index}]")


def seal_manifest(manifest: Mapping[str, Any], files: dict[str, str]) -> dict[str, Any]:
    """``manifest`` with ``schema_version``, ``files`` and the ``bundle_id`` they and it hash to.

    The manifest goes through JSON first, so the id is computed over exactly what is written.
    """
    full = {key: value for key, value in manifest.items() if key != "bundle_id"}
    full.update(schema_version=SCHEMA_VERSION, files=files)
    bad = list(_non_finite(full, "manifest"))
    if bad:
        raise BundleError(f"Cannot write a bundle whose {', '.join(bad)} is NaN or infinite: the manifest is strict JSON.")
    full = json.loads(json.dumps(full, default=str))
    full["bundle_id"] = compute_bundle_id(full)
    return full


def finalize_bundle(staging: Path, manifest: dict[str, Any], bundles_root: Path) -> Path:
    """Hash ``staging``, write its manifest and move it to ``bundles_root/<bundle id>`` atomically.

    ``manifest`` carries everything but ``files``, ``bundle_id`` and ``schema_version``, which are
    computed here so they can never disagree with the contents.
    """
    full = seal_manifest(manifest, hash_files(staging))
    final = Path(bundles_root) / full["bundle_id"]
    if final.is_dir():
        shutil.rmtree(staging, ignore_errors=True)
        return final
    atomic_write_json(Path(staging) / MANIFEST, full)
    with atomic_directory(final) as tmp:
        for item in Path(staging).iterdir():
            shutil.move(str(item), tmp / item.name)
    shutil.rmtree(staging, ignore_errors=True)
    return final
