"""A per-device lock: ``<remote_dir>/.lock``, held for the whole of a deploy, rollback or profile.

Behaviour (chosen and documented): a second deploy/rollback/profile on the same device **fails fast**
with a :class:`LockHeld` error naming the holder (user, host, pid, start time, what it is doing) -
unless the caller passes ``wait`` seconds (``--wait-lock`` on the CLI), in which case it polls until
the lock is free and fails with the same message when the wait runs out.

The lock directory holds ``owner`` (JSON: who holds it), ``heartbeat`` and a marker file
``token.<token>`` naming this hold. It appears complete: it is built as ``.lock.new.<token>`` and
renamed to ``.lock`` (a rename onto a non-empty directory fails, so only one run can win).

**Heartbeat.** While the lock is held a background thread rewrites ``heartbeat`` every
``stale_after / 10`` seconds (at most every 30 s). Each beat records the device's boot id, its
uptime and its wall clock. A lock is judged on the time since its last beat, measured with the
device's *uptime* when the device has not rebooted since: a Pi without a hardware clock jumps its
wall clock at NTP sync, its uptime does not. Only after a device reboot (or for a lock written by
an older edgeship, which has no heartbeat) is the wall clock used. The thread uses its own SSH
channel per beat (paramiko multiplexes channels from several threads over one connection).

**When a lock is broken.**

* Its holder runs on this host and that process is gone, or
* its last heartbeat is older than ``stale_after`` seconds, or
* this very process holds it but could not release it earlier (the connection dropped in ``finally``).

It is **never** broken while its holder process is alive on this host, however old its heartbeat.
"This host" is proven by the kernel boot id plus the pid namespace recorded in the owner file, not
by the host name (containers share host names and a machine id; a pid means something only within
one boot and one pid namespace); the process is matched by pid *and* start time, so a reused pid
is not taken for the holder. An owner file without a boot id (older edgeship) cannot prove it is
from this host, so only its age counts.

**Breaking without a race.** Reading the owner and then moving the lock away would leave a window
in which the holder releases, another run takes a fresh lock, and the fresh lock is moved away.
Instead a lock is condemned by deleting its marker ``token.<token>``: ``rm`` of that exact name
succeeds for exactly one process and only while the directory is still that hold (a fresh lock has
another token). The condemned directory cannot be replaced meanwhile (it is not empty), so whoever
removed the marker renames it to ``.lock.dead.<suffix>`` and deletes it. Releasing uses the same
step, so a holder whose lock was broken never removes its successor's lock, and a holder checks its
marker before activating a release (:meth:`DeviceLock.ensure_held`). Locks written by an older
edgeship (no marker) are broken the old way: compare the owner text, then move; that window remains
only against those older versions.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Optional

from pipeline.clock import utc_now
from pipeline.deploy.layout import Layout
from pipeline.errors import DeployError
from pipeline.proc_identity import pid_alive, start_ticks
from pipeline.transport.base import Transport, sh_script

log = logging.getLogger(__name__)

DEFAULT_STALE_AFTER = 600.0
LOCK_VERSION = 2  # owner files with a heartbeat and a token marker
_ORPHANED: set[str] = set()  # tokens of locks this process failed to release
_TOKEN = re.compile(r"[0-9a-f]{32}")  # uuid4().hex: the only marker names ever passed to rm
_NOT_OURS = 3  # exit code of the beat/release scripts when the marker is gone

# "<boot id> <uptime s> <epoch s>" of the device; "none" where the device cannot tell.
_CLOCK = r"""
clock() {
  b=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null)
  u=$(cut -d. -f1 /proc/uptime 2>/dev/null)
  printf '%s %s %s\n' "${b:-none}" "${u:-none}" "$(date +%s)"
}
"""

# $1 lock  $2 owner JSON  $3 remote_dir  $4 token
_ACQUIRE = _CLOCK + r"""
mkdir -p "$3" || exit 1
new="$1.new.$4"
rm -rf "$new"
if ! { mkdir "$new" && printf '%s\n' "$2" > "$new/owner" && : > "$new/token.$4" && clock > "$new/heartbeat"; }; then
  rm -rf "$new"; echo failed; exit 0
fi
if ! [ -e "$1" ] && ! [ -L "$1" ] && mv -T "$new" "$1" 2>/dev/null; then echo acquired; exit 0; fi
rm -rf "$new"
if ! [ -e "$1" ] && ! [ -L "$1" ]; then echo retry; exit 0; fi
printf 'now\t%s\n' "$(clock)"
m=$(stat -c %Y "$1" 2>/dev/null) && printf 'mtime\t%s\n' "$m"
if [ -f "$1/heartbeat" ]; then printf 'beat\t%s\n' "$(cat "$1/heartbeat")"; fi
printf 'owner\n'
cat "$1/owner" 2>/dev/null
exit 0
"""

# $1 lock  $2 token
_BEAT = _CLOCK + r"""
[ -e "$1/token.$2" ] || exit 3
clock > "$1/beat.$2.$$" && mv -f "$1/beat.$2.$$" "$1/heartbeat"
"""

# $1 lock  $2 token  $3 suffix for the condemned directory
_RELEASE = r"""
rm "$1/token.$2" 2>/dev/null || exit 3
mv -T "$1" "$1.dead.$3" && rm -rf "$1.dead.$3"
"""

# $1 lock  $2 token  $3 heartbeat as judged  $4 suffix  $5 owner text as judged (older locks)
_BREAK = r"""
if [ -n "$2" ]; then
  cur=$(cat "$1/heartbeat" 2>/dev/null)
  [ "$cur" = "$3" ] || exit 2
  rm "$1/token.$2" 2>/dev/null || exit 1
else
  cur=$(cat "$1/owner" 2>/dev/null)
  [ "$cur" = "$5" ] || exit 1
fi
mv -T "$1" "$1.dead.$4" && rm -rf "$1.dead.$4"
"""


class LockHeld(DeployError):
    """Another edgeship run holds the device."""


class LockLost(DeployError):
    """This run's lock was broken by another run (its heartbeat had stopped for too long)."""


# ---------------------------------------------------------------------------------- this host
def _read(path: str) -> Optional[str]:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


def _pid_namespace() -> Optional[str]:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _host_identity() -> dict[str, Optional[str]]:
    return {"boot_id": _read("/proc/sys/kernel/random/boot_id"), "pid_ns": _pid_namespace()}


def holder_alive(owner: dict[str, Any]) -> Optional[bool]:
    """True/False if the owner's process is provably on this host (same boot, same pid namespace),
    else None: cannot tell."""
    mine = _host_identity()
    pid = owner.get("pid")
    if not mine["boot_id"] or owner.get("boot_id") != mine["boot_id"] or owner.get("pid_ns") != mine["pid_ns"]:
        return None
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    recorded = owner.get("pid_start")
    return pid_alive(pid, recorded if isinstance(recorded, int) else None)


# ---------------------------------------------------------------------------------- the device clock
@dataclass(frozen=True)
class DeviceClock:
    boot: Optional[str]
    uptime: Optional[int]
    epoch: Optional[int]

    @classmethod
    def parse(cls, text: str) -> Optional["DeviceClock"]:
        words = text.split()
        if len(words) != 3:
            return None
        return cls(None if words[0] == "none" else words[0], _int(words[1]), _int(words[2]))

    def since(self, earlier: "DeviceClock") -> Optional[int]:
        """Seconds from ``earlier`` to now: by uptime within one boot, else by the wall clock."""
        if self.boot and self.boot == earlier.boot and self.uptime is not None and earlier.uptime is not None:
            return max(0, self.uptime - earlier.uptime)
        if self.epoch is not None and earlier.epoch is not None:
            return max(0, self.epoch - earlier.epoch)
        return None


@dataclass
class HeldLock:
    """What the acquire script saw in a lock someone else holds."""

    raw_owner: str = ""
    beat: str = ""  # heartbeat text as read (the break checks it is unchanged)
    age: Optional[int] = None  # seconds since the last heartbeat (or since the lock was made)

    @property
    def owner(self) -> dict[str, Any]:
        return _parse_owner(self.raw_owner)


def parse_held(out: str) -> HeldLock:
    held = HeldLock()
    now: Optional[DeviceClock] = None
    mtime: Optional[int] = None
    lines = out.splitlines()
    for index, line in enumerate(lines):
        tag, _, value = line.partition("\t")
        if tag == "now":
            now = DeviceClock.parse(value)
        elif tag == "mtime":
            mtime = _int(value)
        elif tag == "beat":
            held.beat = value
        elif tag == "owner":
            held.raw_owner = "\n".join(lines[index + 1 :]).strip()
            break
    beat = DeviceClock.parse(held.beat)
    if now is not None and beat is not None:
        held.age = now.since(beat)
    elif now is not None and now.epoch is not None and mtime is not None:
        held.age = max(0, now.epoch - mtime)  # an older edgeship's lock: no heartbeat, only its mtime
    return held


# ---------------------------------------------------------------------------------- the lock
class _Heartbeat:
    """A daemon thread calling ``beat()`` every ``interval`` seconds until stopped or told the lock is lost."""

    def __init__(self, beat: Callable[[], int], interval: float, what: str):
        self._beat, self.interval, self.what = beat, interval, what
        self._stop = threading.Event()
        self.lost = False
        self._thread = threading.Thread(target=self._run, name=f"edgeship-lock-heartbeat {what}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        failing = False
        while not self._stop.wait(self.interval):
            try:
                code = self._beat()
            except Exception as exc:  # a dropped connection: the main thread will hear of it itself
                if not failing:
                    log.warning("could not refresh the lock %s: %s", self.what, exc)
                failing = True
                continue
            failing = False
            if code == _NOT_OURS:
                self.lost = True
                log.warning("the lock %s was broken by another run", self.what)
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


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
        heartbeat: Optional[float] = None,
    ):
        self.transport = transport
        self.path = Layout(transport).lock
        self.purpose = purpose
        self.target_name = target_name
        self.wait = wait
        self.stale_after = stale_after
        self.poll = poll
        self.heartbeat = heartbeat if heartbeat is not None else min(max(stale_after / 10, 0.05), 30.0)
        self.token = uuid.uuid4().hex
        pid = os.getpid()
        self.owner = json.dumps(
            {
                "host": socket.gethostname(),
                **_host_identity(),
                "pid": pid,
                "pid_start": start_ticks(pid),
                "user": _user(),
                "since": utc_now("seconds"),
                "purpose": purpose,
                "token": self.token,
                "lock_version": LOCK_VERSION,
            },
            sort_keys=True,
        )
        self.held = False
        self._beater: Optional[_Heartbeat] = None

    @property
    def where(self) -> str:
        return f"{self.path} on {self.transport.where}"

    def acquire(self) -> "DeviceLock":
        deadline = time.monotonic() + self.wait
        retries = 0
        while True:
            script = sh_script(_ACQUIRE, self.path, self.owner, self.transport.remote_dir, self.token)
            out = self.transport.run(script).stdout
            if out.startswith("acquired"):
                self.held = True
                self._beater = _Heartbeat(self._beat, self.heartbeat, self.where)
                return self
            if out.startswith("failed"):
                raise DeployError(f"Cannot create the lock {self.where} (disk full or read-only?).")
            if out.startswith("retry"):  # released between our rename and our look: try again
                retries += 1
                if retries > 50:
                    raise DeployError(f"Cannot take the lock {self.where}: `mv -T` of a new directory onto it keeps failing.")
                continue
            held = parse_held(out)
            reason = self._stale_reason(held)
            if reason:
                log.warning("breaking the stale lock %s: %s", self.where, reason)
                token = held.owner.get("token") if held.owner.get("lock_version") else ""
                if not isinstance(token, str) or not _TOKEN.fullmatch(token):
                    token = ""  # not a marker this edgeship writes: break it the old way
                script = sh_script(_BREAK, self.path, token, held.beat, uuid.uuid4().hex, held.raw_owner)
                if self.transport.run(script, check=False).ok:
                    continue
                # changed since we looked, or another run is breaking it right now: wait and look again
            if time.monotonic() >= deadline:
                raise LockHeld(self._held_message(held))
            time.sleep(max(0.01, min(self.poll, deadline - time.monotonic())))

    def _stale_reason(self, held: HeldLock) -> Optional[str]:
        owner = held.owner
        if owner.get("token") in _ORPHANED:
            return "this process took it earlier and could not release it (connection lost)"
        alive = holder_alive(owner) if owner else None
        if alive:
            return None
        if alive is False:
            return f"its holder, process {owner['pid']} on this host, no longer exists"
        if held.age is not None and held.age > self.stale_after:
            return f"its last heartbeat was {held.age} s ago (stale after {self.stale_after:g} s)"
        if not held.raw_owner.strip() and held.age is not None and held.age > 60:
            return "it has no owner file and is over a minute old"
        return None

    def _held_message(self, held: HeldLock) -> str:
        owner = held.owner
        if owner:
            holder = (
                f"{owner.get('user', '?')}@{owner.get('host', '?')} (pid {owner.get('pid', '?')}, "
                f"since {owner.get('since', '?')}, doing: {owner.get('purpose', '?')})"
            )
        else:
            holder = "an unknown process (the lock has no owner file yet)"
        waited = f" after waiting {self.wait:g} s" if self.wait > 0 else ""
        age_text = f", last heartbeat {held.age} s ago" if held.age is not None else ""
        return (
            f"{self.target_name} is busy{waited}: another edgeship run holds the device lock {self.path} on "
            f"{self.transport.where}{age_text} - {holder}. Wait for it to finish (or pass --wait-lock SECONDS). "
            f"If no such run exists any more, the lock is broken automatically {self.stale_after:g} s after its "
            f"last heartbeat, or remove the directory {self.path} on the device."
        )

    def _beat(self) -> int:
        return self.transport.run(sh_script(_BEAT, self.path, self.token), check=False, timeout=max(30.0, self.heartbeat)).exit_code

    def ensure_held(self) -> None:
        """Raise :class:`LockLost` unless the lock is still ours (call before an irreversible step)."""
        if not self.held:
            raise LockLost(f"Not holding the lock {self.where}.")
        lost = self._beater is not None and self._beater.lost
        if lost or self._beat() == _NOT_OURS:
            raise LockLost(
                f"The device lock {self.where} was broken by another run while this {self.purpose} held it "
                f"(its heartbeat had not reached the device for over {self.stale_after:g} s); stopping before "
                "changing anything else."
            )

    def release(self) -> None:
        if not self.held:
            return
        if self._beater is not None:
            self._beater.stop()
            self._beater = None
        try:
            script = sh_script(_RELEASE, self.path, self.token, uuid.uuid4().hex)
            result = self.transport.run(script, check=False, timeout=60)
            if result.exit_code != 0:
                log.warning("the lock %s was no longer ours at release", self.where)
        except Exception as exc:  # the connection may be gone: remember, so a rerun here can break it
            _ORPHANED.add(self.token)
            log.warning("could not release the lock %s: %s", self.where, exc)
        finally:
            self.held = False

    def __enter__(self) -> "DeviceLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _int(text: str) -> Optional[int]:
    try:
        return int(text.strip())
    except ValueError:
        return None


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
