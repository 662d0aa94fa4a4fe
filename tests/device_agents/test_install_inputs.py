"""What install and profile refuse in a bundle's manifest and eval data before any inference."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tests.device_agents import tarballs
from tests.helpers.agent_runner import PYTHONS, copy_bundle, load_agent_module, run_agent

PROFILE_ARGS = ("--target", "local", "--runs", "1", "--min-seconds", "0", "--warmup", "0")


@pytest.fixture(scope="module")
def agent():
    return load_agent_module()


@pytest.mark.parametrize(
    "key, value",
    [("mean", math.nan), ("std", math.inf), ("scale", -math.inf), ("std", 0.0), ("mean", "zero"), ("mean", [0.0, math.nan])],
    ids=["mean-nan", "std-inf", "scale-minus-inf", "std-zero", "mean-string", "mean-channel-nan"],
)
def test_install_refuses_unusable_preprocessing(tiny_bundle_int8: Path, tmp_path: Path, key: str, value) -> None:
    """The manifest is edited but not resealed: a NaN cannot be sealed, and the refusal must name the key."""
    members = tarballs.bundle_members(tiny_bundle_int8)
    name = f"{tiny_bundle_int8.name}/manifest.json"
    data = tarballs.manifest_of(members)
    data["preprocessing"][key] = value
    members = tarballs.replace_data(members, name, json.dumps(data).encode())
    tarball = tarballs.write(tmp_path / "b.tar.gz", tarballs.gz(tarballs.tar_bytes(members)))
    releases = tmp_path / "releases"
    result = run_agent("install", tarball, releases)
    assert result.returncode == 3, result.stderr
    error = result.error
    assert error["kind"] == "bad_manifest", error
    assert f"{key} is" in error["error"]
    assert not releases.exists() or list(releases.iterdir()) == []


@pytest.mark.parametrize("python, runtime", PYTHONS)
@pytest.mark.parametrize(
    "preprocessing, message",
    [({"std": 0.0}, "dividing by 0"), ({"scale": 1e300}, "overflows float32"), ({"mean": [0.0, 1.0]}, "2 values for 1 channels")],
    ids=["std-zero", "overflow", "channels"],
)
def test_profile_refuses_unusable_preprocessing_of_a_sealed_bundle(
    agent, tiny_bundle_int8: Path, tmp_path: Path, preprocessing: dict, message: str, python: Path, runtime: str
) -> None:
    """Finite values a manifest can carry legitimately sealed, but that would feed inf or NaN to the model."""
    copy = copy_bundle(tiny_bundle_int8, tmp_path)
    bundle = tarballs.reseal(agent, copy, lambda m: m["preprocessing"].update(preprocessing))
    assert run_agent("verify", bundle, python=python).json["ok"] is True
    result = run_agent("profile", bundle, *PROFILE_ARGS, python=python)
    assert result.returncode == 3, result.stderr
    assert result.error["kind"] == "bad_manifest"
    assert message in result.error["error"]


def _with_labels(agent, bundle: Path, tmp_path: Path, shape: tuple) -> Path:
    copy = copy_bundle(bundle, tmp_path)
    labels = np.load(copy / "eval" / "labels.npy")
    np.save(copy / "eval" / "labels.npy", np.repeat(labels.reshape(-1, 1), shape[1], axis=1) if len(shape) == 2 else labels)
    return tarballs.reseal(agent, copy)


@pytest.mark.parametrize("python, runtime", PYTHONS)
def test_profile_reads_column_labels_as_a_vector(agent, tiny_bundle_int8: Path, tmp_path: Path, python: Path, runtime: str) -> None:
    """(N, 1) labels against N predictions used to broadcast to an N x N comparison."""
    plain = run_agent("profile", tiny_bundle_int8, *PROFILE_ARGS, python=python).json["accuracy"]
    column = _with_labels(agent, tiny_bundle_int8, tmp_path, (-1, 1))
    assert np.load(column / "eval" / "labels.npy").ndim == 2
    accuracy = run_agent("profile", column, *PROFILE_ARGS, python=python).json["accuracy"]
    assert accuracy["top1"] == plain["top1"] and accuracy["count"] == plain["count"]
    assert accuracy["top1"] > 0.5  # the tiny model learns its task; an N x N mean would be near 1/3


def test_profile_refuses_labels_of_another_shape(agent, tiny_bundle_int8: Path, tmp_path: Path) -> None:
    bundle = _with_labels(agent, tiny_bundle_int8, tmp_path, (-1, 2))
    result = run_agent("profile", bundle, *PROFILE_ARGS)
    assert result.returncode == 5
    error = result.error
    assert error["kind"] == "bundle"
    assert "eval/labels.npy" in error["error"] and "expected (N,) or (N, 1)" in error["error"]
