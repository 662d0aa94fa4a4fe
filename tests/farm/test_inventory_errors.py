"""Inventory validation stays strict: each mistake is one error naming the file and the entry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.errors import ConfigError
from pipeline.farm.inventory import load_inventory
from pipeline.paths import PROJECT_ROOT

TARGET: dict[str, Any] = {
    "name": "board",
    "arch": "aarch64",
    "remote_dir": "edgeship",
    "transport": {"type": "ssh", "host": "board.local", "user": "pi"},
}


def _refused(tmp_path: Path, inventory: dict[str, Any]) -> str:
    (tmp_path / "board.yaml").write_text(yaml.safe_dump(TARGET))
    path = tmp_path / "farm.yaml"
    path.write_text(yaml.safe_dump(inventory))
    with pytest.raises(ConfigError) as err:
        load_inventory(path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message and "Traceback" not in message
    return message


def _dev(name: str, **keys: Any) -> dict[str, Any]:
    return dict({"name": name, "target": "board.yaml"}, **keys)


@pytest.mark.parametrize(
    "inventory, needles",
    [
        ({"defaults": {"hots": "x"}, "devices": [_dev("a")]}, ["'defaults.hots'", "unknown key"]),
        ({"groups": {"rack-a": {"prot": 22}}, "devices": [_dev("a")]}, ["'groups.rack-a.prot'", "unknown key"]),
        ({"devices": [_dev("a"), _dev("pi-07", hostname="x")]}, ["'devices.1.hostname'", "devices.1 is device 'pi-07'"]),
        ({"devices": [_dev("a", command_timeout=5)]}, ["'devices.0.command_timeout'", "device 'a'"]),
        ({"groups": {"rack a": {}}, "devices": [_dev("a")]}, ["group name 'rack a'"]),
        ({"devices": [_dev("a", groups=["x", "x"])]}, ["'devices.0.groups'", "lists a group twice", "device 'a'"]),
    ],
)
def test_unknown_and_malformed_keys_name_the_entry(tmp_path: Path, inventory: dict, needles: list[str]) -> None:
    message = _refused(tmp_path, inventory)
    for needle in needles:
        assert needle in message, message


def test_duplicate_device_names(tmp_path: Path) -> None:
    message = _refused(tmp_path, {"devices": [_dev("pi-01", host="a"), _dev("pi-02", host="b"), _dev("pi-01", host="c")]})
    assert "'pi-01' appears twice" in message and "devices.0 and devices.2" in message


def test_unknown_group(tmp_path: Path) -> None:
    message = _refused(tmp_path, {"groups": {"rack-a": {}}, "devices": [_dev("pi-01", groups=["rack-a", "rack-b"])]})
    assert "device 'pi-01' (devices.0)" in message and "group 'rack-b'" in message and "groups: rack-a" in message


def test_unknown_group_with_no_groups_defined(tmp_path: Path) -> None:
    assert "(groups: (none))" in _refused(tmp_path, {"devices": [_dev("pi-01", groups=["rack-a"])]})


def test_two_devices_on_the_same_host_and_port(tmp_path: Path) -> None:
    message = _refused(tmp_path, {"devices": [_dev("pi-01", host="10.0.4.21"), _dev("pi-02", host="10.0.4.21")]})
    assert "devices 'pi-01' and 'pi-02'" in message and "pi@10.0.4.21:22" in message
    assert "host from device" in message and "remote_dir from target" in message


@pytest.mark.parametrize(
    "first, second",
    [
        ({"host": "Pi.Local"}, {"host": "pi.local"}),                                   # host names ignore case
        ({"remote_dir": "~/edgeship"}, {"remote_dir": "edgeship"}),                     # both under the login home
        ({"remote_dir": "/srv/e", "user": "a"}, {"remote_dir": "/srv/e/", "user": "b"}),  # one absolute directory
    ],
)
def test_same_address_written_differently_collides(tmp_path: Path, first: dict, second: dict) -> None:
    message = _refused(tmp_path, {"devices": [_dev("one", **first), _dev("two", **second)]})
    assert "devices 'one' and 'two' both resolve to" in message


def test_distinct_addresses_load(tmp_path: Path) -> None:
    (tmp_path / "board.yaml").write_text(yaml.safe_dump(TARGET))
    devices = [
        _dev("by-port", port=2222),                       # same host, another port
        _dev("by-dir", remote_dir="edgeship-2"),          # same host and port, another directory
        _dev("by-user", user="ci"),                       # another login home
        _dev("plain"),
        _dev("lab", labgrid={"place": "pi4-07"}),         # same address in the file, but labgrid decides
    ]
    path = tmp_path / "farm.yaml"
    path.write_text(yaml.safe_dump({"devices": devices}))
    loaded = load_inventory(path)
    assert [d.name for d in loaded.devices] == ["by-port", "by-dir", "by-user", "plain", "lab"]
    assert loaded.devices[-1].labgrid is not None and loaded.devices[-1].labgrid.place == "pi4-07"


def test_missing_target_still_named(tmp_path: Path) -> None:
    message = _refused(tmp_path, {"devices": [{"name": "pi-01", "target": "no-such-board"}]})
    assert "device 'pi-01'" in message and "no-such-board" in message and "does not exist" in message


def test_shipped_example_resolves_to_distinct_devices() -> None:
    loaded = load_inventory(PROJECT_ROOT / "targets" / "farm.yaml")
    hosts = [(d.target.transport.host, d.target.transport.port) for d in loaded.devices]
    assert len(set(hosts)) == len(hosts) == len(loaded.devices) >= 4
    pi4 = [d for d in loaded.devices if d.device_class == "rpi4"]
    assert len(pi4) >= 2 and len({d.target.transport.host for d in pi4}) == len(pi4)
    assert all(d.sources["host"] == "device" for d in loaded.devices if d.device_class.startswith("rpi"))
    sources = {s for d in loaded.devices for s in d.sources.values()}
    assert {"device", "defaults"} <= sources and any(s.startswith("group ") for s in sources)


def test_a_bad_entry_is_the_only_complaint(tmp_path: Path) -> None:
    message = _refused(tmp_path, {"devices": [_dev("a", tags=["Bad"])]})
    assert "'devices.0.tags'" in message and "at least" not in message
    assert "list at least one device" in _refused(tmp_path, {"devices": []})
