"""Host keys: the known_hosts policy for SSH connections and recording a new key (accept-new).

paramiko checks the server's key against the loaded known_hosts and calls the policy only when the
host has no entry at all. Under ``accept-new`` the key is then recorded - but another process may
have recorded a key for the same host since this one loaded the file, so the file is re-read under
an exclusive lock and a different key there is refused as a changed key, never appended beside it.
A symlinked known_hosts (dotfile managers) keeps its link: the file it points to is rewritten.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import logging
import os
import shlex
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import DeployError
from pipeline.fsutil import atomic_write_bytes

if TYPE_CHECKING:  # pragma: no cover
    import paramiko

    from pipeline.config.target import SSHTransportConfig

log = logging.getLogger(__name__)


class HostKeyError(DeployError):
    """The server's host key is unknown (strict policy) or has changed."""


def fingerprint(key: "paramiko.PKey") -> str:
    """OpenSSH's ``SHA256:<base64 without padding>`` form."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def known_hosts_name(host: str, port: int) -> str:
    """How OpenSSH names a host in known_hosts: ``host`` on port 22, ``[host]:port`` otherwise."""
    return host if port == 22 else f"[{host}]:{port}"


def changed_key_error(
    cfg: "SSHTransportConfig", expected: "paramiko.PKey", offered: "paramiko.PKey", note: str = ""
) -> HostKeyError:
    """The refusal for a key that differs from the recorded one, with the commands to inspect and fix it."""
    known_hosts = Path(cfg.known_hosts)
    name = known_hosts_name(cfg.host, cfg.port)
    qname, qfile = shlex.quote(name), shlex.quote(str(known_hosts))
    return HostKeyError(
        f"REFUSED: the SSH host key of {name} has CHANGED{note}. The known_hosts file {known_hosts} expects "
        f"{expected.get_name()} {fingerprint(expected)} but the server offered "
        f"{offered.get_name()} {fingerprint(offered)}. This happens when a device is reinstalled, but it is "
        "also what a man-in-the-middle attack looks like, so edgeship never accepts a changed key. "
        f"Inspect the stored entry with `ssh-keygen -F {qname} -f {qfile}`; if the change is expected, "
        f"remove it with `ssh-keygen -R {qname} -f {qfile}` and add the new key "
        f"(`ssh-keyscan -p {cfg.port} {shlex.quote(cfg.host)} >> {qfile}`) after checking its fingerprint on the device."
    )


def _recorded_key(path: Path, hostname: str, key: "paramiko.PKey") -> "paramiko.PKey | None":
    """The key ``path`` records for ``hostname`` (the one of ``key``'s type if several), or None."""
    import paramiko

    if not path.exists():
        return None
    keys = paramiko.HostKeys()
    keys.load(str(path))
    entry = keys.lookup(hostname)
    if not entry:
        return None
    return entry.get(key.get_name()) or next(iter(entry.values()))


def record_new_host_key(cfg: "SSHTransportConfig", hostname: str, key: "paramiko.PKey") -> bool:
    """Append ``hostname``'s key to known_hosts under a lock; False if that very key is already there.

    Raises :class:`HostKeyError` if another key was recorded for the host meanwhile, or the file
    cannot be written.
    """
    import paramiko

    link = Path(cfg.known_hosts)
    path = Path(os.path.realpath(link))  # write through a symlink, never over it
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(path.with_name(f".{path.name}.edgeship-lock"), "a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                recorded = _recorded_key(path, hostname, key)
                if recorded is not None:
                    if recorded == key:
                        return False
                    raise changed_key_error(cfg, recorded, key, note=" (another process recorded a different key meanwhile)")
                existing = path.read_text(encoding="utf-8") if path.exists() else ""
                mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o600
                if existing and not existing.endswith("\n"):
                    existing += "\n"
                line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
                atomic_write_bytes(path, (existing + line).encode("utf-8"), mode=mode)
                return True
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
    except (OSError, paramiko.SSHException, ValueError) as exc:
        raise HostKeyError(
            f"The SSH host key of {hostname} ({key.get_name()} {fingerprint(key)}) is new and host_key_policy "
            f"is accept-new, but it could not be recorded in {link}: {exc}."
        ) from None


def _key_file_kind(key: "paramiko.PKey") -> str:
    name = key.get_name()
    if "ed25519" in name:
        return "ed25519"
    if "ecdsa" in name:
        return "ecdsa"
    return "rsa"


def make_policy(cfg: "SSHTransportConfig", target_hint: str) -> "paramiko.MissingHostKeyPolicy":
    """The policy paramiko calls for a host with no known_hosts entry: refuse, or record (accept-new)."""
    import paramiko

    class KnownHostsPolicy(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client, hostname, key):  # noqa: D401 - paramiko API
            known_hosts = Path(cfg.known_hosts)
            if cfg.host_key_policy == "accept-new":
                if record_new_host_key(cfg, hostname, key):
                    log.warning(
                        "accepted new host key for %s: %s %s (recorded in %s)", hostname, key.get_name(), fingerprint(key), known_hosts
                    )
                client.get_host_keys().add(hostname, key.get_name(), key)
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
