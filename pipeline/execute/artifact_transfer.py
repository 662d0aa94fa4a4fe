"""Stage outputs as bytes, so a task can carry them to a machine without our ``results/cache``.

A packed artifact is an uncompressed tar of its cache directory (``.npy`` arrays and ``.keras``
zips gain little from compression) with its sha256. Installing checks the hash and the recipe id
in ``meta.json`` and commits through ``atomic_directory``, so a cache written this way is the one
a local run would have written, and a torn or tampered transfer never becomes a cache entry.
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import EdgeshipError
from pipeline.fsutil import atomic_directory, sha256_bytes
from pipeline.stages.base import META, Artifact, load_artifact


class TransferError(EdgeshipError):
    """A packed artifact arrived damaged or is not what it claims to be."""


@dataclass(frozen=True)
class PackedArtifact:
    stage: str
    recipe_id: str
    sha256: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)


def pack_artifact(artifact: Artifact) -> PackedArtifact:
    """The artifact's directory as one tar, entries sorted and owner-free so equal trees pack equally."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(p for p in artifact.path.rglob("*")):
            info = tar.gettarinfo(str(path), arcname=path.relative_to(artifact.path).as_posix())
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if info.isfile():
                with path.open("rb") as handle:
                    tar.addfile(info, handle)
            elif info.isdir():
                tar.addfile(info)
            # links and devices have no place in a stage output: left out
    data = buffer.getvalue()
    return PackedArtifact(artifact.stage, artifact.recipe_id, sha256_bytes(data), data)


def install_artifact(packed: PackedArtifact, root: Path) -> Artifact:
    """Make ``packed`` a cache entry under ``root`` (a no-op if it is one already) and return it."""
    existing = load_artifact(packed.stage, packed.recipe_id, root)
    if existing is not None:
        return existing
    if sha256_bytes(packed.data) != packed.sha256:
        raise TransferError(
            f"The {packed.stage} artifact {packed.recipe_id[:12]} arrived with a different sha256 than it was "
            f"sent with; it was not installed into {root}. Rerun the build."
        )
    final = root / packed.stage / packed.recipe_id
    with atomic_directory(final) as tmp:
        try:
            with tarfile.open(fileobj=io.BytesIO(packed.data), mode="r:") as tar:
                tar.extractall(tmp, filter="data")  # no absolute paths, no '..', no links out
        except tarfile.TarError as exc:
            raise TransferError(f"The {packed.stage} artifact {packed.recipe_id[:12]} is not a safe tar ({exc}); it was not installed into {root}.") from None
        try:
            meta = json.loads((tmp / META).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise TransferError(f"The {packed.stage} artifact {packed.recipe_id[:12]} has no readable {META} ({exc}).") from None
        if meta.get("recipe_id") != packed.recipe_id or meta.get("stage") != packed.stage:
            raise TransferError(
                f"The {packed.stage} artifact {packed.recipe_id[:12]} holds {meta.get('stage')}/{str(meta.get('recipe_id'))[:12]}; "
                f"it was not installed into {root}."
            )
    installed = load_artifact(packed.stage, packed.recipe_id, root)
    assert installed is not None
    return installed
