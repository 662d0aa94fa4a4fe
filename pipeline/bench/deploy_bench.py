"""Benchmark deploy and profile: SSH deploy time, redeploy time, agent overhead, int8 vs float32.

Everything runs against real components: an OpenSSH server on loopback with throwaway keys, the
real agent under the device-like Python (.venv-agent), and LiteRT in this process for the bare loop.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.bench.common import target, write_result
from pipeline.bench.variants import bundle_for_mode
from pipeline.config.target import load_target, parse_target
from pipeline.deploy.record import ProfileRecord
from pipeline.lab.loopback import default_python
from pipeline.lab.sshd import SSHServer
from pipeline.progress import Progress


def bare_loop_p50(bundle: Path, threads: int, runs: int = 2000) -> float:
    """p50 of ``invoke()`` in a plain loop in this process: the floor the agent is measured against."""
    from pipeline.bundle.manifest import read_manifest
    from pipeline.data.preprocessing import PreprocessingSpec
    from pipeline.quantize.litert_eval import p50_invoke_ms

    manifest = read_manifest(bundle)
    pre = {k: manifest["preprocessing"][k] for k in ("height", "width", "channels", "scale", "mean", "std")}
    image = PreprocessingSpec(**pre).apply(np.load(bundle / "eval/images.npy")[:1])
    return p50_invoke_ms((bundle / "model.tflite").read_bytes(), image, runs=runs, threads=threads, warmup=50)


def _local_record(bundle: Path, runs: int, seconds: float) -> ProfileRecord:
    from pipeline.deploy import deploy, profile

    local = load_target("local")
    deploy(local, bundle)
    return profile(local, runs=runs, min_seconds=seconds).record


def _ssh_deploy_and_profile(bundle: Path, device_python: str) -> dict[str, Any]:
    """First deploy + profile, then an unchanged redeploy, against a fresh loopback sshd."""
    from pipeline.deploy import deploy, profile

    with tempfile.TemporaryDirectory(prefix="edgeship-bench-") as tmp:
        server = SSHServer(Path(tmp) / "sshd").start()
        try:
            data = server.target_dict("bench-ssh", Path(tmp) / "device", device_python, threads=2,
                                      profiling={"runs": 100, "min_seconds": 1.0, "warmup": 10})
            ssh_target = parse_target(data, "bench target")
            started = time.perf_counter()
            first = deploy(ssh_target, bundle)
            record = profile(ssh_target, doctor=first.doctor).record
            deploy_and_profile = time.perf_counter() - started
            started = time.perf_counter()
            again = deploy(ssh_target, bundle)
            redeploy = time.perf_counter() - started
        finally:
            server.kill()
    return {
        "deploy_and_profile_seconds": round(deploy_and_profile, 2),
        "redeploy_seconds": round(redeploy, 3),
        "redeploy_skipped_upload": again.skipped_upload,
        "runtime": record.raw.get("runtime"),
        "p50_ms": record.latency.p50,
        "eval_images": record.accuracy.count,
        "agreement_with_host": record.accuracy.agreement_with_host,
        "disagreements": list(record.accuracy.disagreements),
    }


def run(profile_name: str = "default", progress: Progress | None = None) -> dict[str, Any]:
    int8 = bundle_for_mode(profile_name, "int8", progress)
    float32 = bundle_for_mode(profile_name, "float32", progress)
    ssh = _ssh_deploy_and_profile(int8, default_python())
    ssh_litert = _ssh_deploy_and_profile(int8, sys.executable)

    local = load_target("local")
    local_int8 = _local_record(int8, runs=1000, seconds=2.0)
    bare = bare_loop_p50(int8, threads=local.threads)
    local_float = _local_record(float32, runs=1000, seconds=2.0)
    agent_p50 = local_int8.latency.p50
    overhead = agent_p50 / bare - 1
    payload = {
        "profile": profile_name,
        "bundle_id": int8.name,
        "ssh": ssh,
        "ssh_ai_edge_litert": ssh_litert,
        "local": {
            "runtime": local_int8.raw.get("runtime"),
            "int8_p50_ms": agent_p50,
            "float32_p50_ms": local_float.latency.p50,
            "bare_loop_int8_p50_ms": round(bare, 5),
            "int8_over_float32_p50": round(agent_p50 / local_float.latency.p50, 3),
            "int8_top1": local_int8.accuracy.top1,
            "float32_top1": local_float.accuracy.top1,
        },
        "targets": {
            "ssh_deploy_plus_profile_s_le_10": target(ssh["deploy_and_profile_seconds"], 10, False),
            "ssh_deploy_plus_profile_s_le_10_ai_edge_litert_device": target(ssh_litert["deploy_and_profile_seconds"], 10, False),
            "redeploy_unchanged_s_le_1": target(ssh["redeploy_seconds"], 1, False),
            "agent_p50_within_10pct_of_bare_loop": target(round(abs(overhead) * 100, 2), 10, False),
            "int8_over_float32_p50_ratio": {"value": round(agent_p50 / local_float.latency.p50, 3), "met": None},
        },
    }
    write_result("deploy", payload)
    return payload
