"""Run an emulated Raspberry Pi: its own ARM sshd, chrooted into the kind's cached rootfs, on loopback.

``start`` binds /proc, /sys, /dev and /dev/pts into the rootfs, makes throwaway ed25519 host and
client keys, launches ``chroot ROOTFS /usr/sbin/sshd -D`` (ARM code, run by qemu through
binfmt_misc) on a free 127.0.0.1 port, and writes a target file (``results/emu/targets/emu-rpi4.yaml``,
``results/emu-rpi3/targets/emu-rpi3.yaml``)
whose known_hosts holds exactly that host key, checked strictly. ``stop`` ends sshd and every
process running inside the rootfs, unmounts the binds in reverse order and removes the run files;
the rootfs stays cached.

Latency measured here is emulation (qemu translating ARM code on an x86 CPU): it says nothing about
a Raspberry Pi's speed. The target says ``emulated: true`` so every profile record carries that.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from pipeline.clock import utc_now
from pipeline.emu import host, mounts
from pipeline.emu.layout import (
    DEVICE_AUTHORIZED_KEYS,
    DEVICE_ETC,
    DEVICE_HOST_KEY,
    DEVICE_SSHD_CONFIG,
    DEVICE_USER,
    TARGET_NAME,
    EmuLayout,
)
from pipeline.emu.kinds import DEFAULT_KIND, EmuKind
from pipeline.emu.rootfs import CHROOT_ENV, cached_image, leftovers, read_stamp, remove_leftovers
from pipeline.errors import EdgeshipError
from pipeline.fsutil import atomic_write_json, atomic_write_text
from pipeline.proc_identity import is_same_process, start_ticks
from pipeline.safe_paths import confined, open_log, tail_text

Log = Callable[[str], None]
LOOPBACK = "127.0.0.1"
START_TIMEOUT = 90.0  # sshd under emulation needs a few seconds; a loaded CI machine more
LATENCY_WARNING = DEFAULT_KIND.latency_warning()


@dataclass
class DeviceStatus:
    """What is running, where, and what is wrong if it is half up."""

    running: bool
    root: Path
    rootfs: Path
    image: Optional[dict[str, Any]] = None
    pid: Optional[int] = None
    port: Optional[int] = None
    started_at: Optional[str] = None
    target_file: Optional[Path] = None
    known_hosts: Optional[Path] = None
    client_key: Optional[Path] = None
    mounts: list[str] = field(default_factory=list)
    processes: list[int] = field(default_factory=list)
    binfmt: dict[str, Optional[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    target_name: str = TARGET_NAME
    machine: str = DEFAULT_KIND.machine

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return json.loads(json.dumps(data, default=str))


# -- public API ----------------------------------------------------------------------------------
def start(layout: Optional[EmuLayout] = None, log: Log = lambda _: None) -> DeviceStatus:
    """Start the device (or return the running one); the image must have been built."""
    layout = layout or EmuLayout.default()
    current = status(layout)
    if current.running:
        log(f"already running: sshd pid {current.pid} on {LOOPBACK}:{current.port}")
        return current
    name = layout.target_name
    host.require_root(f"Starting the emulated device {name}")
    with layout.locked(log):
        current = status(layout)
        if current.running:  # started by another command while we waited for the lock
            return current
        if cached_image(layout) is None:
            raise EdgeshipError(
                f"There is no built emulated device {name} under {layout.image} (or it is from an older recipe). "
                f"Build it first with `edgeship emu build --device {layout.kind.name}` (several minutes, once)."
            )
        host.prepare_host(f"Starting the emulated device {name}", log, layout.kind)
        _teardown(layout, log)  # leftovers of a run that crashed or of a reboot
        _write_keys(layout)
        mounts.bind_system_dirs(layout.rootfs, within=layout.root)
        try:
            proc, port = _launch_sshd(layout, log)
            state = {"pid": proc.pid, "pid_start": start_ticks(proc.pid), "port": port, "started_at": utc_now("seconds")}
            atomic_write_json(layout.state, state)
            _write_known_hosts(layout, port)
            _write_target(layout, port)
        except BaseException:
            _teardown(layout, log)
            raise
        log(f"{name} is up: {layout.kind.machine} sshd pid {proc.pid} on {LOOPBACK}:{port}, target {layout.target_file}")
        return status(layout)


def stop(layout: Optional[EmuLayout] = None, log: Log = lambda _: None) -> DeviceStatus:
    """Stop sshd and everything running inside the rootfs, unmount the binds, remove what a killed
    build left behind; keep the finished rootfs."""
    layout = layout or EmuLayout.default()
    found = status(layout)
    if not (layout.state.exists() or found.mounts or found.processes or leftovers(layout)):
        return found  # nothing to stop
    host.require_root(f"Stopping the emulated device {layout.target_name}")
    with layout.locked(log):
        _teardown(layout, log)
        remove_leftovers(layout, log)
        return status(layout)


def status(layout: Optional[EmuLayout] = None) -> DeviceStatus:
    """Read-only: is sshd alive and answering, what is mounted, what the image is."""
    layout = layout or EmuLayout.default()
    found = DeviceStatus(
        running=False, root=layout.root, rootfs=layout.rootfs, image=read_stamp(layout),
        target_name=layout.target_name, machine=layout.kind.machine,
    )  # fmt: skip
    found.binfmt = host.binfmt_state(layout.kind)
    if layout.rootfs.exists():
        try:
            confined(layout.rootfs, layout.root)
        except EdgeshipError as exc:
            found.problems.append(str(exc))
            return found
        found.mounts = [str(p) for p in mounts.mounts_under(layout.rootfs)]
        found.processes = mounts.processes_in(layout.rootfs)
    if layout.busy():
        found.problems.append("another `edgeship emu` command (a build?) is running right now")
    else:
        for stale in leftovers(layout):
            found.problems.append(f"{stale} is left from a killed build; `edgeship emu stop` (or the next build) removes it")
    state = _read_state(layout)
    if state is None:
        if found.mounts or found.processes:
            found.problems.append("leftovers of an earlier run (mounts or processes); `edgeship emu stop` cleans them up")
        return found
    found.pid, found.port, found.started_at = state.get("pid"), state.get("port"), state.get("started_at")
    found.target_file = layout.target_file if layout.target_file.exists() else None
    found.known_hosts, found.client_key = layout.known_hosts, layout.client_key
    if not _same_process(state):
        found.problems.append(f"sshd (pid {found.pid}) is no longer running; `edgeship emu start` restarts it")
    elif not _answers_ssh(found.port):
        found.problems.append(f"sshd (pid {found.pid}) runs but does not answer on {LOOPBACK}:{found.port}")
    else:
        found.running = True
    if found.binfmt.get("enabled") != "yes":
        found.running = False
        found.problems.append(
            f"the binfmt_misc handler for {layout.kind.machine} is gone (after a reboot?); `edgeship emu start` registers it"
        )
    return found


# -- processes -----------------------------------------------------------------------------------
def _same_process(state: dict[str, Any]) -> bool:
    """Our sshd, not a later process that got its PID (after a reboot or PID reuse)."""
    return is_same_process(state.get("pid"), state.get("pid_start"))


def _teardown(layout: EmuLayout, log: Log) -> None:
    """End sshd and everything inside the rootfs, unmount in reverse order, delete the run files."""
    state = _read_state(layout)
    ours = [state["pid"]] if state and _same_process(state) else []
    if layout.rootfs.exists():
        mounts.end_processes(layout.rootfs, ours, log, within=layout.root)
        for point in mounts.unbind_all(layout.rootfs, within=layout.root):
            log(f"unmounted {point}")
    elif ours:  # the rootfs was deleted under a running sshd
        os.kill(ours[0], signal.SIGTERM)
    for path in (layout.target_file, layout.state, layout.known_hosts, layout.client_key, Path(f"{layout.client_key}.pub")):
        path.unlink(missing_ok=True)
    if layout.rootfs.exists():
        layout.in_rootfs(DEVICE_HOST_KEY).unlink(missing_ok=True)
        layout.in_rootfs(DEVICE_AUTHORIZED_KEYS).unlink(missing_ok=True)


# -- keys and sshd -------------------------------------------------------------------------------
def _ed25519_pair(comment: str) -> tuple[bytes, str]:
    """A fresh ed25519 key: OpenSSH private key bytes and the ``ssh-ed25519 AAAA... comment`` line."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return private, f"{public} {comment}"


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _write_keys(layout: EmuLayout) -> None:
    """New host key inside the rootfs, new client key on the host, authorized_keys inside the rootfs."""
    host_private, host_public = _ed25519_pair(f"{layout.target_name}-host")
    client_private, client_public = _ed25519_pair(f"edgeship-{layout.target_name}-client")
    etc = layout.in_rootfs(DEVICE_ETC)
    etc.mkdir(mode=0o755, parents=True, exist_ok=True)
    _write_private(layout.in_rootfs(DEVICE_HOST_KEY), host_private)
    atomic_write_text(Path(f"{layout.in_rootfs(DEVICE_HOST_KEY)}.pub"), host_public + "\n")
    atomic_write_text(layout.in_rootfs(DEVICE_AUTHORIZED_KEYS), client_public + "\n")
    _write_private(layout.client_key, client_private)
    atomic_write_text(Path(f"{layout.client_key}.pub"), client_public + "\n")


def sshd_config(port: int, kind: EmuKind = DEFAULT_KIND) -> str:
    """Key-only root login on loopback; no PAM (nothing to configure inside the chroot)."""
    return "\n".join(
        [
            f"# written by `edgeship emu start`; {kind.latency_warning()}",
            f"Port {port}",
            f"ListenAddress {LOOPBACK}",
            f"HostKey {DEVICE_HOST_KEY}",
            "PidFile none",
            f"AuthorizedKeysFile {DEVICE_AUTHORIZED_KEYS}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            *kind.sshd_options,
            "PermitRootLogin prohibit-password",
            "UsePAM no",
            "UseDNS no",
            "PrintMotd no",
            "PrintLastLog no",
            "MaxStartups 50:30:100",
            "MaxSessions 50",
            "Subsystem sftp internal-sftp",
            "LogLevel INFO",
            "",
        ]
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


# In its own UTS namespace the device has its own host name (profile records show emu-rpi4, not the
# host's name). A fixed script with positional parameters: no path is ever interpolated into shell code.
_SSHD_SCRIPT = 'hostname "$1" && exec chroot "$2" /usr/sbin/sshd -D -e -f "$3"'


def sshd_argv(rootfs: Path, hostname: str = DEFAULT_KIND.hostname) -> list[str]:
    """``unshare --uts`` + ``chroot ROOTFS /usr/sbin/sshd -D``; sshd ends up with this process's PID."""
    return ["unshare", "--uts", "sh", "-c", _SSHD_SCRIPT, "sh", hostname, str(rootfs), DEVICE_SSHD_CONFIG]


def _launch_sshd(layout: EmuLayout, log: Log, attempts: int = 3) -> tuple[subprocess.Popen, int]:
    """Start the rootfs's sshd on a free port (another free port if that one was taken meanwhile)."""
    for attempt in range(attempts):
        port = free_port()
        atomic_write_text(layout.in_rootfs(DEVICE_SSHD_CONFIG), sshd_config(port, layout.kind))
        layout.in_rootfs("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
        log(f"starting the {layout.kind.machine} sshd under qemu on {LOOPBACK}:{port}")
        with open_log(layout.sshd_log) as out:
            proc = subprocess.Popen(
                sshd_argv(layout.rootfs, layout.kind.hostname),
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=CHROOT_ENV,
                start_new_session=True,  # survives the edgeship command that started it
            )  # fmt: skip
        problem = _wait_for_banner(proc, port, layout.sshd_log, START_TIMEOUT)
        if problem is None:
            return proc, port
        proc.kill()
        proc.wait(timeout=10)
        if "Address already in use" not in problem or attempt + 1 == attempts:
            raise EdgeshipError(f"The emulated device's sshd did not start: {problem}")
    raise AssertionError("unreachable")


def _wait_for_banner(proc: subprocess.Popen, port: int, log_file: Path, timeout: float) -> Optional[str]:
    """None once sshd greets with ``SSH-``; otherwise what went wrong."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"it exited with code {proc.returncode}; its log {log_file} ends with:\n{tail_text(log_file, 10)}"
        if _answers_ssh(port, timeout=2.0):
            return None
        time.sleep(0.2)
    return f"it did not answer on {LOOPBACK}:{port} within {timeout:.0f} s; log {log_file}:\n{tail_text(log_file, 10)}"


def _answers_ssh(port: Optional[int], timeout: float = 10.0) -> bool:
    if not port:
        return False
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(64).startswith(b"SSH-")
    except OSError:
        return False


# -- files for the host side ---------------------------------------------------------------------
def _write_known_hosts(layout: EmuLayout, port: int) -> None:
    kind, blob = Path(f"{layout.in_rootfs(DEVICE_HOST_KEY)}.pub").read_text().split()[:2]
    atomic_write_text(layout.known_hosts, f"[{LOOPBACK}]:{port} {kind} {blob}\n")


def target_dict(layout: EmuLayout, port: int) -> dict[str, Any]:
    """The generated target: an ARM Debian device reached over SSH with strict host keys."""
    cores, kind = os.cpu_count() or 1, layout.kind
    return {
        "name": kind.target_name,
        "description": kind.description,
        "arch": kind.machine,
        "os": "debian",
        "cores": cores,
        "threads": min(4, cores),
        "runtime": ["tflite_runtime"],
        "python": "python3",
        "remote_dir": "edgeship",
        "default_profile": "default",
        "emulated": True,
        "keep_releases": 3,
        "profiling": {"runs": 20, "min_seconds": 0.5, "warmup": 2},
        "transport": {
            "type": "ssh",
            "host": LOOPBACK,
            "port": port,
            "user": DEVICE_USER,
            "key_file": str(layout.client_key.resolve()),
            "known_hosts": str(layout.known_hosts.resolve()),
            "host_key_policy": "strict",
            "connect_timeout": 30,
            "command_timeout": 1800,  # python3 + numpy + tflite start slowly under emulation
            "keepalive": 15,
            "retries": 2,
            "retry_backoff": 1.0,
        },
    }


def _write_target(layout: EmuLayout, port: int) -> None:
    """Validated against the target schema before it is written, so a deploy never meets a bad file."""
    from pipeline.config.target import parse_target

    data = target_dict(layout, port)
    parse_target(data, f"generated target {layout.target_file}")
    header = (
        f"# Generated by `edgeship emu start` at {utc_now('seconds')}; removed by `edgeship emu stop`. Do not edit.\n"
        f"# {layout.kind.latency_warning()}\n"
    )
    atomic_write_text(layout.target_file, header + yaml.safe_dump(data, sort_keys=False))


def _read_state(layout: EmuLayout) -> Optional[dict[str, Any]]:
    try:
        data = json.loads(layout.state.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None

