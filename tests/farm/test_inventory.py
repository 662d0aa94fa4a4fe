"""Inventory validation: device names and tags are checked whole, before any device is touched."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.errors import ConfigError
from pipeline.farm.inventory import load_inventory


def _inventory(tmp_path: Path, device: dict) -> Path:
    path = tmp_path / "farm.yaml"
    path.write_text(yaml.safe_dump({"devices": [dict({"name": "pi-01", "target": "rpi4"}, **device)]}))
    return path


def test_plain_names_and_tags_load(tmp_path: Path) -> None:
    loaded = load_inventory(_inventory(tmp_path, {"tags": ["rpi4", "lab-2"]}))
    assert [(d.name, d.tags, d.device_class) for d in loaded.devices] == [("pi-01", ("rpi4", "lab-2"), "rpi4")]


@pytest.mark.parametrize(
    "device, key, words",
    [
        ({"name": "pi-01\n"}, "devices.0.name", "letters, digits"),
        ({"tags": ["rpi4\n"]}, "devices.0.tags", "must be lower-case"),
        ({"tags": ["RPi4"]}, "devices.0.tags", "must be lower-case"),
    ],
)
def test_bad_names_and_tags_are_refused(tmp_path: Path, device: dict, key: str, words: str) -> None:
    path = _inventory(tmp_path, device)
    with pytest.raises(ConfigError) as err:
        load_inventory(path)
    message = str(err.value)
    assert str(path) in message and f"'{key}'" in message and words in message


def test_non_finite_timeout_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "farm.yaml"
    path.write_text(yaml.safe_dump({"timeout": float("inf"), "devices": [{"name": "pi-01", "target": "rpi4"}]}))
    with pytest.raises(ConfigError, match=r"'timeout': Input should be a finite number"):
        load_inventory(path)
