"""Every pipeline stage by name, so the CLI lists stages from the stages themselves, not a copy."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, TypeVar

from pipeline.stages.base import Stage

S = TypeVar("S", bound=type[Stage[Any]])

_STAGES: dict[str, type[Stage[Any]]] = {}


def register_stage(cls: S) -> S:
    """Class decorator: make ``cls`` findable by its ``name``; two stages with one name is a bug."""
    description = getattr(cls, "description", "")
    if not description or "\n" in description:
        raise ValueError(f"stage {cls.__qualname__} needs a one-line description")
    existing = _STAGES.get(cls.name)
    if existing is not None and (existing.__module__, existing.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"stage name {cls.name!r} is taken by {existing.__module__}.{existing.__qualname__}")
    _STAGES[cls.name] = cls
    return cls


def stages() -> dict[str, type[Stage[Any]]]:
    """Every built-in stage by name; importing the modules of ``pipeline.stages`` registers them."""
    import pipeline.stages as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")
    return dict(_STAGES)


def descriptions() -> dict[str, str]:
    """``{stage name: one-line description}`` for every built-in stage, by name."""
    return {name: cls.description for name, cls in sorted(stages().items())}
