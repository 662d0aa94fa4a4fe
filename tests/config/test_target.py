"""Target files: every shipped example loads, and every mistake names the file and the key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from pipeline.config.target import TargetConfig, is_target_file, load_target
from pipeline.errors import ConfigError
from pipeline.paths import builtin_targets_dir

# targets/farm.yaml is the example farm inventory (tests/farm checks it), not a target.
SHIPPED = sorted(p.stem for p in builtin_targets_dir().glob("*.yaml") if p.stem != "farm")


def test_the_documented_targets_ship():
    assert {"rpi4", "rpi5", "rpi3", "android-termux", "generic-aarch64", "local"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_target_loads_and_is_commented(name: str):
    target = load_target(name)
    assert isinstance(target, TargetConfig) and target.name == name
    text = (builtin_targets_dir() / f"{name}.yaml").read_text()
    assert text.lstrip().startswith("#"), "each target explains itself so users can copy it"


def test_shipped_target_facts():
    rpi3, termux, local = load_target("rpi3"), load_target("android-termux"), load_target("local")
    assert rpi3.arch == "armv7l" and rpi3.runtime_preference == ["tflite_runtime"]
    assert termux.os == "termux" and termux.transport.port == 8022 and termux.remote_dir.startswith("~/")
    assert local.transport.type == "local" and local.remote_dir == "devices/local"
    rpi4 = load_target("rpi4")
    assert rpi4.transport.host_key_policy == "strict"
    assert rpi4.transport.known_hosts == os.path.expanduser("~/.ssh/known_hosts")


def _write(tmp_path: Path, data: dict, name: str = "dev.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


BASE = {"arch": "aarch64", "transport": {"type": "ssh", "host": "pi.local", "user": "pi"}}


def test_defaults_and_name_from_file(tmp_path: Path):
    target = load_target(_write(tmp_path, BASE, "my-pi.yaml"))
    assert target.name == "my-pi"
    t = target.transport
    assert (t.port, t.host_key_policy, t.connect_timeout, t.command_timeout, t.keepalive, t.retries, t.retry_backoff) == (
        22, "strict", 10.0, 600.0, 15, 3, 1.0)
    assert t.key_file is None and t.known_hosts == os.path.expanduser("~/.ssh/known_hosts")
    assert (target.keep_releases, target.default_profile, target.emulated, target.python) == (3, "default", False, "python3")
    assert (target.profiling.runs, target.profiling.min_seconds, target.profiling.warmup) == (100, 2.0, 10)
    assert target.profiling.eval_images is None  # every eval image is scored unless a target says otherwise
    assert target.runtime == "auto"


def test_key_file_tilde_is_expanded(tmp_path: Path):
    data = dict(BASE, transport=dict(BASE["transport"], key_file="~/.ssh/id_pi"))
    assert load_target(_write(tmp_path, data)).transport.key_file == os.path.expanduser("~/.ssh/id_pi")


@pytest.mark.parametrize(
    "change, key, words",
    [
        ({"transport": {"type": "ssh", "host": "h", "user": "u", "hostname": "x"}}, "transport.hostname", "unknown key"),
        ({"transport": {"type": "ssh", "host": "h", "user": "u", "port": 70000}}, "transport.port", "less than or equal to 65535"),
        ({"transport": {"type": "ssh", "host": "h", "user": "u", "port": "ssh"}}, "transport.port", "integer"),
        ({"transport": {"type": "ssh", "host": "h", "user": "u", "host_key_policy": "auto-add"}}, "transport.host_key_policy", "'strict' or 'accept-new'"),
        ({"transport": {"type": "ssh", "host": "h"}}, "transport.user", "missing required key"),
        ({"transport": {"type": "telnet"}}, "transport", "telnet"),
        ({"threds": 4}, "threds", "unknown key"),
        ({"arch": "arm64"}, "arch", "'aarch64', 'armv7l' or 'x86_64'"),
        ({"runtime": ["tflite"]}, "runtime", "'tflite' is not a TFLite runtime"),
        ({"keep_releases": 0}, "keep_releases", "greater than or equal to 1"),
        ({"profiling": {"runs": 10, "min_secs": 1}}, "profiling.min_secs", "unknown key"),
        ({"python": "host"}, "transport", "only works with transport type 'local'"),
        ({"name": "my pi"}, "name", "letters, digits"),
        ({"name": "rpi4\n"}, "name", "letters, digits"),
        ({"profiling": {"min_seconds": float("inf")}}, "profiling.min_seconds", "finite number"),
        ({"profiling": {"eval_images": 0}}, "profiling.eval_images", "greater than 0"),
        ({"transport": {"type": "ssh", "host": "h", "user": "u", "command_timeout": float("inf")}}, "transport.command_timeout", "finite number"),
        ({"transport": {"type": "ssh", "host": "h", "user": "u", "connect_timeout": float("nan")}}, "transport.connect_timeout", "finite number"),
        ({"transport": {"type": "local", "command_timeout": float("inf")}, "python": "host"}, "transport.command_timeout", "finite number"),
        ({"remote_dir": "/"}, "remote_dir", "file system root"),
        ({"remote_dir": "//./"}, "remote_dir", "file system root"),
        ({"remote_dir": "/etc"}, "remote_dir", "system directory /etc"),
        ({"remote_dir": "/usr/"}, "remote_dir", "system directory /usr"),
        ({"remote_dir": "/home"}, "remote_dir", "system directory /home"),
        ({"remote_dir": "/home/pi"}, "remote_dir", "home directory /home/pi itself"),
        ({"remote_dir": "~"}, "remote_dir", "login home itself"),
        ({"remote_dir": "~/."}, "remote_dir", "login home itself"),
        ({"remote_dir": "."}, "remote_dir", "login home"),
        ({"remote_dir": "edgeship/../.."}, "remote_dir", "'..' components"),
        ({"remote_dir": "/home/pi/../../etc"}, "remote_dir", "'..' components"),
        ({"remote_dir": " "}, "remote_dir", "is empty"),
    ],
)
def test_schema_errors_name_the_file_and_key(tmp_path: Path, change: dict, key: str, words: str):
    path = _write(tmp_path, dict(BASE, **change))
    with pytest.raises(ConfigError) as err:
        load_target(path)
    message = str(err.value)
    assert str(path) in message
    assert f"'{key}'" in message
    assert words in message
    assert "\n" not in message


def test_unknown_target_name_lists_the_known_ones():
    with pytest.raises(ConfigError) as err:
        load_target("no-such-device")
    assert "No target named 'no-such-device'" in str(err.value)
    assert "rpi4" in str(err.value) and "local" in str(err.value)


def test_known_targets_leave_out_the_farm_inventory():
    with pytest.raises(ConfigError) as err:
        load_target("no-such-device")
    known = str(err.value).split("Known targets: ")[1].split(";")[0].split(", ")
    assert known == SHIPPED and "farm" not in known


def test_inventories_are_told_apart_by_content_not_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An inventory under any name stays out of the list; a broken file stays in (its error names it)."""
    (tmp_path / "board.yaml").write_text(yaml.safe_dump(BASE))
    (tmp_path / "racks.yaml").write_text(yaml.safe_dump({"name": "lab-3", "devices": [{"name": "d", "target": "board", "host": "h"}]}))
    (tmp_path / "farm-notes.yaml").write_text(yaml.safe_dump(dict(BASE, description="a target whose name says farm")))
    (tmp_path / "broken.yaml").write_text("arch: [\n")
    monkeypatch.setattr("pipeline.config.target.builtin_targets_dir", lambda: tmp_path)
    with pytest.raises(ConfigError, match=r"Known targets: board, broken, farm-notes;"):
        load_target("nothing-here")
    assert is_target_file(tmp_path / "board.yaml") and not is_target_file(tmp_path / "racks.yaml")


def test_loading_an_inventory_as_a_target_says_what_it_is():
    with pytest.raises(ConfigError) as err:
        load_target("farm")
    message = str(err.value)
    assert "farm.yaml is a farm inventory" in message and "edgeship farm run -i" in message and "\n" not in message


def test_invalid_yaml_names_the_line(tmp_path: Path):
    path = tmp_path / "broken.yaml"
    path.write_text("arch: aarch64\ntransport: [\n")
    with pytest.raises(ConfigError, match=r"broken.yaml is not valid YAML at line"):
        load_target(path)


def test_host_python_resolves_to_this_interpreter(tmp_path: Path):
    import sys

    target = load_target(_write(tmp_path, {"arch": "x86_64", "python": "host", "transport": {"type": "local"}}))
    assert target.python_argv() == [sys.executable]
    target = load_target(_write(tmp_path, dict(BASE, python="/opt/venv/bin/python -X utf8"), "b.yaml"))
    assert target.python_argv() == ["/opt/venv/bin/python", "-X", "utf8"]


@pytest.mark.parametrize(
    "remote_dir",
    ["/home/pi/edgeship", "~/edgeship", "/opt/edgeship", "/tmp/x", "/data/data/com.termux/files/home/edgeship",
     "edgeship", "devices/local", "/edgeship", "/var/lib/edgeship", "~/a..b/c"],
)
def test_remote_dirs_edgeship_can_own_are_accepted(tmp_path: Path, remote_dir: str):
    assert load_target(_write(tmp_path, dict(BASE, remote_dir=remote_dir))).remote_dir == remote_dir
