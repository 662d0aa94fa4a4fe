"""The farm runner through a real labgrid lab: a real labgrid-coordinator and labgrid-exporter on
loopback, whose NetworkService resources point at real sshd devices; the real agent, the real store.

The devices' target file points at an address that does not exist: only the place's NetworkService
(address, user, port) can make a run work.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.errors import ConfigError
from pipeline.farm.inventory import load_inventory
from pipeline.farm.nightly import run_nightly
from pipeline.farm.runner import run_farm
from pipeline.farm.store import ResultsStore
from pipeline.fsutil import atomic_write_text
from pipeline.lab.labgrid_lab import LabgridLab, labgrid_available, network_service
from pipeline.lab.sshd import SSHServer, free_port, sshd_available
from pipeline.paths import PROJECT_ROOT

pytestmark = [
    pytest.mark.ssh,
    pytest.mark.skipif(not sshd_available(), reason="openssh-server is not installed"),
    pytest.mark.skipif(not labgrid_available(), reason="labgrid is not installed (pip install 'edgeship[labgrid]')"),
]

DEVICE_PYTHON = PROJECT_ROOT / ".venv-agent" / "bin" / "python"
OTHER = ("elsewhere", "alice")  # the colleague who holds a place


class Rack:
    """Two sshd devices exported by one labgrid exporter as places pi-0 and pi-1 (tags board=loop)."""

    def __init__(self, root: Path):
        self.root = root
        self.servers: list[SSHServer] = []
        self.lab = LabgridLab(root / "labgrid")
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        root = self.root
        self.servers.extend(SSHServer(root / f"sshd{i}").start() for i in range(2))
        # one client key and one known_hosts for the whole rack: a tag filter may land on either
        key = Path(f"{self.servers[0].client_key}.pub").read_text()
        atomic_write_text(self.servers[1].authorized_keys, key)
        self.known_hosts = root / "rack_known_hosts"
        atomic_write_text(self.known_hosts, "".join(s.known_hosts.read_text() for s in self.servers))
        self.lab.start()
        self.lab.start_exporter("rack1", {f"dut{i}": network_service(s) for i, s in enumerate(self.servers)})
        for i in range(2):
            self.lab.add_place(f"pi-{i}", "rack1", f"dut{i}", {"board": "loop", "slot": f"s{i}"})
        python = str(DEVICE_PYTHON) if DEVICE_PYTHON.exists() else sys.executable
        # the device class: everything but the address, which is wrong on purpose
        self.target = self.servers[0].write_target(
            root / "loopdev.yaml", "loopdev", root / "unused", python,
            transport={"host": "no-such-device.invalid", "port": free_port(), "user": "nobody-here",
                       "known_hosts": str(self.known_hosts), "retries": 0, "connect_timeout": 3},
        )

    def inventory(self, devices: list[dict[str, Any]], **extra: Any) -> Path:
        for device in devices:
            device.setdefault("target", "loopdev.yaml")
            device.setdefault("remote_dir", str(self.root / "devices" / device["name"]))
        data = {"name": "lg", "concurrency": 2, "timeout": 120, "retries": 0, "profile": "tiny",
                "labgrid": {"coordinator": self.lab.address, "wait": 2, "call_timeout": 20}, "devices": devices}
        data.update(extra)
        path = self.root / "farm.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    def place(self, name: str):
        return self.lab.client().places()[name]

    def reservations(self) -> str:
        return self.lab.client().run("reservations")

    def close(self) -> None:
        self.lab.stop()
        for server in self.servers:
            server.kill()


@pytest.fixture
def rack(tmp_path: Path):
    rack = Rack(tmp_path)
    try:
        yield rack
    finally:
        rack.close()


def test_labgrid_named_place_is_profiled_and_released_ssh(rack: Rack, tiny_bundle_int8: Path, tmp_path: Path) -> None:
    inventory = rack.inventory([{"name": "lg0", "labgrid": {"place": "pi-1"}}])
    during: dict[str, Any] = {}
    events: list[tuple[str, str, str]] = []

    def listener(device: str, state: str, detail: str) -> None:
        events.append((device, state, detail))
        if state == "deploying":
            during["place"] = rack.place("pi-1")

    with ResultsStore(tmp_path / "r.sqlite") as store:
        run = run_farm(load_inventory(inventory), store=store, bundles={"tiny": tiny_bundle_int8}, listener=listener)
        [outcome] = run.outcomes
        assert outcome.status == "ok", outcome.error
        assert store.results_for_run(run.run_id)[0].record.target == "lg0"
    assert during["place"].acquired and during["place"].reservation, "the place was acquired while deploying"
    connecting = [d for _, s, d in events if s == "connecting"]
    assert connecting == [f"{rack.servers[1].user}@127.0.0.1:{rack.servers[1].port} (labgrid place pi-1)"]
    assert (tmp_path / "devices" / "lg0" / "current").exists()
    after = rack.place("pi-1")
    assert after.acquired is None and after.reservation is None
    assert "Reservation" not in rack.reservations()


def test_labgrid_tag_filter_reserves_any_matching_place_ssh(rack: Rack, tiny_bundle_int8: Path, tmp_path: Path) -> None:
    inventory = rack.inventory([
        {"name": "lg-a", "labgrid": {"tags": {"board": "loop"}}},
        {"name": "lg-b", "labgrid": {"tags": {"board": "loop"}}},
    ])
    places: list[str] = []
    with ResultsStore(tmp_path / "r.sqlite") as store:
        run = run_farm(load_inventory(inventory), store=store, bundles={"tiny": tiny_bundle_int8},
                       listener=lambda d, s, detail: places.append(detail.rsplit(" ", 1)[-1]) if s == "connecting" else None)
    assert {o.status for o in run.outcomes} == {"ok"}, [o.error for o in run.outcomes]
    assert sorted(places) == ["pi-0)", "pi-1)"], "each device got a place of its own"
    assert all(rack.place(p).acquired is None for p in ("pi-0", "pi-1"))


def test_labgrid_place_held_by_another_client_is_busy_not_infrastructure_ssh(rack: Rack, tiny_bundle_int8: Path, tmp_path: Path) -> None:
    rack.lab.client(identity=OTHER).acquire_place("pi-0")
    inventory = rack.inventory([
        {"name": "lg-held", "labgrid": {"place": "pi-0", "wait": 1.5}},
        {"name": "lg-free", "labgrid": {"place": "pi-1"}},
    ])
    states: list[tuple[str, str]] = []
    store = ResultsStore(tmp_path / "r.sqlite")
    night = run_nightly(inventory, store=store, bundles={"tiny": tiny_bundle_int8}, listener=lambda d, s, _: states.append((d, s)))
    outcome = {o.device.name: o for o in night.farm.outcomes}
    assert outcome["lg-held"].status == "busy" and outcome["lg-held"].attempts == 1
    assert "elsewhere/alice" in outcome["lg-held"].error and "1.5 s" in outcome["lg-held"].error
    assert outcome["lg-free"].status == "ok", outcome["lg-free"].error
    assert ("lg-held", "waiting") in states
    assert {r.device: r.status for r in store.results_for_run(night.farm.run_id)} == {"lg-held": "busy", "lg-free": "ok"}
    verdicts = {v.device: v for v in night.verdicts}
    assert verdicts["lg-held"].status == "busy" and "labgrid place busy" in verdicts["lg-held"].reasons[0]
    assert night.summary.exit_code == 0, "a busy place is not an infrastructure failure"
    assert "1 busy" in night.summary.headline
    assert 'type="busy"' not in night.reports["junit"].read_text() and "<skipped" in night.reports["junit"].read_text()
    assert rack.place("pi-0").acquired == "elsewhere/alice", "the colleague's place is left alone"
    assert "Reservation" not in rack.reservations(), "the waiting reservation was cancelled"
    store.close()


def test_labgrid_place_whose_exporter_is_gone_is_unreachable_ssh(rack: Rack, tiny_bundle_int8: Path, tmp_path: Path) -> None:
    rack.lab.stop_exporter("rack1")
    inventory = rack.inventory([{"name": "lg0", "labgrid": {"place": "pi-0"}}])
    with ResultsStore(tmp_path / "r.sqlite") as store:
        [outcome] = run_farm(load_inventory(inventory), store=store, bundles={"tiny": tiny_bundle_int8}).outcomes
    assert outcome.status == "unreachable"
    assert "labgrid place 'pi-0' has no resource online (is its exporter running?)" in outcome.error
    assert "rack1/dut0" in outcome.error and "Traceback" not in outcome.error
    assert rack.place("pi-0").acquired is None and "Reservation" not in rack.reservations()


def test_labgrid_deploy_failure_still_releases_the_place_ssh(rack: Rack, tiny_bundle_int8: Path, tmp_path: Path) -> None:
    inventory = rack.inventory([{"name": "lg0", "labgrid": {"place": "pi-0"}, "python": "/no/such/python3"}])
    with ResultsStore(tmp_path / "r.sqlite") as store:
        [outcome] = run_farm(load_inventory(inventory), store=store, bundles={"tiny": tiny_bundle_int8}).outcomes
    assert outcome.status == "failed" and "/no/such/python3" in outcome.error
    assert rack.place("pi-0").acquired is None and "Reservation" not in rack.reservations()


def test_labgrid_place_that_does_not_exist_is_refused_before_any_deploy_ssh(rack: Rack, tiny_bundle_int8: Path, tmp_path: Path) -> None:
    inventory = rack.inventory([
        {"name": "lg-ok", "labgrid": {"place": "pi-0"}},
        {"name": "lg-typo", "labgrid": {"place": "pi-7"}},
        {"name": "lg-tags", "labgrid": {"tags": {"board": "loop"}}},
    ])
    with ResultsStore(tmp_path / "r.sqlite") as store:
        with pytest.raises(ConfigError) as err:
            run_farm(load_inventory(inventory), store=store, bundles={"tiny": tiny_bundle_int8})
        assert store.list_runs() == [], "nothing is recorded for a refused inventory"
    message = str(err.value)
    assert "device 'lg-typo'" in message and "no place 'pi-7'" in message and "pi-0, pi-1" in message
    assert str(inventory) in message
    assert not (tmp_path / "devices" / "lg-ok").exists(), "no device was touched"
    inventory = rack.inventory([{"name": "lg-tags", "labgrid": {"tags": {"board": "rpi9"}}}])
    with pytest.raises(ConfigError, match=r"device 'lg-tags'.*no place with tags board=rpi9"):
        run_farm(load_inventory(inventory), store=ResultsStore(tmp_path / "r2.sqlite"), bundles={"tiny": tiny_bundle_int8})


def test_labgrid_cli_nightly_with_a_missing_place_is_one_paragraph_ssh(rack: Rack, tiny_bundle_int8: Path, tmp_path: Path) -> None:
    inventory = rack.inventory([{"name": "lg-typo", "labgrid": {"place": "pi-7"}}])
    env = dict(os.environ, EDGESHIP_RESULTS=str(tmp_path / "results"))
    proc = subprocess.run([sys.executable, "-m", "pipeline", "nightly", "-i", str(inventory), "--bundle", str(tiny_bundle_int8)],
                          capture_output=True, text=True, env=env, timeout=300, cwd=PROJECT_ROOT)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "device 'lg-typo'" in proc.stderr and "no place 'pi-7'" in proc.stderr


def test_labgrid_unreachable_coordinator_makes_its_devices_unreachable_others_run_ssh(rack: Rack, tiny_bundle_int8: Path, tmp_path: Path) -> None:
    direct = rack.servers[0]
    inventory = rack.inventory(
        [{"name": "lg0", "labgrid": {"place": "pi-0"}},
         {"name": "plain", "host": "127.0.0.1", "port": direct.port, "user": direct.user}],
        labgrid={"coordinator": f"127.0.0.1:{free_port()}", "wait": 1},
    )
    with ResultsStore(tmp_path / "r.sqlite") as store:
        run = run_nightly(inventory, store=store, bundles={"tiny": tiny_bundle_int8})
    outcome = {o.device.name: o for o in run.farm.outcomes}
    assert outcome["plain"].status == "ok", outcome["plain"].error
    assert outcome["lg0"].status == "unreachable"
    assert "labgrid coordinator 127.0.0.1:" in outcome["lg0"].error and "is unreachable" in outcome["lg0"].error
    assert {v.device: v.status for v in run.verdicts}["lg0"] == "unreachable" and run.summary.exit_code == 2


CTRL_C_SCRIPT = """
import sys
from pathlib import Path
from pipeline.farm.inventory import load_inventory
from pipeline.farm.runner import run_farm
from pipeline.farm.store import ResultsStore

def listener(device, state, detail):
    print(device, state, flush=True)

run_farm(load_inventory(sys.argv[1]), store=ResultsStore(Path(sys.argv[2])), bundles={"tiny": Path(sys.argv[3])}, listener=listener)
"""


def _interrupt_when(rack: Rack, inventory: Path, tmp_path: Path, bundle: Path, state: str) -> subprocess.CompletedProcess:
    """Run the farm in a child, Ctrl-C it (SIGINT) once a device reports ``state``; its output."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CTRL_C_SCRIPT, str(inventory), str(tmp_path / "r.sqlite"), str(bundle)],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.split()[1:2] == [state]:
            break
    else:
        raise AssertionError(f"the run never reached {state}: {seen} {proc.stderr.read() if proc.stderr else ''}")
    os.kill(proc.pid, signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"the run did not end after Ctrl-C ({state}): {proc.communicate()}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, "".join(seen) + out, err)


def test_labgrid_ctrl_c_while_deploying_releases_the_place_ssh(rack: Rack, tiny_bundle_int8: Path, tmp_path: Path) -> None:
    inventory = rack.inventory([{"name": "lg0", "labgrid": {"place": "pi-0"}}])
    done = _interrupt_when(rack, inventory, tmp_path, tiny_bundle_int8, "deploying")
    assert done.returncode != 0 and "KeyboardInterrupt" in done.stderr
    assert "lg0 profiling" not in done.stdout, "the place was given back, so the device is not profiled on it"
    assert rack.place("pi-0").acquired is None and "Reservation" not in rack.reservations()


def test_labgrid_ctrl_c_while_waiting_cancels_the_reservation_at_once_ssh(rack: Rack, tiny_bundle_int8: Path, tmp_path: Path) -> None:
    rack.lab.client(identity=OTHER).acquire_place("pi-0")
    inventory = rack.inventory([{"name": "lg0", "labgrid": {"place": "pi-0", "wait": 600}}])
    done = _interrupt_when(rack, inventory, tmp_path, tiny_bundle_int8, "waiting")  # fails unless it ends well before 600 s
    assert done.returncode != 0 and "KeyboardInterrupt" in done.stderr
    assert "Reservation" not in rack.reservations()
    assert rack.place("pi-0").acquired == "elsewhere/alice"
