"""The emulated devices edgeship can build: what each one's rootfs holds and how the host runs it.

``rpi4`` is 64-bit Raspberry Pi OS bookworm (arm64, Python 3.11, numpy 1.24, tflite-runtime 2.14).
``rpi3`` is a 32-bit Pi, old on purpose: Debian bullseye armhf with Python 3.9, Debian's numpy 1.19
and tflite-runtime 2.11.0. It is the agent's oldest stack that edgeship runs for real. 2.11.0 is the
newest release that runs there: 2.13.0 (the newest ``cp39 manylinux2014_armv7l`` wheel) is built
against numpy's C API 0xe (numpy >= 1.20) and cannot create an interpreter under numpy 1.19, and
2.12.0 needs libstdc++'s GLIBCXX_3.4.29, newer than bullseye's (the probe, :mod:`pipeline.emu.probe`).

Each kind has its own home under results/ (``emu`` for rpi4, as before; ``emu-rpi3``), its own
target name and its own binfmt_misc handler, so both can be built and run at the same time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import EdgeshipError


@dataclass(frozen=True)
class EmuKind:
    """One emulated device model: rootfs recipe, qemu handler and the target it appears as."""

    name: str  # what `edgeship emu --device NAME` takes
    home: str  # directory under results/
    hostname: str  # also the target name
    description: str
    suite: str  # Debian release
    debian_arch: str  # debootstrap --arch
    machine: str  # what `uname -m` (platform.machine()) says inside
    python: str  # Debian's python3 minor version, e.g. "3.9"
    packages: tuple[str, ...]
    wheel: dict[str, str]  # the pinned tflite-runtime wheel (see pipeline.emu.wheel)
    qemu: Path
    binfmt_name: str
    binfmt_magic: str  # qemu's own registration (scripts/qemu-binfmt-conf.sh)
    binfmt_mask: str
    sshd_options: tuple[str, ...] = field(default=())  # what this OpenSSH release needs on top

    @property
    def target_name(self) -> str:
        return self.hostname

    @property
    def site_packages(self) -> str:
        """Where pip would put the wheel for Debian's python3 (``/usr/local/lib/python3.X/dist-packages``)."""
        return f"/usr/local/lib/python{self.python}/dist-packages"

    @property
    def tags(self) -> list[str]:
        return ["emulated", "arm", self.name, self.machine]

    def recipe(self) -> dict[str, Any]:
        """What is built; a change here makes the next build replace that kind's cached image."""
        return {
            "recipe_version": 2,  # 2: Release signature checked, wheel hash-pinned (images of 1 were not verified)
            "suite": self.suite,
            "arch": self.debian_arch,
            "variant": "minbase",
            "packages": list(self.packages),
            "wheel": dict(self.wheel),
        }

    def latency_warning(self) -> str:
        return (
            f"EMULATED device (qemu-user {self.machine} on an x86_64 host): predictions and accuracy are real ARM "
            "results, but latency numbers are emulation and are NOT Raspberry Pi timings."
        )


_PACKAGES = ("python3", "python3-numpy", "openssh-server", "libstdc++6")
# The ELF header masks differ only in class (byte 4: 2 = 64-bit, 1 = 32-bit) and machine (0xb7, 0x28).
_MASK = r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff"

RPI4 = EmuKind(
    name="rpi4",
    home="emu",
    hostname="emu-rpi4",
    description="Emulated Raspberry Pi: arm64 Debian bookworm under qemu-user; latency is NOT a Raspberry Pi timing",
    suite="bookworm",
    debian_arch="arm64",
    machine="aarch64",
    python="3.11",
    packages=_PACKAGES,
    wheel={
        "requirement": "tflite-runtime==2.14.0",
        "platform": "manylinux_2_34_aarch64",  # the only aarch64 tag PyPI has for 2.14.0 (glibc >= 2.34; bookworm has 2.36)
        "python_version": "3.11",
        "abi": "cp311",
        "file": "tflite_runtime-2.14.0-cp311-cp311-manylinux_2_34_aarch64.whl",
        "sha256": "ce9fa5d770a9725c746dcbf6f59f3178233b3759f09982e8b2db8d2234c333b0",
    },
    qemu=Path("/usr/bin/qemu-aarch64-static"),
    binfmt_name="qemu-aarch64",
    binfmt_magic=r"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00",
    binfmt_mask=_MASK,
    sshd_options=("KbdInteractiveAuthentication no",),
)

RPI3 = EmuKind(
    name="rpi3",
    home="emu-rpi3",
    hostname="emu-rpi3",
    description=(
        "Emulated 32-bit Raspberry Pi 3: armhf Debian bullseye under qemu-user (Python 3.9, numpy 1.19, "
        "tflite-runtime 2.11); latency is NOT a Raspberry Pi timing"
    ),
    suite="bullseye",
    debian_arch="armhf",
    machine="armv7l",
    python="3.9",
    packages=_PACKAGES,
    wheel={
        "requirement": "tflite-runtime==2.11.0",
        "platform": "manylinux2014_armv7l",  # the newest that runs on bullseye's numpy 1.19 and libstdc++ (above)
        "python_version": "3.9",
        "abi": "cp39",
        "file": "tflite_runtime-2.11.0-cp39-cp39-manylinux2014_armv7l.whl",
        "sha256": "1cf50a6c51147d70299f4469f6cfab732f38f6ee7999df287155513e742360e6",
    },
    qemu=Path("/usr/bin/qemu-arm-static"),
    binfmt_name="qemu-arm",
    binfmt_magic=r"\x7fELF\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x28\x00",
    binfmt_mask=_MASK,
    sshd_options=("ChallengeResponseAuthentication no",),  # OpenSSH 8.4 predates KbdInteractiveAuthentication
)

KINDS: dict[str, EmuKind] = {kind.name: kind for kind in (RPI4, RPI3)}
DEFAULT_KIND = RPI4


def kind_named(name: str) -> EmuKind:
    """The kind for ``rpi4``/``rpi3`` (or its target name ``emu-rpi3``), or a clear error."""
    key = name.removeprefix("emu-")
    if key not in KINDS:
        raise EdgeshipError(
            f"There is no emulated device {name!r}; edgeship can emulate {', '.join(KINDS)} "
            f"(targets {', '.join(k.target_name for k in KINDS.values())})."
        )
    return KINDS[key]
