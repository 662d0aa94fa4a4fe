"""Deploy, profile and roll back through the local transport (no SSH): the embedded default."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config.target import load_target
from pipeline.deploy.deployer import deploy, list_releases, prepare_bundle, rollback
from pipeline.deploy.profiling import profile
from pipeline.errors import BundleError, DeployError
from tests.helpers.device_fixtures import current_of


def test_local_deploy_profile_rollback(local_target, tiny_bundle_int8, tiny_bundle_float32, isolated_results, tmp_path):
    target = local_target(name="laptop")  # python: host = this interpreter (ai-edge-litert)
    device = Path(tmp_path / "localdev")
    a, b = tiny_bundle_int8.name, tiny_bundle_float32.name

    first = deploy(target, tiny_bundle_int8)
    assert (first.current, first.previous, first.skipped_upload) == (a, None, False)
    run = profile(target, doctor=first.doctor)  # reuse the deploy's doctor report, as the CLI does
    assert run.record.bundle_id == a and run.record.accuracy.agreement_with_host == 1.0
    assert run.record.runtime.name == "ai_edge_litert"
    assert run.path.is_relative_to(isolated_results / "profiles" / "laptop" / a)

    second = deploy(target, tiny_bundle_float32)
    assert (second.previous, second.current) == (a, b)
    assert profile(target, runs=2, doctor=second.doctor).record.bundle_id == b
    assert len(list((isolated_results / "profiles" / "laptop").glob("*/*.json"))) == 2

    back = rollback(target)
    assert (back.previous, back.current) == (b, a) and current_of(device) == a
    assert [r.bundle_id for r in list_releases(target)] == [a, b]


def test_shipped_local_target_uses_the_results_dir(isolated_results, tiny_bundle_int8):
    target = load_target("local")
    result = deploy(target, tiny_bundle_int8)
    device = isolated_results / "devices" / "local"
    assert Path(result.release_dir) == device / "releases" / tiny_bundle_int8.name
    assert current_of(device) == tiny_bundle_int8.name


def test_deploy_from_a_tarball(local_target, device_python, tiny_bundle_int8, tmp_path):
    from pipeline.bundle.manifest import make_tarball

    tarball = make_tarball(tiny_bundle_int8)
    prepared = prepare_bundle(tarball)
    assert prepared.bundle_id == tiny_bundle_int8.name and prepared.tarball == tarball
    assert deploy(local_target(python=device_python), tarball).current == tiny_bundle_int8.name


def test_a_tampered_bundle_is_refused_before_anything_is_shipped(local_target, tiny_bundle_int8, tmp_path):
    import shutil

    copy = tmp_path / "copy" / tiny_bundle_int8.name
    shutil.copytree(tiny_bundle_int8, copy)
    (copy / "labels.txt").write_text("tampered\n")
    with pytest.raises(BundleError, match="labels.txt has sha256"):
        deploy(local_target(), copy)
    assert not (tmp_path / "localdev").exists()


def test_profile_without_a_deployed_release_says_so(local_target, device_python):
    with pytest.raises(DeployError, match="has no active release to profile; run `edgeship deploy"):
        profile(local_target(python=device_python))


def test_interrupted_switch_and_partials_are_cleaned(local_target, device_python, tiny_bundle_int8, make_variant, tmp_path):
    target = local_target(python=device_python)
    deploy(target, tiny_bundle_int8)
    device = tmp_path / "localdev"
    # what a killed deploy leaves behind: a half upload, a half extraction, a temp link
    (device / "releases" / "0123456789abcdef.tar.gz.partial").write_bytes(b"half")
    (device / "releases" / "0123456789abcdef.partial").mkdir()
    (device / "current.tmp").symlink_to("releases/0123456789abcdef")
    variant = make_variant("next")
    result = deploy(target, variant)
    assert result.current == variant.name
    assert sorted(p.name for p in (device / "releases").iterdir()) == sorted([tiny_bundle_int8.name, variant.name])
    assert not (device / "current.tmp").is_symlink()
    assert not (device / ".lock").exists()
