"""Packed artifacts: what a cluster task carries must come back exactly, or not at all."""

from __future__ import annotations

import dataclasses
import io
import json
import tarfile
from pathlib import Path

import pytest

from pipeline.execute.artifact_transfer import TransferError, install_artifact, pack_artifact
from pipeline.fsutil import sha256_bytes
from pipeline.stages.base import Artifact, load_artifact

RECIPE = "ab" * 32


def make_artifact(root: Path, stage: str = "distill", recipe: str = RECIPE) -> Artifact:
    path = root / stage / recipe
    (path / "nested").mkdir(parents=True)
    (path / "meta.json").write_text(json.dumps({"stage": stage, "recipe_id": recipe, "metrics": {"a": 1}}))
    (path / "student.keras").write_bytes(bytes(range(256)) * 40)
    (path / "nested" / "logits.npy").write_bytes(b"\x93NUMPY" + b"\x00" * 500)
    artifact = load_artifact(stage, recipe, root)
    assert artifact is not None
    return artifact


def tree(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_an_artifact_arrives_byte_for_byte_where_a_local_run_would_have_written_it(tmp_path: Path) -> None:
    source = make_artifact(tmp_path / "worker")
    packed = pack_artifact(source)
    installed = install_artifact(packed, tmp_path / "client")
    assert installed.path == tmp_path / "client" / "distill" / RECIPE
    assert tree(installed.path) == tree(source.path)
    assert installed.metrics == {"a": 1}
    assert pack_artifact(source).data == packed.data, "packing is deterministic"
    # installing again is a no-op, not an error
    assert install_artifact(packed, tmp_path / "client").path == installed.path


def test_a_damaged_transfer_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    packed = pack_artifact(make_artifact(tmp_path / "worker"))
    flipped = bytearray(packed.data)
    flipped[len(flipped) // 2] ^= 0xFF
    with pytest.raises(TransferError, match="different sha256"):
        install_artifact(dataclasses.replace(packed, data=bytes(flipped)), tmp_path / "client")
    assert not (tmp_path / "client").exists() or not any((tmp_path / "client").rglob("*.json"))


def test_an_artifact_claiming_another_recipe_is_refused(tmp_path: Path) -> None:
    packed = pack_artifact(make_artifact(tmp_path / "worker"))
    lie = dataclasses.replace(packed, recipe_id="cd" * 32)
    with pytest.raises(TransferError, match="holds distill/abababababab"):
        install_artifact(lie, tmp_path / "client")
    assert load_artifact("distill", "cd" * 32, tmp_path / "client") is None
    assert not list((tmp_path / "client" / "distill").iterdir()), "no temporary directory left behind"


def test_a_tar_that_escapes_its_directory_is_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        evil = b"pwned"
        info = tarfile.TarInfo("../../escaped.txt")
        info.size = len(evil)
        tar.addfile(info, io.BytesIO(evil))
    data = buffer.getvalue()
    packed = dataclasses.replace(pack_artifact(make_artifact(tmp_path / "worker")), data=data, sha256=sha256_bytes(data))
    with pytest.raises(TransferError, match="not a safe tar"):
        install_artifact(packed, tmp_path / "client" / "cache")
    assert not list(tmp_path.rglob("escaped.txt"))
