"""Benchmark the farm over emulated Wi-Fi: scale behind slow links, and deploys over links that cut.

Real parts only: loopback OpenSSH servers, each behind its own link emulator
(:mod:`pipeline.lab.link`: 100 ms round trip, 4 Mbit/s), the real agent, store and farm runner.

* ``fleet_scale``: a full farm run (fresh devices: agent and bundle uploaded, then profiled
  briefly) of 16 devices at concurrency 8, against one device over the same link; 8 devices (one
  wave) show what running agents side by side on this host's cores costs by itself. The profiling
  is short on purpose (20 runs, 0.2 s, accuracy scored on the first 100 eval images): all agents
  share this host's cores, and the point is the orchestrator's concurrency. CPU is accounted per device: the orchestrator (this process, less
  the link emulator's threads), the link emulator, and the device side (sshd and the agents).
* ``flaky_links``: 20 deploys, each over a link that cuts once at a random byte of its upload,
  retried like the farm retries a device; how many end with the new release active and nothing
  left behind (no ``.partial``, tarball or lock; the old release pruned).

``python -m pipeline.bench.fleet_bench [--profile NAME]`` runs these alone and updates
``results/bench/farm.json`` in place; ``python -m pipeline.bench farm`` runs them with the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import yaml

from pipeline.bench.common import machine, target, write_result
from pipeline.clock import utc_now
from pipeline.config.target import parse_target
from pipeline.fsutil import atomic_write_json
from pipeline.lab.link import Link, target_through
from pipeline.lab.sshd import SSHServer
from pipeline.paths import results_dir

RTT = 0.1  # s
RATE = 500_000  # bytes/s: 4 Mbit/s
DEVICES = 16
CONCURRENCY = 8
PROFILING = {"runs": 20, "min_seconds": 0.2, "warmup": 2, "eval_images": 100}
FLAKY_DEPLOYS = 20
FLAKY_ATTEMPTS = 3  # one deploy and two retries, as an inventory with retries: 2
SEED = 13


def _cpu_of(pid: int) -> float:
    """CPU seconds of ``pid`` and its reaped children (sshd reaps its sessions and their agents)."""
    import psutil

    t = psutil.Process(pid).cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Fleet:
    """``count`` sshd devices, each behind its own link; farm inventories over fresh device dirs."""

    def __init__(self, root: Path, count: int, python: str):
        self.root, self.python = root, python
        self.servers: list[SSHServer] = []
        self.links: list[Link] = []
        for i in range(count):
            server = SSHServer(root / "sshd" / f"s{i}").start()
            self.servers.append(server)
            self.links.append(Link(server.port, rtt=RTT, rate=RATE).start())

    def inventory(self, label: str, count: int) -> Path:
        entries = []
        for i in range(count):
            name = f"wifi-{i:02d}"
            data = target_through(self.links[i], self.servers[i], name, self.root / "devices" / label / name, self.python,
                                  threads=1, profiling=PROFILING, transport={"retries": 1})
            path = self.root / "targets" / label / f"{name}.yaml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(yaml.safe_dump(data, sort_keys=False))
            entries.append({"name": name, "target": str(path)})
        path = self.root / f"{label}.yaml"
        path.write_text(yaml.safe_dump({"name": label, "concurrency": CONCURRENCY, "timeout": 300, "retries": 0, "profile": "bench", "devices": entries}))
        return path

    def cpu(self) -> tuple[float, float, float]:
        """(this process, its link threads, the device side) CPU seconds so far."""
        return _own_cpu(), sum(link.cpu_seconds() for link in self.links), sum(_cpu_of(s.proc.pid) for s in self.servers if s.proc)

    def close(self) -> None:
        for link in self.links:
            link.close()
        for server in self.servers:
            server.kill()


def _farm_run(inventory: Path, store: Any, bundle: Path) -> tuple[float, int]:
    from pipeline.farm.inventory import load_inventory
    from pipeline.farm.runner import run_farm

    loaded = load_inventory(inventory)
    started = time.perf_counter()
    run = run_farm(loaded, store=store, bundles={"bench": bundle})
    return time.perf_counter() - started, sum(o.status == "ok" for o in run.outcomes)


def scale(bundle: Path, python: str, repeats: int = 3) -> dict[str, Any]:
    """Median wall time of a full farm run of one device and of DEVICES devices; CPU per device."""
    from pipeline.farm.store import ResultsStore

    with tempfile.TemporaryDirectory(prefix="edgeship-fleet-bench-") as tmp:
        root = Path(tmp)
        fleet = _Fleet(root, DEVICES, python)
        store = ResultsStore(root / "results.sqlite")
        one, wave, many, oks, cpu = [], [], [], [], []
        try:
            for r in range(repeats):
                seconds, _ = _farm_run(fleet.inventory(f"one-{r}", 1), store, bundle)
                one.append(seconds)
                seconds, _ = _farm_run(fleet.inventory(f"wave-{r}", CONCURRENCY), store, bundle)
                wave.append(seconds)  # as many devices as run at once: what sharing the host's cores costs
                time.sleep(0.5)  # sessions of the last run end and are reaped
                before = fleet.cpu()
                seconds, ok = _farm_run(fleet.inventory(f"all-{r}", DEVICES), store, bundle)
                time.sleep(0.5)
                after = fleet.cpu()
                many.append(seconds)
                oks.append(ok)
                cpu.append([b - a for a, b in zip(before, after)])
        finally:
            store.close()
            fleet.close()
    own, link, device = (statistics.median(c[i] for c in cpu) for i in range(3))
    one_s, wave_s, many_s = statistics.median(one), statistics.median(wave), statistics.median(many)
    return {
        "link": {"rtt_s": RTT, "rate_bytes_per_s": RATE, "rate_mbit_per_s": RATE * 8 / 1e6},
        "devices": DEVICES, "concurrency": CONCURRENCY, "profiling": PROFILING, "repeats": repeats,
        "bundle_bytes": sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file()),
        "one_device_s": round(one_s, 2), "all_devices_s": round(many_s, 2), "ratio": round(many_s / one_s, 2),
        "one_wave_devices": CONCURRENCY, "one_wave_s": round(wave_s, 2), "one_wave_ratio": round(wave_s / one_s, 2),
        "one_device_runs_s": [round(s, 2) for s in one], "one_wave_runs_s": [round(s, 2) for s in wave],
        "all_devices_runs_s": [round(s, 2) for s in many],
        "all_ok": oks,
        "cpu_s_per_device": {
            "orchestrator": round((own - link) / DEVICES, 3),
            "link_emulator": round(link / DEVICES, 3),
            "device_side_sshd_and_agents": round(device / DEVICES, 3),
            "host_total_without_link_emulator": round((own - link + device) / DEVICES, 3),
        },
        "host_cores": os.cpu_count(),
    }


def _leftovers(device: Path, bundle_id: str) -> list[str]:
    """Anything an interrupted deploy could leave: partials, tarballs, the lock, other releases."""
    found = [str(p.relative_to(device)) for p in device.rglob("*.partial*")]
    found += [str(p.relative_to(device)) for p in (device / "releases").glob("*.tar.gz")]
    found += [name for name in (".lock", "current.tmp") if (device / name).exists() or (device / name).is_symlink()]
    found += [f"releases/{p.name}" for p in (device / "releases").iterdir() if p.name != bundle_id]
    return sorted(set(found))


def flaky(bundles: list[Path], python: str, deploys: int = FLAKY_DEPLOYS, seed: int = SEED) -> dict[str, Any]:
    """Deploys alternating between ``bundles`` (keep_releases 1, so every one uploads), each cut once
    at a random byte of its tarball and retried."""
    from pipeline.bundle.manifest import make_tarball
    from pipeline.deploy import deploy
    from pipeline.errors import DeployError

    rng = random.Random(seed)
    tarballs = [make_tarball(b) for b in bundles]
    results = []
    with tempfile.TemporaryDirectory(prefix="edgeship-flaky-bench-") as tmp:
        root = Path(tmp)
        server = SSHServer(root / "sshd").start()
        try:
            with Link(server.port, rtt=RTT, rate=RATE) as link:
                device = root / "device"
                data = target_through(link, server, "flaky-pi", device, python, keep_releases=1, transport={"retries": 1})
                cfg = parse_target(data, "flaky bench target")
                deploy(cfg, bundles[-1])  # the agent is installed; each deploy below uploads a bundle
                for index in range(deploys):
                    tarball = tarballs[index % len(tarballs)]
                    bundle_id = tarball.name.split(".")[0]
                    cut_at = rng.randrange(1, tarball.stat().st_size)
                    cuts_before = link.cuts

                    def step(message: str, tarball: Path = tarball, cut_at: int = cut_at) -> None:
                        if message.startswith(f"uploading {tarball.name}"):
                            link.cut_after(up=cut_at)

                    started, attempts, errors = time.perf_counter(), 0, []
                    for attempt in range(FLAKY_ATTEMPTS):
                        attempts += 1
                        try:
                            deploy(cfg, tarball, step=step if attempt == 0 else None)
                            break
                        except DeployError as exc:
                            errors.append(str(exc)[:200])
                            time.sleep(min(2.0 * attempts, 10.0))  # the farm's pause between attempts
                    current = os.readlink(device / "current").split("/")[-1] if (device / "current").is_symlink() else None
                    left = _leftovers(device, bundle_id)
                    results.append({
                        "bundle_id": bundle_id, "tarball_bytes": tarball.stat().st_size, "cut_at_byte": cut_at,
                        "cut_fired": link.cuts > cuts_before, "attempts": attempts, "seconds": round(time.perf_counter() - started, 2),
                        "active": current == bundle_id, "leftovers": left, "ok": current == bundle_id and not left,
                        "first_error": errors[0] if errors else None,
                    })
        finally:
            server.kill()
    good = sum(r["ok"] for r in results)
    return {
        "link": {"rtt_s": RTT, "rate_bytes_per_s": RATE}, "deploys": deploys, "seed": seed, "max_attempts": FLAKY_ATTEMPTS,
        "good": good, "cuts_fired": sum(r["cut_fired"] for r in results),
        "attempts": [r["attempts"] for r in results], "runs": results,
    }


def sections(bundle: Path, other: Path, python: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(sections, targets) for farm.json."""
    fleet = scale(bundle, python)
    cuts = flaky([bundle, other], python)
    targets = {
        "fleet_16_devices_le_2_5x_one_device": target(fleet["ratio"], 2.5, False),
        "fleet_host_cpu_s_per_device": {"value": fleet["cpu_s_per_device"]["host_total_without_link_emulator"], "met": None},
        "flaky_deploys_recovered_20_of_20": {"value": f"{cuts['good']}/{cuts['deploys']}", "limit": f"{cuts['deploys']}/{cuts['deploys']}",
                                             "met": cuts["good"] == cuts["deploys"] and cuts["cuts_fired"] == cuts["deploys"]},
    }
    return {"fleet_scale": fleet, "flaky_links": cuts}, targets


def run_alone(profile_name: str, progress: Optional[Any] = None) -> dict[str, Any]:
    """Run the fleet sections and merge them into results/bench/farm.json (kept otherwise)."""
    from pipeline.bench.variants import bundle_for_mode
    from pipeline.lab.loopback import default_python

    bundle = bundle_for_mode(profile_name, "int8", progress)
    other = bundle_for_mode(profile_name, "float32", progress)
    new, targets = sections(bundle, other, default_python())
    path = results_dir() / "bench" / "farm.json"
    if not path.is_file():
        write_result("farm", {"profile": profile_name, "bundle_id": bundle.name, **new, "targets": targets})
        return json.loads(path.read_text())
    payload = json.loads(path.read_text())  # the other sections keep their own measured_at and host
    payload.update(new, fleet_profile=profile_name, fleet_bundle_id=bundle.name, fleet_measured_at=utc_now("seconds"), fleet_host=machine())
    payload["targets"] = {**payload.get("targets", {}), **targets}
    atomic_write_json(path, payload)
    return payload


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.bench.fleet_bench")
    parser.add_argument("--profile", default="default")
    args = parser.parse_args()
    from pipeline.progress import terminal_progress

    payload = run_alone(args.profile, terminal_progress())
    for key in ("fleet_16_devices_le_2_5x_one_device", "fleet_host_cpu_s_per_device", "flaky_deploys_recovered_20_of_20"):
        print(f"{key}: {payload['targets'][key]}")


if __name__ == "__main__":
    main()
