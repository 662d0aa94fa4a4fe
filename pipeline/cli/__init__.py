"""The ``edgeship`` command line. It only builds configs and calls the library.

Every ``EdgeshipError`` becomes a one-paragraph message on stderr and a non-zero exit; anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import os
import sys

import click

from pipeline import __version__
from pipeline.errors import EdgeshipError


class EdgeshipGroup(click.Group):
    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except EdgeshipError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.secho("interrupted: nothing half-written was kept; rerun to continue from the cache.", fg="yellow", err=True)
            sys.exit(130)


@click.group(cls=EdgeshipGroup)
@click.version_option(__version__, prog_name="edgeship")
@click.option("-v", "--verbose", count=True, help="More diagnostics on stderr (-v info, -vv debug).")
def main(verbose: int) -> None:
    """Distil, prune, quantize and package models for edge devices; deploy and measure them."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported anywhere
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def _register() -> None:
    from pipeline.cli import build, convert, deploy, emu, farm, lab, sweep  # noqa: F401  (importing registers the commands)


_register()
