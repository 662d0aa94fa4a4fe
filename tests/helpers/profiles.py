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


# The smallest profile that runs every stage for real (teacher, distilled and scratch students,
# int8): seconds per stage. Tests state what they change with ``merged``.
TINY: dict[str, Any] = {
    "name": "tiny",
    "seed": 5,
    "dataset": {"max_train": 800, "max_test": 300, "calibration_count": 60, "eval_count": 60},
    "teacher": {"base_width": 8, "blocks_per_stage": [1, 1], "training": {"epochs": 1, "batch_size": 64}},
    "student": {"family": "mobilenet_v2", "width_multiplier": 0.35, "training": {"epochs": 1, "batch_size": 64}},
    "quantization": {"modes": ["int8"], "ship": "int8", "calibration_samples": 40},
}
