"""An emulated Raspberry Pi: arm64 Debian bookworm under qemu-user on this machine, reached over SSH.

It runs the same Python 3.11, numpy 1.24 and tflite-runtime 2.14 as 64-bit Raspberry Pi OS and
really executes ARM int8 kernels, so it shows whether a model gives the same answers on ARM as on
the x86 host. Its latency numbers are emulation and must never be presented as Raspberry Pi timings.

    build_image(layout=None, *, mirror=..., rebuild=False, log=...) -> ImageInfo   (once; cached)
    start(layout=None, log=...) -> DeviceStatus      sshd on 127.0.0.1, target file written
    stop(layout=None, log=...) -> DeviceStatus       sshd and binds gone, rootfs kept
    status(layout=None) -> DeviceStatus

Modules: ``layout`` (paths under results/emu), ``host`` (root, Debian tools, binfmt_misc),
``mounts`` (binds in and out), ``rootfs`` (the build), ``device`` (sshd and the target file).
Everything needs root except ``status``. Nothing here imports click.
"""

from pipeline.emu.device import LATENCY_WARNING, DeviceStatus, start, status, stop
from pipeline.emu.layout import TARGET_NAME, EmuLayout
from pipeline.emu.rootfs import DEFAULT_MIRROR, ImageInfo, build_image, cached_image

__all__ = [
    "DEFAULT_MIRROR",
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
