"""Pareto fronts: the variants no other variant beats on every objective at once."""

from __future__ import annotations

from typing import Any, Mapping, Sequence


def dominates(a: Mapping[str, Any], b: Mapping[str, Any], maximize: Sequence[str], minimize: Sequence[str]) -> bool:
    """``a`` is at least as good as ``b`` everywhere and strictly better somewhere."""
    no_worse = all(a[k] >= b[k] for k in maximize) and all(a[k] <= b[k] for k in minimize)
    better = any(a[k] > b[k] for k in maximize) or any(a[k] < b[k] for k in minimize)
    return no_worse and better


def pareto_front(points: Sequence[Mapping[str, Any]], maximize: Sequence[str] = (), minimize: Sequence[str] = ()) -> list[int]:
    """Indices of the non-dominated points, ordered by the first minimized (else maximized) key.

    Points missing a value for any objective (a variant that failed to measure) are left out.
    Exact duplicates are all kept: neither dominates the other.
    """
    keys = [*maximize, *minimize]
    if not keys:
        raise ValueError("a Pareto front needs at least one objective")
    usable = [i for i, p in enumerate(points) if all(p.get(k) is not None for k in keys)]
    front = [i for i in usable if not any(dominates(points[j], points[i], maximize, minimize) for j in usable if j != i)]
    order = minimize[0] if minimize else maximize[0]
    return sorted(front, key=lambda i: points[i][order], reverse=not minimize)
