"""``edgeship lab start|stop``: a farm of real sshd devices on loopback, for nightly runs without hardware."""

from __future__ import annotations

from typing import Optional

import click

from pipeline.cli import main


@main.group()
def lab() -> None:
    """Loopback sshd devices (this host's CPU) for farm and nightly runs without hardware."""


@lab.command("start")
@click.option("--devices", "-n", default=4, show_default=True, help="How many loopback devices.")
@click.option("--profile", "-p", default=None, help="Build profile the generated inventory deploys.")
@click.option("--python", default=None, help="Device interpreter (default: .venv-agent, numpy 1.x + tflite-runtime, no TensorFlow).")
@click.option("--with-emulated-pi", is_flag=True, help="Also start the emulated Raspberry Pis (emu-rpi4 and the 32-bit emu-rpi3; root) and list them.")
def lab_start(devices: int, profile: Optional[str], python: Optional[str], with_emulated_pi: bool) -> None:
    """Start the devices and write results/lab/farm.yaml."""
    from pipeline.lab.loopback import start_lab

    started = start_lab(devices, python=python, profile=profile, with_emulated_pi=with_emulated_pi, log=lambda m: click.echo(m, err=True))
    extra = " plus the emulated Raspberry Pis emu-rpi4 and emu-rpi3" if with_emulated_pi else ""
    click.echo(f"{len(started.targets)} loopback devices running{extra}; inventory: {started.inventory}")


@lab.command("stop")
def lab_stop() -> None:
    """Stop every loopback device the lab started (and the emulated Pis that run)."""
    from pipeline import emu
    from pipeline.lab.loopback import stop_lab

    click.echo(f"stopped {stop_lab()} loopback devices")
    for kind in emu.KINDS.values():
        layout = emu.EmuLayout.default(kind=kind)
        if emu.status(layout).running:
            emu.stop(layout)
            click.echo(f"stopped the emulated Raspberry Pi {layout.target_name}")
