"""Reserve, acquire, resolve and release labgrid places for the farm runner.

A device's place is taken in four steps (:meth:`Lease.take`): a reservation (``name=PLACE`` for a
named place, the device's tag filter otherwise), waiting up to ``wait`` seconds for the coordinator
to allocate a place to it, acquiring that place, and reading its ``NetworkService`` resource for
address, user and port, which replace the target's host, user and port. :meth:`Lease.end` undoes
whatever was done (release, then cancel the reservation); it is safe to call twice and from another
thread: the runner calls it when the device is done however that went, and, through
:class:`LeaseBook`, for every open lease when the run ends early (Ctrl-C, farm timeout).

A place acquired by a process that was killed outright stays acquired (labgrid places do not
expire); free it with ``labgrid-client -p PLACE release``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Mapping, Optional, Sequence

from pipeline.errors import ConfigError
from pipeline.farm.labgrid_client import (
    EXTRA,
    CoordinatorUnreachable,
    Endpoint,
    LabgridClient,
    LabgridError,
    LeaseEnded,
    Place,
    PlaceBusy,
    PlaceMissing,
    ResourceOffline,
    labgrid_program,
    require_labgrid,
)
from pipeline.farm.labgrid_spec import LabgridSettings

if TYPE_CHECKING:
    from pipeline.farm.inventory import FarmDevice

log = logging.getLogger(__name__)

__all__ = [
    "EXTRA", "CoordinatorUnreachable", "Endpoint", "FarmLabgrid", "LabgridClient", "LabgridError", "Lease", "LeaseBook",
    "LeaseEnded", "PlaceBusy", "PlaceMissing", "ResourceOffline", "labgrid_program", "missing_place", "prepare",
    "require_labgrid",
]


def _describe(filters: Mapping[str, str]) -> str:
    if set(filters) == {"name"}:
        return f"'{filters['name']}'"
    return "with tags " + ", ".join(f"{k}={v}" for k, v in sorted(filters.items()))


def _candidates(places: Mapping[str, Place], filters: Mapping[str, str]) -> list[Place]:
    if set(filters) == {"name"}:
        return [places[filters["name"]]] if filters["name"] in places else []
    return [p for p in places.values() if p.has_tags(filters)]


def missing_place(client: LabgridClient, places: Mapping[str, Place], filters: Mapping[str, str]) -> Optional[str]:
    """Why no place can ever match ``filters`` on this coordinator, or None when one can."""
    if _candidates(places, filters):
        return None
    known = ", ".join(sorted(places)) or "none"
    return f"labgrid coordinator {client.coordinator} has no place {_describe(filters)} (its places: {known})"


class Lease:
    """One device's hold on one place: reservation token, place name, NetworkService endpoint."""

    def __init__(self, client: LabgridClient, device: str, filters: Mapping[str, str]):
        self.client = client
        self.device = device
        self.filters = dict(filters)
        self.token: Optional[str] = None
        self.place: Optional[str] = None
        self.endpoint: Optional[Endpoint] = None
        self._acquiring = False
        self._ended = False
        self._lock = threading.Lock()

    @property
    def ended(self) -> bool:
        return self._ended

    def check(self) -> None:
        """LeaseEnded if the run released this place meanwhile (call between phases)."""
        if self._ended:
            raise LeaseEnded(f"device {self.device}: the run is ending and released labgrid place {self.place or _describe(self.filters)}")

    def take(self, wait: float, on_wait=lambda detail: None) -> Endpoint:
        """Reserve, wait up to ``wait`` s for an allocation, acquire, read the endpoint."""
        client = self.client
        places = client.places()
        why = missing_place(client, places, self.filters)
        if why:
            raise PlaceMissing(why)
        token = client.reserve(self.filters)
        with self._lock:
            self.token = token
        self.check()
        state = client.reservation_state(token)
        if state == "waiting" and wait > 0:
            on_wait(f"{_describe(self.filters)} is held ({self._holders(places)}); waiting up to {wait:g} s")
            started = time.monotonic()
            state = client.wait(token, wait)
            log.info("%s: labgrid reservation %s %s after %.1f s", self.device, token, state, time.monotonic() - started)
        self.check()
        if state == "waiting":
            raise PlaceBusy(
                f"labgrid place {_describe(self.filters)} stayed held for the whole wait of {wait:g} s "
                f"({self._holders(client.places())}); raise labgrid.wait to wait longer"
            )
        if state not in ("allocated", "acquired"):
            raise LabgridError(f"labgrid reservation {token} for place {_describe(self.filters)} ended {state or 'gone'}")
        with self._lock:
            self.check()
            self._acquiring = True
        try:
            self.place = client.acquire(token)
        except LabgridError as exc:
            if "no matching remote resource" in str(exc) or "Failed to acquire resources" in str(exc):
                raise ResourceOffline(
                    f"labgrid place {_describe(self.filters)} has no resource online (is its exporter running?): {exc}"
                ) from None
            raise
        with self._lock:
            ended = self._ended
        if ended:  # the run ended this lease while the acquire was in flight: give back what it got
            self._quietly(client.release, self.place)
            self.check()
        try:
            self.endpoint = client.endpoint(self.place)
        except LabgridError as exc:
            if "orphaned resource" in str(exc):
                raise ResourceOffline(f"labgrid place {self.place}: its exporter disconnected ({exc})") from None
            raise
        return self.endpoint

    def _holders(self, places: Mapping[str, Place]) -> str:
        held = [f"{p.name} by {p.acquired}" for p in _candidates(places, self.filters) if p.acquired]
        reserved = [f"{p.name} reserved" for p in _candidates(places, self.filters) if not p.acquired and p.reservation]
        return "held: " + ", ".join(held + reserved) if held or reserved else "no holder seen"

    def end(self) -> None:
        """Release the place (if this lease acquired one) and cancel the reservation; never raises."""
        with self._lock:
            if self._ended:
                return
            self._ended = True
            token, acquiring, place = self.token, self._acquiring, self.place
        target = place or (f"+{token}" if token else None)
        if acquiring and target:
            # "not acquired": the acquire had not happened yet, or failed
            self._quietly(self.client.release, target)
        if token:
            self._quietly(self.client.cancel, token)
        log.info("%s: labgrid place %s given back", self.device, place or _describe(self.filters))

    def _quietly(self, call, arg: str) -> None:
        try:
            call(arg)
        except LabgridError as exc:
            log.debug("%s: labgrid-client %s %s: %s", self.device, call.__name__, arg, exc)


class LeaseBook:
    """The open leases of one farm run, so the run can release them all when it ends early."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: set[Lease] = set()
        self._closed = False

    def add(self, lease: Lease) -> None:
        with self._lock:
            if self._closed:
                raise LeaseEnded(f"device {lease.device}: the run is ending; no labgrid place was reserved")
            self._open.add(lease)

    def discard(self, lease: Lease) -> None:
        with self._lock:
            self._open.discard(lease)

    def close(self) -> None:
        """End every open lease (Ctrl-C, farm timeout) and refuse new ones."""
        with self._lock:
            self._closed = True
            leases = list(self._open)
        threads = [threading.Thread(target=lease.end, name=f"labgrid-release-{lease.device}", daemon=True) for lease in leases]
        for thread in threads:
            thread.start()
        for thread in threads:  # each release and cancel is bounded by the client's call timeout
            thread.join()


class FarmLabgrid:
    """What one farm run needs from labgrid: the coordinator's client, the waits, the open leases.

    ``down`` holds why the coordinator did not answer the run's first request: its devices are then
    recorded unreachable at once instead of each waiting out the same dead coordinator.
    """

    def __init__(self, client: LabgridClient, settings: LabgridSettings, down: Optional[str] = None):
        self.client = client
        self.settings = settings
        self.down = down
        self.book = LeaseBook()

    def wait_for(self, device: "FarmDevice") -> float:
        assert device.labgrid is not None
        return self.settings.wait if device.labgrid.wait is None else device.labgrid.wait

    def budget(self, devices: Sequence["FarmDevice"]) -> float:
        """The most seconds labgrid can add to one attempt: the longest wait plus every bounded call."""
        waits = [self.wait_for(d) for d in devices if d.labgrid is not None]
        return (max(waits) if waits else 0.0) + 8 * self.settings.call_timeout

    @contextmanager
    def lease(self, device: "FarmDevice", notify: Callable[[str, str, str], None]) -> Iterator[Lease]:
        """The device's place, taken for the ``with`` block and given back however it ends."""
        assert device.labgrid is not None
        if self.down is not None:
            raise CoordinatorUnreachable(self.down)
        lease = Lease(self.client, device.name, device.labgrid.filters())
        self.book.add(lease)
        try:
            notify(device.name, "reserving", f"labgrid place {_describe(lease.filters)} on {self.client.coordinator}")
            lease.take(self.wait_for(device), on_wait=lambda detail: notify(device.name, "waiting", detail))
            yield lease
        finally:
            lease.end()
            self.book.discard(lease)


def prepare(inventory: Path, settings: Optional[LabgridSettings], devices: Sequence["FarmDevice"]) -> Optional[FarmLabgrid]:
    """Labgrid for a farm run, or None when no device names a place.

    Raises ConfigError before any device is touched when labgrid is not installed, no coordinator is
    named, a labgrid device's target is not an SSH target, or (the coordinator answering) a named
    place, or any place with a device's tags, does not exist. An unreachable coordinator is not
    raised here: its devices are recorded unreachable, and the run's other devices still run.
    """
    wanted = [d for d in devices if d.labgrid is not None]
    if not wanted:
        return None
    names = ", ".join(d.name for d in wanted)
    program = require_labgrid(f"Inventory {inventory} (device {names})")
    settings = settings or LabgridSettings()
    coordinator = settings.coordinator or os.environ.get("LG_COORDINATOR")
    if not coordinator:
        raise ConfigError(
            f"Inventory {inventory}: device {names} names a labgrid place, but no coordinator is given. "
            "Set labgrid: {coordinator: HOST:PORT} in the inventory, or $LG_COORDINATOR."
        )
    for device in wanted:
        if device.target.transport.type != "ssh":
            raise ConfigError(
                f"Inventory {inventory}: device '{device.name}' names a labgrid place, but its target "
                f"{device.target_path} uses the {device.target.transport.type} transport; a place's NetworkService "
                "is reached over SSH, so use an ssh target."
            )
    client = LabgridClient(coordinator, call_timeout=settings.call_timeout, program=program)
    try:
        places = client.places()
    except CoordinatorUnreachable as exc:
        log.warning("labgrid coordinator %s: %s", coordinator, exc)
        return FarmLabgrid(client, settings, down=f"labgrid coordinator {coordinator} is unreachable: {exc}")
    except LabgridError as exc:
        raise ConfigError(f"Inventory {inventory}: labgrid coordinator {coordinator} refused to list its places: {exc}") from None
    for device in wanted:
        assert device.labgrid is not None
        why = missing_place(client, places, device.labgrid.filters())
        if why:
            raise ConfigError(
                f"Inventory {inventory}: device '{device.name}': {why}. Fix the device's labgrid: entry, or create "
                "the place (labgrid-client -p NAME create, add-match, set-tags); nothing was deployed."
            )
    return FarmLabgrid(client, settings)
