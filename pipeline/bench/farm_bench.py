"""Benchmark the farm: parallel scale, A/A false regressions, sensitivity to a real slowdown.

Real parts only: loopback OpenSSH servers, the real agent, the real SQLite store and the real
regression check. The slowdown is genuine: the float32 bundle of the same profile, which is slower
than its int8 twin under ai-edge-litert's XNNPACK kernels on this CPU (the ratio is measured and
reported). A CPU-bound competitor does not work for this: invokes of ~1 ms fit inside the
scheduler's time slices, so the median hardly moves.

All loopback devices share this host's cores, so the scale test uses light profiling (the host's
job is driving parallel sessions); a heavy variant with 1 s of CPU-bound timing per device is
reported too, and cannot scale past the core count. The fleet sections (16 devices behind emulated
Wi-Fi, deploys over links that cut) come from :mod:`pipeline.bench.fleet_bench`.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from pipeline.bench import fleet_bench
from pipeline.bench.common import target, write_result
from pipeline.bench.variants import bundle_for_mode
from pipeline.farm.inventory import load_inventory
from pipeline.farm.regression import check_run
from pipeline.farm.runner import run_farm
from pipeline.farm.store import ResultsStore
from pipeline.lab.loopback import default_python
from pipeline.lab.sshd import SSHServer
from pipeline.progress import Progress

PROFILING = {"runs": 200, "min_seconds": 1.0, "warmup": 20}
LIGHT_PROFILING = {"runs": 50, "min_seconds": 0.0, "warmup": 5}


def _inventory(root: Path, servers: list[SSHServer], python: str, name: str, profiling: dict = PROFILING) -> Path:
    entries = []
    for i, server in enumerate(servers):
        device = f"{name}-{i}"
        server.write_target(root / f"{device}.yaml", device, root / "devices" / device, python, threads=1, profiling=profiling)
        entries.append({"name": device, "target": f"{device}.yaml"})
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "concurrency": len(servers), "timeout": 300, "retries": 0, "profile": "bench", "devices": entries}))
    return path


def _timed_farm(inventory: Path, store: ResultsStore, bundle: Path) -> tuple[float, Any]:
    loaded = load_inventory(inventory)
    run_farm(loaded, store=store, bundles={"bench": bundle})  # first run installs the bundle
    started = time.perf_counter()
    run = run_farm(loaded, store=store, bundles={"bench": bundle})
    return time.perf_counter() - started, run


def run(profile_name: str = "default", progress: Progress | None = None, repeats: int = 20, slow_repeats: int = 5) -> dict[str, Any]:
    bundle = bundle_for_mode(profile_name, "int8", progress)
    slower = bundle_for_mode(profile_name, "float32", progress)
    python = default_python()
    taskset = shutil.which("taskset")
    with tempfile.TemporaryDirectory(prefix="edgeship-farm-bench-") as tmp:
        root = Path(tmp)
        servers = [SSHServer(root / "sshd" / f"s{i}").start() for i in range(8)]
        store = ResultsStore(root / "results.sqlite")
        try:
            one_s, _ = _timed_farm(_inventory(root, servers[:1], python, "one", LIGHT_PROFILING), store, bundle)
            eight_s, eight = _timed_farm(_inventory(root, servers, python, "eight", LIGHT_PROFILING), store, bundle)
            eight_ok = sum(o.status == "ok" for o in eight.outcomes)
            heavy_one_s, _ = _timed_farm(_inventory(root, servers[:1], python, "hone"), store, bundle)
            heavy_eight_s, _ = _timed_farm(_inventory(root, servers, python, "height"), store, bundle)

            # A/A and sensitivity on one device (ai-edge-litert, XNNPACK) pinned to core 0.
            pinned = f"{taskset} -c 0 {sys.executable}" if taskset else sys.executable
            aa_inventory = _inventory(root, servers[:1], pinned, "aa")
            loaded = load_inventory(aa_inventory)
            base = run_farm(loaded, store=store, bundles={"bench": bundle})
            store.accept_run_baselines(base.run_id)
            aa_statuses = []
            for _ in range(repeats):
                result = run_farm(loaded, store=store, bundles={"bench": bundle})
                aa_statuses.append(check_run(store, result.run_id)[0].status)
            slow_statuses, slow_ratios = [], []
            for _ in range(slow_repeats):
                result = run_farm(loaded, store=store, bundles={"bench": slower})
                verdict = check_run(store, result.run_id)[0]
                slow_statuses.append(verdict.status)
                slow_ratios.append(verdict.latency.ratio if verdict.latency else None)
        finally:
            store.close()
            for server in servers:
                server.kill()
    false_regressions = aa_statuses.count("regression")
    flagged = slow_statuses.count("regression")
    payload = {
        "profile": profile_name,
        "bundle_id": bundle.name,
        "scale": {
            "light_profiling": LIGHT_PROFILING, "one_device_s": round(one_s, 2), "eight_devices_s": round(eight_s, 2),
            "ratio": round(eight_s / one_s, 2), "eight_ok": eight_ok,
            "heavy_profiling": PROFILING, "heavy_one_device_s": round(heavy_one_s, 2), "heavy_eight_devices_s": round(heavy_eight_s, 2),
            "heavy_ratio": round(heavy_eight_s / heavy_one_s, 2), "host_cores": os.cpu_count(),
        },
        "aa": {"runs": repeats, "statuses": aa_statuses, "false_regressions": false_regressions},
        "sensitivity": {
            "method": f"baseline int8 bundle {bundle.name}; candidate: float32 bundle {slower.name} of the same profile, ai-edge-litert, 1 thread, pinned to core 0",
            "runs": slow_repeats, "statuses": slow_statuses, "median_ratios": slow_ratios, "flagged": flagged,
        },
        "targets": {
            "eight_devices_le_2x_one_device": target(round(eight_s / one_s, 2), 2.0, False),
            "aa_false_regressions_le_1_of_20": target(false_regressions, 1, False),
            "slowdown_flagged_every_time": {"value": f"{flagged}/{slow_repeats}", "met": flagged == slow_repeats and min(r or 0 for r in slow_ratios) >= 1.2},
        },
    }
    fleet, fleet_targets = fleet_bench.sections(bundle, slower, python)  # 16 devices behind emulated Wi-Fi; cut links
    payload.update(fleet)
    payload["targets"].update(fleet_targets)
    write_result("farm", payload)
    return payload
