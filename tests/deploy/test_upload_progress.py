"""Upload progress: quiet for a quick upload, bytes and rate once one takes over a second.

The meter and the CLI's bar are driven by a fake clock; the end-to-end cases upload a real bundle
over a slow link (pipeline/lab/link.py's bandwidth limit) to a real sshd.
"""

from __future__ import annotations

import io
import re

import pytest
import yaml
from click.testing import CliRunner
from rich.console import Console

from pipeline.cli import main
from pipeline.cli.deploy import _upload_progress
from pipeline.config.target import parse_target
from pipeline.deploy.deployer import deploy
from pipeline.deploy.upload_meter import UploadMeter, upload_text
from pipeline.lab.link import Link, target_through

#: "uploading 1.2/3.4 MB at 0.5 MB/s"
LINE = re.compile(r"uploading (\d+(?:\.\d)?)/(\d+(?:\.\d)?) (MB|kB) at (\d+\.\d) (MB|kB)/s")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_upload_text_names_bytes_and_rate() -> None:
    assert upload_text(1_200_000, 3_400_000, 2.4) == "uploading 1.2/3.4 MB at 0.5 MB/s"
    assert upload_text(64_000, 124_000, 2.0) == "uploading 64/124 kB at 32.0 kB/s"
    assert upload_text(300_000, 3_000_000, 6.0) == "uploading 0.3/3.0 MB at 0.05 MB/s"


def test_meter_is_quiet_for_the_first_second_then_reports_about_once_a_second() -> None:
    clock, shown = FakeClock(), []
    meter = UploadMeter(shown.append, after=1.0, every=1.0, clock=clock)
    for t, sent in [(0.0, 32_768), (0.5, 500_000), (0.99, 900_000)]:
        clock.now = 100.0 + t
        meter(sent, 3_000_000)
    assert shown == [], "an upload under a second shows nothing"
    for t, sent in [(1.0, 1_000_000), (1.5, 1_500_000), (2.1, 2_100_000), (2.2, 2_200_000), (2.5, 3_000_000)]:
        clock.now = 100.0 + t
        meter(sent, 3_000_000)
    assert shown == [
        "uploading 1.0/3.0 MB at 1.0 MB/s",
        "uploading 2.1/3.0 MB at 1.0 MB/s",
        "uploading 3.0/3.0 MB at 1.2 MB/s",  # the end is always shown
    ]


def test_meter_clock_starts_at_the_first_block() -> None:
    clock, shown = FakeClock(), []
    meter = UploadMeter(shown.append, clock=clock)
    clock.now += 30  # connecting and checking the device before the upload do not count
    meter(32_768, 100_000)
    clock.now += 0.5
    meter(100_000, 100_000)
    assert shown == []


def test_cli_bar_appears_after_a_second_with_bytes_and_rate() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120, color_system=None)
    clock = FakeClock()
    with _upload_progress(console, clock=clock) as progress:
        for t, sent in [(0.0, 32_768), (0.6, 600_000)]:
            clock.now = 100.0 + t
            progress(sent, 3_000_000)
        assert out.getvalue() == "", "no bar for the first second"
        for t, sent in [(1.2, 1_200_000), (2.0, 2_000_000)]:
            clock.now = 100.0 + t
            progress(sent, 3_000_000)
    text = out.getvalue()  # the last frame is drawn when the bar stops
    assert "upload" in text and "/3.0 MB" in text and re.search(r"\d(\.\d)? [kM]B/s", text), text


def test_cli_plain_lines_off_a_terminal() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    clock = FakeClock()
    with _upload_progress(console, clock=clock) as progress:
        for t, sent in [(0.0, 32_768), (1.5, 1_500_000), (3.0, 3_000_000)]:
            clock.now = 100.0 + t
            progress(sent, 3_000_000)
    lines = LINE.findall(out.getvalue())
    assert [line[:2] for line in lines] == [("1.5", "3.0"), ("3.0", "3.0")]


@pytest.mark.ssh
@pytest.mark.agent_venv
def test_ssh_slow_link_upload_reports_bytes_and_rate(sshd, tmp_path, device_python, tiny_bundle_int8, make_variant):
    big = make_variant("slow", payload_bytes=3_500_000)
    with Link(sshd.port, rate=1_000_000) as link:  # 8 Mbit/s: about 3.5 s for the bundle
        target = parse_target(target_through(link, sshd, "slow-pi", tmp_path / "device", device_python), "slow target")
        deploy(target, tiny_bundle_int8)  # the agent goes first, so the next upload is the bundle alone
        steps: list[str] = []
        result = deploy(target, big, step=steps.append)
    assert result.current == big.name
    progress = [LINE.search(s) for s in steps if LINE.search(s)]
    assert len(progress) >= 2, steps
    sent = [float(m.group(1)) for m in progress]
    assert sent == sorted(sent) and len(set(sent)) >= 2 and progress[-1].group(1) == progress[-1].group(2) == "3.5"
    assert all(float(m.group(4)) > 0 for m in progress)


@pytest.mark.ssh
@pytest.mark.agent_venv
def test_ssh_fast_upload_shows_no_progress(ssh_target, tiny_bundle_int8):
    steps: list[str] = []
    deploy(ssh_target(), tiny_bundle_int8, step=steps.append)
    assert any(s.startswith("uploading ") for s in steps)  # the step itself is there
    assert not any(LINE.search(s) for s in steps), steps


@pytest.mark.ssh
@pytest.mark.agent_venv
def test_ssh_cli_deploy_over_a_slow_link_prints_progress(sshd, tmp_path, device_python, make_variant):
    big = make_variant("cli", payload_bytes=2_500_000)
    with Link(sshd.port, rate=500_000) as link:  # 4 Mbit/s
        path = tmp_path / "slow.yaml"
        path.write_text(yaml.safe_dump(target_through(link, sshd, "slow-pi", tmp_path / "device", device_python)))
        result = CliRunner().invoke(main, ["deploy", str(path), "--bundle", str(big), "--no-profile-run"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = LINE.findall(result.stderr)
    assert lines and lines[-1][0] == lines[-1][1] == "2.5", result.stderr
    assert f"deployed {big.name} to slow-pi" in result.stdout
