"""Root-run emulator code on a results tree someone else may control: a link is removed or refused,
never followed, and nothing outside the emulator's own directory is signalled, unmounted or written.

No test here aims a signalling function at a real directory outside the tree with signals live:
refusals are checked against a temporary "outside" directory, and a link to "/" only with
``os.kill``, ``subprocess.run`` and ``subprocess.Popen`` replaced by tripwires.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pipeline.emu import EmuLayout, build_image, device, host, mounts, rootfs, stop
from pipeline.errors import EdgeshipError

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="exercises the root-only entry points and chown")


@pytest.fixture
def tripwires(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Every signal, mount/umount command or process launch is recorded and blocked."""
    calls: list[tuple] = []

    def blocked(kind: str):
        def trip(*args, **kwargs):
            calls.append((kind, args))
            raise AssertionError(f"{kind}{args} was attempted")

        return trip

    monkeypatch.setattr(os, "kill", blocked("os.kill"))
    monkeypatch.setattr(os, "killpg", blocked("os.killpg"))
    monkeypatch.setattr(subprocess, "run", blocked("subprocess.run"))
    monkeypatch.setattr(subprocess, "Popen", blocked("subprocess.Popen"))
    return calls


@pytest.fixture
def layout(tmp_path: Path) -> EmuLayout:
    emu = EmuLayout(tmp_path / "emu")
    emu.root.mkdir()
    return emu


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory outside the emulator's tree that must come through untouched."""
    path = tmp_path / "outside"
    (path / "rootfs" / "dev").mkdir(parents=True)
    (path / "rootfs" / "precious").write_text("keep me")
    return path


def _intact(outside: Path) -> bool:
    return (outside / "rootfs" / "precious").read_text() == "keep me" and (outside / "rootfs" / "dev").is_dir()


def test_linked_leftovers_are_unlinked_and_their_target_left_alone(layout: EmuLayout, outside: Path, tripwires) -> None:
    for name in (".image-x.partial", ".image-old-7"):
        (layout.root / name).symlink_to(outside)
    rootfs.remove_leftovers(layout, lambda _: None)
    assert not os.path.lexists(layout.root / ".image-x.partial") and not os.path.lexists(layout.root / ".image-old-7")
    assert _intact(outside) and tripwires == []


def test_leftover_linked_to_the_host_root_signals_and_unmounts_nothing(layout: EmuLayout, tripwires) -> None:
    (layout.root / ".image-x.partial").symlink_to("/")
    rootfs.remove_leftovers(layout, lambda _: None)
    assert not os.path.lexists(layout.root / ".image-x.partial")
    assert tripwires == [] and Path("/proc/self").exists()


def test_remove_tree_refuses_a_path_outside_its_root_before_any_signal(layout: EmuLayout, outside: Path, tripwires) -> None:
    with pytest.raises(EdgeshipError, match="outside"):
        mounts.remove_tree(outside, within=layout.root)
    (layout.root / "via").symlink_to(outside)
    with pytest.raises(EdgeshipError, match="symbolic link"):
        mounts.remove_tree(layout.root / "via" / "rootfs", within=layout.root)
    assert _intact(outside) and tripwires == []


def test_process_and_mount_helpers_refuse_a_linked_rootfs(layout: EmuLayout, outside: Path, tripwires) -> None:
    layout.image.symlink_to(outside)  # image/rootfs now resolves to outside/rootfs
    for act in (
        lambda: mounts.end_processes(layout.rootfs, within=layout.root),
        lambda: mounts.unbind_all(layout.rootfs, within=layout.root),
        lambda: mounts.bind_system_dirs(layout.rootfs, within=layout.root),
    ):
        with pytest.raises(EdgeshipError, match="symbolic link"):
            act()
    with pytest.raises(EdgeshipError, match="root directory"):
        mounts.processes_in(Path("/"))  # read-only, but "/" would name every process on the host
    assert _intact(outside) and tripwires == []


def test_status_reports_a_linked_rootfs_instead_of_scanning_it(layout: EmuLayout, outside: Path) -> None:
    layout.image.symlink_to(outside)
    found = device.status(layout)
    assert not found.running and found.processes == [] and found.mounts == []
    assert any("symbolic link" in problem for problem in found.problems)


@needs_root
def test_emu_stop_with_a_leftover_linked_to_root_only_removes_the_link(layout: EmuLayout, tripwires) -> None:
    """The issue's scenario: `results/emu/.image-x.partial -> /` then `edgeship emu stop` as root."""
    (layout.root / ".image-x.partial").symlink_to("/")
    stop(layout)
    assert not os.path.lexists(layout.root / ".image-x.partial") and tripwires == []


@needs_root
def test_emu_build_refuses_a_linked_build_log_before_touching_it(layout: EmuLayout, tmp_path: Path, monkeypatch) -> None:
    victim = tmp_path / "victim"
    victim.write_text("host file\n")
    layout.build_log.symlink_to(victim)
    monkeypatch.setattr(host, "prepare_host", lambda *_: pytest.fail("got past the checks"))
    with pytest.raises(EdgeshipError, match="symbolic link"):
        build_image(layout)
    assert victim.read_text() == "host file\n"


def test_build_steps_never_append_through_a_linked_build_log(layout: EmuLayout, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("host file\n")
    layout.build_log.symlink_to(victim)
    with pytest.raises(EdgeshipError, match="symbolic link"):
        rootfs._run(["true"], layout.build_log, "a build step", timeout=10)
    assert victim.read_text() == "host file\n"


def test_device_sshd_log_is_not_followed(layout: EmuLayout, tmp_path: Path, tripwires) -> None:
    victim = tmp_path / "victim"
    victim.write_text("host file\n")
    layout.run.mkdir()
    layout.sshd_log.symlink_to(victim)
    with pytest.raises(EdgeshipError, match="symbolic link"):
        device._launch_sshd(layout, lambda _: None)
    assert victim.read_text() == "host file\n" and tripwires == []


@needs_root
@pytest.mark.parametrize("entry", [None, "downloads"])
def test_root_refuses_an_emu_tree_another_user_owns(layout: EmuLayout, monkeypatch, entry: str | None) -> None:
    foreign = layout.root if entry is None else layout.root / entry
    foreign.mkdir(exist_ok=True)
    os.chown(foreign, 65534, 65534)
    monkeypatch.setattr(host, "prepare_host", lambda *_: pytest.fail("got past the checks"))
    with pytest.raises(EdgeshipError, match=r"owned by uid 65534.*chown"):
        build_image(layout)
    with pytest.raises(EdgeshipError, match=r"owned by uid 65534"):
        with layout.locked():
            pass
