"""The SSH transport (paramiko).

Security rules (ARCHITECTURE.md): host keys are checked against the target's known_hosts file; an
unknown key is refused unless the target says ``host_key_policy: accept-new`` (then it is recorded,
atomically: known_hosts.py); a changed key is always refused. Key-file or ssh-agent authentication
only. Every remote word is quoted. Connect, banner, auth and command timeouts are always set.
Transient connection failures (refused, timed out, unreachable) are retried with exponential
backoff; authentication and host-key problems are not. Messages never contain key material or
passphrases.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import select
import socket
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from pipeline.errors import DeployError
from pipeline.transport.base import (
    CommandTimeout,
    ProgressCallback,
    Result,
    Transport,
    join_home,
    sh_script,
    shell_join,
)
from pipeline.transport.known_hosts import HostKeyError
from pipeline.transport.ssh_connect import Transient, connect_once

if TYPE_CHECKING:  # pragma: no cover
    import paramiko

    from pipeline.config.target import SSHTransportConfig

log = logging.getLogger(__name__)


class _QuietParamiko(logging.Filter):
    """paramiko logs connection failures at ERROR level; edgeship reports them itself, once, as a
    DeployError. Its records are shown only when edgeship's own SSH logging is at DEBUG (-vv)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return log.isEnabledFor(logging.DEBUG)


logging.getLogger("paramiko").addFilter(_QuietParamiko())
for _name in ("paramiko.transport", "paramiko.transport.sftp", "paramiko.client"):
    logging.getLogger(_name).addFilter(_QuietParamiko())

# The command wrapper prints the remote shell's pid on stderr (then execs the command), so a timed-out
# command can be killed from a second channel: closing an SSH channel does not stop the process.
_PID_MARK = "edgeship-pid:"
_PID_WRAPPER = 'echo "' + _PID_MARK + '$$" >&2; exec "$@"'
_PID_LINE = re.compile(r"^" + re.escape(_PID_MARK) + r"(\d+)\n?", re.MULTILINE)
_KILL_SCRIPT = (
    'kill -TERM "$1" 2>/dev/null; kill -TERM -"$1" 2>/dev/null; sleep 1; '
    'kill -KILL "$1" 2>/dev/null; kill -KILL -"$1" 2>/dev/null; true'
)

__all__ = ["HostKeyError", "SSHTransport"]


class SSHTransport(Transport):
    def __init__(self, cfg: "SSHTransportConfig", remote_dir: str, target_name: str = "the target"):
        super().__init__(remote_dir, command_timeout=cfg.command_timeout)
        self.cfg = cfg
        self.target_name = target_name
        self.where = f"{cfg.user}@{cfg.host}:{cfg.port}"
        self._client: Optional["paramiko.SSHClient"] = None
        self._sftp_client = None
        self._home: Optional[str] = None
        #: connection attempts made by the last connect() (tests and diagnostics)
        self.attempts = 0

    # -- connection ------------------------------------------------------------------------
    def connect(self) -> None:
        cfg = self.cfg
        if cfg.key_file and not Path(cfg.key_file).is_file():
            raise DeployError(
                f"The SSH key file {cfg.key_file} (transport.key_file of {self.target_name}) does not exist; "
                "fix the path or remove key_file to use ssh-agent and the default keys."
            )
        attempts = cfg.retries + 1
        last: Optional[Transient] = None
        self.attempts = 0
        for attempt in range(attempts):
            self.attempts += 1
            try:
                self._client = connect_once(cfg, self.target_name)
                return
            except Transient as exc:
                last = exc
                if attempt + 1 < attempts:
                    delay = cfg.retry_backoff * (2**attempt)
                    log.info("%s; retrying in %.1f s (attempt %d of %d)", exc, delay, attempt + 2, attempts)
                    time.sleep(delay)
        tries = f" (tried {attempts} times with backoff)" if attempts > 1 else ""
        raise DeployError(f"Cannot connect to {self.target_name}: {last}{tries}.")

    @property
    def client(self) -> "paramiko.SSHClient":
        if self._client is None:
            self.connect()
        assert self._client is not None
        return self._client

    def _lost(self, doing: str, exc: BaseException) -> DeployError:
        detail = str(exc) or type(exc).__name__
        return DeployError(f"The SSH connection to {self.where} was lost while {doing} ({detail}).")

    # -- remote dir ------------------------------------------------------------------------
    def home(self) -> str:
        if self._home is None:
            home = self.run(sh_script('printf "%s" "$HOME"'), timeout=self.cfg.connect_timeout + 20).stdout.strip()
            if not home.startswith("/"):
                home = self._sftp().normalize(".")
            self._home = home
        return self._home

    def _resolve_remote_dir(self, raw: str) -> str:
        if raw.startswith("/"):
            return raw.rstrip("/") or "/"
        return join_home(self.home(), raw)

    # -- commands --------------------------------------------------------------------------
    def run(self, argv: Sequence[str], timeout: Optional[float] = None, check: bool = True) -> Result:
        import paramiko

        argv = [str(a) for a in argv]
        timeout = self.command_timeout if timeout is None else timeout
        command = shell_join(["sh", "-c", _PID_WRAPPER, "sh", *argv])
        log.debug("ssh %s: %s", self.where, shell_join(argv))
        out, err = bytearray(), bytearray()
        try:
            transport = self.client.get_transport()
            if transport is None or not transport.is_active():
                raise paramiko.SSHException("transport is not active")
            chan = transport.open_session(timeout=self.cfg.connect_timeout)
            try:
                chan.exec_command(command)
                chan.shutdown_write()
                deadline = time.monotonic() + timeout
                idle = 0.002  # poll interval: short while output flows, up to 0.1 s when idle
                while True:
                    got = False
                    while chan.recv_ready():
                        out += chan.recv(65536)
                        got = True
                    while chan.recv_stderr_ready():
                        err += chan.recv_stderr(65536)
                        got = True
                    finished = chan.exit_status_ready() and (chan.eof_received or chan.closed)
                    if finished and not chan.recv_ready() and not chan.recv_stderr_ready():
                        break
                    if time.monotonic() > deadline:
                        pid = _PID_LINE.search(err.decode("utf-8", "replace"))
                        chan.close()
                        self._kill(pid.group(1) if pid else None)
                        raise CommandTimeout(
                            f"On {self.where}, `{shell_join(argv)}` ran longer than {timeout:g} s and was killed."
                        )
                    if not transport.is_active():
                        raise EOFError("the server closed the connection")
                    idle = 0.002 if got else min(idle * 2, 0.1)
                    select.select([chan], [], [], idle)
                code = chan.recv_exit_status()
            finally:
                chan.close()
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise self._lost(f"running `{shell_join(argv)}`", exc) from None
        stderr = _PID_LINE.sub("", err.decode("utf-8", "replace"), count=1)
        result = Result(code, out.decode("utf-8", "replace"), stderr, tuple(argv))
        return self.check_result(result) if check else result

    def _kill(self, pid: Optional[str]) -> None:
        if not pid:
            return
        with contextlib.suppress(Exception):
            transport = self.client.get_transport()
            chan = transport.open_session(timeout=self.cfg.connect_timeout)
            chan.settimeout(15)
            chan.exec_command(shell_join(sh_script(_KILL_SCRIPT, pid)))
            chan.recv_exit_status()
            chan.close()

    # -- files -----------------------------------------------------------------------------
    def _sftp(self):
        if self._sftp_client is None:
            self._sftp_client = self.client.open_sftp()
            self._sftp_client.get_channel().settimeout(self.command_timeout)
        return self._sftp_client

    def put(self, local_path: Path, remote_path: str, progress: Optional[ProgressCallback] = None) -> None:
        import paramiko

        partial = remote_path + ".partial"
        try:
            sftp = self._sftp()
            sftp.put(str(local_path), partial, callback=progress, confirm=True)
            try:
                sftp.posix_rename(partial, remote_path)
            except OSError:
                # servers without the posix-rename extension: plain rename fails if the target exists
                with contextlib.suppress(OSError):
                    sftp.remove(remote_path)
                sftp.rename(partial, remote_path)
        except (paramiko.SSHException, EOFError, socket.error) as exc:
            if isinstance(exc, OSError) and not isinstance(exc, (socket.timeout, ConnectionError)) and self._alive():
                raise DeployError(f"Uploading {local_path} to {self.where}:{remote_path} failed: {exc}.") from None
            raise self._lost(f"uploading {local_path} to {remote_path}", exc) from None

    def get(self, remote_path: str, local_path: Path) -> None:
        import paramiko

        local_path = Path(local_path)
        local_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{local_path.name}.", suffix=".tmp", dir=local_path.parent)
        os.close(fd)
        try:
            self._sftp().get(remote_path, tmp)
            os.replace(tmp, local_path)
        except FileNotFoundError:
            raise DeployError(f"On {self.where}, {remote_path} does not exist.") from None
        except (paramiko.SSHException, EOFError, socket.error) as exc:
            if isinstance(exc, OSError) and self._alive():
                raise DeployError(f"Downloading {self.where}:{remote_path} failed: {exc}.") from None
            raise self._lost(f"downloading {remote_path}", exc) from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _alive(self) -> bool:
        transport = self._client.get_transport() if self._client else None
        return bool(transport and transport.is_active())

    def close(self) -> None:
        if self._sftp_client is not None:
            with contextlib.suppress(Exception):
                self._sftp_client.close()
            self._sftp_client = None
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None
