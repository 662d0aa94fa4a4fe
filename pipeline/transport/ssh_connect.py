"""One SSH connection attempt, with every paramiko and socket failure turned into a message.

A failure that may pass (refused, timed out, unreachable, handshake cut short) is a
:class:`Transient`, which the caller retries with backoff; authentication, host-key and name
problems are :class:`DeployError` at once, since retrying cannot fix them.
"""

from __future__ import annotations

import contextlib
import errno
import shlex
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import DeployError
from pipeline.transport.known_hosts import HostKeyError, changed_key_error, make_policy

if TYPE_CHECKING:  # pragma: no cover
    import paramiko

    from pipeline.config.target import SSHTransportConfig


class Transient(Exception):
    """A connection failure worth retrying (refused, timed out, unreachable)."""


def connect_once(cfg: "SSHTransportConfig", target_name: str) -> "paramiko.SSHClient":
    """One connection attempt; :class:`Transient` for failures worth retrying, DeployError otherwise."""
    client = _client_trusting_known_hosts(cfg, target_name)
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
    except Exception as exc:
        failure = classify_failure(exc, cfg, target_name, client)
        client.close()
        if failure is None:
            raise
        raise failure from None
    transport = client.get_transport()
    if transport is not None and cfg.keepalive > 0:
        transport.set_keepalive(cfg.keepalive)
    return client


def _client_trusting_known_hosts(cfg: "SSHTransportConfig", target_name: str) -> "paramiko.SSHClient":
    """A client that knows only the target's known_hosts file and the target's host-key policy."""
    import paramiko

    client = paramiko.SSHClient()
    known_hosts = Path(cfg.known_hosts)
    if known_hosts.is_file():
        try:
            client.load_system_host_keys(str(known_hosts))
        except (OSError, paramiko.SSHException, ValueError) as exc:
            client.close()
            raise DeployError(f"The known_hosts file {known_hosts} cannot be read: {exc}.") from None
    client.set_missing_host_key_policy(make_policy(cfg, target_name))
    return client


def classify_failure(
    exc: BaseException, cfg: "SSHTransportConfig", target_name: str, client: "paramiko.SSHClient"
) -> "Exception | None":
    """The error to raise for a failed ``connect``: Transient, DeployError, or None (a bug: re-raise).

    The order matters: paramiko's key and auth errors are SSHExceptions, and the socket errors are
    all OSErrors, so the specific ones come first.
    """
    return (
        _credentials_failure(exc, cfg, target_name)
        or _network_failure(exc, cfg, target_name)
        or _handshake_failure(exc, cfg, client)
    )


def _credentials_failure(exc: BaseException, cfg: "SSHTransportConfig", target_name: str) -> "DeployError | None":
    """Host key and authentication problems: retrying cannot fix them."""
    import paramiko

    where = f"{cfg.host}:{cfg.port}"
    if isinstance(exc, paramiko.BadHostKeyException):
        return changed_key_error(cfg, exc.expected_key, exc.key)
    if isinstance(exc, paramiko.PasswordRequiredException):
        return DeployError(
            f"The SSH key file {cfg.key_file} for {cfg.user}@{where} is protected by a passphrase, which edgeship "
            f"does not ask for. Load it into ssh-agent (`ssh-add {shlex.quote(str(cfg.key_file))}`) and remove "
            "key_file from the target, or use a dedicated deploy key without a passphrase."
        )
    if isinstance(exc, paramiko.AuthenticationException):
        how = f"key file {cfg.key_file}" if cfg.key_file else "ssh-agent and the default keys in ~/.ssh"
        return DeployError(
            f"SSH authentication as user '{cfg.user}' on {where} failed using {how} ({exc}). Check "
            f"transport.user and transport.key_file of {target_name}, and that the public key is in "
            f"~{cfg.user}/.ssh/authorized_keys on the device (`ssh-copy-id -p {cfg.port} {cfg.user}@{cfg.host}`)."
        )
    return None


def _network_failure(exc: BaseException, cfg: "SSHTransportConfig", target_name: str) -> "Exception | None":
    """Name resolution (fatal) and refused, unreachable or timed-out connections (transient)."""
    import paramiko

    where = f"{cfg.host}:{cfg.port}"
    if isinstance(exc, socket.gaierror):
        return DeployError(
            f"Cannot resolve the SSH host name '{cfg.host}' of {target_name}: {exc.strerror or exc}. "
            "Check transport.host (a name on your network or an IP address)."
        )
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        codes = {getattr(e, "errno", None) for e in exc.errors.values()}
        if codes <= {errno.ECONNREFUSED}:
            return Transient(
                f"{where} refused the SSH connection: no SSH server is listening there (is sshd running, "
                f"is transport.port {cfg.port} right?)"
            )
        return Transient(f"{where} is unreachable ({exc})")
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return Transient(
            f"Connecting to {where} timed out after {cfg.connect_timeout:g} s: the device is off, asleep or unreachable "
            "from here (check transport.host and the network)"
        )
    if isinstance(exc, ConnectionRefusedError):
        return Transient(f"{where} refused the SSH connection (is sshd running on port {cfg.port}?)")
    if isinstance(exc, (EOFError, ConnectionResetError)):
        return Transient(f"{where} closed the connection during the SSH handshake ({str(exc) or type(exc).__name__})")
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EHOSTDOWN, errno.ETIMEDOUT):
            return Transient(f"{where} is unreachable: {exc.strerror}")
        return DeployError(f"Connecting to {where} failed: {exc}.")
    return None


def _handshake_failure(exc: BaseException, cfg: "SSHTransportConfig", client: "paramiko.SSHClient") -> "Exception | None":
    """An SSH-level failure after TCP connected: a stalled or cut banner is transient, the rest is not."""
    import paramiko

    if not isinstance(exc, paramiko.SSHException):
        return None
    where = f"{cfg.host}:{cfg.port}"
    inner = None
    with contextlib.suppress(Exception):
        inner = client.get_transport().get_exception()
    text = str(exc) + (f": {inner}" if inner and str(inner) not in str(exc) else "")
    lowered = text.lower()
    if any(word in lowered for word in ("banner", "timed out", "timeout", "no existing session", "negotiation failed")):
        return Transient(
            f"{where} accepted the TCP connection but did not complete the SSH handshake within "
            f"{cfg.connect_timeout:g} s ({text.strip()})"
        )
    return DeployError(f"SSH negotiation with {where} failed: {text}.")
