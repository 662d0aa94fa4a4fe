"""The ``edgeship`` command line. It only builds configs and calls the library.

Every ``EdgeshipError`` becomes a one-paragraph message on stderr and a non-zero exit; anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Optional

import click

from pipeline import __version__
from pipeline.chatter import Chatter, chatter_log_path
from pipeline.errors import EdgeshipError


class EdgeshipGroup(click.Group):
    def invoke(self, ctx: click.Context):  # type: ignore[override]
        failed = True
        try:
            result = super().invoke(ctx)
            failed = False
            return result
        except EdgeshipError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.secho("interrupted: nothing half-written was kept; rerun to continue from the cache.", fg="yellow", err=True)
            sys.exit(130)
        except SystemExit as exc:
            failed = exc.code not in (None, 0)
            raise
        finally:
            _finish_chatter(failed)


_chatter: Optional[Chatter] = None


def _start_chatter(command: str) -> None:
    """Send TensorFlow's chatter to results/logs/ unless -v asked to see it live."""
    global _chatter
    from pipeline.paths import results_dir

    chatter = Chatter(chatter_log_path(results_dir() / "logs", command))
    if chatter.start():
        _chatter = chatter


def _finish_chatter(failed: bool) -> None:
    global _chatter
    if _chatter is None:
        return
    chatter, _chatter = _chatter, None
    kept = chatter.has_content()
    chatter.stop()
    if failed and kept:
        click.secho(f"TensorFlow's and the converters' messages from this run are in {chatter.path}", fg="yellow", err=True)


@click.group(cls=EdgeshipGroup)
@click.version_option(__version__, prog_name="edgeship")
@click.option("-v", "--verbose", count=True, help="More diagnostics on stderr (-v info and TensorFlow's own messages, -vv debug).")
@click.pass_context
def main(ctx: click.Context, verbose: int) -> None:
    """Distil, prune, quantize and package models for edge devices; deploy and measure them."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported anywhere
    if verbose == 0:
        _start_chatter(ctx.invoked_subcommand or "edgeship")
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def _register() -> None:
    from pipeline.cli import build, cache, convert, deploy, emu, farm, farm_show, lab, sweep  # noqa: F401  (importing registers the commands)


_register()
