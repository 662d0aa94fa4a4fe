"""What is in ``results/cache`` and how to trim it: every sweep variant leaves trained models there.

An entry is ``<stage>/<recipe id>/`` with a ``meta.json`` (see :mod:`pipeline.stages.base`).
Pruning removes whole entries only, each by renaming it to a hidden ``.*.pruning`` name first, so
a half-deleted entry never looks finished to a later build.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from pipeline.stages.base import META, load_artifact


@dataclass(frozen=True)
class CacheEntry:
    stage: str
    recipe_id: str
    path: Path
    bytes: int
    finished: float  # unix time of meta.json
    inputs: tuple[str, ...]  # recipe ids this entry was made from
    bundle_id: Optional[str]  # set on package entries

    @property
    def age_days(self) -> float:
        return max(time.time() - self.finished, 0.0) / 86400


def _size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def list_cache(root: Path) -> list[CacheEntry]:
    """Finished entries, oldest first; unfinished or unreadable directories are skipped."""
    entries = []
    if not root.is_dir():
        return entries
    for stage_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for entry in sorted(p for p in stage_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            artifact = load_artifact(stage_dir.name, entry.name, root)
            if artifact is None:  # unfinished or unreadable: not an entry
                continue
            try:
                finished = (entry / META).stat().st_mtime
            except OSError:
                continue
            metrics = artifact.meta.get("metrics") if isinstance(artifact.meta.get("metrics"), dict) else {}
            inputs = artifact.meta.get("inputs") if isinstance(artifact.meta.get("inputs"), dict) else {}
            entries.append(
                CacheEntry(
                    stage=stage_dir.name,
                    recipe_id=entry.name,
                    path=entry,
                    bytes=_size(entry),
                    finished=finished,
                    inputs=tuple(str(v) for v in inputs.values()),
                    bundle_id=metrics.get("bundle_id"),
                )
            )
    return sorted(entries, key=lambda e: e.finished)


def bundle_lineage(entries: Iterable[CacheEntry], bundles_root: Path) -> set[str]:
    """Recipe ids of the package entries whose bundle is published, and everything they came from."""
    entries = list(entries)
    by_id = {e.recipe_id: e for e in entries}
    published = {p.name for p in bundles_root.iterdir() if p.is_dir()} if bundles_root.is_dir() else set()
    keep: set[str] = set()
    todo = [e.recipe_id for e in entries if e.bundle_id and e.bundle_id in published]
    while todo:
        recipe = todo.pop()
        if recipe in keep or recipe not in by_id:
            continue
        keep.add(recipe)
        todo.extend(by_id[recipe].inputs)
    return keep


def prune_cache(
    root: Path, *, older_than_days: Optional[float] = None, keep_bundles: bool = False, bundles_root: Optional[Path] = None,
    dry_run: bool = False,
) -> list[CacheEntry]:
    """Remove entries older than ``older_than_days`` (all when None); with ``keep_bundles``, never the
    entries behind a published bundle, so rebuilding it stays a cache hit. Returns what was removed."""
    entries = list_cache(root)
    kept = bundle_lineage(entries, bundles_root) if keep_bundles and bundles_root is not None else set()
    doomed = [
        e for e in entries
        if e.recipe_id not in kept and (older_than_days is None or e.age_days > older_than_days)
    ]
    if dry_run:
        return doomed
    for entry in doomed:
        hidden = entry.path.with_name(f".{entry.recipe_id}.pruning")
        os.replace(entry.path, hidden)  # from here on no build sees it as finished
        shutil.rmtree(hidden, ignore_errors=True)
    return doomed
