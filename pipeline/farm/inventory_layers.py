"""A device's settings in layers: its own keys over its groups over the inventory defaults over its target file.

Pure mapping work (no files): :func:`pipeline.farm.inventory.load_inventory` reads the YAML, this
module lays the layers onto the target file's mapping and records where each value came from, so
the result can still be validated by ``parse_target`` with every check a target file gets.
"""

from __future__ import annotations

import copy
import posixpath
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

from pipeline.config.loader import Strict
from pipeline.config.target import TargetConfig
from pipeline.errors import ConfigError

TRANSPORT_KEYS: tuple[str, ...] = ("host", "port", "user", "key_file", "known_hosts", "host_key_policy")
DEVICE_KEYS: tuple[str, ...] = ("remote_dir", "python", "threads")
OVERRIDE_KEYS: tuple[str, ...] = TRANSPORT_KEYS + DEVICE_KEYS
BUILTIN = "built-in default"  # the source of a value nobody wrote: TargetConfig's own default


class Overrides(Strict):
    """The keys an inventory may set over a target file (``defaults:``, each group, each device).

    Only the types are checked here; ranges and meaning (port 1-65535, a safe remote_dir, a plain
    host) are checked once, on the merged target, by the target's own validators.
    """

    host: Optional[str] = None
    port: Optional[int] = None
    user: Optional[str] = None
    key_file: Optional[str] = None
    known_hosts: Optional[str] = None
    host_key_policy: Optional[str] = None
    remote_dir: Optional[str] = None
    python: Optional[str] = None
    threads: Optional[int] = None

    def given(self) -> dict[str, Any]:
        """The keys written in the YAML (an explicit ``key_file: null`` counts: it unsets the target's)."""
        return self.model_dump(include=set(OVERRIDE_KEYS), exclude_unset=True)


@dataclass(frozen=True)
class Layer:
    """One source of overrides. ``strict``: transport keys on a local target are an error (the
    device and the groups it names); the inventory defaults skip local targets instead."""

    source: str  # "device", "group rack-a", "defaults"
    values: Mapping[str, Any]
    strict: bool = True


def layer_target(data: Mapping[str, Any], layers: Sequence[Layer], target_source: str, where: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The target mapping with ``layers`` laid on (first layer wins) and each override key's source.

    ``where`` starts error messages ("Inventory file X: device 'pi-01'").
    """
    merged = copy.deepcopy(dict(data))
    transport = merged.get("transport")
    transport = transport if isinstance(transport, dict) else None  # else parse_target reports it
    local = transport is not None and transport.get("type") == "local"
    sources: dict[str, str] = {}
    for layer in reversed(layers):
        for key, value in layer.values.items():
            if key in TRANSPORT_KEYS:
                if local:
                    if layer.strict:
                        raise ConfigError(
                            f"{where}: {layer.source} sets '{key}', but its target ({target_source}) uses the local "
                            f"transport (this machine), which has no {key}. Remove '{key}' there, or point the device "
                            f"at an ssh target."
                        )
                    continue
                if transport is None:
                    continue
                transport[key] = value
            else:
                merged[key] = value
            sources[key] = layer.source
    for key in OVERRIDE_KEYS:
        if key in sources or (local and key in TRANSPORT_KEYS):
            continue
        written = (transport or {}) if key in TRANSPORT_KEYS else data
        sources[key] = target_source if key in written else BUILTIN
    return merged, sources


def described_overrides(sources: Mapping[str, str], target_source: str) -> str:
    """``host from device, user from defaults``: what the inventory changed, for error messages."""
    return described_sources(sources, [k for k, source in sources.items() if source not in (target_source, BUILTIN)])


def described_sources(sources: Mapping[str, str], keys: Sequence[str]) -> str:
    """``host from device, port and remote_dir from target targets/rpi4.yaml``."""
    by_source: dict[str, list[str]] = {}
    for key in keys:
        if key in sources:
            by_source.setdefault(sources[key], []).append(key)
    return ", ".join(f"{_listed(names)} from {source}" for source, names in by_source.items())


def _listed(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def address(target: TargetConfig) -> tuple:
    """Where a device's releases live: two devices with the same address would replace each other's.

    Host names compare case-insensitively; a relative remote_dir (or ``~/...``) is under the login
    home, so there the user is part of the address. Local targets share this machine.
    """
    remote_dir = target.remote_dir
    home_relative = not remote_dir.startswith("/")
    if remote_dir == "~" or remote_dir.startswith("~/"):
        remote_dir = remote_dir[2:] or "."
    remote_dir = posixpath.normpath(remote_dir)
    transport = target.transport
    if transport.type == "ssh":
        return ("ssh", transport.host.lower().rstrip("."), transport.port, transport.user if home_relative else None, remote_dir)
    return ("local", None, None, None, remote_dir)


def describe_address(target: TargetConfig) -> str:
    transport = target.transport
    where = transport.describe() if transport.type == "ssh" else "this machine"
    return f"{where} in remote_dir {target.remote_dir}"
