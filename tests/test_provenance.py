"""Provenance: tool versions and git state, with real git in this checkout and in throwaway ones."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

import pipeline
from pipeline import provenance
from pipeline.paths import PROJECT_ROOT
from pipeline.provenance import DISTRIBUTIONS, git_state, tool_info, tool_versions


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=cwd, check=True, capture_output=True, text=True,
    ).stdout.strip()


@pytest.fixture
def no_outer_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tmp_path``, with git forbidden to find a checkout above it."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    return tmp_path


def test_this_checkout_has_a_real_commit() -> None:
    commit, dirty = git_state(PROJECT_ROOT)
    assert commit is not None and re.fullmatch(r"[0-9a-f]{40}", commit)
    # HEAD may move under a busy checkout; the commit must exist either way.
    assert _git(PROJECT_ROOT, "cat-file", "-t", commit) == "commit"
    assert isinstance(dirty, bool)


def test_dirty_means_tracked_files_changed_not_untracked_ones(no_outer_checkout: Path) -> None:
    repo = no_outer_checkout / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.txt").write_text("one\n")
    _git(repo, "add", "a.txt")
    _git(repo, "commit", "-q", "-m", "first")
    assert git_state(repo) == (_git(repo, "rev-parse", "HEAD"), False)
    (repo / "new.txt").write_text("untracked\n")
    assert git_state(repo)[1] is False
    (repo / "a.txt").write_text("two\n")
    assert git_state(repo)[1] is True


def test_outside_a_checkout_the_git_fields_are_none(no_outer_checkout: Path) -> None:
    assert git_state(no_outer_checkout) == (None, None)
    info = tool_info(no_outer_checkout)
    assert info["git_commit"] is None and info["git_dirty"] is None


def test_without_git_installed_the_git_fields_are_none(no_outer_checkout: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(no_outer_checkout))
    assert git_state(PROJECT_ROOT) == (None, None)


def test_tool_info_names_the_interpreter_and_libraries() -> None:
    info = tool_info()
    assert set(info) == {"edgeship", "python", "numpy", "sqlite", "git_commit", "git_dirty"}
    assert info["edgeship"] == pipeline.__version__
    assert info["python"] == "%d.%d.%d" % sys.version_info[:3]
    assert info["numpy"] == np.__version__ and info["sqlite"] == sqlite3.sqlite_version
    assert info["git_commit"] is not None  # the tests run from a checkout


def test_tool_versions_lists_installed_distributions_and_skips_missing_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    versions = tool_versions()
    assert versions["numpy"] == metadata.version("numpy") and set(versions) <= set(DISTRIBUTIONS)
    real = metadata.version

    def version(dist: str) -> str:
        if dist == "keras":
            raise metadata.PackageNotFoundError(dist)
        return real(dist)

    monkeypatch.setattr(provenance.metadata, "version", version)
    without = tool_versions()
    assert "keras" not in without and {k: v for k, v in versions.items() if k != "keras"} == without
