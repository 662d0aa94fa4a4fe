"""Failures after the upload leave the previous release active; failures after the switch are warnings."""

from __future__ import annotations

import os
import time

import pytest

from pipeline.deploy.deployer import _activate, deploy, rollback
from pipeline.deploy.layout import is_bundle_id
from pipeline.errors import DeployError
from pipeline.transport.local import LocalTransport
from tests.helpers.device_fixtures import current_of


@pytest.fixture
def fast_target(local_target, device_python):
    return local_target(python=device_python)


def test_history_write_failure_after_the_switch_is_a_warning(fast_target, tiny_bundle_int8, make_variant, tmp_path):
    device = tmp_path / "localdev"
    deploy(fast_target, tiny_bundle_int8)
    (device / "history.partial").mkdir()  # where the new history is written first: now it cannot be
    (device / "history.partial" / "keep").write_text("")
    variant = make_variant("next")
    steps: list[str] = []
    result = deploy(fast_target, variant, step=steps.append)
    assert (result.previous, result.current) == (tiny_bundle_int8.name, variant.name)
    assert current_of(device) == variant.name
    assert len(result.warnings) == 1 and "history" in result.warnings[0] and "active all the same" in result.warnings[0]
    assert any(step.startswith("warning: recording") for step in steps)
    assert not (device / ".lock").exists()
    assert (device / "history").read_text().split() == [tiny_bundle_int8.name]

    back = rollback(fast_target)  # the rollback's own history write fails the same way
    assert back.current == tiny_bundle_int8.name and current_of(device) == tiny_bundle_int8.name
    assert back.warnings and "history" in back.warnings[0]


def test_install_failure_after_the_upload_keeps_the_previous_release(fast_target, tiny_bundle_int8, make_variant, tmp_path):
    device = tmp_path / "localdev"
    deploy(fast_target, tiny_bundle_int8)
    variant = make_variant("blocked")
    (device / "releases" / variant.name).write_text("not a release")  # the agent refuses to replace it
    with pytest.raises(DeployError) as err:
        deploy(fast_target, variant)
    assert "is not a directory" in str(err.value) and f"{tiny_bundle_int8.name} is still active" in str(err.value)
    assert current_of(device) == tiny_bundle_int8.name
    assert (device / "history").read_text().split() == [tiny_bundle_int8.name]
    assert not list((device / "releases").glob("*.tar.gz*")) and not list((device / "releases").glob("*.partial"))
    assert not (device / ".lock").exists()


@pytest.mark.parametrize("name", ["0123456789abcdef\n", "0123456789abcdef\nx", "0123456789ABCDEF", "0123456789abcde", ""])
def test_names_that_are_not_bundle_ids(name, tmp_path):
    assert not is_bundle_id(name)
    with pytest.raises(DeployError, match="not a bundle id"):
        _activate(LocalTransport(str(tmp_path / "dev")), name)
    assert not (tmp_path / "dev" / "current").is_symlink()


def test_leftovers_of_interrupted_runs_are_removed_and_nothing_else(fast_target, tiny_bundle_int8, make_variant, tmp_path):
    device = tmp_path / "localdev"
    deploy(fast_target, tiny_bundle_int8)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep")
    rel = device / "releases"
    doomed = [
        rel / "0123456789abcdef.broken-4242",  # the agent replaced a broken release and was killed
        device / "bin" / "agent.py.partial",
        device / "history.partial",
        device / ".lock.dead.0a1b",
        device / ".lock.broken.999",  # an older edgeship's break
        device / ".lock.new.ab12",
    ]
    for path in doomed:
        if path.name.endswith(".partial"):
            path.write_text("half")
        else:
            path.mkdir()
            (path / "owner").write_text("x")
    old = time.time() - 7200
    os.utime(device / ".lock.new.ab12", (old, old))
    kept = [
        device / ".lock.new.cd34",  # another run taking the lock right now
        rel / "notours.partial",
        device / "notes.partial",
    ]
    (device / ".lock.new.cd34").mkdir()
    (rel / "notours.partial").write_text("x")
    (device / "notes.partial").write_text("x")
    links = [rel / "0123456789abcdef.broken-1", device / ".lock.dead.beef"]  # our names, but links: left alone
    (rel / "0123456789abcdef.broken-1").symlink_to(outside)
    (device / ".lock.dead.beef").symlink_to(outside)

    variant = make_variant("clean")
    assert deploy(fast_target, variant).current == variant.name
    assert [p for p in doomed if os.path.lexists(p)] == []
    assert all(p.exists() for p in kept)
    assert all(p.is_symlink() for p in links) and (outside / "precious").read_text() == "keep"
    assert sorted(p.name for p in rel.iterdir() if p.is_dir() and not p.is_symlink()) == sorted([tiny_bundle_int8.name, variant.name])
