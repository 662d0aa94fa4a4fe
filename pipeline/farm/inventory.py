"""The farm inventory: which devices exist, how each is reached, what they are tagged, how many run at once.

```yaml
name: lab-2
concurrency: 8            # devices profiled in parallel
timeout: 900              # seconds one device may take (deploy + profile), per attempt
retries: 1                # extra attempts for a device that failed
regression: {min_effect: 0.05, confirm: true}   # regression policy, see pipeline/farm/policy.py
profile: default          # build profile, unless a device names its own (else the target's default_profile)
defaults: {user: ci, key_file: ~/.ssh/farm_ed25519}          # every device (ssh targets)
groups:
  rack-a: {known_hosts: ~/.ssh/rack_a_known_hosts}            # devices that join it
devices:
  - {name: pi4-01, target: rpi4, host: 10.0.4.21, groups: [rack-a], tags: [rpi4]}
  - {name: pi4-02, target: rpi4, host: 10.0.4.22, port: 2222, groups: [rack-a], tags: [rpi4]}
  - {name: phone-07, target: android-termux, tags: [android]}
```

``target`` is a target name (``targets/<name>.yaml``) or a path relative to the inventory file. The
target file is the device class (arch, runtime, default profile, profiling); an inventory changes
only how a device is reached and where it keeps its files:

* transport keys ``host``, ``port``, ``user``, ``key_file``, ``known_hosts``, ``host_key_policy``;
* device keys ``remote_dir``, ``python``, ``threads``.

``defaults:``, each of ``groups:`` and each device entry may carry them. Precedence: the device's own
keys, then its groups in the order it lists them (the first that sets a key wins), then the
defaults, then the target file. ``key_file: null`` unsets the target's key (ssh-agent and default
keys). Transport keys on a device whose target is ``type: local`` are an error when the device or a
group it joins sets them; the defaults skip such devices. The merged mapping is validated like a
target file (remote_dir safety, plain host names, ``~`` expansion), and ``edgeship farm show -i INV``
prints every device's resolved settings with the layer each came from.

Everything is validated, and every target file loaded, before any device is touched: unknown keys,
two devices with one name, a group no one defined, and two devices resolving to the same host, port
(and user, when remote_dir is under the login home) and remote_dir are errors naming the file and
the device. Devices with a ``labgrid:`` place get their address from labgrid at run time and are left
out of that last check. Records and baselines are filed under the device's name; its class is the
target's name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from pydantic import Field, ValidationError, field_validator

from pipeline.config.loader import Strict, describe_validation_error, read_yaml
from pipeline.config.target import NAME, TargetConfig, parse_target
from pipeline.errors import ConfigError
from pipeline.farm.inventory_layers import (
    BUILTIN,
    OVERRIDE_KEYS,
    Layer,
    Overrides,
    address,
    describe_address,
    described_overrides,
    described_sources,
    layer_target,
)
from pipeline.farm.labgrid_spec import LabgridPlace, LabgridSettings
from pipeline.farm.policy import Policy, RegressionSettings
from pipeline.paths import builtin_targets_dir

# Used with fullmatch: "^...$" would let a trailing newline through.
_TAG = re.compile(r"[a-z0-9][a-z0-9._-]*")


def _plain_name(value: str) -> str:
    if not NAME.fullmatch(value):
        raise ValueError("use letters, digits, '.', '_' and '-' only")
    return value


class DeviceEntry(Overrides):
    name: str
    target: str
    tags: tuple[str, ...] = ()
    groups: tuple[str, ...] = Field((), description="groups whose settings apply, first listed wins")
    profile: Optional[str] = None
    labgrid: Optional[LabgridPlace] = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _plain_name(value)

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for tag in value:
            if not _TAG.fullmatch(tag):
                raise ValueError(f"tag '{tag}' must be lower-case letters, digits, '.', '_' or '-'")
        return value

    @field_validator("groups")
    @classmethod
    def _groups(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("lists a group twice")
        return value


class Inventory(Strict):
    name: str = "farm"
    concurrency: int = Field(4, gt=0, le=256)
    timeout: float = Field(900.0, gt=0, description="seconds per device attempt")
    retries: int = Field(1, ge=0, le=10)
    profile: Optional[str] = Field(None, description="build profile for every device; else each target's default_profile")
    labgrid: Optional[LabgridSettings] = None
    regression: RegressionSettings = Field(RegressionSettings(), description="regression policy (pipeline.farm.policy)")
    defaults: Overrides = Field(Overrides(), description="settings of every device, under its groups' and its own")
    groups: dict[str, Overrides] = Field(default_factory=dict)
    devices: tuple[DeviceEntry, ...]

    @field_validator("devices")
    @classmethod
    def _some_devices(cls, value: tuple[DeviceEntry, ...]) -> tuple[DeviceEntry, ...]:
        # Not Field(min_length=1): pydantic would add "at least 1 item" to every bad entry's error.
        if not value:
            raise ValueError("list at least one device")
        return value

    @field_validator("groups")
    @classmethod
    def _group_names(cls, value: dict[str, Overrides]) -> dict[str, Overrides]:
        for name in value:
            try:
                _plain_name(name)
            except ValueError as exc:
                raise ValueError(f"group name '{name}': {exc}") from None
        return value


@dataclass(frozen=True)
class FarmDevice:
    """An inventory entry with its target file loaded, the inventory's layers applied, and its build
    profile decided. ``sources`` says where each resolved setting came from ("device", "group NAME",
    "defaults", "target FILE", "built-in default"; for ``profile`` also "--profile", "inventory")."""

    name: str
    target: TargetConfig
    target_path: Path
    tags: tuple[str, ...]
    profile: str
    labgrid: Optional[LabgridPlace] = None
    groups: tuple[str, ...] = ()
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def device_class(self) -> str:
        return self.target.name

    def settings(self) -> list[tuple[str, Any, str]]:
        """(key, value, source) for each setting an inventory decides, in the order ``farm show`` prints them."""
        transport = self.target.transport
        rows: list[tuple[str, Any, str]] = [
            ("class", self.device_class, f"target {_shown(self.target_path)}"),
            ("tags", ", ".join(self.tags), "device"),
            ("groups", ", ".join(self.groups), "device"),
            ("profile", self.profile, self.sources.get("profile", "-")),
        ]
        if transport.type == "local":
            rows.append(("transport", "local (this machine)", self.sources.get("transport", "-")))
        # A labgrid place's NetworkService supplies these when the place is acquired (farm/labgrid.py).
        from_place = ("host", "port", "user") if self.labgrid is not None else ()
        for key in OVERRIDE_KEYS:
            owner = self.target if hasattr(self.target, key) else transport
            if key in from_place:
                rows.append((key, "(from the place)", "labgrid NetworkService, when acquired"))
            elif hasattr(owner, key):
                rows.append((key, getattr(owner, key), self.sources.get(key, "-")))
        if self.labgrid is not None:
            place = self.labgrid.place or ", ".join(f"{k}={v}" for k, v in sorted(self.labgrid.tags.items()))
            rows.append(("labgrid", place, "device"))
        return rows


@dataclass(frozen=True)
class LoadedInventory:
    path: Path
    inventory: Inventory
    devices: tuple[FarmDevice, ...]

    @property
    def policy(self) -> Policy:
        """The regression policy: the defaults, overridden by the inventory's ``regression:`` section."""
        return self.inventory.regression.to_policy()

    def select(self, tags: Sequence[str] = ()) -> list[FarmDevice]:
        """Devices carrying any of ``tags`` (or whose name is one); all devices when none are given."""
        if not tags:
            return list(self.devices)
        known = {t for d in self.devices for t in d.tags} | {d.name for d in self.devices}
        unknown = sorted(set(tags) - known)
        if unknown:
            raise ConfigError(f"Inventory {self.path}: no device has tag or name {', '.join(unknown)}. Known tags: {', '.join(sorted(known))}.")
        return [d for d in self.devices if set(tags) & (set(d.tags) | {d.name})]


def _target_path(entry: DeviceEntry, inventory_path: Path) -> Path:
    text = entry.target
    if text.endswith((".yaml", ".yml")) or "/" in text:
        path = Path(text)
        return path if path.is_absolute() else inventory_path.parent / path
    return builtin_targets_dir() / f"{text}.yaml"


def _shown(path: Path) -> str:
    """A target file as a user would type it: relative to the working directory when under it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _validated(data: dict[str, Any], path: Path) -> Inventory:
    """The inventory model; a problem in ``devices.N`` also names that device."""
    try:
        return Inventory.model_validate(data)
    except ValidationError as exc:
        message = describe_validation_error(exc, f"Inventory file {path}")
        raw = data.get("devices") if isinstance(data.get("devices"), list) else []
        named = []
        for index in sorted({e["loc"][1] for e in exc.errors() if len(e["loc"]) > 1 and e["loc"][0] == "devices"}):
            entry = raw[index] if isinstance(index, int) and index < len(raw) else None
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                named.append(f"devices.{index} is device '{entry['name']}'")
        raise ConfigError(message + (f" ({'; '.join(named)}.)" if named else "")) from None


def _check_entries(inventory: Inventory, path: Path) -> None:
    """Names and group references, before any target file is read."""
    first: dict[str, int] = {}
    for index, entry in enumerate(inventory.devices):
        if entry.name in first:
            raise ConfigError(
                f"Inventory file {path}: device name '{entry.name}' appears twice (devices.{first[entry.name]} and "
                f"devices.{index}); records and baselines are filed under the device name, so each device needs its own."
            )
        first[entry.name] = index
        for group in entry.groups:
            if group not in inventory.groups:
                defined = ", ".join(sorted(inventory.groups)) or "(none)"
                raise ConfigError(
                    f"Inventory file {path}: device '{entry.name}' (devices.{index}) joins group '{group}', which the "
                    f"inventory does not define (groups: {defined}). Fix the spelling or add it under groups:."
                )


def _device(inventory: Inventory, index: int, entry: DeviceEntry, path: Path, profile_override: Optional[str]) -> FarmDevice:
    where = f"Inventory file {path}: device '{entry.name}' (devices.{index})"
    target_path = _target_path(entry, path)
    if not target_path.is_file():
        raise ConfigError(f"{where} refers to target '{entry.target}', but {target_path} does not exist.")
    data = read_yaml(target_path, "Target")
    data.setdefault("name", target_path.stem)
    target_source = f"target {_shown(target_path)}"
    layers = [Layer("device", entry.given())]
    layers += [Layer(f"group {g}", inventory.groups[g].given()) for g in entry.groups]
    layers.append(Layer("defaults", inventory.defaults.given(), strict=False))
    merged, sources = layer_target(data, layers, target_source, where)
    changed = described_overrides(sources, target_source)
    if changed:
        target = parse_target(merged, f"Inventory file {path}: device '{entry.name}' (devices.{index}; target file {target_path} with {changed})")
    else:
        target = parse_target(merged, f"Target file {target_path} (device '{entry.name}' in inventory {path})")
    if target.transport.type == "local":
        sources["transport"] = target_source
    for layer, value in (("--profile", profile_override), ("device", entry.profile), ("inventory", inventory.profile)):
        if value:
            profile, sources["profile"] = value, layer
            break
    else:
        profile = target.default_profile
        sources["profile"] = f"{target_source} default_profile" if "default_profile" in data else BUILTIN
    return FarmDevice(entry.name, target, target_path, entry.tags, profile, labgrid=entry.labgrid, groups=entry.groups, sources=sources)


def _check_addresses(devices: Sequence[FarmDevice], path: Path) -> None:
    """Two devices in one directory of one host would replace each other's releases."""
    seen: dict[tuple, FarmDevice] = {}
    for device in devices:
        if device.labgrid is not None:  # its address comes from the labgrid place at run time
            continue
        key = address(device.target)
        other = seen.get(key)
        if other is not None:
            origin = described_sources(device.sources, ("host", "port", "remote_dir"))
            raise ConfigError(
                f"Inventory file {path}: devices '{other.name}' and '{device.name}' both resolve to "
                f"{describe_address(device.target)} ({origin}); they would replace each other's releases. Give "
                f"'{device.name}' its own host, port or remote_dir (as device keys, or through a group)."
            )
        seen[key] = device


def load_inventory(path: str | Path, profile_override: Optional[str] = None) -> LoadedInventory:
    path = Path(path)
    inventory = _validated(read_yaml(path, "Inventory"), path)
    _check_entries(inventory, path)
    devices = tuple(_device(inventory, i, entry, path, profile_override) for i, entry in enumerate(inventory.devices))
    _check_addresses(devices, path)
    return LoadedInventory(path, inventory, devices)
