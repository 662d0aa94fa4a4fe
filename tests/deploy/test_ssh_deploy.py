"""End to end over a real sshd: the device Python is .venv-agent (numpy 1.x + tflite-runtime 2.14)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pipeline.bundle.manifest import make_tarball
from pipeline.deploy.deployer import deploy, list_releases, rollback
from pipeline.deploy.profiling import profile
from pipeline.errors import DeployError
from pipeline.transport import open_transport
from tests.helpers.device_fixtures import current_of

pytestmark = [pytest.mark.ssh, pytest.mark.agent_venv]


def test_ssh_deploy_profile_redeploy_second_bundle_and_rollback(
    ssh_target, tmp_path, tiny_bundle_int8, tiny_bundle_float32, isolated_results
):
    device = tmp_path / "device"
    target = ssh_target(name="loopback-pi", remote_dir=device)
    a, b = tiny_bundle_int8.name, tiny_bundle_float32.name

    first = deploy(target, tiny_bundle_int8)
    assert (first.bundle_id, first.skipped_upload, first.previous, first.current) == (a, False, None, a)
    assert first.agent_uploaded
    assert current_of(device) == a and os.readlink(device / "current") == f"releases/{a}"
    assert (device / "bin" / "agent.py").read_bytes() == Path("device_agents/agent.py").read_bytes()
    assert sorted(p.name for p in (device / "releases").iterdir()) == [a]  # no tarball or partial left

    run = profile(target)
    record = run.record
    assert record.bundle_id == a and record.target == "loopback-pi"
    assert record.accuracy.agreement_with_host == 1.0
    assert record.runtime.name == "tflite_runtime" and record.runtime.version == "2.14.0"
    assert record.runtime.threads_requested == 1
    assert record.latency.count >= 5 and len(record.latency.samples) == record.latency.count
    assert run.path.parent == isolated_results / "profiles" / "loopback-pi" / a
    assert json.loads(run.path.read_text()) == record.to_json()
    assert not list((device / "runs").iterdir()), "the device copy of the record is removed after fetching"

    again = deploy(target, tiny_bundle_int8)
    assert again.skipped_upload and not again.agent_uploaded
    assert (again.previous, again.current) == (a, a)

    second = deploy(target, make_tarball(tiny_bundle_float32))  # a tarball works as well as a directory
    assert (second.bundle_id, second.previous, second.skipped_upload) == (b, a, False)
    assert current_of(device) == b
    assert profile(target).record.bundle_id == b

    back = rollback(target)
    assert (back.previous, back.current) == (b, a)
    assert current_of(device) == a
    assert [(r.bundle_id, r.current) for r in list_releases(target)] == [(a, True), (b, False)]
    with pytest.raises(DeployError, match="no earlier release to roll back to"):
        rollback(target)
    assert current_of(device) == a


def test_ssh_keep_releases_prunes_the_oldest_never_the_current(ssh_target, tmp_path, make_variant):
    device = tmp_path / "device"
    target = ssh_target(remote_dir=device, keep_releases=2)
    ids = [deploy(target, make_variant(f"v{i}")).bundle_id for i in range(3)]
    releases = sorted(p.name for p in (device / "releases").iterdir())
    assert releases == sorted(ids[1:])
    assert current_of(device) == ids[2]
    assert (device / "history").read_text().split() == ids
    # rolling back to the oldest kept release, then deploying anew, keeps the one now active
    assert rollback(target).current == ids[1]
    fourth = deploy(target, make_variant("v3"))
    assert fourth.previous == ids[1]
    assert sorted(p.name for p in (device / "releases").iterdir()) == sorted([ids[1], fourth.bundle_id])


def test_ssh_killed_upload_keeps_current_and_a_rerun_completes(ssh_target, sshd, tmp_path, tiny_bundle_int8, make_variant):
    device = tmp_path / "device"
    target = ssh_target(remote_dir=device, transport={"retries": 0})
    deploy(target, tiny_bundle_int8)
    big = make_variant("big", payload_bytes=6 << 20)
    killed = []

    def pull_the_plug(sent: int, total: int) -> None:
        if sent >= (1 << 20) and not killed:
            killed.append(sent)
            sshd.kill()

    with pytest.raises(DeployError) as err:
        deploy(target, big, progress=pull_the_plug)
    assert killed, "the upload finished before the server could be killed"
    assert "was lost while uploading" in str(err.value)
    assert f"{tiny_bundle_int8.name} is still active" in str(err.value) and "Rerun the deploy" in str(err.value)
    assert current_of(device) == tiny_bundle_int8.name
    assert not (device / "releases" / big.name).exists()
    assert sorted(p.name for p in (device / "releases").iterdir()) in (
        [tiny_bundle_int8.name],
        sorted([tiny_bundle_int8.name, f"{big.name}.tar.gz.partial"]),
    )

    sshd.start()
    result = deploy(target, big)
    assert (result.previous, result.current, result.skipped_upload) == (tiny_bundle_int8.name, big.name, False)
    assert current_of(device) == big.name
    assert sorted(p.name for p in (device / "releases").iterdir()) == sorted([tiny_bundle_int8.name, big.name])
    assert not (device / ".lock").exists()


def test_ssh_corrupted_release_is_refused_by_profile_and_repaired_by_redeploy(ssh_target, tmp_path, tiny_bundle_int8):
    device = tmp_path / "device"
    target = ssh_target(remote_dir=device)
    deploy(target, tiny_bundle_int8)
    model = device / "releases" / tiny_bundle_int8.name / "model.tflite"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))

    with pytest.raises(DeployError) as err:
        profile(target)
    message = str(err.value)
    assert "model.tflite" in message and "failed verification" in message and tiny_bundle_int8.name in message
    assert not (Path(os.environ["EDGESHIP_RESULTS"]) / "profiles").exists()

    repaired = deploy(target, tiny_bundle_int8)
    assert not repaired.skipped_upload
    assert model.read_bytes() == (tiny_bundle_int8 / "model.tflite").read_bytes()
    assert profile(target).record.accuracy.agreement_with_host == 1.0


def test_ssh_shell_metacharacters_in_remote_dir_are_literal(ssh_target, tmp_path, tiny_bundle_int8):
    canaries = [tmp_path / f"pwned{i}" for i in range(4)]
    weird = (
        f"edge ship; touch {canaries[0]} && $(touch {canaries[1]})"
        f" `touch {canaries[2]}` 'single' \"double\" | touch {canaries[3]} & * $HOME"
    )
    device = tmp_path / "base" / weird
    target = ssh_target(remote_dir=device)
    result = deploy(target, tiny_bundle_int8)
    assert result.current == tiny_bundle_int8.name
    assert current_of(device) == tiny_bundle_int8.name
    assert (device / "releases" / tiny_bundle_int8.name / "manifest.json").is_file()
    assert profile(target).record.bundle_id == tiny_bundle_int8.name
    for canary in canaries:
        assert not canary.exists(), f"{canary} was created: a remote path was interpreted by a shell"
    assert not any(p.name.startswith("pwned") for p in tmp_path.iterdir())
    assert not Path(os.path.expanduser("~/edge ship")).exists()


def test_ssh_device_without_runtime_is_refused_with_install_commands(ssh_target, tmp_path, numpy_only_python, tiny_bundle_int8):
    device = tmp_path / "device"
    target = ssh_target(
        name="bare-pi", remote_dir=device, python=numpy_only_python, os="raspios", runtime=["tflite_runtime", "ai_edge_litert"]
    )
    with pytest.raises(DeployError) as err:
        deploy(target, tiny_bundle_int8)
    message = str(err.value)
    assert "Target 'bare-pi'" in message and "no TFLite runtime" in message
    assert f"{numpy_only_python} -m pip install --break-system-packages tflite-runtime" in message
    assert "python3-numpy" not in message  # numpy is there
    assert not (device / "releases" / tiny_bundle_int8.name).exists() and current_of(device) is None
    assert not (device / ".lock").exists()


def test_ssh_transport_reused_for_deploy_and_profile(ssh_target, tmp_path, tiny_bundle_int8):
    target = ssh_target(remote_dir=tmp_path / "device")
    with open_transport(target) as transport:
        result = deploy(target, tiny_bundle_int8, transport=transport)
        run = profile(target, transport=transport, doctor=result.doctor, runs=3)
    assert run.record.latency.count >= 3


def test_ssh_profile_scores_the_targets_eval_images(ssh_target, tmp_path, tiny_bundle_int8):
    """profiling.eval_images reaches the agent: the record scores that many images, the timing is unchanged."""
    target = ssh_target(remote_dir=tmp_path / "device", profiling={"runs": 7, "min_seconds": 0.0, "warmup": 1, "eval_images": 3})
    with open_transport(target) as transport:
        result = deploy(target, tiny_bundle_int8, transport=transport)
        run = profile(target, transport=transport, doctor=result.doctor)
    assert run.record.accuracy.count == 3 and run.record.latency.count == 7


def test_ssh_profile_with_energy_off_sends_no_energy(ssh_target, tmp_path, tiny_bundle_int8):
    """profiling.energy: false reaches the agent as --no-energy: the record says sampling was off."""
    target = ssh_target(remote_dir=tmp_path / "device", profiling={"runs": 3, "min_seconds": 0.0, "warmup": 0, "energy": False})
    with open_transport(target) as transport:
        result = deploy(target, tiny_bundle_int8, transport=transport)
        run = profile(target, transport=transport, doctor=result.doctor)
    assert run.record.energy is None
    assert run.record.energy_unavailable == "energy sampling turned off (--no-energy)"
