"""The transport interface: how the host talks to a device.

The deploy logic is written once against :class:`Transport`; ``ssh`` (paramiko) and ``local``
(subprocess) implement it. Commands are argv lists, never shell strings: a transport that has to go
through a shell (SSH) quotes every word with :func:`shlex.quote`. Compound remote operations use
:func:`sh_script`, which passes the arguments as positional parameters of a *fixed* script, so a
path can never be interpolated into shell code.
"""

from __future__ import annotations

import posixpath
import shlex
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from pipeline.errors import DeployError

#: ``progress(bytes_sent, bytes_total)`` during an upload.
ProgressCallback = Callable[[int, int], None]

#: sh's exit code for "command not found"; the local transport reports a missing program the same way.
COMMAND_NOT_FOUND = 127


@dataclass(frozen=True)
class Result:
    exit_code: int
    stdout: str
    stderr: str
    argv: tuple[str, ...] = field(default=(), repr=False)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class RemoteCommandError(DeployError):
    """A remote command exited non-zero (raised by ``run(..., check=True)``)."""

    def __init__(self, message: str, result: Result):
        super().__init__(message)
        self.result = result


class CommandTimeout(DeployError):
    """A remote command ran longer than its timeout and was killed."""


def sh_script(script: str, *args: str) -> list[str]:
    """``sh -c SCRIPT sh ARG...``: the script refers to its arguments only as "$1", "$2", ..."""
    return ["sh", "-c", script, "sh", *[str(a) for a in args]]


def remove_command(paths: Sequence[str]) -> list[str]:
    """``rm -f`` of each path (missing ones are fine), every path a positional argument."""
    return sh_script('rm -f -- "$@"', *paths)


def shell_join(argv: Sequence[str]) -> str:
    """One command line for a remote POSIX shell; every word is quoted."""
    return shlex.join([str(a) for a in argv])


def short(text: str, limit: int = 800) -> str:
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]


class Transport(ABC):
    """run / put / get / close, plus the device directory this target owns.

    ``remote_dir`` is the absolute device directory (``~`` and relative paths resolved the way the
    transport defines); :meth:`path` joins names under it.
    """

    #: Human-readable place, used in every error message (``pi@raspberrypi.local:22``).
    where: str = "device"

    def __init__(self, remote_dir: str, command_timeout: float = 600.0):
        self._raw_remote_dir = remote_dir
        self._remote_dir: Optional[str] = None
        self.command_timeout = command_timeout

    # -- interface -------------------------------------------------------------------------
    @abstractmethod
    def run(self, argv: Sequence[str], timeout: Optional[float] = None, check: bool = True) -> Result:
        """Run ``argv`` on the device. ``check`` raises :class:`RemoteCommandError` on non-zero exit;
        a command running past ``timeout`` (default: the target's command_timeout) is killed and
        raises :class:`CommandTimeout`."""

    @abstractmethod
    def put(self, local_path: Path, remote_path: str, progress: Optional[ProgressCallback] = None) -> None:
        """Copy a local file to the device atomically: it is written to ``remote_path + '.partial'``
        and renamed, so ``remote_path`` is either absent, the old file or the complete new one.

        A put that fails while the device is still reachable removes its ``.partial``. One cut off
        together with the connection cannot: the next put of the same path replaces it, and
        :meth:`remove_partials` removes it otherwise."""

    @abstractmethod
    def get(self, remote_path: str, local_path: Path) -> None:
        """Copy a device file to ``local_path`` atomically."""

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def _resolve_remote_dir(self, raw: str) -> str:
        """Turn the configured remote_dir into an absolute path on the device."""

    @abstractmethod
    def home(self) -> str:
        """The login user's home directory on the device."""

    def expand_home(self, path: str) -> str:
        """``~`` and ``~/x`` under the device home (quoted words are never expanded by a shell)."""
        return join_home(self.home(), path) if path == "~" or path.startswith("~/") else path

    # -- shared helpers --------------------------------------------------------------------
    def remove_partials(self, remote_paths: Sequence[str]) -> None:
        """Remove the ``<path>.partial`` that a put of each path may have left when the connection was
        cut mid-upload (none there is fine); a failure raises :class:`RemoteCommandError`."""
        if remote_paths:
            self.run(remove_command([f"{path}.partial" for path in remote_paths]))

    @property
    def remote_dir(self) -> str:
        if self._remote_dir is None:
            self._remote_dir = self._resolve_remote_dir(self._raw_remote_dir)
        return self._remote_dir

    def check_result(self, result: Result, what: Optional[str] = None) -> Result:
        if result.exit_code != 0:
            command = what or shell_join(result.argv)
            detail = short(result.stderr) or short(result.stdout) or "no output"
            raise RemoteCommandError(
                f"On {self.where}, `{command}` failed with exit code {result.exit_code}: {detail}", result
            )
        return result

    def __enter__(self) -> "Transport":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def join_home(home: str, raw: str) -> str:
    """``~``, ``~/x`` and relative paths are under ``home``; absolute paths stay as they are."""
    if raw == "~":
        return posixpath.normpath(home)
    if raw.startswith("~/"):
        raw = raw[2:]
    elif raw.startswith("~"):
        raise DeployError(
            f"remote_dir '{raw}' uses another user's home (~user), which edgeship does not expand; "
            "write the absolute path instead."
        )
    return posixpath.normpath(posixpath.join(home, raw))
