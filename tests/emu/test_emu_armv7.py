"""The emulated 32-bit Raspberry Pi 3 (kind rpi3): Debian bullseye armhf under qemu-arm, the agent's
oldest stack run for real: Python 3.9, Debian's numpy 1.19, tflite-runtime 2.11.

The ``arm`` tests build (once, cached under the real results/emu-rpi3), start, reach it over SSH with
strict host keys, run the agent there and deploy to the generated target; they need root. The
unmarked tests check the kind's recipe and target without root or emulation.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from pipeline.config.target import load_target, parse_target, resolve_target_path
from pipeline.emu import KINDS, EmuLayout, kind_named, rootfs, status
from pipeline.emu.device import sshd_config, target_dict
from pipeline.emu.kinds import RPI3, RPI4
from pipeline.errors import EdgeshipError
from pipeline.paths import PROJECT_ROOT
from tests.helpers.emu_devices import connect, doctor_and_profile_by_hand, run, running_device

# Computed at import time, before the autouse fixture points EDGESHIP_RESULTS at a tmp dir.
EMU3 = EmuLayout.default(kind=RPI3)
EMU4 = EmuLayout.default(kind=RPI4)
REMOTE_TEST_DIR = "/root/edgeship-armv7-test"


@pytest.fixture(scope="module")
def rpi3_device() -> Iterator[EmuLayout]:
    yield from running_device(EMU3)


def _expect_old_stack(report: dict) -> None:
    assert report["machine"] == "armv7l"
    assert report["python"].startswith("3.9.")
    assert report["numpy"].startswith("1.19.")
    assert report["runtimes"]["tflite_runtime"] == "2.11.0"


def _assert_agrees_with_host(accuracy: dict) -> None:
    """>= 0.99 agreement (the issue's target), and every differing image listed, never a bare rate."""
    listed = accuracy["disagreements"]
    assert accuracy["agreement_with_host"] >= 0.99, listed
    differing = round((1 - accuracy["agreement_with_host"]) * accuracy["count"])
    assert len(listed) == differing


@pytest.mark.arm
def test_armv7_stack_is_the_old_one_and_the_agent_runs_on_it(rpi3_device: EmuLayout, tiny_bundle_int8: Path) -> None:
    """agent.py and an int8 bundle uploaded by hand: doctor reports armv7l, Python 3.9, numpy 1.19 and
    tflite-runtime 2.11; int8 answers under the 32-bit ARM kernels agree with the x86 host's."""
    doctor, record = doctor_and_profile_by_hand(rpi3_device, tiny_bundle_int8, REMOTE_TEST_DIR)
    _expect_old_stack(doctor)
    assert record["device"]["machine"] == "armv7l" and record["device"]["emulated"] is True
    assert record["runtime"]["name"] == "tflite_runtime" and record["runtime"]["version"] == "2.11.0"
    assert record["runtime"]["numpy"].startswith("1.19.")
    _assert_agrees_with_host(record["accuracy"])


@pytest.mark.arm
def test_armv7_edgeship_deploy_by_target_name(rpi3_device: EmuLayout, tiny_bundle_int8: Path, isolated_results: Path) -> None:
    """`edgeship deploy emu-rpi3`: the bare name finds the generated target (in this test's results
    tree, where a copy of the running device's target sits); the record is the Pi 3's."""
    generated = isolated_results / "emu-rpi3" / "targets" / "emu-rpi3.yaml"
    generated.parent.mkdir(parents=True)
    generated.write_text(rpi3_device.target_file.read_text())  # its key and known_hosts paths are absolute
    assert resolve_target_path("emu-rpi3") == generated
    target = load_target("emu-rpi3")
    assert target.emulated and target.arch == "armv7l" and target.transport.host_key_policy == "strict"
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "deploy", "emu-rpi3", "--bundle", str(tiny_bundle_int8), "--json"],
        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=1800,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)["profile"]
    assert record["target"] == "emu-rpi3" and record["bundle_id"] == tiny_bundle_int8.name
    assert record["device"]["machine"] == "armv7l" and record["device"]["emulated"] is True
    assert record["device"]["python"].startswith("3.9.")
    assert record["runtime"]["name"] == "tflite_runtime" and record["runtime"]["version"] == "2.11.0"
    _assert_agrees_with_host(record["accuracy"])


@pytest.mark.arm
def test_arm_both_emulated_devices_run_at_once(rpi3_device: EmuLayout) -> None:
    """The 64-bit and the 32-bit device side by side: own sshd, port, mounts and architecture."""
    for _ in running_device(EMU4):
        four, three = status(EMU4), status(rpi3_device)
        assert four.running and three.running and four.port != three.port and four.pid != three.pid
        assert four.target_file != three.target_file and not set(four.mounts) & set(three.mounts)
        for layout, machine in ((EMU4, "aarch64"), (rpi3_device, "armv7l")):
            client = connect(layout, layout.known_hosts)
            try:
                assert run(client, ["uname", "-m"])[1].strip() == machine
                assert run(client, ["hostname"])[1].strip() == layout.target_name
            finally:
                client.close()


# -- the kind without root or emulation --------------------------------------------------------------
def test_rpi3_recipe_is_bullseye_armhf_with_the_pinned_cp39_wheel() -> None:
    recipe = RPI3.recipe()
    assert (recipe["suite"], recipe["arch"]) == ("bullseye", "armhf")
    assert recipe["wheel"]["file"] == "tflite_runtime-2.11.0-cp39-cp39-manylinux2014_armv7l.whl"
    assert len(recipe["wheel"]["sha256"]) == 64 and RPI3.site_packages == "/usr/local/lib/python3.9/dist-packages"
    assert rootfs.recipe_id(RPI3) != rootfs.recipe_id(RPI4)
    argv = rootfs._debootstrap_argv(Path("/x/rootfs"), rootfs.DEFAULT_MIRROR, RPI3)
    assert "--arch=armhf" in argv and "bullseye" in argv and "--force-check-gpg" in argv


def test_rpi4_recipe_is_unchanged_so_its_cached_image_stays_valid() -> None:
    """Adding kinds must not invalidate rpi4 images built before (their stamp holds this id)."""
    assert rootfs.recipe_id(RPI4) == rootfs.recipe_id()
    assert RPI4.recipe()["wheel"]["file"] == "tflite_runtime-2.14.0-cp311-cp311-manylinux_2_34_aarch64.whl"


def test_each_kind_has_its_own_home_target_and_binfmt_handler(tmp_path: Path) -> None:
    layouts = [EmuLayout.default(kind=kind) for kind in KINDS.values()]
    assert len({layout.root for layout in layouts}) == len(KINDS)
    assert len({kind.binfmt_name for kind in KINDS.values()}) == len(KINDS)
    assert EmuLayout.default(tmp_path, RPI3).target_file == tmp_path / "targets" / "emu-rpi3.yaml"
    assert kind_named("emu-rpi3") is RPI3 and kind_named("rpi4") is RPI4
    with pytest.raises(EdgeshipError, match=r"no emulated device 'rpi9'.*rpi4, rpi3"):
        kind_named("rpi9")


def test_rpi3_generated_target_is_armv7l_strict_and_emulated(tmp_path: Path) -> None:
    data = target_dict(EmuLayout(tmp_path, RPI3), 2223)
    target = parse_target(data, "generated")
    assert target.name == "emu-rpi3" and target.arch == "armv7l" and target.emulated is True
    assert target.runtime == ["tflite_runtime"] and target.transport.host_key_policy == "strict"
    assert "32-bit" in target.description


def test_bullseye_sshd_gets_options_its_openssh_knows() -> None:
    """OpenSSH 8.4 (bullseye) rejects KbdInteractiveAuthentication; 9.2 (bookworm) takes it."""
    assert "ChallengeResponseAuthentication no" in sshd_config(2222, RPI3)
    assert "KbdInteractiveAuthentication" not in sshd_config(2222, RPI3)
    assert "KbdInteractiveAuthentication no" in sshd_config(2222, RPI4)
