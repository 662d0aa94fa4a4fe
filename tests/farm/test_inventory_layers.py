"""Inventory layers over a target file: each layer wins over the ones below it, and says so."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.errors import ConfigError
from pipeline.farm.inventory import load_inventory

TARGET: dict[str, Any] = {
    "name": "board",
    "arch": "aarch64",
    "threads": 4,
    "python": "python3",
    "remote_dir": "edgeship",
    "default_profile": "quick",
    "transport": {"type": "ssh", "host": "board.local", "user": "pi", "known_hosts": "/etc/kh"},
}


def _write(tmp_path: Path, inventory: dict[str, Any], target: dict[str, Any] = TARGET) -> Path:
    (tmp_path / "board.yaml").write_text(yaml.safe_dump(target))
    path = tmp_path / "farm.yaml"
    path.write_text(yaml.safe_dump(inventory))
    return path


def _one(tmp_path: Path, device: dict[str, Any], **inventory: Any):
    entry = dict({"name": "dev-1", "target": "board.yaml"}, **device)
    loaded = load_inventory(_write(tmp_path, dict(inventory, devices=[entry])))
    return loaded.devices[0]


def test_target_file_alone_is_the_device_class(tmp_path: Path) -> None:
    device = _one(tmp_path, {})
    t = device.target
    assert (t.name, t.transport.host, t.transport.port, t.transport.user, t.remote_dir) == ("board", "board.local", 22, "pi", "edgeship")
    assert device.device_class == "board" and device.profile == "quick"
    target = f"target {tmp_path / 'board.yaml'}"
    assert device.sources["host"] == target and device.sources["remote_dir"] == target
    assert device.sources["port"] == "built-in default"  # the target file does not say 22
    assert device.sources["profile"] == f"{target} default_profile"


def test_defaults_override_the_target(tmp_path: Path) -> None:
    device = _one(tmp_path, {}, defaults={"user": "ci", "threads": 2, "host_key_policy": "accept-new"})
    assert (device.target.transport.user, device.target.threads, device.target.transport.host_key_policy) == ("ci", 2, "accept-new")
    assert {device.sources[k] for k in ("user", "threads", "host_key_policy")} == {"defaults"}
    assert device.sources["host"].startswith("target ")


def test_group_overrides_defaults_and_the_first_listed_group_wins(tmp_path: Path) -> None:
    device = _one(
        tmp_path, {"groups": ["rack-a", "slow"]},
        defaults={"user": "ci", "port": 2200, "python": "python3.11"},
        groups={"rack-a": {"user": "rack", "known_hosts": "/k/a"}, "slow": {"user": "slow", "port": 2222, "threads": 1}},
    )
    t = device.target
    assert (t.transport.user, t.transport.known_hosts, t.transport.port, t.threads, t.python) == ("rack", "/k/a", 2222, 1, "python3.11")
    assert device.sources["user"] == "group rack-a" and device.sources["known_hosts"] == "group rack-a"
    assert device.sources["port"] == "group slow" and device.sources["threads"] == "group slow"
    assert device.sources["python"] == "defaults"
    assert device.groups == ("rack-a", "slow")


def test_device_overrides_its_groups(tmp_path: Path) -> None:
    device = _one(
        tmp_path, {"groups": ["rack-a"], "host": "10.0.4.21", "user": "me", "remote_dir": "/srv/edgeship/dev-1", "python": "/opt/py/bin/python"},
        defaults={"user": "ci"}, groups={"rack-a": {"user": "rack", "host": "rack-a.local"}},
    )
    t = device.target
    assert (t.transport.host, t.transport.user, t.remote_dir, t.python) == ("10.0.4.21", "me", "/srv/edgeship/dev-1", "/opt/py/bin/python")
    assert all(device.sources[k] == "device" for k in ("host", "user", "remote_dir", "python"))


def test_key_files_expand_and_null_unsets(tmp_path: Path) -> None:
    target = dict(TARGET, transport=dict(TARGET["transport"], key_file="/keys/board"))
    _write(tmp_path, {"devices": [{"name": "x", "target": "board.yaml"}]}, target)
    inventory = {
        "defaults": {"key_file": "~/.ssh/farm_ed25519", "known_hosts": "~/.ssh/farm_known_hosts"},
        "devices": [
            {"name": "farm-key", "target": "board.yaml", "host": "a"},
            {"name": "agent", "target": "board.yaml", "host": "b", "key_file": None},
        ],
    }
    (tmp_path / "farm.yaml").write_text(yaml.safe_dump(inventory))
    farm_key, agent = load_inventory(tmp_path / "farm.yaml").devices
    assert farm_key.target.transport.key_file == os.path.expanduser("~/.ssh/farm_ed25519")
    assert farm_key.target.transport.known_hosts == os.path.expanduser("~/.ssh/farm_known_hosts")
    assert agent.target.transport.key_file is None and agent.sources["key_file"] == "device"


def test_profile_precedence_and_source(tmp_path: Path) -> None:
    assert _one(tmp_path, {}, profile="default").sources["profile"] == "inventory"
    device = _one(tmp_path, {"profile": "tiny"}, profile="default")
    assert (device.profile, device.sources["profile"]) == ("tiny", "device")
    path = tmp_path / "farm.yaml"
    forced = load_inventory(path, profile_override="fast").devices[0]
    assert (forced.profile, forced.sources["profile"]) == ("fast", "--profile")


LOCAL = {"name": "here", "arch": "x86_64", "python": "host", "remote_dir": "devices/here", "transport": {"type": "local"}}


def test_defaults_transport_keys_skip_local_targets(tmp_path: Path) -> None:
    device = _one(tmp_path, {"threads": 1}, defaults={"user": "ci", "python": "python3"})
    assert device.target.transport.user == "ci"
    (tmp_path / "here.yaml").write_text(yaml.safe_dump(LOCAL))
    path = tmp_path / "farm.yaml"
    path.write_text(yaml.safe_dump({"defaults": {"user": "ci"}, "devices": [{"name": "h", "target": "here.yaml", "threads": 1}]}))
    local = load_inventory(path).devices[0]
    assert local.target.transport.type == "local" and local.target.threads == 1
    assert "user" not in local.sources and local.sources["transport"].startswith("target ")
    assert [row[0] for row in local.settings()] == ["class", "tags", "groups", "profile", "transport", "remote_dir", "python", "threads"]


@pytest.mark.parametrize("layer", ["device", "group"])
def test_transport_keys_on_a_local_target_are_an_error(tmp_path: Path, layer: str) -> None:
    (tmp_path / "here.yaml").write_text(yaml.safe_dump(LOCAL))
    entry: dict[str, Any] = {"name": "h", "target": "here.yaml"}
    inventory: dict[str, Any] = {"devices": [entry]}
    if layer == "device":
        entry["host"] = "10.0.0.9"
    else:
        entry["groups"] = ["rack"]
        inventory["groups"] = {"rack": {"host": "10.0.0.9"}}
    path = tmp_path / "farm.yaml"
    path.write_text(yaml.safe_dump(inventory))
    with pytest.raises(ConfigError) as err:
        load_inventory(path)
    message = str(err.value)
    assert str(path) in message and "device 'h'" in message and "'host'" in message and "local transport" in message
    assert ("group rack" in message) == (layer == "group")


@pytest.mark.parametrize(
    "device, groups, key, words",
    [
        ({"port": 70000}, {}, "transport.port", "port from device"),
        ({"groups": ["bad"]}, {"bad": {"remote_dir": "/"}}, "remote_dir", "remote_dir from group bad"),
        ({"host": "pi@board"}, {}, "transport.host", "plain host name"),
        ({"threads": 0}, {}, "threads", "threads from device"),
        ({"host_key_policy": "yolo"}, {}, "transport.host_key_policy", "host_key_policy from device"),
    ],
)
def test_overrides_get_every_target_check(tmp_path: Path, device: dict, groups: dict, key: str, words: str) -> None:
    path = _write(tmp_path, {"groups": groups, "devices": [dict({"name": "dev-1", "target": "board.yaml"}, **device)]})
    with pytest.raises(ConfigError) as err:
        load_inventory(path)
    message = str(err.value)
    assert str(path) in message and "device 'dev-1'" in message and f"'{key}'" in message and words in message


def test_a_broken_target_file_still_names_the_target_and_the_device(tmp_path: Path) -> None:
    path = _write(tmp_path, {"devices": [{"name": "dev-1", "target": "board.yaml"}]}, dict(TARGET, arch="sparc"))
    with pytest.raises(ConfigError) as err:
        load_inventory(path)
    message = str(err.value)
    assert str(tmp_path / "board.yaml") in message and "device 'dev-1'" in message and str(path) in message and "'arch'" in message
