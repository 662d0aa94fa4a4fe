"""``agent.py profile`` with real runtimes on real tiny bundles, plus its measurement helpers."""

from __future__ import annotations

import datetime
import json
import os
import stat
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.bundle.manifest import hash_files, seal_manifest
from tests.helpers.agent_runner import PYTHONS, copy_bundle, load_agent_module, manifest, run_agent

RECORD_KEYS = {
    "schema_version", "bundle_id", "profile", "target", "started_at", "finished_at", "device", "runtime",
    "latency_ms", "memory", "energy", "energy_unavailable", "accuracy", "benchmark_model", "warnings",
}
DEVICE_KEYS = {
    "hostname", "machine", "cpu_model", "cores", "governor", "frequency_mhz", "temperature_c", "throttling",
    "os", "python", "emulated",
}
RUNTIME_KEYS = {"name", "version", "numpy", "threads_requested", "threads_used", "delegate"}
LATENCY_KEYS = {"init", "first", "warmup_count", "samples", "count", "mean", "std", "min", "max", "p50", "p90", "p95", "p99"}
ACCURACY_KEYS = {"top1", "count", "agreement_with_host", "disagreements"}


@pytest.fixture(scope="module")
def agent():
    return load_agent_module()


@pytest.mark.parametrize("which", ["tiny_bundle_int8", "tiny_bundle_float32"])
@pytest.mark.parametrize("python, runtime", PYTHONS)
def test_profile_record(python: Path, runtime: str, which: str, request: pytest.FixtureRequest) -> None:
    bundle = request.getfixturevalue(which)
    expected = manifest(bundle)
    record = run_agent(
        "profile", bundle, "--target", "local", "--threads", "2", "--runs", "30", "--min-seconds", "0", "--warmup", "3",
        python=python,
    ).json

    assert set(record) == RECORD_KEYS
    assert record["schema_version"] == 1
    assert record["bundle_id"] == bundle.name == expected["bundle_id"]
    assert record["profile"] == "tiny-test" and record["target"] == "local"
    started = datetime.datetime.fromisoformat(record["started_at"])
    assert started.tzinfo is not None and started <= datetime.datetime.fromisoformat(record["finished_at"])

    device = record["device"]
    assert set(device) == DEVICE_KEYS
    assert device["machine"] == os.uname().machine and device["cores"] == os.cpu_count()
    assert device["emulated"] is False and device["python"].startswith("3.")

    rt = record["runtime"]
    assert set(rt) == RUNTIME_KEYS
    assert rt["name"] == runtime
    if runtime == "tflite_runtime":
        assert rt["version"] == "2.14.0" and rt["numpy"].startswith("1.26")
    else:
        assert rt["version"][0].isdigit() and rt["numpy"] == np.__version__
    assert rt["threads_requested"] == 2 and rt["threads_used"] == 2
    assert rt["delegate"] in ("xnnpack", "default")

    lat = record["latency_ms"]
    assert set(lat) == LATENCY_KEYS
    samples = lat["samples"]
    assert lat["count"] == len(samples) == 30  # min-seconds 0: exactly --runs samples
    assert lat["warmup_count"] == 3
    assert lat["init"] > 0 and lat["first"] > 0 and all(s > 0 for s in samples)
    assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert lat["min"] == min(samples) and lat["max"] == max(samples)
    # the agent's own statistics agree with numpy's on the samples it reported
    assert lat["mean"] == pytest.approx(np.mean(samples), rel=1e-6, abs=1e-6)
    assert lat["std"] == pytest.approx(np.std(samples, ddof=1), rel=1e-4, abs=1e-6)
    for q in (50, 90, 95, 99):
        assert lat[f"p{q}"] == pytest.approx(np.percentile(samples, q), rel=1e-6, abs=1e-6)

    memory = record["memory"]
    assert 0 < memory["baseline_rss_mb"] <= memory["peak_rss_mb"]

    acc = record["accuracy"]
    assert set(acc) == ACCURACY_KEYS
    assert acc["count"] == expected["eval"]["count"]
    assert acc["agreement_with_host"] == 1.0 and acc["disagreements"] == []
    assert acc["top1"] == pytest.approx(expected["host_metrics"]["accuracy"])

    assert record["benchmark_model"] is None
    assert isinstance(record["warnings"], list)
    # a Pi 5 gives an estimate (test_agent_energy.py); anywhere else energy is null and says why
    assert (record["energy"] is None) == isinstance(record["energy_unavailable"], str)


def test_profile_honours_min_seconds_and_emulated_and_output(tiny_bundle_int8: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "profile.json"
    start = time.perf_counter()
    result = run_agent(
        "profile", tiny_bundle_int8, "--target", "rpi4-emu", "--threads", "1", "--runs", "1", "--min-seconds", "0.3",
        "--warmup", "0", "--emulated", "--output", out,
    )
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # the document went to --output only
    assert elapsed >= 0.3
    assert sorted(p.name for p in out.parent.iterdir()) == ["profile.json"]  # no temporary file left
    record = json.loads(out.read_text())
    assert record["target"] == "rpi4-emu"
    assert record["latency_ms"]["count"] > 1  # one run was not enough to fill 0.3 s
    assert record["latency_ms"]["warmup_count"] == 0
    assert record["runtime"]["threads_used"] == 1
    assert record["device"]["emulated"] is True
    assert any("emulat" in w for w in record["warnings"])


def _with_disagreements(bundle: Path, tmp_path: Path, indices: tuple[int, ...]) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray]:
    """A re-sealed copy whose host predictions differ at ``indices``: (bundle, host, changed, labels)."""
    bundle = copy_bundle(bundle, tmp_path)
    host = np.load(bundle / "eval" / "host_predictions.npy")
    labels = np.load(bundle / "eval" / "labels.npy")
    changed = host.copy()
    changed[list(indices)] = (host[list(indices)] + 1) % 3
    np.save(bundle / "eval" / "host_predictions.npy", changed)
    data = seal_manifest(manifest(bundle), hash_files(bundle))
    bundle = bundle.rename(bundle.with_name(data["bundle_id"]))
    (bundle / "manifest.json").write_text(json.dumps(data))
    return bundle, host, changed, labels


def test_profile_reports_disagreements_image_by_image(tiny_bundle_int8: Path, tmp_path: Path) -> None:
    """Rewrite the host predictions (and re-seal the bundle) so two images disagree on purpose."""
    bundle, host, changed, labels = _with_disagreements(tiny_bundle_int8, tmp_path, (1, 5))

    record = run_agent("profile", bundle, "--target", "local", "--runs", "2", "--min-seconds", "0").json
    acc = record["accuracy"]
    assert acc["agreement_with_host"] == pytest.approx(1 - 2 / len(host))
    assert acc["disagreements"] == [
        {"index": i, "label": int(labels[i]), "host": int(changed[i]), "device": int(host[i])} for i in (1, 5)
    ]



@pytest.mark.parametrize("python, runtime", PYTHONS)
def test_eval_images_scores_only_the_first_n(python: Path, runtime: str, tiny_bundle_int8: Path, tmp_path: Path) -> None:
    """Images 1 and 5 disagree on purpose: scoring the first 4 sees one of them, the timing loop is untouched."""
    bundle, host, _changed, labels = _with_disagreements(tiny_bundle_int8, tmp_path, (1, 5))
    common = ("profile", bundle, "--target", "local", "--runs", "12", "--min-seconds", "0", "--runtime", runtime)

    record = run_agent(*common, "--eval-images", "4", python=python).json
    acc = record["accuracy"]
    assert acc["count"] == 4 and acc["agreement_with_host"] == pytest.approx(3 / 4)
    assert [d["index"] for d in acc["disagreements"]] == [1]
    assert acc["top1"] == pytest.approx(float(np.mean(host[:4] == labels[:4])))  # device predicts what host did
    assert record["latency_ms"]["count"] == 12

    everything = run_agent(*common, "--eval-images", str(10 * len(host)), python=python).json["accuracy"]
    assert everything["count"] == len(host) and [d["index"] for d in everything["disagreements"]] == [1, 5]
    refused = run_agent(*common, "--eval-images", "0", python=python)
    assert refused.returncode == 2 and "eval-images" in refused.error["error"]


# --------------------------------------------------------------------------- helpers, in process


def test_percentile_matches_numpy_linear(agent) -> None:
    rng = np.random.default_rng(1)
    for n in (1, 2, 3, 10, 101):
        values = sorted(rng.exponential(size=n).tolist())
        for q in (0, 1, 50, 90, 95, 99, 100):
            assert agent.percentile(values, q) == pytest.approx(np.percentile(values, q))
    assert agent.percentile([], 50) is None


def test_summarize_uses_sample_std(agent) -> None:
    stats = agent.summarize([3.0, 1.0, 2.0, 10.0])
    assert stats["count"] == 4 and stats["min"] == 1.0 and stats["max"] == 10.0
    assert stats["mean"] == 4.0 and stats["p50"] == 2.5
    assert stats["std"] == pytest.approx(np.std([3, 1, 2, 10], ddof=1))
    assert agent.summarize([5.0])["std"] == 0.0


def test_preprocess_quantizes_with_the_input_tensor_parameters(agent) -> None:
    images = np.array([0, 51, 255], dtype=np.uint8).reshape(1, 1, 3, 1)
    pre = {"scale": 1 / 255, "mean": 0.5, "std": 0.5}
    as_float = agent.preprocess(np, images, pre, {"dtype": np.float32, "quantization": (0.0, 0)})
    assert as_float.dtype == np.float32
    np.testing.assert_allclose(as_float.ravel(), [-1.0, -0.6, 1.0], rtol=1e-6)
    as_int8 = agent.preprocess(np, images, pre, {"dtype": np.int8, "quantization": (1 / 128, 0)})
    assert as_int8.dtype == np.int8
    assert as_int8.ravel().tolist() == [-128, -77, 127]  # 1.0 * 128 = 128 is clipped to 127
    as_uint8 = agent.preprocess(np, images, {"scale": 1 / 255}, {"dtype": np.uint8, "quantization": (1 / 255, 0)})
    assert as_uint8.ravel().tolist() == [0, 51, 255]


def test_decode_throttled_bits(agent) -> None:
    state = agent.decode_throttled(0x50005)
    assert state["raw"] == "0x50005"
    assert state["under_voltage"] and state["throttled"]
    assert not state["frequency_capped"] and not state["soft_temp_limit"]
    assert state["ever_under_voltage"] and state["ever_throttled"]
    assert not state["ever_frequency_capped"] and not state["ever_soft_temp_limit"]
    assert not any(v for k, v in agent.decode_throttled(0).items() if k != "raw")


def test_throttling_reads_vcgencmd_when_present(agent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "vcgencmd"
    fake.write_text('#!/bin/sh\n[ "$1" = get_throttled ] && echo "throttled=0x80008"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(tmp_path))
    state = agent.throttling()
    assert state["raw"] == "0x80008" and state["soft_temp_limit"] and state["ever_soft_temp_limit"]
    assert not state["throttled"]


RPI4_ARM64_CPUINFO = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd08
CPU revision\t: 3

Hardware\t: BCM2835
Revision\t: c03114
Serial\t\t: 10000000abcdef01
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""

X86_CPUINFO = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz\n"


def test_cpu_model_on_boards_and_pcs(agent) -> None:
    assert agent.cpu_model_from_cpuinfo(RPI4_ARM64_CPUINFO) == "Raspberry Pi 4 Model B Rev 1.4 / Cortex-A72"
    assert agent.cpu_model_from_cpuinfo(X86_CPUINFO) == "Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz"
    no_model = RPI4_ARM64_CPUINFO.replace("Model\t\t: Raspberry Pi 4 Model B Rev 1.4\n", "")
    assert agent.cpu_model_from_cpuinfo(no_model) == "BCM2835 / Cortex-A72"
    assert agent.cpu_model_from_cpuinfo("") is None


def test_device_fingerprint_never_crashes(agent) -> None:
    device = agent.device_fingerprint(False)
    assert set(device) == DEVICE_KEYS
    assert device["python"] and device["cores"] == os.cpu_count()
