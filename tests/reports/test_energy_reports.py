"""Energy in the night's reports: a column only when some device sent an estimate, the change against
the baseline next to it, and the estimate (or why it was not compared) in the JUnit details."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pipeline.farm.regression import Verdict, check_run
from pipeline.farm.store import ResultsStore
from pipeline.reports.html import render_html
from pipeline.reports.junit import junit_xml
from pipeline.reports.markdown import summary_markdown
from tests.helpers.records import latency_samples, make_record

NEW_BUNDLE = "bbbbbbbbbbbbbbbb"


def _night(store: ResultsStore, *, pi5_mj: float, bundle_id: str = "aaaaaaaaaaaaaaaa", seed: int = 0) -> int:
    run_id = store.start_run("farm", "targets/farm.yaml", "default")
    for i, (device, cls, energy, median) in enumerate((("rpi5-a", "rpi5", pi5_mj, 6.0), ("rpi4-a", "rpi4", None, 12.0))):
        record = make_record(latency_samples(seed + i, n=150, median_ms=median), target=device, bundle_id=bundle_id, energy=energy)
        store.record_result(run_id, device, cls, "default", "ok", record, None)
    store.finish_run(run_id)
    return run_id


@pytest.fixture
def energy_night(tmp_path: Path) -> list[Verdict]:
    """Baseline 0.50 mJ on the Pi 5; tonight's bundle takes 0.80 mJ at the same latency."""
    with ResultsStore(tmp_path / "results.sqlite") as store:
        store.accept_run_baselines(_night(store, pi5_mj=0.50))
        return check_run(store, _night(store, pi5_mj=0.80, bundle_id=NEW_BUNDLE, seed=100), save=True)


def test_the_energy_regression_is_the_pi5s_and_only_the_pi5s(energy_night: list[Verdict]) -> None:
    by_device = {v.device: v for v in energy_night}
    assert by_device["rpi5-a"].status == "regression" and by_device["rpi5-a"].regressed_metrics() == ["energy"]
    assert by_device["rpi4-a"].status == "pass" and by_device["rpi4-a"].energy.status == "not-compared"


def test_markdown_has_an_energy_column_with_the_change(energy_night: list[Verdict]) -> None:
    text = summary_markdown(energy_night)
    header = next(line for line in text.splitlines() if line.startswith("| device"))
    assert header.endswith("| energy mJ/inference (Δ) |")
    rows = {line.split(" | ")[0][2:]: line for line in text.splitlines() if line.startswith("| rpi")}
    assert re.search(r"\| 0\.800 \(\+0\.300\) \|$", rows["rpi5-a"])
    assert rows["rpi4-a"].endswith("| – |")  # no estimate: the cell says so, the column stays aligned
    assert "regression (energy)" in rows["rpi5-a"]


def test_html_shows_the_energy_column(energy_night: list[Verdict]) -> None:
    page = render_html(energy_night)
    assert "energy mJ/inference (Δ), estimated" in page and "0.800 (+0.300)" in page


def test_junit_details_carry_the_estimate_and_the_allowance(energy_night: list[Verdict]) -> None:
    root = ET.fromstring(junit_xml(energy_night))
    cases = {case.get("name"): case for case in root.iter("testcase")}
    failure = next(c for name, c in cases.items() if "rpi5-a" in name).find("failure")
    assert failure is not None
    assert "energy: 0.800 mJ per inference vs 0.500 mJ (+0.300 mJ, allowed +0.050; estimated from the PMIC)" in failure.text
    pi4 = ET.tostring(next(c for name, c in cases.items() if "rpi4-a" in name), encoding="unicode")
    assert "energy:" not in pi4


def test_a_night_without_estimates_has_no_energy_column(tmp_path: Path) -> None:
    with ResultsStore(tmp_path / "results.sqlite") as store:
        run_id = store.start_run("farm")
        store.record_result(run_id, "rpi4-a", "rpi4", "default", "ok", make_record(latency_samples(1, n=50), target="rpi4-a"), None)
        store.finish_run(run_id)
        verdicts = check_run(store, run_id, save=False)
    assert "energy mJ" not in summary_markdown(verdicts) and "energy mJ" not in render_html(verdicts)
