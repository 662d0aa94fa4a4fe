"""The index across nights (results/reports/index.html), from a real store, and as a page in Chromium."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.farm.changepoints import ChangePointReport
from pipeline.farm.regression import check_run
from pipeline.farm.store import ResultsStore
from pipeline.farm.verdicts import ConfirmationCheck, Verdict
from pipeline.reports import index as index_mod
from pipeline.reports.html import write_reports
from pipeline.reports.index import render_index, write_index
from tests.helpers.records import latency_samples, make_record

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NIGHTS = 12
STEP_NIGHT = 6  # rpi4-a is 15% slower from this night on
MEMORY_NIGHT = 10  # rpi5-a's peak RSS jumps this night only
NO_REPORT_NIGHT = 3  # this night's report file is missing: no link
UNCONFIRMED = "baseline bundle 0123456789abcdef is neither among the device's kept releases nor in the host cache"


@dataclasses.dataclass
class History:
    store: ResultsStore
    out: Path
    nights: list[int]  # checked farm runs, oldest first
    unchecked: int  # a farm run nobody checked, newest of all
    profile_run: int  # a `profile` run, never listed


def _night(store: ResultsStore, night: int) -> int:
    commit = f"{night:02d}" + "c0ffee" * 6 + "ab"
    run_id = store.start_run("farm", "targets/farm.yaml", "default", info={"git_commit": commit, "git_dirty": night == 5})
    rpi4 = 12.0 * (1.15 if night >= STEP_NIGHT else 1.0)
    store.record_result(run_id, "rpi4-a", "rpi4", "default", "ok",
                        make_record(latency_samples(10 * night, n=150, median_ms=rpi4), target="rpi4-a"), None)
    store.record_result(run_id, "rpi5-a", "rpi5", "default", "ok",
                        make_record(latency_samples(10 * night + 1, n=150, median_ms=6.0), target="rpi5-a",
                                    peak_rss_mb=70.0 if night == MEMORY_NIGHT else 48.5), None)
    store.record_result(run_id, "qemu-pi", "rpi4-emulated", "default", "ok",
                        make_record(latency_samples(10 * night + 2, n=150, median_ms=300.0), target="qemu-pi", emulated=True), None)
    store.finish_run(run_id)
    return run_id


def _make_last_night_unconfirmed(store: ResultsStore, run_id: int) -> None:
    """What the lead's gate saves when the A/B could not run: status 'unconfirmed' with the reason."""
    verdicts = [Verdict.from_dict(v) for v in store.saved_verdicts(run_id)]
    for v in verdicts:
        if v.device == "rpi4-a":
            v.status = "unconfirmed"
            v.confirmation = ConfirmationCheck(status="unavailable", reason=UNCONFIRMED)
            v.reasons = [f"latency suspected, not confirmed: {UNCONFIRMED}"]
    store.save_verdicts(run_id, [(v.result_id, v.to_dict()) for v in verdicts])


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory):
    """Built once for the module (twelve checked nights with reports take seconds); tests only read it."""
    root = tmp_path_factory.mktemp("history")
    out = root / "reports"
    with ResultsStore(root / "results.sqlite") as store:
        nights = []
        for night in range(NIGHTS):
            run_id = _night(store, night)
            if night == 0:
                store.accept_run_baselines(run_id)
            check_run(store, run_id)
            if night == NIGHTS - 1:
                _make_last_night_unconfirmed(store, run_id)
            if night != NO_REPORT_NIGHT:
                write_reports(store, run_id, out / str(run_id))
            nights.append(run_id)
        profile_run = store.start_run("profile", None, "default", info={})
        store.finish_run(profile_run)
        unchecked = store.start_run("farm", "targets/farm.yaml", "default", info={"git_commit": "feedface" * 5})
        store.record_result(unchecked, "rpi4-a", "rpi4", "default", "unreachable", None, None, error="no route")
        store.finish_run(unchecked)
        yield History(store, out, nights, unchecked, profile_run)


class Page(HTMLParser):
    """Table rows (cell text and class), every src/href, and the image sources of an HTML page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.rows: list[list[tuple[str, str]]] = []
        self.row_links: list[list[str]] = []
        self.links: list[tuple[str, str]] = []  # (attribute, value)
        self.tags: set[str] = set()
        self._cell: list[str] | None = None
        self._class = ""
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        attrs = dict(attrs)
        for name in ("src", "href", "srcset", "action", "data", "poster"):
            if name in attrs:
                self.links.append((name, attrs[name]))
        if tag == "tr":
            self.rows.append([])
            self.row_links.append([])
        elif tag in ("td", "th"):
            self._cell, self._class = [], attrs.get("class") or ""
        elif tag == "a" and self.row_links:
            self.row_links[-1].append(attrs.get("href", ""))

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append((" ".join(" ".join(self._cell).split()), self._class))
            self._cell = None


def _nights_rows(page: Page) -> dict[int, tuple[list[tuple[str, str]], list[str], list[str]]]:
    """run id -> (cells, header labels, links) of the nights table."""
    header = next(r for r in page.rows if r and r[0][0] == "run")
    labels = [text for text, _ in header]
    rows = {}
    for cells, links in zip(page.rows, page.row_links):
        if cells and cells[0][0].isdigit() and len(cells) == len(labels):
            rows[int(cells[0][0])] = (cells, labels, links)
    return rows


def test_index_lists_every_night_with_date_commit_profile_and_device_status(history: History) -> None:
    path = write_index(history.store, history.out)
    assert path == history.out / "index.html"
    assert sorted(p.name for p in history.out.iterdir() if p.is_file()) == ["index.html"]  # no temp file left
    page = Page(path.read_text(encoding="utf-8"))
    rows = _nights_rows(page)
    assert set(rows) == set(history.nights) | {history.unchecked}  # the profile run is not a night
    for night, run_id in enumerate(history.nights):
        cells, labels, _ = rows[run_id]
        run = history.store.get_run(run_id)
        text = dict(zip(labels, (c for c, _ in cells)))
        assert text["date"] == index_mod._when(run.started_at) and re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", text["date"])
        assert text["commit"] == run.info["git_commit"][:10] + ("+dirty" if night == 5 else "")
        assert text["profile"] == "default"
        status = {label: (c, cls) for label, (c, cls) in zip(labels, cells) if label in ("rpi4-a", "rpi5-a", "qemu-pi (emulated)")}
        assert set(status) == {"rpi4-a", "rpi5-a", "qemu-pi (emulated)"}
        expected_rpi4 = ("unconfirmed latency" if night == NIGHTS - 1 else "regression latency" if night >= STEP_NIGHT
                         else "pass")
        assert status["rpi4-a"][0] == expected_rpi4, night
        assert expected_rpi4.split()[0] in status["rpi4-a"][1].split()  # coloured by status
        assert status["rpi5-a"][0] == ("regression memory" if night == MEMORY_NIGHT else "pass")
    unchecked = dict(zip(rows[history.unchecked][1], (c for c, _ in rows[history.unchecked][0])))
    assert unchecked["summary"] == "not checked (1 result)" and unchecked["rpi4-a"] == "unreachable"
    assert unchecked["commit"] == "feedfacefe"


def test_index_morning_summary_names_metrics_and_the_unconfirmed_reason(history: History) -> None:
    text = write_index(history.store, history.out).read_text(encoding="utf-8")
    morning = text[text.index('<section class="morning'):text.index("</section>")]
    last = history.nights[-1]
    assert 'class="morning exit1"' in morning  # unconfirmed fails the night, never a pass
    assert f"Last night: <a href=\"{last}/report.html\">run {last} · " in morning
    assert '<p class="headline">2 pass, 1 unconfirmed of 3 → exit 1 (regression)</p>' in morning
    assert "unconfirmed (latency)" in morning and "neither among the device&#x27;s kept releases" in morning
    assert f"A newer farm run (run {history.unchecked}" in morning
    # rpi4-a got slower 6 nights ago: news in the morning, with the run where the step began
    assert f"Change points in the last 7 nights:</div><ul><li><b>rpi4-a</b>: <span class=\"step-up\">step at run {history.nights[STEP_NIGHT]}: " in morning


def test_index_links_resolve_and_the_page_is_self_contained(history: History) -> None:
    path = write_index(history.store, history.out)
    page = Page(path.read_text(encoding="utf-8"))
    assert not page.tags & {"script", "link", "iframe", "object", "embed", "base"}
    assert page.links, "the page has images and links"
    for attr, value in page.links:
        assert not re.match(r"^\s*(https?:|//|file:|ftp:)", value, re.I), (attr, value)
        if attr == "src":
            assert value.startswith("data:image/png;base64,")
            assert base64.b64decode(value.split(",", 1)[1]).startswith(PNG_MAGIC)
        else:
            assert attr == "href" and (path.parent / value).is_file(), value
    assert "@import" not in path.read_text() and "url(" not in path.read_text()
    rows = _nights_rows(page)
    for run_id in history.nights:
        links = rows[run_id][2]
        night = history.nights.index(run_id)
        assert links == ([] if night == NO_REPORT_NIGHT else [f"{run_id}/report.html"]), night
    assert rows[history.unchecked][2] == []
    assert sum(1 for a, _ in page.links if a == "src") == 3  # one trend per device


def test_index_shows_change_points_with_the_run_where_the_step_began(history: History) -> None:
    text = write_index(history.store, history.out).read_text(encoding="utf-8")
    step_run = history.nights[STEP_NIGHT]
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", text, re.S)
    rpi4 = next(c for c in captions if "<b>rpi4-a</b>" in c)
    match = re.search(rf"step at run {step_run}: 1\d\.\d+ → 1\d\.\d+ ms \(×(1\.\d+)\)", rpi4)
    assert match and 1.10 < float(match.group(1)) < 1.20, rpi4
    rpi5 = next(c for c in captions if "<b>rpi5-a</b>" in c)
    assert "no change point in 12 nights" in rpi5


def test_plotted_change_point_changes_the_trend_image() -> None:
    from pipeline.reports import plots

    points = [plots.TrendPoint(i, 12.0 if i < 6 else 14.0) for i in range(1, 13)]
    plain = plots.device_trend_png(points, [])
    marked = plots.device_trend_png(points, [plots.StepMark(7, 1.167)])
    assert plain.startswith(PNG_MAGIC) and marked.startswith(PNG_MAGIC) and plain != marked
    assert plots.step_label(plots.StepMark(7, 1.167)) == "run 7 ×1.17"
    assert plots.step_label(plots.StepMark(7, 1.08, "trend")) == "creep run 7 ×1.08"
    assert plots.device_trend_png(points, [plots.StepMark(7, 1.167, "trend")]) != marked  # dotted, not dashed


def test_a_creep_reads_as_a_creep() -> None:
    from pipeline.reports.verdict_text import change_point_text

    creep = {"run_id": 9, "before": 10.0, "after": 11.5, "ratio": 1.15, "kind": "trend", "flagged": True}
    assert change_point_text(creep) == "creep from run 9: 10.00 → 11.50 ms (×1.150), flagged tonight"
    assert change_point_text({**creep, "kind": "step", "flagged": False}).startswith("step at run 9: ")


def test_index_shows_the_detectors_message_when_history_cannot_be_analysed(history: History, monkeypatch) -> None:
    def broken(store, device, profile_name, **kwargs):
        if device == "rpi5-a":
            return ChangePointReport(device, profile_name, message="rpi5-a / default: history is empty or corrupt")
        raise RuntimeError("detector bug")

    monkeypatch.setattr(index_mod, "device_change_points", broken)
    text = write_index(history.store, history.out).read_text(encoding="utf-8")
    assert "rpi5-a / default: history is empty or corrupt" in text
    assert "rpi4-a / default: change points not computed: detector bug" in text  # and the page is still written
    assert text.count("<tr>") >= NIGHTS + 1


def test_index_of_an_empty_store(tmp_path: Path) -> None:
    with ResultsStore(tmp_path / "r.sqlite") as store:
        text = write_index(store, tmp_path / "out").read_text(encoding="utf-8")
    assert "No checked night yet." in text and "No farm run recorded yet." in text


def test_render_index_escapes_store_text(history: History) -> None:
    nights = index_mod.collect_nights(history.store, history.out, 60)
    nights[0].unchecked = {index_mod.SeriesKey("<b>evil</b>", "default"): "failed"}
    text = render_index(nights, [])
    assert "&lt;b&gt;evil&lt;/b&gt;" in text and "<b>evil</b>" not in text


def test_cli_report_index_and_run(isolated_results: Path) -> None:
    with ResultsStore() as store:  # the default store under $EDGESHIP_RESULTS
        run_id = _night(store, 0)
        check_run(store, run_id)
    result = CliRunner().invoke(main, ["report", "--index"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"index: {isolated_results / 'reports' / 'index.html'}"
    assert f'href="{run_id}/report.html"' not in (isolated_results / "reports" / "index.html").read_text()
    both = CliRunner().invoke(main, ["report", str(run_id), "--index"], catch_exceptions=False)
    assert both.exit_code == 0 and "html: " in both.output and both.output.strip().endswith("index.html")
    assert f'href="{run_id}/report.html"' in (isolated_results / "reports" / "index.html").read_text()
    neither = CliRunner().invoke(main, ["report"])
    assert neither.exit_code == 2 and "give a RUN_ID, --index, or both" in neither.output


# --------------------------------------------------------------------------------- the browser


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("chromium is not on PATH (Debian: apt-get install -y chromium)")


def _page_requests(net_log: Path) -> set[str]:
    """Non-file, non-data URLs the page asked for, from Chromium's net log: requests made for a
    file:// top frame carry that in their network isolation key, Chromium's own update and account
    pings do not (and are refused by the resolver rule anyway)."""
    log = json.loads(net_log.read_text(errors="replace"))
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return {
        e["params"]["url"] for e in log["events"]
        if e["type"] == start and str(e["params"].get("network_isolation_key", "")).startswith("file://")
        and not e["params"]["url"].startswith(("file:", "data:"))
    }


def _browse(page: Path, tmp: Path, name: str, size: str = "1280,2000") -> tuple[Path, set[str]]:
    """Screenshot ``page`` in headless Chromium with every host name unresolvable; returns the PNG
    and the URLs the page requested."""
    shot, net_log = tmp / f"{name}.png", tmp / f"{name}.netlog.json"
    command = [
        _chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
        f"--user-data-dir={tmp / 'profile'}", "--host-resolver-rules=MAP * ~NOTFOUND",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        f"--log-net-log={net_log}", f"--screenshot={shot}", f"--window-size={size}", page.resolve().as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    return shot, _page_requests(net_log)


def test_index_renders_in_browser_without_network(history: History, tmp_path: Path) -> None:
    """Headless Chromium, every host name unresolvable, draws the whole page, and its net log shows
    the page requested nothing from the network."""
    from PIL import Image

    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><img src="http://fetch.example.invalid/x.png"></body></html>')
    assert _browse(bad, tmp_path, "bad", "400,300")[1] == {"http://fetch.example.invalid/x.png"}  # a fetch would show

    shot, fetched = _browse(write_index(history.store, history.out), tmp_path, "index")
    assert fetched == set()
    with Image.open(shot) as image:
        assert image.size == (1280, 2000)
        pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    ink = (pixels < 235).any(axis=2)  # anything clearly not white or the near-white panel backgrounds
    assert ink.mean() > 0.03, f"only {ink.mean():.1%} of the screenshot is drawn"
    top = ink[:300].mean()
    assert top > 0.01, f"the morning summary area is blank ({top:.1%})"
    # the status colours of the plots and cells made it to the screen (red of a regression cell / step line)
    red = (pixels[..., 0] > 150) & (pixels[..., 1] < 110) & (pixels[..., 2] < 120)
    assert red.sum() > 200


def test_recent_change_points_follow_the_last_nights_policy(history: History) -> None:
    nights = index_mod.collect_nights(history.store, history.out, 60)
    trends = index_mod.collect_trends(history.store, nights, window=60)
    assert index_mod.last_policy(nights).get("changepoint_recent") == 7  # what check_run recorded
    for v in nights[1].verdicts:  # nights[0] is the unchecked run
        v.policy = {**v.policy, "changepoint_recent": 3}
    text = render_index(nights, trends)
    assert "No change point in the last 3 nights." in text
