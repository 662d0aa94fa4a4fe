"""How numbers read in tables and reports, in one place so the terminal, Markdown and HTML agree."""

from __future__ import annotations

import math
from typing import Any, Optional

MISSING = "–"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def number(value: Any, spec: str = ".3f", *, scale: float = 1.0, suffix: str = "", missing: str = MISSING) -> str:
    """``value * scale`` formatted with ``spec`` plus ``suffix``; ``missing`` for None, NaN or non-numbers."""
    if not _is_number(value):
        return missing
    return f"{value * scale:{spec}}{suffix}"


def ms(value: Any, *, unit: bool = True, missing: str = MISSING) -> str:
    """A latency in milliseconds with as many digits as its size deserves (0.0661, 1.23, 123.4)."""
    if not _is_number(value):
        return missing
    text = f"{value:.4f}" if value < 1 else f"{value:.2f}" if value < 100 else f"{value:.1f}"
    return f"{text} ms" if unit else text


def percent(fraction: Any, digits: int = 2, *, signed: bool = False, missing: str = MISSING) -> str:
    """A fraction (0.9322) as a percentage (``93.22%``); ``signed`` for deltas (``+0.15%``)."""
    return number(fraction, f"{'+' if signed else ''}.{digits}f", scale=100.0, suffix="%", missing=missing)


def ratio(value: Any, digits: int = 3, *, missing: str = MISSING) -> str:
    """A candidate/baseline ratio as ``×1.057``."""
    return f"×{value:.{digits}f}" if _is_number(value) else missing


def general(value: Any, digits: int = 4, *, missing: str = MISSING) -> str:
    """Any number in ``digits`` significant figures, anything else as text (constraint values, ids)."""
    if value is None:
        return missing
    return f"{value:.{digits}g}" if _is_number(value) else str(value)


def millions(value: Optional[int], *, missing: str = MISSING) -> str:
    """A parameter or MAC count as ``1.23M``."""
    return number(value, ".2f", scale=1e-6, suffix="M", missing=missing)
