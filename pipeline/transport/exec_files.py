"""Files over exec channels, for SSH servers that refuse the sftp subsystem (dropbear on many
embedded images has no sftp-server).

``put`` streams the file into one fixed script on the device::

    cat > "$1"            the bytes go to <path>.partial
    sha256 of "$1"        with sha256sum, openssl or python (what the device has: probed once)
    = "$2" ?              the sha256 computed here before sending
    mv -f "$1" "$3"       only then is it renamed onto the path

The script removes the partial itself on every failure: a checksum that does not match (refused), a
write error, and a stream cut short. When the connection drops or the upload is abandoned, ``cat``
sees the end of its input, the truncated file cannot match, and the script ignores SIGHUP and SIGPIPE
so that it gets as far as removing it. ``get`` runs a script that prints the file's sha256 and then
``cat``s it; the bytes are hashed here as they arrive. Paths are only ever positional parameters of
these fixed ``sh -c`` scripts.

Deadlines as in ``SSHTransport.run``: opening the channel, the exec reply and the exit status wait
against ``command_timeout``; while an upload streams, each stall is bounded by ``command_timeout`` (as
for SFTP), and a download must finish within it.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Callable, Optional, Sequence

from pipeline.errors import DeployError
from pipeline.fsutil import sha256_file
from pipeline.transport.base import CommandTimeout, ProgressCallback, Result, remove_command, sh_script, shell_join, short
from pipeline.transport.ssh_deadline import Stalled, abandon, close_channel, collect, open_channel, request

if TYPE_CHECKING:  # pragma: no cover
    import paramiko

log = logging.getLogger(__name__)

RunFn = Callable[..., Result]

_CHUNK = 1 << 16
#: how long removing a failed upload's .partial may take
CLEANUP_BUDGET = 5.0

_PY = (
    "import hashlib,sys\n"
    'f=getattr(sys.stdin,"buffer",sys.stdin)\n'
    "h=hashlib.sha256()\n"
    'for b in iter(lambda:f.read(65536),b""):h.update(b)\n'
    "print(h.hexdigest())"
)


@dataclass(frozen=True)
class Digest:
    """A way to compute a sha256 on the device: ``script`` sets ``h`` to the hex digest of "$1"."""

    program: str
    script: str


#: in order of preference; the first the device has is used
DIGESTS = (
    Digest("sha256sum", 'h=$(sha256sum < "$1") && h=${h%% *}'),
    Digest("openssl", 'h=$(openssl dgst -sha256 < "$1") && h=${h##* }'),
    Digest("python3", "h=$(python3 -c '" + _PY + "' < \"$1\")"),
    Digest("python", "h=$(python -c '" + _PY + "' < \"$1\")"),
)
_NEEDED = ("cat", "mv", "rm")
_PROBE = 'for t in "$@"; do if command -v "$t" >/dev/null 2>&1; then echo "$t"; fi; done'

# exit codes of the scripts (away from sh's own 1, 2, 126, 127)
WRITE_FAILED, DIGEST_FAILED, MISMATCH, RENAME_FAILED, MISSING = 90, 91, 92, 93, 94

_PUT = """trap '' HUP PIPE
if ! cat > "$1"; then rm -f "$1"; exit 90; fi
if ! { DIGEST; }; then rm -f "$1"; exit 91; fi
if [ "$h" != "$2" ]; then rm -f "$1"; echo "$h" >&2; exit 92; fi
if ! mv -f "$1" "$3"; then rm -f "$1"; exit 93; fi
"""
_GET = """if [ ! -f "$1" ]; then exit 94; fi
if ! { DIGEST; }; then exit 91; fi
printf '%s\\n' "$h"
exec cat < "$1"
"""


class SFTPRefused(Exception):
    """The server answered the sftp subsystem request with a refusal (``str`` says how): fall back."""


def sftp_refusal(chan: "paramiko.Channel", transport: "paramiko.Transport", requested: bool) -> Optional[str]:
    """Why the server refused SFTP on ``chan``, or None if this was not a refusal.

    A refusal is an answer on a live connection: the subsystem request failed (``requested`` is
    False: OpenSSH without a ``Subsystem sftp`` line), or the channel ended before any SFTP version
    arrived (dropbear whose sftp-server is missing: its shell exits 127). A silent server is not a
    refusal: that times out.
    """
    if not transport.is_active() or not (chan.closed or chan.eof_received):
        return None
    if not requested:
        return "it refused the sftp subsystem request"
    chan.status_event.wait(1.0)  # the exit status follows the EOF closely
    detail = ""
    if chan.recv_stderr_ready():
        detail = chan.recv_stderr(4096).decode("utf-8", "replace").strip()
    status = f" with status {chan.exit_status}" if chan.exit_status >= 0 else ""
    return f"its sftp subsystem ended{status} without answering in SFTP" + (f": {short(detail, 300)}" if detail else "")


class ExecFiles:
    """put/get over exec channels of one SSH transport (see the module docstring)."""

    def __init__(
        self,
        live_transport: Callable[[], "paramiko.Transport"],
        run: RunFn,
        where: str,
        command_timeout: float,
        forget_connection: Callable[[], None],
        why_no_sftp: str,
        target_name: str = "the target",
    ):
        self._live_transport = live_transport
        self._run = run
        self.where = where
        self.command_timeout = command_timeout
        self._forget_connection = forget_connection
        self.why_no_sftp = why_no_sftp
        self.target_name = target_name
        self._digest: Optional[Digest] = None

    # -- what the device has -----------------------------------------------------------------
    def digest(self) -> Digest:
        """The device's sha256 tool, probed once; DeployError (naming the refused subsystem) if it lacks the tools."""
        if self._digest is None:
            self._digest = self._probe()
        return self._digest

    def _probe(self) -> Digest:
        programs = [*_NEEDED, *(d.program for d in DIGESTS)]
        try:
            found = set(self._run(sh_script(_PROBE, *programs)).stdout.split())
        except CommandTimeout:
            raise
        except DeployError as exc:
            raise DeployError(
                f"The SSH server of {self.target_name} ({self.where}) refused the sftp subsystem ({self.why_no_sftp}), "
                f"and running a command to stream files over an exec channel instead failed too: {exc}"
            ) from None
        digest = next((d for d in DIGESTS if d.program in found), None)
        lacking = [f"`{name}`" for name in _NEEDED if name not in found]
        if digest is None:
            lacking.append("a sha256 tool (" + ", ".join(f"`{d.program}`" for d in DIGESTS) + ")")
        if lacking:
            raise DeployError(
                f"The SSH server of {self.target_name} ({self.where}) refused the sftp subsystem ({self.why_no_sftp}), "
                "and edgeship's fallback, streaming files over an exec channel, needs `cat`, `mv`, `rm` and one of `sha256sum`, "
                f"`openssl` or `python3` on the device's PATH; it lacks {', '.join(lacking)}. Install an "
                "SFTP server on the device (OpenSSH's sftp-server) or those tools."
            )
        log.info("%s has no SFTP (%s): files go over exec channels, checked with %s", self.where, self.why_no_sftp, digest.program)
        return digest

    # -- upload ------------------------------------------------------------------------------
    def put(self, local_path: Path, remote_path: str, progress: Optional[ProgressCallback] = None) -> None:
        """Write ``remote_path + '.partial'``, check its sha256 on the device, ``mv -f`` it onto ``remote_path``."""
        script = _PUT.replace("DIGEST", self.digest().script)
        partial = remote_path + ".partial"
        size, expected = Path(local_path).stat().st_size, sha256_file(Path(local_path))
        command = shell_join(sh_script(script, partial, expected, remote_path))
        transport = self._live_transport()
        deadline = time.monotonic() + self.command_timeout
        chan, err = None, bytearray()
        sent, streamed = 0, ""
        try:
            chan = open_channel(transport, deadline)
            request(chan, "exec", command, deadline, close_stdin=False)
            sent, streamed = self._stream(chan, Path(local_path), size, progress)
            chan.shutdown_write()
            code = collect(chan, transport, time.monotonic() + self.command_timeout, lambda _: None, err)
        except (Stalled, socket.timeout) as exc:
            step = exc.step if isinstance(exc, Stalled) else "take more data"
            self._abandon(transport, chan, wedged=step == "open a channel")
            self.remove(partial)
            raise CommandTimeout(
                f"On {self.where}, uploading {local_path} to {remote_path} over an exec channel stalled: the SSH "
                f"server did not {step} within {self.command_timeout:g} s (transport.command_timeout), so the "
                "upload was abandoned."
            ) from None
        except BaseException:
            self._settle(transport, chan, partial)
            raise
        finally:
            if chan is not None:
                close_channel(chan)
        self._check_put(code, err, local_path, remote_path, size, expected, sent, streamed)

    def _settle(self, transport: "paramiko.Transport", chan: "Optional[paramiko.Channel]", partial: str) -> None:
        """After a failure here (Ctrl-C, a local read error): end the stream and let the device script
        finish, which removes the truncated partial; if it cannot be waited for, remove it directly."""
        if chan is not None and transport.is_active():
            try:
                chan.shutdown_write()
                collect(chan, transport, time.monotonic() + CLEANUP_BUDGET, lambda _: None, bytearray())
                return  # the script has exited: it removed the partial, or installed a complete copy
            except Exception as exc:  # noqa: BLE001 - already failing; fall back to removing it directly
                log.debug("waiting for the upload script on %s after a failure: %s", self.where, exc)
        if chan is not None:
            close_channel(chan)
        self.remove(partial)

    def _stream(self, chan: "paramiko.Channel", local_path: Path, size: int, progress: Optional[ProgressCallback]) -> tuple[int, str]:
        """Send the file; returns (bytes sent, their sha256). Stops early if the device script exits."""
        chan.settimeout(self.command_timeout)  # each send waits at most this long for window space
        digest, sent = hashlib.sha256(), 0
        with open(local_path, "rb") as src:
            for block in iter(lambda: src.read(_CHUNK), b""):
                if chan.exit_status_ready():
                    break  # the script stopped reading (a write error): its exit status says why
                try:
                    chan.sendall(block)
                except socket.timeout:
                    raise
                except OSError:
                    if chan.exit_status_ready() or (chan.closed and self._live_transport().is_active()):
                        break
                    raise
                digest.update(block)
                sent += len(block)
                if progress:
                    progress(sent, size)
        if progress and size == 0:
            progress(0, 0)
        return sent, digest.hexdigest()

    def _check_put(
        self, code: int, err: bytearray, local_path: Path, remote_path: str, size: int, expected: str, sent: int, streamed: str
    ) -> None:
        detail = short(err.decode("utf-8", "replace"), 400) or "no output"
        where = f"{self.where}:{remote_path}"
        if code == 0:
            return
        if code == MISMATCH and (sent != size or streamed != expected):
            raise DeployError(
                f"Uploading {local_path} to {where} failed: {local_path} changed while it was being uploaded "
                f"({size} bytes, {sent} sent); the device refused the copy and removed it."
            )
        if code == MISMATCH:
            raise DeployError(
                f"The upload of {local_path} to {self.target_name} ({where}) was refused: its sha256 on the device "
                f"({detail}) did not match the one sent ({expected}), so the copy was corrupted on the way and was removed. The "
                "previous file, if any, is unchanged; try again."
            )
        what = {
            WRITE_FAILED: f"writing {remote_path}.partial failed",
            DIGEST_FAILED: f"computing the sha256 of {remote_path}.partial with `{self.digest().program}` failed",
            RENAME_FAILED: f"renaming {remote_path}.partial onto it failed",
        }.get(code, f"the upload script exited with {code}")
        raise DeployError(f"Uploading {local_path} to {where} failed: {what} ({detail}); the partial copy was removed.")

    # -- download ----------------------------------------------------------------------------
    def get(self, remote_path: str, dest: IO[bytes]) -> None:
        """Write the device file into ``dest``; checked against its sha256 on the device."""
        script = _GET.replace("DIGEST", self.digest().script)
        transport = self._live_transport()
        deadline = time.monotonic() + self.command_timeout
        sink, err, chan = _Download(dest), bytearray(), None
        try:
            chan = open_channel(transport, deadline)
            request(chan, "exec", shell_join(sh_script(script, remote_path)), deadline)
            code = collect(chan, transport, deadline, sink.feed, err)
        except Stalled as exc:
            self._abandon(transport, chan, wedged=exc.step == "open a channel")
            raise CommandTimeout(
                f"On {self.where}, downloading {remote_path} over an exec channel did not {exc.step} within "
                f"{self.command_timeout:g} s (transport.command_timeout), so it was abandoned."
            ) from None
        finally:
            if chan is not None:
                close_channel(chan)
        if code == MISSING:
            raise DeployError(f"On {self.where}, {remote_path} does not exist.")
        if code != 0:
            detail = short(err.decode("utf-8", "replace"), 400) or f"exit code {code}"
            raise DeployError(f"Downloading {self.where}:{remote_path} failed: {detail}.")
        if sink.expected is None or sink.digest.hexdigest() != sink.expected:
            raise DeployError(
                f"Downloading {self.where}:{remote_path} failed: the {sink.size} bytes received do not match the "
                f"file's sha256 on the device ({sink.expected or 'none sent'}); the file changed while it was read "
                "or the stream was corrupted. Try again."
            )

    # -- cleanup -----------------------------------------------------------------------------
    def remove(self, partial: str) -> None:
        """Best effort, within CLEANUP_BUDGET: a failed upload must not leave its .partial on the device."""
        remove_quietly(self._run, self.where, [partial], alive=self._alive())

    def _alive(self) -> bool:
        try:
            return self._live_transport().is_active()
        except Exception:  # noqa: BLE001 - no connection: nothing can be removed
            return False

    def _abandon(self, transport: "paramiko.Transport", chan: "Optional[paramiko.Channel]", wedged: bool) -> None:
        if abandon(transport, chan, wedged=wedged):
            self._forget_connection()


def remove_quietly(run: RunFn, where: str, paths: Sequence[str], alive: bool = True) -> None:
    """``rm -f`` each path within CLEANUP_BUDGET; failures are logged, never raised (the caller is already failing)."""
    if not paths:
        return
    if not alive:
        log.info("left %s on %s: the connection is gone", ", ".join(paths), where)
        return
    try:
        result = run(remove_command(paths), timeout=CLEANUP_BUDGET, check=False)
    except DeployError as exc:
        log.warning("could not remove %s on %s: %s", ", ".join(paths), where, exc)
        return
    if not result.ok:
        log.warning("could not remove %s on %s: %s", ", ".join(paths), where, result.stderr.strip())


class _Download:
    """The get script's output: one line with the sha256, then the file's bytes (hashed as they pass)."""

    def __init__(self, dest: IO[bytes]):
        self.dest = dest
        self.expected: Optional[str] = None
        self.digest = hashlib.sha256()
        self.size = 0
        self._header = bytearray()

    def feed(self, data: bytes) -> None:
        if self.expected is None:
            self._header += data
            if b"\n" not in self._header:
                if len(self._header) > 256:
                    raise DeployError("the download script sent no sha256 line (is the device's shell POSIX?)")
                return
            line, _, data = bytes(self._header).partition(b"\n")
            self.expected = line.decode("ascii", "replace").strip()
        self.dest.write(data)
        self.digest.update(data)
        self.size += len(data)
