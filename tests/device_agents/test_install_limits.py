"""``agent.py install`` archive limits: member count, sizes, ratio, sparse members, a full disk.

Each hostile archive is a real bundle's archive plus one change, installed by the real agent;
afterwards ``releases/`` must hold nothing half-written.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from tests.device_agents import tarballs
from tests.helpers.agent_runner import AGENT_PYTHON, MAIN_PYTHON, load_agent_module, run_agent

LIMIT_PYTHONS = [MAIN_PYTHON] + ([AGENT_PYTHON] if AGENT_PYTHON.exists() else [])


@pytest.fixture(scope="module")
def agent():
    return load_agent_module()


def _install(tmp_path: Path, members: list, *flags: str, python: Path = MAIN_PYTHON, raw: bytes = b""):
    tarball = tarballs.write(tmp_path / "bundle.tar.gz", raw or tarballs.gz(tarballs.tar_bytes(members)))
    releases = tmp_path / "releases"
    releases.mkdir(exist_ok=True)
    return run_agent("install", tarball, releases, *flags, python=python), releases


def _refused(result, releases: Path, kind: str) -> str:
    assert result.returncode == 3, result.stderr
    error = result.error
    assert error["kind"] == kind, error
    assert list(releases.iterdir()) == []
    return error["error"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--max-members", "3"], "more than 3 members"),
        (["--max-file-mb", "0.001"], "over the per-file limit"),
        (["--max-total-mb", "0.005"], "add up to more than the limit"),
    ],
    ids=["members", "file", "total"],
)
@pytest.mark.parametrize("python", LIMIT_PYTHONS, ids=lambda p: p.parent.parent.name)
def test_install_limits_are_flags(tiny_bundle_int8: Path, tmp_path: Path, flags: list, message: str, python: Path) -> None:
    members = tarballs.bundle_members(tiny_bundle_int8)
    result, releases = _install(tmp_path, members, *flags, python=python)
    text = _refused(result, releases, "archive_limits")
    assert message in text and flags[0] in text  # names the flag that raises it
    ok, _ = _install(tmp_path, members, python=python)  # the same archive under the defaults
    assert ok.json["bundle_id"] == tiny_bundle_int8.name


def test_a_bomb_is_refused_at_its_header_before_it_is_unpacked(tiny_bundle_int8: Path, tmp_path: Path) -> None:
    zeros = tarballs.file_member(f"{tiny_bundle_int8.name}/eval/padding.bin", bytes(256 << 20))
    members = tarballs.bundle_members(tiny_bundle_int8) + [zeros]
    raw = tarballs.gz(tarballs.tar_bytes(members), level=9)
    assert len(raw) < 2 << 20  # 256 MiB of zeros in well under 2 MiB: a ratio over 100
    started = time.monotonic()
    result, releases = _install(tmp_path, [], raw=raw)
    assert "times the archive" in _refused(result, releases, "archive_limits")
    assert time.monotonic() - started < 10  # refused from the header, not after unpacking 256 MiB


def test_a_long_name_header_claiming_gigabytes_is_never_read_into_memory(tiny_bundle_int8: Path, tmp_path: Path) -> None:
    """tarfile reads a GNU long-name header's data in one piece before returning any member."""
    longname = tarfile.TarInfo("././@LongLink")
    longname.type = tarfile.GNUTYPE_LONGNAME
    longname.size = 64 << 20
    raw = longname.tobuf(tarfile.GNU_FORMAT) + bytes(64 << 20) + tarballs.tar_bytes(tarballs.bundle_members(tiny_bundle_int8))
    result, releases = _install(tmp_path, [], raw=tarballs.gz(raw, level=1))
    assert "at once" in _refused(result, releases, "archive_limits")


def _gnu_sparse(bundle_id: str) -> list:
    member = tarballs.info(f"{bundle_id}/eval/sparse.bin", tarfile.GNUTYPE_SPARSE, b"hole")
    return [(member, b"hole")]


def _pax_sparse(bundle_id: str) -> list:
    member = tarballs.info(f"{bundle_id}/eval/sparse.bin", data=b"hole")
    member.pax_headers = {"GNU.sparse.map": "0,4", "GNU.sparse.size": "4096", "GNU.sparse.name": member.name}
    return [(member, b"hole")]


@pytest.mark.parametrize("sparse", [_gnu_sparse, _pax_sparse], ids=["gnu", "pax"])
def test_install_refuses_sparse_members(tiny_bundle_int8: Path, tmp_path: Path, sparse) -> None:
    members = tarballs.bundle_members(tiny_bundle_int8) + sparse(tiny_bundle_int8.name)
    raw = tarballs.gz(tarballs.tar_bytes(members, fmt=tarfile.GNU_FORMAT if sparse is _gnu_sparse else tarfile.PAX_FORMAT))
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        assert tar.getmembers()[-1].issparse()  # the archive really carries a sparse member
    result, releases = _install(tmp_path, [], raw=raw)
    assert "is a sparse file" in _refused(result, releases, "unsafe_archive")


def test_a_model_whose_size_differs_from_the_manifest_is_refused_before_writing(tiny_bundle_int8: Path, tmp_path: Path) -> None:
    """A consistent archive (its header matches its data), but not the size the manifest declares."""
    members = tarballs.bundle_members(tiny_bundle_int8)
    model = f"{tiny_bundle_int8.name}/model.tflite"
    data = next(payload for member, payload in members if member.name == model)
    result, releases = _install(tmp_path, tarballs.replace_data(members, model, data + b"\0" * 16))
    text = _refused(result, releases, "size_mismatch")
    assert f"as {len(data)} bytes, but the archive holds {len(data) + 16} bytes" in text


def test_a_member_yielding_more_than_its_header_is_refused(agent, tmp_path: Path) -> None:
    """tarfile never yields more than the header's size; the copy checks it anyway (fake tar)."""

    class Liar:
        def extractfile(self, member):
            return io.BytesIO(b"x" * (member.size + 5))

    member = tarballs.info("0123456789abcdef/model.tflite", data=b"x" * 10)
    with open(tmp_path / "out", "wb") as out, pytest.raises(agent.VerificationError, match="holds more bytes but its header says 10") as caught:
        agent._copy_member(Liar(), "t.tar.gz", member, out)
    assert caught.value.kind == "bad_archive"
    assert (tmp_path / "out").stat().st_size <= 10


# ------------------------------------------------------------------------------------ full disk


def _releases_with_tarball(tiny_bundle_int8: Path, tmp_path: Path) -> tuple[Path, Path]:
    tarball = tarballs.write(tmp_path / "b.tar.gz", tarballs.gz(tarballs.tar_bytes(tarballs.bundle_members(tiny_bundle_int8))))
    releases = tmp_path / "releases"
    releases.mkdir()
    return tarball, releases


def test_too_little_free_space_is_refused_before_writing(agent, tiny_bundle_int8: Path, tmp_path: Path, monkeypatch) -> None:
    tarball, releases = _releases_with_tarball(tiny_bundle_int8, tmp_path)
    real = os.statvfs(releases)
    fake = os.statvfs_result((real.f_bsize, 4096, real.f_blocks, 1, 1) + tuple(real)[5:])
    monkeypatch.setattr(agent.os, "statvfs", lambda path: fake)
    with pytest.raises(agent.AgentError) as caught:
        agent.install_bundle(str(tarball), str(releases))
    assert caught.value.kind == "disk_full" and caught.value.exit_code == 5
    assert "it needs " in str(caught.value) and "4.0 KB free" in str(caught.value)
    assert list(releases.iterdir()) == []


def test_a_disk_that_fills_while_writing_is_disk_full_not_internal(agent, tiny_bundle_int8: Path, tmp_path: Path, monkeypatch) -> None:
    tarball, releases = _releases_with_tarball(tiny_bundle_int8, tmp_path)

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(agent.os, "fsync", full)
    with pytest.raises(agent.AgentError) as caught:
        agent.install_bundle(str(tarball), str(releases))
    assert caught.value.kind == "disk_full"
    assert str(releases) in str(caught.value) and "free" in str(caught.value)
    assert list(releases.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"), reason="mounting a tiny tmpfs needs root")
def test_a_real_full_filesystem(tiny_bundle_int8: Path, tmp_path: Path) -> None:
    """A 16 KiB tmpfs: the bundle fits by bytes (the free-space check passes) but not by blocks."""
    tarball, _ = _releases_with_tarball(tiny_bundle_int8, tmp_path)
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount tmpfs here")
    try:
        releases = mount / "releases"
        result = run_agent("install", tarball, releases)
        assert result.returncode == 5
        error = result.error
        assert error["kind"] == "disk_full", error
        assert "it needs" in error["error"] and "free" in error["error"]
        assert list(releases.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mount)], check=True)


# -------------------------------------------------------------------------------- leftovers, ids


def test_install_removes_its_own_stale_broken_copies_only(tiny_bundle_int8: Path, tmp_path: Path) -> None:
    dead = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1  # no process can have this pid
    releases = tmp_path / "releases"
    stale = releases / f"{tiny_bundle_int8.name}.broken-{dead}"
    (stale / "eval").mkdir(parents=True)
    (stale / "eval" / "images.npy").write_bytes(b"old")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("mine")
    linked = releases / f"0123456789abcdef.broken-{dead}"
    linked.symlink_to(outside)
    alive = releases / f"0123456789abcdef.broken-{os.getpid()}"  # a live process's: not ours to take
    alive.mkdir()
    other = releases / "notes.broken-1"
    other.mkdir()
    tarball = tarballs.write(tmp_path / "b.tar.gz", tarballs.gz(tarballs.tar_bytes(tarballs.bundle_members(tiny_bundle_int8))))

    run_agent("install", tarball, releases).json
    assert sorted(p.name for p in releases.iterdir()) == sorted([tiny_bundle_int8.name, alive.name, other.name])
    assert (outside / "keep").read_text() == "mine"  # the symlink was removed, not followed


def test_a_top_folder_with_a_trailing_newline_is_not_a_bundle_id(agent, tiny_bundle_int8: Path) -> None:
    bundle_id = tiny_bundle_int8.name
    assert agent.BUNDLE_ID_RE.match(bundle_id) and not agent.BUNDLE_ID_RE.match(bundle_id + "\n")
    members = [tarballs.info(bundle_id + "\n", tarfile.DIRTYPE), tarballs.info(bundle_id + "\n/manifest.json", data=b"{}")]
    with pytest.raises(agent.VerificationError, match="is not a bundle id") as caught:
        agent.plan_extraction(members)
    assert caught.value.kind == "unsafe_archive"
