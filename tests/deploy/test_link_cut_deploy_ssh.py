"""A link that drops mid-deploy: the previous release stays active, a second deploy completes, and
no ``.partial`` is left anywhere on the device.

Each case cuts the link (pipeline/lab/link.py) in front of a real sshd at another point of the
deploy: inside the bundle upload, inside the agent's upload on a fresh device, and inside the
history write that follows the switch (the deploy has succeeded by then).
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from pipeline.config.target import parse_target
from pipeline.deploy.deployer import deploy
from pipeline.errors import DeployError
from pipeline.lab.link import Link, target_through
from tests.helpers.device_fixtures import current_of

pytestmark = [pytest.mark.ssh, pytest.mark.agent_venv]


def partials(device: Path) -> list[str]:
    """Every name on the device with ``.partial`` in it (``find -name '*.partial*'``)."""
    return sorted(str(p.relative_to(device)) for p in device.rglob("*.partial*"))


@pytest.fixture
def link(sshd):
    with Link(sshd.port, rtt=0.02) as link:
        yield link


@pytest.fixture
def linked_target(link, sshd, tmp_path, device_python):
    data = target_through(link, sshd, "flaky-pi", tmp_path / "device", device_python, transport={"retries": 0})
    return parse_target(data, "test target flaky-pi")


def test_ssh_cut_during_bundle_upload_keeps_previous_and_retry_leaves_no_partials(
    link, linked_target, tmp_path, tiny_bundle_int8, make_variant
):
    device = tmp_path / "device"
    deploy(linked_target, tiny_bundle_int8)
    big = make_variant("big", payload_bytes=400_000)

    def step(message: str) -> None:
        if message.startswith(f"uploading {big.name}.tar.gz"):
            link.cut_after(up=200_000)  # half-way through the tarball

    with pytest.raises(DeployError) as err:
        deploy(linked_target, big, step=step)
    assert link.cuts == 1
    assert "was lost while uploading" in str(err.value) and f"{tiny_bundle_int8.name} is still active" in str(err.value)
    assert current_of(device) == tiny_bundle_int8.name
    assert partials(device) == [f"releases/{big.name}.tar.gz.partial"], "the cut should leave the half upload behind"

    again = deploy(linked_target, big)
    assert (again.previous, again.current, again.skipped_upload) == (tiny_bundle_int8.name, big.name, False)
    assert current_of(device) == big.name
    assert partials(device) == []
    assert sorted(p.name for p in (device / "releases").iterdir()) == sorted([tiny_bundle_int8.name, big.name])
    assert not (device / ".lock").exists()


def test_ssh_cut_during_agent_upload_on_a_fresh_device_then_retry(link, linked_target, tmp_path, tiny_bundle_int8):
    device = tmp_path / "device"
    link.cut_after(up=30_000)  # past the handshake and the first commands, inside bin/agent.py (83 kB)
    with pytest.raises(DeployError, match="was lost while uploading .*agent.py"):
        deploy(linked_target, tiny_bundle_int8)
    assert current_of(device) is None
    assert partials(device) == ["bin/agent.py.partial"]

    result = deploy(linked_target, tiny_bundle_int8)
    assert result.current == tiny_bundle_int8.name and result.agent_uploaded
    assert (device / "bin" / "agent.py").read_bytes() == Path("device_agents/agent.py").read_bytes()
    assert partials(device) == []


def test_ssh_cut_while_recording_history_after_the_switch(link, linked_target, tmp_path, tiny_bundle_int8, make_variant):
    """The switch has happened, so the deploy succeeds with a warning; the next one repairs the history."""
    device = tmp_path / "device"
    deploy(linked_target, tiny_bundle_int8)
    second = make_variant("second")

    def step(message: str) -> None:
        if message.startswith(f"activated {second.name}"):
            link.cut_after(up=300)  # the SFTP open and write of history.partial, not its rename

    result = deploy(linked_target, second, step=step)
    assert link.cuts == 1
    assert result.current == second.name and current_of(device) == second.name
    assert any("recording" in w and "history" in w for w in result.warnings), result.warnings
    assert partials(device) == ["history.partial"], "the cut should land inside the history upload"

    again = deploy(linked_target, second)
    assert again.skipped_upload and again.current == second.name
    assert (device / "history").read_text().split() == [tiny_bundle_int8.name, second.name]
    assert partials(device) == []
    assert not (device / ".lock").exists()


def test_ssh_repeated_cuts_at_random_bytes_all_recover(link, linked_target, tmp_path, tiny_bundle_int8, make_variant):
    """Five deploys, each cut once at a random byte of its upload and retried: the bench's case, small."""
    device = tmp_path / "device"
    deploy(linked_target, tiny_bundle_int8)
    rng = random.Random(13)
    for index in range(5):
        bundle = make_variant(f"r{index}", payload_bytes=100_000)  # random bytes: the tarball is as big

        def step(message: str, bundle=bundle) -> None:
            if message.startswith(f"uploading {bundle.name}.tar.gz"):
                link.cut_after(up=rng.randrange(1, 100_000))

        for attempt in range(3):
            try:
                deploy(linked_target, bundle, step=step if attempt == 0 else None)
                break
            except DeployError:
                continue
        assert current_of(device) == bundle.name, f"deploy {index} did not complete"
        assert partials(device) == [], f"deploy {index} left {partials(device)}"
    assert link.cuts == 5
