"""Benchmark the regression gate: A/A false alarms (quiet and with drift), detection of real
slowdowns from the ladder, a 2 %/night creep, and what confirmation costs.

Real parts only: a loopback OpenSSH device pinned to one core, the real agent (profile and ab),
the real SQLite store, the real check (stored baseline -> A/B confirmation -> change points). The
slower bundles are the ladder's (:mod:`pipeline.bench.ladder`): the same model with a widened
layer whose extra channels feed zero weights, so predictions are identical and only the work
grows. Extra MACs are the knob, latency is the truth: a small model's fixed per-invoke cost
dilutes extra MACs by a factor that differs from CPU to CPU, so the bench first measures, on this
host, how much latency a probe rung's extra MACs buy, and sizes the rungs (+5/10/20/40 %) and the
creep (+2 %/night) in latency from that slope. Each rung's true slowdown is then measured by a long
A/B session of its own, and the targets are read against it.

Drift is a CPU-bound competitor started halfway through a series on the device's core. A night is
a whole farm run (deploy check, doctor, profile, A/B when suspect) followed by :func:`check_run`.
A false alarm is a verdict of ``regression`` or ``unconfirmed`` when the bundle did not change.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import yaml

from pipeline.bench.common import machine, target, write_result
from pipeline.bench.ladder import Rung, ladder
from pipeline.errors import EdgeshipError
from pipeline.farm.inventory import LoadedInventory, load_inventory
from pipeline.farm.regression import check_run
from pipeline.farm.runner import run_farm
from pipeline.farm.store import ResultsStore
from pipeline.lab.loopback import default_python
from pipeline.lab.sshd import SSHServer
from pipeline.progress import NullProgress, Progress

PROFILING = {"runs": 200, "min_seconds": 1.0, "warmup": 20}
SLOWDOWNS = (0.05, 0.10, 0.20, 0.40)  # asked-for latency slowdowns of the rungs
PROBE_MACS = 1.0  # the calibration rung: +100 % MACs
CREEP_PER_NIGHT, CREEP_NIGHTS = 0.02, 7
MAX_EXTRA_MACS = 8.0
FULL = {"aa": 100, "drift": 100, "rung": 20, "creep_stable": 14, "measure_blocks": 16}
QUICK = {"aa": 25, "drift": 25, "rung": 8, "creep_stable": 12, "measure_blocks": 8}
FALSE = ("regression", "unconfirmed")


@dataclass
class Series:
    """One series of nights: each verdict's status, whether latency was flagged, and the costs."""

    statuses: list[str] = field(default_factory=list)
    latency_flagged: list[bool] = field(default_factory=list)
    confirmations: list[Optional[str]] = field(default_factory=list)
    ab_ratios: list[Optional[float]] = field(default_factory=list)
    device_s: float = 0.0
    confirm_s: float = 0.0

    def add(self, verdict: Any, seconds: float) -> None:
        self.statuses.append(verdict.status)
        self.latency_flagged.append("latency" in verdict.regressed_metrics())
        conf = verdict.confirmation
        self.confirmations.append(conf.status if conf else None)
        self.ab_ratios.append(round(conf.ratio, 4) if conf and conf.ratio else None)
        self.device_s += seconds
        self.confirm_s += (conf.seconds or 0.0) if conf else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "runs": len(self.statuses), "statuses": self.statuses, "confirmations": self.confirmations,
            "ab_ratios": self.ab_ratios, "false_alarms": sum(s in FALSE for s in self.statuses),
            "latency_flagged": sum(self.latency_flagged), "device_s": round(self.device_s, 1),
            "confirm_s": round(self.confirm_s, 1),
        }


class GateLab:
    """One loopback device, two device names (the creep series keeps its own history)."""

    def __init__(self, root: Path, store: ResultsStore):
        self.root, self.store = root, store
        self.server = SSHServer(root / "sshd").start()
        taskset = shutil.which("taskset")
        self.pin = [taskset, "-c", "0"] if taskset else []
        python = " ".join([*self.pin, default_python()])
        self.inventories = {name: self._inventory(name, python) for name in ("gate", "creep")}

    def _inventory(self, name: str, python: str) -> LoadedInventory:
        self.server.write_target(self.root / f"{name}.yaml", name, self.root / "devices" / name, python, threads=1, profiling=PROFILING)
        path = self.root / f"{name}-farm.yaml"
        path.write_text(yaml.safe_dump({
            "name": name, "concurrency": 1, "timeout": 600, "retries": 0, "profile": "bench",
            "devices": [{"name": name, "target": f"{name}.yaml"}],
        }))
        return load_inventory(path)

    def night(self, device: str, bundle: Path, series: Optional[Series] = None) -> Any:
        run = run_farm(self.inventories[device], store=self.store, bundles={"bench": bundle})
        (verdict,) = check_run(self.store, run.run_id)
        if series is not None:
            series.add(verdict, run.outcomes[0].seconds)
        return verdict

    def accept(self, device: str, bundle: Path) -> None:
        """A fresh baseline measured now (one night of ``bundle``), replacing the old one."""
        run = run_farm(self.inventories[device], store=self.store, bundles={"bench": bundle})
        self.store.accept_run_baselines(run.run_id, force=True)

    @contextlib.contextmanager
    def competitor(self) -> Iterator[None]:
        """A CPU-bound process on the device's core: the drift a shared runner or a daemon brings."""
        proc = subprocess.Popen([*self.pin, sys.executable, "-c", "while True: pass"])
        try:
            yield
        finally:
            proc.kill()
            proc.wait()

    def true_ratio(self, base: Path, slower: Path, blocks: int) -> Optional[float]:
        """The rung's slowdown from a long A/B of its own (median of paired block ratios)."""
        from pipeline.deploy.ab import ab_profile
        from pipeline.deploy.deployer import deploy
        from pipeline.farm.confirmation import judge_pairs
        from pipeline.farm.policy import DEFAULT_POLICY

        target_cfg = self.inventories["gate"].devices[0].target
        deploy(target_cfg, slower)  # the candidate must be installed; the next night redeploys its own bundle
        record, _ = ab_profile(target_cfg, baseline_id=base.name, candidate_id=slower.name, baseline_bundle=base, blocks=blocks)
        return judge_pairs(record.pairs(), record.samples("a"), record.samples("b"), DEFAULT_POLICY).ratio

    def close(self) -> None:
        self.server.kill()


def _series(lab: GateLab, bundle: Path, nights: int, progress: Progress, label: str, drift: bool = False) -> Series:
    series = Series()
    with progress.task(label, total=nights) as advance, contextlib.ExitStack() as stack:
        for i in range(nights):
            if drift and i == nights // 2:
                stack.enter_context(lab.competitor())
            lab.night("gate", bundle, series)
            advance(1)
    return series


def _creep(lab: GateLab, base: Path, creeping: list[Rung], stable: int, progress: Progress) -> dict[str, Any]:
    """Stable nights, then one creep bundle a night, the baseline re-accepted every night (so
    the baseline check compares with yesterday and passes): only the history can see it."""
    nights: list[dict[str, Any]] = []
    plan = [(None, base)] * stable + [(rung, rung.bundle_dir) for rung in creeping[1:]]
    with progress.task("gate: creep", total=len(plan)) as advance:
        for rung, bundle in plan:
            verdict = lab.night("creep", bundle)
            lab.store.accept_baseline(verdict.result_id, force=True)
            if rung is not None:
                nights.append({
                    "night": len(nights) + 1, "extra_macs": round(rung.extra_macs, 4), "status": verdict.status,
                    "baseline_check": verdict.latency.status if verdict.latency else None,
                    "trend_flagged": verdict.trend_regressed, "trend": verdict.trend,
                })
            advance(1)
    flagged = [n["night"] for n in nights if n["trend_flagged"] or n["status"] == "regression"]
    return {"stable_nights": stable, "nights": nights, "first_flagged_night": flagged[0] if flagged else None,
            "baseline_check_passed_every_night": all(n["baseline_check"] != "regression" for n in nights)}


def _calibrate(lab: GateLab, profile_name: str, blocks: int, progress: Progress) -> dict[str, Any]:
    """Latency bought per extra MAC on this host, from one probe rung's long A/B."""
    base, probe = ladder(profile_name, extra=(0.0, PROBE_MACS), progress=progress)
    progress.note(f"[gate] calibrating: A/B of the base bundle against +{probe.extra_macs:.0%} MACs")
    ratio = lab.true_ratio(base.bundle_dir, probe.bundle_dir, blocks)
    slope = (ratio - 1.0) / probe.extra_macs if ratio else 0.0
    if slope <= SLOWDOWNS[-1] / MAX_EXTRA_MACS:
        raise EdgeshipError(
            f"Gate bench: on this host, +{probe.extra_macs:.0%} MACs at layer {probe.layer} of profile '{profile_name}' "
            f"made the model only x{ratio or 0:.3f} slower, too little to build a ladder of real slowdowns; "
            "try a larger profile (--profile default)."
        )
    return {"probe_extra_macs": round(probe.extra_macs, 4), "probe_ratio": ratio, "latency_per_mac": round(slope, 4), "layer": probe.layer}


def _sized(profile_name: str, slowdowns: list[float], labels: list[str], slope: float, progress: Progress) -> list[Rung]:
    """Rungs whose extra MACs should cost ``slowdowns`` of latency at the calibrated slope."""
    rungs = ladder(profile_name, extra=[s / slope for s in slowdowns], progress=progress)
    return [dataclasses.replace(rung, label=label) for rung, label in zip(rungs, labels)]


def _checkpoint(partial: dict[str, Any], **section: Any) -> None:
    """results/bench/gate.partial.json after every section: a long run cut short keeps its figures."""
    partial.update(section)
    write_result("gate.partial", partial)


def run(profile_name: str = "default", progress: Progress | None = None, quick: bool = False) -> dict[str, Any]:
    progress = progress or NullProgress()
    sizes = QUICK if quick else FULL
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="edgeship-gate-bench-") as tmp:
        store = ResultsStore(Path(tmp) / "results.sqlite")
        lab = GateLab(Path(tmp), store)
        try:
            calibration = _calibrate(lab, profile_name, sizes["measure_blocks"], progress)
            slope = calibration["latency_per_mac"]
            rungs = _sized(profile_name, [0.0, *SLOWDOWNS], ["base", *(f"+{s:.0%}" for s in SLOWDOWNS)], slope, progress)
            base, slower = rungs[0].bundle_dir, rungs[1:]
            nights = range(CREEP_NIGHTS + 1)
            creeping = _sized(profile_name, [(1 + CREEP_PER_NIGHT) ** n - 1 for n in nights], [f"night {n}" for n in nights], slope, progress)
            partial: dict[str, Any] = {"profile": profile_name, "sizes": sizes, "calibration": calibration, "host": machine()}
            lab.accept("gate", base)
            quiet = _series(lab, base, sizes["aa"], progress, "gate: A/A quiet")
            _checkpoint(partial, aa_quiet=quiet.summary())
            lab.accept("gate", base)
            drift = _series(lab, base, sizes["drift"], progress, "gate: A/A with drift", drift=True)
            _checkpoint(partial, aa_drift=drift.summary())
            curve = []
            for rung in slower:
                ratio = lab.true_ratio(base, rung.bundle_dir, sizes["measure_blocks"])
                row: dict[str, Any] = {"label": rung.label, "extra_macs": round(rung.extra_macs, 4), "true_ratio": ratio}
                for mode in ("quiet", "drift"):
                    lab.accept("gate", base)
                    s = _series(lab, rung.bundle_dir, sizes["rung"], progress, f"gate: {rung.label} {mode}", drift=mode == "drift")
                    row[mode] = {"detected": sum(s.latency_flagged), "runs": sizes["rung"], "rate": sum(s.latency_flagged) / sizes["rung"],
                                 "statuses": s.statuses, "ab_ratios": s.ab_ratios}
                curve.append(row)
                _checkpoint(partial, sensitivity=curve)
            creep_result = _creep(lab, base, creeping, sizes["creep_stable"], progress)
            creep_result["last_night_true_ratio"] = lab.true_ratio(base, creeping[-1].bundle_dir, sizes["measure_blocks"])
        finally:
            lab.close()
            store.close()
    cost = quiet.confirm_s / max(quiet.device_s - quiet.confirm_s, 1e-9)
    by_label = {row["label"]: row for row in curve}
    payload: dict[str, Any] = {
        "profile": profile_name, "quick": quick, "sizes": sizes, "bundle_id": base.name, "profiling": PROFILING,
        "method": "one loopback sshd device pinned to core 0 (taskset), 1 interpreter thread; default regression policy; "
        "rungs sized in latency from a calibration A/B on this host",
        "calibration": calibration, "host": machine(),
        "aa_quiet": quiet.summary(), "aa_drift": drift.summary(),
        "sensitivity": curve, "creep": creep_result,
        "confirmation_cost": round(cost, 3), "seconds": round(time.monotonic() - started, 1),
    }
    payload["targets"] = {
        "aa_quiet_false_le_1_per_100": target(quiet.summary()["false_alarms"] * 100 / sizes["aa"], 1, False),
        "aa_drift_false_le_2_per_100": target(drift.summary()["false_alarms"] * 100 / sizes["drift"], 2, False),
        "detect_10pct_ge_95pct": dict(target(by_label["+10%"]["quiet"]["rate"], 0.95, True), true_ratio=by_label["+10%"]["true_ratio"]),
        "detect_20pct_100pct": dict(target(by_label["+20%"]["quiet"]["rate"], 1.0, True), true_ratio=by_label["+20%"]["true_ratio"]),
        "detect_10pct_drift_ge_95pct": dict(target(by_label["+10%"]["drift"]["rate"], 0.95, True), true_ratio=by_label["+10%"]["true_ratio"]),
        "creep_flagged_within_7_nights": target(creep_result["first_flagged_night"] or 99, 7, False),
        "confirmation_cost_le_30pct": target(round(cost, 3), 0.30, False),
    }
    from pipeline.reports.gate_report import write_gate_report

    payload["report"] = str(write_gate_report(payload))
    write_result("gate", payload)
    return payload
