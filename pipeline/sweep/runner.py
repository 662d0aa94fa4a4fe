"""Run a sweep: build every variant (through the stage cache), measure it on the target, store it.

One transport serves the whole sweep. A variant that fails to build or measure is stored with its
error and the sweep goes on; a bad grid fails before anything is built.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from pipeline.clock import utc_now
from pipeline.config.target import TargetConfig
from pipeline.errors import EdgeshipError
from pipeline.execute.executor import Executor
from pipeline.parallel_builds import BuildOutcome, build_each
from pipeline.paths import results_dir
from pipeline.progress import NullProgress, Progress
from pipeline.sweep.grid import SweepGrid, Variant, expand
from pipeline.sweep.pareto import pareto_front
from pipeline.sweep.store import SweepStore
from pipeline.transport import Transport

log = logging.getLogger(__name__)

LATENCY_FRONT = {"maximize": ("accuracy",), "minimize": ("latency_ms",)}
SIZE_FRONT = {"maximize": ("accuracy",), "minimize": ("size_kb",)}


@dataclass
class SweepResult:
    sweep_id: int
    target: str
    base_profile: str
    rows: list[dict[str, Any]]
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)  # variant name -> profile JSON
    report_dir: Optional[Path] = None

    @property
    def latency_front(self) -> list[int]:
        return pareto_front(self.rows, **LATENCY_FRONT)

    @property
    def size_front(self) -> list[int]:
        return pareto_front(self.rows, **SIZE_FRONT)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [row for row in self.rows if row.get("error")]


def run_sweep(
    grid: SweepGrid,
    target: TargetConfig,
    *,
    progress: Progress | None = None,
    store: SweepStore | None = None,
    transport: Transport | None = None,
    remeasure: bool = False,
    runs: Optional[int] = None,
    min_seconds: Optional[float] = None,
    executor: Optional[Executor] = None,
) -> SweepResult:
    """Build and measure every variant of ``grid`` on ``target``; returns the stored rows.

    Every variant is built first (all at once on a cluster ``executor``), then measured one at a
    time, so no build competes with a measurement for the target's cores. A bundle already
    measured on this target by an earlier sweep is not measured again unless ``remeasure`` is
    set, so rerunning a sweep costs only cache lookups.
    """
    from pipeline.transport import open_transport

    progress = progress or NullProgress()
    variants = expand(grid)  # validates every variant before anything runs
    own_store = store is None
    store = store or SweepStore()
    own_transport = transport is None
    try:
        sweep_id = store.start(utc_now("seconds"), grid.base_profile, target.name, grid.model_dump(mode="json"))
        result = SweepResult(sweep_id=sweep_id, target=target.name, base_profile=grid.base_profile, rows=[])
        if own_transport:  # first: an unreachable target fails the sweep before hours of building
            transport = open_transport(target)
        progress.note(f"[sweep] building {len(variants)} variants" + (" on the cluster" if executor is not None and not executor.shares_cache else ""))
        builds = build_each([variant.profile for variant in variants], progress, executor)
        with progress.task(f"sweep: {len(variants)} variants on {target.name}", total=len(variants)) as advance:
            for number, (variant, built) in enumerate(zip(variants, builds), 1):
                progress.note(f"[sweep] {number}/{len(variants)} {variant.name}")
                row = _measure_variant(variant, built, target, transport, store, remeasure, runs, min_seconds, progress)
                store.add_variant(sweep_id, row, variant.settings, variant.profile.model_dump(mode="json"))
                result.rows.append({**row, **variant.settings})
                result.profiles[variant.name] = variant.profile.model_dump(mode="json")
                advance(1)
        store.finish(sweep_id, utc_now("seconds"))
        return result
    finally:
        if own_transport and transport is not None:
            transport.close()
        if own_store:
            store.close()


def _measure_variant(
    variant: Variant,
    outcome: BuildOutcome,
    target: TargetConfig,
    transport: Transport,
    store: SweepStore,
    remeasure: bool,
    runs: Optional[int],
    min_seconds: Optional[float],
    progress: Progress,
) -> dict[str, Any]:
    from pipeline.deploy.deployer import deploy
    from pipeline.deploy.profiling import profile

    row: dict[str, Any] = {"name": variant.name}
    if outcome.error is not None:
        row["error"] = str(outcome.error)
        return row
    built = outcome.result
    assert built is not None
    try:
        host = built.artifacts["package"].metrics["host_metrics"]
        row.update(
            bundle_id=built.bundle_dir.name if built.bundle_dir else None,
            accuracy=host["accuracy"],
            size_kb=host["tflite_bytes"] / 1024,
            parameters=host["parameters"],
            macs=host["macs"],
            build_seconds=round(built.wall_seconds, 2),
            built_from_cache=int(all(a.cached for a in built.artifacts.values())),
        )
        earlier = None if remeasure else store.measured(row["bundle_id"], target.name)
        if earlier is not None:
            row.update({key: earlier[key] for key in ("latency_ms", "device_top1", "agreement", "record_path")})
            progress.note(f"[sweep] {variant.name}: measured before on {target.name}, reusing it")
            return row
        deploy(target, built.bundle_dir, transport=transport)
        run = profile(target, transport=transport, runs=runs, min_seconds=min_seconds)
        row.update(
            latency_ms=run.record.latency.p50,
            device_top1=run.record.accuracy.top1,
            agreement=run.record.accuracy.agreement_with_host,
            record_path=str(run.path),
        )
    except EdgeshipError as exc:
        log.warning("sweep variant %s failed: %s", variant.name, exc)
        row["error"] = str(exc)
    return row


def sweep_reports_dir(sweep_id: int) -> Path:
    return results_dir() / "sweeps" / str(sweep_id)


def load_sweep(store: SweepStore, sweep_id: Optional[int] = None) -> SweepResult:
    """A stored sweep (the latest when ``sweep_id`` is None), ready for selection and reports."""
    header = store.sweep(sweep_id)
    result = SweepResult(sweep_id=header["id"], target=header["target"], base_profile=header["base_profile"], rows=[])
    for item in store.variants(header["id"]):
        profile = item.pop("profile")
        settings = item.pop("settings")
        item.pop("sweep_id", None)
        result.rows.append({**item, **settings})
        result.profiles[item["name"]] = profile
    return result
