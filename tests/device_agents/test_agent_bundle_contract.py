"""Host and agent implement the bundle contract separately; here both judge the same bundles."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.bundle.manifest import compute_bundle_id, hash_files, verify_bundle
from pipeline.errors import BundleError
from tests.helpers.agent_runner import PYTHONS, copy_bundle, load_agent_module, manifest, run_agent
from tests.helpers.bundles import MANIFEST_TAMPERING, edit_manifest


@pytest.fixture(scope="module")
def agent():
    return load_agent_module()


def test_both_sides_compute_the_same_id(agent, tiny_bundle_int8: Path) -> None:
    data = manifest(tiny_bundle_int8)
    assert agent.SCHEMA_VERSION == data["schema_version"] == 2
    assert agent.compute_bundle_id(data) == compute_bundle_id(data) == tiny_bundle_int8.name
    odd = dict(data, profile="caf\u00e9 \u2713", labels="l\u00e4bels.txt", created="another time")
    odd["preprocessing"] = dict(data["preprocessing"], scale=1 / 255, mean=-0.0)
    assert agent.compute_bundle_id(odd) == compute_bundle_id(odd) != compute_bundle_id(data)
    assert compute_bundle_id(dict(data, created="another time")) == compute_bundle_id(data)  # created is not hashed


@pytest.mark.parametrize("python, runtime", PYTHONS)
@pytest.mark.parametrize("case", MANIFEST_TAMPERING, ids=[c.name for c in MANIFEST_TAMPERING])
def test_both_sides_refuse_manifest_tampering(tiny_bundle_int8: Path, tmp_path: Path, case, python: Path, runtime: str) -> None:
    bundle = case.apply(copy_bundle(tiny_bundle_int8, tmp_path))
    assert hash_files(bundle) == manifest(tiny_bundle_int8)["files"]  # every file is still intact
    with pytest.raises(BundleError, match=case.message):
        verify_bundle(bundle)
    result = run_agent("verify", bundle, python=python)
    assert result.returncode == 3 and result.stdout == ""
    assert result.error["kind"] == "verification"
    assert re.search(case.message, result.error["error"]), result.error


def test_both_sides_refuse_schema_1_with_a_rebuild_hint(tiny_bundle_int8: Path, tmp_path: Path) -> None:
    bundle = copy_bundle(tiny_bundle_int8, tmp_path)
    edit_manifest(bundle, lambda m: m.update(schema_version=1))
    with pytest.raises(BundleError, match="schema_version is 1 but this edgeship reads 2"):
        verify_bundle(bundle)
    error = run_agent("verify", bundle).error
    assert "schema_version is 1 but this agent reads 2" in error["error"] and "Rebuild it with `edgeship build`" in error["error"]


def test_agent_refuses_an_infinite_number(tiny_bundle_int8: Path, tmp_path: Path) -> None:
    """1e999 parses to infinity without any NaN token: strict parsing must catch it too."""
    bundle = copy_bundle(tiny_bundle_int8, tmp_path)
    edit_manifest(bundle, lambda m: m["preprocessing"].update(std="@inf@"))
    (bundle / "manifest.json").write_text((bundle / "manifest.json").read_text().replace('"@inf@"', "1e999"))
    with pytest.raises(BundleError, match="1e999 is not a finite number"):
        verify_bundle(bundle)
    assert "1e999 is not a finite number" in run_agent("verify", bundle).error["error"]
