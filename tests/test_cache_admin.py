"""Listing and pruning results/cache (library and `edgeship cache`)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from click.testing import CliRunner

from pipeline.cache_admin import list_cache, prune_cache


def entry(root: Path, stage: str, recipe: str, inputs: dict | None = None, bundle_id: str | None = None, days_old: float = 0) -> Path:
    path = root / stage / recipe
    path.mkdir(parents=True)
    (path / "model.bin").write_bytes(b"x" * 1000)
    metrics = {"bundle_id": bundle_id} if bundle_id else {}
    (path / "meta.json").write_text(json.dumps({"stage": stage, "inputs": inputs or {}, "metrics": metrics}))
    stamp = time.time() - days_old * 86400
    os.utime(path / "meta.json", (stamp, stamp))
    return path


def small_cache(results: Path) -> Path:
    root = results / "cache"
    entry(root, "data", "d1", days_old=30)
    entry(root, "distill", "s1", {"data": "d1"}, days_old=20)
    entry(root, "distill", "s2", {"data": "d1"}, days_old=10)  # a sweep variant no bundle uses
    entry(root, "package", "p1", {"data": "d1", "student": "s1"}, bundle_id="b1", days_old=5)
    (root / "distill" / ".s3.partial").mkdir()  # an unfinished stage run: not an entry
    (results / "bundles" / "b1").mkdir(parents=True)
    return root


def test_list_shows_finished_entries_oldest_first(tmp_path: Path) -> None:
    entries = list_cache(small_cache(tmp_path))
    assert [e.recipe_id for e in entries] == ["d1", "s1", "s2", "p1"]
    assert entries[0].bytes >= 1000 and entries[-1].bundle_id == "b1" and 29 < entries[0].age_days < 31


def test_prune_older_than_keeps_recent_entries(tmp_path: Path) -> None:
    root = small_cache(tmp_path)
    removed = prune_cache(root, older_than_days=15)
    assert sorted(e.recipe_id for e in removed) == ["d1", "s1"]
    assert [e.recipe_id for e in list_cache(root)] == ["s2", "p1"]
    assert not list(root.rglob("*.pruning"))


def test_keep_bundles_keeps_the_whole_lineage_of_a_published_bundle(tmp_path: Path) -> None:
    root = small_cache(tmp_path)
    removed = prune_cache(root, keep_bundles=True, bundles_root=tmp_path / "bundles")
    assert [e.recipe_id for e in removed] == ["s2"]
    assert [e.recipe_id for e in list_cache(root)] == ["d1", "s1", "p1"]


def test_cli_cache_list_and_prune(tmp_path: Path, monkeypatch) -> None:
    from pipeline.cli import main

    monkeypatch.setenv("EDGESHIP_RESULTS", str(tmp_path))
    small_cache(tmp_path)
    listed = CliRunner().invoke(main, ["cache", "list"])
    assert listed.exit_code == 0 and "4 entries" in listed.output and "b1" in listed.output
    dry = CliRunner().invoke(main, ["cache", "prune", "--dry-run"])
    assert dry.exit_code == 0 and "would remove 4 entries" in dry.output and len(list_cache(tmp_path / "cache")) == 4
    pruned = CliRunner().invoke(main, ["cache", "prune", "--older-than", "15", "--keep-bundles"])
    assert pruned.exit_code == 0 and "removed 0 entries" in pruned.output
    pruned = CliRunner().invoke(main, ["cache", "prune", "--older-than", "15"])
    assert "removed 2 entries" in pruned.output
