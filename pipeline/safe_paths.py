"""Paths root may act on: never through a symbolic link, never outside its own tree, never in a
directory another user controls.

``results/`` belongs to whoever checked the project out, but ``sudo edgeship emu ...`` and a lab run
as root write, truncate, delete and signal under it. A link planted there (``.image-x.partial -> /``,
``build.log -> /etc/shadow``) would aim those actions at the host, so every such path is checked
here first. The checks cannot stop a user who owns ``results/`` itself from swapping
``results/emu`` for another directory between the check and the action; what they guarantee is
that the tree root acts on is root's own and that no single path in it is a link.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

from pipeline.errors import EdgeshipError

_TAIL_BYTES = 64 * 1024


def _link_error(path: Path) -> EdgeshipError:
    return EdgeshipError(
        f"{path} is a symbolic link. edgeship never follows links in its own results tree (it may run as root "
        f"there, and a link would point that at the host). Remove the link (`rm {path}`) and retry."
    )


def open_nofollow(path: Path, flags: int, mode: int = 0o644) -> int:
    """``os.open`` that refuses a link as the last component, a non-regular file and a hard-linked one.

    ``O_TRUNC`` is refused: truncating at open would happen before the checks (use :func:`open_log`).
    """
    if flags & os.O_TRUNC:
        raise ValueError("open_nofollow does not truncate; truncate after the checks (open_log does)")
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode)  # NONBLOCK: a FIFO never hangs us
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _link_error(path) from None
        if exc.errno == errno.ENXIO:
            raise EdgeshipError(f"{path} is not a regular file (a FIFO or socket?); remove it and retry.") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise EdgeshipError(f"{path} is not a regular file; remove it and retry.")
        if info.st_nlink > 1:  # a hard link to a file elsewhere (e.g. one of the host's) is a link too
            raise EdgeshipError(f"{path} has {info.st_nlink} hard links; edgeship only writes files of its own. Remove it and retry.")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_log(path: Path, *, truncate: bool = False) -> BinaryIO:
    """A log file opened for appending (or emptied first) without following a link."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (0 if truncate else os.O_APPEND)
    fd = open_nofollow(path, flags)
    if truncate:
        os.ftruncate(fd, 0)
    return os.fdopen(fd, "wb", buffering=0)


def read_text(path: Path, offset: int = 0) -> str:
    """The text of a file from byte ``offset`` on, read without following a link."""
    with os.fdopen(open_nofollow(Path(path), os.O_RDONLY), "rb") as handle:
        handle.seek(offset)
        return handle.read().decode("utf-8", errors="replace")


def tail_text(path: Path, lines: int = 12) -> str:
    """The last ``lines`` lines of a log for an error message; "(no log)" when it cannot be read safely."""
    try:
        size = os.lstat(path).st_size
        text = read_text(path, max(0, size - _TAIL_BYTES))
    except (OSError, EdgeshipError):
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _owner_problem(path: Path, info: os.stat_result) -> str | None:
    euid = os.geteuid()
    if info.st_uid != euid:
        return f"is owned by uid {info.st_uid}, not by the user running edgeship (uid {euid})"
    if euid == 0 and stat.S_ISDIR(info.st_mode) and info.st_mode & 0o022:
        return f"is writable by group or others (mode {stat.S_IMODE(info.st_mode):o})"
    return None


def check_owned(path: Path, what: str) -> None:
    """Refuse ``path`` (when it exists) if it is a link or belongs to another user; for root also a
    directory that others may write. Missing paths pass: whoever creates them later is us."""
    path = Path(path)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode):
        raise _link_error(path)
    problem = _owner_problem(path, info)
    if problem:
        raise EdgeshipError(
            f"Refusing to use {path} ({what}): it {problem}. Running edgeship there could let that user aim "
            f"its actions at the host. Hand it over (`sudo chown -R {os.geteuid()} {path}` and `chmod go-w` "
            "its directories) or remove it, then retry."
        )


def require_owned_dir(path: Path, what: str) -> Path:
    """``path`` as a directory of our own: created when missing, else checked with :func:`check_owned`."""
    path = Path(path)
    check_owned(path, what)
    path.mkdir(mode=0o755, parents=True, exist_ok=True)
    check_owned(path, what)  # created meanwhile by someone else?
    if not path.is_dir():
        raise EdgeshipError(f"{path} ({what}) is not a directory; remove it and retry.")
    return path


def confined(path: Path, root: Path) -> Path:
    """The real path of ``path`` if it lies strictly below ``root`` with no link on the way; else an error.

    Call it before ending processes in, unmounting below or deleting a directory: every step of
    those acts on the resolved location, so a link must be refused before the first one.
    """
    top = Path(os.path.abspath(root))
    lexical = Path(os.path.abspath(path))
    real_top = os.path.realpath(top)
    try:
        below = lexical.relative_to(top)
    except ValueError:
        raise EdgeshipError(f"Refusing to act on {path}: it is outside {root}, the only tree edgeship manages here.") from None
    current = top
    for part in below.parts:
        current = current / part
        if current.is_symlink():
            raise EdgeshipError(
                f"Refusing to act on {path}: {current} is a symbolic link (to {os.readlink(current)}). edgeship never "
                f"follows links below {root}; remove the link (`rm {current}`) and retry."
            )
    real = os.path.realpath(lexical)
    if real == "/" or real_top == "/" or not below.parts or not real.startswith(real_top.rstrip("/") + "/"):
        raise EdgeshipError(f"Refusing to act on {path} (really {real}): it is not strictly inside {root} ({real_top}).")
    return Path(real)


def remove_link(path: Path, root: Path) -> None:
    """Unlink a link (or file) found below ``root`` where a directory was expected; its target stays."""
    parent = Path(os.path.abspath(path)).parent
    if parent != Path(os.path.abspath(root)):
        confined(parent, root)
    os.unlink(path)


def insecure_component(path: Path) -> Path | None:
    """The first directory or file on the way to ``path`` that another user could replace, or None.

    Every component, lexical and resolved, must be owned by root or us; a directory others may
    write is only accepted when it is sticky (like /tmp), where they cannot rename what is ours.
    """
    allowed = {0, os.geteuid()}
    for chain in (Path(os.path.abspath(path)), Path(os.path.realpath(path))):
        for component in [*reversed(chain.parents), chain]:
            try:
                info = os.lstat(component)
            except OSError:
                return component
            if info.st_uid not in allowed:
                return component
            sticky_dir = stat.S_ISDIR(info.st_mode) and info.st_mode & stat.S_ISVTX
            if not stat.S_ISLNK(info.st_mode) and info.st_mode & 0o022 and not sticky_dir:
                return component
    return None
