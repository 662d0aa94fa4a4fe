"""Where generated files live. Everything under ``results/`` is git-ignored and rebuildable."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def results_dir() -> Path:
    """``$EDGESHIP_RESULTS`` if set (tests point it at a tmp dir), else ``<project>/results``."""
    return Path(os.environ.get("EDGESHIP_RESULTS", PROJECT_ROOT / "results"))


def cache_dir() -> Path:
    return results_dir() / "cache"


def bundles_dir() -> Path:
    return results_dir() / "bundles"


def profiles_results_dir() -> Path:
    return results_dir() / "profiles"


def agent_path() -> Path:
    return PROJECT_ROOT / "device_agents" / "agent.py"


def builtin_profiles_dir() -> Path:
    return PROJECT_ROOT / "profiles"


def builtin_targets_dir() -> Path:
    return PROJECT_ROOT / "targets"


def generated_targets_dirs() -> list[Path]:
    """Targets written by edgeship itself while the device they describe runs (``edgeship emu start``):
    each emulated kind's home (``results/emu``, ``results/emu-rpi3``) has its own."""
    return [results_dir() / "emu" / "targets", *sorted(results_dir().glob("emu-*/targets"))]
