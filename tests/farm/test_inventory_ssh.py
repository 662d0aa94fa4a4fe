"""One shared target file, two real loopback sshd devices told apart only by the inventory."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from pipeline.farm.inventory import load_inventory
from pipeline.farm.runner import run_farm
from pipeline.farm.store import ResultsStore
from pipeline.lab.sshd import SSHServer, sshd_available
from pipeline.paths import PROJECT_ROOT

pytestmark = [pytest.mark.ssh, pytest.mark.skipif(not sshd_available(), reason="openssh-server is not installed")]

DEVICE_PYTHON = PROJECT_ROOT / ".venv-agent" / "bin" / "python"


def test_one_target_file_two_devices_by_inventory_overrides_ssh(tiny_bundle_int8: Path, tmp_path: Path) -> None:
    python = str(DEVICE_PYTHON) if DEVICE_PYTHON.exists() else sys.executable
    servers = [SSHServer(tmp_path / "servers" / name).start() for name in ("a", "b")]
    try:
        # The device class: points nowhere usable on its own, so only the inventory can make it work.
        shared = servers[0].target_dict("loopback-class", tmp_path / "nowhere", "python3-missing", transport={"retries": 0, "connect_timeout": 3})
        shared["transport"].update(host="device.invalid", port=1, known_hosts=str(tmp_path / "empty_known_hosts"))
        del shared["transport"]["key_file"]
        (tmp_path / "loopback-class.yaml").write_text(yaml.safe_dump(shared))
        devices = [
            {
                "name": f"bench-{i}", "target": "loopback-class.yaml", "groups": ["loop"], "tags": ["loop"],
                "host": "127.0.0.1", "port": server.port, "key_file": str(server.client_key),
                "known_hosts": str(server.known_hosts), "remote_dir": str(tmp_path / "devices" / f"bench-{i}"),
            }
            for i, server in enumerate(servers)
        ]
        inventory = {
            "name": "one-class", "concurrency": 2, "timeout": 120, "retries": 0, "profile": "tiny",
            "defaults": {"python": "python3-missing-too", "threads": 1},
            "groups": {"loop": {"python": python}},
            "devices": devices,
        }
        path = tmp_path / "farm.yaml"
        path.write_text(yaml.safe_dump(inventory))
        loaded = load_inventory(path)
        assert {d.device_class for d in loaded.devices} == {"loopback-class"}
        assert loaded.devices[0].sources["python"] == "group loop" and loaded.devices[0].sources["threads"] == "defaults"

        with ResultsStore(tmp_path / "r.sqlite") as store:
            run = run_farm(loaded, store=store, bundles={"tiny": tiny_bundle_int8})
            assert {o.device.name: o.status for o in run.outcomes} == {"bench-0": "ok", "bench-1": "ok"}, [o.error for o in run.outcomes]
            results = store.results_for_run(run.run_id)
            assert sorted((r.device, r.device_class) for r in results) == [("bench-0", "loopback-class"), ("bench-1", "loopback-class")]
            for r in results:
                assert r.record.target == r.device and Path(r.record_path).is_file()
                assert r.device in Path(r.record_path).parts  # filed under the device's own name
                assert store.get_device(r.device).device_class == "loopback-class"
        for i in range(2):  # each device deployed into its own remote_dir, none into the class's
            assert (tmp_path / "devices" / f"bench-{i}" / "current").exists()
        assert not (tmp_path / "nowhere").exists()
    finally:
        for server in servers:
            server.kill()
