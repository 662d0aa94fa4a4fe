"""Deploy, roll back and list releases on one device.

Every step is safe to interrupt: the tarball is uploaded to ``releases/<id>.tar.gz.partial`` and
renamed, the agent extracts to ``releases/<id>.partial`` and renames after verifying on the device,
and ``current`` is switched with ``ln -sfn`` to a temporary link plus ``mv -T`` (a rename, atomic).
So an interrupted deploy leaves the previous release active, and the next run cleans up the
leftovers and completes. Just before the switch the run checks it still holds the device lock.
Once ``current`` points at the new release the deploy has succeeded: failing to record the history
or to prune old releases after that is a warning in the result, not an error. See
:mod:`pipeline.deploy.layout` for the device layout and :mod:`pipeline.deploy.lock` for the lock.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

from pipeline.bundle.manifest import make_tarball, verify_bundle
from pipeline.config.target import TargetConfig
from pipeline.deploy.doctor import DoctorReport, run_doctor
from pipeline.deploy.exit_codes import AgentExit
from pipeline.deploy.layout import Layout, is_bundle_id
from pipeline.deploy.lock import DEFAULT_STALE_AFTER, DeviceLock
from pipeline.deploy.remote import Agent, AgentError, DeviceState, read_state
from pipeline.deploy.upload_meter import UploadMeter
from pipeline.errors import BundleError, DeployError
from pipeline.transport import CommandTimeout, Transport, open_transport, sh_script
from pipeline.transport.base import ProgressCallback

log = logging.getLogger(__name__)

HISTORY_LIMIT = 100
LOCK_NEW_MAX_AGE = 600  # s: a lock being taken is renamed into place within moments
_ACTIVATE = 'cd "$1" && ln -sfn "$2" current.tmp && mv -T current.tmp current'

#: ``step(message)``: human-readable progress ("uploading", "already on device", ...)
StepCallback = Callable[[str], None]


@dataclass
class DeployResult:
    bundle_id: str
    skipped_upload: bool  # the release was already on the device and verified
    seconds: float
    previous: Optional[str]  # release active before this deploy (None on a fresh device)
    current: str
    target: str = ""
    release_dir: str = ""
    pruned: list[str] = field(default_factory=list)
    agent_uploaded: bool = False
    doctor: Optional[DoctorReport] = field(default=None, repr=False)
    warnings: list[str] = field(default_factory=list)  # what failed after the switch (the deploy still succeeded)


@dataclass
class RollbackResult:
    target: str
    previous: str  # the release that was active
    current: str  # the release now active
    warnings: list[str] = field(default_factory=list)


@dataclass
class Release:
    bundle_id: str
    current: bool
    activated: int  # 1 = most recently activated, 0 = never activated (not in history)


@dataclass
class PreparedBundle:
    bundle_id: str
    tarball: Path
    source: Path


# ---------------------------------------------------------------------------------- bundle input
def prepare_bundle(path: Path) -> PreparedBundle:
    """A bundle directory (verified, then tarred) or a ``<id>.tar.gz`` (extracted and verified here)."""
    path = Path(path)
    if path.is_dir():
        manifest = verify_bundle(path)
        return PreparedBundle(manifest["bundle_id"], make_tarball(path), path)
    if path.is_file() and (path.name.endswith(".tar.gz") or path.name.endswith(".tgz")):
        with tempfile.TemporaryDirectory(prefix="edgeship-verify-") as tmp:
            try:
                with tarfile.open(path, "r:gz") as tar:
                    tops = {m.name.split("/", 1)[0] for m in tar.getmembers()}
                    if len(tops) != 1:
                        raise BundleError(f"Bundle archive {path} must hold exactly one top-level folder (the bundle id), found {sorted(tops)}.")
                    tar.extractall(tmp, filter="data")
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise BundleError(f"Bundle archive {path} cannot be read: {exc}.") from None
            top = tops.pop()
            manifest = verify_bundle(Path(tmp) / top)
        if manifest["bundle_id"] != top:
            raise BundleError(f"Bundle archive {path}: folder {top} does not match its bundle_id {manifest['bundle_id']}.")
        return PreparedBundle(manifest["bundle_id"], path, path)
    raise BundleError(f"{path} is neither a bundle directory nor a bundle .tar.gz file.")


# ---------------------------------------------------------------------------------- connections
@contextlib.contextmanager
def connected(target: TargetConfig, transport: Optional[Transport] = None) -> Iterator[Transport]:
    """Use ``transport`` if given (caller closes it), else open one for ``target`` and close it after."""
    if transport is not None:
        yield transport
        return
    own = open_transport(target)
    try:
        yield own
    finally:
        own.close()


@contextlib.contextmanager
def naming_timeouts(target: TargetConfig) -> Iterator[None]:
    """A command that timed out names the target (the transport's message names only its address):
    a farm names each device's target after the device, so its record says which device hung."""
    try:
        yield
    except CommandTimeout as exc:
        raise CommandTimeout(f"Target '{target.name}': {exc}") from None


def _lock(target: TargetConfig, transport: Transport, purpose: str, wait: float, stale_after: float) -> DeviceLock:
    return DeviceLock(transport, purpose, target_name=f"Target '{target.name}'", wait=wait, stale_after=stale_after)


# ---------------------------------------------------------------------------------- deploy
def deploy(
    target: TargetConfig,
    bundle: Path,
    *,
    transport: Optional[Transport] = None,
    progress: Optional[ProgressCallback] = None,
    step: Optional[StepCallback] = None,
    lock_wait: float = 0.0,
    stale_after: float = DEFAULT_STALE_AFTER,
) -> DeployResult:
    """Install ``bundle`` (directory or tarball) on ``target`` and make it the active release.

    ``progress(sent, total)`` follows the upload; without one, an upload that takes over a second
    is reported through ``step`` ("uploading 1.2/3.4 MB at 0.5 MB/s", about once a second).
    """
    say = step or (lambda message: log.info("%s", message))
    started = time.monotonic()
    prepared = prepare_bundle(bundle)
    bundle_id = prepared.bundle_id
    with naming_timeouts(target), connected(target, transport) as tr:
        layout = Layout(tr)
        tr.run(["mkdir", "-p", layout.bin_dir, layout.releases, layout.runs])
        with _lock(target, tr, f"deploy {bundle_id}", lock_wait, stale_after) as lock:
            report = run_doctor(target, tr).raise_if_broken()
            agent = Agent(target, tr)
            state = read_state(tr)
            _clean_leftovers(tr, layout, state)
            skipped = bundle_id in state.releases and _already_installed(agent, layout, bundle_id, say)
            if not skipped:
                _upload_and_install(target, agent, layout, prepared, state, progress, say)
            if state.current != bundle_id:
                lock.ensure_held()
                _activate(tr, bundle_id)
                say(f"activated {bundle_id}" + (f" (was {state.current})" if state.current else ""))
            warnings: list[str] = []
            pruned = _record_and_prune(target, tr, layout, state, bundle_id, warnings, say)
    return DeployResult(
        bundle_id=bundle_id,
        skipped_upload=skipped,
        seconds=time.monotonic() - started,
        previous=state.current,
        current=bundle_id,
        target=target.name,
        release_dir=layout.release(bundle_id),
        pruned=pruned,
        agent_uploaded=report.agent_uploaded,
        doctor=report,
        warnings=warnings,
    )


def stage_release(
    target: TargetConfig,
    bundle: Path | PreparedBundle,
    *,
    transport: Transport,
    step: Optional[StepCallback] = None,
) -> bool:
    """Put ``bundle`` under ``releases/`` without activating it or pruning anything (an A/B needs an
    old baseline next to the active release); True if it was uploaded, False if it was already
    there and verifies. The caller holds the device lock, as ``ab_profile`` does."""
    say = step or (lambda message: log.info("%s", message))
    prepared = bundle if isinstance(bundle, PreparedBundle) else prepare_bundle(bundle)
    layout = Layout(transport)
    transport.run(["mkdir", "-p", layout.releases])
    agent = Agent(target, transport)
    state = read_state(transport)
    if prepared.bundle_id in state.releases and _already_installed(agent, layout, prepared.bundle_id, say):
        return False
    _upload_and_install(target, agent, layout, prepared, state, None, say)
    say(f"staged {prepared.bundle_id} (not activated)")
    return True


def _already_installed(agent: Agent, layout: Layout, bundle_id: str, say: StepCallback) -> bool:
    """A release of this id on the device counts only if the agent verifies it there."""
    try:
        agent.call(["verify", layout.release(bundle_id)])
    except AgentError as exc:
        if exc.code != AgentExit.VERIFY:
            raise
        say(f"{bundle_id} is on the device but does not verify ({exc.detail}); reinstalling it")
        return False
    say(f"{bundle_id} is already on the device (verified); skipping the upload")
    return True


def _upload_and_install(
    target: TargetConfig,
    agent: Agent,
    layout: Layout,
    prepared: PreparedBundle,
    state: DeviceState,
    progress: Optional[ProgressCallback],
    say: StepCallback,
) -> None:
    """Upload the tarball and let the agent verify and unpack it; nothing is switched yet."""
    tr, bundle_id = agent.transport, prepared.bundle_id
    say(f"uploading {prepared.tarball.name} ({prepared.tarball.stat().st_size} bytes) to {tr.where}")
    try:
        tr.put(prepared.tarball, layout.tarball(bundle_id), progress=progress or UploadMeter(say))
        try:
            installed = _install(agent, layout, bundle_id)
        finally:
            with contextlib.suppress(DeployError):  # keep the error that got us here
                tr.run(["rm", "-f", "--", layout.tarball(bundle_id)], check=False)
    except DeployError as exc:
        active = f"{state.current} is still active" if state.current else "no release was active before"
        raise DeployError(
            f"{exc} Nothing was switched on target '{target.name}': {active}. Rerun the deploy to finish; "
            "it cleans up the partial upload."
        ) from None
    if installed.get("bundle_id") != bundle_id:
        raise DeployError(
            f"The agent on {tr.where} installed bundle {installed.get('bundle_id')} from {prepared.tarball}, "
            f"but edgeship expected {bundle_id}."
        )


def _record_and_prune(
    target: TargetConfig,
    tr: Transport,
    layout: Layout,
    state: DeviceState,
    bundle_id: str,
    warnings: list[str],
    say: StepCallback,
) -> list[str]:
    """After the switch: append to the history and remove old releases; failures become warnings."""
    history = list(state.history)
    if not history or history[-1] != bundle_id:
        history.append(bundle_id)
        _after_switch(warnings, say, f"recording {bundle_id} in {layout.history}", lambda: _write_history(tr, layout, history))
    pruned: list[str] = []
    releases = state.releases + [bundle_id]
    _after_switch(
        warnings,
        say,
        "removing old releases",
        lambda: pruned.extend(_prune(tr, layout, bundle_id, history, releases, target.keep_releases)),
    )
    if pruned:
        say(f"removed old releases: {', '.join(pruned)}")
    return pruned


def _after_switch(warnings: list[str], say: StepCallback, doing: str, action: Callable[[], object]) -> None:
    """Run a step that follows the switch: its failure is a warning, since the switch has happened."""
    try:
        action()
    except DeployError as exc:
        text = f"{doing} failed ({exc}); the new release is active all the same"
        log.warning("%s", text)
        say(f"warning: {text}")
        warnings.append(text)


def _install(agent: Agent, layout: Layout, bundle_id: str) -> dict:
    try:
        return agent.call(["install", layout.tarball(bundle_id), layout.releases])
    except AgentError as exc:
        if exc.code == AgentExit.VERIFY:
            raise DeployError(
                f"The bundle {bundle_id} failed verification on {agent.transport.where} after upload "
                f"(nothing was activated): {exc.detail}"
            ) from None
        raise


def _clean_leftovers(tr: Transport, layout: Layout, state: DeviceState) -> None:
    """What interrupted runs leave (names in :mod:`pipeline.deploy.layout`); we hold the lock.

    ``read_state`` reported only names of the project's own patterns, each checked again there;
    ``rm -rf`` removes a symlink as a link. A ``.lock.new.*`` may be another run taking the lock
    right now, so only one older than ``LOCK_NEW_MAX_AGE`` is removed.
    """
    names = [f"releases/{name}" for name in state.leftovers] + list(state.strays)
    names += [name for name, age in state.lock_leftovers if not name.startswith(".lock.new.") or age > LOCK_NEW_MAX_AGE]
    if not names:
        return
    result = tr.run(["rm", "-rf", "--", *[layout.path(name) for name in names]], check=False)
    if result.ok:
        log.info("removed leftovers of interrupted runs on %s: %s", tr.where, ", ".join(names))
    else:
        log.warning("could not remove all leftovers of interrupted runs on %s: %s", tr.where, result.stderr.strip())


def _activate(tr: Transport, bundle_id: str) -> None:
    if not is_bundle_id(bundle_id):  # never point `current` at anything but a bundle id
        raise DeployError(f"Refusing to activate '{bundle_id}': not a bundle id.")
    tr.run(sh_script(_ACTIVATE, tr.remote_dir, Layout.link_target(bundle_id)))


def _write_history(tr: Transport, layout: Layout, history: list[str]) -> None:
    text = "".join(f"{h}\n" for h in history[-HISTORY_LIMIT:])
    fd, tmp = tempfile.mkstemp(prefix="edgeship-history-", suffix=".txt")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        tr.put(Path(tmp), layout.history)  # put is atomic: history.partial + rename
    finally:
        os.unlink(tmp)


def _keep_set(current: Optional[str], history: list[str], releases: list[str], keep: int) -> list[str]:
    """``current`` first, then the most recently activated others, then never-activated ones."""
    ordered: list[str] = []
    for bid in ([current] if current else []) + list(reversed(history)) + sorted(releases):
        if bid and bid in releases and bid not in ordered:
            ordered.append(bid)
    return ordered[: max(keep, 1)]


def _prune(tr: Transport, layout: Layout, current: str, history: list[str], releases: list[str], keep: int) -> list[str]:
    releases = sorted(set(releases))
    kept = _keep_set(current, history, releases, keep)
    doomed = [bid for bid in releases if bid not in kept and bid != current]
    if doomed:
        tr.run(["rm", "-rf", "--", *[layout.release(bid) for bid in doomed]])
    return doomed


# ---------------------------------------------------------------------------------- rollback
def rollback(
    target: TargetConfig,
    *,
    transport: Optional[Transport] = None,
    lock_wait: float = 0.0,
    stale_after: float = DEFAULT_STALE_AFTER,
) -> RollbackResult:
    """Activate the release that was active before the current one (by deploy order)."""
    with connected(target, transport) as tr:
        layout = Layout(tr)
        with _lock(target, tr, "rollback", lock_wait, stale_after) as lock:
            state = read_state(tr)
            if state.current is None:
                raise DeployError(f"Target '{target.name}' ({tr.where}) has no active release, so there is nothing to roll back.")
            history = list(state.history)
            while history and history[-1] == state.current:
                history.pop()
            while history and (history[-1] not in state.releases or history[-1] == state.current):
                history.pop()
            if not history:
                raise DeployError(
                    f"Target '{target.name}' ({tr.where}) has no earlier release to roll back to: {state.current} is "
                    f"the only one in its deploy history (releases on the device: {', '.join(state.releases) or 'none'})."
                )
            to = history[-1]
            agent = Agent(target, tr)
            try:
                agent.call(["verify", layout.release(to)])
            except AgentError as exc:
                raise DeployError(
                    f"Cannot roll back target '{target.name}' to {to}: that release no longer verifies on "
                    f"{tr.where} ({exc.detail}). {state.current} stays active."
                ) from None
            lock.ensure_held()
            _activate(tr, to)
            warnings: list[str] = []
            _after_switch(warnings, lambda _: None, f"recording the rollback in {layout.history}", lambda: _write_history(tr, layout, history))
            return RollbackResult(target=target.name, previous=state.current, current=to, warnings=warnings)


# ---------------------------------------------------------------------------------- releases
def list_releases(target: TargetConfig, *, transport: Optional[Transport] = None) -> list[Release]:
    """Releases on the device, most recently activated first."""
    with connected(target, transport) as tr:
        state = read_state(tr)
    order = {bid: rank for rank, bid in enumerate(_dedupe(reversed(state.history)), start=1)}
    releases = [Release(bid, bid == state.current, order.get(bid, 0)) for bid in state.releases]
    return sorted(releases, key=lambda r: (not r.current, r.activated or 10**9, r.bundle_id))


def _dedupe(items) -> list[str]:
    seen: list[str] = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen

