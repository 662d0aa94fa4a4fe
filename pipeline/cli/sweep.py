"""``edgeship sweep`` and ``edgeship sweep-select``: explore accuracy against cost, then pick."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from pipeline.cli import main
from pipeline.cli.options import CLUSTER


def _floats(text: Optional[str]) -> Optional[tuple[float, ...]]:
    if text is None:
        return None
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {text!r}") from None


def _ints(text: Optional[str]) -> Optional[tuple[int, ...]]:
    if text is None:
        return None
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated whole numbers of pixels, got {text!r}") from None


def _words(text: Optional[str]) -> Optional[tuple[str, ...]]:
    return None if text is None else tuple(part.strip() for part in text.split(",") if part.strip())


def _grid(grid_file: Optional[str], profile: Optional[str], overrides: dict):
    from pipeline.config.loader import validate
    from pipeline.sweep.grid import SweepGrid, load_grid

    data = load_grid(grid_file).model_dump(mode="json", exclude_unset=True) if grid_file else {}
    if profile:
        data["base_profile"] = profile
    data.update({key: value for key, value in overrides.items() if value is not None})
    return validate(SweepGrid, data, f"Sweep grid {grid_file}" if grid_file else "The sweep grid given on the command line")


def _finish(result, select_expr: Optional[str], write_profile: Optional[Path]) -> None:
    from pipeline.cli.output import make_console

    from pipeline.reports.sweep_report import latency_summary, sweep_table, write_sweep_report
    from pipeline.sweep.constraints import parse_constraints, select
    from pipeline.sweep.export import write_variant_profile
    from pipeline.sweep.runner import sweep_reports_dir

    selection = select(result.rows, parse_constraints(select_expr)) if select_expr else None
    console = make_console()
    console.print(sweep_table(result, selection))
    paths = write_sweep_report(result, sweep_reports_dir(result.sweep_id), selection)
    console.print(f"report: {paths['report.html']}  (plots: {paths['pareto_latency.png'].name}, {paths['pareto_size.png'].name})")
    for line in latency_summary(paths["sweep.json"]):
        console.print(f"latency model, {line}")
    for row in result.rows:
        if row.get("error"):
            click.secho(f"warning: variant {row['name']} failed: {row['error']}", fg="yellow", err=True)
    if selection is None:
        return
    if selection.best is None:
        raise click.ClickException(selection.message)
    chosen = result.rows[selection.best]
    console.print(f"selected {chosen['name']}: {selection.message}")
    if write_profile:
        name = write_profile.stem
        write_variant_profile(result.profiles[chosen["name"]], write_profile, name=name, note=f"sweep {result.sweep_id}, variant {chosen['name']}")
        console.print(f"wrote {write_profile}; ship it with `make deploy TARGET={result.target} PROFILE={write_profile}`")


@main.command()
@click.option("--profile", "-p", help="base build profile (default: the grid's base_profile, else 'default')")
@click.option("--target", "-t", required=True, help="a name in targets/ or a path to a target YAML file")
@click.option("--grid", "grid_file", help="sweep grid: a name in profiles/sweeps/ (default, quick) or a YAML path")
@click.option("--family", help="comma-separated student families, e.g. mobilenet_v1,mobilenet_v2")
@click.option("--width", help="comma-separated width multipliers, e.g. 0.5,1.0")
@click.option("--resolution", help="comma-separated square input sizes, e.g. 24,28")
@click.option("--sparsity", help="comma-separated pruning sparsities in [0, 1), e.g. 0,0.5")
@click.option("--pruning", "pruning_method", type=click.Choice(["structured", "magnitude"]), help="pruning method for sparsity > 0")
@click.option("--quant", help="comma-separated quantization modes: float32,float16,dynamic,int8,mixed")
@click.option("--select", "select_expr", help='pick the best variant meeting e.g. "latency_ms<=2,accuracy>=0.9,size_kb<=120"')
@click.option("--write-profile", type=click.Path(path_type=Path), help="write the selected variant as a build profile YAML")
@click.option("--remeasure", is_flag=True, help="measure bundles again even if an earlier sweep measured them on this target")
@click.option("--runs", type=click.IntRange(min=1), help="minimum timed invokes per variant (default: the target's)")
@click.option("--min-seconds", type=click.FloatRange(min=0), help="minimum timed seconds per variant (default: the target's)")
@CLUSTER
def sweep(
    profile: Optional[str], target: str, grid_file: Optional[str], family: Optional[str], width: Optional[str],
    resolution: Optional[str], sparsity: Optional[str], pruning_method: Optional[str], quant: Optional[str],
    select_expr: Optional[str], write_profile: Optional[Path], remeasure: bool, runs: Optional[int], min_seconds: Optional[float],
    cluster: Optional[str],
) -> None:
    """Build a grid of variants, profile each on TARGET, and show the accuracy-vs-cost Pareto fronts."""
    from pipeline.config.target import load_target
    from pipeline.cli.output import make_progress
    from pipeline.execute.choose import open_executor
    from pipeline.sweep.constraints import parse_constraints
    from pipeline.sweep.runner import run_sweep

    if write_profile and not select_expr:
        raise click.UsageError("--write-profile needs --select: it writes the selected variant.")
    if select_expr:
        parse_constraints(select_expr)  # a typo fails now, not after an hour of building
    grid = _grid(grid_file, profile, {
        "family": _words(family), "width": _floats(width), "resolution": _ints(resolution),
        "sparsity": _floats(sparsity), "pruning_method": pruning_method, "quantization": _words(quant),
    })
    target_config = load_target(target)
    progress = make_progress()
    with open_executor(cluster, progress) as executor:
        result = run_sweep(grid, target_config, progress=progress, remeasure=remeasure, runs=runs, min_seconds=min_seconds, executor=executor)
    _finish(result, select_expr, write_profile)


@main.command("sweep-select")
@click.argument("sweep_id", required=False, type=int)
@click.option("--select", "select_expr", required=True, help='constraints, e.g. "latency_ms<=2,accuracy>=0.9"')
@click.option("--write-profile", type=click.Path(path_type=Path), help="write the selected variant as a build profile YAML")
def sweep_select(sweep_id: Optional[int], select_expr: str, write_profile: Optional[Path]) -> None:
    """Select from a stored sweep (the latest by default) without building or measuring again."""
    from pipeline.sweep.constraints import parse_constraints
    from pipeline.sweep.runner import load_sweep
    from pipeline.sweep.store import SweepStore

    parse_constraints(select_expr)
    with SweepStore() as store:
        result = load_sweep(store, sweep_id)
    _finish(result, select_expr, write_profile)
