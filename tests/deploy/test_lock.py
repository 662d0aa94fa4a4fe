"""The per-device lock: concurrent runs never interleave; stale locks are recovered."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from pipeline.deploy.deployer import deploy, rollback
from pipeline.deploy.lock import DeviceLock, LockHeld
from pipeline.transport.local import LocalTransport
from tests.deploy.conftest import current_of


@pytest.fixture
def fast_target(local_target, device_python):
    """A local device whose Python is the agent venv (fast doctor, no TensorFlow)."""
    return local_target(python=device_python)


def _blocked_deploy(target, bundle, started: threading.Event, release: threading.Event, results: list):
    def progress(sent, total):
        started.set()
        assert release.wait(60)

    def run():
        try:
            results.append(deploy(target, bundle, progress=progress))
        except BaseException as exc:  # pragma: no cover - reported by the test
            results.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    assert started.wait(60), "the first deploy never reached its upload"
    return thread


def test_second_concurrent_deploy_fails_fast_naming_the_holder(fast_target, tiny_bundle_int8, make_variant, tmp_path):
    started, release, results = threading.Event(), threading.Event(), []
    first = _blocked_deploy(fast_target, tiny_bundle_int8, started, release, results)
    try:
        begin = time.monotonic()
        with pytest.raises(LockHeld) as err:
            deploy(fast_target, make_variant("other"))
        assert time.monotonic() - begin < 5, "a held lock must fail fast"
        message = str(err.value)
        assert f"pid {os.getpid()}" in message and socket.gethostname() in message
        assert f"deploy {tiny_bundle_int8.name}" in message and ".lock" in message
        with pytest.raises(LockHeld):
            rollback(fast_target)
    finally:
        release.set()
        first.join(60)
    assert results and not isinstance(results[0], BaseException), results
    assert current_of(tmp_path / "localdev") == tiny_bundle_int8.name
    assert not (tmp_path / "localdev" / ".lock").exists()


def test_waiting_deploy_runs_after_the_holder_finishes(fast_target, tiny_bundle_int8, make_variant, tmp_path):
    started, release, results = threading.Event(), threading.Event(), []
    first = _blocked_deploy(fast_target, tiny_bundle_int8, started, release, results)
    variant = make_variant("after")
    second: list = []
    waiter = threading.Thread(target=lambda: second.append(deploy(fast_target, variant, lock_wait=60)))
    waiter.start()
    time.sleep(1.0)
    assert not second, "the waiting deploy must not run while the lock is held"
    release.set()
    first.join(60)
    waiter.join(60)
    assert second and second[0].previous == tiny_bundle_int8.name and second[0].current == variant.name
    assert (tmp_path / "localdev" / "history").read_text().split() == [tiny_bundle_int8.name, variant.name]


def test_wait_runs_out_with_the_holder_named(fast_target, tmp_path):
    tr = LocalTransport(str(tmp_path / "localdev"))
    with DeviceLock(tr, "benchmark run", target_name="Target 'x'"):
        begin = time.monotonic()
        with pytest.raises(LockHeld, match="after waiting 1 s.*benchmark run"):
            DeviceLock(tr, "deploy", wait=1.0, poll=0.2).acquire()
        assert 0.9 < time.monotonic() - begin < 4


def _plant_lock(device: Path, host: str, pid: int, age: float = 0.0) -> Path:
    lock = device / ".lock"
    lock.mkdir(parents=True)
    owner = {"host": host, "pid": pid, "user": "someone", "since": "2020-01-01T00:00:00+00:00", "purpose": "deploy cafe", "token": "t"}
    (lock / "owner").write_text(json.dumps(owner) + "\n")
    if age:
        old = time.time() - age
        os.utime(lock, (old, old))
    return lock


def test_fresh_lock_of_another_host_is_respected(fast_target, tiny_bundle_int8, tmp_path):
    lock = _plant_lock(tmp_path / "localdev", "build-server-7", 4242)
    with pytest.raises(LockHeld, match=r"someone@build-server-7 \(pid 4242.*deploy cafe"):
        deploy(fast_target, tiny_bundle_int8)
    assert lock.is_dir()


def test_stale_lock_is_recovered_by_age(local_target, device_python, tiny_bundle_int8, tmp_path):
    target = local_target(python=device_python)
    _plant_lock(tmp_path / "localdev", "build-server-7", 4242, age=7200)
    result = deploy(target, tiny_bundle_int8, stale_after=3600)
    assert result.current == tiny_bundle_int8.name
    assert not (tmp_path / "localdev" / ".lock").exists()


def test_lock_of_a_dead_process_on_this_host_is_recovered(fast_target, tiny_bundle_int8, tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    _plant_lock(tmp_path / "localdev", socket.gethostname(), dead.pid)
    assert deploy(fast_target, tiny_bundle_int8).current == tiny_bundle_int8.name


def test_lock_is_released_when_deploy_fails(local_target, tiny_bundle_int8, tmp_path):
    target = local_target(python="/nonexistent/python3")
    with pytest.raises(Exception, match="no Python interpreter"):
        deploy(target, tiny_bundle_int8)
    assert not (tmp_path / "localdev" / ".lock").exists()
