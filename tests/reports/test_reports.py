"""JUnit, Markdown, plots and HTML from a real store."""

from __future__ import annotations

import base64
import re
import struct
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from pipeline.farm.store import ResultsStore, StoreError
from pipeline.reports import plots
from pipeline.reports.html import render_html, write_reports
from pipeline.reports.junit import junit_xml
from pipeline.reports.markdown import EMULATED_LABEL, md_escape, summary_markdown
from tests.helpers.records import latency_samples
from tests.reports.conftest import EVIL, populate

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(PNG_MAGIC)
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_verdicts_of_the_scenario(farm) -> None:
    statuses = {d: v.status for d, v in farm.by_device().items()}
    assert statuses == {"rpi4-a": "regression", "rpi4-b": "unreachable", "rpi5-a": "invalid",
                        "qemu-pi": "pass", EVIL: "no-baseline"}


# ----------------------------------------------------------------------------------- junit


def test_junit_is_valid_xml_with_one_case_per_device(farm) -> None:
    text = junit_xml(farm.verdicts, run=farm.store.get_run(farm.run_id))
    root = ET.fromstring(text.encode("utf-8"))
    suite = root.find("testsuite")
    assert suite.get("tests") == "5" and suite.get("failures") == "1"
    assert suite.get("errors") == "1" and suite.get("skipped") == "2"
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["run_id"] == str(farm.run_id) and props["exit_code"] == "1"
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert set(cases) == {"rpi4-a", "rpi4-b", "rpi5-a", "qemu-pi", EVIL}
    assert {c.get("classname") for c in cases.values()} == {"default"}

    failure = cases["rpi4-a"].find("failure")
    assert failure is not None and failure.get("message").startswith("regression (latency, accuracy): latency regression")
    assert "accuracy regression" in failure.text and re.search(r"ratio 1\.1\d\d \(CI 1\.\d+-1\.\d+\)", failure.text)

    error = cases["rpi4-b"].find("error")
    assert error.get("type") == "unreachable" and "No route to host" in error.get("message")
    assert "<&>" in error.get("message")  # escaped on the way in, intact on the way out
    assert "\x1b" not in text  # a control character XML cannot carry was replaced

    assert cases["rpi5-a"].find("skipped").get("message").startswith("invalid:")
    assert "throttled" in cases["rpi5-a"].find("skipped").get("message")
    assert cases[EVIL].find("skipped").get("message").startswith("no-baseline:")
    qemu = cases["qemu-pi"]
    assert qemu.find("failure") is None and qemu.find("error") is None and qemu.find("skipped") is None
    assert "emulated" in qemu.find("system-out").text


def test_junit_without_verdicts_is_still_valid() -> None:
    suite = ET.fromstring(junit_xml([])).find("testsuite")
    assert suite.get("tests") == "0" and list(suite.iter("testcase")) == []


# -------------------------------------------------------------------------------- markdown


def test_markdown_summary(farm) -> None:
    text = summary_markdown(farm.verdicts, run=farm.store.get_run(farm.run_id))
    assert f"run {farm.run_id}" in text.splitlines()[0]
    assert "**1 pass, 1 regression (latency, accuracy), 1 no-baseline, 1 invalid, 1 unreachable** of 5 → exit 1 (regression)" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| device")]
    assert len(rows) == 5
    for row in rows:  # escaped pipes keep every row at 7 columns
        assert len(re.findall(r"(?<!\\)\|", row)) == 8, row
    regression = next(r for r in rows if r.startswith("| rpi4-a |"))
    assert re.search(r"❌ regression \(latency, accuracy\) \| 14\.\d vs 12\.\d \| ×1\.1\d\d \(1\.\d\d–1\.\d\d\) \| – \| 86\.00% \(-1\.00\)", regression)
    qemu = next(r for r in rows if r.startswith("| qemu-pi"))
    assert EMULATED_LABEL in qemu and "✅ pass" in qemu
    assert all(EMULATED_LABEL not in r for r in rows if r is not qemu)
    assert "<script>" not in text and "\\<script\\>" in text
    assert "- **rpi4-b** / default: device unreachable" in text


def test_md_escape() -> None:
    assert md_escape("a|b *c* `d`\nnext") == "a\\|b \\*c\\* \\`d\\` next"


# ----------------------------------------------------------------------------------- plots


def test_plots_return_png_bytes() -> None:
    one = plots.latency_distribution_png([plots.LatencySeries("a", latency_samples(1), latency_samples(2))])
    four = plots.latency_distribution_png(
        [plots.LatencySeries(f"d{i}", latency_samples(i), None, "no-baseline") for i in range(4)]
    )
    assert png_size(four)[0] > png_size(one)[0]  # one panel per device
    trend = plots.trend_png({"a": [plots.TrendPoint(i, 10 + i) for i in range(5)],
                             "qemu": [plots.TrendPoint(i, 300.0) for i in range(5)]})
    scatter = plots.accuracy_latency_png([plots.ScatterPoint("a", 12.0, 0.87, "regression", 11.0, 0.88)])
    for png in (trend, scatter):
        width, height = png_size(png)
        assert width >= 600 and height >= 350
    for empty in (plots.latency_distribution_png([]), plots.trend_png({}), plots.accuracy_latency_png([])):
        assert png_size(empty)[1] < 200  # the small "no data" placeholder


# ------------------------------------------------------------------------------------ html


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.srcs: list[str] = []
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        if "src" in attrs:
            self.srcs.append(attrs["src"])
        if "href" in attrs:
            self.hrefs.append(attrs["href"])


def test_html_is_self_contained_and_escaped(farm) -> None:
    from pipeline.reports.html import build_plots

    images = build_plots(farm.store, farm.verdicts)
    page = render_html(farm.verdicts, run=farm.store.get_run(farm.run_id), images=images)
    parser = _Collector()
    parser.feed(page)
    assert "script" not in parser.tags and "link" not in parser.tags and parser.hrefs == []
    assert len(parser.srcs) == 3
    for src in parser.srcs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC)
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "&lt;&amp;&gt;" in page  # the error message's markup, escaped
    assert "http://" not in page and "https://" not in page
    assert EMULATED_LABEL in page
    assert page.count('class="status regression"') == 1


def test_write_reports_default_location_and_regeneration(farm, isolated_results: Path) -> None:
    paths = write_reports(farm.store, farm.run_id)
    out = isolated_results / "reports" / str(farm.run_id)
    assert paths == {"junit": out / "junit.xml", "markdown": out / "summary.md", "html": out / "report.html"}
    assert sorted(p.name for p in out.iterdir()) == ["junit.xml", "report.html", "summary.md"]  # no temp files
    ET.parse(paths["junit"])
    first = paths["markdown"].read_text()
    assert "❌ regression" in first

    # accepting the regressing result as the new baseline does not rewrite last night's report
    farm.store.accept_baseline(farm.by_device()["rpi4-a"].result_id, force=True)
    again = write_reports(farm.store, farm.run_id)
    assert again["markdown"].read_text() == first


def test_write_reports_for_an_unchecked_run_does_not_save(tmp_path: Path) -> None:
    with ResultsStore(tmp_path / "r.sqlite") as store:
        run_id, _ = populate(store, check=False)
        paths = write_reports(store, run_id, tmp_path / "out")
        assert paths["html"].parent == tmp_path / "out"
        assert "❌ regression" in paths["markdown"].read_text()
        assert store.saved_verdicts(run_id) == []
        with pytest.raises(StoreError, match="no run 999"):
            write_reports(store, 999, tmp_path / "x")


# ------------------------------------------------------- confirmation, change points, policy


def _gate_verdicts(farm) -> None:
    """Save what the gate decides: rpi4-a confirmed by its A/B, with a change point; rpi5-a's
    suspicion unconfirmed (baseline bundle gone); every verdict with its policy."""
    from pipeline.farm.verdicts import ConfirmationCheck

    policy = {"alpha": 0.01, "min_effect": 0.05, "confirmation": {"enabled": True, "blocks": 10}}
    verdicts = farm.by_device()
    for v in verdicts.values():
        v.policy = policy
    a = verdicts["rpi4-a"]
    a.confirmation = ConfirmationCheck(status="confirmed", ratio=1.183, pairs=10, pairs_slower=10, p_sign=0.00098,
                                       threshold=0.05, alpha=0.01, baseline_p50=12.1, candidate_p50=14.3,
                                       seconds=12.5, baseline_source="device")
    a.change_points = [{"index": 5, "result_id": 21, "run_id": farm.run_id, "before": 12.1, "after": 14.3, "ratio": 1.183}]
    b = verdicts["rpi5-a"]
    b.status, b.reasons = "unconfirmed", ["latency suspected, not confirmed: baseline bundle missing"]
    b.confirmation = ConfirmationCheck(status="unavailable", reason="baseline bundle 0123 is on neither the device nor the host")
    b.trend = "history too short for change points (4 nights, need 10)"
    farm.store.save_verdicts(farm.run_id, [(v.result_id, v.to_dict()) for v in verdicts.values()])


def test_night_report_shows_confirmation_change_points_policy_and_unconfirmed(farm, tmp_path: Path) -> None:
    _gate_verdicts(farm)
    paths = write_reports(farm.store, farm.run_id, tmp_path / "night")  # from the saved verdicts

    page = paths["html"].read_text()
    assert page.count('class="status unconfirmed"') == 3  # devices table, A/B verdict and A/B outcome
    assert 'class="status pass">unconfirmed' not in page
    assert '<td class="status regression">regression<br><span class="metric">latency, accuracy</span></td>' in page
    ab = page[page.index("stored baseline vs A/B confirmation"):page.index("Change points in the nightly history")]
    assert "×1.183" in ab and "10/10" in ab and "0.00098" in ab and "kept release on the device" in ab
    assert "12.5" in ab and "on neither the device nor the host" in ab
    assert f"step at run {farm.run_id}: 12.10 → 14.30 ms (×1.183)" in page
    assert "history too short for change points" in page
    assert "<details><summary>Regression policy</summary>" in page and "confirmation.blocks" in page

    md = paths["markdown"].read_text()
    assert "⛔ unconfirmed (latency)" in md and "❌ regression (latency, accuracy)" in md
    assert "confirmed ×1.183 (10/10 slower)" in md
    assert "A/B confirmation unavailable" in md and "on neither the device nor the host" in md
    assert "confirmation.enabled=True" in md

    suite = ET.parse(paths["junit"]).getroot().find("testsuite")
    assert suite.get("failures") == "2"
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    unconfirmed = cases["rpi5-a"].find("failure")
    assert unconfirmed.get("type") == "unconfirmed"
    assert unconfirmed.get("message") == "unconfirmed (latency): baseline bundle 0123 is on neither the device nor the host"
    confirmed = cases["rpi4-a"].find("failure")
    assert confirmed.get("message").startswith("regression (latency, accuracy): ")
    assert "A/B confirmation confirmed, paired ratio 1.183, 10/10 pairs slower, sign-test p=0.00098" in confirmed.text
    assert "latency vs stored baseline: p50" in confirmed.text and "policy: alpha=0.01" in confirmed.text
