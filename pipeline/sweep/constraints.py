"""``--select "latency_ms<=5,accuracy>=0.9,size_kb<=120"``: parse constraints, pick a variant.

The best variant is the most accurate one that meets every constraint (ties go to the faster
one). When none does, the answer says which constraint came closest to being met, and by how much,
because "nothing fits" alone leaves the user guessing which knob to turn.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

from pipeline import formatting as fmt
from pipeline.errors import ConfigError

METRICS: dict[str, str] = {
    "latency_ms": "p50 latency on the target, ms",
    "accuracy": "host top-1 on the whole test split",
    "size_kb": ".tflite size, KB (1024 bytes)",
    "parameters": "parameter count",
    "macs": "multiply-accumulates per image",
}
OPERATORS: dict[str, Callable[[float, float], bool]] = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}
# Used with fullmatch on a stripped term ("$" alone would also match before a trailing newline).
_TERM = re.compile(r"([a-z_]+)\s*(<=|>=|<|>)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)")


@dataclass(frozen=True)
class Constraint:
    metric: str
    op: str
    value: float

    def holds(self, row: Mapping[str, Any]) -> bool:
        got = row.get(self.metric)
        return got is not None and OPERATORS[self.op](float(got), self.value)

    def shortfall(self, row: Mapping[str, Any]) -> float:
        """How far ``row`` misses, relative to the limit (0 when it holds, inf when unmeasured)."""
        got = row.get(self.metric)
        if got is None:
            return float("inf")
        if self.holds(row):
            return 0.0
        return abs(float(got) - self.value) / max(abs(self.value), 1e-12)

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"


def parse_constraints(text: str) -> list[Constraint]:
    """Parse ``metric<op>number`` terms separated by commas; raise ConfigError naming the bad term."""
    terms = [t for t in (part.strip() for part in text.split(",")) if t]
    if not terms:
        raise ConfigError(f"The constraint expression {text!r} is empty. Write e.g. \"latency_ms<=5,accuracy>=0.9\".")
    constraints = []
    for term in terms:
        match = _TERM.fullmatch(term)
        if not match:
            raise ConfigError(
                f"Cannot parse the constraint {term!r} in {text!r}: write metric<=number or metric>=number "
                f"(also < and >), separated by commas, with metrics {', '.join(METRICS)}."
            )
        metric, op, value = match.groups()
        if metric not in METRICS:
            raise ConfigError(f"Unknown metric {metric!r} in the constraint {term!r}; known metrics: {', '.join(METRICS)}.")
        constraints.append(Constraint(metric, op, float(value)))
    return constraints


@dataclass
class Selection:
    best: Optional[int]  # index into the rows
    feasible: list[int] = field(default_factory=list)
    closest: Optional[Constraint] = None  # when nothing fits: the constraint nearest to being met
    closest_gap: Optional[float] = None  # its relative shortfall in the variant nearest to meeting everything
    closest_row: Optional[int] = None
    message: str = ""


def select(rows: Sequence[Mapping[str, Any]], constraints: Sequence[Constraint]) -> Selection:
    """The most accurate row meeting all ``constraints``, or an explanation of the nearest miss."""
    feasible = [i for i, row in enumerate(rows) if all(c.holds(row) for c in constraints)]
    if feasible:
        best = max(feasible, key=lambda i: (rows[i].get("accuracy") or 0.0, -(rows[i].get("latency_ms") or float("inf"))))
        return Selection(best=best, feasible=feasible, message=f"{len(feasible)} of {len(rows)} variants meet {_join(constraints)}")
    if not rows:
        return Selection(best=None, message="the sweep has no measured variants")
    # The variant that misses by the least in total, then the constraint it misses by the least.
    nearest = min(range(len(rows)), key=lambda i: sum(c.shortfall(rows[i]) for c in constraints))
    missed = [c for c in constraints if not c.holds(rows[nearest])]
    closest = min(missed, key=lambda c: c.shortfall(rows[nearest]))
    got = rows[nearest].get(closest.metric)
    others = [str(c) for c in missed if c is not closest]
    message = (
        f"No variant meets {_join(constraints)}. Closest: variant {rows[nearest].get('name')} misses {closest} "
        f"with {closest.metric}={fmt.general(got, missing='None')} ({closest.shortfall(rows[nearest]):.1%} short)"
        + (f" and also misses {', '.join(others)}" if others else "")
        + "."
    )
    return Selection(
        best=None, closest=closest, closest_gap=closest.shortfall(rows[nearest]), closest_row=nearest, message=message
    )


def _join(constraints: Sequence[Constraint]) -> str:
    return ", ".join(str(c) for c in constraints)
