"""``edgeship farm show``: resolved settings with their sources, readable off a terminal, errors in one paragraph."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from click.testing import CliRunner

import pipeline.cli.farm_show  # noqa: F401  (registers `farm show` until pipeline/cli/__init__ imports it)
from pipeline.cli import main
from pipeline.paths import PROJECT_ROOT

EXAMPLE = str(PROJECT_ROOT / "targets" / "farm.yaml")


def _row(output: str, setting: str, after: str) -> str:
    """The first table line for ``setting`` after the line naming ``after`` (a device)."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if after in line)
    return next(line for line in lines[start:] if f" {setting} " in line)


def test_show_prints_each_value_and_its_source() -> None:
    result = CliRunner().invoke(main, ["farm", "show", "-i", EXAMPLE])
    assert result.exit_code == 0, result.output
    out = result.output
    for name in ("pi4-bench-01", "pi4-bench-02", "pi5-bench-01", "pi3-legacy", "pixel-termux"):
        assert name in out
    host = _row(out, "host", "pi4-bench-02")
    assert "10.0.4.22" in host and "device" in host
    known = _row(out, "known_hosts", "pi4-bench-02")
    assert "rack_a_known_hosts" in known and "group rack-a" in known
    user = _row(out, "user", "pi3-legacy")
    assert " pi " in user and "group legacy" in user
    port = _row(out, "port", "pixel-termux")
    assert "8022" in port and "targets/android-termux.yaml" in port
    assert "…" not in out  # off a terminal the table prints whole


def test_show_json_and_tags() -> None:
    result = CliRunner().invoke(main, ["farm", "show", "-i", EXAMPLE, "--tags", "rpi4", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert sorted(data) == ["pi4-bench-01", "pi4-bench-02"]
    assert data["pi4-bench-01"]["host"] == {"value": "10.0.4.21", "from": "device"}
    assert data["pi4-bench-01"]["user"]["from"] == "defaults"
    assert data["pi4-bench-01"]["class"]["value"] == "rpi4"


def test_show_labgrid_place(tmp_path: Path) -> None:
    path = tmp_path / "farm.yaml"
    path.write_text(yaml.safe_dump({"devices": [{"name": "lab-pi", "target": "rpi4", "labgrid": {"place": "pi4-07"}}]}))
    result = CliRunner().invoke(main, ["farm", "show", "-i", str(path), "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)["lab-pi"]
    assert shown["labgrid"] == {"value": "pi4-07", "from": "device"}
    # the target's raspberrypi.local is not what the farm will use: the place's NetworkService is
    assert shown["host"] == {"value": "(from the place)", "from": "labgrid NetworkService, when acquired"}
    assert shown["user"]["value"] == "(from the place)" and shown["remote_dir"]["from"].startswith("target ")


def test_show_bad_inventory_is_one_paragraph(tmp_path: Path) -> None:
    path = tmp_path / "farm.yaml"
    path.write_text(yaml.safe_dump({"devices": [{"name": "a", "target": "rpi4", "groups": ["rack-z"]}]}))
    result = CliRunner().invoke(main, ["farm", "show", "-i", str(path)])
    assert result.exit_code == 1 and isinstance(result.exception, (SystemExit, type(None)))
    assert "group 'rack-z'" in result.output and "device 'a'" in result.output and "Traceback" not in result.output
