"""Shared fixtures: an isolated results directory and small real bundles."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Fixtures every folder may use (a real sshd, device Pythons, bundle variants); plain helpers are
# imported from tests.helpers directly.
pytest_plugins = ["tests.helpers.device_fixtures", "tests.helpers.emu_prebuild"]


@pytest.fixture(autouse=True)
def isolated_results(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test writes results/ into its own temporary directory."""
    path = tmp_path_factory.mktemp("results")
    monkeypatch.setenv("EDGESHIP_RESULTS", str(path))
    return path


@pytest.fixture(scope="session")
def tiny_bundle_int8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.helpers.bundles import make_tiny_bundle

    return make_tiny_bundle(tmp_path_factory.mktemp("bundles"), "int8")


@pytest.fixture(scope="session")
def tiny_bundle_float32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.helpers.bundles import make_tiny_bundle

    return make_tiny_bundle(tmp_path_factory.mktemp("bundles"), "float32")
