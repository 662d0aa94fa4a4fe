"""Deploy a bundle to a device, switch releases atomically, run the agent's doctor and profile.

The library never imports click; ``pipeline.cli.deploy`` builds configs and calls these functions.
Nothing here imports TensorFlow.

    deploy(target, bundle, *, transport=None, progress=None, step=None, lock_wait=0.0) -> DeployResult
    rollback(target, *, transport=None, lock_wait=0.0) -> RollbackResult
    list_releases(target, *, transport=None) -> list[Release]
    profile(target, *, transport=None, runs=None, min_seconds=None, warmup=None, threads=None,
            runtime=None, doctor=None, lock_wait=0.0) -> ProfileRun(record, path)
    run_doctor(target, transport) -> DoctorReport
    ab_profile(target, *, baseline_id, candidate_id=None, baseline_bundle=None, blocks=8, ...)
        -> (ABRecord, 'device' | 'uploaded'); BaselineMissing when the baseline is nowhere
    stage_release(target, bundle, *, transport, step=None) -> bool (installed, not activated)
"""

from pipeline.deploy.ab import ABBlock, ABRecord, BaselineMissing, ab_profile, find_host_bundle, store_ab_record
from pipeline.deploy.deployer import (
    DeployResult,
    Release,
    RollbackResult,
    connected,
    deploy,
    list_releases,
    rollback,
    stage_release,
)
from pipeline.deploy.doctor import DoctorReport, run_doctor
from pipeline.deploy.lock import DeviceLock, LockHeld
from pipeline.deploy.profiling import ProfileRun, profile, store_record

__all__ = [
    "ABBlock",
    "ABRecord",
    "BaselineMissing",
    "DeployResult",
    "DeviceLock",
    "DoctorReport",
    "LockHeld",
    "ProfileRun",
    "Release",
    "RollbackResult",
    "ab_profile",
    "connected",
    "deploy",
    "find_host_bundle",
    "list_releases",
    "profile",
    "rollback",
    "run_doctor",
    "stage_release",
    "store_ab_record",
    "store_record",
]
