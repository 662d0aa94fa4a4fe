"""Build (once) the Debian root filesystem of an emulated Raspberry Pi, per kind (:mod:`pipeline.emu.kinds`).

rpi4 carries the stack of 64-bit Raspberry Pi OS bookworm: Debian's python3 (3.11) and python3-numpy
(1.24), the tflite-runtime 2.14 aarch64 wheel, and openssh-server; rpi3 an old 32-bit stack (armhf
bullseye, Python 3.9, numpy 1.19, tflite-runtime 2.11). Steps:

1. ``debootstrap --foreign --arch=ARCH --keyring=... --force-check-gpg`` (host side: download,
   check the mirror's Release signature against the Debian archive keyring, unpack); a Release
   file that cannot be verified stops the build, never a build from unverified packages;
2. ``chroot ROOTFS /debootstrap/debootstrap --second-stage`` (runs ARM dpkg under qemu);
3. the kind's wheel, fetched on the host with ``pip download --platform ...`` and checked against
   its pinned sha256 (:mod:`pipeline.emu.wheel`), is unpacked into
   /usr/local/lib/python3.X/dist-packages (exactly what pip would put there);
4. ``python3`` inside the rootfs runs a tiny TFLite model under emulation (:mod:`pipeline.emu.probe`;
   an import alone passes stacks that cannot create an interpreter) and reports versions, which go
   into the stamp ``build.json``.

Everything is built in ``<home>/.image-*.partial`` and renamed to ``<home>/image`` only
when all steps passed, so an interrupted build never looks finished. Logs are written without
following links and leftovers are removed only inside the home (:mod:`pipeline.safe_paths`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from pipeline.clock import utc_now
from pipeline.emu import host, mounts
from pipeline.emu.kinds import DEFAULT_KIND, EmuKind
from pipeline.emu.layout import EmuLayout
from pipeline.emu.probe import PROBE_CODE
from pipeline.emu.wheel import fetch_wheel, install_wheel
from pipeline.errors import EdgeshipError
from pipeline.fsutil import atomic_write_json, canonical_json, sha256_bytes
from pipeline.safe_paths import open_log, read_text, tail_text

Log = Callable[[str], None]

DEFAULT_MIRROR = "http://deb.debian.org/debian"
#: the default (rpi4) kind's recipe; see :meth:`EmuKind.recipe`
RECIPE: dict[str, Any] = DEFAULT_KIND.recipe()
HOSTNAME = DEFAULT_KIND.hostname
CHROOT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/root",
    "DEBIAN_FRONTEND": "noninteractive",
}
@dataclass(frozen=True)
class ImageInfo:
    """A finished image: where it is and what its stamp says."""

    rootfs: Path
    stamp: dict[str, Any]
    cached: bool  # True when nothing was built this time

    @property
    def build_seconds(self) -> Optional[float]:
        return self.stamp.get("build_seconds")


def recipe_id(kind: EmuKind = DEFAULT_KIND) -> str:
    return sha256_bytes(canonical_json(kind.recipe()).encode())[:16]


def read_stamp(layout: EmuLayout) -> Optional[dict[str, Any]]:
    """The stamp of the finished image, or None when there is none (or it is unreadable)."""
    try:
        data = json.loads(layout.stamp.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def cached_image(layout: EmuLayout) -> Optional[ImageInfo]:
    """The finished image if it matches the current recipe."""
    stamp = read_stamp(layout)
    if stamp and stamp.get("recipe_id") == recipe_id(layout.kind) and layout.rootfs.is_dir():
        return ImageInfo(layout.rootfs, stamp, cached=True)
    return None


def build_image(
    layout: Optional[EmuLayout] = None,
    *,
    mirror: str = DEFAULT_MIRROR,
    rebuild: bool = False,
    log: Log = lambda _: None,
) -> ImageInfo:
    """The cached image, or build it (several minutes: the second stage runs under emulation)."""
    layout = layout or EmuLayout.default()
    found = cached_image(layout)
    if found and not rebuild:
        return found
    what = f"Building the emulated device {layout.target_name}"
    host.require_root(what)
    with layout.locked(log):
        found = cached_image(layout)
        if found and not rebuild:  # built by another command while we waited for the lock
            return found
        if layout.image.exists() and mounts.mounts_under(layout.image):  # the device is running from it
            raise EdgeshipError(
                f"The emulated device is running from {layout.rootfs}; stop it (`edgeship emu stop`) before rebuilding."
            )
        host.prepare_host(what, log, layout.kind)
        remove_leftovers(layout, log)
        started = time.monotonic()
        wheel = fetch_wheel(layout.downloads, log, layout.kind.wheel)
        check_mirror(mirror, layout.kind.suite)
        partial = Path(tempfile.mkdtemp(prefix=".image-", suffix=".partial", dir=layout.root))
        try:
            stamp = _build_into(partial, wheel, mirror, layout, log)
            stamp["build_seconds"] = round(time.monotonic() - started, 1)
            atomic_write_json(partial / "build.json", stamp)
            _swap_into_place(partial, layout)
        except BaseException:
            mounts.remove_tree(partial, within=layout.root)
            raise
        log(f"built {layout.rootfs} in {stamp['build_seconds']:.0f} s")
        return ImageInfo(layout.rootfs, stamp, cached=False)


def _build_into(partial: Path, wheel: Path, mirror: str, layout: EmuLayout, log: Log) -> dict[str, Any]:
    rootfs, build_log, kind = partial / "rootfs", layout.build_log, layout.kind
    with open_log(build_log, truncate=True) as out:
        out.write(f"# edgeship emu build {utc_now('seconds')} ({kind.name})\n".encode())
    log(f"debootstrap (first stage) of Debian {kind.suite} {kind.debian_arch} from {mirror}; log: {build_log}")
    first_stage(rootfs, mirror, build_log, kind)
    shutil.copy2(kind.qemu, rootfs / "usr/bin" / kind.qemu.name)  # for binfmt handlers without the F flag
    log(f"debootstrap second stage under {kind.qemu.name} (the slow part)")
    second_stage = ["chroot", str(rootfs), "/debootstrap/debootstrap", "--second-stage"]
    _run(second_stage, build_log, "debootstrap --second-stage", timeout=7200, env=CHROOT_ENV)
    mounts.unbind_all(rootfs, within=layout.root)  # the second stage mounts /proc and /sys itself; be sure they are gone
    log(f"installing {wheel.name} into {kind.site_packages}")
    install_wheel(wheel, rootfs, kind.wheel, kind.site_packages)
    _configure(rootfs, kind.hostname)
    log("checking python3, numpy and tflite_runtime inside the rootfs (under emulation)")
    versions = probe(rootfs, build_log, within=layout.root, machine=kind.machine)
    return {
        "kind": kind.name,
        "recipe_id": recipe_id(kind),
        "recipe": kind.recipe(),
        "mirror": mirror,
        "built_at": utc_now("seconds"),
        "wheel": {"file": wheel.name, "sha256": kind.wheel["sha256"]},  # install_wheel checked it
        "versions": versions,
        "debian_packages": dpkg_versions(rootfs, ["python3", "python3-numpy", "openssh-server", "libc6"]),
    }


def _debootstrap_argv(rootfs: Path, mirror: str, kind: EmuKind = DEFAULT_KIND) -> list[str]:
    """debootstrap verifying the Release signature (it downloads over plain http)."""
    if not host.KEYRING.is_file():
        raise EdgeshipError(
            f"The Debian archive keyring {host.KEYRING} is missing, so debootstrap cannot check the mirror's Release "
            "signature, and the build does not install unverified packages that then run as root. Install it with "
            "`sudo apt-get install -y debian-archive-keyring` (a root `edgeship emu build` does that itself) and retry."
        )
    return [
        str(host.DEBOOTSTRAP),
        "--foreign",
        f"--keyring={host.KEYRING}",
        "--force-check-gpg",
        f"--arch={kind.debian_arch}",
        "--variant=minbase",
        f"--include={','.join(kind.packages)}",
        kind.suite,
        str(rootfs),
        mirror,
    ]


#: what debootstrap (functions: read_gpg_status and friends) prints when it cannot verify a Release file
_SIGNATURE_FAILURES = (
    "Invalid Release signature",
    "Release signed by unknown key",
    "Error executing gpgv",
    "gpgv not installed",
    "keyring file not available",
)
_SIGNATURE_VERIFIED = "Valid Release signature"


def first_stage(rootfs: Path, mirror: str, build_log: Path, kind: EmuKind = DEFAULT_KIND) -> None:
    """``debootstrap --foreign``; fails unless debootstrap reported the Release signature as valid."""
    offset = os.lstat(build_log).st_size
    try:
        _run(_debootstrap_argv(rootfs, mirror, kind), build_log, "debootstrap --foreign", timeout=3600)
    except EdgeshipError:
        failure = next((line for line in tail_text(build_log, 40).splitlines() if any(s in line for s in _SIGNATURE_FAILURES)), None)
        if failure is None:
            raise
        raise EdgeshipError(_unverified(mirror, build_log, failure.strip())) from None
    if _SIGNATURE_VERIFIED not in read_text(build_log, offset):
        raise EdgeshipError(_unverified(mirror, build_log, f"debootstrap never reported '{_SIGNATURE_VERIFIED}'"))


def _unverified(mirror: str, build_log: Path, detail: str) -> str:
    return (
        f"The Release file of the Debian mirror {mirror} could not be verified against {host.KEYRING} ({detail}); the "
        "build stops rather than install unverified packages that would run as root. Update the keyring "
        f"(`sudo apt-get install -y debian-archive-keyring`), or use another mirror (`edgeship emu build --mirror URL`). "
        f"See {build_log}."
    )


def _run(argv: list[str], build_log: Path, what: str, timeout: float, env: Optional[dict[str, str]] = None) -> None:
    """Run a build step with its output appended to the build log; a failure quotes the log's tail."""
    with open_log(build_log) as out:
        out.write(f"\n$ {' '.join(argv)}\n".encode())
        try:
            result = subprocess.run(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            raise EdgeshipError(f"{what} did not finish within {timeout:.0f} s; see {build_log}.") from None
    if result.returncode != 0:
        raise EdgeshipError(f"{what} failed (exit code {result.returncode}). Last lines of {build_log}:\n{tail_text(build_log)}")


def check_mirror(mirror: str, suite: str = DEFAULT_KIND.suite) -> None:
    """Fail in a second, not after a debootstrap timeout, when the Debian mirror is unreachable."""
    url = f"{mirror.rstrip('/')}/dists/{suite}/Release"
    try:
        with urllib.request.urlopen(url, timeout=20) as response:
            response.read(64)
    except (urllib.error.URLError, OSError) as exc:
        raise EdgeshipError(
            f"Cannot reach the Debian mirror {mirror} ({url}: {getattr(exc, 'reason', exc)}). debootstrap downloads "
            "the ARM packages from it. Check the network or proxy (http_proxy), or pass another mirror with "
            "`edgeship emu build --mirror URL`."
        ) from None


def _configure(rootfs: Path, hostname: str) -> None:
    """Small device identity details; downloaded .debs are dropped to keep the cache small."""
    (rootfs / "etc/hostname").write_text(f"{hostname}\n")
    (rootfs / "run/sshd").mkdir(parents=True, exist_ok=True)
    for deb in (rootfs / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()


def chroot_python(rootfs: Path, code: str, *, within: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python3 -c CODE`` inside the rootfs, with /proc, /sys and /dev bound for the duration."""
    mounts.bind_system_dirs(rootfs, within=within)
    try:
        return subprocess.run(
            ["chroot", str(rootfs), "/usr/bin/python3", "-c", code],
            capture_output=True, text=True, stdin=subprocess.DEVNULL, env=CHROOT_ENV, timeout=timeout,
        )  # fmt: skip
    finally:
        mounts.unbind_all(rootfs, within=within)


def probe(rootfs: Path, build_log: Path, *, within: Path, machine: str = DEFAULT_KIND.machine) -> dict[str, str]:
    """Versions reported by the rootfs's own python3 (under emulation); raises if the stack is broken."""
    result = chroot_python(rootfs, PROBE_CODE, within=within)
    with open_log(build_log) as out:
        out.write(f"\n$ chroot {rootfs} python3 -c <probe>\n{result.stdout}{result.stderr}".encode())
    try:
        versions = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise EdgeshipError(
            f"The built rootfs cannot run a TFLite model with its numpy and tflite_runtime (exit code {result.returncode}): "
            f"{result.stderr.strip()[-600:] or 'no output'}. See {build_log}."
        ) from None
    if versions.get("machine") != machine:
        raise EdgeshipError(
            f"python3 in the rootfs reports machine {versions.get('machine')!r}, not {machine}: binfmt is not using qemu."
        )
    return versions


def dpkg_versions(rootfs: Path, packages: list[str]) -> dict[str, Optional[str]]:
    """Installed versions read straight from the rootfs's dpkg status file (no emulation needed)."""
    versions: dict[str, Optional[str]] = {name: None for name in packages}
    status = (rootfs / "var/lib/dpkg/status").read_text(errors="replace")
    for block in status.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(" "))
        if fields.get("Package") in versions and "installed" in fields.get("Status", ""):
            versions[fields["Package"]] = fields.get("Version")
    return versions


def leftovers(layout: EmuLayout) -> list[Path]:
    """Half-built images of a build that was killed (an interrupted one removes its own)."""
    return sorted([*layout.root.glob(".image-*.partial"), *layout.root.glob(".image-old-*")])


def remove_leftovers(layout: EmuLayout, log: Log) -> None:
    """Call with the lock held, so no build is writing them right now."""
    for stale in leftovers(layout):
        log(f"removing the unfinished build {stale}")
        mounts.remove_tree(stale, within=layout.root)


def _swap_into_place(partial: Path, layout: EmuLayout) -> None:
    """Rename the finished build to ``image``; an old image is moved aside first, then deleted."""
    image, old = layout.image, None
    if os.path.lexists(image):
        old = image.with_name(f".image-old-{os.getpid()}")
        os.rename(image, old)
    os.rename(partial, image)
    if old is not None:
        mounts.remove_tree(old, within=layout.root)

