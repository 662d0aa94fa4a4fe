"""One clock for every timestamp edgeship writes: UTC, ISO 8601, so stored times sort as text."""

from __future__ import annotations

import datetime as _dt


def utc_now(timespec: str = "microseconds") -> str:
    """Now in UTC as ``YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00``; ``timespec`` as for ``datetime.isoformat``."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec=timespec)


def utc_stamp(fraction: bool = False) -> str:
    """Now in UTC as a file-name-safe stamp, ``20261202T223000Z`` (with ``.ffffff`` when ``fraction``)."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ" if fraction else "%Y%m%dT%H%M%SZ")


def utc_seconds_z() -> str:
    """Now in UTC to the second with a ``Z`` suffix, ``2026-12-02T22:30:00Z``: the stage cache's
    ``finished`` field, which older cache entries already hold in this form."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
