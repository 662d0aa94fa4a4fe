"""What holds a root filesystem: the host's /proc, /sys, /dev and /dev/pts bound into it, and the
processes chrooted into it.

These binds are why the root filesystem must never be deleted blindly: ``rm -rf`` of a rootfs with
/dev bound inside it deletes the host's device nodes. :func:`remove_tree` ends the processes inside,
unmounts, and refuses while anything is still mounted below the path.

Every function that signals, mounts or unmounts takes ``within``, the emulator's own directory, and
checks first (:func:`pipeline.safe_paths.confined`) that its path is a real directory strictly
inside it: the path comes from a results tree another user may own, and ``.image-x.partial -> /``
would otherwise select /proc, /sys, /dev and every process on the host.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterable

from pipeline.errors import EdgeshipError
from pipeline.safe_paths import confined, remove_link

#: mount order; teardown is the reverse
SYSTEM_BINDS: tuple[str, ...] = ("proc", "sys", "dev", "dev/pts")


def _unescape(field: str) -> str:
    """/proc/self/mounts writes space, tab, newline and backslash as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def _not_root(path: Path) -> str:
    """The real path; "/" is refused even by the read-only helpers (it would name the whole host)."""
    real = os.path.realpath(path)
    if real == "/":
        raise EdgeshipError(f"Refusing to look for mounts or processes of {path}: it is the host's root directory.")
    return real


def mounts_under(path: Path) -> list[Path]:
    """Mount points at or below ``path``, in mount order (parents before children)."""
    base = _not_root(path)
    found: list[Path] = []
    with open("/proc/self/mounts", encoding="utf-8", errors="replace") as handle:
        for line in handle:
            fields = line.split()
            if len(fields) < 2:
                continue
            point = _unescape(fields[1])
            if point == base or point.startswith(base.rstrip("/") + "/"):
                found.append(Path(point))
    return found


def _mount(source: str, point: Path) -> None:
    result = subprocess.run(
        ["mount", "--bind", source, str(point)], capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    if result.returncode != 0:
        raise EdgeshipError(
            f"Cannot bind {source} onto {point} for the emulated device: {result.stderr.strip() or 'mount failed'}. "
            "Mounting needs root with CAP_SYS_ADMIN (in a container: run it with --privileged)."
        )


def bind_system_dirs(rootfs: Path, *, within: Path) -> None:
    """Bind /proc, /sys, /dev and /dev/pts into ``rootfs`` (those not yet bound); idempotent."""
    rootfs = confined(rootfs, within)
    present = set(mounts_under(rootfs))
    for name in SYSTEM_BINDS:
        point = rootfs / name
        if point in present:
            continue
        point.mkdir(parents=True, exist_ok=True)
        confined(point, within)  # mount(8) follows a link at the mount point
        _mount(f"/{name}", point)


def unbind_all(rootfs: Path, *, within: Path) -> list[Path]:
    """Unmount everything below ``rootfs`` in reverse mount order; returns what was unmounted."""
    rootfs = confined(rootfs, within)
    done: list[Path] = []
    for point in reversed(mounts_under(rootfs)):
        result = subprocess.run(["umount", str(point)], capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            # something still uses it (a process we could not stop): detach now, the kernel frees it later
            result = subprocess.run(["umount", "--lazy", str(point)], capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise EdgeshipError(
                f"Cannot unmount {point}: {result.stderr.strip() or 'umount failed'}. Find what uses it with "
                f"`fuser -vm {point}`, stop that, then run `edgeship emu stop` again."
            )
        done.append(point)
    return done


def processes_in(rootfs: Path) -> list[int]:
    """PIDs of every process whose root directory is ``rootfs`` (sshd, sessions, agent runs, dpkg)."""
    want = _not_root(rootfs)
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if os.readlink(entry / "root") == want:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _signal_all(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def end_processes(
    rootfs: Path, extra: Iterable[int] = (), log: Callable[[str], None] = lambda _: None, *, within: Path
) -> None:
    """SIGTERM everything chrooted into ``rootfs`` (and ``extra``); SIGKILL what is left after 5 s."""
    rootfs = confined(rootfs, within)
    pids = list(dict.fromkeys([*extra, *processes_in(rootfs)]))
    if not pids:
        return
    log(f"stopping {len(pids)} process(es) inside {rootfs}: {' '.join(map(str, pids))}")
    _signal_all(pids, signal.SIGTERM)
    if not _wait_until_empty(rootfs, 5.0):
        _signal_all(processes_in(rootfs), signal.SIGKILL)
        _wait_until_empty(rootfs, 5.0)


def _wait_until_empty(rootfs: Path, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while processes_in(rootfs):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def remove_tree(path: Path, *, within: Path) -> None:
    """``rm -rf path`` that first ends its processes and unmounts its binds; refuses if a mount remains.

    A link at ``path`` is unlinked and its target left alone; a path outside ``within`` (or reached
    through a link) is refused before any process is signalled or anything unmounted.
    """
    path = Path(path)
    if path.is_symlink() or (os.path.lexists(path) and not path.is_dir()):
        remove_link(path, within)
        return
    if not path.exists():
        return
    confined(path, within)
    for rootfs in (path, path / "rootfs"):
        if rootfs.is_dir() and not rootfs.is_symlink():
            end_processes(rootfs, within=within)
    unbind_all(path, within=within)
    left = mounts_under(path)
    if left:
        raise EdgeshipError(
            f"Refusing to delete {path}: {', '.join(map(str, left))} is still mounted below it, and deleting "
            "through a bind mount would delete the host's files. Unmount it first (`umount PATH`)."
        )
    shutil.rmtree(path)
