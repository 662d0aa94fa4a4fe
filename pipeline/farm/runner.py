"""Run a farm: build the bundles needed, then deploy and profile every selected device in parallel.

One host drives the farm through parallel SSH sessions (threads; the work is I/O-bound). A dead,
flaky or hung device costs at most ``timeout`` x ``1 + retries`` and is recorded with its error;
it never stops the others. Results are written to the store from this thread only, one transaction
per device, as each device finishes, so a killed run keeps everything already recorded.

A device with ``labgrid:`` is reached through a shared lab's coordinator (:mod:`pipeline.farm.labgrid`):
each attempt reserves and acquires its place, connects to the address, user and port of the place's
NetworkService, and gives the place back however the attempt ends; the run gives back every place
still held when it ends early (Ctrl-C, farm timeout). A place someone else held for the whole wait
is recorded ``busy`` (not retried, not an infrastructure failure); a coordinator or exporter that is
gone makes the device ``unreachable``.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, ContextManager, Optional, Sequence

from pipeline.bundle.manifest import read_manifest
from pipeline.deploy.record import ProfileRecord
from pipeline.errors import EdgeshipError
from pipeline.execute.executor import Executor
from pipeline.farm.confirmation import ConfirmPlan, confirm_on_device, plan_confirmation, suspicion
from pipeline.farm.inventory import FarmDevice, LoadedInventory
from pipeline.farm.labgrid import (
    CoordinatorUnreachable,
    Endpoint,
    FarmLabgrid,
    LabgridError,
    Lease,
    LeaseEnded,
    PlaceBusy,
    PlaceMissing,
    ResourceOffline,
)
from pipeline.farm.labgrid import prepare as prepare_labgrid
from pipeline.farm.policy import Policy
from pipeline.farm.store import ResultsStore
from pipeline.farm.verdicts import ConfirmationCheck
from pipeline.parallel_builds import build_each
from pipeline.progress import NullProgress, Progress

log = logging.getLogger(__name__)

# (device name, state, detail): states are queued, building, reserving, waiting, connecting,
# deploying, profiling, confirming, retrying, ok, unreachable, failed, timeout, invalid, busy.
Listener = Callable[[str, str, str], None]


@dataclass
class DeviceOutcome:
    device: FarmDevice
    status: str
    record: Optional[ProfileRecord] = None
    record_path: Optional[Path] = None
    error: Optional[str] = None
    attempts: int = 0
    seconds: float = 0.0
    result_id: Optional[int] = None
    confirmation: Optional[ConfirmationCheck] = None  # the A/B, when the stored baseline made latency suspect
    ab_record: Optional[dict] = None


@dataclass
class FarmRun:
    run_id: int
    outcomes: list[DeviceOutcome] = field(default_factory=list)
    bundles: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0


class _Unreachable(Exception):
    """Connecting failed: the device is down, refusing, or not answering."""


def _device_target(device: FarmDevice, timeout: float, endpoint: Optional[Endpoint] = None):
    """The device's target named after the device (so records file under its name) with its
    command timeout capped by the farm's per-device timeout and, for a labgrid place, the host,
    user and port of its NetworkService (validated like a target file's)."""
    transport = device.target.transport
    updates: dict[str, object] = {"command_timeout": min(transport.command_timeout, timeout)}
    if endpoint is not None:
        updates.update(host=endpoint.host, user=endpoint.user, **({"port": endpoint.port} if endpoint.port else {}))
        try:
            transport = type(transport).model_validate({**transport.model_dump(), **updates})
        except ValueError as exc:
            raise LabgridError(f"the labgrid place's NetworkService ({endpoint.describe()}) is not a usable SSH address: {exc}") from None
    else:
        transport = transport.model_copy(update=updates)
    return device.target.model_copy(update={"name": device.name, "transport": transport})


def _attempt(
    device: FarmDevice,
    bundle: Path,
    timeout: float,
    notify: Listener,
    labgrid: Optional[FarmLabgrid] = None,
    plan: Optional[ConfirmPlan] = None,
) -> DeviceOutcome:
    from pipeline.deploy import deploy, profile
    from pipeline.transport import open_transport

    held: ContextManager[Optional[Lease]] = (
        labgrid.lease(device, notify) if labgrid is not None and device.labgrid is not None else nullcontext()
    )
    with held as lease:
        target = _device_target(device, timeout, lease.endpoint if lease is not None else None)
        where = f" (labgrid place {lease.place})" if lease is not None else ""
        notify(device.name, "connecting", target.transport.describe() + where)
        try:
            transport = open_transport(target)
        except EdgeshipError as exc:
            raise _Unreachable(str(exc) + where) from None
        try:
            notify(device.name, "deploying", bundle.name)
            # deploy's steps (and upload progress: bytes and rate) reach the live view
            deployed = deploy(target, bundle, transport=transport, step=lambda message: notify(device.name, "deploying", message))
            if lease is not None:
                lease.check()  # the run gave the place back meanwhile (Ctrl-C): do not profile on it
            notify(device.name, "profiling", bundle.name)
            run = profile(target, transport=transport, timeout=timeout, doctor=deployed.doctor)
            outcome = DeviceOutcome(device, "ok", record=run.record, record_path=run.path)
            why = suspicion(plan.baseline_samples, run.record.latency.samples or [], plan.policy) if plan is not None else None
            if plan is not None and why is not None:
                # while the connection (and the labgrid lease) is still held: same device state
                notify(device.name, "confirming", f"A/B against {plan.baseline_bundle_id[:12]}: {why}")
                outcome.confirmation, outcome.ab_record = confirm_on_device(
                    plan, target, transport, deployed.bundle_id, timeout=timeout, doctor=deployed.doctor,
                    step=lambda message: notify(device.name, "confirming", message),
                )
            return outcome
        finally:
            transport.close()


def _run_device(
    device: FarmDevice,
    bundle: Path,
    timeout: float,
    retries: int,
    notify: Listener,
    labgrid: Optional[FarmLabgrid] = None,
    plan: Optional[ConfirmPlan] = None,
) -> DeviceOutcome:
    """Deploy + profile with bounded retries; the outcome of the last attempt is what counts.

    Busy (a labgrid place held for the whole wait) and a place that does not exist are final:
    retrying would only wait again, or fail the same way."""
    started = time.monotonic()
    outcome = DeviceOutcome(device, "failed", error="not attempted")
    for attempt in range(1, retries + 2):
        final = False
        try:
            outcome = _attempt(device, bundle, timeout, notify, labgrid, plan)
        except (_Unreachable, CoordinatorUnreachable, ResourceOffline) as exc:
            outcome = DeviceOutcome(device, "unreachable", error=str(exc))
        except PlaceBusy as exc:
            outcome, final = DeviceOutcome(device, "busy", error=str(exc)), True
        except (PlaceMissing, LeaseEnded) as exc:
            outcome, final = DeviceOutcome(device, "failed", error=str(exc)), True
        except EdgeshipError as exc:
            outcome = DeviceOutcome(device, "failed", error=str(exc))
        except Exception as exc:  # a bug or a library error must not take the farm down
            log.exception("device %s failed unexpectedly", device.name)
            outcome = DeviceOutcome(device, "failed", error=f"{type(exc).__name__}: {exc}")
        outcome.attempts = attempt
        if outcome.status == "ok" or final:
            break
        if attempt <= retries:
            notify(device.name, "retrying", f"attempt {attempt} {outcome.status}: {outcome.error}")
            time.sleep(min(2.0 * attempt, 10.0))
    outcome.seconds = time.monotonic() - started
    return outcome


def build_bundles(profiles: Sequence[str], progress: Progress, executor: Optional[Executor] = None) -> dict[str, Path]:
    """Build (or fetch from the cache) one bundle per build profile; all at once on a cluster."""
    names = list(dict.fromkeys(profiles))
    bundles = {}
    for name, outcome in zip(names, build_each(names, progress, executor)):
        if outcome.error is not None:
            raise outcome.error
        assert outcome.result is not None and outcome.result.bundle_dir is not None
        bundles[name] = outcome.result.bundle_dir
    return bundles


def run_farm(
    loaded: LoadedInventory,
    tags: Sequence[str] = (),
    store: Optional[ResultsStore] = None,
    progress: Optional[Progress] = None,
    listener: Optional[Listener] = None,
    bundles: Optional[dict[str, Path]] = None,
    policy: Optional[Policy] = None,
    executor: Optional[Executor] = None,
) -> FarmRun:
    """Deploy and profile every selected device; returns the run id and each device's outcome.

    ``bundles`` maps build profile name to bundle directory; profiles not in it are built first
    (their training on ``executor``, a cluster's, when given).
    ``policy`` (default: the inventory's) decides when a device confirms its latency by an A/B.
    """
    progress = progress or NullProgress()
    notify: Listener = listener or (lambda name, state, detail: log.info("%s: %s %s", name, state, detail))
    devices = loaded.select(tags)
    inv = loaded.inventory
    labgrid = prepare_labgrid(loaded.path, inv.labgrid, devices)  # refuses a bad labgrid setup before any build or deploy
    bundles = dict(bundles or {})
    missing = [d.profile for d in devices if d.profile not in bundles]
    bundles.update(build_bundles(missing, progress, executor))
    store = store or ResultsStore()
    store.mark_stale_runs_aborted()
    profiles = sorted({d.profile for d in devices})
    run_id = store.start_run("farm", inventory=str(loaded.path), profile_name=",".join(profiles))
    farm = FarmRun(run_id=run_id, bundles=bundles)
    started = time.monotonic()
    for name in profiles:
        store.register_bundle(read_manifest(bundles[name]))
    for device in devices:
        store.register_device(device.name, device.device_class, target_file=device.target_path, tags=device.tags, emulated=device.target.emulated)
        notify(device.name, "queued", device.profile)
    status = "aborted"
    policy = policy or loaded.policy
    plans = {d.name: plan_confirmation(store, d.name, d.device_class, d.profile, d.target.emulated, policy) for d in devices}
    pool = cf.ThreadPoolExecutor(max_workers=min(inv.concurrency, len(devices)), thread_name_prefix="farm")
    try:
        futures = {
            pool.submit(_run_device, d, bundles[d.profile], inv.timeout, inv.retries, notify, labgrid, plans[d.name]): d
            for d in devices
        }
        # A hung device is given up on after its whole retry budget; its thread ends when the
        # transport's command timeout (capped at inv.timeout) fires.
        waited = labgrid.budget(devices) if labgrid is not None else 0.0
        budget = (inv.timeout + 30.0 + waited) * (inv.retries + 1)
        deadline = time.monotonic() + budget * max(1, -(-len(devices) // inv.concurrency))
        pending = set(futures)
        while pending:
            done, pending = cf.wait(pending, timeout=max(0.0, deadline - time.monotonic()), return_when=cf.FIRST_COMPLETED)
            if not done:
                for future in pending:
                    device = futures[future]
                    farm.outcomes.append(_record(store, run_id, DeviceOutcome(device, "timeout", error=f"no answer within {budget:.0f}s"), notify))
                    future.cancel()
                break
            for future in done:
                farm.outcomes.append(_record(store, run_id, future.result(), notify))
        status = "finished"
    finally:
        if labgrid is not None:  # Ctrl-C or the farm's deadline: give back every place still held
            labgrid.book.close()
        pool.shutdown(wait=False, cancel_futures=True)
        store.finish_run(run_id, status)
    farm.seconds = time.monotonic() - started
    return farm


def _record(store: ResultsStore, run_id: int, outcome: DeviceOutcome, notify: Listener) -> DeviceOutcome:
    device = outcome.device
    outcome.result_id = store.record_result(
        run_id, device.name, device.device_class, device.profile, outcome.status, outcome.record, outcome.record_path, outcome.error,
        emulated=device.target.emulated, target_file=device.target_path, tags=device.tags,
        confirmation=(asdict(outcome.confirmation), outcome.ab_record) if outcome.confirmation is not None else None,
    )
    stored = store.get_result(outcome.result_id)
    if stored.status != outcome.status:  # e.g. a throttled 'ok' run stored as 'invalid'
        outcome.status = stored.status
        outcome.error = stored.error
    p50 = outcome.record.latency.p50 if outcome.record is not None else None
    detail = f"p50 {p50:.3f} ms" if outcome.status == "ok" and p50 is not None else (outcome.error or "")
    notify(device.name, outcome.status, detail)
    return outcome
