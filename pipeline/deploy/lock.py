"""A per-device lock: ``<remote_dir>/.lock`` (``mkdir`` is atomic on every POSIX file system).

Behaviour (chosen and documented): a second deploy/rollback/profile on the same device **fails fast**
with a :class:`LockHeld` error naming the holder (user, host, pid, start time, what it is doing) -
unless the caller passes ``wait`` seconds (``--wait-lock`` on the CLI), in which case it polls until
the lock is free and fails with the same message when the wait runs out.

Inside the lock directory an ``owner`` file records who holds it. A lock is *stale*, and is broken
automatically, when

* it is older than ``stale_after`` seconds (device clock: lock mtime vs ``date +%s``), or
* its holder ran on this host and that process no longer exists, or
* this very process holds it but could not release it earlier (the connection dropped in ``finally``).

Breaking renames the lock away only if its owner file still says what we read, so two processes
recovering the same stale lock cannot both win. The lock is always released in ``finally``.
"""

from __future__ import annotations

import datetime as _dt
import getpass
import json
import logging
import os
import socket
import time
import uuid
from typing import Any, Optional

from pipeline.deploy.layout import Layout
from pipeline.errors import DeployError
from pipeline.transport.base import Transport, sh_script

log = logging.getLogger(__name__)

DEFAULT_STALE_AFTER = 3600.0
_ORPHANED: set[str] = set()  # tokens of locks this process failed to release

_ACQUIRE = r"""
mkdir -p "$3" || exit 1
if mkdir "$1" 2>/dev/null; then
  printf '%s\n' "$2" > "$1/owner" && echo acquired && exit 0
  rm -rf "$1"; echo failed; exit 0
fi
now=$(date +%s)
m=$(stat -c %Y "$1" 2>/dev/null || echo "$now")
printf 'held\t%s\n' "$((now - m))"
cat "$1/owner" 2>/dev/null
exit 0
"""

_BREAK = r"""
cur=$(cat "$1/owner" 2>/dev/null)
[ "$cur" = "$2" ] || exit 1
mv "$1" "$1.broken.$$" && rm -rf "$1.broken.$$"
"""

_RELEASE = r"""
cur=$(cat "$1/owner" 2>/dev/null)
[ "$cur" = "$2" ] || exit 1
rm -rf "$1"
"""


class LockHeld(DeployError):
    """Another edgeship run holds the device."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class DeviceLock:
    def __init__(
        self,
        transport: Transport,
        purpose: str,
        *,
        target_name: str = "the target",
        wait: float = 0.0,
        stale_after: float = DEFAULT_STALE_AFTER,
        poll: float = 0.5,
    ):
        self.transport = transport
        self.path = Layout(transport).lock
        self.purpose = purpose
        self.target_name = target_name
        self.wait = wait
        self.stale_after = stale_after
        self.poll = poll
        self.token = uuid.uuid4().hex
        self.owner = json.dumps(
            {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "user": _user(),
                "since": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "purpose": purpose,
                "token": self.token,
            },
            sort_keys=True,
        )
        self.held = False

    def acquire(self) -> "DeviceLock":
        deadline = time.monotonic() + self.wait
        while True:
            out = self.transport.run(sh_script(_ACQUIRE, self.path, self.owner, self.transport.remote_dir)).stdout
            if out.startswith("acquired"):
                self.held = True
                return self
            if out.startswith("failed"):
                raise DeployError(
                    f"Cannot write the lock owner file in {self.path} on {self.transport.where} (disk full or read-only?)."
                )
            age, raw_owner = _parse_held(out)
            reason = self._stale_reason(age, raw_owner)
            if reason:
                log.warning("breaking the stale lock %s on %s: %s", self.path, self.transport.where, reason)
                self.transport.run(sh_script(_BREAK, self.path, raw_owner), check=False)
                continue
            if time.monotonic() >= deadline:
                raise LockHeld(self._held_message(age, raw_owner))
            time.sleep(max(0.01, min(self.poll, deadline - time.monotonic())))

    def _stale_reason(self, age: Optional[int], raw_owner: str) -> Optional[str]:
        owner = _parse_owner(raw_owner)
        if age is not None and age > self.stale_after:
            return f"it is {age} s old (stale after {self.stale_after:g} s)"
        if owner.get("token") in _ORPHANED:
            return "this process took it earlier and could not release it (connection lost)"
        if owner and owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int):
            if owner["pid"] != os.getpid() and not _pid_alive(owner["pid"]):
                return f"its holder, process {owner['pid']} on this host, no longer exists"
        if not raw_owner.strip() and age is not None and age > 60:
            return "it has no owner file and is over a minute old"
        return None

    def _held_message(self, age: Optional[int], raw_owner: str) -> str:
        owner = _parse_owner(raw_owner)
        if owner:
            holder = (
                f"{owner.get('user', '?')}@{owner.get('host', '?')} (pid {owner.get('pid', '?')}, "
                f"since {owner.get('since', '?')}, doing: {owner.get('purpose', '?')})"
            )
        else:
            holder = "an unknown process (the lock has no owner file yet)"
        waited = f" after waiting {self.wait:g} s" if self.wait > 0 else ""
        age_text = f", {age} s ago" if age is not None else ""
        return (
            f"{self.target_name} is busy{waited}: another edgeship run holds the device lock {self.path} on "
            f"{self.transport.where}{age_text} - {holder}. Wait for it to finish (or pass --wait-lock SECONDS). "
            f"If no such run exists any more, the lock is broken automatically after {self.stale_after:g} s, or "
            f"remove the directory {self.path} on the device."
        )

    def release(self) -> None:
        if not self.held:
            return
        try:
            result = self.transport.run(sh_script(_RELEASE, self.path, self.owner), check=False, timeout=60)
            if result.exit_code != 0:
                log.warning("the lock %s on %s was no longer ours at release", self.path, self.transport.where)
        except Exception as exc:  # the connection may be gone: remember, so a rerun here can break it
            _ORPHANED.add(self.token)
            log.warning("could not release the lock %s on %s: %s", self.path, self.transport.where, exc)
        finally:
            self.held = False

    def __enter__(self) -> "DeviceLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _parse_held(out: str) -> tuple[Optional[int], str]:
    lines = out.splitlines()
    age: Optional[int] = None
    if lines and lines[0].startswith("held\t"):
        try:
            age = int(lines[0].split("\t", 1)[1])
        except ValueError:
            age = None
        lines = lines[1:]
    return age, "\n".join(lines).strip()


def _parse_owner(raw: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # pragma: no cover - no passwd entry
        return str(os.getuid())
