"""``edgeship farm run``, ``nightly``, ``baseline accept|show`` and ``report``."""

from __future__ import annotations

import sys
import threading
from typing import Optional

import click

from pipeline.cli import main
from pipeline.cli.options import CLUSTER

DEFAULT_INVENTORY = "targets/farm.yaml"

_STYLE = {"ok": "green", "pass": "green", "improvement": "green", "regression": "red", "unreachable": "red", "failed": "red", "timeout": "red", "invalid": "yellow", "no-baseline": "yellow", "retrying": "yellow", "busy": "yellow", "waiting": "yellow"}


class LiveDevices:
    """A live per-device table, fed from the farm's worker threads."""

    def __init__(self) -> None:
        from pipeline.cli.output import make_console
        from rich.live import Live

        self.rows: dict[str, tuple[str, str]] = {}
        self.lock = threading.Lock()
        self.live = Live(self._table(), console=make_console(stderr=True), refresh_per_second=4, transient=False)

    def _table(self):
        from rich.table import Table

        table = Table(title="farm")
        table.add_column("device")
        table.add_column("state")
        table.add_column("detail", overflow="fold")
        for name, (state, detail) in self.rows.items():
            style = _STYLE.get(state, "cyan")
            table.add_row(name, f"[{style}]{state}[/{style}]", detail[:160])
        return table

    def __call__(self, device: str, state: str, detail: str) -> None:
        with self.lock:
            self.rows[device] = (state, detail)
            self.live.update(self._table())

    def __enter__(self) -> "LiveDevices":
        self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.live.__exit__(*exc)


def _verdict_table(verdicts):
    from rich.table import Table

    from pipeline.reports.verdict_text import energy_cell, has_energy

    energy = has_energy(verdicts)  # the column only when some board can tell (a Pi 5)
    table = Table(title="regression check")
    for column in ("device", "profile", "status", "p50 ms", "vs base", "top-1", "RSS MB", *(("mJ/inf (est.)",) if energy else ())):
        table.add_column(column, no_wrap=True)
    for v in verdicts:
        style = _STYLE.get(v.status, "white")
        ratio = v.latency.ratio if getattr(v, "latency", None) is not None and v.latency.ratio is not None else None
        table.add_row(
            v.device, v.profile_name or "-", f"[{style}]{v.status}[/{style}]",
            "-" if v.p50 is None else f"{v.p50:.3f}", "-" if ratio is None else f"x{ratio:.3f}",
            "-" if v.top1 is None else f"{v.top1:.4f}", "-" if v.peak_rss_mb is None else f"{v.peak_rss_mb:.1f}",
            *((energy_cell(v),) if energy else ()),
        )
    return table


def _print_reasons(console, verdicts) -> None:
    for v in verdicts:
        for reason in v.reasons:
            console.print(f"  {v.device}: {reason}", style=_STYLE.get(v.status, "white"), highlight=False)


@main.group()
def farm() -> None:
    """Deploy and profile many devices in parallel."""


@farm.command("run")
@click.option("--inventory", "-i", default=DEFAULT_INVENTORY, show_default=True, help="Inventory YAML.")
@click.option("--tags", "-t", multiple=True, help="Only devices with this tag or name (repeatable).")
@click.option("--profile", "-p", default=None, help="Build profile for every device (overrides the inventory).")
@click.option("--bundle", "-b", "bundle", default=None, type=click.Path(file_okay=False), help="Deploy this built bundle to every device instead of building (its profile is the manifest's).")
@CLUSTER
def farm_run(inventory: str, tags: tuple[str, ...], profile: Optional[str], bundle: Optional[str], cluster: Optional[str]) -> None:
    """Build the bundles needed (cached), then deploy and profile every selected device."""
    from pipeline.farm.inventory import load_inventory
    from pipeline.execute.choose import open_executor
    from pipeline.farm.runner import run_farm
    from pipeline.cli.output import make_progress

    profile, bundles = _given_bundle(bundle, profile)
    loaded = load_inventory(inventory, profile_override=profile)
    loaded.select(tags)  # fail on unknown tags before building anything
    progress = make_progress()
    with open_executor(cluster, progress) as executor, LiveDevices() as live:
        result = run_farm(loaded, tags=tags, progress=progress, listener=live, bundles=bundles, executor=executor)
    ok = sum(o.status == "ok" for o in result.outcomes)
    click.echo(f"run {result.run_id}: {ok}/{len(result.outcomes)} devices profiled in {result.seconds:.1f}s")
    for o in result.outcomes:
        if o.status != "ok":
            click.secho(f"  {o.device.name}: {o.status}: {o.error}", fg="red", err=True)


@main.command()
@click.option("--inventory", "-i", default=DEFAULT_INVENTORY, show_default=True, help="Inventory YAML.")
@click.option("--tags", "-t", multiple=True, help="Only devices with this tag or name (repeatable).")
@click.option("--profile", "-p", default=None, help="Build profile for every device (overrides the inventory).")
@click.option("--bundle", "-b", "bundle", default=None, type=click.Path(file_okay=False), help="Deploy this built bundle to every device instead of building (its profile is the manifest's).")
@CLUSTER
def nightly(inventory: str, tags: tuple[str, ...], profile: Optional[str], bundle: Optional[str], cluster: Optional[str]) -> None:
    """Build, farm run, regression check, reports. Exit 0 ok, 1 regression, 2 infrastructure failure."""
    from pipeline.cli.output import make_console

    from pipeline.execute.choose import open_executor
    from pipeline.farm.nightly import run_nightly
    from pipeline.cli.output import make_progress

    profile, bundles = _given_bundle(bundle, profile)
    progress = make_progress()
    with open_executor(cluster, progress) as executor, LiveDevices() as live:
        result = run_nightly(inventory, tags=tags, profile=profile, progress=progress, listener=live, bundles=bundles, executor=executor)
    console = make_console()
    console.print(_verdict_table(result.verdicts))
    _print_reasons(console, result.verdicts)
    console.print(f"run {result.farm.run_id}: {result.summary.headline}")
    unbased = [v.device for v in result.verdicts if v.status == "no-baseline"]
    if unbased:
        console.print(
            f"{len(unbased)} device(s) have no baseline yet ({', '.join(unbased)}); to compare the next nights with "
            f"tonight's run, accept it: edgeship baseline accept {result.farm.run_id}",
            highlight=False,
        )
    for kind, path in result.reports.items():
        console.print(f"{kind}: {path}")
    sys.exit(result.summary.exit_code)


def _given_bundle(bundle: Optional[str], profile: Optional[str]) -> tuple[Optional[str], Optional[dict]]:
    """``--bundle DIR``: every device gets that bundle, filed under the profile its manifest names."""
    if bundle is None:
        return profile, None
    from pathlib import Path

    from pipeline.bundle.manifest import verify_bundle

    name = str(verify_bundle(Path(bundle)).get("profile") or "")
    if not name:
        raise click.UsageError(f"--bundle {bundle}: its manifest.json names no build profile.")
    if profile is not None and profile != name:
        raise click.UsageError(f"--bundle {bundle} was built from profile '{name}', but --profile says '{profile}'; give one of them.")
    return name, {name: Path(bundle)}


@main.group()
def baseline() -> None:
    """Accepted reference runs that nightly runs are compared with."""


@baseline.command("accept")
@click.argument("run_id", type=int)
@click.option("--by-class", is_flag=True, help="Make it the baseline of each device's class (target file) instead of the device.")
@click.option("--force", is_flag=True, help="Replace existing baselines.")
def baseline_accept(run_id: int, by_class: bool, force: bool) -> None:
    """Promote every successful result of RUN_ID to baseline."""
    from pipeline.farm.store import ResultsStore

    with ResultsStore() as store:
        accepted = store.accept_run_baselines(run_id, by_class=by_class, force=force)
    for b in accepted:
        click.echo(f"baseline {b.device_key} / {b.profile_name}: result {b.result_id} (run {run_id})")


@baseline.command("show")
def baseline_show() -> None:
    """List baselines."""
    from pipeline.cli.output import make_console
    from rich.table import Table

    from pipeline.farm.store import ResultsStore

    with ResultsStore() as store:
        baselines = store.list_baselines()
    table = Table(title="baselines")
    for column in ("device or class", "profile", "run", "bundle", "p50 ms", "top-1", "accepted"):
        table.add_column(column)
    for b in baselines:
        r = b.result
        table.add_row(b.device_key, b.profile_name, str(r.run_id), r.bundle_id or "-", "-" if r.p50 is None else f"{r.p50:.3f}", "-" if r.top1 is None else f"{r.top1:.4f}", b.accepted_at)
    make_console().print(table if baselines else "no baselines yet: run `edgeship nightly`, then `edgeship baseline accept RUN`")


@main.command()
@click.argument("run_id", type=int, required=False)
@click.option("--index", "index", is_flag=True, help="Also (or only, without RUN_ID) regenerate results/reports/index.html across nights.")
def report(run_id: Optional[int], index: bool) -> None:
    """Regenerate the JUnit, Markdown and HTML reports of RUN_ID, and/or the index of every night."""
    if run_id is None and not index:
        raise click.UsageError("give a RUN_ID, --index, or both.")
    from pipeline.farm.store import ResultsStore

    with ResultsStore() as store:
        if run_id is not None:
            from pipeline.reports.html import write_reports

            for kind, path in write_reports(store, run_id).items():
                click.echo(f"{kind}: {path}")
        if index:
            from pipeline.reports.index import write_index

            click.echo(f"index: {write_index(store)}")
