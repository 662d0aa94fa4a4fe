"""pipeline.safe_paths: what root may write, delete and trust in a results tree a user may own."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pipeline.errors import EdgeshipError
from pipeline.safe_paths import check_owned, confined, insecure_component, open_log, read_text, require_owned_dir, tail_text

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs chown")


@pytest.mark.parametrize("truncate", [False, True], ids=["append", "truncate"])
def test_open_log_refuses_a_link_without_touching_its_target(tmp_path: Path, truncate: bool) -> None:
    victim = tmp_path / "victim"
    victim.write_text("host file\n")
    (tmp_path / "build.log").symlink_to(victim)
    with pytest.raises(EdgeshipError, match="symbolic link"):
        open_log(tmp_path / "build.log", truncate=truncate)
    assert victim.read_text() == "host file\n"


def test_open_log_refuses_a_hard_link_before_truncating(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("host file\n")
    os.link(victim, tmp_path / "build.log")
    with pytest.raises(EdgeshipError, match="hard links"):
        open_log(tmp_path / "build.log", truncate=True)
    assert victim.read_text() == "host file\n"


def test_open_log_refuses_a_fifo_instead_of_hanging(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "sshd.log")
    with pytest.raises(EdgeshipError, match="not a regular file"):
        open_log(tmp_path / "sshd.log")


def test_open_log_appends_and_truncates_its_own_file(tmp_path: Path) -> None:
    log = tmp_path / "sub" / "build.log"
    with open_log(log, truncate=True) as out:
        out.write(b"one\n")
    with open_log(log) as out:
        out.write(b"two\n")
    assert read_text(log) == "one\ntwo\n" and read_text(log, 4) == "two\n" and tail_text(log, 1) == "two"
    with open_log(log, truncate=True) as out:
        out.write(b"three\n")
    assert log.read_text() == "three\n"


def test_tail_text_of_a_link_reads_nothing(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("root's secret\n")
    (tmp_path / "log").symlink_to(tmp_path / "secret")
    assert tail_text(tmp_path / "log") == "(no log)"


def test_confined_accepts_only_real_paths_strictly_inside(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (root / "up").symlink_to(tmp_path / "outside")
    (root / "slash").symlink_to("/")
    assert confined(root / "a" / "b", root) == Path(os.path.realpath(root / "a" / "b"))
    for path in (root, tmp_path / "outside", root / "up", root / "up" / "x", root / "slash", root / "a" / ".." / ".."):
        with pytest.raises(EdgeshipError, match="Refusing"):
            confined(path, root)
    with pytest.raises(EdgeshipError):
        confined(Path("/proc"), Path("/"))  # "/" is never a root of ours


def test_insecure_component_finds_what_others_could_replace(tmp_path: Path) -> None:
    assert insecure_component(tmp_path) is None  # /tmp is world-writable but sticky
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # writable by all, not sticky: anyone could rename what is inside
    (shared / "keys").mkdir()
    assert insecure_component(shared / "keys") == shared
    shared.chmod(0o777 | stat.S_ISVTX)
    assert insecure_component(shared / "keys") is None


@needs_root
def test_insecure_component_and_ownership_name_another_users_directory(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    (foreign / "keys").mkdir(parents=True)
    os.chown(foreign, 65534, 65534)
    assert insecure_component(foreign / "keys") == foreign
    with pytest.raises(EdgeshipError, match=rf"Refusing to use {foreign} .*owned by uid 65534"):
        require_owned_dir(foreign, "a test tree")
    check_owned(foreign / "keys", "root's own")  # root's subdirectory of it passes on its own


@needs_root
def test_root_refuses_a_directory_others_may_write(tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    loose.mkdir()
    loose.chmod(0o775)
    with pytest.raises(EdgeshipError, match="writable by group or others"):
        require_owned_dir(loose, "a test tree")


def test_require_owned_dir_refuses_a_link_and_creates_a_missing_dir(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(EdgeshipError, match="symbolic link"):
        require_owned_dir(tmp_path / "link", "a test tree")
    assert require_owned_dir(tmp_path / "new" / "dir", "a test tree").is_dir()
