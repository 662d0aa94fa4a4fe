"""A real OpenSSH server on 127.0.0.1: the loopback "device" of the deploy tests and the farm lab.

Throwaway ed25519 host and client keys (ssh-keygen), its own sshd_config (key-only login, internal
sftp, no PAM), a known_hosts file holding the host key as ``[127.0.0.1]:PORT``, and stop / kill /
restart. The server runs as the current user (root in CI), so the "device" directory is a plain local
path the tests can inspect directly.

A server directory can be reused: every ``SSHServer(root)`` replaces the keys, config and
known_hosts left there by an earlier server (a lab that was stopped or killed).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml

from pipeline.errors import EdgeshipError
from pipeline.fsutil import atomic_write_text
from pipeline.safe_paths import insecure_component, open_log

SSHD = Path("/usr/sbin/sshd")
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"


def sshd_available() -> bool:
    return SSHD.is_file() and Path(SSH_KEYGEN).is_file()


_LISTEN_PORTS = random.Random()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port() -> int:
    """A loopback TCP port that is free now, chosen outside the kernel's ephemeral range.

    Port 0 would hand out an ephemeral port, the same pool every outgoing connection draws from:
    with hundreds of SSH connections in a test run, one of them can take the port before the
    server that was promised it binds it. Ports below (or above) that range are only ever taken
    by listeners.
    """
    low, high = _ephemeral_range()
    roomy = [r for r in (range(10000, low), range(high + 1, 65536)) if len(r) >= 1000]
    for _ in range(50 if roomy else 0):
        port = _LISTEN_PORTS.choice(roomy[0])
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def keygen(path: Path, comment: str = "edgeship-test") -> Path:
    """A new passphrase-less ed25519 key pair at ``path`` / ``path.pub``, replacing any pair there
    (ssh-keygen would ask "Overwrite (y/n)?" and, without a terminal, fail)."""
    for old in (Path(path), Path(f"{path}.pub")):
        old.unlink(missing_ok=True)  # a link is removed, never followed
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return path


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    out, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            out.append(child)
            stack.append(child)
    return out


class LoopbackServer:
    """What every loopback SSH server shares (OpenSSH here, dropbear in :mod:`pipeline.lab.dropbear`):
    its directory, port and throwaway client key, the known_hosts entry, the daemon's lifecycle and
    target files that point at it. Subclasses set ``host_key`` (public half in ``host_public_key``),
    ``log`` and implement :meth:`start`."""

    root: Path
    user: str
    port: int
    client_key: Path
    known_hosts: Path
    host_key: Path
    log: Path
    proc: Optional[subprocess.Popen]
    #: the program named in start-up errors
    daemon = "sshd"

    def start(self, timeout: float = 10.0, detach: bool = False) -> "LoopbackServer":
        raise NotImplementedError

    def _wait_ready(self, timeout: float) -> None:
        """Until the daemon sends its SSH banner; its exit (with its log) is an error."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.daemon} exited with {self.proc.returncode}: "
                    f"{self.proc.stderr.read().decode() if self.proc.stderr else ''} "
                    f"{self.log.read_text() if self.log.exists() else ''}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.settimeout(2)
                    if sock.recv(64).startswith(b"SSH-"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.daemon} did not accept connections on port {self.port} within {timeout} s")

    def _trusted_files(self) -> tuple[Path, ...]:
        """Every file the daemon reads to decide who may log in (checked by :meth:`_check_files`)."""
        raise NotImplementedError

    def _check_files(self) -> None:
        """The log is never a link (``-E`` follows one); as root, nobody else may change the daemon's files."""
        open_log(self.log).close()
        if os.geteuid() != 0:
            return
        for path in self._trusted_files():
            weak = insecure_component(path)
            if weak is not None:
                raise EdgeshipError(
                    f"Refusing to start {self.daemon} as root with {path}: {weak} is not owned by root or can be written by "
                    "other users, so one of them could replace the server's keys or config and log in as root. Use a "
                    f"directory only root controls (`sudo chown root: {weak} && sudo chmod go-w {weak}`), or run "
                    "edgeship as that user instead of root."
                )

    # -- lifecycle ---------------------------------------------------------------------------
    def kill(self) -> None:
        """SIGKILL the daemon and every session process it forked (like pulling the plug)."""
        if self.proc is None:
            return
        pids = _descendants(self.proc.pid)
        for pid in [self.proc.pid, *pids]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is None:
            return
        pids = _descendants(self.proc.pid)
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc = None

    def restart(self) -> "LoopbackServer":
        self.stop()
        return self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- keys --------------------------------------------------------------------------------
    @property
    def known_hosts_name(self) -> str:
        return f"[127.0.0.1]:{self.port}"

    def host_public_key(self) -> str:
        """``<kind> <base64>`` of the host key, from its OpenSSH-format ``.pub`` file."""
        kind, blob = Path(f"{self.host_key}.pub").read_text().split()[:2]
        return f"{kind} {blob}"

    def write_known_hosts(self, path: Optional[Path] = None, key_line: Optional[str] = None) -> Path:
        path = Path(path or self.known_hosts)
        atomic_write_text(path, f"{self.known_hosts_name} {key_line or self.host_public_key()}\n")
        return path

    # -- targets -----------------------------------------------------------------------------
    def target_dict(self, name: str, remote_dir: Path | str, python: str, **overrides: Any) -> dict[str, Any]:
        transport = {
            "type": "ssh",
            "host": "127.0.0.1",
            "port": self.port,
            "user": self.user,
            "key_file": str(self.client_key),
            "known_hosts": str(self.known_hosts),
            "host_key_policy": "strict",
            "connect_timeout": 5,
            "command_timeout": 120,
            "keepalive": 5,
            "retries": 0,
            "retry_backoff": 0.2,
        }
        transport.update(overrides.pop("transport", {}))
        data: dict[str, Any] = {
            "name": name,
            "description": "loopback sshd for tests",
            "arch": os.uname().machine if os.uname().machine in ("aarch64", "armv7l", "x86_64") else "x86_64",
            "os": "debian",
            "cores": 2,
            "threads": 1,
            "runtime": "auto",
            "python": python,
            "remote_dir": str(remote_dir),
            "keep_releases": 3,
            "profiling": {"runs": 5, "min_seconds": 0.0, "warmup": 1},
            "transport": transport,
        }
        data.update(overrides)
        return data

    def write_target(self, path: Path, name: str, remote_dir: Path | str, python: str, **overrides: Any) -> Path:
        path = Path(path)
        path.write_text(yaml.safe_dump(self.target_dict(name, remote_dir, python, **overrides), sort_keys=False))
        return path


class SSHServer(LoopbackServer):
    """One sshd with its own files under ``root``.

    sshd's own ``StrictModes`` stays off: it rejects every path below a world-writable directory,
    sticky or not, so a server under /tmp (every test's) could not start. Instead, when this
    process is root (the only case where a planted ``authorized_keys`` or config would hand out
    root logins), :meth:`start` refuses unless each file sshd reads, and every directory on the
    way to it, is owned by root and writable by nobody else (a sticky directory such as /tmp
    excepted: there others cannot rename what is root's). No other user can then change those
    files later either, which is what StrictModes is for. A non-root sshd can only log in its
    own user, so it is not checked.
    """

    def __init__(self, root: Path, user: Optional[str] = None, sftp: bool = True, env: Optional[Mapping[str, str]] = None):
        """``sftp=False`` leaves out the sftp subsystem (the server refuses it); ``env`` adds variables
        to every session (``PATH`` included: sshd sets it after its default)."""
        setenv = " ".join(["SHLVL=1", *(_setenv_word(k, v) for k, v in (env or {}).items())])
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.user = user or current_user()
        self.port = free_port()
        self.host_key = keygen(self.root / "ssh_host_ed25519_key", "edgeship-test-host")
        self.client_key = keygen(self.root / "client_ed25519", "edgeship-test-client")
        self.authorized_keys = self.root / "authorized_keys"
        atomic_write_text(self.authorized_keys, Path(f"{self.client_key}.pub").read_text())
        self.config = self.root / "sshd_config"
        self.log = self.root / "sshd.log"
        self.pidfile = self.root / "sshd.pid"
        self.known_hosts = self.root / "known_hosts"
        self.write_known_hosts()
        atomic_write_text(
            self.config,
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {self.host_key}",
                    f"PidFile {self.pidfile}",
                    f"AuthorizedKeysFile {self.authorized_keys}",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin prohibit-password",
                    "UsePAM no",
                    "StrictModes no",
                    "UseDNS no",
                    "PrintMotd no",
                    # the test user's ~/.bashrc may be slow (pyenv init); bash skips it for ssh commands
                    # when SHLVL says it is not a top-level shell
                    f"SetEnv {setenv}",
                    "MaxStartups 50:30:100",
                    "MaxSessions 50",
                    # sftp=False: a server that refuses the sftp subsystem (the exec-channel fallback's tests)
                    *(["Subsystem sftp internal-sftp"] if sftp else []),
                    "LogLevel VERBOSE",
                    "",
                ]
            ),
        )
        self.proc: Optional[subprocess.Popen] = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 10.0, detach: bool = False) -> "SSHServer":
        """Start sshd in the foreground of a child process; ``detach`` puts it in its own session
        so it outlives this process (the lab's servers run until ``edgeship lab stop``)."""
        self._check_files()
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation directory
        self.proc = subprocess.Popen(
            [str(SSHD), "-D", "-f", str(self.config), "-E", str(self.log)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL if detach else subprocess.PIPE,
            start_new_session=detach,
        )
        self._wait_ready(timeout)
        return self

    def _trusted_files(self) -> tuple[Path, ...]:
        return (self.config, self.host_key, self.authorized_keys, self.log)

    def regenerate_host_key(self) -> None:
        """A new host key (as after reinstalling the device); restart to take effect."""
        keygen(self.host_key, "edgeship-test-host-new")


def _setenv_word(name: str, value: str) -> str:
    if not name.isidentifier() or any(c.isspace() or c in "\"'\\" for c in value):
        raise ValueError(f"SSHServer env {name}={value!r}: names must be identifiers, values without spaces or quotes")
    return f"{name}={value}"


def current_user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name
