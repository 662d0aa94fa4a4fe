"""``edgeship sweep-select`` on a stored sweep: table, reports, and the chosen variant as a profile."""

from __future__ import annotations

from click.testing import CliRunner

from pipeline.cli import main
from pipeline.config.profile import load_profile
from pipeline.sweep.grid import SweepGrid, expand
from pipeline.sweep.store import SweepStore


def _store_sweep() -> int:
    variants = expand(SweepGrid(base_profile="quick", quantization=("float32", "int8")))
    measured = {"float32": (0.80, 0.20, 200.0), "int8": (0.79, 0.10, 60.0)}
    with SweepStore() as store:
        sid = store.start("2026-11-25T00:00:00Z", "quick", "local", {})
        for v in variants:
            acc, p50, kb = measured[v.settings["quantization"]]
            row = {"name": v.name, "bundle_id": f"b-{v.name}", "accuracy": acc, "latency_ms": p50, "size_kb": kb,
                   "parameters": 1000, "macs": 2000}
            store.add_variant(sid, row, v.settings, v.profile.model_dump(mode="json"))
        store.finish(sid, "2026-11-25T00:01:00Z")
    return sid


def test_select_writes_a_loadable_profile_and_reports(isolated_results, tmp_path) -> None:
    sid = _store_sweep()
    out = tmp_path / "chosen.yaml"
    result = CliRunner().invoke(main, ["sweep-select", "--select", "latency_ms<=0.15,size_kb<=100", "--write-profile", str(out)])
    assert result.exit_code == 0, result.output
    assert "selected mobilenet_v2-w0.5-r28-s0-int8" in result.output
    profile = load_profile(str(out))
    assert profile.name == "chosen" and profile.quantization.ship == "int8"
    assert out.read_text().startswith("# Written by `edgeship sweep --select`.")
    report = isolated_results / "sweeps" / str(sid)
    assert (report / "report.html").is_file() and (report / "pareto_latency.png").is_file()
    assert "selected" in (report / "table.md").read_text()


def test_impossible_selection_explains_and_writes_nothing(isolated_results, tmp_path) -> None:
    _store_sweep()
    out = tmp_path / "chosen.yaml"
    result = CliRunner().invoke(main, ["sweep-select", "--select", "accuracy>=0.9", "--write-profile", str(out)])
    assert result.exit_code == 1
    assert "No variant meets accuracy>=0.9" in result.output and "Traceback" not in result.output
    assert not out.exists()
