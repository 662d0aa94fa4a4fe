"""The benchmark_model cross-check: both output formats, parse-benchmark, and the profile path.

There is no benchmark_model binary in this environment, so the end-to-end test puts a small
script named ``benchmark_model`` on PATH that prints the tool's real output format; everything
else (the agent, the runtime, the bundle) is real.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.helpers.agent_runner import load_agent_module, run_agent

# TFLite 2.1x benchmark_model on a Raspberry Pi 4 (classic summary + stat lines, newer memory lines).
CLASSIC_NEW = """\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Num threads: [4]
INFO: Graph: [/home/pi/edgeship/releases/9a8a2baae9bf445e/model.tflite]
INFO: #threads used for CPU inference: [4]
INFO: Loaded model /home/pi/edgeship/releases/9a8a2baae9bf445e/model.tflite
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
INFO: The input model file size (MB): 0.00352
INFO: Initialized session in 1.482ms.
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=11562 first=102 curr=38 min=36 max=412 avg=42.1764 std=9 p5=37 median=40 p95=55

INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=23811 first=41 curr=39 min=35 max=1.2041e+03 avg=40.9012 std=11 p5=36 median=39 p95=51

INFO: Inference timings in us: Init: 1482, First inference: 102, Warmup (avg): 42.1764, Inference (avg): 40.9012
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=1.75781 overall=2.125
INFO: Overall peak memory footprint (MB) via periodic monitoring: 4.87109
"""

# Older tools (TF 2.3-2.8 era, Android adb shell): no log prefix, "Peak memory footprint", count=1 warmup.
CLASSIC_OLD = """\
STARTING!
Min num runs: [50]
Num threads: [2]
Graph: [/data/local/tmp/mobilenet_v1_1.0_224_quant.tflite]
Loaded model /data/local/tmp/mobilenet_v1_1.0_224_quant.tflite
The input model file size (MB): 4.27635
Initialized session in 17.187ms.
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=1 curr=3512391

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=50 first=2990275 curr=2913402 min=2727568 max=3189954 avg=2.95034e+06 std=109798

Inference timings in us: Init: 17187, First inference: 3512391, Warmup (avg): 3.51239e+06, Inference (avg): 2.95034e+06
Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
Peak memory footprint (MB): init=4.92969 overall=138.809
"""

# Stat-summarizer lines only (output cut before the summary, Android logcat prefix, older phrasing).
STATS_ONLY = """\
11-25 08:00:01.123  4242  4242 I tflite  : Num threads: [4]
11-25 08:00:01.200  4242  4242 I tflite  : Running benchmark for 5 iterations
11-25 08:00:01.300  4242  4242 I tflite  : count=5 first=91000 curr=52000 min=51629 max=91000 avg=60147.4 std=15478
11-25 08:00:01.400  4242  4242 I tflite  : Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
11-25 08:00:02.900  4242  4242 I tflite  : count=50 first=52162 curr=49785 min=49088 max=68610 avg=51743.2 std=3716 p5=49620 median=51891 p95=58628
"""


@pytest.fixture(scope="module")
def agent():
    return load_agent_module()


def test_parses_the_classic_format_of_current_tools(agent) -> None:
    parsed = agent.parse_benchmark_output(CLASSIC_NEW)
    assert parsed["formats"] == ["classic", "stats"]
    assert parsed["num_threads"] == 4
    assert parsed["graph"].endswith("/model.tflite")
    assert parsed["init_session_ms"] == 1.482
    assert parsed["timings_us"] == {"init": 1482.0, "first": 102.0, "warmup_avg": 42.1764, "inference_avg": 40.9012}
    assert parsed["memory_mb"] == {"measure": "delta", "init": 1.75781, "overall": 2.125, "overall_peak": 4.87109}
    warmup, measured = parsed["stats"]
    assert warmup["min_iterations"] == 1 and warmup["min_seconds"] == 0.5 and warmup["count"] == 11562
    assert measured["count"] == 23811 and measured["max_us"] == 1204.1 and measured["median_us"] == 39.0
    summary = parsed["summary_ms"]
    assert summary["init"] == 1.482 and summary["first"] == 0.102
    assert summary["mean"] == pytest.approx(0.0409012) and summary["warmup_avg"] == pytest.approx(0.0421764)
    assert summary["count"] == 23811 and summary["min"] == 0.035 and summary["p50"] == 0.039 and summary["p95"] == 0.051


def test_parses_the_classic_format_of_older_tools(agent) -> None:
    parsed = agent.parse_benchmark_output(CLASSIC_OLD)
    assert parsed["formats"] == ["classic", "stats"]
    assert parsed["num_threads"] == 2
    assert parsed["timings_us"]["inference_avg"] == 2.95034e06
    assert parsed["timings_us"]["warmup_avg"] == 3.51239e06
    assert parsed["memory_mb"] == {"measure": "peak", "init": 4.92969, "overall": 138.809}
    assert parsed["stats"][0] == {"min_iterations": 1, "min_seconds": 0.5, "count": 1, "curr_us": 3512391.0}
    summary = parsed["summary_ms"]
    assert summary["init"] == 17.187 and summary["first"] == 3512.391
    assert summary["mean"] == 2950.34 and summary["std"] == 109.798 and summary["count"] == 50


def test_parses_stat_lines_without_the_summary(agent) -> None:
    parsed = agent.parse_benchmark_output(STATS_ONLY)
    assert parsed["formats"] == ["stats"]
    assert parsed["timings_us"] is None and parsed["memory_mb"] is None
    assert parsed["num_threads"] == 4
    assert parsed["stats"][0]["min_iterations"] == 5 and "min_seconds" not in parsed["stats"][0]
    summary = parsed["summary_ms"]
    assert summary["first"] == 91.0  # the very first inference is the warmup block's first
    assert summary["warmup_avg"] == 60.1474
    assert summary["mean"] == 51.7432 and summary["p50"] == 51.891 and summary["count"] == 50


def test_parses_a_single_stat_line(agent) -> None:
    parsed = agent.parse_benchmark_output("count=50 first=123 curr=456 min=70 max=80 avg=71.2 std=2\n")
    assert parsed["summary_ms"]["mean"] == 0.0712 and parsed["summary_ms"]["max"] == 0.08
    assert parsed["summary_ms"]["first"] is None  # no warmup block, no summary line: unknown, not guessed


def test_rejects_output_without_timings(agent) -> None:
    with pytest.raises(ValueError, match="no benchmark_model timings"):
        agent.parse_benchmark_output("ERROR: Could not open 'model.tflite'.\nBenchmarking failed.\n")


def test_parse_benchmark_command(agent, tmp_path: Path) -> None:
    saved = tmp_path / "bench.txt"
    saved.write_text(CLASSIC_OLD)
    assert run_agent("parse-benchmark", saved).json == agent.parse_benchmark_output(CLASSIC_OLD)
    saved.write_text("Benchmarking failed.\n")
    result = run_agent("parse-benchmark", saved)
    assert result.returncode == 5 and result.error["kind"] == "parse"


def _fake_benchmark_model(directory: Path, output: str, status: int = 0) -> Path:
    """A stand-in that records its arguments and prints real benchmark_model output."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "output.txt").write_text(output)
    script = directory / "benchmark_model"
    script.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$@" > "{directory}/args.txt"\n'
        f'cat "{directory}/output.txt"\n'
        f"exit {status}\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def test_profile_cross_checks_with_benchmark_model_on_path(tiny_bundle_int8: Path, tmp_path: Path) -> None:
    fake = _fake_benchmark_model(tmp_path / "bin", CLASSIC_NEW)
    record = run_agent(
        "profile", tiny_bundle_int8, "--target", "local", "--threads", "2", "--runs", "3", "--min-seconds", "0",
        "--benchmark-model", "auto", env={"PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}"},
    ).json
    model = str(tiny_bundle_int8 / "model.tflite")
    assert (fake.parent / "args.txt").read_text().split() == [f"--graph={model}", "--num_threads=2"]
    bench = record["benchmark_model"]
    assert bench["path"] == str(fake) and bench["returncode"] == 0
    assert bench["command"] == [str(fake), f"--graph={model}", "--num_threads=2"]
    assert bench["summary_ms"]["mean"] == pytest.approx(0.0409012)
    assert bench["formats"] == ["classic", "stats"]
    assert not any("benchmark_model" in w for w in record["warnings"])


def test_profile_with_a_failing_benchmark_model_warns(tiny_bundle_int8: Path, tmp_path: Path) -> None:
    fake = _fake_benchmark_model(tmp_path / "bin", "ERROR: Failed to allocate tensors!\n", status=1)
    record = run_agent(
        "profile", tiny_bundle_int8, "--target", "local", "--runs", "2", "--min-seconds", "0", "--benchmark-model", fake,
    ).json
    assert record["benchmark_model"] is None
    assert any("exited with status 1" in w for w in record["warnings"])
    assert any("Failed to allocate tensors" in w for w in record["warnings"])
    assert record["latency_ms"]["count"] == 2  # our own measurement is unaffected


def test_profile_without_benchmark_model_warns_instead_of_failing(tiny_bundle_int8: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty-path"
    empty.mkdir()
    record = run_agent(
        "profile", tiny_bundle_int8, "--target", "local", "--runs", "2", "--min-seconds", "0",
        "--benchmark-model", "auto", env={"PATH": str(empty)},
    ).json
    assert record["benchmark_model"] is None
    assert any("benchmark_model is not on PATH" in w for w in record["warnings"])
