"""Options several commands share."""

from __future__ import annotations

import click

CLUSTER = click.option(
    "--cluster", envvar="EDGESHIP_CLUSTER", default=None, metavar="ADDRESS",
    help="Train on this Dask scheduler's workers, e.g. tcp://build-01:8786 (default: $EDGESHIP_CLUSTER, else this machine).",
)
