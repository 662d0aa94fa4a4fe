"""The SSH transport (paramiko).

Security rules (docs/ARCHITECTURE.md, "Transports and SSH rules"): host keys are checked against the target's known_hosts file; an
unknown key is refused unless the target says ``host_key_policy: accept-new`` (then it is recorded,
atomically: known_hosts.py); a changed key is always refused. Key-file or ssh-agent authentication
only. Every remote word is quoted. Connect, banner, auth and command timeouts are always set, and a
command timeout is a hard bound even against a server that goes silent mid-command
(ssh_deadline.py). Transient connection failures (refused, timed out, unreachable) are retried with
exponential backoff; authentication and host-key problems are not. Messages never contain key
material or passphrases.

Files go over SFTP. A server that refuses the sftp subsystem (dropbear images without an
sftp-server, an sshd without a ``Subsystem sftp`` line) gets them over exec channels instead, for
the rest of this transport's life: exec_files.py (``cat`` into ``.partial``, sha256 checked on the
device, ``mv -f``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
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
from pipeline.transport.exec_files import CLEANUP_BUDGET, ExecFiles, SFTPRefused, sftp_refusal
from pipeline.transport.known_hosts import HostKeyError
from pipeline.transport.ssh_connect import Transient, connect_once
from pipeline.transport.ssh_deadline import (
    Stalled,
    abandon,
    close_channel,
    collect,
    exit_status,
    open_channel,
    remaining,
    request,
)

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
#: how long killing a timed-out command may take (the kill script itself waits 1 s)
_KILL_BUDGET = 5.0

__all__ = ["HostKeyError", "SSHTransport"]


class SSHTransport(Transport):
    def __init__(self, cfg: "SSHTransportConfig", remote_dir: str, target_name: str = "the target"):
        super().__init__(remote_dir, command_timeout=cfg.command_timeout)
        self.cfg = cfg
        self.target_name = target_name
        self.where = f"{cfg.user}@{cfg.host}:{cfg.port}"
        self._client: Optional["paramiko.SSHClient"] = None
        self._sftp_client = None
        #: set once the server refused SFTP: files then go over exec channels (for this transport's life)
        self._exec_files: Optional[ExecFiles] = None
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
                home = self._sftp_home(home)
            self._home = home
        return self._home

    def _sftp_home(self, shown: str) -> str:
        """The login directory as SFTP sees it, for shells whose $HOME is not an absolute path."""
        try:
            return self._sftp().normalize(".")
        except SFTPRefused as refused:
            self._fall_back(refused)
            raise DeployError(
                f"On {self.where}, $HOME is {shown!r}, not an absolute path, and the SSH server has no SFTP to ask "
                f"for the login directory ({refused}); set remote_dir of {self.target_name} to an absolute path."
            ) from None

    def _resolve_remote_dir(self, raw: str) -> str:
        if raw.startswith("/"):
            return raw.rstrip("/") or "/"
        return join_home(self.home(), raw)

    # -- commands --------------------------------------------------------------------------
    def run(self, argv: Sequence[str], timeout: Optional[float] = None, check: bool = True) -> Result:
        """Run ``argv``; raises :class:`CommandTimeout` at most ``timeout`` + about 7 s after the
        channel is requested, however silent the server (connecting first is bounded by connect_timeout)."""
        import paramiko

        argv = [str(a) for a in argv]
        timeout = self.command_timeout if timeout is None else timeout
        shown = shell_join(argv)
        log.debug("ssh %s: %s", self.where, shown)
        out, err = bytearray(), bytearray()
        chan = None
        try:
            transport = self._live_transport()
            deadline = time.monotonic() + timeout
            try:
                chan = open_channel(transport, deadline)
                request(chan, "exec", shell_join(["sh", "-c", _PID_WRAPPER, "sh", *argv]), deadline)
                code = collect(chan, transport, deadline, out.extend, err)
            except Stalled as exc:
                raise self._timed_out(transport, chan, shown, timeout, exc.step, err) from None
            finally:
                if chan is not None:
                    close_channel(chan)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise self._lost(f"running `{shown}`", exc) from None
        stderr = _PID_LINE.sub("", err.decode("utf-8", "replace"), count=1)
        result = Result(code, out.decode("utf-8", "replace"), stderr, tuple(argv))
        return self.check_result(result) if check else result

    def _live_transport(self) -> "paramiko.Transport":
        import paramiko

        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise paramiko.SSHException("transport is not active")
        return transport

    def _timed_out(
        self, transport: "paramiko.Transport", chan: "Optional[paramiko.Channel]", shown: str, timeout: float, step: str, err: bytearray
    ) -> CommandTimeout:
        """Close what the command held, kill it if its pid is known, and say what happened."""
        pid = _PID_LINE.search(err.decode("utf-8", "replace"))
        dropped = abandon(transport, chan, wedged=step == "open a channel")
        killed = bool(pid) and not dropped and self._kill(transport, pid.group(1))
        if pid and not killed and not dropped:
            dropped = abandon(transport, None, wedged=True)
        if dropped:
            self._forget_connection()
        where, after = self.where, f"within {timeout:g} s"
        reconnect = " The SSH connection was closed; the next command opens a new one." if dropped else ""
        if step != "finish":
            return CommandTimeout(
                f"On {where}, the SSH server did not {step} for `{shown}` {after}, so the command was abandoned: "
                f"the device's sshd is overloaded or hung (check it with a plain `ssh`).{reconnect}"
            )
        if killed:
            return CommandTimeout(f"On {where}, `{shown}` ran longer than {timeout:g} s and was killed.")
        why = (
            f"the kill sent on a second channel got no answer {after} either ({_KILL_BUDGET:g} s)"
            if pid
            else "the server never reported its process id"
        )
        return CommandTimeout(
            f"On {where}, `{shown}` ran longer than {timeout:g} s; edgeship could not confirm that it was killed "
            f"because {why}, so it may still be running on the device.{reconnect}"
        )

    def _kill(self, transport: "paramiko.Transport", pid: str) -> bool:
        """Kill the remote shell (and its process group) from a second channel; True if confirmed."""
        import paramiko

        deadline = time.monotonic() + _KILL_BUDGET
        try:
            chan = open_channel(transport, deadline)
            request(chan, "exec", shell_join(sh_script(_KILL_SCRIPT, pid)), deadline)
            exit_status(chan, deadline)
        except (Stalled, paramiko.SSHException, EOFError, OSError) as exc:
            log.warning("killing timed-out remote pid %s on %s failed: %s", pid, self.where, exc)
            return False  # the caller closes the connection, and with it this channel
        close_channel(chan)
        return True

    # -- files -----------------------------------------------------------------------------
    def _sftp(self, budget: Optional[float] = None) -> "paramiko.SFTPClient":
        """The SFTP session, opened within ``budget`` (default connect_timeout): paramiko waits for the
        subsystem reply without a limit. Each later SFTP read or write stalls at most command_timeout.
        :class:`SFTPRefused` when the server answers that it has no SFTP (the caller falls back)."""
        import paramiko

        if self._sftp_client is None:
            transport = self._live_transport()
            budget = self.cfg.connect_timeout if budget is None else budget
            deadline = time.monotonic() + budget
            chan, requested = None, False
            try:
                chan = open_channel(transport, deadline)
                request(chan, "subsystem", "sftp", deadline)
                requested = True
                chan.settimeout(max(remaining(deadline), 0.01))  # for the version exchange
                sftp = paramiko.SFTPClient(chan)
            except (Stalled, socket.timeout) as exc:
                step = exc.step if isinstance(exc, Stalled) else "send its SFTP version"
                if abandon(transport, chan, wedged=step == "open a channel"):
                    self._forget_connection()
                raise CommandTimeout(
                    f"On {self.where}, the SSH server did not {step} within {budget:g} s while starting an SFTP "
                    "session: the device's sshd is overloaded or hung, or its sftp subsystem is broken."
                ) from None
            except (paramiko.SSHException, EOFError, OSError) as exc:
                # OSError: "Socket is closed" when the channel closed before the version was even sent
                why = sftp_refusal(chan, transport, requested) if chan is not None else None
                if chan is not None:
                    close_channel(chan)
                if why is None:
                    raise
                raise SFTPRefused(why) from exc
            except BaseException:
                if chan is not None:
                    close_channel(chan)
                raise
            chan.settimeout(self.command_timeout)
            self._sftp_client = sftp
        return self._sftp_client

    @property
    def file_transfer(self) -> str:
        """How files travel: ``"exec"`` once the server refused SFTP, else ``"sftp"`` (diagnostics, doctor)."""
        return "sftp" if self._exec_files is None else "exec"

    def _exec_files_if_no_sftp(self) -> Optional[ExecFiles]:
        """None when files go over SFTP (its session is then open); the exec-channel files once the
        server has refused SFTP, now or earlier on this transport."""
        if self._exec_files is None:
            try:
                self._sftp()
            except SFTPRefused as refused:
                self._fall_back(refused)
        return self._exec_files

    def _fall_back(self, refused: SFTPRefused) -> ExecFiles:
        self._exec_files = ExecFiles(
            self._live_transport,
            self.run,
            self.where,
            self.command_timeout,
            self._forget_connection,
            str(refused),
            target_name=self.target_name,
        )
        return self._exec_files

    def _stalled(self, doing: str) -> CommandTimeout:
        """An SFTP read or write got no answer for command_timeout: the session is out of step, drop it."""
        self._drop_sftp()
        return CommandTimeout(
            f"On {self.where}, {doing} stalled: the SFTP server sent nothing for {self.command_timeout:g} s "
            "(transport.command_timeout), so the transfer was abandoned."
        )

    def _file_error(self, doing: str, exc: BaseException) -> DeployError:
        """A local or device-side I/O error while the connection lives is the transfer's; else the connection was lost."""
        if isinstance(exc, OSError) and not isinstance(exc, ConnectionError) and self._alive():
            return DeployError(f"{doing[0].upper()}{doing[1:]} failed: {exc}.")
        return self._lost(doing, exc)

    def put(self, local_path: Path, remote_path: str, progress: Optional[ProgressCallback] = None) -> None:
        """SFTP, or (once the server refused SFTP) the exec-channel stream of exec_files.py. Either way
        a failed put removes its ``.partial`` while the connection is usable; one cut off with the
        connection is overwritten by the next put of the same path, or removed by remove_partials."""
        import paramiko

        doing = f"uploading {local_path} to {self.where}:{remote_path}"
        try:
            files = self._exec_files_if_no_sftp()
            if files is None:
                self._sftp_put(local_path, remote_path, progress)
            else:
                files.put(local_path, remote_path, progress)
        except socket.timeout:
            raise self._stalled(doing) from None
        except (paramiko.SSHException, EOFError, socket.error) as exc:
            raise self._file_error(doing, exc) from None

    def _sftp_put(self, local_path: Path, remote_path: str, progress: Optional[ProgressCallback]) -> None:
        partial = remote_path + ".partial"
        sftp = self._sftp()
        size = os.stat(local_path).st_size
        try:
            sent = sftp.put(str(local_path), partial, callback=progress, confirm=True).st_size
            if sent != size:  # paramiko confirms only the bytes it read, not the file's size
                raise OSError(f"{local_path} changed while it was being uploaded ({size} bytes, {sent} sent)")
            try:
                sftp.posix_rename(partial, remote_path)
            except OSError:
                # servers without the posix-rename extension: plain rename fails if the target exists
                with contextlib.suppress(OSError):
                    sftp.remove(remote_path)
                sftp.rename(partial, remote_path)
        except BaseException as exc:
            self._remove_partial(partial, stalled=isinstance(exc, socket.timeout))
            raise

    def _remove_partial(self, partial: str, stalled: bool) -> None:
        """Best effort, within CLEANUP_BUDGET: a failed upload must not leave its .partial on the device."""
        import paramiko

        if stalled:
            self._drop_sftp()
        if not self._alive():
            log.info("left %s on %s: the connection is gone", partial, self.where)
            return
        try:
            sftp = self._sftp(budget=CLEANUP_BUDGET)
            sftp.get_channel().settimeout(CLEANUP_BUDGET)
            try:
                sftp.remove(partial)
            finally:
                sftp.get_channel().settimeout(self.command_timeout)
        except FileNotFoundError:
            pass
        except (CommandTimeout, SFTPRefused, paramiko.SSHException, EOFError, OSError) as exc:
            if isinstance(exc, socket.timeout):
                self._drop_sftp()
            log.warning("could not remove %s on %s after the failed upload: %s", partial, self.where, exc)

    def get(self, remote_path: str, local_path: Path) -> None:
        import paramiko

        local_path = Path(local_path)
        local_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{local_path.name}.", suffix=".tmp", dir=local_path.parent)
        os.close(fd)
        doing = f"downloading {self.where}:{remote_path}"
        try:
            files = self._exec_files_if_no_sftp()
            if files is None:
                self._sftp().get(remote_path, tmp)
            else:
                with open(tmp, "wb") as out:
                    files.get(remote_path, out)
            os.replace(tmp, local_path)
        except FileNotFoundError:
            raise DeployError(f"On {self.where}, {remote_path} does not exist.") from None
        except socket.timeout:
            raise self._stalled(f"downloading {remote_path}") from None
        except (paramiko.SSHException, EOFError, socket.error) as exc:
            raise self._file_error(doing, exc) from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _alive(self) -> bool:
        transport = self._client.get_transport() if self._client else None
        return bool(transport and transport.is_active())

    def _drop_sftp(self) -> None:
        if self._sftp_client is not None:
            close_channel(self._sftp_client.get_channel())
            self._sftp_client = None

    def _forget_connection(self) -> None:
        """After the connection was closed as wedged: the next command reconnects."""
        self._sftp_client = None
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None

    def close(self) -> None:
        self._drop_sftp()
        self._forget_connection()
