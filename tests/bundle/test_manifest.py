"""The bundle contract: content-addressed ids and verification that refuses tampering."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline.bundle.manifest import (
    SCHEMA_VERSION,
    compute_bundle_id,
    finalize_bundle,
    hash_files,
    seal_manifest,
    verify_bundle,
)
from pipeline.errors import BundleError
from tests.helpers.bundles import MANIFEST_TAMPERING, edit_manifest


def copy_bundle(bundle: Path, tmp_path: Path) -> Path:
    target = tmp_path / bundle.name
    shutil.copytree(bundle, target)
    return target


def test_manifest_matches_contract(tiny_bundle_int8: Path) -> None:
    manifest = verify_bundle(tiny_bundle_int8)
    assert manifest["bundle_id"] == tiny_bundle_int8.name == compute_bundle_id(manifest)
    assert manifest["schema_version"] == SCHEMA_VERSION == 2
    assert manifest["files"] == hash_files(tiny_bundle_int8)
    assert len(manifest["bundle_id"]) == 16
    assert set(manifest["files"]) == {"model.tflite", "labels.txt", "eval/images.npy", "eval/labels.npy", "eval/host_predictions.npy"}
    model = manifest["model"]
    assert model["quantization"] == "int8" and model["bytes"] == (tiny_bundle_int8 / "model.tflite").stat().st_size
    assert model["inputs"][0]["dtype"] == "int8" and model["inputs"][0]["scale"] > 0
    assert manifest["preprocessing"]["layout"] == "NHWC"
    assert manifest["eval"]["count"] == 24


def test_bundle_id_depends_on_contents_not_on_creation_time(tiny_bundle_int8: Path, tmp_path: Path) -> None:
    import time

    import numpy as np

    from pipeline.bundle.writer import write_bundle

    manifest = verify_bundle(tiny_bundle_int8)

    def rewrite(root: Path, labels: list[str]) -> Path:
        return write_bundle(
            bundles_root=root, profile_name="tiny-test",
            model_bytes=(tiny_bundle_int8 / "model.tflite").read_bytes(), quantization="int8",
            inputs=manifest["model"]["inputs"], outputs=manifest["model"]["outputs"],
            preprocessing={k: v for k, v in manifest["preprocessing"].items() if k != "layout"}, labels=labels,
            eval_images=np.load(tiny_bundle_int8 / "eval/images.npy"), eval_labels=np.load(tiny_bundle_int8 / "eval/labels.npy"),
            host_predictions=np.load(tiny_bundle_int8 / "eval/host_predictions.npy"),
            host_metrics=manifest["host_metrics"], provenance=manifest["provenance"],
        )

    first = rewrite(tmp_path / "a", ["class0", "class1", "class2"])
    time.sleep(1.1)
    second = rewrite(tmp_path / "b", ["class0", "class1", "class2"])
    renamed = rewrite(tmp_path / "c", ["shirt", "class1", "class2"])
    assert first.name == second.name == tiny_bundle_int8.name
    assert json.loads((first / "manifest.json").read_text())["created"] != json.loads((second / "manifest.json").read_text())["created"]
    assert renamed.name != first.name


@pytest.mark.parametrize(
    "tamper, message",
    [
        (lambda b: (b / "model.tflite").write_bytes((b / "model.tflite").read_bytes()[:-1] + b"\x00"), "model.tflite has sha256"),
        (lambda b: (b / "labels.txt").unlink(), "labels.txt is missing"),
        (lambda b: (b / "extra.bin").write_bytes(b"x"), "extra.bin is not listed"),
    ],
)
def test_verification_refuses_tampering(tiny_bundle_int8: Path, tmp_path: Path, tamper, message: str) -> None:
    bundle = copy_bundle(tiny_bundle_int8, tmp_path)
    tamper(bundle)
    with pytest.raises(BundleError, match=message):
        verify_bundle(bundle)


@pytest.mark.parametrize("case", MANIFEST_TAMPERING, ids=[c.name for c in MANIFEST_TAMPERING])
def test_verification_refuses_manifest_tampering(tiny_bundle_int8: Path, tmp_path: Path, case) -> None:
    bundle = case.apply(copy_bundle(tiny_bundle_int8, tmp_path))
    with pytest.raises(BundleError, match=case.message):
        verify_bundle(bundle)


def test_resealed_bundle_in_a_directory_named_by_another_id_is_refused(tiny_bundle_int8: Path, tmp_path: Path) -> None:
    """A consistent manifest and id, but under the old id's name: a release must be named by its id."""
    bundle = copy_bundle(tiny_bundle_int8, tmp_path)
    resealed = edit_manifest(bundle, lambda m: m["preprocessing"].update(scale=1.0), reseal=True)
    assert resealed["bundle_id"] != bundle.name
    with pytest.raises(BundleError, match=f"the directory is named {bundle.name} but holds bundle {resealed['bundle_id']}"):
        verify_bundle(bundle)
    assert verify_bundle(bundle.rename(bundle.with_name(resealed["bundle_id"])))["preprocessing"]["scale"] == 1.0


def test_schema_1_bundle_is_refused_with_a_rebuild_hint(tiny_bundle_int8: Path, tmp_path: Path) -> None:
    """What an older edgeship wrote: schema 1, id over the file list only."""
    import hashlib

    bundle = copy_bundle(tiny_bundle_int8, tmp_path)
    files = hash_files(bundle)
    old_id = hashlib.sha256("".join(f"{p} {d}\n" for p, d in sorted(files.items())).encode()).hexdigest()[:16]
    bundle = bundle.rename(bundle.with_name(old_id))
    edit_manifest(bundle, lambda m: m.update(schema_version=1, bundle_id=old_id))
    with pytest.raises(BundleError, match=r"schema_version is 1 but this edgeship reads 2.*Rebuild it with `edgeship build`"):
        verify_bundle(bundle)


def test_bundle_with_a_non_finite_number_is_not_written(tiny_bundle_int8: Path, tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    shutil.copytree(tiny_bundle_int8, staging)
    (staging / "manifest.json").unlink()
    manifest = {k: v for k, v in json.loads((tiny_bundle_int8 / "manifest.json").read_text()).items() if k != "files"}
    manifest["host_metrics"] = dict(manifest["host_metrics"], accuracy=float("nan"))
    with pytest.raises(BundleError, match=r"manifest\.host_metrics\.accuracy is NaN or infinite"):
        finalize_bundle(staging, manifest, tmp_path / "bundles")
    assert not (tmp_path / "bundles").exists()


def test_sealed_manifest_is_what_gets_written(tiny_bundle_int8: Path, tmp_path: Path) -> None:
    """Values that are not plain JSON (numpy numbers, tuples) are hashed as they are written."""
    import numpy as np

    staging = tmp_path / "staging"
    shutil.copytree(tiny_bundle_int8, staging)
    (staging / "manifest.json").unlink()
    manifest = {k: v for k, v in json.loads((tiny_bundle_int8 / "manifest.json").read_text()).items() if k != "files"}
    manifest["host_metrics"] = dict(manifest["host_metrics"], parameters=np.int64(5), shape=(1, 2))
    bundle = finalize_bundle(staging, manifest, tmp_path / "bundles")
    written = verify_bundle(bundle)
    assert written == seal_manifest(manifest, hash_files(bundle)) and written["host_metrics"]["shape"] == [1, 2]


def test_rewritten_manifest_with_forged_hash_is_refused(tiny_bundle_int8: Path, tmp_path: Path) -> None:
    bundle = copy_bundle(tiny_bundle_int8, tmp_path)
    (bundle / "model.tflite").write_bytes(b"not a model")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["model.tflite"] = hash_files(bundle)["model.tflite"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="bundle_id"):
        verify_bundle(bundle)

