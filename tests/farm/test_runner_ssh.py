"""The farm runner against four real sshd devices on loopback, the real agent and the real store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.errors import ConfigError
from pipeline.farm.inventory import load_inventory
from pipeline.farm.nightly import run_nightly
from pipeline.farm.runner import run_farm
from pipeline.farm.store import ResultsStore
from pipeline.lab.sshd import SSHServer, sshd_available
from pipeline.paths import PROJECT_ROOT

pytestmark = [pytest.mark.ssh, pytest.mark.skipif(not sshd_available(), reason="openssh-server is not installed")]

DEVICE_PYTHON = PROJECT_ROOT / ".venv-agent" / "bin" / "python"


@pytest.fixture
def farm(tmp_path: Path):
    """Four sshd devices, their target files and an inventory (profile 'tiny', retries 1)."""
    python = str(DEVICE_PYTHON) if DEVICE_PYTHON.exists() else sys.executable
    servers, entries = {}, []
    try:
        for i in range(4):
            name = f"dev{i}"
            server = SSHServer(tmp_path / "servers" / name).start()
            servers[name] = server
            server.write_target(tmp_path / f"{name}.yaml", name, tmp_path / "devices" / name, python,
                                transport={"retries": 0, "connect_timeout": 3})
            entries.append({"name": name, "target": f"{name}.yaml", "tags": ["lab", "odd" if i % 2 else "even"]})
        inventory = tmp_path / "farm.yaml"
        inventory.write_text(yaml.safe_dump({"name": "test", "concurrency": 4, "timeout": 120, "retries": 1, "profile": "tiny", "devices": entries}))
        yield inventory, servers
    finally:
        for server in servers.values():
            server.kill()


def test_farm_profiles_every_device_ssh(farm, tiny_bundle_int8: Path, tmp_path: Path) -> None:
    inventory, _ = farm
    events: list[tuple[str, str]] = []
    with ResultsStore(tmp_path / "r.sqlite") as store:
        run = run_farm(load_inventory(inventory), store=store, bundles={"tiny": tiny_bundle_int8}, listener=lambda d, s, _: events.append((d, s)))
        assert sorted(o.device.name for o in run.outcomes) == ["dev0", "dev1", "dev2", "dev3"]
        assert all(o.status == "ok" for o in run.outcomes), [o.error for o in run.outcomes]
        results = store.results_for_run(run.run_id)
        assert {r.bundle_id for r in results} == {tiny_bundle_int8.name}
        for r in results:
            assert len(store.get_samples(r.id)) == r.record.latency.count >= 5
            assert Path(r.record_path).is_file() and r.record.target == r.device
        assert store.get_run(run.run_id).status == "finished"
    assert {("dev0", "profiling"), ("dev0", "ok")} <= set(events)


def test_tags_select_devices_ssh(farm, tiny_bundle_int8: Path, tmp_path: Path) -> None:
    inventory, _ = farm
    with ResultsStore(tmp_path / "r.sqlite") as store:
        run = run_farm(load_inventory(inventory), tags=["odd"], store=store, bundles={"tiny": tiny_bundle_int8})
    assert sorted(o.device.name for o in run.outcomes) == ["dev1", "dev3"]


def test_sshd_stopped_mid_run_is_unreachable_others_finish_ssh(farm, tiny_bundle_int8: Path, tmp_path: Path) -> None:
    inventory, servers = farm

    def listener(device: str, state: str, detail: str) -> None:
        if device == "dev2" and state == "profiling" and servers["dev2"].running:
            servers["dev2"].kill()  # pull the plug while the device is being measured

    with ResultsStore(tmp_path / "r.sqlite") as store:
        run = run_farm(load_inventory(inventory), store=store, bundles={"tiny": tiny_bundle_int8}, listener=listener)
        status = {o.device.name: o.status for o in run.outcomes}
        assert status == {"dev0": "ok", "dev1": "ok", "dev2": "unreachable", "dev3": "ok"}
        dead = next(o for o in run.outcomes if o.device.name == "dev2")
        assert dead.attempts == 2 and "127.0.0.1" in dead.error
        stored = {r.device: r.status for r in store.results_for_run(run.run_id)}
        assert stored["dev2"] == "unreachable"


def test_nightly_exit_codes_and_reports_ssh(farm, tiny_bundle_int8: Path, tiny_bundle_float32: Path, tmp_path: Path) -> None:
    inventory, servers = farm
    store = ResultsStore(tmp_path / "r.sqlite")

    first = run_nightly(inventory, store=store, bundles={"tiny": tiny_bundle_int8})
    assert {v.status for v in first.verdicts} == {"no-baseline"} and first.summary.exit_code == 0
    assert first.reports["junit"].is_file() and "<testcase" in first.reports["junit"].read_text()
    store.accept_run_baselines(first.farm.run_id)
    servers["dev3"].kill()
    second = run_nightly(inventory, store=store, bundles={"tiny": tiny_bundle_int8})
    status = {v.device: v.status for v in second.verdicts}
    assert status["dev3"] == "unreachable"
    assert all(status[d] in ("pass", "improvement", "regression") for d in ("dev0", "dev1", "dev2"))
    if "regression" not in status.values():
        assert second.summary.exit_code == 2
    html = second.reports["html"].read_text()
    assert "data:image/png;base64," in html and "dev3" in html
    store.close()


def test_malformed_inventory_is_refused_before_any_deploy(tmp_path: Path) -> None:
    cases = {
        "unknown target": ({"devices": [{"name": "a", "target": "no-such-target"}]}, "no-such-target"),
        "duplicate": ({"devices": [{"name": "a", "target": "local"}, {"name": "a", "target": "local"}]}, "appears twice"),
        "bad tag": ({"devices": [{"name": "a", "target": "local", "tags": ["Bad Tag!"]}]}, "Bad Tag!"),
        "typo": ({"devices": [{"name": "a", "target": "local"}], "concurency": 2}, "concurency"),
    }
    for label, (data, needle) in cases.items():
        path = tmp_path / f"{label.replace(' ', '-')}.yaml"
        path.write_text(yaml.safe_dump(data))
        with pytest.raises(ConfigError) as err:
            load_inventory(path)
        assert needle in str(err.value) and str(path) in str(err.value), label


def test_unknown_tag_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "farm.yaml"
    path.write_text(yaml.safe_dump({"devices": [{"name": "a", "target": "local", "tags": ["lab"]}]}))
    with pytest.raises(ConfigError, match="no device has tag or name rpi9"):
        load_inventory(path).select(["rpi9"])


def test_cli_malformed_inventory_one_paragraph(tmp_path: Path) -> None:
    path = tmp_path / "farm.yaml"
    path.write_text(yaml.safe_dump({"devices": [{"name": "a", "target": "local"}, {"name": "a", "target": "local"}]}))
    env = dict(os.environ, EDGESHIP_RESULTS=str(tmp_path / "results"))
    proc = subprocess.run([sys.executable, "-m", "pipeline", "nightly", "-i", str(path)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "appears twice" in proc.stderr
    assert not (tmp_path / "results" / "results.sqlite").exists(), "nothing may be recorded for a refused inventory"


KILL_SCRIPT = """
import sys
from pathlib import Path
from pipeline.farm.inventory import load_inventory
from pipeline.farm.runner import run_farm
from pipeline.farm.store import ResultsStore
store = ResultsStore(Path(sys.argv[2]))
run_farm(load_inventory(sys.argv[1]), store=store, bundles={"tiny": Path(sys.argv[3])})
"""


def test_killed_farm_run_leaves_store_usable_ssh(farm, tiny_bundle_int8: Path, tmp_path: Path) -> None:
    inventory, _ = farm
    db = tmp_path / "r.sqlite"
    data = yaml.safe_load(inventory.read_text())
    data["concurrency"] = 1  # devices finish one by one, so the kill lands between results
    inventory.write_text(yaml.safe_dump(data))
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(inventory), str(db), str(tiny_bundle_int8)], cwd=PROJECT_ROOT)
    deadline = time.monotonic() + 120
    recorded = 0
    while time.monotonic() < deadline and recorded < 1 and proc.poll() is None:
        time.sleep(0.2)
        if db.exists():
            with ResultsStore(db) as peek:
                recorded = sum(len(peek.results_for_run(r.id)) for r in peek.list_runs())
    assert proc.poll() is None, "the farm run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    with ResultsStore(db) as store:
        assert store.integrity_check() == "ok"
        killed = store.list_runs()[0]
        kept = store.results_for_run(killed.id)
        assert 1 <= len(kept) < 4 and all(len(store.get_samples(r.id)) > 0 for r in kept)
        again = run_farm(load_inventory(inventory), store=store, bundles={"tiny": tiny_bundle_int8})
        assert all(o.status == "ok" for o in again.outcomes)
        assert store.get_run(killed.id).status == "aborted"


def test_example_inventory_loads() -> None:
    loaded = load_inventory(PROJECT_ROOT / "targets" / "farm.yaml")
    assert {d.device_class for d in loaded.devices} >= {"rpi4", "android-termux"}
    assert [d.name for d in loaded.select(["rpi4"])] == ["pi4-bench-01", "pi4-bench-02"]
