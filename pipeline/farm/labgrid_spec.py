"""What an inventory says about labgrid: which coordinator, and which place a device is.

Only the settings live here (no labgrid import), so an inventory that names labgrid validates, and
``edgeship farm show`` works, on a machine without the ``edgeship[labgrid]`` extra; the farm runner
refuses to start such a run with an error naming the extra (pipeline/farm/labgrid.py).
"""

from __future__ import annotations

import re
from typing import Optional

from pydantic import Field, field_validator, model_validator

from pipeline.config.loader import Strict


class LabgridSettings(Strict):
    """Inventory-level ``labgrid:``: the coordinator every labgrid device is reserved through."""

    coordinator: Optional[str] = Field(None, description="host:port of labgrid-coordinator; else $LG_COORDINATOR")
    wait: float = Field(600.0, ge=0, description="seconds to wait for a place someone else holds before recording 'busy'")
    call_timeout: float = Field(30.0, gt=0, description="seconds any one request to the coordinator may take")


# labgrid's own rules (labgrid.remote.common.TAG_KEY); values must survive `labgrid-client reserve k=v`
# and the `k=v, k=v` listing of `labgrid-client -v places`.
_TAG_KEY = re.compile(r"[a-z][a-z0-9_]+")
_TAG_VALUE = re.compile(r"[A-Za-z0-9_.:/+-]+")


class LabgridPlace(Strict):
    """A device's ``labgrid:``: one named place, or any place whose tags match (reserved by filter)."""

    place: Optional[str] = None
    tags: dict[str, str] = Field(default_factory=dict)
    wait: Optional[float] = Field(None, ge=0, description="overrides the inventory's labgrid.wait")

    @field_validator("place")
    @classmethod
    def _place_name(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not _TAG_VALUE.fullmatch(value):
            raise ValueError(f"place name '{value}' may hold letters, digits and _ . : / + - only")
        return value

    @field_validator("tags")
    @classmethod
    def _labgrid_tags(cls, value: dict[str, str]) -> dict[str, str]:
        for key, tag in value.items():
            if not _TAG_KEY.fullmatch(key):
                raise ValueError(f"tag key '{key}' must be a lower-case letter then lower-case letters, digits or '_' (labgrid's rule)")
            if not _TAG_VALUE.fullmatch(tag):
                raise ValueError(f"tag value '{tag}' (key '{key}') may hold letters, digits and _ . : / + - only")
        return value

    def filters(self) -> dict[str, str]:
        """The reservation filter: labgrid matches a place's name as the tag ``name``."""
        return {"name": self.place} if self.place else dict(self.tags)

    @model_validator(mode="after")
    def _one_way(self) -> "LabgridPlace":
        if bool(self.place) == bool(self.tags):
            raise ValueError("give either place: NAME or tags: {key: value}, not both and not neither")
        return self
