"""The farm inventory: which devices exist, what they are tagged, and how many run at once.

```yaml
name: lab
concurrency: 8            # devices profiled in parallel
timeout: 900              # seconds one device may take (deploy + profile), per attempt
retries: 1                # extra attempts for a device that failed
profile: default          # build profile, unless a device names its own (else the target's default_profile)
devices:
  - {name: pi-01, target: rpi4, tags: [rpi4, lab-2]}
  - {name: phone-07, target: android-termux, tags: [android]}
```

``target`` is a target name (``targets/<name>.yaml``) or a path relative to the inventory file.
Everything is validated, and every target file loaded, before any device is touched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from pydantic import Field, field_validator, model_validator

from pipeline.config.loader import read_yaml, validate
from pipeline.config.profile import Strict
from pipeline.config.target import NAME, TargetConfig, load_target
from pipeline.errors import ConfigError
from pipeline.farm.labgrid_spec import LabgridPlace, LabgridSettings
from pipeline.paths import builtin_targets_dir

# Used with fullmatch: "^...$" would let a trailing newline through.
_TAG = re.compile(r"[a-z0-9][a-z0-9._-]*")


class DeviceEntry(Strict):
    name: str
    target: str
    tags: tuple[str, ...] = ()
    profile: Optional[str] = None
    labgrid: Optional[LabgridPlace] = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME.fullmatch(value):
            raise ValueError("use letters, digits, '.', '_' and '-' only")
        return value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for tag in value:
            if not _TAG.fullmatch(tag):
                raise ValueError(f"tag '{tag}' must be lower-case letters, digits, '.', '_' or '-'")
        return value


class Inventory(Strict):
    name: str = "farm"
    concurrency: int = Field(4, gt=0, le=256)
    timeout: float = Field(900.0, gt=0, description="seconds per device attempt")
    retries: int = Field(1, ge=0, le=10)
    profile: Optional[str] = Field(None, description="build profile for every device; else each target's default_profile")
    labgrid: Optional[LabgridSettings] = None
    devices: tuple[DeviceEntry, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> "Inventory":
        seen: set[str] = set()
        for device in self.devices:
            if device.name in seen:
                raise ValueError(f"device name '{device.name}' appears twice")
            seen.add(device.name)
        return self


@dataclass(frozen=True)
class FarmDevice:
    """An inventory entry with its target file loaded and its build profile decided."""

    name: str
    target: TargetConfig
    target_path: Path
    tags: tuple[str, ...]
    profile: str
    labgrid: Optional[LabgridPlace] = None

    @property
    def device_class(self) -> str:
        return self.target.name


@dataclass(frozen=True)
class LoadedInventory:
    path: Path
    inventory: Inventory
    devices: tuple[FarmDevice, ...]

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


def load_inventory(path: str | Path, profile_override: Optional[str] = None) -> LoadedInventory:
    path = Path(path)
    inventory = validate(Inventory, read_yaml(path, "Inventory"), f"Inventory file {path}")
    devices = []
    for index, entry in enumerate(inventory.devices):
        target_path = _target_path(entry, path)
        if not target_path.is_file():
            raise ConfigError(
                f"Inventory file {path}: devices[{index}] ('{entry.name}') refers to target '{entry.target}', "
                f"but {target_path} does not exist."
            )
        target = load_target(target_path)
        profile = profile_override or entry.profile or inventory.profile or target.default_profile
        devices.append(FarmDevice(entry.name, target, target_path, entry.tags, profile, labgrid=entry.labgrid))
    return LoadedInventory(path, inventory, tuple(devices))
