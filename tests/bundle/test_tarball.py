"""``<id>.tar.gz``: safe to ask for from several threads at once, never trusted just because it exists."""

from __future__ import annotations

import shutil
import tarfile
import threading
from pathlib import Path

from pipeline.bundle.manifest import make_tarball
from pipeline.bundle.tarball import archive_members, expected_members


def copy_bundle(bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle, tmp_path / bundle.name))


def test_tarball_has_single_top_folder(tiny_bundle_int8: Path, tmp_path: Path) -> None:
    bundle = copy_bundle(tiny_bundle_int8, tmp_path)
    tarball = make_tarball(bundle)
    assert tarball == tmp_path / f"{bundle.name}.tar.gz"
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    assert all(name.split("/")[0] == bundle.name for name in names)
    assert f"{bundle.name}/manifest.json" in names
    assert archive_members(tarball) == expected_members(bundle)
    assert tarball.stat().st_mode & 0o777 == 0o644


def test_four_threads_at_once_all_get_one_valid_tarball(tiny_bundle_int8: Path, tmp_path: Path) -> None:
    bundle = copy_bundle(tiny_bundle_int8, tmp_path)
    start = threading.Barrier(4)
    results: list[Path] = []
    errors: list[BaseException] = []

    def work() -> None:
        start.wait()
        try:
            results.append(make_tarball(bundle))
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert results == [tmp_path / f"{bundle.name}.tar.gz"] * 4
    assert archive_members(results[0]) == expected_members(bundle)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([bundle.name, results[0].name])  # no temporary left


def test_corrupted_tarball_is_replaced(tiny_bundle_int8: Path, tmp_path: Path) -> None:
    bundle = copy_bundle(tiny_bundle_int8, tmp_path)
    good = make_tarball(bundle).read_bytes()
    tarball = tmp_path / f"{bundle.name}.tar.gz"
    tarball.write_bytes(good[: len(good) // 2])  # truncated by a crash, say
    assert archive_members(tarball) is None
    assert make_tarball(bundle) == tarball
    assert archive_members(tarball) == expected_members(bundle)


def test_stale_tarball_of_other_contents_is_replaced(tiny_bundle_int8: Path, tmp_path: Path) -> None:
    """A readable archive under the right name, but its labels.txt differs from the directory's."""
    bundle = copy_bundle(tiny_bundle_int8, tmp_path)
    other = copy_bundle(tiny_bundle_int8, tmp_path / "other")
    (other / "labels.txt").write_text("dog\ncat\nbird\n")
    shutil.move(make_tarball(other), tmp_path / f"{bundle.name}.tar.gz")
    assert archive_members(tmp_path / f"{bundle.name}.tar.gz") != expected_members(bundle)
    tarball = make_tarball(bundle)
    assert archive_members(tarball) == expected_members(bundle)
    with tarfile.open(tarball) as tar:
        assert tar.extractfile(f"{bundle.name}/labels.txt").read() == (bundle / "labels.txt").read_bytes()


def test_matching_tarball_is_reused(tiny_bundle_int8: Path, tmp_path: Path) -> None:
    bundle = copy_bundle(tiny_bundle_int8, tmp_path)
    first = make_tarball(bundle)
    inode = first.stat().st_ino
    assert make_tarball(bundle).stat().st_ino == inode
