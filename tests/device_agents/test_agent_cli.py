"""The device agent's command interface: doctor, verify, install, exit codes and error lines."""

from __future__ import annotations

import ast
import io
import json
import os
import sys
import tarfile
from pathlib import Path

import pytest

from pipeline.bundle.manifest import make_tarball, verify_bundle
from tests.helpers.agent_runner import (
    AGENT,
    AGENT_PYTHON,
    MAIN_PYTHON,
    copy_bundle,
    run_agent,
    skip_without_agent_venv,
)

DOCTOR_KEYS = {"python", "numpy", "runtimes", "not_probed", "selected_runtime", "machine", "os", "termux", "cores", "glibc"}


# ------------------------------------------------------------------------------------ the file


def test_agent_source_is_python37_syntax() -> None:
    source = AGENT.read_text(encoding="utf-8")
    ast.parse(source, feature_version=(3, 7))
    for newer in (".removeprefix(", ".removesuffix(", "dataclass(slots", "math.dist(", "shlex.join("):
        assert newer not in source, f"{newer} is not available on Python 3.7"


def test_agent_imports_only_stdlib_numpy_and_runtimes() -> None:
    tree = ast.parse(AGENT.read_text(encoding="utf-8"))
    allowed = set(sys.stdlib_module_names) | {"numpy", "ai_edge_litert", "tflite_runtime", "tensorflow", "onnxruntime"}
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert imported - allowed == set()
    assert {"ai_edge_litert", "tflite_runtime", "tensorflow"} <= imported


# -------------------------------------------------------------------------------------- doctor


def test_doctor_in_main_venv() -> None:
    report = run_agent("doctor").json
    assert set(report) == DOCTOR_KEYS
    assert set(report["runtimes"]) == {"ai_edge_litert", "tflite_runtime", "tensorflow"}
    assert report["runtimes"]["ai_edge_litert"] and report["runtimes"]["ai_edge_litert"][0].isdigit()
    assert report["runtimes"]["tflite_runtime"] is None
    assert report["runtimes"]["tensorflow"].startswith("2.")
    assert report["selected_runtime"] == "ai_edge_litert"
    assert report["numpy"] and report["python"].count(".") == 2
    assert report["termux"] is False
    assert isinstance(report["cores"], int) and report["cores"] >= 1
    assert report["machine"]
    assert report["glibc"] == os.confstr("CS_GNU_LIBC_VERSION").split()[1]  # what doctor picks wheels by


def test_doctor_prefer_stops_at_first_importable_runtime() -> None:
    report = run_agent("doctor", "--prefer", "tflite_runtime,ai_edge_litert,tensorflow").json
    assert report["runtimes"]["tflite_runtime"] is None
    assert report["runtimes"]["ai_edge_litert"][0].isdigit()
    assert "tensorflow" not in report["runtimes"] and report["not_probed"] == ["tensorflow"]
    assert report["selected_runtime"] == "ai_edge_litert"


def test_doctor_prefer_rejects_unknown_runtime() -> None:
    result = run_agent("doctor", "--prefer", "tvm")
    assert result.returncode == 2 and "tvm" in result.error["error"]


def test_doctor_prefer_accepts_onnxruntime() -> None:
    report = run_agent("doctor", "--prefer", "onnxruntime,ai_edge_litert").json
    assert report["selected_runtime"] == "onnxruntime" and report["runtimes"]["onnxruntime"][0].isdigit()


def test_doctor_reports_termux_from_prefix() -> None:
    report = run_agent("doctor", "--runtime", "tflite_runtime", env={"PREFIX": "/data/data/com.termux/files/usr"}).json
    assert report["termux"] is True
    assert report["os"].startswith("Android")
    assert report["selected_runtime"] is None  # forced to a runtime that is not installed here


@pytest.mark.agent_venv
@skip_without_agent_venv
def test_doctor_in_device_like_venv() -> None:
    report = run_agent("doctor", python=AGENT_PYTHON).json
    assert set(report) == DOCTOR_KEYS
    assert report["runtimes"] == {"ai_edge_litert": None, "tflite_runtime": "2.14.0", "tensorflow": None}
    assert report["selected_runtime"] == "tflite_runtime"
    assert report["numpy"].startswith("1.26")


# -------------------------------------------------------------------------------------- verify


@pytest.mark.parametrize("which", ["tiny_bundle_int8", "tiny_bundle_float32"])
def test_verify_accepts_real_bundles_like_the_host(which: str, request: pytest.FixtureRequest) -> None:
    bundle = request.getfixturevalue(which)
    result = run_agent("verify", bundle).json
    assert result == {"ok": True, "bundle_id": bundle.name}
    assert verify_bundle(bundle)["bundle_id"] == result["bundle_id"]  # host and agent agree


def _flip_byte(path: Path, offset: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0xFF
    path.write_bytes(bytes(data))


def test_verify_refuses_a_corrupted_model(tiny_bundle_int8: Path, tmp_path: Path) -> None:
    bundle = copy_bundle(tiny_bundle_int8, tmp_path)
    _flip_byte(bundle / "model.tflite")
    result = run_agent("verify", bundle)
    assert result.returncode == 3
    error = result.error
    assert error["kind"] == "verification"
    assert "model.tflite has sha256" in error["error"]
    assert "labels.txt" not in error["error"]  # only the damaged file is named
    assert result.stdout == ""


def test_verify_refuses_an_extra_file(tiny_bundle_int8: Path, tmp_path: Path) -> None:
    bundle = copy_bundle(tiny_bundle_int8, tmp_path)
    (bundle / "eval" / "extra.bin").write_bytes(b"not in the manifest")
    result = run_agent("verify", bundle)
    assert result.returncode == 3
    assert "eval/extra.bin is not listed in the manifest" in result.error["error"]


def test_verify_refuses_a_missing_file(tiny_bundle_int8: Path, tmp_path: Path) -> None:
    bundle = copy_bundle(tiny_bundle_int8, tmp_path)
    (bundle / "labels.txt").unlink()
    result = run_agent("verify", bundle)
    assert result.returncode == 3
    assert "labels.txt is missing" in result.error["error"]


def test_verify_refuses_a_wrong_bundle_id(tiny_bundle_int8: Path, tmp_path: Path) -> None:
    bundle = copy_bundle(tiny_bundle_int8, tmp_path)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["bundle_id"] = "0123456789abcdef"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    result = run_agent("verify", bundle)
    assert result.returncode == 3
    assert "bundle_id 0123456789abcdef does not match" in result.error["error"]


def test_verify_refuses_a_symlink_even_to_a_valid_file(tiny_bundle_int8: Path, tmp_path: Path) -> None:
    bundle = copy_bundle(tiny_bundle_int8, tmp_path)
    real = tmp_path / "elsewhere.txt"
    (bundle / "labels.txt").rename(real)
    (bundle / "labels.txt").symlink_to(real)
    result = run_agent("verify", bundle)
    assert result.returncode == 3
    assert "labels.txt is a symbolic link" in result.error["error"]


def test_verify_refuses_a_directory_without_manifest(tmp_path: Path) -> None:
    result = run_agent("verify", tmp_path)
    assert result.returncode == 3
    assert "manifest.json" in result.error["error"]


# ------------------------------------------------------------------------------------- install


def _tarball_of(bundle: Path, tmp_path: Path) -> Path:
    copy = copy_bundle(bundle, tmp_path / "src")
    return make_tarball(copy)


def test_install_extracts_verifies_and_renames(tiny_bundle_int8: Path, tmp_path: Path) -> None:
    tarball = _tarball_of(tiny_bundle_int8, tmp_path)
    releases = tmp_path / "releases"
    result = run_agent("install", tarball, releases).json
    bundle_id = tiny_bundle_int8.name
    assert result == {"ok": True, "bundle_id": bundle_id, "path": str(releases / bundle_id), "already_installed": False}
    assert sorted(p.name for p in releases.iterdir()) == [bundle_id]  # no .partial left
    assert verify_bundle(releases / bundle_id)["bundle_id"] == bundle_id
    assert run_agent("verify", releases / bundle_id).json["ok"] is True

    again = run_agent("install", tarball, releases).json
    assert again["already_installed"] is True and again["path"] == result["path"]


def test_install_replaces_a_damaged_existing_release(tiny_bundle_int8: Path, tmp_path: Path) -> None:
    tarball = _tarball_of(tiny_bundle_int8, tmp_path)
    releases = tmp_path / "releases"
    run_agent("install", tarball, releases).json
    _flip_byte(releases / tiny_bundle_int8.name / "model.tflite")
    result = run_agent("install", tarball, releases).json
    assert result["already_installed"] is False
    assert sorted(p.name for p in releases.iterdir()) == [tiny_bundle_int8.name]
    verify_bundle(releases / tiny_bundle_int8.name)


def _malicious_tarball(bundle: Path, path: Path, evil: tarfile.TarInfo, data: bytes = b"") -> Path:
    """A genuine bundle archive plus one hostile member."""
    with tarfile.open(path, "w:gz") as tar:
        for item in sorted(bundle.rglob("*")):
            tar.add(item, arcname=f"{bundle.name}/{item.relative_to(bundle).as_posix()}", recursive=False)
        evil.size = len(data)
        tar.addfile(evil, io.BytesIO(data) if data else None)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = 0o644
    return info


@pytest.mark.parametrize(
    "make_member, message",
    [
        (lambda bid, tmp: _member("../evil"), "'..'"),
        (lambda bid, tmp: _member(f"{bid}/../../evil"), "'..'"),
        (lambda bid, tmp: _member(str(tmp / "evil")), "absolute"),
        (lambda bid, tmp: _member(f"{bid}/evil", tarfile.SYMTYPE, str(tmp / "evil")), "symbolic link"),
        (lambda bid, tmp: _member(f"{bid}/evil", tarfile.LNKTYPE, f"{bid}/model.tflite"), "hard link"),
        (lambda bid, tmp: _member(f"{bid}/evil", tarfile.CHRTYPE), "device"),
        (lambda bid, tmp: _member("someotherdir/evil"), "exactly one top folder"),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink", "hardlink", "device", "second-top-folder"],
)
def test_install_refuses_a_malicious_tarball_and_leaves_nothing(
    tiny_bundle_int8: Path, tmp_path: Path, make_member, message: str
) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    tarball = _malicious_tarball(
        tiny_bundle_int8, tmp_path / f"{tiny_bundle_int8.name}.tar.gz", make_member(tiny_bundle_int8.name, tmp_path), b"pwned"
    )
    releases = workdir / "releases"
    releases.mkdir()
    result = run_agent("install", tarball, releases)
    assert result.returncode == 3
    error = result.error
    assert error["kind"] == "unsafe_archive"
    assert message in error["error"]
    assert list(releases.iterdir()) == []
    assert not (tmp_path / "evil").exists() and not (workdir / "evil").exists()


def test_install_of_a_corrupted_member_leaves_no_partial_and_no_release(tiny_bundle_int8: Path, tmp_path: Path) -> None:
    copy = copy_bundle(tiny_bundle_int8, tmp_path / "src")
    _flip_byte(copy / "model.tflite")
    tarball = make_tarball(copy)
    releases = tmp_path / "releases"
    releases.mkdir()
    result = run_agent("install", tarball, releases)
    assert result.returncode == 3
    assert "model.tflite has sha256" in result.error["error"]
    assert list(releases.iterdir()) == []


def test_install_of_a_truncated_archive_is_refused(tiny_bundle_int8: Path, tmp_path: Path) -> None:
    tarball = _tarball_of(tiny_bundle_int8, tmp_path)
    data = tarball.read_bytes()
    tarball.write_bytes(data[: len(data) // 2])
    releases = tmp_path / "releases"
    releases.mkdir()
    result = run_agent("install", tarball, releases)
    assert result.returncode == 3
    assert result.error["kind"] == "bad_archive"
    assert list(releases.iterdir()) == []


# ------------------------------------------------------------------------------ errors and exits


def test_forced_missing_runtime_exits_4(tiny_bundle_int8: Path) -> None:
    result = run_agent("profile", tiny_bundle_int8, "--target", "local", "--runtime", "tflite_runtime", python=MAIN_PYTHON)
    assert result.returncode == 4
    error = result.error
    assert error["kind"] == "no_runtime"
    assert "tflite_runtime" in error["error"]
    assert result.stdout == ""


def test_profile_verifies_before_measuring(tiny_bundle_int8: Path, tmp_path: Path) -> None:
    bundle = copy_bundle(tiny_bundle_int8, tmp_path)
    _flip_byte(bundle / "eval" / "images.npy", offset=-5)
    result = run_agent("profile", bundle, "--target", "local", "--runs", "1", "--min-seconds", "0")
    assert result.returncode == 3
    assert "eval/images.npy" in result.error["error"]


@pytest.mark.parametrize(
    "args",
    [[], ["profile", "somewhere"], ["profile", "b", "--target", "t", "--runs", "0"], ["install", "only-one-arg"], ["nonsense"]],
    ids=["no-command", "no-target", "zero-runs", "install-missing-arg", "unknown-command"],
)
def test_usage_errors_exit_2_with_one_json_line(args: list) -> None:
    result = run_agent(*args)
    assert result.returncode == 2
    assert result.error["kind"] == "usage"
    assert len(result.stderr.strip().splitlines()) == 1
