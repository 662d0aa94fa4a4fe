"""JUnit XML for CI: one <testcase> per device x profile of a farm run.

classname = build profile, name = device. A regression, and an unconfirmed latency suspicion (the
A/B could not settle it), is a <failure> whose message names the metric; an unreachable or failed
device an <error>, a result without baseline, with an invalid (throttled) measurement or on a busy
labgrid place is <skipped>; passes and improvements carry their numbers in <system-out>.
"""

from __future__ import annotations

import re
import socket
import xml.etree.ElementTree as ET
from typing import Optional, Sequence

from pipeline.farm.regression import Verdict, summarize
from pipeline.farm.rows import Run
from pipeline.reports.verdict_text import FAILING, change_point_text, confirmation_text, energy_text, failed_metrics, policy_text

# Characters XML 1.0 cannot carry at all (control characters other than tab, LF, CR).
_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _clean(text: object) -> str:
    return _INVALID_XML.sub("\ufffd", str(text))


def verdict_details(verdict: Verdict, *, with_policy: bool = True) -> str:
    """The numbers behind a verdict, one per line (shared with the failure body and system-out):
    the stored-baseline comparison, the A/B confirmation, change points, the other metrics, the policy."""
    lines = []
    lat = verdict.latency
    if lat is not None and lat.ratio is not None:
        lines.append(
            f"latency vs stored baseline: p50 {lat.candidate_p50:.3f} ms vs baseline {lat.baseline_p50:.3f} ms, ratio {lat.ratio:.3f} "
            f"(CI {lat.ci_low:.3f}-{lat.ci_high:.3f}), Mann-Whitney p(slower)={lat.p_slower:.3g}, "
            f"threshold {lat.threshold * 100:.1f}% (min effect {lat.min_effect * 100:.1f}%"
            + (f", noise floor {lat.noise_floor * 100:.1f}%" if lat.noise_floor else "") + f"), alpha {lat.alpha}"
        )
    elif verdict.p50 is not None:
        lines.append(f"latency: p50 {verdict.p50:.3f} ms")
    if verdict.confirmation is not None:
        lines.append(confirmation_text(verdict.confirmation))
    lines.extend(f"latency trend: {change_point_text(cp)}" for cp in verdict.change_points)
    if verdict.trend:
        lines.append(f"latency trend: {verdict.trend}")
    acc = verdict.accuracy
    if acc is not None and acc.top1_delta is not None:
        lines.append(f"top-1: {acc.candidate_top1 * 100:.2f}% vs {acc.baseline_top1 * 100:.2f}% ({acc.top1_delta * 100:+.2f} points)")
    elif verdict.top1 is not None:
        lines.append(f"top-1: {verdict.top1 * 100:.2f}%")
    if acc is not None and acc.agreement_delta is not None:
        lines.append(
            f"agreement with host: {acc.candidate_agreement * 100:.2f}% vs {acc.baseline_agreement * 100:.2f}%"
        )
    mem = verdict.memory
    if mem is not None and mem.delta_mb is not None:
        lines.append(
            f"peak RSS: {mem.candidate_mb:.1f} MB vs {mem.baseline_mb:.1f} MB ({mem.delta_mb:+.1f} MB, allowed +{mem.threshold_mb:.1f})"
        )
    elif verdict.peak_rss_mb is not None:
        lines.append(f"peak RSS: {verdict.peak_rss_mb:.1f} MB")
    energy = energy_text(verdict)
    if energy:
        lines.append(energy)
    if verdict.bundle_id:
        lines.append(f"bundle {verdict.bundle_id}" + (f" vs baseline bundle {verdict.baseline_bundle_id} ({verdict.baseline_key})" if verdict.baseline_bundle_id else ""))
    if verdict.emulated:
        lines.append("emulated device: latency not comparable to hardware")
    lines.extend(f"note: {n}" for n in verdict.notes)
    if with_policy and verdict.policy:
        lines.append(f"policy: {policy_text(verdict.policy)}")
    return "\n".join(lines)


def junit_xml(verdicts: Sequence[Verdict], *, run: Optional[Run] = None, suite_name: str = "edgeship farm") -> str:
    summary = summarize(verdicts)
    counts = summary.counts
    name = suite_name + (f" run {run.id}" if run is not None else "")
    root = ET.Element("testsuites", name=_clean(name))
    suite = ET.SubElement(
        root,
        "testsuite",
        name=_clean(name),
        tests=str(summary.total),
        failures=str(sum(counts.get(s, 0) for s in FAILING)),
        errors=str(counts["unreachable"] + counts["failed"]),
        skipped=str(counts["no-baseline"] + counts["invalid"] + counts["busy"]),
        time="0",
        hostname=_clean(socket.gethostname()),
    )
    if run is not None:
        suite.set("timestamp", _clean(run.started_at))
        props = ET.SubElement(suite, "properties")
        for key, value in (
            ("run_id", run.id), ("kind", run.kind), ("inventory", run.inventory), ("profile", run.profile_name),
            ("status", run.status), ("git_commit", run.info.get("git_commit")), ("exit_code", summary.exit_code),
        ):
            if value is not None:
                ET.SubElement(props, "property", name=key, value=_clean(value))
    for verdict in verdicts:
        case = ET.SubElement(
            suite, "testcase", classname=_clean(verdict.profile_name or "unknown"), name=_clean(verdict.device), time="0"
        )
        message = verdict.reasons[0] if verdict.reasons else verdict.status
        details = verdict_details(verdict)
        body = "\n".join(verdict.reasons + ([details] if details else []))
        if verdict.status in FAILING:
            metrics = ", ".join(failed_metrics(verdict)) or "unknown metric"
            if verdict.status == "unconfirmed" and verdict.confirmation is not None and verdict.confirmation.reason:
                message = verdict.confirmation.reason
            ET.SubElement(
                case, "failure", message=_clean(f"{verdict.status} ({metrics}): {message}"), type=verdict.status
            ).text = _clean(body)
        elif verdict.status in ("unreachable", "failed"):
            ET.SubElement(case, "error", message=_clean(message), type=verdict.status).text = _clean(body)
        elif verdict.status in ("no-baseline", "invalid", "busy"):
            ET.SubElement(case, "skipped", message=_clean(f"{verdict.status}: {message}"))
            if details:
                ET.SubElement(case, "system-out").text = _clean(details)
        else:
            ET.SubElement(case, "system-out").text = _clean("\n".join([verdict.status] + verdict.reasons + [details]))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
