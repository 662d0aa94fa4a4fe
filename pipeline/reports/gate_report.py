"""The gate bench's page: the sensitivity curve (detection rate against the measured slowdown,
quiet and with drift, A/A false rate at 1.0) as a plot and a table, plus the creep series.

Self-contained HTML (inline CSS, the plot as a data: URI) under ``results/bench/gate.html``.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any, Mapping

from pipeline.fsutil import atomic_write_text
from pipeline.paths import results_dir
from pipeline.reports.plots import new_figure, png_bytes

STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.no{color:#b00020;font-weight:600}.yes{color:#0a7d32}"""


def sensitivity_png(payload: Mapping[str, Any]) -> bytes:
    fig = new_figure(7.5, 4.2)
    ax = fig.add_subplot()
    for mode, marker in (("quiet", "o"), ("drift", "s")):
        xs = [1.0] + [row["true_ratio"] or (1 + row["extra_macs"]) for row in payload["sensitivity"]]
        aa = payload[f"aa_{mode}"]
        ys = [aa["false_alarms"] / max(aa["runs"], 1)] + [row[mode]["rate"] for row in payload["sensitivity"]]
        ax.plot(xs, [y * 100 for y in ys], marker=marker, label=f"{mode}")
    ax.axhline(95, color="#999", linestyle=":", linewidth=1)
    ax.set_xlabel("measured slowdown (paired A/B ratio; 1.0 = the A/A series)")
    ax.set_ylabel("flagged as a latency regression (%)")
    ax.set_ylim(-3, 103)
    ax.set_title("Regression gate sensitivity")
    ax.legend()
    return png_bytes(fig)


def _cell(value: Any) -> str:
    return html.escape("" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value))


def render(payload: Mapping[str, Any]) -> str:
    image = base64.b64encode(sensitivity_png(payload)).decode("ascii")
    rows = "".join(
        f"<tr><td>{_cell(r['label'])}</td><td>{r['extra_macs'] * 100:.1f}%</td><td>{_cell(r['true_ratio'])}</td>"
        f"<td>{r['quiet']['detected']}/{r['quiet']['runs']}</td><td>{r['drift']['detected']}/{r['drift']['runs']}</td></tr>"
        for r in payload["sensitivity"]
    )
    aa = "".join(
        f"<tr><td>A/A {mode}</td><td>{payload[f'aa_{mode}']['false_alarms']}/{payload[f'aa_{mode}']['runs']}</td>"
        f"<td>{sum(c is not None for c in payload[f'aa_{mode}']['confirmations'])}</td></tr>"
        for mode in ("quiet", "drift")
    )
    creep = "".join(
        f"<tr><td>{n['night']}</td><td>{n['extra_macs'] * 100:.1f}%</td><td>{_cell(n['baseline_check'])}</td>"
        f"<td class=\"{'no' if n['trend_flagged'] else ''}\">{'flagged' if n['trend_flagged'] else '-'}</td></tr>"
        for n in payload["creep"]["nights"]
    )
    targets = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{_cell(t['value'])}</td><td>{_cell(t['limit'])}</td>"
        f"<td class=\"{'yes' if t['met'] else 'no'}\">{'yes' if t['met'] else 'NO'}</td></tr>"
        for k, t in payload["targets"].items()
    )
    host = payload.get("host", {})
    calibration = payload.get("calibration", {})
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>edgeship gate bench</title><style>{STYLE}</style></head><body>
<h1>Regression gate bench</h1>
<p>{html.escape(payload.get('method', ''))}. Bundle {html.escape(payload['bundle_id'][:12])}, host CPU {html.escape(str(host.get('cpu_model', '?')))}.
Calibration: +{calibration.get('probe_extra_macs', 0) * 100:.0f}% MACs at {html.escape(str(calibration.get('layer')))} measured x{_cell(calibration.get('probe_ratio'))}.</p>
<h2>Targets</h2><table><tr><th>target</th><th>value</th><th>limit</th><th>met</th></tr>{targets}</table>
<h2>Sensitivity</h2><img alt="detection rate against measured slowdown" src="data:image/png;base64,{image}">
<table><tr><th>rung</th><th>extra MACs</th><th>measured ratio</th><th>flagged, quiet</th><th>flagged, drift</th></tr>{rows}</table>
<table><tr><th>series</th><th>false alarms</th><th>A/B confirmations run</th></tr>{aa}</table>
<h2>Creep (+2 %/night, baseline re-accepted nightly)</h2>
<p>Night {len(payload["creep"]["nights"])} measured x{_cell(payload["creep"].get("last_night_true_ratio"))} against the base bundle.</p>
<table><tr><th>night</th><th>extra MACs</th><th>baseline check</th><th>history</th></tr>{creep}</table>
</body></html>"""


def write_gate_report(payload: Mapping[str, Any], path: Path | None = None) -> Path:
    path = path or results_dir() / "bench" / "gate.html"
    atomic_write_text(path, render(payload))
    return path
