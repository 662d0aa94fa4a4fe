"""Confirmation on the real path: a loopback sshd device, the real agent's ``ab``, the real store.

The slower model is genuinely slower (16x the conv channels of the same tiny classifier), so a
confirmed regression here is measured, not arranged.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.farm.nightly import run_nightly
from pipeline.farm.store import ResultsStore
from pipeline.lab.sshd import SSHServer, sshd_available
from pipeline.paths import PROJECT_ROOT, bundles_dir
from tests.helpers.records import make_record

pytestmark = [pytest.mark.ssh, pytest.mark.skipif(not sshd_available(), reason="openssh-server is not installed")]

DEVICE_PYTHON = PROJECT_ROOT / ".venv-agent" / "bin" / "python"
# short A/B blocks keep the test quick; the section also shows the inventory's policy reaching the runner
REGRESSION = {"ab_blocks": 6, "ab_runs_per_block": 20, "ab_min_block_seconds": 0.02, "ab_alpha": 0.05}


@pytest.fixture(scope="module")
def wide_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.helpers.bundles import make_tiny_bundle

    return make_tiny_bundle(tmp_path_factory.mktemp("wide"), "int8", width=64)


@pytest.fixture
def device(tmp_path: Path):
    python = str(DEVICE_PYTHON) if DEVICE_PYTHON.exists() else sys.executable
    server = SSHServer(tmp_path / "server").start()
    try:
        server.write_target(tmp_path / "dev.yaml", "dev", tmp_path / "device", python,
                            profiling={"runs": 40, "min_seconds": 0.0, "warmup": 2}, transport={"retries": 0})
        inventory = tmp_path / "farm.yaml"
        inventory.write_text(yaml.safe_dump({
            "name": "ab", "concurrency": 1, "timeout": 120, "retries": 0, "profile": "tiny",
            "regression": REGRESSION, "devices": [{"name": "dev", "target": "dev.yaml"}],
        }))
        yield inventory, tmp_path / "device"
    finally:
        server.kill()


def _fake_fast_baseline(store: ResultsStore, bundle_id: str) -> None:
    """A stored baseline far faster than the device can be: tonight is always suspect."""
    run_id = store.start_run("farm")
    samples = np.full(50, 1e-4) * np.linspace(1.0, 1.01, 50)
    store.accept_baseline(store.record_result(run_id, "dev", None, "tiny", "ok", make_record(samples, bundle_id=bundle_id), None))
    store.finish_run(run_id)


def test_a_genuinely_slower_model_is_confirmed_by_the_ab_ssh(device, tiny_bundle_int8: Path, wide_bundle: Path, tmp_path: Path) -> None:
    inventory, _ = device
    with ResultsStore(tmp_path / "r.sqlite") as store:
        first = run_nightly(inventory, store=store, bundles={"tiny": tiny_bundle_int8})
        store.accept_run_baselines(first.farm.run_id)
        second = run_nightly(inventory, store=store, bundles={"tiny": wide_bundle})
        (verdict,) = second.verdicts
        assert verdict.confirmation is not None, verdict.reasons
        assert verdict.confirmation.status == "confirmed", verdict.confirmation.reason
        assert verdict.confirmation.baseline_source == "device" and verdict.confirmation.pairs == 6
        assert verdict.confirmation.ratio > 1.05
        assert verdict.status == "regression" and "latency" in verdict.regressed_metrics()
        assert second.summary.exit_code == 1
        assert verdict.policy["ab_blocks"] == 6  # the inventory's section, recorded with the verdict
        record = store.get_confirmation_record(verdict.result_id)
        assert record["a"]["bundle_id"] == tiny_bundle_int8.name and record["b"]["bundle_id"] == wide_bundle.name
        assert len(record["blocks"]) == 12 and all(len(b["samples"]) >= 20 for b in record["blocks"])


def test_the_same_model_is_not_confirmed_whatever_the_stored_baseline_says_ssh(device, tiny_bundle_int8: Path, tmp_path: Path) -> None:
    inventory, _ = device
    with ResultsStore(tmp_path / "r.sqlite") as store:
        _fake_fast_baseline(store, tiny_bundle_int8.name)
        run_nightly(inventory, store=store, bundles={"tiny": tiny_bundle_int8})  # installs it on the device
        night = run_nightly(inventory, store=store, bundles={"tiny": tiny_bundle_int8})
        (verdict,) = night.verdicts
        assert verdict.latency.status == "regression"  # the stored comparison alone would cry wolf
        assert verdict.confirmation.status == "not-confirmed", verdict.confirmation.reason
        # the fake baseline's memory differs from the real device's: only latency matters here
        assert "latency" not in verdict.regressed_metrics() and verdict.status in ("pass", "improvement")
        assert night.summary.exit_code == 0
        assert any("did not confirm" in n for n in verdict.notes)


def test_a_pruned_baseline_is_uploaded_from_the_host_cache_ssh(device, tiny_bundle_int8: Path, wide_bundle: Path, tmp_path: Path) -> None:
    inventory, device_dir = device
    with ResultsStore(tmp_path / "r.sqlite") as store:
        first = run_nightly(inventory, store=store, bundles={"tiny": tiny_bundle_int8})
        store.accept_run_baselines(first.farm.run_id)
        shutil.rmtree(device_dir / "releases" / tiny_bundle_int8.name)  # as if pruned
        shutil.copytree(tiny_bundle_int8, bundles_dir() / tiny_bundle_int8.name)
        night = run_nightly(inventory, store=store, bundles={"tiny": wide_bundle})
        (verdict,) = night.verdicts
        assert verdict.confirmation.baseline_source == "uploaded", verdict.confirmation.reason
        assert verdict.confirmation.status == "confirmed"
        assert (device_dir / "current").resolve().name == wide_bundle.name  # the upload did not switch releases


def test_a_baseline_missing_everywhere_is_unconfirmed_ssh(device, tiny_bundle_int8: Path, tmp_path: Path) -> None:
    inventory, _ = device
    with ResultsStore(tmp_path / "r.sqlite") as store:
        _fake_fast_baseline(store, "f" * 16)
        night = run_nightly(inventory, store=store, bundles={"tiny": tiny_bundle_int8})
        (verdict,) = night.verdicts
        assert verdict.status == "unconfirmed", verdict.reasons
        assert "f" * 16 in verdict.confirmation.reason and verdict.confirmation.status == "unavailable"
        assert night.summary.exit_code == 1
        assert "unconfirmed" in night.reports["junit"].read_text()
