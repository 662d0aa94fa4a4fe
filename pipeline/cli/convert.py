"""``edgeship convert onnx2tflite`` and ``edgeship export onnx``: ONNX in and out, with checks."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from pipeline.cli import main

QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")


def _checks_table(reports, title: str):
    from rich.table import Table

    table = Table(title=title)
    for column in ("check", "images", "max abs error", "top-1 agreement", "top-1 vs labels", "result"):
        table.add_column(column)
    for r in reports:
        limit = "" if r.max_abs_error_limit is None else f" (≤ {r.max_abs_error_limit:g})"
        agree = "" if r.min_top1_agreement is None else f" (≥ {r.min_top1_agreement:g})"
        labels = "-" if r.candidate_top1 is None else f"{r.candidate_top1:.4f}"
        verdict = "ok" if r.max_abs_error_limit is not None else "reported"
        table.add_row(r.what, str(r.samples), f"{r.max_abs_error:.3g}{limit}", f"{r.top1_agreement:.4f}{agree}", labels, verdict)
    return table


@main.group()
def convert() -> None:
    """Convert models from other frameworks (checked against their own runtime)."""


@convert.command("onnx2tflite")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--out", "-o", type=click.Path(path_type=Path), help="Output .tflite (default: MODEL with .tflite).")
@click.option("--layout", type=click.Choice(["NCHW", "NHWC"]), default="NCHW", show_default=True, help="Input layout of the ONNX model.")
@click.option("--height", type=click.IntRange(min=1), help="Input height, needed when the model's is dynamic.")
@click.option("--width", type=click.IntRange(min=1), help="Input width, needed when the model's is dynamic.")
@click.option("--channels", type=click.IntRange(min=1), help="Input channels, needed when the model's is dynamic.")
@click.option("--quantization", "-q", type=click.Choice(QUANTIZATIONS), default="float32", show_default=True)
@click.option("--int8-io/--float-io", default=True, show_default=True, help="int8: integer model input and output.")
@click.option("--profile", "-p", help="Check (and calibrate int8) on this build profile's real images; sizes default to its preprocessing.")
@click.option("--samples", type=click.IntRange(min=1), default=1000, show_default=True, help="Images checked with --profile.")
@click.option("--max-abs-error", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True)
@click.option("--min-agreement", type=click.FloatRange(0, 1), default=0.999, show_default=True, help="Minimum top-1 agreement.")
def onnx2tflite(
    model: Path, out: Optional[Path], layout: str, height: Optional[int], width: Optional[int], channels: Optional[int],
    quantization: str, int8_io: bool, profile: Optional[str], samples: int, max_abs_error: float, min_agreement: float,
) -> None:
    """Convert MODEL (.onnx) to .tflite with onnx2tf, checked against onnxruntime."""
    from pipeline.cli.output import make_console

    from pipeline.onnx.check import Tolerance
    from pipeline.onnx.graph import InputSize
    from pipeline.onnx.to_tflite import onnx_to_tflite

    size = InputSize(height, width, channels)
    sample = None
    if profile:
        from pipeline.onnx_build import profile_images
        from pipeline.cli.output import make_progress

        sample, profile_size = profile_images(profile, samples, progress=make_progress())
        size = InputSize(*(given if given is not None else p for given, p in zip(size.as_tuple(), profile_size.as_tuple())))
    result = onnx_to_tflite(
        model, out or model.with_suffix(".tflite"), layout=layout, size=size, quantization=quantization, int8_io=int8_io,
        tolerance=Tolerance(max_abs_error, min_agreement), samples=sample,
    )
    console = make_console()
    console.print(_checks_table(result.reports, f"{model.name} → {result.out.name}"))
    h, w, c = result.input_shape
    console.print(f"wrote {result.out} ({result.tflite_bytes / 1024:.1f} KB, {quantization}, input {h}x{w}x{c} NHWC; the ONNX model was {layout})")
    for warning in result.warnings:
        click.secho(f"warning: {warning}", fg="yellow", err=True)


@main.group()
def export() -> None:
    """Export the built student to other formats."""


@export.command("onnx")
@click.option("--profile", "-p", default="default", show_default=True, help="Profile name in profiles/ or a path to a YAML file.")
@click.option("--opset", type=click.IntRange(13, 18), help="ONNX opset (default: the profile's export.opset, 17).")
@click.option("--out", "-o", type=click.Path(path_type=Path), help="Also copy model.onnx here.")
def export_onnx(profile: str, opset: Optional[int], out: Optional[Path]) -> None:
    """Export the profile's student to ONNX (tf2onnx), checked against Keras with onnxruntime.

    Builds the profile (cached) with export.onnx on, so the bundle ships model.onnx as well.
    """
    import shutil

    from pipeline.cli.output import make_console

    from pipeline.build import build_profile
    from pipeline.config.profile import load_profile
    from pipeline.onnx.check import AgreementReport
    from pipeline.cli.output import make_progress
    from pipeline.stages.onnx_export_stage import ONNX_FILE

    loaded = load_profile(profile)
    settings = loaded.export.model_copy(update={"onnx": True, "opset": opset or loaded.export.opset})
    result = build_profile(loaded.model_copy(update={"export": settings}), progress=make_progress())
    artifact = result.artifacts["export_onnx"]
    metrics = artifact.metrics
    check = {k: v for k, v in metrics["check"].items() if k in AgreementReport.__dataclass_fields__}
    console = make_console()
    console.print(_checks_table([AgreementReport(**check)], f"{loaded.name}: student → ONNX opset {metrics['opset']}"))
    source = artifact.path / ONNX_FILE
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, out)
        source = out
    console.print(f"ONNX model: {source} ({metrics['bytes'] / 1024:.1f} KB, {metrics['exporter']})")
    if result.bundle_dir is not None:
        console.print(f"bundle with model.onnx: {result.bundle_dir}")
