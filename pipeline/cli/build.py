"""``edgeship build`` and ``edgeship stage``: run a build profile, all of it or up to one stage."""

from __future__ import annotations

from typing import Any, Optional

import click

from pipeline.cli import main
from pipeline.cli.options import CLUSTER


def _run(profile: str, until: str | None, jobs: int | None = None, cluster: str | None = None) -> None:
    from pipeline.cli.output import make_console

    from pipeline.build import build_profile
    from pipeline.cli.output import make_progress
    from pipeline.execute.choose import open_executor
    from pipeline.reports.build_table import build_table, pruning_table

    console = make_console()
    progress = make_progress()
    with open_executor(cluster, progress) as executor:
        result = build_profile(profile, progress=progress, until=until, max_jobs=jobs, executor=executor)
    console.print(build_table(result))
    compression = pruning_table(result)
    if compression is not None:
        console.print(compression)
    if result.bundle_dir is not None:
        console.print(f"bundle: {result.bundle_dir} ({result.bundle_dir.name}.tar.gz beside it)")
    for warning in result.warnings:
        click.secho(f"warning: {warning}", fg="yellow", err=True)
    console.print(f"wall time {result.wall_seconds:.1f}s")


JOBS = click.option(
    "--jobs", "-j", type=click.IntRange(min=1), default=None,
    help="Stages that may run at once, e.g. the distilled and scratch students (default: $EDGESHIP_JOBS or the core count).",
)


@main.command()
@click.option("--profile", "-p", default="default", show_default=True, help="Profile name in profiles/ or a path to a YAML file.")
@JOBS
@CLUSTER
def build(profile: str, jobs: int | None, cluster: str | None) -> None:
    """Build a profile: data, teacher, distill, prune, quantize, evaluate, package (cached)."""
    _run(profile, None, jobs, cluster)


class StageName(click.ParamType):
    """A stage ``edgeship stage`` can stop after; checked against the build only when used, so
    starting the CLI does not import the stages."""

    name = "stage"

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> str:
        from pipeline.build import STAGE_NAMES

        if value not in STAGE_NAMES:
            self.fail(f"{value!r} is not one of {', '.join(map(repr, STAGE_NAMES))}.", param, ctx)
        return value


class StageCommand(click.Command):
    """``--help`` lists the stages and what each does, from the stage registry."""

    def format_help_text(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from pipeline.build import STAGE_NAMES
        from pipeline.stages.registry import descriptions

        super().format_help_text(ctx, formatter)
        described = descriptions()
        with formatter.section("Stages (NAME)"):
            formatter.write_dl([(name, described[name]) for name in STAGE_NAMES])
        others = [(name, text) for name, text in described.items() if name not in STAGE_NAMES]
        if others:
            with formatter.section("Also run, inside those, when the profile asks for them"):
                formatter.write_dl(others)


@main.command(cls=StageCommand)
@click.argument("name", type=StageName())
@click.option("--profile", "-p", default="default", show_default=True, help="Profile name in profiles/ or a path to a YAML file.")
@JOBS
@CLUSTER
def stage(name: str, profile: str, jobs: int | None, cluster: str | None) -> None:
    """Run one stage of a profile (its upstream stages come from the cache or run first)."""
    _run(profile, name, jobs, cluster)
