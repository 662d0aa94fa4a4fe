"""Where an emulated device keeps its files on the host: everything under its home, ``results/emu/``
for the rpi4 kind and ``results/emu-rpi3/`` for the rpi3 kind (:mod:`pipeline.emu.kinds`).

    results/emu/
      image/              the finished build (renamed into place only when complete)
        rootfs/           the Debian root filesystem (arm64 bookworm; armhf bullseye for rpi3)
        build.json        stamp: recipe, package versions, wheel, build time
      downloads/          the tflite-runtime wheel fetched on the host
      build.log           output of the last build (debootstrap, verification)
      run/                only while the device runs: throwaway keys, known_hosts, state.json, sshd.log
      targets/            the generated target file ``emu-rpi4.yaml`` / ``emu-rpi3.yaml`` (only while it runs)
      .lock               serialises build / start / stop

build, start and stop run as root on this tree, which sits in a user's checkout: :meth:`EmuLayout.locked`
refuses a tree (or any of its top-level entries) that is a link or belongs to another user.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

from pipeline.emu.kinds import DEFAULT_KIND, EmuKind
from pipeline.errors import EdgeshipError
from pipeline.paths import results_dir
from pipeline.safe_paths import check_owned, open_nofollow, require_owned_dir

#: the target name ``edgeship deploy`` uses for the default (rpi4) emulated device
TARGET_NAME = DEFAULT_KIND.target_name

#: files of the device's own sshd, as seen from inside the root filesystem
DEVICE_ETC = "/etc/edgeship"
DEVICE_SSHD_CONFIG = f"{DEVICE_ETC}/sshd_config"
DEVICE_HOST_KEY = f"{DEVICE_ETC}/ssh_host_ed25519_key"
DEVICE_AUTHORIZED_KEYS = f"{DEVICE_ETC}/authorized_keys"
DEVICE_USER = "root"


@dataclass(frozen=True)
class EmuLayout:
    """Paths of one emulated-device home (``results/<kind home>`` unless a test chooses another)."""

    root: Path
    kind: EmuKind = field(default=DEFAULT_KIND)

    @classmethod
    def default(cls, root: Optional[Path] = None, kind: EmuKind = DEFAULT_KIND) -> "EmuLayout":
        return cls(Path(root) if root is not None else results_dir() / kind.home, kind)

    @property
    def target_name(self) -> str:
        return self.kind.target_name

    @property
    def image(self) -> Path:
        return self.root / "image"

    @property
    def rootfs(self) -> Path:
        return self.image / "rootfs"

    @property
    def stamp(self) -> Path:
        return self.image / "build.json"

    @property
    def downloads(self) -> Path:
        return self.root / "downloads"

    @property
    def build_log(self) -> Path:
        return self.root / "build.log"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def state(self) -> Path:
        return self.run / "state.json"

    @property
    def client_key(self) -> Path:
        return self.run / "client_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.run / "known_hosts"

    @property
    def sshd_log(self) -> Path:
        return self.run / "sshd.log"

    @property
    def targets(self) -> Path:
        return self.root / "targets"

    @property
    def target_file(self) -> Path:
        return self.targets / f"{self.kind.target_name}.yaml"

    def in_rootfs(self, device_path: str, rootfs: Optional[Path] = None) -> Path:
        """The host path of ``device_path`` (absolute, as seen inside the device)."""
        return (rootfs or self.rootfs) / device_path.lstrip("/")

    def check_owned(self) -> None:
        """Refuse to act (as root) on a tree whose top-level entries are links or another user's."""
        require_owned_dir(self.root, "the emulated device's home")
        for path in (self.image, self.rootfs, self.downloads, self.run, self.targets, self.build_log, self.root / ".lock"):
            check_owned(path, "part of the emulated device's home")

    def busy(self) -> bool:
        """True while another build/start/stop holds the lock (its half-built files are not leftovers)."""
        try:
            fd = open_nofollow(self.root / ".lock", os.O_RDONLY)
        except (OSError, EdgeshipError):  # missing, a link, not a file: nobody holds a lock there
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def locked(self, log: Callable[[str], None] = lambda _: None) -> Iterator[None]:
        """One build/start/stop at a time: they share one root filesystem and its mounts."""
        self.check_owned()
        fd = open_nofollow(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log(f"waiting for another `edgeship emu` command (lock {self.root / '.lock'})")
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
