"""Make this x86 host able to run ARM programs: root, Debian tools and a binfmt_misc handler per kind.

The Debian tools include the archive keyring: debootstrap checks the mirror's Release signature
against it (``--force-check-gpg``), since the packages it installs later run as root.

binfmt_misc lets the kernel hand every aarch64 (or 32-bit ARM) ELF file to ``qemu-aarch64-static``
(``qemu-arm-static``), so ``chroot ROOTFS /usr/sbin/sshd`` simply works. Registrations vanish at reboot, so ``start`` re-checks them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Optional

from pipeline.emu.kinds import DEFAULT_KIND, EmuKind
from pipeline.errors import EdgeshipError

QEMU = DEFAULT_KIND.qemu  # qemu-user-static ships every architecture's binary
DEBOOTSTRAP = Path("/usr/sbin/debootstrap")
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
#: the tools each Debian package provides; binfmt-support only adds update-binfmts (we can do without)
PACKAGES: dict[str, Path] = {"qemu-user-static": QEMU, "debootstrap": DEBOOTSTRAP, "debian-archive-keyring": KEYRING}
INSTALL_COMMAND = (
    "sudo apt-get update && sudo apt-get install -y qemu-user-static debootstrap debian-archive-keyring binfmt-support"
)
# Each kind's ELF magic and mask are qemu's own (scripts/qemu-binfmt-conf.sh). Flags: F = open the
# interpreter now (works inside any chroot without copying qemu there), C = use the binary's
# credentials (setuid), O = open it for qemu.

Log = Callable[[str], None]


def require_root(action: str) -> None:
    """Everything here (debootstrap, chroot, mount, binfmt_misc) needs root."""
    if os.geteuid() != 0:
        missing = missing_packages()
        also = (
            f" This host also lacks {', '.join(missing)}; install it with `{INSTALL_COMMAND}` (or let the root run do it)."
            if missing
            else ""
        )
        raise EdgeshipError(
            f"{action} needs root: it runs debootstrap and chroot, bind-mounts /proc, /sys and /dev into the "
            "emulated root filesystem and registers qemu with binfmt_misc. Run it as root, e.g. "
            f"`sudo .venv/bin/edgeship emu start` (or `sudo make emu-device`).{also}"
        )


def missing_packages() -> list[str]:
    return [package for package, tool in PACKAGES.items() if not tool.is_file()]


def ensure_packages(log: Log) -> None:
    """Install qemu-user-static and debootstrap with apt-get when missing (root only, like `make setup`)."""
    missing = missing_packages()
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise EdgeshipError(
            f"The emulated device needs {', '.join(missing)} ({', '.join(str(PACKAGES[p]) for p in missing)} is "
            f"missing) and this host has no apt-get to install it. On Debian/Ubuntu run: `{INSTALL_COMMAND}`."
        )
    wanted = [*missing, "binfmt-support"]
    log(f"installing Debian packages: {' '.join(wanted)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *wanted]):
        result = subprocess.run(argv, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            tail = " ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
            raise EdgeshipError(
                f"Installing {' '.join(wanted)} failed (`{' '.join(argv)}` exited {result.returncode}: {tail}). "
                f"Check that the Debian mirror is reachable, then run `{INSTALL_COMMAND}` and retry."
            )
    still = missing_packages()
    if still:
        raise EdgeshipError(f"apt-get reported success but {', '.join(still)} is still missing; run `{INSTALL_COMMAND}`.")


def _entry(kind: EmuKind) -> Path:
    return BINFMT_DIR / kind.binfmt_name


def binfmt_state(kind: EmuKind = DEFAULT_KIND) -> dict[str, Optional[str]]:
    """``{"enabled": "yes"|"no"|None, "interpreter": path, "flags": "OCF"}`` of the kind's handler."""
    try:
        lines = _entry(kind).read_text().splitlines()
    except OSError:
        return {"enabled": None, "interpreter": None, "flags": None}
    fields = dict(line.split(" ", 1) for line in lines[1:] if " " in line)
    return {
        "enabled": "yes" if lines and lines[0].strip() == "enabled" else "no",
        "interpreter": fields.get("interpreter"),
        "flags": fields.get("flags:", fields.get("flags")),
    }


def _mount_binfmt_misc() -> None:
    if (BINFMT_DIR / "register").exists():
        return
    supported = "binfmt_misc" in Path("/proc/filesystems").read_text()
    if not supported:
        subprocess.run(["modprobe", "binfmt_misc"], capture_output=True, stdin=subprocess.DEVNULL)
    result = subprocess.run(
        ["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)], capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    if result.returncode != 0 or not (BINFMT_DIR / "register").exists():
        raise EdgeshipError(
            f"This kernel offers no binfmt_misc at {BINFMT_DIR} ({result.stderr.strip() or 'mount failed'}), so it "
            "cannot run ARM programs through qemu. Load it with `sudo modprobe binfmt_misc && sudo mount -t "
            f"binfmt_misc binfmt_misc {BINFMT_DIR}`; inside a container, register qemu on the machine that runs "
            "the container (`sudo apt-get install -y qemu-user-static binfmt-support` there) and start the "
            "container with --privileged."
        )


def _register_ourselves(kind: EmuKind) -> None:
    """Write qemu's registration string to binfmt_misc (what update-binfmts would do)."""
    line = f":{kind.binfmt_name}:M::{kind.binfmt_magic}:{kind.binfmt_mask}:{kind.qemu}:OCF"
    with open(BINFMT_DIR / "register", "w") as handle:
        handle.write(line)


def ensure_binfmt(log: Log, kind: EmuKind = DEFAULT_KIND) -> dict[str, Optional[str]]:
    """Make sure the kind's binaries run through qemu; register the handler when it is missing."""
    _mount_binfmt_misc()
    name, arch = kind.binfmt_name, kind.machine
    state = binfmt_state(kind)
    if state["enabled"] == "no":
        log(f"enabling the binfmt_misc handler for {arch}")
        _entry(kind).write_text("1")
    elif state["enabled"] is None:
        log(f"registering {kind.qemu.name} with binfmt_misc")
        if shutil.which("update-binfmts"):
            subprocess.run(["update-binfmts", "--enable", name], capture_output=True, stdin=subprocess.DEVNULL)
        if binfmt_state(kind)["enabled"] is None:
            try:
                _register_ourselves(kind)
            except OSError as exc:
                raise EdgeshipError(
                    f"Cannot register {kind.qemu.name} with binfmt_misc ({exc}). Run "
                    f"`sudo update-binfmts --enable {name}` (from binfmt-support) and retry."
                ) from None
    state = binfmt_state(kind)
    if state["enabled"] != "yes":
        raise EdgeshipError(
            f"The binfmt_misc handler {_entry(kind)} for {arch} is not enabled, so {arch} programs cannot run here. "
            f"Run `sudo update-binfmts --enable {name}` (package binfmt-support) and retry."
        )
    return state


def prepare_host(action: str, log: Log, kind: EmuKind = DEFAULT_KIND) -> dict[str, Optional[str]]:
    """Root, qemu-user-static, debootstrap and an enabled binfmt handler for the kind, or a clear error."""
    require_root(action)
    ensure_packages(log)
    if not kind.qemu.is_file():
        raise EdgeshipError(f"{kind.qemu} is missing although qemu-user-static is installed; run `{INSTALL_COMMAND}`.")
    return ensure_binfmt(log, kind)
