"""How numbers read in tables and reports, in one place so the terminal, Markdown and HTML agree."""

from __future__ import annotations

import math
from typing import Any, Optional

MISSING = "–"
# The plain hyphen the build and sweep tables have always shown for a missing value.
HYPHEN = "-"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def number(value: Any, spec: str = ".3f", *, scale: float = 1.0, suffix: str = "", missing: str = MISSING) -> str:
    """``value * scale`` formatted with ``spec`` plus ``suffix``; ``missing`` for None, NaN or non-numbers."""
    if not _is_number(value):
        return missing
    # No multiplication at scale 1, so an int stays an int (``,`` and ``d`` specs need one).
    return f"{value * scale if scale != 1.0 else value:{spec}}{suffix}"


def ms(value: Any, *, unit: bool = True, compact: bool = False, missing: str = MISSING) -> str:
    """A latency in milliseconds with as many digits as its size deserves (0.0661, 1.23, 123.4).

    ``compact`` is the narrower spelling of chat-sized tables: three significant figures below
    10 ms (0.0661, 1.23), one decimal from there on (12.3, 123.4).
    """
    if not _is_number(value):
        return missing
    if compact:
        text = f"{value:.3g}" if value < 10 else f"{value:.1f}"
    else:
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
    # Divided, not scaled by 1e-6: the product rounds differently at x.xx5 boundaries.
    return f"{value / 1e6:.2f}M" if _is_number(value) else missing


def kilobytes(nbytes: Any, digits: int = 1, *, missing: str = MISSING) -> str:
    """A byte count in KB of 1024 bytes, as ``118.3 KB`` (the unit of .tflite and bundle sizes)."""
    return number(nbytes, f".{digits}f", scale=1 / 1024, suffix=" KB", missing=missing)
