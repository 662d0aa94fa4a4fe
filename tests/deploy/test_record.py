"""The host's typed profile record: parsed once, lenient on what a device may send, strict on validity."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pipeline.deploy.record import RECORD_SCHEMA_VERSION, ProfileRecord
from tests.helpers.records import latency_samples, make_record


def test_a_real_agent_shaped_record_reads_by_attribute() -> None:
    samples = latency_samples(1, n=50)
    data = make_record(samples, top1=0.9, count=100, agreement=0.98, peak_rss_mb=40.0, temperature_c=51.0, threads=2)
    record = ProfileRecord.parse(json.loads(json.dumps(data)))
    assert record.schema_version == RECORD_SCHEMA_VERSION and record.bundle_id == data["bundle_id"]
    assert record.latency.count == 50 and record.latency.p50 == data["latency_ms"]["p50"]
    np.testing.assert_array_equal(record.samples(), np.asarray(data["latency_ms"]["samples"]))
    assert (record.accuracy.top1, record.accuracy.count, record.accuracy.agreement_with_host) == (0.9, 100, 0.98)
    assert record.memory.peak_rss_mb == 40.0 and record.device.temperature_c == 51.0
    assert record.runtime.threads_used == 2 and record.runtime.name == data["runtime"]["name"]
    assert record.invalid_reasons() == [] and record.throttled_now == []
    assert record.to_json() == data and record.to_json() is not record.raw


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda d: d.update(schema_version=2), "schema_version is 2"),
        (lambda d: d.update(schema_version=True), "schema_version is True"),
        (lambda d: d.pop("bundle_id"), "no bundle_id"),
        (lambda d: d["latency_ms"].update(samples=[]), "missing or empty"),
        (lambda d: d["latency_ms"].update(samples=[1.0, math.nan]), "not a finite, non-negative number"),
        (lambda d: d["latency_ms"].update(samples=[1.0, -0.5]), "not a finite, non-negative number"),
        (lambda d: d.update(latency_ms="fast"), "no latency_ms object"),
        (lambda d: d["device"].update(temperature_c=91.5), "91.5 °C is above"),
    ],
)
def test_what_makes_a_record_unusable_is_named(damage, reason) -> None:
    data = make_record(latency_samples(2, n=20))
    damage(data)
    record = ProfileRecord.parse(data)
    assert any(reason in r for r in record.invalid_reasons()), record.invalid_reasons()
    if "samples" in reason or "latency_ms" in reason:
        with pytest.raises(ValueError):
            record.samples()


def test_throttling_now_invalidates_but_fields_of_the_wrong_type_just_read_as_unknown() -> None:
    data = make_record(latency_samples(3, n=20), throttled=0x4)  # throttled now
    data["memory"]["peak_rss_mb"] = "lots"
    data["accuracy"]["top1"] = True
    data["runtime"]["threads_used"] = 1.5
    record = ProfileRecord.parse(data)
    assert record.throttled_now == ["throttled"]
    assert any("device reported throttled" in r for r in record.invalid_reasons())
    assert record.memory.peak_rss_mb is None and record.accuracy.top1 is None and record.runtime.threads_used is None


def test_a_record_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(ValueError, match="JSON object, not list"):
        ProfileRecord.parse([1, 2])


def test_runtime_differences_name_each_field() -> None:
    a = ProfileRecord.parse(make_record(latency_samples(4, n=5), runtime_version="2.14.0", threads=4))
    b = ProfileRecord.parse(make_record(latency_samples(4, n=5), runtime_version="2.16.1", threads=2))
    assert [d[0] for d in a.runtime.differences(b.runtime)] == ["version", "threads_used"]


# ------------------------------------------------------------------------------------- energy


def test_a_pi5_record_carries_its_energy_estimate() -> None:
    data = json.loads(json.dumps(make_record(latency_samples(1, n=50), energy=0.85)))
    record = ProfileRecord.parse(data)
    assert record.energy is not None and record.energy_unavailable is None
    assert record.energy.mj_per_inference == 0.85 and record.energy.idle_power_w == 2.5
    assert record.energy.load_power_w == data["energy"]["load_power_w"] > 2.5
    assert record.energy.samples == data["energy"]["samples"] and record.energy.idle_samples == 3
    assert record.energy.estimated is True and record.energy.source == "vcgencmd pmic_read_adc"
    assert record.invalid_reasons() == [] and record.to_json() == data


@pytest.mark.parametrize(
    "change, reason",
    [
        (lambda d: None, "no vcgencmd on PATH"),  # what the agent says on a board without vcgencmd
        (lambda d: (d.pop("energy"), d.pop("energy_unavailable")), "predates energy estimates"),
        (lambda d: d.update(energy={"mj_per_inference": "lots"}, energy_unavailable=None), "no finite mj_per_inference"),
        (lambda d: d.update(energy={"load_power_w": 4.0}, energy_unavailable=None), "no finite mj_per_inference"),
        (lambda d: d.update(energy_unavailable=None), "gives no reason"),
    ],
)
def test_a_record_without_usable_energy_says_why_and_stays_valid(change, reason: str) -> None:
    data = make_record(latency_samples(1, n=50), energy=None)
    change(data)
    record = ProfileRecord.parse(data)
    assert record.energy is None
    assert reason in record.energy_unavailable
    assert record.invalid_reasons() == []  # no energy is not a reason to refuse the latency
