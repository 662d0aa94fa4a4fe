"""The SSH transport (paramiko).

Security rules (ARCHITECTURE.md): host keys are checked against the target's known_hosts file; an
unknown key is refused unless the target says ``host_key_policy: accept-new`` (then it is recorded,
atomically); a changed key is always refused. Key-file or ssh-agent authentication only. Every
remote word is quoted. Connect, banner, auth and command timeouts are always set. Transient
connection failures (refused, timed out, unreachable) are retried with exponential backoff;
authentication and host-key problems are not. Messages never contain key material or passphrases.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import re
import select
import shlex
import socket
import stat
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from pipeline.errors import DeployError
from pipeline.fsutil import atomic_write_bytes
from pipeline.transport.base import (
    CommandTimeout,
    ProgressCallback,
    Result,
    Transport,
    join_home,
    sh_script,
    shell_join,
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


def fingerprint(key: "paramiko.PKey") -> str:
    """OpenSSH's ``SHA256:<base64 without padding>`` form."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def known_hosts_name(host: str, port: int) -> str:
    """How OpenSSH names a host in known_hosts: ``host`` on port 22, ``[host]:port`` otherwise."""
    return host if port == 22 else f"[{host}]:{port}"


class HostKeyError(DeployError):
    """The server's host key is unknown (strict policy) or has changed."""


class _Transient(Exception):
    """A connection failure worth retrying (refused, timed out, unreachable)."""


def _atomic_append_known_host(path: Path, line: str) -> None:
    """Append one line to a known_hosts file by rewriting it atomically (serialised with flock)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock_path = path.with_name(f".{path.name}.edgeship-lock")
    with open(lock_path, "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            existing = path.read_text(encoding="utf-8") if path.exists() else ""
            mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o600
            if existing and not existing.endswith("\n"):
                existing += "\n"
            atomic_write_bytes(path, (existing + line).encode("utf-8"), mode=mode)
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _make_policy(cfg: "SSHTransportConfig", target_hint: str):
    import paramiko

    class KnownHostsPolicy(paramiko.MissingHostKeyPolicy):
        """Called by paramiko only when known_hosts has no entry at all for the host."""

        def missing_host_key(self, client, hostname, key):  # noqa: D401 - paramiko API
            known_hosts = Path(cfg.known_hosts)
            if cfg.host_key_policy == "accept-new":
                try:
                    _atomic_append_known_host(known_hosts, f"{hostname} {key.get_name()} {key.get_base64()}\n")
                except OSError as exc:
                    raise HostKeyError(
                        f"The SSH host key of {hostname} ({key.get_name()} {fingerprint(key)}) is new and "
                        f"host_key_policy is accept-new, but it could not be recorded in {known_hosts}: {exc}."
                    ) from None
                client.get_host_keys().add(hostname, key.get_name(), key)
                log.warning("accepted new host key for %s: %s %s (recorded in %s)", hostname, key.get_name(), fingerprint(key), known_hosts)
                return
            raise HostKeyError(
                f"Refusing to connect to {hostname}: its SSH host key is not in the known_hosts file {known_hosts}, "
                f"and {target_hint} uses host_key_policy 'strict'. The server offered the {key.get_name()} key "
                f"with fingerprint {fingerprint(key)}. Check that fingerprint on the device "
                f"(`ssh-keygen -lf /etc/ssh/ssh_host_{_key_file_kind(key)}_key.pub`), then add it with "
                f"`ssh-keyscan -p {cfg.port} {shlex.quote(cfg.host)} >> {shlex.quote(str(known_hosts))}` - or set "
                "transport.host_key_policy: accept-new in the target file to record it on first contact."
            )

    return KnownHostsPolicy()


def _key_file_kind(key) -> str:
    name = key.get_name()
    if "ed25519" in name:
        return "ed25519"
    if "ecdsa" in name:
        return "ecdsa"
    return "rsa"


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
        last: Optional[_Transient] = None
        self.attempts = 0
        for attempt in range(attempts):
            self.attempts += 1
            try:
                self._client = self._connect_once()
                return
            except _Transient as exc:
                last = exc
                if attempt + 1 < attempts:
                    delay = cfg.retry_backoff * (2**attempt)
                    log.info("%s; retrying in %.1f s (attempt %d of %d)", exc, delay, attempt + 2, attempts)
                    time.sleep(delay)
        tries = f" (tried {attempts} times with backoff)" if attempts > 1 else ""
        raise DeployError(f"Cannot connect to {self.target_name}: {last}{tries}.")

    def _connect_once(self) -> "paramiko.SSHClient":
        import paramiko

        cfg = self.cfg
        where = f"{cfg.host}:{cfg.port}"
        client = paramiko.SSHClient()
        known_hosts = Path(cfg.known_hosts)
        if known_hosts.is_file():
            try:
                client.load_system_host_keys(str(known_hosts))
            except (OSError, paramiko.SSHException, ValueError) as exc:
                client.close()
                raise DeployError(f"The known_hosts file {known_hosts} cannot be read: {exc}.") from None
        client.set_missing_host_key_policy(_make_policy(cfg, self.target_name))
        timeout = cfg.connect_timeout
        try:
            client.connect(
                cfg.host,
                port=cfg.port,
                username=cfg.user,
                key_filename=cfg.key_file,
                look_for_keys=cfg.key_file is None,
                allow_agent=True,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
                channel_timeout=timeout,
            )
        except HostKeyError:
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            name = known_hosts_name(cfg.host, cfg.port)
            qname, qfile = shlex.quote(name), shlex.quote(str(known_hosts))
            raise HostKeyError(
                f"REFUSED: the SSH host key of {name} has CHANGED. The known_hosts file {known_hosts} expects "
                f"{exc.expected_key.get_name()} {fingerprint(exc.expected_key)} but the server offered "
                f"{exc.key.get_name()} {fingerprint(exc.key)}. This happens when a device is reinstalled, but it is "
                "also what a man-in-the-middle attack looks like, so edgeship never accepts a changed key. "
                f"Inspect the stored entry with `ssh-keygen -F {qname} -f {qfile}`; if the change is expected, "
                f"remove it with `ssh-keygen -R {qname} -f {qfile}` and add the new key "
                f"(`ssh-keyscan -p {cfg.port} {shlex.quote(cfg.host)} >> {qfile}`) after checking its fingerprint on the device."
            ) from None
        except paramiko.PasswordRequiredException:
            client.close()
            raise DeployError(
                f"The SSH key file {cfg.key_file} for {cfg.user}@{where} is protected by a passphrase, which edgeship "
                f"does not ask for. Load it into ssh-agent (`ssh-add {shlex.quote(str(cfg.key_file))}`) and remove "
                "key_file from the target, or use a dedicated deploy key without a passphrase."
            ) from None
        except paramiko.AuthenticationException as exc:
            client.close()
            how = f"key file {cfg.key_file}" if cfg.key_file else "ssh-agent and the default keys in ~/.ssh"
            raise DeployError(
                f"SSH authentication as user '{cfg.user}' on {where} failed using {how} ({exc}). Check "
                f"transport.user and transport.key_file of {self.target_name}, and that the public key is in "
                f"~{cfg.user}/.ssh/authorized_keys on the device (`ssh-copy-id -p {cfg.port} {cfg.user}@{cfg.host}`)."
            ) from None
        except socket.gaierror as exc:
            client.close()
            raise DeployError(
                f"Cannot resolve the SSH host name '{cfg.host}' of {self.target_name}: {exc.strerror or exc}. "
                "Check transport.host (a name on your network or an IP address)."
            ) from None
        except paramiko.ssh_exception.NoValidConnectionsError as exc:
            client.close()
            codes = {getattr(e, "errno", None) for e in exc.errors.values()}
            if codes <= {errno.ECONNREFUSED}:
                raise _Transient(
                    f"{where} refused the SSH connection: no SSH server is listening there (is sshd running, "
                    f"is transport.port {cfg.port} right?)"
                ) from None
            raise _Transient(f"{where} is unreachable ({exc})") from None
        except (socket.timeout, TimeoutError):
            client.close()
            raise _Transient(
                f"Connecting to {where} timed out after {timeout:g} s: the device is off, asleep or unreachable "
                "from here (check transport.host and the network)"
            ) from None
        except ConnectionRefusedError:
            client.close()
            raise _Transient(f"{where} refused the SSH connection (is sshd running on port {cfg.port}?)") from None
        except (EOFError, ConnectionResetError) as exc:
            client.close()
            raise _Transient(f"{where} closed the connection during the SSH handshake ({exc or type(exc).__name__})") from None
        except OSError as exc:
            client.close()
            if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EHOSTDOWN, errno.ETIMEDOUT):
                raise _Transient(f"{where} is unreachable: {exc.strerror}") from None
            raise DeployError(f"Connecting to {where} failed: {exc}.") from None
        except paramiko.SSHException as exc:
            inner = None
            with contextlib.suppress(Exception):
                inner = client.get_transport().get_exception()
            client.close()
            text = str(exc) + (f": {inner}" if inner and str(inner) not in str(exc) else "")
            lowered = text.lower()
            if any(word in lowered for word in ("banner", "timed out", "timeout", "no existing session", "negotiation failed")):
                raise _Transient(
                    f"{where} accepted the TCP connection but did not complete the SSH handshake within "
                    f"{timeout:g} s ({text.strip()})"
                ) from None
            raise DeployError(f"SSH negotiation with {where} failed: {text}.") from None
        transport = client.get_transport()
        if transport is not None and self.cfg.keepalive > 0:
            transport.set_keepalive(self.cfg.keepalive)
        return client

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
