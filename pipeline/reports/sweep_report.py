"""What a sweep shows: a table of variants, Pareto plots, and a self-contained HTML page."""

from __future__ import annotations

import base64
import html
import json
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

from pipeline import formatting as fmt
from pipeline.fsutil import atomic_write_bytes, atomic_write_text
from pipeline.reports.plots import latency_split_png, new_figure, placeholder_png, png_bytes, shorten
from pipeline.sweep.constraints import Selection
from pipeline.sweep.runner import SweepResult

if TYPE_CHECKING:  # pragma: no cover
    from pipeline.reports.latency_model import LatencyPoint

QUANT_COLOURS = {"float32": "#1565c0", "float16": "#00838f", "dynamic": "#6a1b9a", "int8": "#c62828", "mixed": "#ef6c00"}
COLUMNS = ("variant", "top-1", "p50 ms", "size KB", "params", "MACs", "Pareto", "note")


_cell = partial(fmt.number, missing=fmt.HYPHEN)


def table_rows(result: SweepResult, selection: Optional[Selection] = None) -> list[list[str]]:
    lat, size = set(result.latency_front), set(result.size_front)
    rows = []
    for i, row in enumerate(result.rows):
        marks = ("L" if i in lat else "") + ("S" if i in size else "")
        note = "selected" if selection and selection.best == i else (row.get("error") or "")[:60]
        rows.append(
            [
                row["name"], _cell(row.get("accuracy"), ".4f"), _cell(row.get("latency_ms"), ".3f"), _cell(row.get("size_kb"), ".1f"),
                _cell(row.get("parameters"), ","), _cell(row.get("macs"), ","), marks or "-", note,
            ]
        )
    return rows


def sweep_table(result: SweepResult, selection: Optional[Selection] = None):
    """A rich table; Pareto column: L = on the accuracy/latency front, S = on the accuracy/size front."""
    from rich.table import Table

    table = Table(
        title=f"sweep {result.sweep_id}: {result.base_profile} on {result.target}",
        caption="Pareto: L = accuracy vs p50 latency front, S = accuracy vs size front",
    )
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in ("variant", "note") else "right", no_wrap=column != "note")
    for cells in table_rows(result, selection):
        table.add_row(*cells, style="bold green" if cells[-1] == "selected" else None)
    return table


def markdown_table(result: SweepResult, selection: Optional[Selection] = None) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in table_rows(result, selection)]
    return "\n".join(lines) + "\n"


def pareto_png(rows: Sequence[Mapping[str, Any]], front: Sequence[int], x_key: str, x_label: str, title: str,
               selected: Optional[int] = None) -> bytes:
    """Every variant as a dot coloured by quantization mode; the front joined by a step line."""
    points = [(i, r) for i, r in enumerate(rows) if r.get(x_key) is not None and r.get("accuracy") is not None]
    if not points:
        return placeholder_png(title)
    fig = new_figure(7.5, 4.8)
    ax = fig.add_subplot()
    for mode, colour in QUANT_COLOURS.items():
        chosen = [r for _, r in points if r.get("quantization") == mode]
        if chosen:
            ax.scatter([r[x_key] for r in chosen], [r["accuracy"] * 100 for r in chosen], color=colour, s=36, label=mode, zorder=3)
    ordered = sorted((rows[i] for i in front), key=lambda r: r[x_key])
    if ordered:
        ax.step([r[x_key] for r in ordered], [r["accuracy"] * 100 for r in ordered], where="post", color="#424242",
                linewidth=1.0, zorder=2, label="Pareto front")
        for r in ordered:
            ax.annotate(shorten(r["name"], 34), (r[x_key], r["accuracy"] * 100), fontsize=6, xytext=(4, -8), textcoords="offset points")
    if selected is not None and rows[selected].get(x_key) is not None:
        r = rows[selected]
        ax.scatter([r[x_key]], [r["accuracy"] * 100], s=160, facecolors="none", edgecolors="#2e7d32", linewidths=2, zorder=4, label="selected")
    ax.set_xlabel(x_label)
    ax.set_ylabel("top-1 (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return png_bytes(fig)


def variant_model(row: Mapping[str, Any]) -> Path:
    """The .tflite a sweep row measured (its published bundle's model)."""
    from pipeline.paths import bundles_dir

    return bundles_dir() / str(row.get("bundle_id")) / "model.tflite"


def latency_points(rows: Sequence[Mapping[str, Any]], p50_ms: Mapping[str, float]) -> list["LatencyPoint"]:
    """A latency-model point per variant that has a p50 in ``p50_ms`` (by name) and a model here."""
    from pipeline.quantize.litert_eval import op_count
    from pipeline.reports.latency_model import LatencyPoint

    return [
        LatencyPoint(row["name"], str(row.get("quantization")), op_count(variant_model(row).read_bytes()), int(row["macs"]), float(p50_ms[row["name"]]))
        for row in rows
        if not row.get("error") and row.get("macs") and row["name"] in p50_ms and variant_model(row).is_file()
    ]


def target_latency_model(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The latency model (:mod:`pipeline.reports.latency_model`) fitted to the p50s the agent
    measured on the sweep's target: what pruning will and will not buy on that device."""
    from pipeline.reports.latency_model import fit

    return fit(latency_points(rows, {row["name"]: row["latency_ms"] for row in rows if row.get("latency_ms")}))


def latency_summary(sweep_json: Path) -> list[str]:
    """One line per quantization mode of a written report's latency model, for the terminal."""
    from pipeline.reports.latency_model import describe

    summary = json.loads(sweep_json.read_text(encoding="utf-8"))
    return [describe(mode, fit, summary["target"]) for mode, fit in summary.get("latency_model", {}).items()]


def write_sweep_report(result: SweepResult, out_dir: Path, selection: Optional[Selection] = None) -> dict[str, Path]:
    """sweep.json, table.md, the plots (Pareto fronts, latency model) and report.html in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    selected = selection.best if selection else None
    latency_fits = target_latency_model(result.rows)
    plots = {
        "pareto_latency.png": pareto_png(result.rows, result.latency_front, "latency_ms", f"p50 latency on {result.target} (ms)",
                                         "Accuracy vs latency", selected),
        "pareto_size.png": pareto_png(result.rows, result.size_front, "size_kb", ".tflite size (KB)", "Accuracy vs size", selected),
        "latency_model.png": latency_split_png(latency_fits, title=f"Where each variant's p50 goes on {result.target}"),
    }
    paths = {}
    for name, data in plots.items():
        paths[name] = out_dir / name
        atomic_write_bytes(paths[name], data)
    summary = {
        "sweep_id": result.sweep_id,
        "target": result.target,
        "base_profile": result.base_profile,
        "variants": result.rows,
        "latency_front": [result.rows[i]["name"] for i in result.latency_front],
        "size_front": [result.rows[i]["name"] for i in result.size_front],
        "latency_model": latency_fits,
        "selection": None if selection is None else {
            "best": None if selected is None else result.rows[selected]["name"], "message": selection.message,
        },
    }
    paths["sweep.json"] = out_dir / "sweep.json"
    atomic_write_text(paths["sweep.json"], json.dumps(summary, indent=2, default=str) + "\n")
    paths["table.md"] = out_dir / "table.md"
    atomic_write_text(paths["table.md"], markdown_table(result, selection))
    paths["report.html"] = out_dir / "report.html"
    atomic_write_text(paths["report.html"], _html(result, plots, selection))
    return paths


def _html(result: SweepResult, plots: Mapping[str, bytes], selection: Optional[Selection]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = "".join(
        "<tr" + (' class="sel"' if cells[-1] == "selected" else "") + ">" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"
        for cells in table_rows(result, selection)
    )
    images = "".join(
        f'<img alt="{html.escape(name)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">' for name, data in plots.items()
    )
    chosen = f"<p><b>Selection:</b> {html.escape(selection.message)}</p>" if selection else ""
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>edgeship sweep {result.sweep_id}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
        "padding:3px 8px;text-align:right}td:first-child{text-align:left}tr.sel{background:#e8f5e9}img{max-width:48%;margin:1%}</style>"
        f"</head><body><h1>Sweep {result.sweep_id}: {html.escape(result.base_profile)} on {html.escape(result.target)}</h1>"
        f"{chosen}<div>{images}</div><table><tr>{head}</tr>{body}</table>"
        "<p>Pareto: L = accuracy vs p50 latency front, S = accuracy vs size front. Accuracy is host top-1 on the whole "
        "test split; latency is the p50 measured by the agent on the target.</p></body></html>\n"
    )
