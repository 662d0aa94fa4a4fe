"""Labgrid in the farm without SSH devices: refusals before any device is touched, the lease against
a real labgrid-coordinator and exporter on loopback, a silent coordinator, and 'busy' downstream."""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.errors import ConfigError
from pipeline.farm.inventory import load_inventory
from pipeline.farm.labgrid import (
    CoordinatorUnreachable,
    LabgridClient,
    LabgridError,
    Lease,
    LeaseBook,
    PlaceMissing,
    prepare,
)
from pipeline.farm.labgrid_client import parse_places
from pipeline.farm.regression import compare, exit_code, summarize
from pipeline.farm.rows import Result
from pipeline.farm.runner import run_farm
from pipeline.farm.store import ResultsStore
from pipeline.lab.labgrid_lab import LabgridLab, labgrid_available
from pipeline.lab.sshd import free_port
from pipeline.reports.junit import junit_xml
from pipeline.reports.markdown import STATUS_LABELS

needs_labgrid = pytest.mark.skipif(not labgrid_available(), reason="labgrid is not installed (pip install 'edgeship[labgrid]')")

SSH_TARGET = {
    "name": "board", "arch": "aarch64", "python": "python3", "remote_dir": "/tmp/edgeship-never",
    "transport": {"type": "ssh", "host": "10.255.0.1", "user": "ci", "connect_timeout": 1, "retries": 0},
}


def _inventory(tmp_path: Path, devices: list[dict[str, Any]], target: dict[str, Any] = SSH_TARGET, **extra: Any) -> Path:
    (tmp_path / "board.yaml").write_text(yaml.safe_dump(target))
    for device in devices:
        device.setdefault("target", "board.yaml")
    path = tmp_path / "farm.yaml"
    path.write_text(yaml.safe_dump({"profile": "tiny", "retries": 0, "devices": devices, **extra}))
    return path


# -- refused before any device is touched ---------------------------------------------------------


def test_labgrid_inventory_without_the_extra_names_it_and_touches_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_bundle_int8: Path) -> None:
    monkeypatch.setitem(sys.modules, "labgrid", None)  # `import labgrid` raises ImportError, as without the extra
    inventory = _inventory(tmp_path, [{"name": "pi4-07", "labgrid": {"place": "pi4-07"}}, {"name": "plain"}],
                           labgrid={"coordinator": "127.0.0.1:1"})
    with ResultsStore(tmp_path / "r.sqlite") as store:
        with pytest.raises(ConfigError) as err:
            run_farm(load_inventory(inventory), store=store, bundles={"tiny": tiny_bundle_int8})
        assert store.list_runs() == []
    message = str(err.value)
    assert "pip install 'edgeship[labgrid]'" in message and "pi4-07" in message and str(inventory) in message
    assert "\n" not in message
    # the same inventory without its labgrid device does not need the extra
    assert prepare(inventory, None, [d for d in load_inventory(inventory).devices if d.labgrid is None]) is None


@needs_labgrid
def test_labgrid_without_a_coordinator_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LG_COORDINATOR", raising=False)
    loaded = load_inventory(_inventory(tmp_path, [{"name": "pi4-07", "labgrid": {"place": "pi4-07"}}]))
    with pytest.raises(ConfigError, match=r"device pi4-07 names a labgrid place, but no coordinator is given.*LG_COORDINATOR"):
        prepare(loaded.path, loaded.inventory.labgrid, loaded.devices)


@needs_labgrid
def test_labgrid_coordinator_comes_from_lg_coordinator_when_the_inventory_names_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    address = f"127.0.0.1:{free_port()}"  # nobody listens there
    monkeypatch.setenv("LG_COORDINATOR", address)
    loaded = load_inventory(_inventory(tmp_path, [{"name": "pi4-07", "labgrid": {"place": "pi4-07"}}]))
    labgrid = prepare(loaded.path, loaded.inventory.labgrid, loaded.devices)
    assert labgrid is not None and labgrid.client.coordinator == address
    assert labgrid.down is not None and f"labgrid coordinator {address} is unreachable" in labgrid.down


@needs_labgrid
def test_labgrid_device_on_a_local_target_is_refused(tmp_path: Path) -> None:
    loaded = load_inventory(_inventory(tmp_path, [{"name": "here", "target": "local", "labgrid": {"place": "x1"}}],
                                       labgrid={"coordinator": "127.0.0.1:1"}))
    with pytest.raises(ConfigError, match=r"device 'here' names a labgrid place, but its target .* uses the local transport"):
        prepare(loaded.path, loaded.inventory.labgrid, loaded.devices)


def test_labgrid_entry_is_validated_with_the_inventory(tmp_path: Path) -> None:
    bad = {
        "both": ({"place": "a", "tags": {"board": "x"}}, "not both"),
        "tag key": ({"tags": {"Board": "x"}}, "tag key 'Board'"),
        "tag value": ({"tags": {"board": "a,b"}}, "tag value 'a,b'"),
        "typo": ({"place": "a", "wiat": 3}, "wiat"),
    }
    for label, (entry, needle) in bad.items():
        path = _inventory(tmp_path, [{"name": "pi", "labgrid": entry}])
        with pytest.raises(ConfigError) as err:
            load_inventory(path)
        assert needle in str(err.value) and str(path) in str(err.value), label


# -- the client against a coordinator that never answers -----------------------------------------


@needs_labgrid
def test_labgrid_silent_coordinator_is_timed_out() -> None:
    with socket.socket() as listener:  # accepts connections (the kernel does), never says a word
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        address = "127.0.0.1:%d" % listener.getsockname()[1]
        with pytest.raises(CoordinatorUnreachable, match=rf"labgrid coordinator {address} did not answer .*places.* within 2 s"):
            LabgridClient(address, call_timeout=2).places()


def test_parse_places_reads_tags_holder_and_reservation() -> None:
    text = (
        "Place 'pi-0':\n  tags: board=rpi4, rack=a\n  matches:\n    rack1/dut0/*\n  acquired: lab/alice\n"
        "  acquired resources:\n    rack1/dut0/NetworkService/NetworkService\n  created: 2025-01-01 00:00:00\n"
        "  reservation: ABC123\n"
        "Place 'pi-1':\n  matches:\n  acquired: None\n  acquired resources:\n"
    )
    places = parse_places(text)
    assert places["pi-0"].tags == {"board": "rpi4", "rack": "a"} and places["pi-0"].matches == ("rack1/dut0/*",)
    assert places["pi-0"].acquired == "lab/alice" and places["pi-0"].reservation == "ABC123"
    assert places["pi-1"].acquired is None and places["pi-1"].tags == {} and places["pi-1"].has_tags({})


# -- leases against a real coordinator and exporter ----------------------------------------------


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    if not labgrid_available():
        pytest.skip("labgrid is not installed")
    with LabgridLab(tmp_path_factory.mktemp("labgrid")) as lab:
        lab.start_exporter("rack", {
            "dut0": {"NetworkService": {"address": "192.0.2.10", "username": "ci", "port": 2222}},
            "dut1": {"NetworkService": {"address": "192.0.2.11", "username": "pi"}},
        })
        yield lab


def test_labgrid_lease_reads_the_network_service_and_gives_the_place_back(lab: LabgridLab) -> None:
    lab.add_place("lease-a", "rack", "dut0")
    lab.add_place("lease-b", "rack", "dut1")
    client = lab.client()
    first = Lease(client, "dev-a", {"name": "lease-a"})
    endpoint = first.take(0)
    assert (endpoint.host, endpoint.user, endpoint.port) == ("192.0.2.10", "ci", 2222)
    assert client.places()["lease-a"].acquired is not None
    second = Lease(client, "dev-b", {"name": "lease-b"})
    assert second.take(0).port is None  # no port in the NetworkService: the target's stays
    for lease in (first, second, first):  # ending twice is harmless
        lease.end()
    places = client.places()
    assert places["lease-a"].acquired is None and places["lease-b"].acquired is None
    assert "lease-" not in client.run("reservations")


def test_labgrid_place_deleted_after_the_check_is_missing_not_busy(lab: LabgridLab) -> None:
    lab.add_place("lease-gone", "rack", "dut0")
    client = lab.client()
    client.run("-p", "lease-gone", "delete")
    lease = Lease(client, "dev", {"name": "lease-gone"})
    with pytest.raises(PlaceMissing, match=r"has no place 'lease-gone'"):
        lease.take(30)
    lease.end()


def test_labgrid_place_without_a_network_service_is_an_error(lab: LabgridLab) -> None:
    lab.client().create_place("lease-empty", tags={"kind": "empty"})
    lease = Lease(lab.client(), "dev", {"kind": "empty"})
    try:
        with pytest.raises(LabgridError, match=r"place lease-empty has no NetworkService resource"):
            lease.take(0)
    finally:
        lease.end()
    assert lab.client().places()["lease-empty"].acquired is None


def test_labgrid_closing_the_book_ends_a_waiting_lease_at_once(lab: LabgridLab) -> None:
    lab.add_place("lease-held", "rack", "dut1", {"kind": "held"})
    lab.client(identity=("elsewhere", "alice")).acquire_place("lease-held")
    book, lease = LeaseBook(), Lease(lab.client(), "dev", {"kind": "held"})
    book.add(lease)
    failure: list[BaseException] = []

    def take() -> None:
        try:
            lease.take(600)
        except LabgridError as exc:
            failure.append(exc)

    worker = threading.Thread(target=take)
    worker.start()
    deadline = time.monotonic() + 30
    while lease.token is None and time.monotonic() < deadline:
        time.sleep(0.05)
    book.close()  # what the runner does on Ctrl-C
    worker.join(timeout=60)
    assert not worker.is_alive(), "the lease kept waiting after the run gave it up"
    assert failure, "take() must fail once its reservation is cancelled"
    assert lease.token not in lab.client().run("reservations")
    with pytest.raises(LabgridError, match="the run is ending"):
        book.add(Lease(lab.client(), "late", {"kind": "held"}))


# -- 'busy' downstream ---------------------------------------------------------------------------


def _result(status: str, error: str | None = None) -> Result:
    return Result(1, 1, "pi4-07", "rpi4", None, "default", status, error, None, None, None, None, None, None, None, False, False, "now")


def test_busy_is_counted_and_reported_but_not_an_infrastructure_failure() -> None:
    busy = compare(_result("busy", "labgrid place 'pi4-07' stayed held (held: pi4-07 by lab/alice)"), [], None, [])
    assert busy.status == "busy" and "labgrid place busy" in busy.reasons[0] and "lab/alice" in busy.reasons[0]
    no_baseline = compare(_result("ok"), [], None, [])
    assert exit_code([busy, no_baseline]) == 0
    assert exit_code([busy, compare(_result("unreachable", "down"), [], None, [])]) == 2
    summary = summarize([busy, no_baseline])
    assert summary.counts["busy"] == 1 and "1 busy" in summary.headline
    xml = junit_xml([busy])
    assert 'skipped="1"' in xml and 'errors="0"' in xml and "<skipped" in xml
    assert STATUS_LABELS["busy"].endswith("busy")
