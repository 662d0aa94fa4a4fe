"""A small farm history in a real store: baselines, a few nights, and a run with every outcome."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.farm.regression import Verdict, check_run
from pipeline.farm.store import ResultsStore
from tests.helpers.records import latency_samples, make_record

EVIL = "<script>alert('x')</script>|dev"


@dataclass
class Farm:
    store: ResultsStore
    run_id: int
    verdicts: list[Verdict]

    def by_device(self) -> dict[str, Verdict]:
        return {v.device: v for v in self.verdicts}


def populate(store: ResultsStore, *, check: bool = True) -> tuple[int, list[Verdict]]:
    devices = {"rpi4-a": ("rpi4", 12.0, False), "rpi4-b": ("rpi4", 12.4, False), "rpi5-a": ("rpi5", 6.0, False),
               "qemu-pi": ("rpi4-emulated", 300.0, True)}
    for night in range(5):
        run_id = store.start_run("farm", "targets/farm.yaml", "default")
        for i, (device, (cls, median, emulated)) in enumerate(devices.items()):
            samples = latency_samples(100 * night + i, n=150, median_ms=median * (1 + 0.005 * (night % 2)))
            store.record_result(run_id, device, cls, "default", "ok",
                                make_record(samples, target=device, emulated=emulated), None)
        store.finish_run(run_id)
        if night == 0:
            store.accept_run_baselines(run_id)
    run_id = store.start_run("farm", "targets/farm.yaml", "default")
    new = "bbbbbbbbbbbbbbbb"
    store.record_result(run_id, "rpi4-a", "rpi4", "default", "ok",
                        make_record(latency_samples(900, n=150, median_ms=14.4), target="rpi4-a", bundle_id=new, top1=0.86), None)
    store.record_result(run_id, "rpi4-b", "rpi4", "default", "unreachable", None, None,
                        error="ssh: connect to 10.0.0.7 port 22: No route to host \x1b[0m <&>")
    store.record_result(run_id, "rpi5-a", "rpi5", "default", "ok",
                        make_record(latency_samples(901, n=150, median_ms=6.0), target="rpi5-a", bundle_id=new, throttled=0x4), None)
    store.record_result(run_id, "qemu-pi", "rpi4-emulated", "default", "ok",
                        make_record(latency_samples(902, n=150, median_ms=300.0), target="qemu-pi", bundle_id=new, emulated=True), None)
    store.record_result(run_id, EVIL, "rpi5", "default", "ok",
                        make_record(latency_samples(903, n=150, median_ms=5.0), target="evil", bundle_id=new), None)
    store.finish_run(run_id)
    verdicts = check_run(store, run_id, save=check) if check else []
    return run_id, verdicts


@pytest.fixture
def farm(tmp_path: Path):
    with ResultsStore(tmp_path / "results.sqlite") as store:
        run_id, verdicts = populate(store)
        yield Farm(store, run_id, verdicts)
