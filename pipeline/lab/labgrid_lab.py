"""A real labgrid lab on 127.0.0.1 for tests and benches: one labgrid-coordinator, any exporters.

The exporters export ``NetworkService`` resources that point at loopback SSH servers
(:class:`pipeline.lab.sshd.SSHServer`), so a farm inventory can name labgrid places and reach real
sshd "devices" through them. Everything lives under one directory: the coordinator's state
(``places.yaml``, written in its working directory), each exporter's resource file and every log.
Places are made with ``labgrid-client`` (:meth:`LabgridLab.add_place`), as a lab admin would.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import yaml

from pipeline.errors import EdgeshipError
from pipeline.farm.labgrid_client import LabgridClient, LabgridError, labgrid_program, require_labgrid
from pipeline.fsutil import atomic_write_text
from pipeline.lab.sshd import LoopbackServer, free_port
from pipeline.safe_paths import open_log, tail_text

logger = logging.getLogger(__name__)


def labgrid_available() -> bool:
    return all(labgrid_program(name) is not None for name in ("labgrid-client", "labgrid-coordinator", "labgrid-exporter"))


def network_service(server: LoopbackServer) -> dict[str, Any]:
    """The exporter resource that points at ``server``: address, user and port of its sshd."""
    return {"NetworkService": {"address": "127.0.0.1", "username": server.user, "port": server.port}}


def _stop(proc: Optional[subprocess.Popen], grace: float = 5.0) -> None:
    """SIGTERM the process group, SIGKILL after ``grace`` seconds."""
    if proc is None or proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


class LabgridLab:
    """A coordinator on ``127.0.0.1:port`` and its exporters, all children of this process."""

    def __init__(self, root: Path, port: Optional[int] = None):
        require_labgrid("The labgrid lab")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._pick_port = port is None  # a port we chose may be taken before the coordinator binds it
        self.port = port or free_port()
        self.coordinator: Optional[subprocess.Popen] = None
        self.exporters: dict[str, subprocess.Popen] = {}

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    # -- processes ---------------------------------------------------------------------------------
    def _spawn(self, program: str, args: Sequence[str], log_name: str) -> subprocess.Popen:
        path = labgrid_program(program)
        assert path is not None  # require_labgrid checked the extra
        with open_log(self.root / log_name) as log:
            return subprocess.Popen(
                [str(path), *args], cwd=self.root, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def _fail(self, what: str, log_name: str) -> EdgeshipError:
        return EdgeshipError(f"{what}; its log {self.root / log_name} ends with:\n{tail_text(self.root / log_name)}")

    def start(self, timeout: float = 30.0, attempts: int = 3) -> "LabgridLab":
        """Start the coordinator and wait until it answers ``labgrid-client places``.

        ``free_port`` only finds a port that was free a moment ago; another process may bind it
        before the coordinator does. A port this lab picked itself is then replaced and retried.
        """
        for _ in range(attempts - 1 if self._pick_port else 0):
            try:
                return self._start_once(timeout)
            except EdgeshipError as error:
                # the log is appended across attempts: only this attempt's address counts
                if f"Failed to bind to address {self.address}" not in str(error):
                    raise
                logger.info("labgrid-coordinator could not bind %s; retrying on another port", self.address)
                _stop(self.coordinator)
                self.port = free_port()
        return self._start_once(timeout)

    def _start_once(self, timeout: float) -> "LabgridLab":
        self.coordinator = self._spawn("labgrid-coordinator", ["-l", self.address], "coordinator.log")
        client = self.client(call_timeout=5.0)
        deadline = time.monotonic() + timeout
        while True:
            if self.coordinator.poll() is not None:
                raise self._fail(f"labgrid-coordinator exited with {self.coordinator.returncode}", "coordinator.log")
            try:
                client.places()
                return self
            except LabgridError:
                if time.monotonic() > deadline:
                    raise self._fail(f"labgrid-coordinator did not answer on {self.address} within {timeout:.0f} s", "coordinator.log") from None
                time.sleep(0.2)

    def client(self, identity: Optional[tuple[str, str]] = None, call_timeout: float = 20.0) -> LabgridClient:
        """A client of this lab; ``identity`` = (host, user) acts as someone else."""
        return LabgridClient(self.address, call_timeout=call_timeout, identity=identity)

    def start_exporter(self, name: str, groups: Mapping[str, Mapping[str, Any]], timeout: float = 30.0) -> Path:
        """Export ``groups`` ({group: {ResourceClass: params}}) as exporter ``name``; returns its file.

        Waits until the coordinator lists every group, so places can match them at once.
        """
        config = self.root / f"exporter-{name}.yaml"
        atomic_write_text(config, yaml.safe_dump({g: dict(r) for g, r in groups.items()}, sort_keys=True))
        log_name = f"exporter-{name}.log"
        proc = self.exporters[name] = self._spawn(
            "labgrid-exporter", ["-c", self.address, "-n", name, "--hostname", "127.0.0.1", str(config)], log_name
        )
        wanted = {f"{name}/{group}/" for group in groups}
        client = self.client(call_timeout=5.0)
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise self._fail(f"labgrid-exporter {name} exited with {proc.returncode}", log_name)
            listed = client.resources() if self.coordinator is not None else ""
            if all(group in listed for group in wanted):
                return config
            if time.monotonic() > deadline:
                raise self._fail(f"labgrid-exporter {name} did not register {sorted(wanted)} within {timeout:.0f} s", log_name)
            time.sleep(0.2)

    def stop_exporter(self, name: str, timeout: float = 30.0) -> None:
        """Stop exporter ``name`` and wait until the coordinator has dropped its resources."""
        _stop(self.exporters.pop(name, None))
        client = self.client(call_timeout=5.0)
        deadline = time.monotonic() + timeout
        while f"Exporter '{name}'" in client.resources():
            if time.monotonic() > deadline:
                raise EdgeshipError(f"the labgrid coordinator still lists exporter {name} {timeout:.0f} s after it stopped")
            time.sleep(0.2)

    def stop(self) -> None:
        for name in list(self.exporters):
            _stop(self.exporters.pop(name))
        _stop(self.coordinator)
        self.coordinator = None

    def __enter__(self) -> "LabgridLab":
        return self.start() if self.coordinator is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- places --------------------------------------------------------------------------------------
    def add_place(self, name: str, exporter: str, group: str, tags: Optional[Mapping[str, str]] = None) -> None:
        """A place holding every resource of ``exporter``'s ``group``, with ``tags``."""
        self.client().create_place(name, [f"{exporter}/{group}/*"], tags)
