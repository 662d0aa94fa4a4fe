"""The SSH transport, deploy and profile against a real dropbear server that has no sftp-server.

``DropbearServer`` hides Debian's /usr/lib/sftp-server from dropbear in a private mount namespace,
as on an embedded image without one: every file must go over exec channels.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import paramiko
import pytest

from pipeline.config.target import TargetConfig, parse_target
from pipeline.deploy.deployer import deploy, rollback
from pipeline.deploy.profiling import profile
from pipeline.errors import DeployError, EdgeshipError
from pipeline.lab.dropbear import DropbearServer, dropbear_unavailable
from pipeline.transport import open_transport
from tests.helpers.device_fixtures import current_of
from tests.transport.upload_faults import cut_once_the_script_runs, script_running, wait_until

pytestmark = pytest.mark.ssh


@pytest.fixture
def dropbear(tmp_path_factory: pytest.TempPathFactory):
    reason = dropbear_unavailable()
    if reason is not None:
        pytest.skip(f"no dropbear test server: {reason}")
    server = DropbearServer(tmp_path_factory.mktemp("dropbear")).start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def dropbear_target(dropbear: DropbearServer, tmp_path: Path) -> Callable[..., TargetConfig]:
    def make(python: str = "/usr/bin/python3", **overrides) -> TargetConfig:
        data = dropbear.target_dict("dropbear-dev", tmp_path / "device", python, **overrides)
        return parse_target(data, "test target dropbear-dev")

    return make


def _partials(device: Path) -> list[str]:
    return sorted(str(p.relative_to(device)) for p in device.rglob("*.partial"))


def test_dropbear_server_refuses_cleanly_without_root(monkeypatch, tmp_path):
    """Mount namespaces need root: the helper says so (and tests skip with that reason) instead of failing later."""
    import pipeline.lab.dropbear as lab_dropbear

    lab_dropbear.dropbear_unavailable.cache_clear()
    monkeypatch.setattr(lab_dropbear.os, "geteuid", lambda: 1000)
    try:
        if not lab_dropbear.DROPBEAR.is_file():
            pytest.skip("dropbear-bin is not installed")
        with pytest.raises(EdgeshipError, match="Cannot run a dropbear test server: .*needs root"):
            DropbearServer(tmp_path / "server")
        assert not (tmp_path / "server").exists()
    finally:
        lab_dropbear.dropbear_unavailable.cache_clear()


def test_dropbear_ssh_refuses_sftp_and_files_go_over_exec(dropbear, dropbear_target, tmp_path):
    client = paramiko.SSHClient()
    client.load_system_host_keys(str(dropbear.known_hosts))
    client.connect("127.0.0.1", dropbear.port, dropbear.user, key_filename=str(dropbear.client_key), look_for_keys=False, allow_agent=False)
    try:
        with pytest.raises(paramiko.SSHException):
            client.open_sftp()  # the premise: this server really has no SFTP
    finally:
        client.close()

    device = tmp_path / "device"
    device.mkdir()
    src = tmp_path / "payload.bin"
    src.write_bytes(os.urandom(400_000))
    seen: list[tuple[int, int]] = []
    dest = device / "a dir; $(x) 'q'" / "payload.bin"
    with open_transport(dropbear_target()) as tr:
        assert tr.home() == str(dropbear.home)
        nasty = ["$(touch pwned)", "a'b\"c", "*", "  spaced  ", ""]
        assert tr.run(["printf", "%s\\n", *nasty]).stdout.split("\n")[:-1] == nasty
        tr.run(["mkdir", "-p", str(dest.parent)])
        tr.put(src, str(dest), progress=lambda sent, total: seen.append((sent, total)))
        assert tr.file_transfer == "exec"
        tr.get(str(dest), tmp_path / "back.bin")
        with pytest.raises(DeployError, match="does not exist"):
            tr.get(str(device / "nope"), tmp_path / "nope")
    assert dest.read_bytes() == src.read_bytes() == (tmp_path / "back.bin").read_bytes()
    assert seen[-1] == (400_000, 400_000) and _partials(device) == []


def test_dropbear_ssh_deploy_profile_redeploy_and_rollback(dropbear_target, device_python, tmp_path, tiny_bundle_int8, tiny_bundle_float32):
    """Deploy and profile use only run/put/get, so they work unchanged without SFTP."""
    device = tmp_path / "device"
    target = dropbear_target(python=device_python)
    a, b = tiny_bundle_int8.name, tiny_bundle_float32.name

    first = deploy(target, tiny_bundle_int8)
    assert (first.bundle_id, first.previous, first.current, first.agent_uploaded) == (a, None, a, True)
    assert (device / "bin" / "agent.py").read_bytes() == Path("device_agents/agent.py").read_bytes()
    assert sorted(p.name for p in (device / "releases").iterdir()) == [a]

    record = profile(target).record
    assert record.bundle_id == a and record.accuracy.agreement_with_host == 1.0
    assert record.latency.count >= 5

    second = deploy(target, tiny_bundle_float32)

    assert (second.previous, second.current) == (a, b) and current_of(device) == b
    assert profile(target).record.bundle_id == b
    assert rollback(target).current == a and current_of(device) == a
    assert (device / "history").read_text().split() == [a]  # a rollback drops b from the history
    assert _partials(device) == []


def test_dropbear_ssh_upload_cut_with_the_connection_leaves_no_partial(dropbear_target, tmp_path):
    """The link drops mid-upload: the old file stays, dropbear's session script removes the partial,
    and the next put completes."""
    device = tmp_path / "device"
    device.mkdir()
    dest = device / "payload.bin"
    dest.write_bytes(b"old")
    partial = device / "payload.bin.partial"
    src = tmp_path / "payload.bin"
    src.write_bytes(os.urandom(3_000_000))
    with open_transport(dropbear_target()) as tr:

        with pytest.raises(DeployError, match="was lost while uploading"):
            tr.put(src, str(dest), progress=cut_once_the_script_runs(tr, partial))
    assert wait_until(lambda: not script_running(partial)), "the device script is still running"
    assert dest.read_bytes() == b"old" and _partials(device) == []
    with open_transport(dropbear_target()) as tr:
        tr.put(src, str(dest))
    assert dest.read_bytes() == src.read_bytes() and _partials(device) == []


def test_dropbear_ssh_deploy_cut_mid_upload_keeps_the_release_and_the_retry_leaves_no_partial(
    dropbear_target, device_python, tmp_path, tiny_bundle_int8, make_variant
):
    device = tmp_path / "device"
    target = dropbear_target(python=device_python)
    deploy(target, tiny_bundle_int8)
    big = make_variant("big", payload_bytes=4 << 20)
    partial = device / "releases" / f"{big.name}.tar.gz.partial"
    with open_transport(target) as tr:
        with pytest.raises(DeployError, match="was lost while uploading"):
            deploy(target, big, transport=tr, progress=cut_once_the_script_runs(tr, partial))
    assert current_of(device) == tiny_bundle_int8.name
    assert wait_until(lambda: not script_running(partial)), "the device script is still running"
    assert _partials(device) == [], "the device script removes the cut upload"

    result = deploy(target, big)
    assert (result.previous, result.current) == (tiny_bundle_int8.name, big.name)
    assert current_of(device) == big.name and _partials(device) == []
    assert not (device / ".lock").exists()
