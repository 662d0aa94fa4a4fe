"""A compact Markdown summary of a farm run, for a chat message or a CI comment."""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Optional, Sequence

from pipeline import formatting as fmt
from pipeline.farm.regression import Verdict, summarize
from pipeline.farm.rows import Run
from pipeline.reports.verdict_text import (
    FAILING, change_point_text, confirmation_text, energy_cell, failed_metrics, has_energy, policy_text,
)

STATUS_LABELS = {
    "pass": "✅ pass",
    "improvement": "✨ improvement",
    "regression": "❌ regression",
    "unconfirmed": "⛔ unconfirmed",
    "no-baseline": "➖ no baseline",
    "invalid": "⚠️ invalid",
    "busy": "⏳ busy",
    "unreachable": "🔌 unreachable",
    "failed": "💥 failed",
}
EMULATED_LABEL = "emulated — latency not comparable to hardware"
EXIT_MEANINGS = {0: "all well", 1: "regression", 2: "infrastructure failure"}
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~])")


def md_escape(text: object) -> str:
    """Text safe inside a Markdown table cell or list item (no markup, no HTML, one line)."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def _latency_cells(v: Verdict) -> tuple[str, str]:
    lat = v.latency
    if lat is not None and lat.ratio is not None:
        return (
            f"{fmt.ms(lat.candidate_p50, unit=False, compact=True)} vs {fmt.ms(lat.baseline_p50, unit=False, compact=True)}",
            f"{fmt.ratio(lat.ratio)} ({fmt.number(lat.ci_low, '.2f')}–{fmt.number(lat.ci_high, '.2f')})",
        )
    return fmt.ms(v.p50, unit=False, compact=True), fmt.MISSING


def _top1_cell(v: Verdict) -> str:
    if v.top1 is None:
        return fmt.MISSING
    cell = fmt.percent(v.top1)
    if v.accuracy is not None and v.accuracy.top1_delta is not None:
        cell += f" ({fmt.number(v.accuracy.top1_delta, '+.2f', scale=100.0)})"
    return cell


def _rss_cell(v: Verdict) -> str:
    if v.peak_rss_mb is None:
        return fmt.MISSING
    cell = fmt.number(v.peak_rss_mb, ".1f")
    if v.memory is not None and v.memory.delta_mb is not None:
        cell += f" ({fmt.number(v.memory.delta_mb, '+.1f')})"
    return cell


def _status_cell(v: Verdict) -> str:
    label = STATUS_LABELS.get(v.status, md_escape(v.status))
    metrics = failed_metrics(v)
    return f"{label} ({md_escape(', '.join(metrics))})" if metrics else label


def _ab_cell(v: Verdict) -> str:
    """The A/B confirmation in a table cell: status, paired ratio, pairs slower / pairs."""
    c = v.confirmation
    if c is None or c.status == "skipped":
        return fmt.MISSING
    cell = md_escape(c.status)
    if c.ratio is not None:
        cell += f" {fmt.ratio(c.ratio)}"
    if c.pairs:
        cell += f" ({c.pairs_slower}/{c.pairs} slower)"
    return cell


def summary_markdown(verdicts: Sequence[Verdict], *, run: Optional[Run] = None, title: str = "edgeship farm") -> str:
    summary = summarize(verdicts)
    heading = f"### {md_escape(title)}" + (f" — run {run.id}" if run is not None else "")
    lines = [heading, ""]
    if run is not None:
        facts = [f"{md_escape(run.kind)} run, {md_escape(run.status)}", f"started {md_escape(run.started_at[:19])}"]
        if run.inventory:
            facts.append(f"inventory {md_escape(run.inventory)}")
        commit = run.info.get("git_commit")
        if commit:
            facts.append(f"commit {md_escape(str(commit)[:12])}")
        lines += [" · ".join(facts), ""]
    lines.append(
        f"**{md_escape(summary.headline)}** of {summary.total} "
        f"→ exit {summary.exit_code} ({EXIT_MEANINGS.get(summary.exit_code, '?')})"
    )
    by_profile: dict[str, list[Verdict]] = defaultdict(list)
    for v in verdicts:
        by_profile[v.profile_name or "unknown"].append(v)
    for profile, items in sorted(by_profile.items()):
        energy = has_energy(items)
        lines += [
            "",
            f"**profile {md_escape(profile)}**",
            "",
            "| device | status | p50 ms (vs baseline) | ratio (95% CI) | A/B | top-1 (Δ pts) | peak RSS MB (Δ) |"
            + (" energy mJ/inference (Δ) |" if energy else ""),
            "|---|---|---|---|---|---|---|" + ("---|" if energy else ""),
        ]
        for v in sorted(items, key=lambda v: v.device):
            device = md_escape(v.device) + (f" *({EMULATED_LABEL})*" if v.emulated else "")
            p50, ratio = _latency_cells(v)
            lines.append(
                f"| {device} | {_status_cell(v)} | {p50} | {ratio} | {_ab_cell(v)} | {_top1_cell(v)} | {_rss_cell(v)} |"
                + (f" {energy_cell(v)} |" if energy else "")
            )
    attention = [v for v in verdicts if v.status != "pass" and v.reasons or v.change_points or v.trend
                 or (v.confirmation is not None and v.confirmation.status != "skipped")]
    if attention:
        lines += ["", "**Details**", ""]
        for v in sorted(attention, key=lambda v: (v.status not in FAILING, v.device)):
            facts = list(v.reasons)
            if v.confirmation is not None and v.confirmation.status != "skipped":
                facts.append(confirmation_text(v.confirmation))
            facts += [f"latency trend: {change_point_text(cp)}" for cp in v.change_points]
            facts += [f"latency trend: {v.trend}"] if v.trend else []
            lines.append(f"- **{md_escape(v.device)}** / {md_escape(v.profile_name or 'unknown')}: " + "; ".join(md_escape(f) for f in facts))
    policies = {policy_text(v.policy) for v in verdicts if v.policy}
    if policies:
        lines += ["", "<details><summary>regression policy</summary>", ""]
        lines += [f"- {md_escape(p)}" for p in sorted(policies)]
        lines += ["", "</details>"]
    return "\n".join(lines) + "\n"
