"""Write a chosen sweep variant as a build profile, so ``make deploy`` ships exactly that variant."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import yaml

from pipeline.config.loader import validate
from pipeline.config.profile import BuildProfile
from pipeline.errors import ConfigError
from pipeline.fsutil import atomic_write_text


def write_variant_profile(profile_json: Mapping[str, Any], path: Path, *, name: str | None = None, note: str = "") -> BuildProfile:
    """Validate and atomically write ``profile_json`` as YAML at ``path``; returns the profile."""
    data = dict(profile_json)
    if name:
        data["name"] = name
    profile = validate(BuildProfile, data, f"Selected variant '{data.get('name')}'")
    path = Path(path)
    if path.suffix not in (".yaml", ".yml"):
        raise ConfigError(f"--write-profile {path}: a profile file must end in .yaml or .yml.")
    header = "# Written by `edgeship sweep --select`." + (f" {note}" if note else "") + "\n"
    text = header + yaml.safe_dump(profile.model_dump(mode="json"), sort_keys=False)
    atomic_write_text(path, text)
    return profile
