"""``labgrid-client`` as a Python object: one bounded subprocess call per method.

Why a subprocess and not labgrid's asyncio ``ClientSession``: the program is labgrid's documented
interface; every call gets a hard timeout after which its whole process group is killed (a
coordinator that accepts the connection and never answers cannot hang a farm thread); labgrid's
gRPC/asyncio machinery never shares the runner's worker threads; and each call runs in its own
session, so the Ctrl-C that stops a farm run does not kill the calls that give its places back.
A call costs about 0.3 s (the program's start-up), a handful per device.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence

import yaml

from pipeline.errors import ConfigError, DeployError

log = logging.getLogger(__name__)

EXTRA = "pip install 'edgeship[labgrid]'"
# Variables that would make labgrid-client act on another place, reservation or environment file.
_SCRUBBED_ENV = ("LG_PLACE", "LG_TOKEN", "LG_ENV", "LG_STATE", "LG_INITIAL_STATE", "LG_PROXY", "LG_COORDINATOR")
_TOKEN = re.compile(r"LG_TOKEN=(\S+)")
_ACQUIRED = re.compile(r"acquired place (\S+)")


class LabgridError(DeployError):
    """The coordinator refused a request, or a place cannot be used."""


class CoordinatorUnreachable(LabgridError):
    """No answer from the coordinator (down, wrong address, or too slow)."""


class ResourceOffline(LabgridError):
    """The place exists, but its exporter (the machine its device hangs off) is not connected."""


class PlaceMissing(LabgridError):
    """No place of that name, or none with those tags: waiting will not help."""


class PlaceBusy(LabgridError):
    """Every matching place stayed held by someone else for the whole wait."""


class LeaseEnded(LabgridError):
    """The run is ending (Ctrl-C, farm timeout) and released the place under this device."""


def labgrid_program(name: str = "labgrid-client") -> Optional[Path]:
    """A labgrid program: the one installed next to this Python (the extra's), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which(name)
    return Path(found) if found else None


def require_labgrid(where: str) -> Path:
    """The labgrid-client program, or a ConfigError naming the extra (``where`` says who asked)."""
    try:
        import labgrid  # noqa: F401  (only to tell whether the extra is installed)
    except ImportError:
        raise ConfigError(
            f"{where} names labgrid places, but labgrid is not installed in this Python ({sys.executable}). "
            f"Install the extra with `{EXTRA}` (labgrid 24 or newer, which talks gRPC to labgrid-coordinator), "
            "or remove the labgrid: entries; nothing was deployed."
        ) from None
    program = labgrid_program()
    if program is None:
        raise ConfigError(
            f"{where} names labgrid places and labgrid is importable, but its labgrid-client program is neither next "
            f"to {sys.executable} nor on PATH. Reinstall the extra with `{EXTRA}`; nothing was deployed."
        )
    return program


@dataclass(frozen=True)
class Place:
    name: str
    tags: Mapping[str, str] = field(default_factory=dict)
    acquired: Optional[str] = None  # "host/user" of whoever holds it
    reservation: Optional[str] = None
    matches: tuple[str, ...] = ()

    def has_tags(self, wanted: Mapping[str, str]) -> bool:
        return all(self.tags.get(k) == v for k, v in wanted.items())


@dataclass(frozen=True)
class Endpoint:
    """What a place's NetworkService says about reaching its device."""

    host: str
    user: str
    port: Optional[int] = None

    def describe(self) -> str:
        return f"{self.user}@{self.host}" + (f":{self.port}" if self.port else "")


def parse_places(text: str) -> dict[str, Place]:
    """``labgrid-client -v places``: one ``Place 'NAME':`` block per place, two-space indented fields."""
    places: dict[str, dict] = {}
    current: Optional[dict] = None
    in_matches = False
    for line in text.splitlines():
        head = re.fullmatch(r"Place '(.+)':", line.rstrip())
        if head:
            current = places[head.group(1)] = {"name": head.group(1), "tags": {}, "matches": []}
            in_matches = False
            continue
        if current is None or not line.startswith("  "):
            continue
        if line.startswith("    "):
            if in_matches:
                current["matches"].append(line.strip())
            continue
        key, _, value = line.strip().partition(": ")
        in_matches = line.strip() == "matches:"
        if key == "tags":
            current["tags"] = dict(pair.split("=", 1) for pair in value.split(", ") if "=" in pair)
        elif key == "acquired":
            current["acquired"] = None if value == "None" else value
        elif key == "reservation":
            current["reservation"] = value or None
    return {
        name: Place(name, p["tags"], p.get("acquired"), p.get("reservation"), tuple(p["matches"]))
        for name, p in places.items()
    }


def _last_state(text: str) -> Optional[str]:
    states = re.findall(r"^\s*state: (\w+)\s*$", text, flags=re.MULTILINE)
    return states[-1] if states else None


def _error_line(stdout: str, stderr: str) -> str:
    """labgrid-client's own message ("Error: ..."), without the traceback it sometimes adds."""
    lines = [line.strip() for line in (stderr + "\n" + stdout).splitlines() if line.strip()]
    errors = [line for line in lines if "Error:" in line or "error:" in line]
    text = errors[-1] if errors else (lines[-1] if lines else "no output")
    return re.sub(r"^(labgrid-client: )?((Server|User) error: )?(Error: )?", "", text)


class LabgridClient:
    """One coordinator, reached with ``labgrid-client -x ADDRESS``; each method is one bounded call.

    The client's identity (``host/user``, what ``labgrid-client who`` shows and what a reservation
    belongs to) is labgrid's own: ``$LG_HOSTNAME``/``$LG_USERNAME`` or this host and user;
    ``identity`` overrides it (tests act as a second user with it).
    """

    def __init__(
        self,
        coordinator: str,
        *,
        call_timeout: float = 30.0,
        program: Optional[Path] = None,
        identity: Optional[tuple[str, str]] = None,
    ):
        self.coordinator = coordinator
        self.call_timeout = call_timeout
        self.program = program or labgrid_program()
        if self.program is None:
            raise ConfigError(f"labgrid-client is not installed; install the extra with `{EXTRA}`.")
        self.env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
        # Unbuffered: a `wait` orphaned by a killed edgeship dies on its next write to the closed pipe.
        self.env["PYTHONUNBUFFERED"] = "1"
        if identity is not None:
            self.env["LG_HOSTNAME"], self.env["LG_USERNAME"] = identity

    def run(self, *args: str, timeout: Optional[float] = None, quiet_timeout: bool = False) -> str:
        """stdout of one labgrid-client call; LabgridError with its message when it fails.

        ``quiet_timeout`` returns what was printed instead of raising when the time runs out.
        """
        limit = self.call_timeout if timeout is None else timeout
        command = [str(self.program), "-x", self.coordinator, *args]
        log.debug("labgrid-client %s (timeout %.0f s)", " ".join(args), limit)
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=self.env, start_new_session=True,
        )
        try:
            stdout, stderr = proc.communicate(timeout=max(limit, 0.0))
        except subprocess.TimeoutExpired:
            stdout, stderr = self._kill(proc)
            if quiet_timeout:
                return stdout
            raise CoordinatorUnreachable(
                f"labgrid coordinator {self.coordinator} did not answer `labgrid-client {' '.join(args)}` within {limit:.0f} s"
            ) from None
        except BaseException:
            self._kill(proc)
            raise
        if proc.returncode != 0:
            message = _error_line(stdout, stderr)
            kind = CoordinatorUnreachable if "connect to coordinator" in message or "coordinator is unavailable" in stderr else LabgridError
            raise kind(message)
        return stdout

    @staticmethod
    def _kill(proc: subprocess.Popen) -> tuple[str, str]:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            return proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:  # a grandchild kept the pipes open
            return "", ""

    # -- queries -------------------------------------------------------------------------------
    def places(self) -> dict[str, Place]:
        return parse_places(self.run("-v", "places"))

    def resources(self) -> str:
        return self.run("-v", "resources")

    def reservation_state(self, token: str) -> Optional[str]:
        """The state of reservation ``token`` (waiting, allocated, acquired, expired, invalid), None if gone."""
        text = self.run("reservations")
        block = re.search(rf"Reservation '{re.escape(token)}':\n((?:[ \t].*\n?)*)", text)
        return _last_state(block.group(1)) if block else None

    # -- a device's place ------------------------------------------------------------------------
    def reserve(self, filters: Mapping[str, str]) -> str:
        out = self.run("reserve", "--shell", *(f"{k}={v}" for k, v in sorted(filters.items())))
        token = _TOKEN.search(out)
        if token is None:
            raise LabgridError(f"labgrid-client reserve printed no token: {out.strip()!r}")
        return token.group(1)

    def wait(self, token: str, seconds: float) -> Optional[str]:
        """Poll reservation ``token`` until it is allocated or ``seconds`` pass; its last state seen."""
        out = self.run("wait", token, timeout=seconds, quiet_timeout=True)
        return _last_state(out) or "waiting"

    def acquire(self, token: str) -> str:
        """Acquire the place allocated to ``token``; its name."""
        out = self.run("-p", f"+{token}", "acquire")
        name = _ACQUIRED.search(out)
        if name is None:
            raise LabgridError(f"labgrid-client acquire printed no place name: {out.strip()!r}")
        return name.group(1)

    def endpoint(self, place: str) -> Endpoint:
        """Address, user and port of the acquired place's NetworkService (from ``labgrid-client env``)."""
        out = self.run("-p", place, "env")
        try:
            targets = yaml.safe_load(out)["targets"]
            resources = next(iter(targets.values())).get("resources") or []
        except (yaml.YAMLError, KeyError, TypeError, StopIteration, AttributeError):
            raise LabgridError(f"labgrid-client env for place {place} printed no environment: {out.strip()[:200]!r}") from None
        services = [r["NetworkService"] for r in resources if isinstance(r, dict) and "NetworkService" in r]
        if not services:
            kinds = ", ".join(sorted(k for r in resources if isinstance(r, dict) for k in r)) or "none"
            raise LabgridError(f"labgrid place {place} has no NetworkService resource (its resources: {kinds}); edgeship needs one for the device's SSH address")
        if len(services) > 1:
            raise LabgridError(f"labgrid place {place} has {len(services)} NetworkService resources; edgeship needs exactly one")
        service = services[0]
        try:
            port = int(service["port"]) if service.get("port") is not None else None
            return Endpoint(str(service["address"]), str(service["username"]), port)
        except (KeyError, TypeError, ValueError):
            raise LabgridError(f"labgrid place {place}: its NetworkService lacks address or username: {service!r}") from None

    def release(self, place: str) -> None:
        self.run("-p", place, "release")

    def cancel(self, token: str) -> None:
        self.run("cancel-reservation", token)

    # -- setting up places (labs, tests) ----------------------------------------------------------
    def create_place(self, name: str, matches: Sequence[str] = (), tags: Optional[Mapping[str, str]] = None) -> None:
        self.run("-p", name, "create")
        if matches:
            self.run("-p", name, "add-match", *matches)
        if tags:
            self.run("-p", name, "set-tags", *(f"{k}={v}" for k, v in sorted(tags.items())))

    def acquire_place(self, name: str) -> None:
        """Acquire ``name`` directly, without a reservation (what a person at the rack does)."""
        self.run("-p", name, "acquire")
