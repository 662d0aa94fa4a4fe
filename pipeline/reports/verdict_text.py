"""How a verdict's parts read in every report (HTML, Markdown, JUnit, the index), in one place.

The stored-baseline comparison (``Verdict.latency``), the device's A/B confirmation
(``Verdict.confirmation``), the change points and the policy each get one phrasing, so a night's
report, its JUnit failure and the index page never disagree on what was decided.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional

from pipeline import formatting as fmt
from pipeline.farm.verdicts import ConfirmationCheck, Verdict

#: statuses that fail the night (exit code 1); 'unconfirmed' is never shown as a pass
FAILING = ("regression", "unconfirmed")


def failed_metrics(verdict: Verdict) -> list[str]:
    """The metrics a failing verdict failed on. An unconfirmed verdict is a latency suspicion the
    A/B could not settle, so it names latency even though latency did not (yet) count as regressed."""
    if verdict.status not in FAILING:
        return []
    metrics = verdict.regressed_metrics()
    if verdict.status == "unconfirmed" and "latency" not in metrics:
        metrics = ["latency", *metrics]
    return metrics


def status_text(verdict: Verdict) -> str:
    """``regression (latency, memory)``, ``unconfirmed (latency)``, or the bare status."""
    metrics = failed_metrics(verdict)
    return f"{verdict.status} ({', '.join(metrics)})" if metrics else verdict.status


def baseline_source_text(source: Optional[str]) -> str:
    return {"device": "kept release on the device", "uploaded": "re-uploaded from the host cache"}.get(
        source or "", source or "unknown"
    )


def confirmation_text(check: ConfirmationCheck) -> str:
    """One line for the A/B: status, paired ratio, pairs slower / pairs, sign-test p, and why."""
    parts = [f"A/B confirmation {check.status}"]
    if check.ratio is not None:
        parts.append(f"paired ratio {check.ratio:.3f}")
    if check.pairs:
        parts.append(f"{check.pairs_slower}/{check.pairs} pairs slower")
    if check.p_sign is not None:
        parts.append(f"sign-test p={check.p_sign:.3g}")
    if check.threshold is not None:
        parts.append(f"threshold {check.threshold * 100:.1f}%")
    if check.baseline_p50 is not None and check.candidate_p50 is not None:
        parts.append(f"p50 {check.candidate_p50:.3f} ms vs baseline {check.baseline_p50:.3f} ms")
    if check.throttled:
        parts.append("device throttled during the A/B")
    if check.baseline_source:
        parts.append(f"baseline bundle: {baseline_source_text(check.baseline_source)}")
    if check.seconds is not None:
        parts.append(f"{check.seconds:.1f} s on the device")
    text = ", ".join(parts)
    return text + (f"; {check.reason}" if check.reason else "")


def change_point_text(point: Mapping[str, Any]) -> str:
    """``step at run 41: 12.00 → 13.44 ms (×1.120)`` (``creep from run 41`` for a slow trend),
    plus whether it flagged this night."""
    before, after, ratio = point.get("before"), point.get("after"), point.get("ratio")
    where = "creep from run" if point.get("kind") == "trend" else "step at run"
    text = f"{where} {point.get('run_id', '?')}: {fmt.ms(before, unit=False)} → {fmt.ms(after, unit=False)} ms ({fmt.ratio(ratio)})"
    return text + (", flagged tonight" if point.get("flagged") else "")


def flat_policy(policy: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """A (possibly nested) policy dict as sorted ``(dotted.key, value)`` pairs for a compact table."""
    items: list[tuple[str, str]] = []
    for key in sorted(policy):
        value = policy[key]
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            items.extend(flat_policy(value, name + "."))
        else:
            items.append((name, fmt.general(value)))
    return items


def policy_text(policy: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in flat_policy(policy))


def distinct_policies(verdicts: Iterable[Verdict]) -> list[tuple[dict[str, Any], list[str]]]:
    """Each different policy of a run's verdicts with the devices it decided (usually just one)."""
    groups: list[tuple[dict[str, Any], list[str]]] = []
    for v in verdicts:
        if not v.policy:
            continue
        for policy, devices in groups:
            if policy == v.policy:
                devices.append(v.device)
                break
        else:
            groups.append((dict(v.policy), [v.device]))
    return groups


def has_energy(verdicts: Iterable[Verdict]) -> bool:
    """Whether any device in the set sent an energy estimate: only then do tables get the column."""
    return any(v.energy_mj_per_inference is not None for v in verdicts)


def energy_cell(verdict: Verdict) -> str:
    """``0.412 (+0.014)``: mJ per inference above idle and the change against the baseline."""
    cell = fmt.number(verdict.energy_mj_per_inference, ".3f")
    check = verdict.energy
    if verdict.energy_mj_per_inference is not None and check is not None and check.delta_mj is not None:
        cell += f" ({fmt.number(check.delta_mj, '+.3f')})"
    return cell


def energy_text(verdict: Verdict) -> Optional[str]:
    """The energy line of a device's details, or None when it has no estimate."""
    check = verdict.energy
    if check is not None and check.delta_mj is not None:
        return (
            f"energy: {check.candidate_mj:.3f} mJ per inference vs {check.baseline_mj:.3f} mJ "
            f"({check.delta_mj:+.3f} mJ, allowed +{check.threshold_mj:.3f}; estimated from the PMIC)"
        )
    if verdict.energy_mj_per_inference is not None:
        why = f"; not compared: {check.reason}" if check is not None and check.reason else ""
        return f"energy: {verdict.energy_mj_per_inference:.3f} mJ per inference (estimated from the PMIC{why})"
    return None
