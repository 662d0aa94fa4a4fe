"""The loopback labgrid lab: a real coordinator and exporter, places made with labgrid-client, and stop."""

from __future__ import annotations

import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

import pipeline.lab.labgrid_lab as labgrid_lab
from pipeline.lab.labgrid_lab import LabgridLab, labgrid_available, network_service
from pipeline.lab.sshd import SSHServer, sshd_available
from pipeline.lab.sshd import free_port as sshd_free_port  # labgrid_lab's own name is monkeypatched

pytestmark = pytest.mark.skipif(not labgrid_available(), reason="labgrid is not installed (pip install 'edgeship[labgrid]')")


def test_labgrid_lab_exports_places_and_stops(tmp_path: Path) -> None:
    lab = LabgridLab(tmp_path / "lab").start()
    try:
        lab.start_exporter("rack", {"dut0": {"NetworkService": {"address": "192.0.2.1", "username": "ci", "port": 2200}}})
        assert "rack/dut0/NetworkService" in lab.client().resources()
        lab.add_place("p0", "rack", "dut0", {"board": "rpi4"})
        place = lab.client().places()["p0"]
        assert place.tags == {"board": "rpi4"} and place.matches == ("rack/dut0/*",) and place.acquired is None
        lab.client(identity=("elsewhere", "alice")).acquire_place("p0")
        assert lab.client().places()["p0"].acquired == "elsewhere/alice"
        lab.client(identity=("elsewhere", "alice")).release("p0")
        lab.stop_exporter("rack")
        assert "rack/" not in lab.client().resources()
        coordinator = lab.coordinator
    finally:
        lab.stop()
    assert coordinator is not None and coordinator.poll() is not None and lab.exporters == {}
    with LabgridLab(tmp_path / "lab") as again:  # the same directory takes a new lab (new port)
        assert isinstance(again.client().places(), dict)


def test_labgrid_lab_exporter_that_cannot_start_names_its_log(tmp_path: Path) -> None:
    with LabgridLab(tmp_path / "lab") as lab:
        with pytest.raises(Exception) as err:
            lab.start_exporter("bad", {"dut0": {"NetworkService": {"username": "ci"}}}, timeout=20)  # no address
        assert "labgrid-exporter bad" in str(err.value) and "exporter-bad.log" in str(err.value)


@pytest.mark.ssh
@pytest.mark.skipif(not sshd_available(), reason="openssh-server is not installed")
def test_labgrid_network_service_points_at_a_loopback_sshd_ssh(tmp_path: Path) -> None:
    server = SSHServer(tmp_path / "sshd")
    assert network_service(server) == {"NetworkService": {"address": "127.0.0.1", "username": server.user, "port": server.port}}


@contextmanager
def _listening_socket() -> Iterator[int]:
    """A port someone else listens on, for as long as the block runs."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        yield squatter.getsockname()[1]


def test_labgrid_lab_retries_when_its_port_is_taken_before_the_coordinator_binds_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with _listening_socket() as taken:
        ports = iter([taken, sshd_free_port()])
        monkeypatch.setattr(labgrid_lab, "free_port", lambda: next(ports))
        with LabgridLab(tmp_path / "lab") as lab:
            assert lab.port != taken and isinstance(lab.client().places(), dict)
            assert f"Failed to bind to address 127.0.0.1:{taken}" in (tmp_path / "lab" / "coordinator.log").read_text()


def test_labgrid_lab_on_a_port_it_was_given_does_not_move(tmp_path: Path) -> None:
    with _listening_socket() as taken:
        with pytest.raises(Exception, match=f"labgrid-coordinator exited .*coordinator.log"):
            LabgridLab(tmp_path / "lab", port=taken).start()
