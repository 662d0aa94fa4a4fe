"""Emulated Raspberry Pis: Debian under qemu-user on this machine, reached over SSH, one per kind.

``rpi4`` runs the same Python 3.11, numpy 1.24 and tflite-runtime 2.14 as 64-bit Raspberry Pi OS;
``rpi3`` a 32-bit armv7l stack, old on purpose (Python 3.9, numpy 1.19, tflite-runtime 2.11). Both
really execute ARM int8 kernels, so they show whether a model gives the same answers on ARM as on
the x86 host. Their latency numbers are emulation and must never be presented as Raspberry Pi timings.
A layout (``EmuLayout.default(kind=kind_named("rpi3"))``) selects the kind; the default is rpi4.

    build_image(layout=None, *, mirror=..., rebuild=False, log=...) -> ImageInfo   (once; cached)
    start(layout=None, log=...) -> DeviceStatus      sshd on 127.0.0.1, target file written
    stop(layout=None, log=...) -> DeviceStatus       sshd and binds gone, rootfs kept
    status(layout=None) -> DeviceStatus

Modules: ``kinds`` (what each device is), ``layout`` (paths under results/<home>), ``host`` (root, Debian tools, binfmt_misc),
``mounts`` (binds in and out), ``rootfs`` (the build), ``device`` (sshd and the target file).
Everything needs root except ``status``. Nothing here imports click.
"""

from pipeline.emu.device import LATENCY_WARNING, DeviceStatus, start, status, stop
from pipeline.emu.kinds import DEFAULT_KIND, KINDS, EmuKind, kind_named
from pipeline.emu.layout import TARGET_NAME, EmuLayout
from pipeline.emu.rootfs import DEFAULT_MIRROR, ImageInfo, build_image, cached_image

__all__ = [
    "DEFAULT_KIND",
    "DEFAULT_MIRROR",
    "KINDS",
    "EmuKind",
    "kind_named",
    "LATENCY_WARNING",
    "TARGET_NAME",
    "DeviceStatus",
    "EmuLayout",
    "ImageInfo",
    "build_image",
    "cached_image",
    "start",
    "status",
    "stop",
]
