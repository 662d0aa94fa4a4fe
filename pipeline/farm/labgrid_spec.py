"""What an inventory says about labgrid: which coordinator, and which place a device is.

Only the settings live here (no labgrid import), so an inventory that names labgrid validates, and
``edgeship farm show`` works, on a machine without the ``edgeship[labgrid]`` extra; the farm runner
refuses to start such a run with an error naming the extra (pipeline/farm/labgrid.py).
"""

from __future__ import annotations

from typing import Optional

from pydantic import Field, model_validator

from pipeline.config.loader import Strict


class LabgridSettings(Strict):
    """Inventory-level ``labgrid:``: the coordinator every labgrid device is reserved through."""

    coordinator: Optional[str] = Field(None, description="host:port of labgrid-coordinator; else $LG_COORDINATOR")
    wait: float = Field(600.0, ge=0, description="seconds to wait for a place someone else holds before recording 'busy'")


class LabgridPlace(Strict):
    """A device's ``labgrid:``: one named place, or any place whose tags match (reserved by filter)."""

    place: Optional[str] = None
    tags: dict[str, str] = Field(default_factory=dict)
    wait: Optional[float] = Field(None, ge=0, description="overrides the inventory's labgrid.wait")

    @model_validator(mode="after")
    def _one_way(self) -> "LabgridPlace":
        if bool(self.place) == bool(self.tags):
            raise ValueError("give either place: NAME or tags: {key: value}, not both and not neither")
        return self
