"""``edgeship emu build | start | stop | status``: the emulated Raspberry Pi (target ``emu-rpi4``).

The commands only call :mod:`pipeline.emu`; messages go to stderr, results to stdout.
"""

from __future__ import annotations

import json
from typing import Any

import click

from pipeline.cli import main


def _say(message: str) -> None:
    click.secho(f"· {message}", dim=True, err=True)


def _warn_latency() -> None:
    from pipeline.emu import LATENCY_WARNING

    click.secho(f"warning: {LATENCY_WARNING}", fg="yellow", err=True)


def _describe_image(stamp: dict[str, Any]) -> str:
    versions = stamp.get("versions") or {}
    return (
        f"Debian {stamp.get('recipe', {}).get('suite', '?')} arm64, python {versions.get('python', '?')}, "
        f"numpy {versions.get('numpy', '?')}, tflite_runtime {versions.get('tflite_runtime', '?')} "
        f"(built {stamp.get('built_at', '?')} in {stamp.get('build_seconds', '?')} s)"
    )


@main.group()
def emu() -> None:
    """An emulated Raspberry Pi: arm64 Debian under qemu-user, reached over SSH as target emu-rpi4.

    It runs real ARM int8 kernels (answers match a Pi's), but its latency is emulation, never a
    Raspberry Pi timing. build, start and stop need root.
    """


@emu.command("build")
@click.option("--rebuild", is_flag=True, help="build again even if a finished image is cached")
@click.option("--mirror", help="Debian mirror for debootstrap (default: http://deb.debian.org/debian)")
def build_cmd(rebuild: bool, mirror: str | None) -> None:
    """Build the arm64 rootfs once (several minutes) and cache it under results/emu/."""
    from pipeline.emu import DEFAULT_MIRROR, build_image

    image = build_image(mirror=mirror or DEFAULT_MIRROR, rebuild=rebuild, log=_say)
    state = "cached" if image.cached else "built"
    click.echo(f"{state}: {image.rootfs}\n{_describe_image(image.stamp)}")


@emu.command("start")
@click.option("--mirror", help="Debian mirror if the rootfs still has to be built")
def start_cmd(mirror: str | None) -> None:
    """Start the device's aarch64 sshd on 127.0.0.1 and write its target (builds the rootfs first if needed)."""
    from pipeline.emu import DEFAULT_MIRROR, TARGET_NAME, build_image, start

    build_image(mirror=mirror or DEFAULT_MIRROR, log=_say)
    found = start(log=_say)
    click.echo(
        f"{TARGET_NAME} running: aarch64 sshd pid {found.pid} on 127.0.0.1:{found.port}\n"
        f"target file: {found.target_file}\n"
        f"deploy with: edgeship deploy {TARGET_NAME} --bundle <bundle dir>   (stop with: edgeship emu stop)"
    )
    _warn_latency()


@emu.command("stop")
def stop_cmd() -> None:
    """Stop sshd and every process inside the rootfs, unmount the binds; the rootfs stays cached."""
    from pipeline.emu import stop

    found = stop(log=_say)
    click.echo("stopped" if not found.running and not found.mounts else f"still up: {found.problems}")


@emu.command("status")
@click.option("--json", "as_json", is_flag=True, help="print the status as JSON")
def status_cmd(as_json: bool) -> None:
    """Whether the emulated device runs, on which port, and what image it runs."""
    from pipeline.emu import TARGET_NAME, status

    found = status()
    if as_json:
        click.echo(json.dumps(found.to_dict(), indent=2))
        return
    click.echo(f"image: {_describe_image(found.image) if found.image else 'not built (edgeship emu build)'}")
    if found.running:
        click.echo(f"{TARGET_NAME}: running, sshd pid {found.pid} on 127.0.0.1:{found.port} since {found.started_at}")
        click.echo(f"target file: {found.target_file}")
    else:
        click.echo(f"{TARGET_NAME}: not running")
    if found.mounts:
        click.echo(f"mounted in the rootfs: {', '.join(found.mounts)}")
    for problem in found.problems:
        click.secho(f"problem: {problem}", fg="yellow")
    if found.running:
        _warn_latency()
