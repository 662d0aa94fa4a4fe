"""Energy from the Raspberry Pi 5's PMIC: parsing recorded ``vcgencmd pmic_read_adc`` output, and the
real agent profiling a real bundle with a fake ``vcgencmd`` on PATH (one that prints those recordings)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.agent_runner import PYTHONS, load_agent_module, run_agent

DATA = Path(__file__).parent / "data"
IDLE = DATA / "pmic_read_adc_pi5_idle.txt"  # bcrisp4/pi5_exporter's capture (data/README.md)
BUSY = DATA / "pmic_read_adc_pi5_busy.txt"  # Short-bus/pilomar's capture, VDD_CORE at 5 A
NOT_REGISTERED = DATA / "vcgencmd_command_not_registered.txt"
# Sum of V x A over the 12 rails that print both, worked out by hand from the files.
IDLE_W = 1.76670653643166
BUSY_W = 5.921612227144821


@pytest.fixture(scope="module")
def agent():
    return load_agent_module()


def fake_vcgencmd(bin_dir: Path, *, idle: Path = IDLE, load: Path = BUSY, idle_calls: int = 3, hang_after: int = -1,
                  exit_code: int = 0) -> tuple[Path, Path]:
    """A ``vcgencmd`` that prints ``idle`` for its first ``idle_calls`` pmic_read_adc calls and ``load``
    after, hangs from call ``hang_after`` on (if >= 0), and logs each call; returns (bin dir, log)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    log = bin_dir / "calls.log"
    script = bin_dir / "vcgencmd"
    script.write_text(f"""#!{sys.executable}
import os, sys, time
args = sys.argv[1:]
if args[:1] == ["get_throttled"]:
    print("throttled=0x0")
    sys.exit(0)
if args[:1] != ["pmic_read_adc"]:
    sys.stdout.write(open({str(NOT_REGISTERED)!r}).read())
    sys.exit(0)
with open({str(log)!r}, "a") as handle:
    handle.write("call\\n")
calls = sum(1 for _ in open({str(log)!r}))
if {hang_after} >= 0 and calls > {hang_after}:
    time.sleep(60)
sys.stdout.write(open({str(idle)!r} if calls <= {idle_calls} else {str(load)!r}).read())
sys.exit({exit_code})
""")
    script.chmod(0o755)
    return bin_dir, log


def path_with(bin_dir: Path) -> dict:
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}


# ------------------------------------------------------------------------- parsing real captures


def test_real_pi5_captures_sum_the_twelve_paired_rails(agent) -> None:
    idle = agent.parse_pmic_adc(IDLE.read_text())
    busy = agent.parse_pmic_adc(BUSY.read_text())
    assert idle == {"power_w": pytest.approx(IDLE_W, rel=1e-12), "rails": 12}
    assert busy == {"power_w": pytest.approx(BUSY_W, rel=1e-12), "rails": 12}
    # one rail, paired by name across its current line and its voltage line
    core = "\n".join(line for line in BUSY.read_text().splitlines() if "VDD_CORE" in line)
    assert agent.parse_pmic_adc(core) == {"power_w": pytest.approx(5.03652 * 0.8936988, rel=1e-12), "rails": 1}


def test_voltage_only_rails_are_ignored(agent) -> None:
    text = IDLE.read_text()
    assert "EXT5V_V volt(24)=5.14158000V" in text and "BATT_V volt(25)=3.28033900V" in text
    without = "\n".join(line for line in text.splitlines() if "EXT5V" not in line and "BATT" not in line)
    assert agent.parse_pmic_adc(without)["power_w"] == pytest.approx(IDLE_W, rel=1e-12)
    # a rail whose voltage line is missing drops out instead of counting as 0 V or 5 V
    no_core_volt = "\n".join(line for line in text.splitlines() if "VDD_CORE_V" not in line)
    assert agent.parse_pmic_adc(no_core_volt) == {"power_w": pytest.approx(IDLE_W - 0.56259 * 0.7679846), "rails": 11}


def test_output_without_pmic_lines_is_refused_with_the_reason(agent) -> None:
    with pytest.raises(ValueError, match=r'printed no PMIC readings: vc_gencmd_read_response returned -1'):
        agent.parse_pmic_adc(NOT_REGISTERED.read_text())
    with pytest.raises(ValueError, match=r"empty output"):
        agent.parse_pmic_adc("")
    only_volts = "\n".join(line for line in IDLE.read_text().splitlines() if " volt(" in line)
    with pytest.raises(ValueError, match="no rail with both a current and a voltage"):
        agent.parse_pmic_adc(only_volts)


def test_read_pmic_power_reports_failures_and_a_hang_within_its_timeout(agent, tmp_path: Path) -> None:
    bin_dir, _ = fake_vcgencmd(tmp_path / "ok")
    assert agent.read_pmic_power(str(bin_dir / "vcgencmd")) == pytest.approx(IDLE_W)
    bin_dir, _ = fake_vcgencmd(tmp_path / "pi4", idle=NOT_REGISTERED, exit_code=255)
    with pytest.raises(ValueError, match=r'exited with status 255: vc_gencmd_read_response returned -1 / error=1 error_msg="Command not registered"'):
        agent.read_pmic_power(str(bin_dir / "vcgencmd"))
    bin_dir, _ = fake_vcgencmd(tmp_path / "hung", hang_after=0)
    start = time.monotonic()
    with pytest.raises(ValueError, match=r"did not answer within 0\.5 s"):
        agent.read_pmic_power(str(bin_dir / "vcgencmd"), timeout=0.5)
    assert time.monotonic() - start < 5


def test_meter_computes_energy_per_inference_from_idle_and_load(agent, tmp_path: Path) -> None:
    bin_dir, log = fake_vcgencmd(tmp_path)
    warnings: list = []
    meter = agent.EnergyMeter(warnings, binary=str(bin_dir / "vcgencmd"))
    meter.start()
    time.sleep(0.5)  # the "timed loop"
    meter.stop(0.5, 100)
    energy, reason = meter.result()
    assert reason is None and warnings == []
    assert energy["idle_samples"] == 3 and energy["idle_power_w"] == pytest.approx(IDLE_W, abs=1e-6)
    assert energy["samples"] >= 1 and energy["load_power_w"] == pytest.approx(BUSY_W, abs=1e-6)
    assert energy["mj_per_inference"] == pytest.approx((BUSY_W - IDLE_W) * 0.5 / 100 * 1000, abs=1e-5)
    assert energy["gross_mj_per_inference"] == pytest.approx(BUSY_W * 0.5 / 100 * 1000, abs=1e-5)
    assert energy["estimated"] is True and energy["source"] == "vcgencmd pmic_read_adc" and energy["invokes"] == 100
    assert len(log.read_text().splitlines()) >= energy["idle_samples"] + energy["samples"]


def test_meter_warns_when_load_is_not_above_idle(agent, tmp_path: Path) -> None:
    bin_dir, _ = fake_vcgencmd(tmp_path, idle=BUSY, load=IDLE)
    warnings: list = []
    meter = agent.EnergyMeter(warnings, binary=str(bin_dir / "vcgencmd"))
    meter.start()
    time.sleep(0.2)
    meter.stop(0.2, 10)
    energy, _ = meter.result()
    assert energy["mj_per_inference"] < 0
    assert len(warnings) == 1 and "not above idle" in warnings[0]


def test_a_sampler_that_crashes_or_hangs_costs_the_estimate_not_the_profile(agent, tmp_path: Path, monkeypatch) -> None:
    bin_dir, _ = fake_vcgencmd(tmp_path)

    def explode(binary, timeout=None):
        raise RuntimeError("boom")

    sampler = agent.PowerSampler(str(bin_dir / "vcgencmd"), interval=0.01)
    monkeypatch.setattr(agent, "read_pmic_power", explode)
    sampler.start()
    time.sleep(0.1)
    readings, failures, last_error = sampler.stop()
    assert readings == [] and failures >= 1 and last_error == "boom"
    monkeypatch.undo()

    bin_dir, _ = fake_vcgencmd(tmp_path / "hangs-under-load", hang_after=3)  # idle readings work, then it hangs
    meter = agent.EnergyMeter([], binary=str(bin_dir / "vcgencmd"))
    meter.start()
    start = time.monotonic()
    meter.stop(0.1, 10)
    assert time.monotonic() - start < agent.PMIC_TIMEOUT_S + 2
    energy, reason = meter.result()
    assert energy is None
    assert reason.startswith("no vcgencmd pmic_read_adc reading completed during the 0.10 s timed loop")
    assert "did not answer within 2.0 s" in reason


# ------------------------------------------------------------------ the real agent, real bundle


@pytest.mark.parametrize("python, runtime", PYTHONS)
def test_profile_on_a_pi5_reports_energy(python: Path, runtime: str, tiny_bundle_int8: Path, tmp_path: Path) -> None:
    bin_dir, log = fake_vcgencmd(tmp_path / "bin")
    record = run_agent(
        "profile", tiny_bundle_int8, "--target", "rpi5", "--threads", "1", "--runs", "20", "--min-seconds", "0.6",
        "--warmup", "2", python=python, env=path_with(bin_dir),
    ).json
    assert record["runtime"]["name"] == runtime
    energy = record["energy"]
    assert record["energy_unavailable"] is None
    assert set(energy) == {
        "mj_per_inference", "gross_mj_per_inference", "load_power_w", "idle_power_w", "samples", "idle_samples",
        "failed_samples", "seconds", "invokes", "estimated", "source",
    }
    assert energy["estimated"] is True and energy["source"] == "vcgencmd pmic_read_adc"
    assert energy["idle_samples"] == 3 and energy["idle_power_w"] == pytest.approx(IDLE_W, abs=1e-6)
    assert 2 <= energy["samples"] and energy["failed_samples"] == 0
    assert energy["load_power_w"] == pytest.approx(BUSY_W, abs=1e-6)
    assert energy["invokes"] == record["latency_ms"]["count"]
    assert energy["seconds"] >= 0.6
    # the loop's wall time covers its timed invokes (plus copying the inputs in)
    assert energy["seconds"] * 1000 >= sum(record["latency_ms"]["samples"])
    assert energy["mj_per_inference"] == pytest.approx(
        (BUSY_W - IDLE_W) * energy["seconds"] / energy["invokes"] * 1000, rel=1e-5
    )
    assert len(log.read_text().splitlines()) >= 3 + energy["samples"]
    assert record["device"]["throttling"]["raw"] == "0x0"  # the same fake answered get_throttled


@pytest.mark.parametrize("python, runtime", PYTHONS)
def test_profile_without_vcgencmd_reports_null_and_why(python: Path, runtime: str, tiny_bundle_int8: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    record = run_agent(
        "profile", tiny_bundle_int8, "--target", "laptop", "--runs", "5", "--min-seconds", "0", "--warmup", "0",
        python=python, env={"PATH": str(empty)},
    ).json
    assert record["energy"] is None
    assert record["energy_unavailable"] == "no vcgencmd on PATH (not a Raspberry Pi, or its firmware tools are missing)"
    assert record["latency_ms"]["count"] == 5


@pytest.mark.parametrize("exit_code", [0, 255])
def test_profile_on_a_board_without_the_pmic_adc_reports_null_and_why(tiny_bundle_int8: Path, tmp_path: Path, exit_code: int) -> None:
    bin_dir, log = fake_vcgencmd(tmp_path / "bin", idle=NOT_REGISTERED, exit_code=exit_code)
    record = run_agent(
        "profile", tiny_bundle_int8, "--target", "rpi4", "--runs", "5", "--min-seconds", "0", "--warmup", "0",
        env=path_with(bin_dir),
    ).json
    assert record["energy"] is None
    assert 'error=1 error_msg="Command not registered"' in record["energy_unavailable"]
    assert record["energy_unavailable"].startswith(
        "vcgencmd pmic_read_adc exited with status 255" if exit_code else "vcgencmd pmic_read_adc printed no PMIC readings"
    )
    assert len(log.read_text().splitlines()) == 1  # one failed idle reading, and no sampler started


def test_profile_with_a_hung_vcgencmd_finishes(tiny_bundle_int8: Path, tmp_path: Path) -> None:
    bin_dir, _ = fake_vcgencmd(tmp_path / "bin", hang_after=0)
    start = time.monotonic()
    record = run_agent(
        "profile", tiny_bundle_int8, "--target", "rpi5", "--runs", "5", "--min-seconds", "0", "--warmup", "0",
        env=path_with(bin_dir), timeout=60,
    ).json
    assert time.monotonic() - start < 30
    assert record["energy"] is None
    assert record["energy_unavailable"] == "vcgencmd pmic_read_adc did not answer within 2.0 s"


def test_no_energy_never_calls_vcgencmd_for_the_pmic(tiny_bundle_int8: Path, tmp_path: Path) -> None:
    """`--no-energy` (profiling.energy: false): the board can tell, but nothing samples it."""
    bin_dir, log = fake_vcgencmd(tmp_path / "bin")
    record = run_agent(
        "profile", tiny_bundle_int8, "--target", "rpi5", "--runs", "5", "--min-seconds", "0.3", "--warmup", "0",
        "--no-energy", env=path_with(bin_dir),
    ).json
    assert record["energy"] is None
    assert record["energy_unavailable"] == "energy sampling turned off (--no-energy)"
    assert not log.exists() or log.read_text() == ""
    assert record["device"]["throttling"]["raw"] == "0x0"  # vcgencmd itself is still asked about throttling
