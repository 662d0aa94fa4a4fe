"""Time a baseline release (A) against a candidate (B) on one device with the agent's ``ab``.

A stored baseline profile may be weeks old; an A/B runs both models now, in one process, in
counterbalanced blocks (device_agents/README.md, "The A/B record"), so a latency suspicion can be
confirmed or dismissed. The baseline must be on the device: kept there as an old release (it
verifies there: source ``'device'``), or uploaded for the occasion from a host copy and installed
*without* being activated or pruning anything (``'uploaded'``). Neither: :class:`BaselineMissing`.

The record goes to ``<remote_dir>/runs/ab-<A>-<B>-<stamp>.json``, is fetched, deleted from the
device, checked (a malformed record is refused: nothing in it is trusted) and stored atomically
under ``results/profiles/<target>/<candidate id>/ab-<stamp>.json``.
"""

from __future__ import annotations

import datetime
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from pipeline.bundle.manifest import read_manifest
from pipeline.clock import utc_stamp
from pipeline.config.target import TargetConfig
from pipeline.deploy.deployer import StepCallback, connected, naming_timeouts, prepare_bundle, stage_release
from pipeline.deploy.doctor import DoctorReport, run_doctor
from pipeline.deploy.exit_codes import AgentExit
from pipeline.deploy.layout import Layout
from pipeline.deploy.lock import DEFAULT_STALE_AFTER, DeviceLock
from pipeline.deploy.record import RECORD_SCHEMA_VERSION, finite_number
from pipeline.deploy.remote import Agent, AgentError, read_state
from pipeline.errors import BundleError, DeployError
from pipeline.fsutil import atomic_write_json
from pipeline.paths import bundles_dir, profiles_results_dir
from pipeline.transport import Transport

log = logging.getLogger(__name__)

ARMS = ("a", "b")


class BaselineMissing(DeployError):
    """The baseline release is neither on the device (verified) nor available from the host."""


@dataclass
class ABBlock:
    pair: int
    arm: str  # "a" (baseline) or "b" (candidate)
    samples: list[float]  # ms, in the order timed
    p50: float
    before: dict  # {"throttled": get_throttled bits or None, "temperature_c", "frequency_mhz"}
    after: dict


@dataclass
class ABRecord:
    raw: dict  # the record exactly as the agent wrote it (what is stored)
    a_bundle_id: str
    b_bundle_id: str
    blocks: list[ABBlock]  # in execution order
    throttled: bool
    throttle_detail: Optional[str]
    seconds: float  # device time from start to finish of the A/B
    path: Optional[Path] = None  # where ab_profile stored it on the host

    def pairs(self) -> list[tuple[float, float]]:
        """``(p50 of the A block, p50 of the B block)`` per pair, in pair order."""
        by_pair: dict[int, dict[str, float]] = {}
        for block in self.blocks:
            by_pair.setdefault(block.pair, {})[block.arm] = block.p50
        return [(by_pair[p]["a"], by_pair[p]["b"]) for p in sorted(by_pair)]

    def samples(self, arm: str) -> list[float]:
        """Every sample of one arm (``'a'`` or ``'b'``), blocks in execution order."""
        if arm not in ARMS:
            raise ValueError(f"arm must be 'a' or 'b', not {arm!r}")
        return [s for block in self.blocks if block.arm == arm for s in block.samples]

    def max_temperature_c(self) -> Optional[float]:
        """The hottest reading around any block (None if the device reports no temperature)."""
        readings = [state.get("temperature_c") for b in self.blocks for state in (b.before, b.after)]
        known = [float(t) for t in readings if finite_number(t)]
        return max(known) if known else None

    @classmethod
    def parse(cls, data: Any) -> "ABRecord":
        """Check and read an ``ab`` record; ValueError names the first thing that is wrong."""
        if not isinstance(data, Mapping):
            raise ValueError(f"an A/B record must be a JSON object, not {type(data).__name__}")
        if data.get("schema_version") != RECORD_SCHEMA_VERSION or isinstance(data.get("schema_version"), bool):
            raise ValueError(f"schema_version is {data.get('schema_version')!r}, this edgeship reads {RECORD_SCHEMA_VERSION}")
        if data.get("kind") != "ab":
            raise ValueError(f"kind is {data.get('kind')!r}, not 'ab'")
        ids = {arm: _bundle_id(data, arm) for arm in ARMS}
        blocks_data = data.get("blocks")
        if not isinstance(blocks_data, list) or not blocks_data:
            raise ValueError("blocks is missing or empty")
        blocks = [_block(item, i) for i, item in enumerate(blocks_data)]
        _check_pairs(blocks)
        throttled, detail = data.get("throttled"), data.get("throttle_detail")
        if not isinstance(throttled, bool):
            raise ValueError(f"throttled is {throttled!r}, not true or false")
        if detail is not None and not isinstance(detail, str):
            raise ValueError("throttle_detail is neither a string nor null")
        if throttled and not detail:
            raise ValueError("throttled is true but throttle_detail does not say where")
        return cls(
            raw=dict(data), a_bundle_id=ids["a"], b_bundle_id=ids["b"], blocks=blocks, throttled=throttled,
            throttle_detail=detail, seconds=_seconds(data),
        )


def _bundle_id(data: Mapping[str, Any], arm: str) -> str:
    side = data.get(arm)
    value = side.get("bundle_id") if isinstance(side, Mapping) else None
    if not isinstance(value, str) or not value:
        raise ValueError(f"{arm}.bundle_id is missing")
    return value


def _block(item: Any, index: int) -> ABBlock:
    where = f"blocks[{index}]"
    if not isinstance(item, Mapping):
        raise ValueError(f"{where} is not an object")
    pair, arm, samples, p50 = item.get("pair"), item.get("arm"), item.get("samples"), item.get("p50")
    if not isinstance(pair, int) or isinstance(pair, bool) or pair < 0:
        raise ValueError(f"{where}.pair is {pair!r}, not a pair number")
    if arm not in ARMS:
        raise ValueError(f"{where}.arm is {arm!r}, not 'a' or 'b'")
    if not isinstance(samples, list) or not samples or not all(finite_number(s) and s >= 0 for s in samples):
        raise ValueError(f"{where}.samples is not a non-empty list of finite, non-negative milliseconds")
    if not finite_number(p50) or not np.isclose(p50, np.median(samples), rtol=1e-6, atol=1e-5):
        raise ValueError(f"{where}.p50 is {p50!r}, not the median of its samples ({float(np.median(samples)):.6f})")
    states = {}
    for when in ("before", "after"):
        state = item.get(when)
        if not isinstance(state, Mapping):
            raise ValueError(f"{where}.{when} is not an object")
        states[when] = dict(state)
    return ABBlock(pair, arm, [float(s) for s in samples], float(p50), states["before"], states["after"])


def _check_pairs(blocks: list[ABBlock]) -> None:
    """Pairs 0..N-1, each exactly one A block and one B block, none interleaved with another pair."""
    arms: dict[int, list[str]] = {}
    for block in blocks:
        arms.setdefault(block.pair, []).append(block.arm)
    if sorted(arms) != list(range(len(arms))):
        raise ValueError(f"pairs are numbered {sorted(arms)}, not 0..{len(arms) - 1}")
    incomplete = [p for p, got in arms.items() if sorted(got) != ["a", "b"]]
    if incomplete:
        raise ValueError(f"pair {incomplete[0]} has blocks {arms[incomplete[0]]}, not one A and one B")


def _seconds(data: Mapping[str, Any]) -> float:
    try:
        start = datetime.datetime.fromisoformat(str(data.get("started_at")))
        end = datetime.datetime.fromisoformat(str(data.get("finished_at")))
        seconds = (end - start).total_seconds()
    except (TypeError, ValueError):
        raise ValueError(f"started_at/finished_at ({data.get('started_at')!r}, {data.get('finished_at')!r}) are not ISO times") from None
    if seconds < 0:
        raise ValueError("finished_at is before started_at")
    return seconds


# ---------------------------------------------------------------------------------- host copies
def find_host_bundle(bundle_id: str) -> Optional[Path]:
    """The published bundle ``results/bundles/<id>`` if its manifest says it is that bundle."""
    path = bundles_dir() / bundle_id
    if not path.is_dir():
        return None
    try:
        found = read_manifest(path).get("bundle_id")
    except BundleError as exc:
        log.warning("host copy %s of bundle %s is unreadable: %s", path, bundle_id, exc)
        return None
    if found != bundle_id:
        log.warning("host copy %s holds bundle %s, not %s", path, found, bundle_id)
        return None
    return path


def _ensure_baseline(
    target: TargetConfig, tr: Transport, agent: Agent, baseline_id: str, baseline_bundle: Optional[Path], say: StepCallback
) -> str:
    """``'device'`` if the baseline release is there and verifies, else ``'uploaded'`` after staging it."""
    layout = Layout(tr)
    release = layout.release(baseline_id)
    on_device = "is not installed"
    if baseline_id in read_state(tr).releases:
        try:
            agent.call(["verify", release])
            return "device"
        except AgentError as exc:
            if exc.code != AgentExit.VERIFY:
                raise
            on_device = f"is there but fails verification ({exc.detail})"
    host_copy = baseline_bundle if baseline_bundle is not None else find_host_bundle(baseline_id)
    if host_copy is None:
        raise BaselineMissing(
            f"Cannot A/B on target '{target.name}' ({tr.where}): the baseline bundle {baseline_id} {on_device} at "
            f"{release}, and the host has no copy at {bundles_dir() / baseline_id}. Rebuild or publish that bundle, "
            f"or raise the target's keep_releases so old releases stay on the device."
        )
    prepared = prepare_bundle(Path(host_copy))
    if prepared.bundle_id != baseline_id:
        raise DeployError(
            f"Refusing to use {host_copy} as the A/B baseline on target '{target.name}': it holds bundle "
            f"{prepared.bundle_id}, not {baseline_id}."
        )
    say(f"baseline {baseline_id} {on_device} on {tr.where}; uploading it from {host_copy} (not activated)")
    stage_release(target, prepared, transport=tr, step=say)
    return "uploaded"


# ---------------------------------------------------------------------------------- the A/B run
def ab_profile(
    target: TargetConfig,
    *,
    transport: Optional[Transport] = None,
    baseline_id: str,
    candidate_id: Optional[str] = None,
    baseline_bundle: Optional[Path] = None,
    blocks: int = 8,
    runs_per_block: int = 30,
    min_block_seconds: float = 0.2,
    warmup: int = 5,
    threads: Optional[int] = None,
    runtime: Optional[str] = None,
    doctor: Optional[DoctorReport] = None,
    timeout: Optional[float] = None,
    step: Optional[StepCallback] = None,
    lock_wait: float = 0.0,
    stale_after: float = DEFAULT_STALE_AFTER,
) -> tuple[ABRecord, str]:
    """A/B ``baseline_id`` (A) against ``candidate_id`` (B, default: the active release) on ``target``.

    Returns the record and where the baseline came from: ``'device'`` or ``'uploaded'`` (from
    ``baseline_bundle``, else the host's published copy, see :func:`find_host_bundle`).
    """
    say = step or (lambda message: log.info("%s", message))
    threads = target.threads if threads is None else threads
    with naming_timeouts(target), connected(target, transport) as tr:
        layout = Layout(tr)
        tr.run(["mkdir", "-p", layout.runs])
        with DeviceLock(tr, "ab", target_name=f"Target '{target.name}'", wait=lock_wait, stale_after=stale_after):
            report = doctor if doctor is not None else run_doctor(target, tr)
            report.raise_if_broken()
            chosen = runtime or report.selected_runtime or "auto"
            state = read_state(tr)
            candidate = candidate_id or state.current
            if candidate is None or candidate not in state.releases:
                what = f"release {candidate} is not installed" if candidate else "no release is active"
                raise DeployError(f"Cannot A/B on target '{target.name}' ({tr.where}): the candidate {what}.")
            agent = Agent(target, tr)
            source = _ensure_baseline(target, tr, agent, baseline_id, baseline_bundle, say)
            remote_out = f"{layout.runs}/ab-{baseline_id}-{candidate}-{utc_stamp(fraction=True)}.json"
            args = [
                "ab", layout.release(baseline_id), layout.release(candidate), "--target", target.name,
                "--blocks", str(blocks), "--runs-per-block", str(runs_per_block),
                "--min-block-seconds", repr(float(min_block_seconds)), "--warmup", str(warmup),
                "--threads", str(threads), "--runtime", chosen, "--output", remote_out,
            ]
            if target.emulated:
                args.append("--emulated")
            say(f"A/B of {baseline_id} (A) against {candidate} (B): {blocks} pairs of blocks")
            try:
                agent.call(args, timeout=timeout, stdout_json=False)
            except AgentError as exc:
                if exc.code == AgentExit.VERIFY:
                    raise DeployError(
                        f"Refusing the A/B on target '{target.name}': a release failed verification on {tr.where} "
                        f"({exc.detail}). Redeploy it to replace it."
                    ) from None
                raise
            record = _fetch(tr, remote_out)
    if (record.a_bundle_id, record.b_bundle_id) != (baseline_id, candidate):
        raise DeployError(
            f"The A/B record from target '{target.name}' is for {record.a_bundle_id} against {record.b_bundle_id}, "
            f"but edgeship asked for {baseline_id} against {candidate}."
        )
    record.path = store_ab_record(target.name, candidate, record)
    return record, source


def _fetch(tr: Transport, remote_out: str) -> ABRecord:
    with tempfile.TemporaryDirectory(prefix="edgeship-ab-") as tmp:
        local = Path(tmp) / "ab.json"
        try:
            tr.get(remote_out, local)
        finally:
            tr.run(["rm", "-f", "--", remote_out], check=False)
        try:
            return ABRecord.parse(json.loads(local.read_text(encoding="utf-8")))
        except ValueError as exc:
            raise DeployError(f"The A/B record fetched from {tr.where}:{remote_out} is malformed: {exc}.") from None


def store_ab_record(target_name: str, candidate_id: str, record: ABRecord) -> Path:
    """``results/profiles/<target>/<candidate id>/ab-<stamp>.json``, written atomically, never overwritten."""
    folder = profiles_results_dir() / target_name / candidate_id
    stamp = utc_stamp(fraction=True)
    path, n = folder / f"ab-{stamp}.json", 1
    while path.exists():
        path, n = folder / f"ab-{stamp}-{n}.json", n + 1
    atomic_write_json(path, record.raw)
    return path
