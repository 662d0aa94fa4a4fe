"""The regression policy: defaults, the inventory's ``regression:`` section, and its errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.errors import ConfigError
from pipeline.farm.inventory import load_inventory
from pipeline.farm.policy import DEFAULT_POLICY, Policy, RegressionSettings

TARGET: dict[str, Any] = {
    "name": "board",
    "arch": "aarch64",
    "remote_dir": "edgeship",
    "transport": {"type": "ssh", "host": "board.local", "user": "pi"},
}


def _inventory(tmp_path: Path, **sections: Any) -> Path:
    (tmp_path / "board.yaml").write_text(yaml.safe_dump(TARGET))
    path = tmp_path / "farm.yaml"
    path.write_text(yaml.safe_dump({"devices": [{"name": "pi-01", "target": "board.yaml"}], **sections}))
    return path


def test_no_section_gives_the_defaults(tmp_path: Path) -> None:
    assert load_inventory(_inventory(tmp_path)).policy == DEFAULT_POLICY


def test_the_section_overrides_only_what_it_names(tmp_path: Path) -> None:
    loaded = load_inventory(_inventory(tmp_path, regression={"min_effect": 0.08, "confirm": False, "ab_blocks": 12}))
    policy = loaded.policy
    assert (policy.min_effect, policy.confirm, policy.ab_blocks) == (0.08, False, 12)
    assert policy.alpha == DEFAULT_POLICY.alpha and policy.changepoints is True


@pytest.mark.parametrize(
    "section, needle",
    [({"min_efect": 0.05}, "min_efect"), ({"ab_blocks": 1}, "ab_blocks"), ({"alpha": 0.9}, "alpha"), ({"confirm": "maybe"}, "confirm")],
)
def test_bad_keys_are_refused_naming_file_and_key(tmp_path: Path, section: dict[str, Any], needle: str) -> None:
    path = _inventory(tmp_path, regression=section)
    with pytest.raises(ConfigError) as err:
        load_inventory(path)
    message = str(err.value)
    assert str(path) in message and needle in message and "Traceback" not in message


def test_policy_round_trips_through_its_dict() -> None:
    policy = RegressionSettings(min_effect=0.1, ab_alpha=0.01).to_policy()
    assert Policy.from_dict({**policy.to_dict(), "from_a_newer_version": 1}) == policy
