"""``results/reports/index.html``: every night on one page, the page a team opens in the morning.

At the top, last night in one line (``3 pass, 2 regression (latency 1, memory 1)``) and the devices
that need attention; then each device's nightly p50 with its change points; then every night (date,
commit, profile, one cell per device with the metric that failed, a link to that night's report).

Self-contained like the night reports: inline CSS, plots as base64 PNG data URIs, no scripts, no
fonts, and no links but the relative ones to nights whose report exists next to the index.
What each night decided comes from the verdicts saved with it; a farm run never checked (``edgeship
farm run``) shows its devices' raw result status, marked "not checked".
"""

from __future__ import annotations

import base64
import datetime as _dt
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from pipeline import formatting as fmt
from pipeline.clock import utc_now
from pipeline.farm.changepoints import ChangePointReport, as_dicts, device_change_points
from pipeline.farm.regression import RunSummary, Verdict, summarize
from pipeline.farm.rows import Run
from pipeline.farm.store import ResultsStore
from pipeline.fsutil import atomic_write_text
from pipeline.paths import results_dir
from pipeline.reports import plots
from pipeline.reports.html import STATUS_CSS, escape as _e, status_cell, table
from pipeline.reports.markdown import EXIT_MEANINGS
from pipeline.reports.verdict_text import FAILING, change_point_text, failed_metrics

log = logging.getLogger(__name__)

INDEX_NAME = "index.html"
REPORT_NAME = "report.html"
#: a change point this many nights old or newer is news in the morning summary, unless the last
#: night's policy says otherwise (its changepoint_recent; changepoint_window sets the history read)
RECENT_NIGHTS = 7

_CSS = STATUS_CSS + """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em 2em; color: #212121; max-width: 1400px; }
h1 { font-size: 1.5em; margin: 0 0 .3em; } h2 { font-size: 1.2em; margin: 1.4em 0 .4em; }
.facts, .generated { color: #616161; } .generated { font-size: .85em; margin-top: 2em; }
.morning { border: 1px solid #e0e0e0; border-left: 6px solid #2e7d32; padding: .6em 1em; background: #fafafa; }
.morning.exit1 { border-left-color: #c62828; } .morning.exit2 { border-left-color: #6a1b9a; }
.headline { font-size: 1.25em; font-weight: 600; margin: .2em 0; }
.morning ul { margin: .3em 0; padding-left: 1.2em; }
table { border-collapse: collapse; margin: .4em 0; } th, td { border: 1px solid #e0e0e0; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f5f5f5; font-weight: 600; } td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.mono, span.mono { font-family: ui-monospace, "SFMono-Regular", Menlo, monospace; font-size: .9em; }
.scroll { overflow-x: auto; } td.status { text-align: center; }
td.pass { background: #e8f5e9; } td.regression { background: #ffebee; } td.unconfirmed { background: #fce4ec; }
td.improvement { background: #e3f2fd; } td.invalid { background: #fff3e0; } td.unreachable, td.failed { background: #f3e5f5; }
td.no-baseline, td.busy, td.absent, td.unchecked { background: #f5f5f5; color: #757575; }
.trends { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: .8em 1.2em; }
figure { margin: 0; } figcaption { font-size: .85em; color: #424242; } figcaption ul { margin: .2em 0; padding-left: 1.2em; }
img { max-width: 100%; border: 1px solid #eeeeee; }
.step-up { color: #c62828; } .step-down { color: #1565c0; } .quiet { color: #757575; }
"""


@dataclass(frozen=True)
class SeriesKey:
    """One column of the nights table and one trend plot: a device under one profile."""

    device: str
    profile_name: Optional[str]
    emulated: bool = False

    def label(self, with_profile: bool) -> str:
        text = self.device + (f" [{self.profile_name}]" if with_profile and self.profile_name else "")
        return text + (" (emulated)" if self.emulated else "")


@dataclass
class Night:
    """One farm run as the index shows it."""

    run: Run
    verdicts: list[Verdict]
    summary: RunSummary
    report_href: Optional[str] = None
    unchecked: dict[SeriesKey, str] = field(default_factory=dict)  # result status of a run never checked

    def cells(self) -> dict[SeriesKey, Verdict]:
        return {SeriesKey(v.device, v.profile_name, v.emulated): v for v in self.verdicts}


@dataclass
class Trend:
    key: SeriesKey
    report: ChangePointReport
    png: bytes


def points_of(report: ChangePointReport) -> list[dict]:
    """The report's change points as dicts (run id where each began, before, after, ratio, kind)."""
    return [{**d, "kind": p.kind} for d, p in zip(as_dicts(report), report.points)]


def _night(store: ResultsStore, run: Run, out_dir: Path) -> Night:
    verdicts = [Verdict.from_dict(v) for v in store.saved_verdicts(run.id)]
    unchecked = {}
    if not verdicts:
        unchecked = {SeriesKey(r.device, r.profile_name, r.emulated): r.status for r in store.results_for_run(run.id)}
    report = out_dir / str(run.id) / REPORT_NAME
    href = f"{run.id}/{REPORT_NAME}" if report.is_file() else None
    return Night(run, verdicts, summarize(verdicts), href, unchecked)


def collect_nights(store: ResultsStore, out_dir: Path, limit: int) -> list[Night]:
    """The latest ``limit`` farm runs, newest first, with what was decided for each."""
    return [_night(store, run, out_dir) for run in store.list_runs(limit=limit, kind="farm")]


def _keys(nights: Sequence[Night]) -> list[SeriesKey]:
    keys = {k for n in nights for k in (*n.cells(), *n.unchecked)}
    return sorted(keys, key=lambda k: (k.device, k.profile_name or "", k.emulated))


def _trend(store: ResultsStore, key: SeriesKey, status: str, window: int, with_profile: bool) -> Trend:
    if key.profile_name is None:
        report = ChangePointReport(key.device, "", message=f"{key.device}: results name no build profile, no history to analyse")
    else:
        try:
            report = device_change_points(store, key.device, key.profile_name, window=window, emulated=key.emulated)
        except Exception as exc:  # noqa: BLE001 - one device's bad history must not cost the team its morning page
            log.warning("change points of %s / %s failed: %s", key.device, key.profile_name, exc, exc_info=True)
            report = ChangePointReport(key.device, key.profile_name,
                                       message=f"{key.device} / {key.profile_name}: change points not computed: {exc}")
    points = [plots.TrendPoint(r, v) for r, v in zip(report.run_ids, report.values) if v is not None]
    steps = [plots.StepMark(cp["run_id"], cp["ratio"], cp["kind"]) for cp in points_of(report)]
    png = plots.device_trend_png(points, steps, title=key.label(with_profile),
                                 status_colour=plots.STATUS_COLOURS.get(status, "#424242"), message=report.message)
    return Trend(key, report, png)


def collect_trends(store: ResultsStore, nights: Sequence[Night], window: int) -> list[Trend]:
    keys = _keys(nights)
    with_profile = len({k.profile_name for k in keys}) > 1
    latest: dict[SeriesKey, str] = {}
    for night in reversed(nights):  # oldest first, so the newest status wins
        latest.update(night.unchecked)
        latest.update({k: v.status for k, v in night.cells().items()})
    # failing devices first: the morning reader looks at those
    ordered = sorted(keys, key=lambda k: latest.get(k) not in FAILING)
    return [_trend(store, key, latest.get(key, "pass"), window, with_profile) for key in ordered]


# ---------------------------------------------------------------------------------- rendering


def _when(started_at: str) -> str:
    try:
        value = _dt.datetime.fromisoformat(started_at)
    except ValueError:
        return started_at[:16]
    if value.tzinfo is not None:
        value = value.astimezone(_dt.timezone.utc)
    return value.strftime("%Y-%m-%d %H:%M") + " UTC"


def _commit(run: Run) -> str:
    commit = run.info.get("git_commit")
    if not commit:
        return fmt.MISSING
    return str(commit)[:10] + ("+dirty" if run.info.get("git_dirty") else "")


def _profile(night: Night) -> str:
    if night.run.profile_name:
        return night.run.profile_name
    names = sorted({v.profile_name for v in night.verdicts if v.profile_name} | {k.profile_name for k in night.unchecked if k.profile_name})
    return ", ".join(names) or fmt.MISSING


def _night_link(night: Night, text: str) -> str:
    return f'<a href="{_e(night.report_href)}">{_e(text)}</a>' if night.report_href else _e(text)


def _headline(night: Night) -> str:
    if night.verdicts:
        return f"{night.summary.headline} of {night.summary.total}"
    if night.unchecked:
        return f"not checked ({len(night.unchecked)} result{'s' if len(night.unchecked) != 1 else ''})"
    return "no results"


def _facts(night: Night) -> str:
    facts = [f"run {night.run.id}", _when(night.run.started_at), f"commit {_commit(night.run)}", f"profile {_profile(night)}"]
    if night.run.status != "finished":
        facts.append(night.run.status)
    return " · ".join(facts)


def last_policy(nights: Sequence[Night]) -> dict:
    """The regression policy of the newest checked night (empty if none recorded one)."""
    return next((v.policy for n in nights for v in n.verdicts if v.policy), {})


def _recent_nights(nights: Sequence[Night]) -> int:
    value = last_policy(nights).get("changepoint_recent")
    return value if isinstance(value, int) and value > 0 else RECENT_NIGHTS


def _recent_steps(trends: Sequence[Trend], nights: Sequence[Night]) -> list[tuple[Trend, dict]]:
    recent = {n.run.id for n in nights[:_recent_nights(nights)]}
    return [(t, cp) for t in trends for cp in points_of(t.report) if cp["run_id"] in recent]


def _morning(nights: Sequence[Night], trends: Sequence[Trend], with_profile: bool) -> str:
    checked = [n for n in nights if n.verdicts]
    if not checked:
        return '<section class="morning"><p class="headline">No checked night yet.</p>' + (
            f"<p>{len(nights)} farm run(s) recorded, none checked by <span class=\"mono\">edgeship nightly</span>.</p>" if nights else
            "<p>Run <span class=\"mono\">edgeship nightly</span> to record the first night.</p>") + "</section>"
    night = checked[0]
    code = night.summary.exit_code
    parts = [
        f'<section class="morning exit{code}">',
        f'<div class="facts">Last night: {_night_link(night, _facts(night))}</div>',
        f'<p class="headline">{_e(_headline(night))} → exit {code} ({_e(EXIT_MEANINGS.get(code, "?"))})</p>',
    ]
    if night is not nights[0]:
        parts.append(f'<p class="facts">A newer farm run ({_e(_facts(nights[0]))}) has no verdicts yet.</p>')
    attention = sorted((v for v in night.verdicts if v.status not in ("pass", "improvement")),
                       key=lambda v: (v.status not in FAILING, v.device))
    if attention:
        items = []
        for v in attention:
            label = SeriesKey(v.device, v.profile_name, v.emulated).label(with_profile)
            metrics = failed_metrics(v)
            what = v.status + (f" ({', '.join(metrics)})" if metrics else "")
            why = v.reasons[0] if v.reasons else ""
            items.append(f'<li><b>{_e(label)}</b>: <span class="status {_e(v.status)}">{_e(what)}</span>'
                         + (f" — {_e(why)}" if why else "") + "</li>")
        parts.append("<ul>" + "".join(items) + "</ul>")
    steps = _recent_steps(trends, nights)
    if steps:
        items = [f'<li><b>{_e(t.key.label(with_profile))}</b>: <span class="{"step-up" if cp["ratio"] >= 1 else "step-down"}">'
                 f"{_e(change_point_text(cp))}</span></li>" for t, cp in steps]
        parts.append(f"<div>Change points in the last {_recent_nights(nights)} nights:</div><ul>" + "".join(items) + "</ul>")
    else:
        parts.append(f'<div class="quiet">No change point in the last {_recent_nights(nights)} nights.</div>')
    parts.append("</section>")
    return "\n".join(parts)


def _cell(night: Night, key: SeriesKey) -> str:
    verdict = night.cells().get(key)
    if verdict is not None:
        return status_cell(verdict, title="; ".join(verdict.reasons))
    if key in night.unchecked:
        return f'<td class="status unchecked" title="not checked">{_e(night.unchecked[key])}</td>'
    return f'<td class="absent">{fmt.MISSING}</td>'


def _nights_table(nights: Sequence[Night], keys: Sequence[SeriesKey], with_profile: bool) -> str:
    header = ["run", "date", "commit", "profile", "summary", *(k.label(with_profile) for k in keys)]
    rows = []
    for night in nights:
        rows.append("<tr>" + "".join([
            f'<td class="num">{_night_link(night, str(night.run.id))}</td>',
            f'<td class="num">{_e(_when(night.run.started_at))}</td>',
            f'<td class="mono">{_e(_commit(night.run))}</td>',
            f"<td>{_e(_profile(night))}</td>",
            f"<td>{_e(_headline(night))}</td>",
            *(_cell(night, k) for k in keys),
        ]) + "</tr>")
    return '<div class="scroll">' + table(header, rows) + "</div>"


def _trend_figure(trend: Trend, with_profile: bool) -> str:
    data = base64.b64encode(trend.png).decode("ascii")
    label = trend.key.label(with_profile)
    report = trend.report
    notes = [f'<li class="{"step-up" if cp["ratio"] >= 1 else "step-down"}">{_e(change_point_text(cp))}</li>' for cp in points_of(report)]
    if report.message:
        notes.append(f'<li class="quiet">{_e(report.message)}</li>')
    elif not notes:
        notes.append(f'<li class="quiet">no change point in {len(report.values)} nights</li>')
    return (f'<figure><img alt="p50 latency per night of {_e(label)}" src="data:image/png;base64,{data}">'
            f"<figcaption><b>{_e(label)}</b><ul>{''.join(notes)}</ul></figcaption></figure>")


def render_index(nights: Sequence[Night], trends: Sequence[Trend], *, title: str = "edgeship nightly") -> str:
    """The index page from collected nights (newest first) and trends."""
    keys = _keys(nights)
    with_profile = len({k.profile_name for k in keys}) > 1
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        _morning(nights, trends, with_profile),
    ]
    if trends:
        parts.append("<h2>Latency trend per device</h2>")
        parts.append('<p class="facts">p50 of each night; dashed lines: steps, dotted: a slow creep, each labelled with the run where it began and its ratio.</p>')
        parts.append('<div class="trends">' + "".join(_trend_figure(t, with_profile) for t in trends) + "</div>")
    parts.append(f"<h2>Nights ({len(nights)})</h2>")
    parts.append(_nights_table(nights, keys, with_profile) if nights else "<p>No farm run recorded yet.</p>")
    parts.append(f'<p class="generated">Generated {_e(_when(utc_now()))}. Hover a cell for the reasons; a run number links to that night\'s report.</p>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_index(store: ResultsStore, out_dir: Optional[Path] = None, *, limit: int = 60) -> Path:
    """Write ``index.html`` (default ``results/reports/index.html``, next to each night's
    ``<run id>/report.html``) atomically over the latest ``limit`` farm runs; returns its path."""
    out = Path(out_dir) if out_dir is not None else results_dir() / "reports"
    nights = collect_nights(store, out, limit)
    window = last_policy(nights).get("changepoint_window")
    trends = collect_trends(store, nights, window=window if isinstance(window, int) and window > 0 else limit)
    path = out / INDEX_NAME
    atomic_write_text(path, render_index(nights, trends))
    return path
