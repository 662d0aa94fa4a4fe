"""The gate bench's page: sensitivity table and plot from a bench payload, self-contained."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.reports.gate_report import write_gate_report


def _payload() -> dict:
    def rung(label: str, extra: float, ratio: float, quiet: int, drift: int) -> dict:
        return {"label": label, "extra_macs": extra, "true_ratio": ratio,
                "quiet": {"detected": quiet, "runs": 20, "rate": quiet / 20}, "drift": {"detected": drift, "runs": 20, "rate": drift / 20}}

    aa = {"runs": 100, "false_alarms": 1, "confirmations": [None] * 90 + ["not-confirmed"] * 10}
    return {
        "method": "one loopback device", "bundle_id": "0123456789abcdef",
        "aa_quiet": aa, "aa_drift": dict(aa, false_alarms=2),
        "sensitivity": [rung("+5%", 0.05, 1.04, 9, 7), rung("+10%", 0.1, 1.09, 20, 19), rung("+20%", 0.2, 1.18, 20, 20)],
        "creep": {"nights": [{"night": n, "extra_macs": 1.02**n - 1, "baseline_check": "pass", "trend_flagged": n >= 4} for n in range(1, 8)]},
        "targets": {"detect_10pct_ge_95pct": {"value": 1.0, "limit": 0.95, "met": True},
                    "aa_drift_false_le_2_per_100": {"value": 3, "limit": 2, "met": False}},
        "host": {"cpu_model": "Test CPU"},
        "calibration": {"probe_extra_macs": 1.0, "probe_ratio": 1.31, "layer": "block2_expand_conv"},
    }


def test_gate_page_shows_the_curve_the_table_and_the_creep(tmp_path: Path) -> None:
    page = write_gate_report(_payload(), tmp_path / "gate.html").read_text()
    assert "<td>+10%</td><td>10.0%</td><td>1.090</td><td>20/20</td><td>19/20</td>" in page
    assert "<td>A/A drift</td><td>2/100</td><td>10</td>" in page
    assert page.count(">flagged<") == 4  # creep nights 4..7
    assert 'class="no">NO<' in page and "Test CPU" in page
    assert "+100% MACs at block2_expand_conv measured x1.310" in page
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
