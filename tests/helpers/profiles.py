"""Small build profiles for tests: a base dict with some sections overridden."""

from __future__ import annotations

import copy
from typing import Any


def merged(base: dict[str, Any], **sections: Any) -> dict[str, Any]:
    """A deep copy of ``base`` where each dict in ``sections`` updates that section's keys and
    anything else replaces the section, so a test states only what it changes."""
    data = copy.deepcopy(base)
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return data
