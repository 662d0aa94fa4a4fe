"""Farm report plots, rendered with matplotlib's Agg canvas straight to PNG bytes.

The figures are built with ``matplotlib.figure.Figure`` and ``FigureCanvasAgg`` rather than
``pyplot``: no global state, no GUI backend, safe from any thread. Every function returns PNG
bytes, with a "no data" placeholder when there is nothing to draw.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np

STATUS_COLOURS = {
    "pass": "#2e7d32",
    "improvement": "#1565c0",
    "regression": "#c62828",
    "no-baseline": "#757575",
    "invalid": "#ef6c00",
    "unconfirmed": "#ad1457",
    "busy": "#757575",
    "unreachable": "#6a1b9a",
    "failed": "#6a1b9a",
}
BASELINE_COLOUR = "#9e9e9e"


@dataclass(frozen=True)
class LatencySeries:
    """One device's samples for the distribution plot."""

    label: str
    candidate: Sequence[float]
    baseline: Optional[Sequence[float]] = None
    status: str = "pass"


@dataclass(frozen=True)
class TrendPoint:
    run_id: int
    p50: float


@dataclass(frozen=True)
class StepMark:
    """A change point on a trend: the run where the new level began, and after/before."""

    run_id: int
    ratio: Optional[float] = None
    kind: str = "step"  # or 'trend': a slow creep that began at run_id


@dataclass(frozen=True)
class ScatterPoint:
    label: str
    p50: float
    top1: float
    status: str = "pass"
    baseline_p50: Optional[float] = None
    baseline_top1: Optional[float] = None


def new_figure(width: float, height: float):
    """A pyplot-free matplotlib Figure (inches at 100 dpi), laid out to fit its labels."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def png_bytes(fig) -> bytes:
    """``fig`` rendered by the Agg canvas, as PNG bytes (no file, no GUI backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    canvas.print_png(buffer)
    return buffer.getvalue()


def placeholder_png(title: str, message: str = "no data") -> bytes:
    """A small titled PNG saying ``message``, so a report keeps its layout when there is nothing to draw."""
    fig = new_figure(6, 1.6)
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.4, message, ha="center", va="center", color="#757575", transform=ax.transAxes)
    return png_bytes(fig)


def shorten(label: str, limit: int = 28) -> str:
    """``label`` cut to ``limit`` characters with an ellipsis, for legends and annotations."""
    return label if len(label) <= limit else label[: limit - 1] + "…"


def latency_distribution_png(series: Sequence[LatencySeries], *, title: str = "Latency per device vs baseline") -> bytes:
    """Small multiples, one panel per device: box plots of baseline (grey) and this run's samples
    (coloured by verdict). Each device keeps its own ms scale: devices differ by orders of magnitude."""
    series = [s for s in series if len(s.candidate)]
    if not series:
        return placeholder_png(title)
    cols = min(4, len(series))
    rows = math.ceil(len(series) / cols)
    fig = new_figure(3.2 * cols, 2.4 * rows + 0.4)
    fig.suptitle(title)
    for i, item in enumerate(series):
        ax = fig.add_subplot(rows, cols, i + 1)
        data, labels, colours = [], [], []
        if item.baseline is not None and len(item.baseline):
            data.append(np.asarray(item.baseline, dtype=float))
            labels.append("baseline")
            colours.append(BASELINE_COLOUR)
        data.append(np.asarray(item.candidate, dtype=float))
        labels.append("this run")
        colours.append(STATUS_COLOURS.get(item.status, "#424242"))
        boxes = ax.boxplot(data, patch_artist=True, widths=0.55, showfliers=True,
                           flierprops={"markersize": 2, "alpha": 0.4})
        ax.set_xticks(range(1, len(labels) + 1), labels)
        for patch, colour in zip(boxes["boxes"], colours):
            patch.set_facecolor(colour)
            patch.set_alpha(0.55)
        for median in boxes["medians"]:
            median.set_color("black")
        ax.set_title(f"{shorten(item.label)} ({item.status})", fontsize=9)
        # A few scheduler hiccups (tens of ms against a 1 ms median) would squash the boxes flat.
        everything = np.concatenate(data)
        if everything.min() > 0 and everything.max() / np.median(everything) > 10:
            ax.set_yscale("log")
        ax.set_ylabel("ms", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    return png_bytes(fig)


def trend_png(trends: Mapping[str, Sequence[TrendPoint]], *, title: str = "p50 latency over recent runs") -> bytes:
    """One line per device: p50 of each past run (x: run id). Log y scale when devices differ a lot."""
    trends = {k: v for k, v in trends.items() if v}
    if not trends:
        return placeholder_png(title)
    fig = new_figure(8, 4)
    ax = fig.add_subplot()
    lows, highs = [], []
    for label, points in sorted(trends.items()):
        xs = [p.run_id for p in points]
        ys = [p.p50 for p in points]
        lows.append(min(ys))
        highs.append(max(ys))
        ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.2, label=shorten(label))
    if min(lows) > 0 and max(highs) / min(lows) > 20:
        ax.set_yscale("log")
    ax.set_xlabel("run id")
    ax.set_ylabel("p50 latency (ms)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best", ncol=2 if len(trends) > 6 else 1)
    return png_bytes(fig)


def step_label(mark: StepMark) -> str:
    """``run 41 ×1.12`` (``creep run 41 ×1.08``): what a change point's line says on a trend plot."""
    return ("creep " if mark.kind == "trend" else "") + f"run {mark.run_id}" + (f" ×{mark.ratio:.2f}" if mark.ratio is not None else "")


def device_trend_png(
    points: Sequence[TrendPoint],
    steps: Sequence[StepMark] = (),
    *,
    title: str = "p50 latency per night",
    status_colour: str = "#1565c0",
    message: Optional[str] = None,
) -> bytes:
    """One device's nightly p50 (x: run id) with a dashed vertical line at each change point,
    labelled with the run where the step began and its ratio (red: slower, blue: faster).
    ``message`` (the detector's, when it could not analyse the series) is written into the plot."""
    if not points:
        return placeholder_png(title, message or "no data")
    fig = new_figure(6.2, 2.5)
    ax = fig.add_subplot()
    xs = [p.run_id for p in points]
    ys = [p.p50 for p in points]
    ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.2, color=status_colour)
    top = max(ys)
    for i, mark in enumerate(steps):
        slower = mark.ratio is None or mark.ratio >= 1
        colour = STATUS_COLOURS["regression"] if slower else STATUS_COLOURS["improvement"]
        ax.axvline(mark.run_id, color=colour, linestyle=":" if mark.kind == "trend" else "--", linewidth=1.1, alpha=0.85)
        ax.annotate(step_label(mark), (mark.run_id, top), xytext=(3, -10 - 11 * (i % 3)), textcoords="offset points",
                    fontsize=7.5, color=colour, ha="left", va="top",
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})
    if message:
        ax.text(0.01, 0.03, shorten(message, 90), transform=ax.transAxes, fontsize=7, color="#757575", va="bottom")
    low = min(ys)
    pad = max((top - low) * 0.25, top * 0.02)
    ax.set_ylim(low - pad, top + pad * 1.6)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("run id", fontsize=8)
    ax.set_ylabel("p50 (ms)", fontsize=8)
    ax.tick_params(labelsize=8)
    ax.set_title(title, fontsize=9.5)
    ax.grid(alpha=0.3)
    return png_bytes(fig)


def accuracy_latency_png(points: Sequence[ScatterPoint], *, title: str = "On-device top-1 vs p50 latency") -> bytes:
    """This run's devices (filled, coloured by verdict) with a grey line to their baseline (hollow)."""
    points = [p for p in points if p.p50 is not None and p.top1 is not None]
    if not points:
        return placeholder_png(title)
    fig = new_figure(7, 4.5)
    ax = fig.add_subplot()
    xs = [p.p50 for p in points] + [p.baseline_p50 for p in points if p.baseline_p50]
    for point in points:
        colour = STATUS_COLOURS.get(point.status, "#424242")
        if point.baseline_p50 is not None and point.baseline_top1 is not None:
            ax.plot([point.baseline_p50, point.p50], [point.baseline_top1 * 100, point.top1 * 100],
                    color=BASELINE_COLOUR, linewidth=0.8, zorder=1)
            ax.scatter([point.baseline_p50], [point.baseline_top1 * 100], facecolors="none",
                       edgecolors=BASELINE_COLOUR, s=36, zorder=2)
        ax.scatter([point.p50], [point.top1 * 100], color=colour, s=40, zorder=3)
        ax.annotate(shorten(point.label, 20), (point.p50, point.top1 * 100), fontsize=7,
                    xytext=(4, 3), textcoords="offset points")
    if min(xs) > 0 and max(xs) / min(xs) > 20:
        ax.set_xscale("log")
    ax.set_xlabel("p50 latency (ms)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(title + " (hollow: baseline)")
    ax.grid(alpha=0.3)
    return png_bytes(fig)


def latency_split_png(fits: Mapping[str, Mapping], *, title: str = "Where each variant's p50 goes (1 thread)") -> bytes:
    """Per variant, the fitted p50 split into the per-op part (grey: what channel pruning cannot
    remove) and the per-MAC part, with the measured p50 as a black tick. One panel per mode."""
    modes = [m for m in fits if fits[m].get("variants")]
    if not modes:
        return placeholder_png(title)
    fig = new_figure(7.5, 1.2 + 1.1 * sum(len(fits[m]["variants"]) for m in modes) / 2)
    axes = fig.subplots(len(modes), 1, squeeze=False)[:, 0]
    for ax, mode in zip(axes, modes):
        fit = fits[mode]
        variants = fit["variants"]
        ys = np.arange(len(variants))
        fixed = [fit["per_op_us"] * v["ops"] / 1000 for v in variants]
        per_mac = [fit["per_mmac_us"] * v["macs"] / 1e9 for v in variants]
        ax.barh(ys, fixed, color="#9e9e9e", label="ops (fixed)")
        ax.barh(ys, per_mac, left=fixed, color="#1976d2", label="MACs")
        ax.scatter([v["p50_ms"] for v in variants], ys, marker="|", s=160, color="black", label="measured", zorder=3)
        ax.set_yticks(ys, [shorten(v["name"], 34) for v in variants], fontsize=7)
        r2 = "–" if fit.get("r2") is None else f"{fit['r2']:.2f}"
        ax.set_title(f"{mode}: {fit['per_op_us']:.2f} µs/op + {fit['per_mmac_us']:.2f} µs/M MACs (R² {r2})", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower right")
    axes[-1].set_xlabel("p50 (ms)")
    fig.suptitle(title)
    return png_bytes(fig)
