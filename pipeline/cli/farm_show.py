"""``edgeship farm show -i INV``: every device's resolved settings and the layer each came from.

The answer to "which host, key and directory will the farm use for this device, and why?" before
anything is deployed; the library resolves (pipeline.farm.inventory), this module only prints.
"""

from __future__ import annotations

import json

import click

from pipeline.cli.farm import DEFAULT_INVENTORY, farm

# Sources that are not a layer of the inventory are dimmed, so what the inventory changed stands out.
_QUIET = ("target ", "built-in default")


def _value(value) -> str:
    if value is None or value == "":
        return "-"
    return str(value)


def _table(loaded, devices):
    from rich.table import Table

    table = Table(title=f"farm {loaded.inventory.name} ({loaded.path}): {len(devices)} device(s)", title_justify="left")
    for column in ("device", "setting", "value", "from"):
        table.add_column(column, overflow="fold")
    for device in devices:
        for index, (key, value, source) in enumerate(device.settings()):
            style = "dim" if source.startswith(_QUIET) else "cyan"
            table.add_row(device.name if index == 0 else "", key, _value(value), f"[{style}]{source}[/{style}]")
        table.add_section()
    return table


@farm.command("show")
@click.option("--inventory", "-i", default=DEFAULT_INVENTORY, show_default=True, help="Inventory YAML.")
@click.option("--tags", "-t", multiple=True, help="Only devices with this tag or name (repeatable).")
@click.option("--profile", "-p", default=None, help="Build profile for every device (overrides the inventory), as farm run takes it.")
@click.option("--json", "as_json", is_flag=True, help="print the settings as JSON: {device: {setting: {value, from}}}")
def farm_show(inventory: str, tags: tuple[str, ...], profile: str | None, as_json: bool) -> None:
    """Each device's resolved settings (host, port, user, keys, remote_dir, ...) and where each came from."""
    from pipeline.cli.output import make_console
    from pipeline.farm.inventory import load_inventory

    loaded = load_inventory(inventory, profile_override=profile)
    devices = loaded.select(tags)
    if as_json:
        data = {d.name: {key: {"value": value, "from": source} for key, value, source in d.settings()} for d in devices}
        click.echo(json.dumps(data, indent=2))
        return
    make_console().print(_table(loaded, devices), highlight=False)
