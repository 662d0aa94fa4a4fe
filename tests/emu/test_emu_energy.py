"""Energy down the whole path: a fake ``vcgencmd`` on the emulated Pi's PATH answers with real Pi 5
``pmic_read_adc`` captures, ``edgeship deploy`` profiles there, and the estimate arrives in the
record, marked estimated and emulated, and in a real results store.

The fake prints the idle capture for the agent's idle readings (the first three calls) and the busy
capture after, so the expected load and idle power are the captures' own sums. Needs root (``arm``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from pipeline.deploy.record import ProfileRecord
from pipeline.emu import EmuLayout
from pipeline.farm.store import ResultsStore
from pipeline.paths import PROJECT_ROOT
from tests.helpers.emu_devices import running_device

EMU = EmuLayout.default()  # the aarch64 device: a Pi 5 is 64-bit too
DATA = Path(__file__).parents[1] / "device_agents" / "data"
IDLE_READINGS = 3  # the agent's PMIC_IDLE_READINGS
FAKE = "usr/local/bin/vcgencmd"
COUNTER = "root/.edgeship-fake-vcgencmd-calls"

FAKE_SCRIPT = """#!/bin/sh
# edgeship test fake: idle capture for the first {idle} pmic_read_adc calls, busy capture after.
case "$1" in
  get_throttled) echo "throttled=0x0" ;;
  pmic_read_adc)
    n=$(cat /{counter} 2>/dev/null || echo 0); n=$((n + 1)); echo "$n" > /{counter}
    if [ "$n" -le {idle} ]; then cat <<'IDLE'
{idle_text}IDLE
    else cat <<'BUSY'
{busy_text}BUSY
    fi ;;
  *) echo 'error=1 error_msg="Command not registered"'; exit 255 ;;
esac
"""


def _power(capture: str) -> float:
    """The board power a capture stands for, summed here independently of the agent's parser."""
    amps, volts = {}, {}
    for line in capture.splitlines():
        name, _, value = line.strip().partition("=")
        rail, kind = name.split()[0].rsplit("_", 1)
        (amps if kind == "A" else volts)[rail] = float(value.rstrip("AV"))
    return sum(amps[rail] * volts[rail] for rail in amps.keys() & volts.keys())


@pytest.fixture(scope="module")
def device_with_fake_vcgencmd() -> Iterator[EmuLayout]:
    for layout in running_device(EMU):
        fake, counter = layout.rootfs / FAKE, layout.rootfs / COUNTER
        fake.write_text(
            FAKE_SCRIPT.format(
                idle=IDLE_READINGS, counter=COUNTER,
                idle_text=(DATA / "pmic_read_adc_pi5_idle.txt").read_text(),
                busy_text=(DATA / "pmic_read_adc_pi5_busy.txt").read_text(),
            )
        )  # fmt: skip
        fake.chmod(0o755)
        counter.unlink(missing_ok=True)
        try:
            yield layout
        finally:  # other tests on this device must meet a board without vcgencmd again
            fake.unlink(missing_ok=True)
            counter.unlink(missing_ok=True)


@pytest.mark.arm
def test_arm_energy_from_a_fake_vcgencmd_reaches_the_record_and_the_store(
    device_with_fake_vcgencmd: EmuLayout, tiny_bundle_int8: Path, tmp_path: Path
) -> None:
    layout = device_with_fake_vcgencmd
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "deploy", str(layout.target_file), "--bundle", str(tiny_bundle_int8), "--json"],
        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=1800, env={k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    raw = json.loads(result.stdout)["profile"]
    assert raw["device"]["emulated"] is True  # never to be taken for a Pi 5's figures
    assert raw["energy_unavailable"] is None, raw["energy_unavailable"]
    energy = raw["energy"]
    idle_w = _power((DATA / "pmic_read_adc_pi5_idle.txt").read_text())
    busy_w = _power((DATA / "pmic_read_adc_pi5_busy.txt").read_text())
    assert energy["estimated"] is True and energy["idle_samples"] == IDLE_READINGS and energy["samples"] >= 1
    assert energy["idle_power_w"] == pytest.approx(idle_w, rel=1e-6)
    assert energy["load_power_w"] == pytest.approx(busy_w, rel=1e-6)
    per_invoke_s = energy["seconds"] / energy["invokes"]
    assert energy["mj_per_inference"] == pytest.approx((busy_w - idle_w) * per_invoke_s * 1000, rel=1e-4)  # seconds is rounded to the µs
    assert int((layout.rootfs / COUNTER).read_text()) == IDLE_READINGS + energy["samples"] + energy["failed_samples"]

    record = ProfileRecord.parse(raw)
    assert record.energy is not None and record.energy.mj_per_inference == energy["mj_per_inference"]
    with ResultsStore(tmp_path / "results.sqlite") as store:
        run_id = store.start_run("farm")
        stored = store.get_result(store.record_result(run_id, "emu-rpi4", "emu-rpi4", "default", "ok", raw, None, emulated=True))
    assert stored.energy_mj_per_inference == energy["mj_per_inference"]
    assert (stored.power_w, stored.idle_power_w) == (energy["load_power_w"], energy["idle_power_w"])
