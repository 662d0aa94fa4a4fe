"""``edgeship emu build | start | stop | status [--device rpi4|rpi3|all]``: the emulated Raspberry Pis.

The commands only call :mod:`pipeline.emu`; messages go to stderr, results to stdout.
"""

from __future__ import annotations

import json
from typing import Any

import click

from pipeline.cli import main


def _say(message: str) -> None:
    click.secho(f"· {message}", dim=True, err=True)


def _warn_latency(message: str) -> None:
    click.secho(f"warning: {message}", fg="yellow", err=True)


def _describe_image(stamp: dict[str, Any]) -> str:
    versions, recipe = stamp.get("versions") or {}, stamp.get("recipe", {})
    return (
        f"Debian {recipe.get('suite', '?')} {recipe.get('arch', '?')}, python {versions.get('python', '?')}, "
        f"numpy {versions.get('numpy', '?')}, tflite_runtime {versions.get('tflite_runtime', '?')} "
        f"(built {stamp.get('built_at', '?')} in {stamp.get('build_seconds', '?')} s)"
    )


def _layouts(device: str) -> list:
    """The layouts ``--device`` names: rpi4 (default), rpi3, or all."""
    from pipeline.emu import KINDS, EmuLayout, kind_named

    kinds = list(KINDS.values()) if device == "all" else [kind_named(device)]
    return [EmuLayout.default(kind=kind) for kind in kinds]


def _device_option(default: str = "rpi4", allow_all: bool = False):
    choices = ["rpi4", "rpi3", *(["all"] if allow_all else [])]
    return click.option(
        "--device", "-d", type=click.Choice(choices), default=default, show_default=True,
        help="which emulated device: rpi4 (arm64, target emu-rpi4) or rpi3 (32-bit armv7l, target emu-rpi3)"
        + (", or all" if allow_all else ""),
    )  # fmt: skip


@main.group()
def emu() -> None:
    """Emulated Raspberry Pis: Debian under qemu-user, reached over SSH as targets emu-rpi4 and emu-rpi3.

    emu-rpi4 is 64-bit (arm64 bookworm, Python 3.11); emu-rpi3 is a 32-bit Pi 3 (armhf bullseye,
    Python 3.9, numpy 1.19, tflite-runtime 2.11). Both run real ARM int8 kernels (answers match a
    Pi's), but their latency is emulation, never a Raspberry Pi timing. build, start and stop need root.
    """


@emu.command("build")
@_device_option(allow_all=True)
@click.option("--rebuild", is_flag=True, help="build again even if a finished image is cached")
@click.option("--mirror", help="Debian mirror for debootstrap (default: http://deb.debian.org/debian)")
def build_cmd(device: str, rebuild: bool, mirror: str | None) -> None:
    """Build the device's rootfs once (several minutes) and cache it under results/."""
    from pipeline.emu import DEFAULT_MIRROR, build_image

    for layout in _layouts(device):
        image = build_image(layout, mirror=mirror or DEFAULT_MIRROR, rebuild=rebuild, log=_say)
        state = "cached" if image.cached else "built"
        click.echo(f"{layout.target_name} {state}: {image.rootfs}\n{_describe_image(image.stamp)}")


@emu.command("start")
@_device_option(allow_all=True)
@click.option("--mirror", help="Debian mirror if the rootfs still has to be built")
def start_cmd(device: str, mirror: str | None) -> None:
    """Start the device's sshd on 127.0.0.1 and write its target (builds the rootfs first if needed)."""
    from pipeline.emu import DEFAULT_MIRROR, build_image, start

    for layout in _layouts(device):
        build_image(layout, mirror=mirror or DEFAULT_MIRROR, log=_say)
        found = start(layout, log=_say)
        name = layout.target_name
        click.echo(
            f"{name} running: {layout.kind.machine} sshd pid {found.pid} on 127.0.0.1:{found.port}\n"
            f"target file: {found.target_file}\n"
            f"deploy with: edgeship deploy {name}   (stop with: edgeship emu stop --device {layout.kind.name})"
        )
        _warn_latency(layout.kind.latency_warning())


@emu.command("stop")
@_device_option(default="all", allow_all=True)
def stop_cmd(device: str) -> None:
    """Stop sshd and every process inside the rootfs, unmount the binds; the rootfs stays cached."""
    from pipeline.emu import stop

    for layout in _layouts(device):
        found = stop(layout, log=_say)
        state = "stopped" if not found.running and not found.mounts else f"still up: {found.problems}"
        click.echo(f"{layout.target_name}: {state}")


@emu.command("status")
@_device_option(default="all", allow_all=True)
@click.option("--json", "as_json", is_flag=True, help="print the status as JSON (a list with --device all)")
def status_cmd(device: str, as_json: bool) -> None:
    """Whether the emulated devices run, on which port, and what image they run."""
    from pipeline.emu import status

    found_all = [status(layout) for layout in _layouts(device)]
    if as_json:
        data = [found.to_dict() for found in found_all]
        click.echo(json.dumps(data if device == "all" else data[0], indent=2))
        return
    for found in found_all:
        _print_status(found)


def _print_status(found: Any) -> None:
    name = found.target_name
    click.echo(f"{name} image: {_describe_image(found.image) if found.image else 'not built (edgeship emu build)'}")
    if found.running:
        click.echo(f"{name}: running, sshd pid {found.pid} on 127.0.0.1:{found.port} since {found.started_at}")
        click.echo(f"target file: {found.target_file}")
    else:
        click.echo(f"{name}: not running")
    if found.mounts:
        click.echo(f"mounted in the rootfs: {', '.join(found.mounts)}")
    for problem in found.problems:
        click.secho(f"problem: {problem}", fg="yellow")
    if found.running:
        _warn_latency(f"{name} is emulated: latency numbers are NOT Raspberry Pi timings.")
