"""ab_profile over a real sshd with the real agent (.venv-agent as the device Python), plus ABRecord.parse."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

from pipeline.deploy.ab import ABRecord, BaselineMissing, ab_profile, find_host_bundle
from pipeline.deploy.deployer import deploy
from pipeline.errors import DeployError
from tests.helpers.device_fixtures import current_of

FAST = {"blocks": 2, "runs_per_block": 3, "min_block_seconds": 0.0, "warmup": 1}


def releases_of(device: Path) -> list[str]:
    return sorted(p.name for p in (device / "releases").iterdir())


@pytest.mark.ssh
@pytest.mark.agent_venv
def test_ssh_ab_with_the_baseline_kept_on_the_device(ssh_target, tmp_path, tiny_bundle_int8, tiny_bundle_float32, isolated_results):
    device = tmp_path / "device"
    target = ssh_target(name="loopback-ab", remote_dir=device)
    a, b = deploy(target, tiny_bundle_int8).bundle_id, deploy(target, tiny_bundle_float32).bundle_id

    record, source = ab_profile(target, baseline_id=a, **FAST)

    assert source == "device"
    assert (record.a_bundle_id, record.b_bundle_id) == (a, b)
    assert [(blk.pair, blk.arm) for blk in record.blocks] == [(0, "a"), (0, "b"), (1, "b"), (1, "a")]
    assert all(len(blk.samples) == 3 for blk in record.blocks)
    assert len(record.pairs()) == 2 and len(record.samples("a")) == len(record.samples("b")) == 6
    assert record.pairs()[1] == (record.blocks[3].p50, record.blocks[2].p50)
    assert record.raw["target"] == "loopback-ab" and record.seconds >= 0
    assert record.path is not None and record.path.parent == isolated_results / "profiles" / "loopback-ab" / b
    assert record.path.name.startswith("ab-") and json.loads(record.path.read_text()) == record.raw
    assert not list((device / "runs").iterdir()), "the device copy of the record is removed after fetching"
    assert current_of(device) == b


@pytest.mark.ssh
@pytest.mark.agent_venv
def test_ssh_ab_uploads_a_pruned_baseline_without_activating_it(ssh_target, tmp_path, tiny_bundle_int8, tiny_bundle_float32, make_variant):
    device = tmp_path / "device"
    target = ssh_target(remote_dir=device, keep_releases=1)
    a, b = deploy(target, tiny_bundle_int8).bundle_id, deploy(target, tiny_bundle_float32).bundle_id
    assert releases_of(device) == [b]  # A was pruned
    history = (device / "history").read_text()

    with pytest.raises(DeployError, match=f"holds bundle .* not {a}"):
        ab_profile(target, baseline_id=a, baseline_bundle=make_variant("other"), **FAST)
    assert releases_of(device) == [b]

    record, source = ab_profile(target, baseline_id=a, baseline_bundle=tiny_bundle_int8, **FAST)
    assert source == "uploaded"
    assert (record.a_bundle_id, record.b_bundle_id) == (a, b)
    assert current_of(device) == b  # staged, never activated
    assert releases_of(device) == sorted([a, b])  # and nothing pruned
    assert (device / "history").read_text() == history

    # now it is on the device; a damaged copy there is replaced from the host
    assert ab_profile(target, baseline_id=a, **FAST)[1] == "device"
    (device / "releases" / a / "eval" / "labels.npy").write_bytes(b"tampered")
    assert ab_profile(target, baseline_id=a, baseline_bundle=tiny_bundle_int8, **FAST)[1] == "uploaded"
    assert current_of(device) == b


@pytest.mark.ssh
@pytest.mark.agent_venv
def test_ssh_ab_baseline_missing_everywhere_then_found_in_the_host_cache(
    ssh_target, sshd, tmp_path, tiny_bundle_int8, tiny_bundle_float32, isolated_results
):
    device = tmp_path / "device"
    target = ssh_target(name="pi-ab", remote_dir=device, keep_releases=1)
    a, b = deploy(target, tiny_bundle_int8).bundle_id, deploy(target, tiny_bundle_float32).bundle_id

    with pytest.raises(BaselineMissing) as caught:
        ab_profile(target, baseline_id=a, **FAST)
    message = str(caught.value)
    assert a in message and "'pi-ab'" in message and "127.0.0.1" in message
    assert str(isolated_results / "bundles" / a) in message and f"releases/{a}" in message
    assert releases_of(device) == [b] and current_of(device) == b

    shutil.copytree(tiny_bundle_int8, isolated_results / "bundles" / a)  # as `edgeship build` publishes it
    assert find_host_bundle(a) == isolated_results / "bundles" / a
    assert ab_profile(target, baseline_id=a, **FAST)[1] == "uploaded"
    assert current_of(device) == b


def test_find_host_bundle_refuses_a_folder_holding_another_bundle(tiny_bundle_int8, isolated_results):
    wrong = "0" * 16
    shutil.copytree(tiny_bundle_int8, isolated_results / "bundles" / wrong)
    assert find_host_bundle(wrong) is None
    assert find_host_bundle("f" * 16) is None


def _record() -> dict:
    block = {"samples": [1.0, 2.0, 3.0], "p50": 2.0, "before": {"throttled": None}, "after": {"throttled": None}}
    return {
        "schema_version": 1, "kind": "ab", "target": "t",
        "started_at": "2026-01-01T00:00:00+00:00", "finished_at": "2026-01-01T00:00:03+00:00",
        "a": {"bundle_id": "a" * 16}, "b": {"bundle_id": "b" * 16},
        "blocks": [dict(block, pair=0, arm="a"), dict(block, pair=0, arm="b", p50=2.0)],
        "throttled": False, "throttle_detail": None, "warnings": [],
    }


def test_ab_record_parse_reads_a_good_record():
    record = ABRecord.parse(_record())
    assert record.seconds == 3.0 and record.pairs() == [(2.0, 2.0)] and record.samples("b") == [1.0, 2.0, 3.0]
    assert record.max_temperature_c() is None


def _broken(change) -> dict:
    data = copy.deepcopy(_record())
    change(data)
    return data


@pytest.mark.parametrize(
    "data, complaint",
    [
        ([], "JSON object"),
        (_broken(lambda d: d.update(schema_version=2)), "schema_version"),
        (_broken(lambda d: d.update(kind="profile")), "kind"),
        (_broken(lambda d: d["b"].pop("bundle_id")), "b.bundle_id"),
        (_broken(lambda d: d.update(blocks=[])), "blocks is missing"),
        (_broken(lambda d: d["blocks"][1].update(arm="a")), "not one A and one B"),
        (_broken(lambda d: d["blocks"][1].update(pair=3)), "pairs are numbered"),
        (_broken(lambda d: d["blocks"][0].update(samples=[1.0, float("nan")])), "samples"),
        (_broken(lambda d: d["blocks"][0].update(p50=9.0)), "median"),
        (_broken(lambda d: d["blocks"][0].update(before=None)), "before"),
        (_broken(lambda d: d.update(throttled="no")), "throttled"),
        (_broken(lambda d: d.update(throttled=True)), "throttle_detail"),
        (_broken(lambda d: d.update(finished_at="soon")), "ISO"),
    ],
)
def test_ab_record_parse_refuses_a_malformed_record(data, complaint):
    with pytest.raises(ValueError, match=complaint):
        ABRecord.parse(data)
