"""``edgeship cache list`` and ``edgeship cache prune``: see and trim results/cache."""

from __future__ import annotations

from typing import Optional

import click

from pipeline.cli import main


def _mb(n: int) -> str:
    from pipeline.formatting import number

    return number(n, ".1f", scale=1e-6, suffix=" MB")


@main.group()
def cache() -> None:
    """The build cache: one directory per stage recipe (trained models, converted files)."""


@cache.command("list")
def cache_list() -> None:
    """Every cached entry with its size and age, oldest first."""
    from rich.table import Table

    from pipeline.cache_admin import bundle_lineage, list_cache
    from pipeline.cli.output import make_console
    from pipeline.paths import bundles_dir, cache_dir

    entries = list_cache(cache_dir())
    behind = bundle_lineage(entries, bundles_dir())
    table = Table(title=f"{cache_dir()}")
    for column in ("stage", "recipe", "size", "age (days)", "bundle"):
        table.add_column(column, justify="right" if column in ("size", "age (days)") else "left")
    for e in entries:
        table.add_row(e.stage, e.recipe_id[:12], _mb(e.bytes), f"{e.age_days:.1f}", e.bundle_id or ("(behind one)" if e.recipe_id in behind else ""))
    console = make_console()
    console.print(table)
    console.print(f"{len(entries)} entries, {_mb(sum(e.bytes for e in entries))}")


@cache.command("prune")
@click.option("--older-than", "older_than", type=click.FloatRange(min=0), help="only entries older than this many days")
@click.option("--keep-bundles", is_flag=True, help="keep the entries behind every bundle in results/bundles")
@click.option("--dry-run", is_flag=True, help="list what would go, remove nothing")
def cache_prune(older_than: Optional[float], keep_bundles: bool, dry_run: bool) -> None:
    """Remove cached entries (all of them unless limited); the next build recomputes what it needs."""
    from pipeline.cache_admin import prune_cache
    from pipeline.paths import bundles_dir, cache_dir

    removed = prune_cache(cache_dir(), older_than_days=older_than, keep_bundles=keep_bundles, bundles_root=bundles_dir(), dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for e in removed:
        click.echo(f"{verb} {e.stage}/{e.recipe_id[:12]} ({_mb(e.bytes)})")
    click.echo(f"{verb} {len(removed)} entries, {_mb(sum(e.bytes for e in removed))}")
