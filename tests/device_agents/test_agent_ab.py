"""``agent.py ab``: two real tiny bundles timed in counterbalanced blocks by the real agent.

The device-like venv (.venv-agent: numpy 1.x + tflite-runtime, no TensorFlow) runs the agent, as a
device would. Throttling comes from a fake ``vcgencmd`` first on PATH whose answer changes after a
number of calls (a counter file), so a test can make the device throttle in a chosen block.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import pytest

from tests.helpers.agent_runner import AGENT_PYTHON, copy_bundle, needs_agent_venv, run_agent

pytestmark = needs_agent_venv

RECORD_KEYS = {
    "schema_version", "kind", "target", "started_at", "finished_at", "device", "runtime", "a", "b", "blocks",
    "throttled", "throttle_detail", "warnings",
}
BLOCK_KEYS = {"pair", "arm", "samples", "p50", "before", "after"}
STATE_KEYS = {"throttled", "temperature_c", "frequency_mhz"}


def fake_vcgencmd(folder: Path, first: str, later: Optional[str] = None, switch_after: int = 0) -> dict:
    """An env whose PATH starts with a ``vcgencmd`` answering ``first`` for ``switch_after`` calls, then ``later``."""
    folder.mkdir(parents=True, exist_ok=True)
    counter = folder / "calls"
    counter.write_text("0")
    script = folder / "vcgencmd"
    script.write_text(
        "#!/bin/sh\n"
        '[ "$1" = get_throttled ] || exit 1\n'
        f'n=$(cat "{counter}"); n=$((n + 1)); echo "$n" > "{counter}"\n'
        f'if [ "$n" -le {switch_after} ]; then echo "throttled={first}"; else echo "throttled={later or first}"; fi\n'
    )
    script.chmod(0o755)
    return {"PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}


def run_ab(a: Path, b: Path, *extra, env: Optional[dict] = None):
    return run_agent(
        "ab", a, b, "--target", "local", "--threads", "1", "--warmup", "2", "--min-block-seconds", "0", *extra,
        python=AGENT_PYTHON, env=env,
    )


def test_ab_runs_counterbalanced_blocks_of_both_bundles(tiny_bundle_int8: Path, tiny_bundle_float32: Path, tmp_path: Path) -> None:
    env = fake_vcgencmd(tmp_path / "bin", "0x0")
    record = run_ab(tiny_bundle_int8, tiny_bundle_float32, "--blocks", "3", "--runs-per-block", "7", env=env).json

    assert set(record) == RECORD_KEYS
    assert record["schema_version"] == 1 and record["kind"] == "ab" and record["target"] == "local"
    assert record["a"]["bundle_id"] == tiny_bundle_int8.name
    assert record["b"]["bundle_id"] == tiny_bundle_float32.name
    assert record["a"]["profile"] == record["b"]["profile"] == "tiny-test"
    assert record["a"]["init_ms"] > 0 and record["b"]["init_ms"] > 0
    rt = record["runtime"]
    assert rt["name"] == "tflite_runtime" and rt["threads_requested"] == 1 and rt["threads_used"] == 1

    blocks = record["blocks"]
    assert [(blk["pair"], blk["arm"]) for blk in blocks] == [(0, "a"), (0, "b"), (1, "b"), (1, "a"), (2, "a"), (2, "b")]
    for blk in blocks:
        assert set(blk) == BLOCK_KEYS
        assert len(blk["samples"]) == 7  # min-block-seconds 0: exactly --runs-per-block samples
        assert all(s > 0 for s in blk["samples"])
        assert blk["p50"] == sorted(blk["samples"])[3]
        assert set(blk["before"]) == set(blk["after"]) == STATE_KEYS
        assert blk["before"]["throttled"]["raw"] == blk["after"]["throttled"]["raw"] == "0x0"
    assert record["throttled"] is False and record["throttle_detail"] is None


def test_ab_min_block_seconds_and_output(tiny_bundle_int8: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "ab.json"
    result = run_agent(
        "ab", tiny_bundle_int8, tiny_bundle_int8, "--target", "emu", "--blocks", "1", "--runs-per-block", "1",
        "--min-block-seconds", "0.1", "--emulated", "--output", out, python=AGENT_PYTHON,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    record = json.loads(out.read_text())
    assert [blk["arm"] for blk in record["blocks"]] == ["a", "b"]
    assert all(len(blk["samples"]) > 1 for blk in record["blocks"])  # one run does not fill 0.1 s
    assert record["device"]["emulated"] is True and any("emulat" in w for w in record["warnings"])


def test_ab_steady_sticky_throttling_bits_are_not_throttled(tiny_bundle_int8: Path, tiny_bundle_float32: Path, tmp_path: Path) -> None:
    """ever_* bits set since boot (0x50000) but unchanged during the run: the A/B is clean."""
    env = fake_vcgencmd(tmp_path / "bin", "0x50000")
    record = run_ab(tiny_bundle_int8, tiny_bundle_float32, "--blocks", "2", "--runs-per-block", "3", env=env).json
    assert record["throttled"] is False and record["throttle_detail"] is None
    assert record["blocks"][0]["before"]["throttled"]["ever_throttled"] is True


def test_ab_throttling_in_a_block_is_reported_with_the_block(tiny_bundle_int8: Path, tiny_bundle_float32: Path, tmp_path: Path) -> None:
    # 2 pairs = 4 blocks = 8 readings (before, after); the 6th reading is block 2's "after" (pair 1, arm b)
    env = fake_vcgencmd(tmp_path / "bin", "0x0", "0x4", switch_after=5)
    record = run_ab(tiny_bundle_int8, tiny_bundle_float32, "--blocks", "2", "--runs-per-block", "3", env=env).json
    assert record["throttled"] is True
    assert record["throttle_detail"].startswith("block 2 (pair 1, arm b), after: throttled (get_throttled=0x4)")
    assert "2 more readings flagged" in record["throttle_detail"]
    assert record["blocks"][2]["before"]["throttled"]["throttled"] is False
    assert record["blocks"][2]["after"]["throttled"]["throttled"] is True


def test_ab_a_throttling_word_that_changes_between_blocks_is_throttled(tiny_bundle_int8: Path, tmp_path: Path) -> None:
    """Nothing throttled at any reading, but ever_throttled appeared between two: it happened meanwhile."""
    env = fake_vcgencmd(tmp_path / "bin", "0x0", "0x40000", switch_after=2)
    record = run_ab(tiny_bundle_int8, tiny_bundle_int8, "--blocks", "1", "--runs-per-block", "2", env=env).json
    assert record["throttled"] is True
    assert record["throttle_detail"] == (
        "block 1 (pair 0, arm b), before: get_throttled changed from 0x0 (block 0 (pair 0, arm a), after) to 0x40000"
    )


@pytest.mark.parametrize("broken", ["a", "b"])
def test_ab_refuses_a_bundle_that_fails_verification(
    broken: str, tiny_bundle_int8: Path, tiny_bundle_float32: Path, tmp_path: Path
) -> None:
    damaged = copy_bundle(tiny_bundle_int8 if broken == "a" else tiny_bundle_float32, tmp_path)
    (damaged / "eval" / "labels.npy").write_bytes(b"tampered")
    a, b = (damaged, tiny_bundle_float32) if broken == "a" else (tiny_bundle_int8, damaged)
    result = run_ab(a, b, "--blocks", "1", "--runs-per-block", "1")
    assert result.returncode == 3
    error = result.error
    assert error["kind"] == "verification" and str(damaged) in error["error"]
    assert result.stdout == ""


@pytest.mark.parametrize("bad", [["--blocks", "0"], ["--runs-per-block", "x"], ["--min-block-seconds", "-1"]])
def test_ab_bad_argument_is_a_usage_error(bad: list, tiny_bundle_int8: Path) -> None:
    result = run_ab(tiny_bundle_int8, tiny_bundle_int8, *bad)
    assert result.returncode == 2
    assert result.error["kind"] == "usage"


def test_ab_needs_a_target(tiny_bundle_int8: Path) -> None:
    result = run_agent("ab", tiny_bundle_int8, tiny_bundle_int8, python=AGENT_PYTHON)
    assert result.returncode == 2 and "--target" in result.error["error"]
