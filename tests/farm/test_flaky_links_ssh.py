"""The farm over flaky links and hung devices: real sshd devices behind the link emulator
(pipeline/lab/link.py), the real agent and store.

* a link cut during a device's upload: the farm's retry completes it, nothing ``.partial`` is left;
* a link cut during profiling: that device is recorded with the lost connection, the others finish;
* a nightly job with a device whose SSH server accepts the command and never answers, and one that
  accepts the TCP connection and never speaks: the job still exits, each hung device is recorded
  with a timeout naming it, the others are ok.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from pipeline.farm.inventory import load_inventory
from pipeline.farm.nightly import run_nightly
from pipeline.farm.runner import run_farm
from pipeline.farm.store import ResultsStore
from pipeline.lab.link import Link, target_through
from pipeline.lab.loopback import default_python
from pipeline.lab.sshd import SSHServer, sshd_available
from tests.helpers.device_fixtures import current_of, make_variant_bundle
from tests.transport.silent_sshd import SilentSSHServer

pytestmark = [pytest.mark.ssh, pytest.mark.skipif(not sshd_available(), reason="openssh-server is not installed")]

PROFILING = {"runs": 5, "min_seconds": 1.5, "warmup": 1}  # long enough for a cut to land inside it
COMMAND_TIMEOUT = 3.0
#: how far past its command timeout a hung device's attempt may run (closing the channel, the
#: connection, the transport's bounded clean-up): "a few seconds"
GRACE = 8.0


def _inventory(path: Path, entries: list[dict], retries: int) -> Path:
    path.write_text(yaml.safe_dump({"name": "flaky", "concurrency": 4, "timeout": 120, "retries": retries, "profile": "tiny", "devices": entries}))
    return path


@pytest.fixture
def linked_farm(tmp_path: Path) -> Iterator[tuple[dict[str, Link], Path]]:
    """Three sshd devices, each behind its own link (20 ms round trip); target files and entries."""
    servers, links, entries = [], {}, []
    try:
        for i in range(3):
            name = f"wifi{i}"
            server = SSHServer(tmp_path / "servers" / name).start()
            servers.append(server)
            link = links[name] = Link(server.port, rtt=0.02).start()
            data = target_through(link, server, name, tmp_path / "devices" / name, default_python(),
                                  profiling=PROFILING, transport={"retries": 0, "connect_timeout": 5})
            (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(data))
            entries.append({"name": name, "target": f"{name}.yaml"})
        yield links, tmp_path, entries
    finally:
        for link in links.values():
            link.close()
        for server in servers:
            server.kill()


def _partials(device: Path) -> list[str]:
    return sorted(str(p.relative_to(device)) for p in device.rglob("*.partial*"))


def test_ssh_cut_during_upload_is_retried_and_leaves_nothing_partial(linked_farm, tiny_bundle_int8: Path) -> None:
    links, root, entries = linked_farm
    bundle = make_variant_bundle(tiny_bundle_int8, root / "bundles", "farm", payload_bytes=300_000)
    device = root / "devices" / "wifi1"
    seen_after_cut: list[list[str]] = []

    def listener(name: str, state: str, detail: str) -> None:
        if name == "wifi1" and state == "deploying" and links["wifi1"].cuts == 0:
            links["wifi1"].cut_after(up=200_000)  # past the agent (83 kB), inside the bundle's tarball
        if name == "wifi1" and state == "retrying":
            seen_after_cut.append(_partials(device))

    inventory = _inventory(root / "farm.yaml", entries, retries=1)
    with ResultsStore(root / "r.sqlite") as store:
        run = run_farm(load_inventory(inventory), store=store, bundles={"tiny": bundle}, listener=listener)
    outcomes = {o.device.name: o for o in run.outcomes}
    assert {n: o.status for n, o in outcomes.items()} == {"wifi0": "ok", "wifi1": "ok", "wifi2": "ok"}, [o.error for o in run.outcomes]
    assert outcomes["wifi1"].attempts == 2 and links["wifi1"].cuts == 1
    assert seen_after_cut == [[f"releases/{bundle.name}.tar.gz.partial"]], "the cut should have left the half upload"
    assert current_of(device) == bundle.name
    for name in links:
        assert _partials(root / "devices" / name) == [], name


def test_ssh_cut_during_profiling_records_the_lost_connection_others_finish(linked_farm, tiny_bundle_int8: Path) -> None:
    links, root, entries = linked_farm

    def listener(name: str, state: str, detail: str) -> None:
        if name == "wifi2" and state == "profiling":
            links["wifi2"].cut_at(0.8)  # while the agent is measuring

    inventory = _inventory(root / "farm.yaml", entries, retries=0)
    with ResultsStore(root / "r.sqlite") as store:
        run = run_farm(load_inventory(inventory), store=store, bundles={"tiny": tiny_bundle_int8}, listener=listener)
        stored = {r.device: r for r in store.results_for_run(run.run_id)}
    outcomes = {o.device.name: o for o in run.outcomes}
    assert outcomes["wifi0"].status == outcomes["wifi1"].status == "ok"
    lost = outcomes["wifi2"]
    assert lost.status in ("failed", "unreachable") and links["wifi2"].cuts == 1
    assert "connection" in lost.error and "lost" in lost.error, lost.error
    assert stored["wifi2"].status == lost.status and stored["wifi2"].error == lost.error
    assert stored["wifi0"].record is not None and stored["wifi1"].record is not None


class MuteServer:
    """Accepts TCP connections and never sends a byte (no SSH banner): a hung device's port."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self._held.append(conn)

    def close(self) -> None:
        self._sock.close()
        for conn in self._held:
            conn.close()


def test_ssh_nightly_with_hung_devices_exits_and_names_them(tmp_path: Path, tiny_bundle_int8: Path) -> None:
    servers, entries = [], []
    (tmp_path / "silent").mkdir()
    silent = SilentSSHServer(tmp_path / "silent", "exit").__enter__()  # answers the command's request, then nothing
    mute = MuteServer()
    try:
        for i in range(2):
            server = SSHServer(tmp_path / "servers" / f"ok{i}").start()
            servers.append(server)
            server.write_target(tmp_path / f"ok{i}.yaml", f"ok{i}", tmp_path / "devices" / f"ok{i}", default_python(),
                                transport={"retries": 0, "command_timeout": 60})
            entries.append({"name": f"ok{i}", "target": f"ok{i}.yaml"})
        hung = {"silent-pi": (silent.port, silent.user, silent.client_key, silent.write_known_hosts()),
                "mute-pi": (mute.port, servers[0].user, servers[0].client_key, servers[0].known_hosts)}
        for name, (port, user, key, known_hosts) in hung.items():
            servers[0].write_target(tmp_path / f"{name}.yaml", name, tmp_path / "devices" / name, default_python(), transport={
                "port": port, "user": user, "key_file": str(key), "known_hosts": str(known_hosts),
                "retries": 0, "connect_timeout": COMMAND_TIMEOUT, "command_timeout": COMMAND_TIMEOUT})
            entries.append({"name": name, "target": f"{name}.yaml"})
        inventory = tmp_path / "farm.yaml"
        inventory.write_text(yaml.safe_dump({"name": "hung", "concurrency": 4, "timeout": 120, "retries": 1, "profile": "tiny", "devices": entries}))

        finished: list = []
        store = ResultsStore(tmp_path / "r.sqlite")
        job = threading.Thread(target=lambda: finished.append(run_nightly(inventory, store=store, bundles={"tiny": tiny_bundle_int8})), daemon=True)
        started = time.monotonic()
        job.start()
        job.join(300)
        assert not job.is_alive(), "the nightly job did not exit"
        assert finished, "the nightly job raised instead of recording the hung devices"
        result = finished[0]
        outcomes = {o.device.name: o for o in result.farm.outcomes}
        assert outcomes["ok0"].status == outcomes["ok1"].status == "ok"
        assert result.summary.exit_code == 2  # infrastructure failed; no regression
        for name in hung:
            outcome = outcomes[name]
            assert outcome.status in ("failed", "unreachable", "timeout"), (name, outcome.status)
            assert name in outcome.error and f"127.0.0.1:{hung[name][0]}" in outcome.error, outcome.error
            # each of its two attempts gave up within the timeout plus a few seconds (2 s between them)
            assert outcome.attempts == 2 and outcome.seconds < 2 * (COMMAND_TIMEOUT + GRACE) + 2.5, outcome.seconds
        assert "ran longer than 3 s" in outcomes["silent-pi"].error and "mkdir" in outcomes["silent-pi"].error
        assert "did not complete the SSH handshake within 3 s" in outcomes["mute-pi"].error
        stored = {r.device: r.status for r in store.results_for_run(result.farm.run_id)}
        assert stored["silent-pi"] == outcomes["silent-pi"].status and stored["mute-pi"] == outcomes["mute-pi"].status
        assert time.monotonic() - started < 300
        store.close()
    finally:
        silent.__exit__(None, None, None)
        mute.close()
        for server in servers:
            server.kill()


def test_ssh_farm_live_view_shows_upload_bytes_and_rate_over_a_slow_link(tmp_path: Path, tiny_bundle_int8: Path) -> None:
    """The runner passes deploy's steps to its listener, so the farm's live table shows a slow upload."""
    server = SSHServer(tmp_path / "server").start()
    try:
        with Link(server.port, rtt=0.02, rate=400_000) as link:  # 3.2 Mbit/s: 2 MB take ~5 s (~0.6 MB sit in socket buffers)
            data = target_through(link, server, "slow", tmp_path / "device", default_python(), profiling=PROFILING, transport={"retries": 0})
            (tmp_path / "slow.yaml").write_text(yaml.safe_dump(data))
            inventory = _inventory(tmp_path / "farm.yaml", [{"name": "slow", "target": "slow.yaml"}], retries=0)
            bundle = make_variant_bundle(tiny_bundle_int8, tmp_path / "bundles", "slow", payload_bytes=2_000_000)
            seen: list[tuple[str, str, str]] = []
            with ResultsStore(tmp_path / "r.sqlite") as store:
                run = run_farm(load_inventory(inventory), store=store, bundles={"tiny": bundle}, listener=lambda *event: seen.append(event))
    finally:
        server.kill()
    assert [o.status for o in run.outcomes] == ["ok"], [o.error for o in run.outcomes]
    uploads = [detail for name, state, detail in seen if state == "deploying" and detail.startswith("uploading ") and " at " in detail]
    assert len(uploads) >= 2, seen
    assert all(re.fullmatch(r"uploading [0-9.]+/[0-9.]+ [kM]?B at [0-9.]+ [kM]?B/s", d) for d in uploads), uploads
