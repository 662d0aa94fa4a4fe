"""Self-contained HTML report of a farm run, and :func:`write_reports` for all three formats.

The HTML has no external assets: CSS is inline and plots are embedded as base64 PNG data URIs, so
the file can be mailed, archived as a CI artifact or opened offline. Every piece of text from the
store (device names, error messages, ...) goes through ``html.escape``.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

from pipeline import formatting as fmt
from pipeline.farm.regression import DEFAULT_POLICY, Policy, RunSummary, Verdict, load_verdicts, summarize
from pipeline.farm.rows import Run
from pipeline.farm.store import ResultsStore
from pipeline.fsutil import atomic_write_bytes, atomic_write_text
from pipeline.paths import results_dir
from pipeline.reports import plots
from pipeline.reports.junit import junit_xml, verdict_details
from pipeline.reports.markdown import EMULATED_LABEL, EXIT_MEANINGS, summary_markdown
from pipeline.reports.verdict_text import (
    baseline_source_text,
    change_point_text,
    distinct_policies,
    energy_cell,
    failed_metrics,
    flat_policy,
    has_energy,
)

TREND_RUNS = 30
#: status colours shared with the index page; 'unconfirmed' is styled as the failure it is
STATUS_CSS = """
.status { font-weight: 600; white-space: nowrap; } .pass { color: #2e7d32; } .improvement { color: #1565c0; }
.regression { color: #c62828; } .unconfirmed { color: #ad1457; } .no-baseline, .busy { color: #757575; }
.invalid { color: #ef6c00; } .unreachable, .failed { color: #6a1b9a; } .metric { font-weight: 400; font-size: .85em; }
"""
_CSS = STATUS_CSS + """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em; color: #212121; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
.facts { color: #616161; } .headline { font-size: 1.1em; font-weight: 600; }
table { border-collapse: collapse; margin: .6em 0; } th, td { border: 1px solid #e0e0e0; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #fafafa; } td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.emulated { color: #ef6c00; font-size: .85em; } details { margin: .6em 0; } summary { cursor: pointer; }
ul.reasons { margin: 0; padding-left: 1.1em; } .notes { color: #757575; font-size: .85em; }
img { max-width: 100%; border: 1px solid #eeeeee; margin: .4em 0; }
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


escape = _e


def status_cell(v: Verdict, *, title: Optional[str] = None) -> str:
    """The status, coloured, with the metric(s) a failing verdict failed on underneath
    (``title``: a tooltip, e.g. the reasons)."""
    metrics = failed_metrics(v)
    extra = f'<br><span class="metric">{_e(", ".join(metrics))}</span>' if metrics else ""
    tip = f' title="{_e(title)}"' if title else ""
    return f'<td class="status {_e(v.status)}"{tip}>{_e(v.status)}{extra}</td>'


def table(header: Sequence[str], rows: Sequence[str]) -> str:
    """A table from header labels and ready-made ``<tr>`` rows."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    return f"<table><thead><tr>{head}</tr></thead><tbody>" + "".join(rows) + "</tbody></table>"


# the A/B's own outcome, in the verdict colours: confirmed is the regression, not-confirmed cleared it
_AB_CLASS = {"confirmed": "regression", "not-confirmed": "pass", "unavailable": "unconfirmed", "invalid": "invalid"}


def _confirmation_rows(verdicts: Sequence[Verdict]) -> list[str]:
    """Stored-baseline comparison next to the device's A/B, for every verdict that ran one."""
    rows = []
    for v in verdicts:
        c, lat = v.confirmation, v.latency
        if c is None or c.status == "skipped":
            continue
        rows.append("<tr>" + "".join([
            f"<td>{_e(v.device)}</td>",
            status_cell(v),
            f'<td class="num">{fmt.ratio(lat.ratio if lat else None)}'
            + (f"<br>{lat.ci_low:.3f}–{lat.ci_high:.3f}" if lat and lat.ci_low is not None else "") + "</td>",
            f'<td class="num">{fmt.number(lat.p_slower if lat else None, ".2g")}</td>',
            f'<td class="status {_AB_CLASS.get(c.status, "")}">{_e(c.status)}</td>',
            f'<td class="num">{fmt.ratio(c.ratio)}</td>',
            f'<td class="num">{c.pairs_slower}/{c.pairs}</td>',
            f'<td class="num">{fmt.number(c.p_sign, ".2g")}</td>',
            f"<td>{'yes' if c.throttled else 'no'}</td>",
            f"<td>{_e(baseline_source_text(c.baseline_source)) if c.baseline_source else fmt.MISSING}</td>",
            f'<td class="num">{fmt.number(c.seconds, ".1f")}</td>',
            f"<td>{_e(c.reason)}</td>",
        ]) + "</tr>")
    return rows


def _change_point_rows(verdicts: Sequence[Verdict]) -> list[str]:
    rows = []
    for v in verdicts:
        for cp in v.change_points:
            cls = "regression" if cp.get("flagged") else ""
            rows.append(f'<tr><td>{_e(v.device)}</td><td>{_e(v.profile_name or "unknown")}</td>'
                        f'<td class="{cls}">{_e(change_point_text(cp))}</td></tr>')
        if v.trend:
            rows.append(f'<tr><td>{_e(v.device)}</td><td>{_e(v.profile_name or "unknown")}</td>'
                        f'<td class="notes">{_e(v.trend)}</td></tr>')
    return rows


def policy_details(verdicts: Sequence[Verdict]) -> str:
    """A collapsed block per distinct regression policy, with the devices it decided."""
    parts = []
    groups = distinct_policies(verdicts)
    for policy, devices in groups:
        rows = [f'<tr><td>{_e(k)}</td><td class="num">{_e(val)}</td></tr>' for k, val in flat_policy(policy)]
        who = "" if len(groups) == 1 else f" for {', '.join(devices)}"
        parts.append(f"<details><summary>Regression policy{_e(who)}</summary>{table(['setting', 'value'], rows)}</details>")
    return "\n".join(parts)


def _row(v: Verdict, energy: bool = False) -> str:
    lat, acc, mem = v.latency, v.accuracy, v.memory
    device = _e(v.device) + (f'<br><span class="emulated">{_e(EMULATED_LABEL)}</span>' if v.emulated else "")
    cells = [
        f"<td>{device}</td>",
        f"<td>{_e(v.profile_name or 'unknown')}</td>",
        status_cell(v),
        f'<td class="num">{fmt.number(v.p50)}</td>',
        f'<td class="num">{fmt.number(lat.baseline_p50 if lat else None)}</td>',
        f'<td class="num">{fmt.number(lat.ratio if lat else None)}'
        + (f"<br>{lat.ci_low:.3f}–{lat.ci_high:.3f}" if lat and lat.ci_low is not None else "") + "</td>",
        f'<td class="num">{fmt.number(lat.p_slower if lat else None, ".2g")}</td>',
        f'<td class="num">{fmt.percent(lat.threshold if lat else None, 1)}</td>',
        f'<td class="num">{fmt.percent(v.top1)}'
        + (f"<br>{fmt.number(acc.top1_delta, '+.2f', scale=100.0)}" if acc and acc.top1_delta is not None else "") + "</td>",
        f'<td class="num">{fmt.percent(acc.candidate_agreement if acc else None)}</td>',
        f'<td class="num">{fmt.number(v.peak_rss_mb, ".1f")}'
        + (f"<br>{fmt.number(mem.delta_mb, '+.1f')}" if mem and mem.delta_mb is not None else "") + "</td>",
    ]
    if energy:
        cells.append(f'<td class="num">{_e(energy_cell(v))}</td>')
    reasons = "".join(f"<li>{_e(r)}</li>" for r in v.reasons)
    notes = "<br>".join(_e(n) for n in v.notes)
    cells.append(
        "<td>" + (f'<ul class="reasons">{reasons}</ul>' if reasons else "")
        + (f'<div class="notes">{notes}</div>' if notes else "") + "</td>"
    )
    return "<tr>" + "".join(cells) + "</tr>"


def render_html(
    verdicts: Sequence[Verdict],
    *,
    run: Optional[Run] = None,
    images: Optional[Mapping[str, bytes]] = None,
    summary: Optional[RunSummary] = None,
    title: str = "edgeship farm report",
) -> str:
    """The report page. ``images`` maps a caption to PNG bytes (embedded in that order)."""
    summary = summary or summarize(verdicts)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}{_e(f' — run {run.id}') if run else ''}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}{_e(f' — run {run.id}') if run else ''}</h1>",
    ]
    if run is not None:
        facts = [
            f"{run.kind} run, {run.status}",
            f"started {run.started_at}",
            f"finished {run.finished_at}" if run.finished_at else None,
            f"inventory {run.inventory}" if run.inventory else None,
            f"profile {run.profile_name}" if run.profile_name else None,
            f"commit {run.info.get('git_commit')}" if run.info.get("git_commit") else None,
            f"edgeship {run.info.get('edgeship')}" if run.info.get("edgeship") else None,
        ]
        parts.append('<p class="facts">' + " · ".join(_e(f) for f in facts if f) + "</p>")
    parts.append(
        f'<p class="headline">{_e(summary.headline)} of {summary.total} → exit {summary.exit_code} '
        f"({_e(EXIT_MEANINGS.get(summary.exit_code, '?'))})</p>"
    )
    parts.append("<h2>Devices</h2>")
    if verdicts:
        header = ["device", "profile", "status", "p50 ms", "baseline p50", "ratio / 95% CI", "p (slower)",
                  "threshold", "top-1 / Δ pts", "agreement", "peak RSS MB / Δ"]
        energy = has_energy(verdicts)
        header += ["energy mJ/inference (Δ), estimated"] if energy else []
        rows = [_row(v, energy) for v in sorted(verdicts, key=lambda v: (v.profile_name or "", v.device))]
        parts.append(table([*header, "reasons"], rows))
    else:
        parts.append("<p>This run recorded no results.</p>")
    confirmations = _confirmation_rows(verdicts)
    if confirmations:
        parts.append("<h2>Latency: stored baseline vs A/B confirmation</h2>")
        parts.append(table(["device", "verdict", "stored: ratio / 95% CI", "stored: p (slower)", "A/B", "paired ratio",
                            "pairs slower", "sign-test p", "throttled", "baseline bundle", "device s", "reason"],
                           confirmations))
    steps = _change_point_rows(verdicts)
    if steps:
        parts.append("<h2>Change points in the nightly history</h2>")
        parts.append(table(["device", "profile", "change point"], steps))
    policy = policy_details(verdicts)
    if policy:
        parts.append(policy)
    if images:
        parts.append("<h2>Plots</h2>")
        for caption, png in images.items():
            data = base64.b64encode(png).decode("ascii")
            parts.append(f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,{data}"><figcaption>{_e(caption)}</figcaption></figure>')
    details = [(v, verdict_details(v, with_policy=False)) for v in verdicts]
    if any(d for _, d in details):
        parts.append("<h2>Details</h2>")
        for v, text in details:
            if text:
                parts.append(f"<h3>{_e(v.device)} / {_e(v.profile_name or 'unknown')}</h3><pre>{_e(text)}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def build_plots(store: ResultsStore, verdicts: Sequence[Verdict]) -> dict[str, bytes]:
    """The three report plots for a run's verdicts, from the store's samples and history."""
    series, trends, scatter = [], {}, []
    for v in sorted(verdicts, key=lambda v: (v.profile_name or "", v.device)):
        if v.result_id is None:
            continue
        label = v.device + (f" [{v.profile_name}]" if len({x.profile_name for x in verdicts}) > 1 else "")
        label += " (emulated)" if v.emulated else ""
        candidate = store.get_samples(v.result_id)
        if candidate.size:
            baseline = store.get_samples(v.baseline_result_id) if v.baseline_result_id else None
            series.append(plots.LatencySeries(label, candidate, baseline, v.status))
        if v.profile_name:
            history = store.history(v.device, v.profile_name, TREND_RUNS, before_result_id=v.result_id + 1, emulated=v.emulated)
            trends[label] = [plots.TrendPoint(r.run_id, r.p50) for r in history if r.p50 is not None]
        if v.p50 is not None and v.top1 is not None and v.status not in ("unreachable", "failed"):
            base = store.get_result(v.baseline_result_id) if v.baseline_result_id else None
            scatter.append(plots.ScatterPoint(label, v.p50, v.top1, v.status,
                                              base.p50 if base else None, base.top1 if base else None))
    return {
        "Latency distribution per device (this run vs baseline)": plots.latency_distribution_png(series),
        f"p50 latency over the last {TREND_RUNS} valid runs per device": plots.trend_png(trends),
        "On-device top-1 vs p50 latency": plots.accuracy_latency_png(scatter),
    }


def write_reports(
    store: ResultsStore,
    run_id: int,
    out_dir: Union[str, Path, None] = None,
    *,
    policy: Policy = DEFAULT_POLICY,
) -> dict[str, Path]:
    """Write junit.xml, summary.md and report.html for a run into ``out_dir`` (default
    ``results/reports/<run id>/``), each atomically; returns {"junit", "markdown", "html"} -> path.

    Uses the verdicts saved when the run was checked (so a report regenerated later says what was
    decided that night); a run never checked is checked now with ``policy``, without saving.
    """
    run = store.get_run(run_id)
    out = Path(out_dir) if out_dir is not None else results_dir() / "reports" / str(run_id)
    verdicts = load_verdicts(store, run_id, policy=policy)
    summary = summarize(verdicts)
    paths = {"junit": out / "junit.xml", "markdown": out / "summary.md", "html": out / "report.html"}
    atomic_write_text(paths["junit"], junit_xml(verdicts, run=run))
    atomic_write_text(paths["markdown"], summary_markdown(verdicts, run=run))
    images = build_plots(store, verdicts)
    atomic_write_bytes(paths["html"], render_html(verdicts, run=run, images=images, summary=summary).encode("utf-8"))
    return paths
