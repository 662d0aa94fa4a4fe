"""The results table printed at the end of a build."""

from __future__ import annotations

from functools import partial

from rich.table import Table

from pipeline import formatting as fmt
from pipeline.build import BuildResult

_accuracy = partial(fmt.number, spec=".4f", missing=fmt.HYPHEN)
_count = partial(fmt.number, spec=",", missing=fmt.HYPHEN)
_millions = partial(fmt.millions, missing=fmt.HYPHEN)
_kb = partial(fmt.kilobytes, missing=fmt.HYPHEN)

_KERAS_ROWS = (("teacher", "teacher"), ("scratch", "student scratch"), ("student", "student"))


def _architectures(result: BuildResult) -> str:
    art = result.artifacts
    names = [f"{key}: {art[key].metrics.get('model')}" for key, _ in _KERAS_ROWS if key in art]
    distilled = "distilled" if art.get("student") and art["student"].metrics.get("distilled") else "not distilled"
    return "; ".join(names) + f"; student {distilled}; * = shipped in the bundle"


def build_table(result: BuildResult) -> Table:
    """One row per model the build produced: Keras models first, then each .tflite variant."""
    table = Table(title=f"edgeship build: profile '{result.profile.name}'", caption=_architectures(result))
    for column in ("model", "top-1", "agree", "params", "MACs", "size", "time"):
        table.add_column(column, justify="left" if column == "model" else "right", no_wrap=True)
    art = result.artifacts
    ship = result.profile.quantization.ship

    def seconds(key: str) -> str:
        return "cached" if art[key].cached else f"{art[key].seconds:.1f}s"

    for key, label in _KERAS_ROWS:
        if key in art:
            m = art[key].metrics
            table.add_row(label, _accuracy(m.get("test_accuracy")), "-", _count(m.get("parameters", 0)), _millions(m.get("macs", 0)), "-", seconds(key))
    if "prune" in art:
        m = art["prune"].metrics
        c = m.get("compression", {})
        what = c.get("applied_method", "none") + (f"+{c['clustering']['clusters']} clusters" if c.get("clustering") else "")
        sparsity = (c.get("after") or {}).get("sparsity")
        label = f"student {what}" + (f" (sparsity {sparsity:.2f})" if isinstance(sparsity, (int, float)) else "")
        table.add_row(label, _accuracy(m.get("test_accuracy")), "-", _count(m.get("parameters", 0)), _millions(m.get("macs", 0)), "-", seconds("prune"))
    for mode in result.profile.quantization.modes:
        key = f"evaluate:{mode}"
        if key in art:
            m = art[key].metrics
            marker = " *" if mode == ship else ""
            table.add_row(f"tflite {mode}{marker}", _accuracy(m["accuracy"]), _accuracy(m["agreement_with_keras"]), "", "", _kb(m["tflite_bytes"]), seconds(f"quantize:{mode}"))
    if "export_onnx" in art:  # agreement of onnxruntime with Keras on the export check's test images
        m = art["export_onnx"].metrics
        table.add_row(f"onnx opset {m['opset']}", "-", _accuracy(m["check"]["top1_agreement"]), "", "", _kb(m["bytes"]), seconds("export_onnx"))
    return table


def pruning_table(result: BuildResult) -> Table | None:
    """Before/after of the prune stage, then the real sparsity of every pruned layer (None if no prune stage)."""
    if "prune" not in result.artifacts:
        return None
    report = result.artifacts["prune"].metrics.get("compression", {})
    before, after = report.get("before", {}), report.get("after", {})
    table = Table(title=f"compression: {report.get('applied_method', report.get('method'))}"
                  + (f" + {report['clustering']['clusters']} clusters" if report.get("clustering") else ""))
    for column in ("", "before", "after"):
        table.add_column(column, justify="left" if not column else "right")
    rows = (
        ("top-1 (Keras)", "test_accuracy", _accuracy),
        ("parameters", "parameters", _count),
        ("MACs", "macs", _millions),
        ("sparsity", "sparsity", fmt.number),
        ("float32 .tflite", "float32_tflite_bytes", _kb),
        ("float32 .tflite gzip", "float32_tflite_gzip_bytes", _kb),
    )
    for label, key, render in rows:
        table.add_row(label, *("-" if side.get(key) is None else render(side[key]) for side in (before, after)))
    for row in report.get("layers", []):
        if row.get("zeros"):
            table.add_row(f"  {row['layer']}", f"{row['parameters']:,}", f"{row['sparsity']:.2f} sparse")
    for group in (report.get("structured") or {}).get("groups", []):
        tied = f" (with {', '.join(group['tied'])})" if group.get("tied") else ""
        table.add_row(f"  {group['layer']}{tied}", f"{group['channels']} ch", f"{group['kept']} ch")
    return table
