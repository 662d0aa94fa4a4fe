"""Run the agent's ``profile`` on the active release and store the record on the host.

The record (schema in device_agents/README.md) is written by the agent to
``<remote_dir>/runs/<id>-<timestamp>.json``, fetched, checked, stored atomically under
``results/profiles/<target>/<bundle id>/<timestamp>.json`` and deleted from the device.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from pipeline.clock import utc_stamp
from pipeline.config.target import TargetConfig
from pipeline.deploy.deployer import connected, naming_timeouts
from pipeline.deploy.doctor import DoctorReport, run_doctor
from pipeline.deploy.exit_codes import AgentExit
from pipeline.deploy.layout import Layout
from pipeline.deploy.lock import DEFAULT_STALE_AFTER, DeviceLock
from pipeline.deploy.record import ProfileRecord
from pipeline.deploy.remote import Agent, AgentError, read_state
from pipeline.errors import DeployError
from pipeline.fsutil import atomic_write_json
from pipeline.paths import profiles_results_dir
from pipeline.transport import Transport


@dataclass
class ProfileRun:
    record: ProfileRecord
    path: Path  # where the record was stored on the host

    @property
    def bundle_id(self) -> str:
        return self.record.bundle_id or ""


def profile(
    target: TargetConfig,
    *,
    transport: Optional[Transport] = None,
    runs: Optional[int] = None,
    min_seconds: Optional[float] = None,
    warmup: Optional[int] = None,
    threads: Optional[int] = None,
    runtime: Optional[str] = None,
    doctor: Optional[DoctorReport] = None,
    lock_wait: float = 0.0,
    stale_after: float = DEFAULT_STALE_AFTER,
    timeout: Optional[float] = None,
) -> ProfileRun:
    """Measure the active release of ``target``; returns the record and where it was stored.

    ``runtime`` overrides the target's preference; by default the first runtime of the target's
    ``runtime`` list that the device's doctor found importable is used.
    """
    settings = target.profiling
    runs = settings.runs if runs is None else runs
    min_seconds = settings.min_seconds if min_seconds is None else min_seconds
    warmup = settings.warmup if warmup is None else warmup
    threads = target.threads if threads is None else threads
    with naming_timeouts(target), connected(target, transport) as tr:
        layout = Layout(tr)
        tr.run(["mkdir", "-p", layout.runs])
        with DeviceLock(tr, "profile", target_name=f"Target '{target.name}'", wait=lock_wait, stale_after=stale_after):
            report = doctor if doctor is not None else run_doctor(target, tr)
            report.raise_if_broken()
            chosen = runtime or report.selected_runtime or "auto"
            state = read_state(tr)
            if state.current is None:
                raise DeployError(
                    f"Target '{target.name}' ({tr.where}) has no active release to profile; run `edgeship deploy {target.name}` first."
                )
            bundle_id = state.current
            stamp = utc_stamp(fraction=True)
            remote_out = f"{layout.runs}/{bundle_id}-{stamp}.json"
            args = [
                "profile",
                layout.release(bundle_id),
                "--target",
                target.name,
                "--threads",
                str(threads),
                "--runs",
                str(runs),
                "--min-seconds",
                repr(float(min_seconds)),
                "--warmup",
                str(warmup),
                "--runtime",
                chosen,
                "--output",
                remote_out,
            ]
            if settings.eval_images is not None:
                args += ["--eval-images", str(settings.eval_images)]
            if not settings.energy:
                args.append("--no-energy")
            if target.emulated:
                args.append("--emulated")
            agent = Agent(target, tr)
            try:
                agent.call(args, timeout=timeout, stdout_json=False)
            except AgentError as exc:
                if exc.code == AgentExit.VERIFY:
                    raise DeployError(
                        f"Refusing to profile target '{target.name}': the active release {bundle_id} at "
                        f"{layout.release(bundle_id)} on {tr.where} failed verification, so its files cannot be trusted "
                        f"({exc.detail}). Redeploy the bundle (`edgeship deploy {target.name} --bundle ...`) to replace it."
                    ) from None
                if exc.code == AgentExit.RUNTIME:
                    raise DeployError(
                        f"Target '{target.name}' ({tr.where}): the runtime '{chosen}' could not be loaded by the agent "
                        f"({exc.detail}). Check `edgeship doctor {target.name}`."
                    ) from None
                raise
            with tempfile.TemporaryDirectory(prefix="edgeship-profile-") as tmp:
                local = Path(tmp) / "record.json"
                try:
                    tr.get(remote_out, local)
                finally:
                    tr.run(["rm", "-f", "--", remote_out], check=False)
                try:
                    record = ProfileRecord.parse(json.loads(local.read_text(encoding="utf-8")))
                except ValueError as exc:
                    raise DeployError(f"The profile record fetched from {tr.where}:{remote_out} is not a JSON object: {exc}.") from None
    if record.bundle_id != bundle_id:
        raise DeployError(
            f"The profile record from target '{target.name}' is for bundle {record.bundle_id or '?'}, "
            f"but the active release is {bundle_id}."
        )
    return ProfileRun(record=record, path=store_record(target.name, record))


def store_record(target_name: str, record: ProfileRecord) -> Path:
    """``results/profiles/<target>/<bundle id>/<timestamp>.json``, written atomically, never overwritten."""
    folder = profiles_results_dir() / target_name / (record.bundle_id or "unknown")
    stamp = utc_stamp()
    path = folder / f"{stamp}.json"
    n = 1
    while path.exists():
        path = folder / f"{stamp}-{n}.json"
        n += 1
    atomic_write_json(path, record.to_json())
    return path
