"""The per-device lock: concurrent runs never interleave; stale locks are recovered."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from pipeline.deploy.deployer import deploy, rollback
from pipeline.deploy.lock import DeviceLock, LockHeld, LockLost
from pipeline.proc_identity import start_ticks
from pipeline.transport.local import LocalTransport
from tests.helpers.device_fixtures import current_of


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
    """A lock as an edgeship without heartbeats wrote it: mkdir + owner, judged by its mtime."""
    lock = device / ".lock"
    lock.mkdir(parents=True)
    owner = {"host": host, "pid": pid, "user": "someone", "since": "2020-01-01T00:00:00+00:00", "purpose": "deploy cafe", "token": "t"}
    (lock / "owner").write_text(json.dumps(owner) + "\n")
    if age:
        _age(lock, age)
    return lock


def _age(path: Path, seconds: float) -> None:
    old = time.time() - seconds
    os.utime(path, (old, old))


def _device_clock(ago: int = 0, wall_ago: int | None = None) -> str:
    """A heartbeat line as the device writes it: boot id, uptime and wall clock, ``ago`` seconds back."""
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    uptime = int(float(Path("/proc/uptime").read_text().split()[0]))
    return f"{boot} {uptime - ago} {int(time.time()) - (ago if wall_ago is None else wall_ago)}"


def _this_host(pid: int) -> dict:
    """Owner fields that prove a holder runs on this host: kernel boot id, pid namespace, start time."""
    return {
        "boot_id": Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
        "pid_ns": os.readlink("/proc/self/ns/pid"),
        "pid": pid,
        "pid_start": start_ticks(pid),
    }


def _plant_v2(device: Path, owner: dict, beat: str, lock_age: float = 0.0) -> Path:
    """A lock as this edgeship writes it: owner, heartbeat and token marker (the holder is elsewhere)."""
    lock = device / ".lock"
    lock.mkdir(parents=True)
    token = "feed" * 8
    data = {"host": "build-server-7", "pid": 4242, "user": "someone", "since": "2020-01-01T00:00:00+00:00",
            "purpose": "deploy cafe", "token": token, "lock_version": 2, **owner}
    (lock / "owner").write_text(json.dumps(data, sort_keys=True) + "\n")
    (lock / f"token.{token}").write_text("")
    (lock / "heartbeat").write_text(beat + "\n")
    if lock_age:
        _age(lock, lock_age)
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
    _plant_v2(tmp_path / "localdev", {**_this_host(os.getpid()), "pid": dead.pid}, _device_clock())
    assert deploy(fast_target, tiny_bundle_int8).current == tiny_bundle_int8.name


def test_an_old_owner_file_without_boot_id_cannot_prove_its_pid_is_from_this_host(fast_target, tiny_bundle_int8, tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    lock = _plant_lock(tmp_path / "localdev", socket.gethostname(), dead.pid)  # same host name, but a container shares it
    with pytest.raises(LockHeld, match=f"pid {dead.pid}"):
        deploy(fast_target, tiny_bundle_int8)
    assert lock.is_dir()


def test_a_live_holder_on_this_host_is_never_broken_however_old_its_heartbeat(fast_target, tmp_path):
    holder = subprocess.Popen(["sleep", "60"])
    try:
        device = tmp_path / "localdev"
        lock = _plant_v2(device, _this_host(holder.pid), _device_clock(ago=100_000), lock_age=100_000)
        tr = LocalTransport(str(device))
        with pytest.raises(LockHeld, match=f"last heartbeat 100000 s ago.*pid {holder.pid}"):
            DeviceLock(tr, "deploy", stale_after=5).acquire()
        assert lock.is_dir() and (lock / "token.feedfeedfeedfeedfeedfeedfeedfeed").exists()
        # the same pid with another start time is a later process: the holder is gone
        (lock / "owner").write_text(json.dumps({**json.loads((lock / "owner").read_text()), "pid_start": 1}))
        with DeviceLock(tr, "deploy", stale_after=5) as taken:
            assert json.loads((lock / "owner").read_text())["token"] == taken.token
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_from_another_boot_with_an_old_heartbeat_is_broken(fast_target, tmp_path):
    device = tmp_path / "localdev"
    other_boot = {**_this_host(os.getpid()), "boot_id": "00000000-0000-0000-0000-000000000000"}
    lock = _plant_v2(device, other_boot, _device_clock(ago=30))  # the directory itself is fresh
    with DeviceLock(LocalTransport(str(device)), "deploy", stale_after=10) as taken:
        assert json.loads((lock / "owner").read_text())["token"] == taken.token
    assert not lock.exists() and not list(device.glob(".lock.*"))


def test_a_wall_clock_jump_does_not_make_a_beating_lock_stale(fast_target, tmp_path):
    """A Pi without a hardware clock jumps forward at NTP sync: the uptime says the beat is fresh."""
    device = tmp_path / "localdev"
    lock = _plant_v2(device, {}, _device_clock(ago=0, wall_ago=100_000), lock_age=100_000)
    with pytest.raises(LockHeld, match="last heartbeat 0 s ago.*build-server-7"):
        DeviceLock(LocalTransport(str(device)), "deploy", stale_after=60).acquire()
    assert lock.is_dir()


def test_lock_is_released_when_deploy_fails(local_target, tiny_bundle_int8, tmp_path):
    target = local_target(python="/nonexistent/python3")
    with pytest.raises(Exception, match="no Python interpreter"):
        deploy(target, tiny_bundle_int8)
    assert not (tmp_path / "localdev" / ".lock").exists()


def test_a_deploy_whose_lock_was_broken_does_not_switch(fast_target, tiny_bundle_int8, make_variant, tmp_path):
    """Another run judged this one's lock stale mid-upload and took the device: nothing is switched."""
    device = tmp_path / "localdev"
    deploy(fast_target, tiny_bundle_int8)
    taken: list[dict] = []

    def take_over(sent: int, total: int) -> None:
        if taken:
            return
        lock = device / ".lock"
        ours = json.loads((lock / "owner").read_text())
        (lock / f"token.{ours['token']}").unlink(missing_ok=True)  # condemned, as the break does
        os.rename(lock, device / ".lock.dead.cafe")
        shutil.rmtree(device / ".lock.dead.cafe")
        lock.mkdir()
        other = {**ours, "token": "beef" * 8, "host": "build-server-7", "boot_id": "another", "purpose": "other deploy"}
        (lock / "owner").write_text(json.dumps(other))
        (lock / f"token.{other['token']}").write_text("")
        taken.append(other)

    with pytest.raises(LockLost, match="was broken by another run"):
        deploy(fast_target, make_variant("late"), progress=take_over)
    assert taken and current_of(device) == tiny_bundle_int8.name
    assert json.loads((device / ".lock" / "owner").read_text())["token"] == taken[0]["token"], "the new holder's lock was removed"
