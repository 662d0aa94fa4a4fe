"""``edgeship deploy | rollback | doctor | profile | releases TARGET``.

The commands only build configs and call :mod:`pipeline.deploy`; tables and progress bars are
rich, on stdout and stderr respectively.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

import click

from pipeline import formatting as fmt
from pipeline.cli import main
from pipeline.cli.options import CLUSTER

if TYPE_CHECKING:
    from pipeline.deploy.record import ProfileRecord

_TARGET_HELP = "a name in targets/ (rpi4, local, ...) or a path to a target YAML file"
#: an upload shorter than this shows no progress (most redeploys on a LAN)
UPLOAD_QUIET_SECONDS = 1.0


def _console(stderr: bool = False):
    from pipeline.cli.output import make_console

    return make_console(stderr=stderr)


def _energy_cell(record: ProfileRecord) -> str:
    """``0.0412 mJ (est., 5.92 W load / 1.77 W idle)``, or why the device gave no estimate."""
    energy = record.energy
    if energy is None:
        return f"{fmt.MISSING} ({record.energy_unavailable})" if record.energy_unavailable else fmt.MISSING
    powers = f", {fmt.number(energy.load_power_w, '.2f')} W load / {fmt.number(energy.idle_power_w, '.2f')} W idle"
    return f"{energy.mj_per_inference:.4f} mJ (est.{powers})"


def profile_table(record: ProfileRecord, title: Optional[str] = None):
    """The headline numbers of a profile record as a rich table."""
    from rich.table import Table

    lat, mem, acc, rt, dev = record.latency, record.memory, record.accuracy, record.runtime, record.device
    table = Table(title=title or f"profile of {record.bundle_id} on {record.target}", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("latency p50", fmt.ms(lat.p50)),
        ("latency p90", fmt.ms(lat.p90)),
        ("latency p99", fmt.ms(lat.p99)),
        ("mean ± std", f"{fmt.ms(lat.mean)} ± {fmt.ms(lat.std)}"),
        ("timed runs", f"{lat.count:,}" if isinstance(lat.count, int) else fmt.MISSING),
        ("init", fmt.ms(lat.init)),
        ("first invoke", fmt.ms(lat.first)),
        ("peak RSS", fmt.number(mem.peak_rss_mb, ".1f", suffix=" MB")),
        ("energy per inference", _energy_cell(record)),
        ("top-1 accuracy", fmt.number(acc.top1, ".4f") + (f" (n={acc.count})" if acc.count is not None else "")),
        ("agreement with host", fmt.number(acc.agreement_with_host, ".4f")),
        ("runtime", f"{rt.name or fmt.MISSING} {rt.version or ''}".strip()),
        ("threads (requested/used)", f"{fmt.general(rt.threads_requested)}/{fmt.general(rt.threads_used)}"),
        ("delegate", rt.delegate or fmt.MISSING),
        ("device", f"{dev.machine or fmt.MISSING} {dev.cpu_model or ''}".strip()),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


@contextlib.contextmanager
def _upload_progress(console, after: float = UPLOAD_QUIET_SECONDS, clock: Callable[[], float] = time.monotonic) -> Iterator:
    """A ``progress(sent, total)`` callback for one upload that shows itself only once the upload
    has taken ``after`` seconds: a rich bar with bytes and rate on a terminal, else a plain line
    ("uploading 1.2/3.4 MB at 0.5 MB/s") every few seconds for logs and CI."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from pipeline.deploy.upload_meter import UploadMeter

    if not console.is_terminal:
        yield UploadMeter(lambda text: console.print(f"[dim]·[/dim] {text}", highlight=False), after=after, every=5.0, clock=clock)
        return
    bar = Progress(
        TextColumn("upload"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), console=console, transient=True, get_time=clock
    )
    state: dict[str, Any] = {}

    def callback(sent: int, total: int) -> None:
        now = clock()
        if "task" not in state:  # hidden at first: the rate counts from the first block all the same
            state["task"], state["started"] = bar.add_task("upload", total=total or None, visible=False), now
        if not state.get("shown") and now - state["started"] >= after:
            bar.start()
            state["shown"] = True
        bar.update(state["task"], completed=sent, visible=bool(state.get("shown")))
        if state.get("shown") and total and sent >= total:
            bar.stop()  # done: the steps that follow (install, activate, profile) print below

    try:
        yield callback
    finally:
        bar.stop()  # no-op unless the upload stopped half-way


def _step_printer(console):
    return lambda message: console.print(f"[dim]·[/dim] {message}")


def _load(target: str):
    from pipeline.config.target import load_target

    return load_target(target)


def _build_bundle(profile_name: str, console, cluster: Optional[str] = None) -> Path:
    """Build (or take from the cache) the profile's bundle and show what it holds: the model's
    accuracy, size and parameters belong next to the device's numbers."""
    from pipeline.build import build_profile  # heavy (TensorFlow): only when building
    from pipeline.cli.output import make_progress
    from pipeline.errors import EdgeshipError
    from pipeline.execute.choose import open_executor
    from pipeline.reports.build_table import build_table

    progress = make_progress()
    with open_executor(cluster, progress) as executor:
        result = build_profile(profile_name, progress=progress, executor=executor)
    if getattr(result, "bundle_dir", None) is None:
        raise EdgeshipError(f"Building profile '{profile_name}' produced no bundle to deploy.")
    console.print(build_table(result))
    return Path(result.bundle_dir)


def _measurement_options(command):
    """--runs, --min-seconds and --warmup, shared by deploy and profile."""
    for option in reversed(
        (
            click.option("--runs", type=click.IntRange(min=1), help="minimum timed invokes (default: the target's profiling.runs)"),
            click.option("--min-seconds", type=click.FloatRange(min=0), help="minimum timed seconds (default: profiling.min_seconds)"),
            click.option("--warmup", type=click.IntRange(min=0), help="untimed invokes first (default: profiling.warmup)"),
        )
    ):
        command = option(command)
    return command


@main.command()
@click.argument("target")
@click.option("--bundle", "bundle", type=click.Path(path_type=Path), help="bundle directory or <id>.tar.gz (default: build the profile)")
@click.option("--profile", "profile_name", help="build profile to build and deploy (default: the target's default_profile)")
@click.option("--no-profile-run", is_flag=True, help="deploy only; do not measure")
@_measurement_options
@click.option("--wait-lock", type=click.FloatRange(min=0), default=0.0, show_default=True, help="seconds to wait if another run holds the device")
@click.option("--json", "as_json", is_flag=True, help="print the deploy result and profile record as JSON")
@CLUSTER
def deploy(
    target: str,
    bundle: Optional[Path],
    profile_name: Optional[str],
    no_profile_run: bool,
    runs: Optional[int],
    min_seconds: Optional[float],
    warmup: Optional[int],
    wait_lock: float,
    as_json: bool,
    cluster: Optional[str],
) -> None:
    """Ship a bundle to TARGET, switch to it atomically, then profile it there."""
    from pipeline.deploy.deployer import deploy as do_deploy
    from pipeline.deploy.profiling import profile as do_profile
    from pipeline.transport import open_transport

    cfg = _load(target)
    out = _console()
    err = _console(stderr=True)
    if bundle is None:
        bundle = _build_bundle(profile_name or cfg.default_profile, err if as_json else out, cluster)
    elif profile_name:
        raise click.UsageError("--bundle and --profile are alternatives: give one of them.")
    with open_transport(cfg) as transport, _upload_progress(err) as progress:
        result = do_deploy(cfg, bundle, transport=transport, progress=progress, step=_step_printer(err), lock_wait=wait_lock)
        run = None
        if not no_profile_run:
            err.print(f"[dim]·[/dim] profiling {result.bundle_id} on {cfg.name}")
            run = do_profile(
                cfg, transport=transport, runs=runs, min_seconds=min_seconds, warmup=warmup, doctor=result.doctor, lock_wait=wait_lock
            )
    if as_json:
        click.echo(
            json.dumps(
                {
                    "target": cfg.name,
                    "bundle_id": result.bundle_id,
                    "skipped_upload": result.skipped_upload,
                    "previous": result.previous,
                    "current": result.current,
                    "seconds": round(result.seconds, 3),
                    "pruned": result.pruned,
                    "warnings": result.warnings,
                    "profile_path": str(run.path) if run else None,
                    "profile": run.record.to_json() if run else None,
                },
                indent=2,
            )
        )
        return
    what = "already on the device, upload skipped" if result.skipped_upload else "uploaded and installed"
    switch = f"{result.previous} → {result.current}" if result.previous and result.previous != result.current else result.current
    out.print(f"deployed {result.bundle_id} to {cfg.name} ({what}); active: {switch}; {result.seconds:.1f}s")
    if run is not None:
        out.print(profile_table(run.record))
        for warning in run.record.warnings:
            err.print(f"[yellow]warning:[/yellow] {warning}")
        out.print(f"record: {run.path}")


@main.command()
@click.argument("target")
@click.option("--wait-lock", type=click.FloatRange(min=0), default=0.0, show_default=True, help="seconds to wait if another run holds the device")
def rollback(target: str, wait_lock: float) -> None:
    """Switch TARGET back to the release that was active before the current one."""
    from pipeline.deploy.deployer import rollback as do_rollback

    cfg = _load(target)
    result = do_rollback(cfg, lock_wait=wait_lock)
    _console().print(f"rolled back {cfg.name}: {result.previous} → {result.current}")
    for warning in result.warnings:
        _console(stderr=True).print(f"[yellow]warning:[/yellow] {warning}")


@main.command()
@click.argument("target")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
def doctor(target: str, as_json: bool) -> None:
    """Check that TARGET can run the agent: Python, numpy, a TFLite runtime (prints install commands)."""
    from rich.table import Table

    from pipeline.deploy.deployer import connected
    from pipeline.deploy.doctor import run_doctor

    cfg = _load(target)
    with connected(cfg) as transport:
        report = run_doctor(cfg, transport)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        out = _console()
        table = Table(title=f"doctor: {cfg.name} ({report.where})")
        table.add_column("check")
        table.add_column("found")
        table.add_column("", justify="center")
        ok, bad = "[green]ok[/green]", "[red]missing[/red]"
        table.add_row("python", f"{report.python_command}: {report.python or 'not found'}", ok if report.python else bad)
        table.add_row("numpy", report.numpy or "not importable", ok if report.numpy else bad)
        for name, version in report.runtimes.items():
            mark = "[green]selected[/green]" if name == report.selected_runtime else ("" if version else "[dim]-[/dim]")
            table.add_row(f"runtime {name}", version or "not importable", mark)
        for name in (n for n in cfg.runtime_preference if n not in report.runtimes):
            table.add_row(f"runtime {name}", "[dim]not checked[/dim]", "")
        if not report.runtimes:
            table.add_row("TFLite runtime", "unknown", bad)
        elif not report.selected_runtime:
            table.add_row("TFLite runtime", f"none of {', '.join(cfg.runtime_preference)}", bad)
        table.add_row("machine", f"{report.machine or '?'} (target says {cfg.arch})", "")
        table.add_row("glibc", report.glibc or "?", "")
        table.add_row("os", f"{report.os or '?'}{' (Termux)' if report.termux else ''}", "")
        table.add_row("cores", str(report.cores or "?"), "")
        table.add_row("agent", "uploaded" if report.agent_uploaded else "up to date", "")
        out.print(table)
        for warning in report.warnings:
            out.print(f"[yellow]warning:[/yellow] {warning}")
        if report.problems:
            out.print(f"[red]not ready:[/red] {'; '.join(report.problems)}")
            out.print("install on the device:")
            for command in report.install_commands:
                out.print(f"  {command}", markup=False, highlight=False)
        else:
            out.print(f"[green]ready[/green]: the agent will use {report.selected_runtime}")
    if not report.ok:
        raise SystemExit(1)


@main.command("profile")
@click.argument("target")
@_measurement_options
@click.option("--threads", type=click.IntRange(min=1), help="interpreter threads (default: the target's threads)")
@click.option("--runtime", type=click.Choice(["ai_edge_litert", "tflite_runtime", "tensorflow"]), help="force one runtime")
@click.option("--wait-lock", type=click.FloatRange(min=0), default=0.0, show_default=True, help="seconds to wait if another run holds the device")
@click.option("--json", "as_json", is_flag=True, help="print the profile record as JSON")
def profile_cmd(
    target: str,
    runs: Optional[int],
    min_seconds: Optional[float],
    warmup: Optional[int],
    threads: Optional[int],
    runtime: Optional[str],
    wait_lock: float,
    as_json: bool,
) -> None:
    """Measure the active release on TARGET and store the record under results/profiles/."""
    from pipeline.deploy.profiling import profile as do_profile

    cfg = _load(target)
    run = do_profile(cfg, runs=runs, min_seconds=min_seconds, warmup=warmup, threads=threads, runtime=runtime, lock_wait=wait_lock)
    if as_json:
        click.echo(json.dumps(run.record.to_json(), indent=2))
        return
    out = _console()
    out.print(profile_table(run.record))
    for warning in run.record.warnings:
        _console(stderr=True).print(f"[yellow]warning:[/yellow] {warning}")
    out.print(f"record: {run.path}")


@main.command()
@click.argument("target")
def releases(target: str) -> None:
    """List the releases installed on TARGET (the active one first)."""
    from rich.table import Table

    from pipeline.deploy.deployer import list_releases

    cfg = _load(target)
    items = list_releases(cfg)
    out = _console()
    if not items:
        out.print(f"{cfg.name}: no releases installed")
        return
    table = Table(title=f"releases on {cfg.name}")
    table.add_column("bundle id")
    table.add_column("active", justify="center")
    table.add_column("deploy order", justify="right")
    for item in items:
        table.add_row(item.bundle_id, "●" if item.current else "", "latest" if item.activated == 1 else (f"-{item.activated - 1}" if item.activated else "-"))
    out.print(table)


for _command in (deploy, rollback, doctor, profile_cmd, releases):
    _command.help = (_command.help or "") + f"\n\nTARGET is {_TARGET_HELP}."
